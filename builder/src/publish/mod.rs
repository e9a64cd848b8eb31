//! Publishing a build: every artifact appears whole or not at all ([`artifacts`]), then
//! `manifest.json` ([`manifest`]), `SHA256SUMS` and the SPDX SBOM ([`sbom`]) describe what
//! went in and what came out ([`report`]).

pub mod artifacts;
pub mod manifest;
pub mod report;
pub mod sbom;

pub use artifacts::{Artifact, ArtifactDir};
pub use report::{human_bytes, BuildReport, Timing};

use crate::definition::LoadedDefinition;
use std::io;

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
/// the staged output directory, after every artifact is in place; [`ArtifactDir::commit`]
/// then publishes all of it at once.
pub fn write_summaries(
    out: &ArtifactDir,
    loaded: &LoadedDefinition,
    report: &BuildReport,
    epoch: u64,
) -> Result<(), PublishError> {
    let manifest = manifest::manifest_json(loaded, report, epoch);
    out.write_summary("manifest.json", manifest.as_bytes())
        .map_err(io_error("manifest.json"))?;
    out.write_summary("SHA256SUMS", out.sha256sums().as_bytes())
        .map_err(io_error("SHA256SUMS"))?;
    let sbom = sbom::spdx_json(report, epoch);
    out.write_summary(&sbom::file_name(&report.image), sbom.as_bytes())
        .map_err(io_error("SBOM"))?;
    Ok(())
}
