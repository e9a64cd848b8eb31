//! The unpacked-package cache: each `.deb` is unpacked once into per-file blobs of the content
//! cache, with a manifest (JSON, referenced from the `.deb`'s sha256) that rebuilds its file
//! tree, so a warm build neither decompresses nor parses the package again. Each file is hashed
//! against its sha256 before a build uses it; a note per package ([`CHECKED_NOTES`]) records
//! what each file looked like then ([`BlobStamp`]), and a build hashes again only the files
//! that no longer look the same (`uvmkit fetch` hashes them all: [`Recheck::Every`]).

use super::error::InputError;
use super::package::FetchedPackage;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use uvmkit_debian::deb::{self, DebEntryKind, DebError};
use uvmkit_fetch::cache::{BlobStamp, ContentCache, Sha256Digest};
use uvmkit_filetree::{FileData, FileTree, Node, NodeKind, TreeError, TreePath};

/// Cache references from a `.deb`'s sha256 to the manifest of its unpacked files; the version
/// changes with the manifest's layout, so an older layout is never misread.
const MANIFEST_NAMESPACE: &str = "deb-tree-v2";

/// Cache notes, by `.deb` sha256, of what the package's unpacked files looked like when they
/// were last hashed: a line `<sha256> <stamp>` per file.
const CHECKED_NOTES: &str = "deb-tree-checked-v1";

/// Which of a package's cached files are hashed again before a build uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recheck {
    /// Every one (`uvmkit fetch`: the command that checks the whole cache).
    Every,
    /// Those whose file changed (device, inode, size or times) since they were last hashed.
    Changed,
}

