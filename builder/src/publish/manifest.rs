//! `manifest.json`: what went into a build and what came out, for release pipelines.

use super::report::BuildReport;
use crate::definition::LoadedDefinition;
use crate::inputs::INIT_BINARY;
use serde_json::json;
use sha2::{Digest, Sha256};

/// The manifest of a finished build, as pretty JSON. Deterministic: no wall-clock time, no
/// host paths (the definition is named by its file name only).
pub fn manifest_json(loaded: &LoadedDefinition, report: &BuildReport, epoch: u64) -> String {
    let def = &loaded.definition;
    let inputs: Vec<_> = report
        .packages
        .iter()
        .map(|p| {
            json!({
                "name": p.name, "version": p.version, "architecture": p.architecture,
                "filename": p.filename, "sha256": p.sha256, "size": p.size,
                "role": p.role, "reason": p.reason, "archive": p.archive,
            })
        })
        .collect();
    let artifacts: Vec<_> = report
        .artifacts
        .iter()
        .map(|a| json!({ "name": a.name, "kind": a.kind, "size": a.size, "sha256": a.sha256 }))
        .collect();
    let value = json!({
        "uvmkit": env!("CARGO_PKG_VERSION"),
        "image": def.name,
        "definition": {
            "file": loaded.path.file_name().map(|n| n.to_string_lossy().into_owned()),
            "sha256": hex::encode(Sha256::digest(loaded.source_text.as_bytes())),
        },
        "source_date_epoch": epoch,
        "init_sha256": hex::encode(Sha256::digest(INIT_BINARY)),
        "kernel": { "release": report.kernel_release, "modules": report.modules },
        "initrd": { "entries": report.initrd_entries, "uncompressed_bytes": report.initrd_uncompressed },
        "inputs": inputs,
        "artifacts": artifacts,
        // The certificate that signed the UKI (every copy: .efi, the ESP, the ISO), or null.
        "uki_signature": report.uki_signature,
    });
    let mut text = serde_json::to_string_pretty(&value).expect("JSON serialises");
    text.push('\n');
    text
}
