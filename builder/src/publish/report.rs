//! What a build produced, for the command's summary (`--json`), `manifest.json` and the SBOM.

use super::artifacts::Artifact;
use crate::encode::uki::UkiSignature;
use crate::inputs::FetchedPackage;
use serde::Serialize;
use std::collections::BTreeMap;
use uvmkit_debian::copyright::DeclaredLicense;

/// A phase and how long it took.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// Phase name.
    pub phase: String,
    /// Seconds.
    pub seconds: f64,
}

/// What a build produced.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// Image name.
    pub image: String,
    /// Published artifacts.
    pub artifacts: Vec<Artifact>,
    /// Every input package.
    pub packages: Vec<FetchedPackage>,
    /// The license each package declares (machine-readable `copyright` files only), by name.
    #[serde(skip)]
    pub licenses: BTreeMap<String, DeclaredLicense>,
    /// Kernel release.
    pub kernel_release: String,
    /// Modules the init loads.
    pub modules: Vec<String>,
    /// Files in the initrd.
    pub initrd_entries: usize,
    /// Uncompressed bytes in the initrd.
    pub initrd_uncompressed: u64,
    /// Bytes downloaded.
    pub downloaded_bytes: u64,
    /// Who signed the UKI (`--sign-key`), or `None` when it is unsigned.
    pub uki_signature: Option<UkiSignature>,
    /// Phase timings.
    pub timings: Vec<Timing>,
}

/// Formats a byte count for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
