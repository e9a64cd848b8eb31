//! What the inputs stage records of each package: why it is part of the build and where it
//! came from (the lock file and the SBOM are made of these), and its unpacked files.

use serde::{Deserialize, Serialize};
use uvmkit_filetree::FileTree;

/// Why a package is part of the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Named in `[[packages]]`.
    Requested,
    /// Pulled in by a requested package's dependencies.
    Dependency,
    /// The kernel.
    Kernel,
    /// The UKI stub or ISO boot loader.
    Bootloader,
}

/// A downloaded and verified `.deb`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedPackage {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture.
    pub architecture: String,
    /// Pool path in the archive.
    pub filename: String,
    /// sha256 of the `.deb`.
    pub sha256: String,
    /// Size of the `.deb`.
    pub size: u64,
    /// Why it is here.
    pub role: Role,
    /// `requested`, or which package needed it.
    pub reason: String,
    /// Source package, maintainer, license-relevant fields (for the SBOM).
    pub source: Option<String>,
    /// Maintainer (the SBOM's supplier).
    pub maintainer: Option<String>,
    /// Homepage.
    pub homepage: Option<String>,
    /// The archive (suite) it was taken from (`bookworm-security`); it also says which
    /// mirror serves the `.deb`. Locks written before images drew from several archives lack
    /// it: read from those, it is the release suite.
    #[serde(default)]
    pub archive: String,
}

/// One fetched package's files.
#[derive(Debug, Clone)]
pub struct PackageFiles {
    /// Package name.
    pub name: String,
    /// Version, for reports.
    pub version: String,
    /// Everything in its `data.tar`.
    pub tree: FileTree,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A requested package `name` version 1.0-1, for tests here and in other modules.
    pub(crate) fn pkg(name: &str) -> FetchedPackage {
        FetchedPackage {
            name: name.into(),
            version: "1.0-1".into(),
            architecture: "amd64".into(),
            filename: format!("pool/main/{name}_1.0-1_amd64.deb"),
            sha256: "ab".repeat(32),
            size: 1,
            role: Role::Requested,
            reason: "requested".into(),
            source: None,
            maintainer: None,
            homepage: None,
            archive: "bookworm".into(),
        }
    }
}
