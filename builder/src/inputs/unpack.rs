//! The unpacked-package cache: each `.deb` is unpacked once into per-file blobs of the content
//! cache, with a manifest (JSON, referenced from the `.deb`'s sha256) that rebuilds its file
//! tree, so a warm build neither decompresses nor parses the package again.

use super::error::InputError;
use super::package::FetchedPackage;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use uvmkit_debian::deb::{self, DebEntryKind, DebError};
use uvmkit_fetch::cache::{ContentCache, Sha256Digest};
use uvmkit_filetree::{FileData, FileTree, Node, NodeKind, TreeError, TreePath};

/// Cache references from a `.deb`'s sha256 to the manifest of its unpacked files; the version
/// changes with the manifest's layout, so an older layout is never misread.
const MANIFEST_NAMESPACE: &str = "deb-tree-v2";

/// Why a fetched package cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The `.deb` cannot be opened.
    #[error("package {package} ({}): {source}", deb.display())]
    Open {
        /// The package.
        package: String,
        /// Its `.deb` in the cache.
        deb: PathBuf,
        /// What opening it reported.
        source: std::io::Error,
    },
    /// The `.deb` cannot be unpacked.
    #[error("package {package} ({}): {source}", deb.display())]
    Unpack {
        /// The package.
        package: String,
        /// Its `.deb` in the cache.
        deb: PathBuf,
        /// What unpacking reported.
        source: DebError,
    },
    /// The manifest of its unpacked files in the cache is damaged.
    #[error("package {package}: cached package manifest: {problem}")]
    Manifest {
        /// The package.
        package: String,
        /// What is wrong with the manifest.
        problem: String,
    },
    /// Its unpacked files disappeared from the cache while it was unpacked.
    #[error("package {package}: unpacked files vanished from the cache")]
    Vanished {
        /// The package.
        package: String,
    },
    /// The sha256 it is pinned by is not a sha256.
    #[error("package {package}: bad sha256 {sha256}")]
    BadSha256 {
        /// The package.
        package: String,
        /// The pinned value.
        sha256: String,
    },
    /// Its files conflict with those of the packages merged before it.
    #[error("package {package}: {source}")]
    Merge {
        /// The package.
        package: String,
        /// The conflict.
        source: TreeError,
    },
    /// It lacks a file the build takes from it.
    #[error("package {package} has no {path}")]
    MissingFile {
        /// The package.
        package: String,
        /// The file, in the package.
        path: String,
    },
}

/// One node of an unpacked package, as its manifest in the cache records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ManifestEntry {
    path: String,
    mode: u32,
    uid: u32,
    gid: u32,
    #[serde(flatten)]
    kind: ManifestKind,
}

/// What a manifest entry is; a file's bytes are the cache blob named by its digest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum ManifestKind {
    Dir,
    File { sha256: String, size: u64 },
    Symlink { target: String },
    Hardlink { target: String },
    Char { major: u32, minor: u32 },
    Block { major: u32, minor: u32 },
    Fifo,
}

/// The package's files, from the cache when it was unpacked before.
pub(super) fn package_tree(
    pkg: &FetchedPackage,
    deb_path: &Path,
    cache: &ContentCache,
) -> Result<FileTree, InputError> {
    if let Some(digest) = cache.get_ref(MANIFEST_NAMESPACE, &pkg.sha256)? {
        if let Ok(bytes) = std::fs::read(cache.path_of(&digest)) {
            if let Ok(entries) = serde_json::from_slice::<Vec<ManifestEntry>>(&bytes) {
                if let Some(tree) = tree_from_manifest(&pkg.name, &entries, cache)? {
                    return Ok(tree);
                }
            }
        }
        log::warn!(
            "the cached unpacked files of {} {} are incomplete; unpacking it again",
            pkg.name,
            pkg.version
        );
    }
    let entries = unpack_to_cache(&pkg.name, deb_path, cache)?;
    let manifest = serde_json::to_vec(&entries).expect("manifest serialises");
    let digest = cache.put_bytes(&manifest, None)?;
    cache.set_ref(MANIFEST_NAMESPACE, &pkg.sha256, &digest)?;
    Ok(
        tree_from_manifest(&pkg.name, &entries, cache)?.ok_or_else(|| PackageError::Vanished {
            package: pkg.name.clone(),
        })?,
    )
}

