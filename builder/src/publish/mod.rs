//! Publishing a build: every artifact appears whole or not at all ([`artifacts`]), then
//! `manifest.json` ([`manifest`]), `SHA256SUMS` and the SPDX SBOM ([`sbom`]) describe what
//! went in and what came out ([`report`]).

pub mod artifacts;
pub mod manifest;
pub mod report;
pub mod sbom;

pub use artifacts::{Artifact, ArtifactDir};
pub use report::{human_bytes, BuildReport, Timing};

use crate::atomic_file::write_atomically;
use crate::definition::LoadedDefinition;
use std::io;
use std::path::Path;

/// Why an artifact or a summary could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The output directory or its staging area could not be made.
    #[error("{0}")]
    OutputDir(#[source] io::Error),
    /// A file could not be synced, hashed, moved into place or written.
    #[error("{what}: {source}")]
    Io {
        /// The file (`manifest.json`, `SHA256SUMS`, `SBOM`), or `publish` for an artifact.
        what: &'static str,
        /// What the operation reported (it names the path).
        source: io::Error,
    },
}

/// Tags an I/O error with what was being published.
pub fn io_error(what: &'static str) -> impl Fn(io::Error) -> PublishError {
    move |source| PublishError::Io { what, source }
}

/// Writes `manifest.json`, `SHA256SUMS` (of the artifacts `out` published) and the SBOM into
/// `out_dir`, each atomically, after every artifact is in place.
pub fn write_summaries(
    out_dir: &Path,
    out: &ArtifactDir,
    loaded: &LoadedDefinition,
    report: &BuildReport,
    epoch: u64,
) -> Result<(), PublishError> {
    let manifest = manifest::manifest_json(loaded, report, epoch);
    write_atomically(&out_dir.join("manifest.json"), manifest.as_bytes()).map_err(io_error("manifest.json"))?;
    write_atomically(&out_dir.join("SHA256SUMS"), out.sha256sums().as_bytes()).map_err(io_error("SHA256SUMS"))?;
    let sbom = sbom::spdx_json(report, epoch);
    write_atomically(&out_dir.join(sbom::file_name(&report.image)), sbom.as_bytes()).map_err(io_error("SBOM"))?;
    Ok(())
}