/// Files by sha256 (hex), with their stamps when last hashed.
type Stamps = BTreeMap<String, BlobStamp>;

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
    /// The package unpacks to more than `[debian] max_unpacked_size`.
    #[error("package {package} unpacks to more than {limit} bytes ([debian] max_unpacked_size); refusing it: an archive that expands this far is damaged or hostile; raise max_unpacked_size if the package really is this large")]
    TooLarge {
        /// The package.
        package: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The package's data archive holds the same path twice (which one would win depends on
    /// the unpacker).
    #[error("package {package} holds {path} more than once; refusing it: a package whose members shadow each other is damaged or hostile")]
    Duplicate {
        /// The package.
        package: String,
        /// The path, in the package.
        path: String,
    },
    /// A `[[packages]]` entry would take a setuid or setgid file or a device node.
    #[error("package {package}: {path} is {what}; such files are not taken into an image unless its [[packages]] entry sets allow_setuid_and_devices = true")]
    Privileged {
        /// The package.
        package: String,
        /// The path, in the package.
        path: String,
        /// What it is (`setuid (mode 4755)`, `a character device`).
        what: String,
    },
    /// A package the build takes files from is not among the packages (a lock that leaves it
    /// out).
    #[error("no {package} package is pinned, but {needed_for} comes from it; the lock file was edited or is damaged: delete it, or run `uvmkit fetch --refresh` on the definition, to resolve again")]
    NotPinned {
        /// The package.
        package: &'static str,
        /// What the build takes from it.
        needed_for: &'static str,
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

/// The package's files unpacked from `deb_path` (a verified `.deb`) into the cache, with their
/// manifest, so the next build takes them from [`cached_tree`]; `limit` is the most bytes it
/// may unpack to.
pub(super) fn unpacked_tree(
    pkg: &FetchedPackage,
    deb_path: &Path,
    cache: &ContentCache,
    limit: u64,
) -> Result<FileTree, InputError> {
    let entries = unpack_to_cache(&pkg.name, deb_path, cache, limit)?;
    let manifest = serde_json::to_vec(&entries).expect("manifest serialises");
    let digest = cache.put_bytes(&manifest, None)?;
    cache.set_ref(MANIFEST_NAMESPACE, &pkg.sha256, &digest)?;
    let (tree, stamps) =
        tree_from_manifest(&pkg.name, &entries, cache, &Stamps::new())?.ok_or_else(|| PackageError::Vanished {
            package: pkg.name.clone(),
        })?;
    keep_stamps(pkg, cache, &stamps, &Stamps::new());
    Ok(tree)
}

/// The package's files from the cache, when it was unpacked before and every blob still
/// checks out against its sha256 (hashed again as `recheck` says; a damaged one is repaired by
/// unpacking the package again); `None` when it must be unpacked (again) from its `.deb`;
/// `limit` is the most bytes it may unpack to.
pub(super) fn cached_tree(
    pkg: &FetchedPackage,
    cache: &ContentCache,
    limit: u64,
    recheck: Recheck,
) -> Result<Option<FileTree>, InputError> {
    let Some(digest) = cache.get_ref(MANIFEST_NAMESPACE, &pkg.sha256)? else {
        return Ok(None);
    };
    // The manifest itself is a blob: checked like the files it names.
    if let Some(bytes) = cache.read_verified(&digest)? {
        if let Ok(entries) = serde_json::from_slice::<Vec<ManifestEntry>>(&bytes) {
            check_size(&pkg.name, &entries, limit)?;
            let last = match recheck {
                Recheck::Every => Stamps::new(),
                Recheck::Changed => last_stamps(pkg, cache),
            };
            if let Some((tree, stamps)) = tree_from_manifest(&pkg.name, &entries, cache, &last)? {
                keep_stamps(pkg, cache, &stamps, &last);
                return Ok(Some(tree));
            }
        }
    }
    log::warn!(
        "the cached unpacked files of {} {} are incomplete or damaged; unpacking it again",
        pkg.name,
        pkg.version
    );
    Ok(None)
}

/// The stamps the package's note recorded (none when there is no note or it is damaged).
fn last_stamps(pkg: &FetchedPackage, cache: &ContentCache) -> Stamps {
    let Ok(Some(note)) = cache.get_note(CHECKED_NOTES, &pkg.sha256) else {
        return Stamps::new();
    };
    let parsed: Option<Stamps> = note
        .lines()
        .map(|line| {
            let (digest, stamp) = line.split_once(' ')?;
            Some((digest.to_string(), stamp.parse().ok()?))
        })
        .collect();
    parsed.unwrap_or_default()
}

/// Records `stamps` as the package's note when they differ from the `last` it held, leaving
/// out files changed too recently for their stamp to be trusted ([`BlobStamp::is_settled`]:
/// the next build hashes those again). A note that cannot be written only costs the next build
/// the hashing.
fn keep_stamps(pkg: &FetchedPackage, cache: &ContentCache, stamps: &Stamps, last: &Stamps) {
    let settled: Stamps = stamps
        .iter()
        .filter(|(_, stamp)| stamp.is_settled())
        .map(|(digest, stamp)| (digest.clone(), *stamp))
        .collect();
    if settled == *last {
        return;
    }
    let note: String = settled
        .iter()
        .map(|(digest, stamp)| format!("{digest} {stamp}\n"))
        .collect();
    if let Err(e) = cache.set_note(CHECKED_NOTES, &pkg.sha256, &note) {
        log::debug!("cannot keep the checked stamps of {}: {e}", pkg.name);
    }
}

/// A manifest's files must add up to at most `limit` bytes (a lower limit than the one the
/// package was unpacked under applies too).
fn check_size(package: &str, entries: &[ManifestEntry], limit: u64) -> Result<(), PackageError> {
    let total = entries.iter().fold(0u64, |sum, e| match e.kind {
        ManifestKind::File { size, .. } => sum.saturating_add(size),
        _ => sum,
    });
    if total > limit {
        return Err(PackageError::TooLarge {
            package: package.to_string(),
            limit,
        });
    }
    Ok(())
}

/// Unpacks `deb` into per-file blobs and returns its manifest; more than `limit` bytes of
/// files, or a path given twice, is refused before the member is stored.
fn unpack_to_cache(
    name: &str,
    deb_path: &Path,
    cache: &ContentCache,
    limit: u64,
) -> Result<Vec<ManifestEntry>, PackageError> {
    let file = File::open(deb_path).map_err(|source| PackageError::Open {
        package: name.to_string(),
        deb: deb_path.to_path_buf(),
        source,
    })?;
    let mut entries = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0u64;
    // Set by the callback, which can only return a DebError: the refusal is this module's.
    let mut refused: Option<PackageError> = None;
    let result = deb::unpack_data(BufReader::new(file), &mut |entry| {
        let path = format!("/{}", entry.path.as_str());
        if !seen.insert(path.clone()) {
            refused = Some(PackageError::Duplicate {
                package: name.to_string(),
                path,
            });
            return Err(DebError::sink(std::io::Error::other("duplicate member")));
        }
        let kind = match entry.kind {
            DebEntryKind::Dir => ManifestKind::Dir,
            DebEntryKind::File { size, contents } => {
                // The tar header's size, checked before a byte is stored; the reader yields
                // no more than it.
                total = total.saturating_add(size);
                if total > limit {
                    refused = Some(PackageError::TooLarge {
                        package: name.to_string(),
                        limit,
                    });
                    return Err(DebError::sink(std::io::Error::other("package too large")));
                }
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
        entries.push(ManifestEntry {
            path,
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
            kind,
        });
        Ok(())
    });
    if let Some(refusal) = refused {
        return Err(refusal);
    }
    result.map_err(|source| PackageError::Unpack {
        package: name.to_string(),
        deb: deb_path.to_path_buf(),
        source,
    })?;
    Ok(entries)
}

/// Builds a package's tree from its manifest; `None` when a blob it names is missing or its
/// content does not hash to its name (the package is then unpacked again, which replaces it).
fn tree_from_manifest(
    package: &str,
    entries: &[ManifestEntry],
    cache: &ContentCache,
    last: &Stamps,
) -> Result<Option<(FileTree, Stamps)>, PackageError> {
    let bad = |problem: String| PackageError::Manifest {
        package: package.to_string(),
        problem,
    };
    let mut tree = FileTree::new();
    let mut stamps = Stamps::new();
    for entry in entries {
        let kind = match &entry.kind {
            ManifestKind::Dir => NodeKind::Directory,
            ManifestKind::File { sha256, size } => {
                let digest: Sha256Digest = sha256.parse().map_err(|_| bad(format!("bad digest {sha256}")))?;
                let checked = cache
                    .check_blob(&digest, *size, last.get(sha256))
                    .map_err(|e| bad(e.to_string()))?;
                let Some(stamp) = checked else {
                    return Ok(None);
                };
                stamps.insert(sha256.clone(), stamp);
                NodeKind::File(FileData::checked_host_file(cache.path_of(&digest), *size, digest.0))
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
    Ok(Some((tree, stamps)))
}