/// Unpacks `deb` into per-file blobs and returns its manifest.
fn unpack_to_cache(name: &str, deb_path: &Path, cache: &ContentCache) -> Result<Vec<ManifestEntry>, PackageError> {
    let file = File::open(deb_path).map_err(|source| PackageError::Open {
        package: name.to_string(),
        deb: deb_path.to_path_buf(),
        source,
    })?;
    let mut entries = Vec::new();
    deb::unpack_data(BufReader::new(file), &mut |entry| {
        let kind = match entry.kind {
            DebEntryKind::Dir => ManifestKind::Dir,
            DebEntryKind::File { size, contents } => {
                let digest = cache.put_reader(contents, None).map_err(DebError::sink)?;
                ManifestKind::File {
                    sha256: digest.to_string(),
                    size,
                }
            }
            DebEntryKind::Symlink(target) => ManifestKind::Symlink { target },
            DebEntryKind::HardLink(target) => ManifestKind::Hardlink {
                target: format!("/{}", target.as_str()),
            },
            DebEntryKind::CharDev { major, minor } => ManifestKind::Char { major, minor },
            DebEntryKind::BlockDev { major, minor } => ManifestKind::Block { major, minor },
            DebEntryKind::Fifo => ManifestKind::Fifo,
        };
        let path = format!("/{}", entry.path.as_str());
        entries.push(ManifestEntry {
            path,
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
            kind,
        });
        Ok(())
    })
    .map_err(|source| PackageError::Unpack {
        package: name.to_string(),
        deb: deb_path.to_path_buf(),
        source,
    })?;
    Ok(entries)
}

/// Builds a package's tree from its manifest; `None` when a blob it names is missing or has
/// the wrong size (the package is then unpacked again).
fn tree_from_manifest(
    package: &str,
    entries: &[ManifestEntry],
    cache: &ContentCache,
) -> Result<Option<FileTree>, PackageError> {
    let bad = |problem: String| PackageError::Manifest {
        package: package.to_string(),
        problem,
    };
    let mut tree = FileTree::new();
    for entry in entries {
        let kind = match &entry.kind {
            ManifestKind::Dir => NodeKind::Directory,
            ManifestKind::File { sha256, size } => {
                let digest: Sha256Digest = sha256.parse().map_err(|_| bad(format!("bad digest {sha256}")))?;
                if !cache.get_checked(&digest, *size) {
                    return Ok(None);
                }
                NodeKind::File(FileData::HostFile {
                    path: cache.path_of(&digest),
                    size: *size,
                })
            }
            ManifestKind::Symlink { target } => NodeKind::Symlink(target.clone()),
            ManifestKind::Hardlink { target } => {
                NodeKind::HardLink(TreePath::new(target).map_err(|e| bad(e.to_string()))?)
            }
            ManifestKind::Char { major, minor } => NodeKind::CharDevice {
                major: *major,
                minor: *minor,
            },
            ManifestKind::Block { major, minor } => NodeKind::BlockDevice {
                major: *major,
                minor: *minor,
            },
            ManifestKind::Fifo => NodeKind::Fifo,
        };
        // Linux reports every symbolic link as 0777, whatever the archive says.
        let mode = if matches!(kind, NodeKind::Symlink(_)) {
            0o777
        } else {
            entry.mode
        };
        let path = TreePath::new(&entry.path).map_err(|e| bad(e.to_string()))?;
        tree.insert(
            &path,
            Node {
                kind,
                mode,
                uid: entry.uid,
                gid: entry.gid,
            },
        )
        .map_err(|e| bad(e.to_string()))?;
    }
    Ok(Some(tree))
}
