//! Offline bundles: one tar file holding everything a build needs, for air-gapped machines.
//!
//! Members, `SHA256SUMS` first, `MANIFEST.json` second, the rest in byte order of their names
//! (the tar is deterministic: mtime 0, uid and gid 0, no user or group names):
//! - `SHA256SUMS`: the sha256 of every other regular member (`sha256sum -c` format);
//! - `MANIFEST.json`: every other member with its type (`file`, `directory`, `symlink`), mode,
//!   and its sha256 or link target; a member it does not list, or lists otherwise, is refused;
//! - `blobs/sha256/HEX`: every pinned `.deb`, named by its sha256;
//! - `dists/SUITE/InRelease` and `dists/SUITE/COMPONENT/binary-ARCH/Packages.xz`: the signed
//!   index of every archive the definition draws from, byte for byte as the mirror served it;
//! - `definition.toml`: the image definition, byte for byte;
//! - `definition-name`: the definition's own file name (`minimal.toml`), which an imported
//!   definition gets back, so a build from the bundle names it as the online build does;
//! - `image.lock`: its lock file;
//! - the local files the definition references (`[preload] images`, `[[files]]` and `[disk] data_files` `source`
//!   and `directory`, `[kernel] path`, `modules_dir` and `config`, `[debian] keyring`), at their
//!   paths relative to the definition, so the definition works unchanged beside them. Paths
//!   that are absolute or leave the definition's directory (`..`) cannot be bundled and are an
//!   error naming them.
//!
//! Importing checks every member against `SHA256SUMS` and `MANIFEST.json`, and every blob
//! against its name, before it is used: a tampered bundle is refused, naming the member. It
//! unpacks into a fresh private directory (created new, mode 0700) and writes nothing outside
//! it, even for a bundle it then refuses: every file is created new without following links
//! (`O_EXCL | O_NOFOLLOW`), no member is written through a symbolic link, and a member named
//! twice, a hard link, a device, a member of another type than listed, and a symbolic link
//! leading out of the bundle are refused.
//!
//! Then the chain Debian signed is verified again, offline, as a fetch verifies it: each
//! carried `InRelease` against the keyring (`[debian] keyring` or Debian's archive keys) and its
//! suite, each `Packages.xz` against the sha256 `InRelease` lists, and each package the lock
//! pins against its archive's `Packages` entry (name, version, architecture, sha256, size). So
//! a bundle brings in no `.deb` the archive did not sign, whatever its lock says. Debian cannot
//! sign the definition and its local files: those are pinned by the bundle's own sha256
//! (`uvmkit bundle` prints it and writes it to `FILE.sha256`; `build --bundle-sha256` checks
//! it while reading the bundle).

use super::archive::{self, ArchiveError, ArchiveIndex, CarriedPackages};
use super::lock::{self, LockFile};
use crate::atomic_file::{temporary_beside, write_atomically};
use crate::definition::{self, ConfigError, ExtraFile, ExtraFileKind, LoadedDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};
use uvmkit_fetch::cache::{ContentCache, Sha256Digest};
use uvmkit_fetch::FetchError;

/// The bundle member holding the definition.
pub const DEFINITION: &str = "definition.toml";
/// The bundle member holding the definition's file name.
pub const DEFINITION_NAME: &str = "definition-name";
/// The bundle member holding the lock file.
pub const LOCK: &str = "image.lock";
/// The bundle member listing the other members' sha256.
pub const SUMS: &str = "SHA256SUMS";
/// The bundle member listing every other member's type, mode and content.
pub const MANIFEST: &str = "MANIFEST.json";
/// The directory of the `.deb` blobs.
pub const BLOBS: &str = "blobs/sha256/";
/// The directory of the signed archive indexes, laid out as on a Debian mirror.
pub const DISTS: &str = "dists/";
/// Names local files cannot take: the bundle's own members.
const RESERVED: [&str; 7] = [SUMS, MANIFEST, DEFINITION, DEFINITION_NAME, LOCK, "blobs", "dists"];
/// The largest `MANIFEST.json` read (a bundle of a million members stays far below).
const MANIFEST_MAX: u64 = 64 << 20;

/// Why a bundle could not be written or imported.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operation reported.
        source: io::Error,
    },
    /// A local file the definition references is not a regular file, directory or link, or
    /// its name is not UTF-8.
    #[error("{}: {problem}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The definition references a local path that cannot be bundled.
    #[error("cannot bundle {key} = {:?}: {why}; bundles hold local files at paths relative to the definition, inside its directory", path.display().to_string())]
    Unbundlable {
        /// The definition's key naming the path.
        key: String,
        /// The path as written.
        path: PathBuf,
        /// Why it cannot be bundled.
        why: String,
    },
    /// A pinned package is not in the cache (fetch first).
    #[error("package {package} is pinned but not in the cache; run `uvmkit fetch` first")]
    NotCached {
        /// The package and version.
        package: String,
    },
    /// The bundle is malformed (not a tar, missing or unlisted members, bad names).
    #[error("bundle {}: {message}", bundle.display())]
    Malformed {
        /// The bundle file.
        bundle: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A member's content does not match its recorded sha256.
    #[error("bundle member {member} is damaged or was tampered with: its content hashes to {actual}, not {expected}; refusing to use the bundle")]
    Tampered {
        /// The member's name.
        member: String,
        /// The sha256 `SHA256SUMS` or its name gives.
        expected: String,
        /// The sha256 of its content.
        actual: String,
    },
    /// Storing a blob in the cache failed.
    #[error(transparent)]
    Cache(FetchError),
    /// The bundle's bytes are not the ones pinned with `--bundle-sha256`.
    #[error("bundle {} hashes to sha256 {actual}, not the {expected} given with --bundle-sha256: it is not the bundle you pinned (altered, or another one); refusing it", bundle.display())]
    NotPinned {
        /// The bundle file.
        bundle: PathBuf,
        /// The pinned sha256.
        expected: String,
        /// The sha256 of its bytes.
        actual: String,
    },
    /// The bundle's definition cannot be loaded.
    #[error("bundle {}: {source}", bundle.display())]
    Definition {
        /// The bundle file.
        bundle: PathBuf,
        /// What loading it reported.
        source: Box<ConfigError>,
    },
    /// The bundle carries no signed index of an archive its definition draws from (written by
    /// an older uvmkit, or stripped).
    #[error("bundle {} carries no {member}: its packages cannot be checked against the archive's signature; write the bundle again with `uvmkit bundle`", bundle.display())]
    NoIndex {
        /// The bundle file.
        bundle: PathBuf,
        /// The member that is missing.
        member: String,
    },
    /// The bundle's lock is not the lock of its definition.
    #[error("bundle {}: its {LOCK} was not written for its definition (the definition's archives, packages, kernel or formats differ); write the bundle again with `uvmkit bundle`", bundle.display())]
    LockMismatch {
        /// The bundle file.
        bundle: PathBuf,
    },
    /// The signed chain does not hold: an index is not signed by the keyring, is altered, or a
    /// pinned package is not what the index lists.
    #[error("bundle {}: {source}; a bundle brings in only what the archive signed: refusing it", bundle.display())]
    Unsigned {
        /// The bundle file.
        bundle: PathBuf,
        /// What did not match.
        source: Box<ArchiveError>,
    },
    /// Writing a bundle: a cached `Packages` index cannot be read.
    #[error(transparent)]
    Index(Box<ArchiveError>),
    /// Writing a bundle: the lock pins a package the current archive index does not list.
    #[error("cannot bundle: {0}; the lock is older than the archive's index (Debian signs only current versions): run `uvmkit fetch --refresh` to pin them, then bundle again")]
    StaleLock(Box<ArchiveError>),
}

impl BundleError {
    /// True when the bundle or the cache failed (exit code 3: a damaged, tampered or
    /// incomplete bundle, a package not fetched yet); false when a local file is at fault.
    pub fn is_fetch_failure(&self) -> bool {
        !matches!(
            self,
            BundleError::Unbundlable { .. }
                | BundleError::Io { .. }
                | BundleError::Unsupported { .. }
                | BundleError::Definition { .. }
        )
    }
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a written bundle holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleReport {
    /// Members, all kinds.
    pub members: usize,
    /// `.deb` blobs.
    pub blobs: usize,
    /// Size of the bundle file.
    pub bytes: u64,
    /// The bundle file's sha256: the pin for `build --bundle-sha256`.
    pub sha256: String,
    /// Where the sha256 was written (`FILE.sha256`, `sha256sum -c` format).
    pub sha256_file: PathBuf,
}

/// The file `FILE.sha256` beside the bundle `FILE`.
pub fn sha256_path(bundle: &Path) -> PathBuf {
    let mut name = bundle.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// One entry of `MANIFEST.json`: a member, its type, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum ManifestEntry {
    /// A regular file: its mode (octal, as `0644`) and sha256.
    File {
        /// The member's name.
        name: String,
        /// Its permission bits, in octal.
        mode: String,
        /// Its sha256.
        sha256: String,
    },
    /// A directory and its mode.
    Directory {
        /// The member's name.
        name: String,
        /// Its permission bits, in octal.
        mode: String,
    },
    /// A symbolic link and its target.
    Symlink {
        /// The member's name.
        name: String,
        /// Where it points, as written.
        target: String,
    },
}

impl ManifestEntry {
    fn name(&self) -> &str {
        match self {
            ManifestEntry::File { name, .. }
            | ManifestEntry::Directory { name, .. }
            | ManifestEntry::Symlink { name, .. } => name,
        }
    }
}

/// `MANIFEST.json`: every member but itself and `SHA256SUMS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    /// The format version ([`MANIFEST_VERSION`]).
    version: u32,
    /// The members, in tar order.
    members: Vec<ManifestEntry>,
}

/// The `MANIFEST.json` format this build writes and reads.
const MANIFEST_VERSION: u32 = 1;

fn octal(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// One member to write.
enum Member {
    Bytes(Vec<u8>),
    File { path: PathBuf, mode: u32 },
    Dir { mode: u32 },
    Symlink(PathBuf),
}

/// The local paths a definition references, with the key naming each.
fn local_paths(loaded: &LoadedDefinition) -> Vec<(String, PathBuf)> {
    let def = &loaded.definition;
    let mut out = Vec::new();
    let mut files = |section: &str, list: &[ExtraFile]| {
        for (i, f) in list.iter().enumerate() {
            if let ExtraFileKind::Source(p) | ExtraFileKind::Directory(p) = &f.kind {
                out.push((format!("{section}[{i}] ({})", f.path), p.clone()));
            }
        }
    };
    files("files", &def.files);
    files("disk.data_files", &def.disk.data_files);
    let local = def.kernel.local.as_ref();
    for (key, p) in [
        ("kernel.path", local.map(|l| &l.image)),
        ("kernel.modules_dir", local.map(|l| &l.modules_dir)),
        ("kernel.config", local.and_then(|l| l.config.as_ref())),
        ("debian.keyring", def.debian.keyring.as_ref()),
    ] {
        if let Some(p) = p {
            out.push((key.to_string(), p.clone()));
        }
    }
    for (i, image) in def.preload.iter().flat_map(|p| p.images.iter()).enumerate() {
        out.push((format!("preload.images[{i}]"), PathBuf::from(image)));
    }
    out
}

/// `path` as a bundle member name, if it stays below the definition's directory.
fn member_name(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_string()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Adds `host` (a file, directory tree or symlink) as member `name`.
fn add_local(members: &mut BTreeMap<String, Member>, name: &str, host: &Path) -> Result<(), BundleError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::symlink_metadata(host).map_err(io_err(host))?;
    let mode = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() {
        members.insert(
            name.to_string(),
            Member::Symlink(fs::read_link(host).map_err(io_err(host))?),
        );
    } else if meta.is_dir() {
        members.insert(name.to_string(), Member::Dir { mode });
        let mut entries: Vec<_> = fs::read_dir(host)
            .map_err(io_err(host))?
            .collect::<Result<_, _>>()
            .map_err(io_err(host))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let child = e.file_name();
            let child = child.to_str().ok_or_else(|| BundleError::Unsupported {
                path: e.path(),
                problem: "file name is not UTF-8",
            })?;
            add_local(members, &format!("{name}/{child}"), &e.path())?;
        }
    } else if meta.is_file() {
        members.insert(
            name.to_string(),
            Member::File {
                path: host.to_path_buf(),
                mode,
            },
        );
    } else {
        return Err(BundleError::Unsupported {
            path: host.to_path_buf(),
            problem: "not a regular file, directory or symbolic link",
        });
    }
    // Parent directories, so the member unpacks on its own.
    let mut parent = Path::new(name).parent();
    while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
        members
            .entry(p.to_string_lossy().into_owned())
            .or_insert(Member::Dir { mode: 0o755 });
        parent = p.parent();
    }
    Ok(())
}

fn sha256_file(path: &Path) -> Result<String, BundleError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h).map_err(io_err(path))?;
    Ok(hex::encode(h.finalize()))
}

/// Writes the bundle of `loaded` with the packages `lock` pins (every one must be in `cache`,
/// and listed in the signed `index` of the definition's archives, which the bundle carries) to
/// `out`, atomically, and its sha256 to `out.sha256`.
pub fn write_bundle(
    loaded: &LoadedDefinition,
    lock: &LockFile,
    index: &ArchiveIndex,
    cache: &ContentCache,
    out: &Path,
) -> Result<BundleReport, BundleError> {
    // Checked as the offline build will check it: a bundle that would be refused is not written.
    let archives = index.parse().map_err(|e| BundleError::Index(Box::new(e)))?;
    archive::check_pinned(&lock::pinned_packages(lock, &loaded.definition), &archives)
        .map_err(|e| BundleError::StaleLock(Box::new(e)))?;
    let mut members: BTreeMap<String, Member> = BTreeMap::new();
    for (key, path) in local_paths(loaded) {
        let name = member_name(&path).ok_or_else(|| BundleError::Unbundlable {
            key: key.clone(),
            path: path.clone(),
            why: "the path is absolute or leaves the definition's directory".into(),
        })?;
        let top = name.split('/').next().unwrap_or_default();
        if RESERVED.contains(&top) {
            return Err(BundleError::Unbundlable {
                key,
                path,
                why: format!("{top} is reserved for the bundle itself"),
            });
        }
        add_local(&mut members, &name, &loaded.base_dir.join(&path))?;
    }
    members.insert(DEFINITION.into(), Member::Bytes(loaded.source_text.as_bytes().to_vec()));
    if let Some(name) = loaded.path.file_name().and_then(|n| n.to_str()) {
        members.insert(DEFINITION_NAME.into(), Member::Bytes(name.as_bytes().to_vec()));
    }
    members.insert(LOCK.into(), Member::Bytes(lock::render(lock).into_bytes()));
    for a in &index.archives {
        let dists = format!("{DISTS}{}/", a.archive.suite);
        members.insert(format!("{dists}InRelease"), Member::Bytes(a.inrelease.clone()));
        for f in &a.files {
            members.insert(
                format!("{dists}{}", f.index),
                Member::File {
                    path: f.blob.clone(),
                    mode: 0o644,
                },
            );
        }
    }
    let mut blobs = 0;
    for p in &lock.packages {
        let digest: Sha256Digest = p.sha256.parse().map_err(|_| BundleError::NotCached {
            package: format!("{} (bad sha256 {})", p.name, p.sha256),
        })?;
        // Re-hashed here: a bundle never carries a corrupt cache entry.
        let path = cache
            .get_verified(&digest)
            .map_err(BundleError::Cache)?
            .ok_or_else(|| BundleError::NotCached {
                package: format!("{} {}", p.name, p.version),
            })?;
        members.insert(format!("{BLOBS}{}", p.sha256), Member::File { path, mode: 0o644 });
        blobs += 1;
    }

    let mut sums = String::new();
    let mut manifest = Manifest {
        version: MANIFEST_VERSION,
        members: Vec::new(),
    };
    let mut file_sums = Vec::new();
    for (name, m) in &members {
        let (hash, mode) = match m {
            Member::Bytes(b) => (hex::encode(Sha256::digest(b)), 0o644),
            // Named by their sha256, which `get_verified` just checked.
            Member::File { mode, .. } if name.starts_with(BLOBS) => (name[BLOBS.len()..].to_string(), *mode),
            Member::File { path, mode } => (sha256_file(path)?, *mode),
            Member::Dir { mode } => {
                manifest.members.push(ManifestEntry::Directory {
                    name: name.clone(),
                    mode: octal(*mode),
                });
                continue;
            }
            Member::Symlink(target) => {
                let target = target.to_str().ok_or_else(|| BundleError::Unsupported {
                    path: PathBuf::from(name),
                    problem: "symbolic link target is not UTF-8",
                })?;
                manifest.members.push(ManifestEntry::Symlink {
                    name: name.clone(),
                    target: target.to_string(),
                });
                continue;
            }
        };
        file_sums.push((name.clone(), hash.clone()));
        manifest.members.push(ManifestEntry::File {
            name: name.clone(),
            mode: octal(mode),
            sha256: hash,
        });
    }
    let mut manifest_json = serde_json::to_vec_pretty(&manifest).expect("the manifest serialises");
    manifest_json.push(b'\n');
    file_sums.push((MANIFEST.to_string(), hex::encode(Sha256::digest(&manifest_json))));
    file_sums.sort();
    for (name, hash) in &file_sums {
        sums.push_str(&format!("{hash}  {name}\n"));
    }
    // SHA256SUMS first and MANIFEST.json second, so an import knows every member before it.
    let head = [
        (SUMS.to_string(), Member::Bytes(sums.into_bytes())),
        (MANIFEST.to_string(), Member::Bytes(manifest_json)),
    ];

    let tmp = temporary_beside(out);
    let result = write_tar(head.iter().map(|(n, m)| (n, m)).chain(&members), &tmp)
        .and_then(|()| sha256_file(&tmp))
        .and_then(|sha| fs::rename(&tmp, out).map_err(io_err(out)).map(|()| sha));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    let sha256 = result?;
    // `sha256sum -c FILE.sha256` checks it in the bundle's directory.
    let file_name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sha256_file = sha256_path(out);
    write_atomically(&sha256_file, format!("{sha256}  {file_name}\n").as_bytes()).map_err(io_err(&sha256_file))?;
    let bytes = fs::metadata(out).map_err(io_err(out))?.len();
    Ok(BundleReport {
        members: members.len() + head.len(),
        blobs,
        bytes,
        sha256,
        sha256_file,
    })
}

fn write_tar<'a>(members: impl IntoIterator<Item = (&'a String, &'a Member)>, path: &Path) -> Result<(), BundleError> {
    let file = File::create(path).map_err(io_err(path))?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size);
        h
    };
    for (name, m) in members {
        let r = match m {
            Member::Bytes(b) => tar.append_data(
                &mut header(tar::EntryType::Regular, 0o644, b.len() as u64),
                name,
                b.as_slice(),
            ),
            Member::File { path: host, mode } => {
                let f = File::open(host).map_err(io_err(host))?;
                let len = f.metadata().map_err(io_err(host))?.len();
                tar.append_data(
                    &mut header(tar::EntryType::Regular, *mode, len),
                    name,
                    BufReader::new(f).take(len),
                )
            }
            Member::Dir { mode } => tar.append_data(
                &mut header(tar::EntryType::Directory, *mode, 0),
                format!("{name}/"),
                io::empty(),
            ),
            Member::Symlink(target) => tar.append_link(&mut header(tar::EntryType::Symlink, 0o777, 0), name, target),
        };
        r.map_err(io_err(path))?;
    }
    let w = tar.into_inner().map_err(io_err(path))?;
    let file = w.into_inner().map_err(|e| BundleError::Io {
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io_err(path))
}

/// A bundle unpacked into a directory and verified; the directory is removed when this is
/// dropped.
#[derive(Debug)]
pub struct UnpackedBundle {
    /// The directory holding the definition and its local files.
    pub dir: PathBuf,
    /// The definition inside it; its lock is at `lock::lock_path(&definition)`.
    pub definition: PathBuf,
    /// How many blobs were imported into the cache.
    pub blobs: usize,
    /// The bundle file's sha256.
    pub sha256: String,
    /// Each carried archive index, verified.
    pub indexes: Vec<CarriedIndexAge>,
    /// The definition's own `[debian] keyring`, when it names one (it came from the bundle).
    pub own_keyring: Option<PathBuf>,
}

/// How old a carried archive index is: a bundle is a snapshot, used after its index's
/// `Valid-Until` by design (it was checked when the bundle was written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedIndexAge {
    /// The suite.
    pub suite: String,
    /// Its signed `Date`.
    pub date: Option<String>,
    /// Its `Valid-Until`, when that has passed.
    pub expired: Option<String>,
}

impl Drop for UnpackedBundle {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Unpacks `bundle` into the directory `dir`, which it creates (it must not exist), importing
/// every blob into `cache` after verifying its sha256, and checking every other member against
/// `SHA256SUMS` and `MANIFEST.json`; then verifies its packages against the signed indexes it
/// carries (see the module's documentation). With `pin`, the bundle's bytes must hash to it
/// (hashed as they are read, so what is checked is what was unpacked).
pub fn import_bundle(
    bundle: &Path,
    cache: &ContentCache,
    dir: &Path,
    pin: Option<&Sha256Digest>,
) -> Result<UnpackedBundle, BundleError> {
    use std::os::unix::fs::DirBuilderExt;
    // Created new and private: a directory someone prepared (with links in it) is never used.
    fs::DirBuilder::new().mode(0o700).create(dir).map_err(io_err(dir))?;
    // Dropped on error: the directory is removed.
    let mut unpacked = UnpackedBundle {
        dir: dir.to_path_buf(),
        definition: dir.join(DEFINITION),
        blobs: 0,
        sha256: String::new(),
        indexes: Vec::new(),
        own_keyring: None,
    };
    let (blobs, sha256) = unpack(bundle, cache, dir)?;
    if let Some(pin) = pin.filter(|p| **p != sha256) {
        return Err(BundleError::NotPinned {
            bundle: bundle.to_path_buf(),
            expected: pin.to_string(),
            actual: sha256.to_string(),
        });
    }
    unpacked.blobs = blobs;
    unpacked.sha256 = sha256.to_string();
    if let Some(name) = original_name(bundle, dir)? {
        let named = dir.join(&name);
        // Renamed only onto a free name: never over another member.
        if fs::symlink_metadata(&named).is_ok() {
            return Err(BundleError::Malformed {
                bundle: bundle.to_path_buf(),
                message: format!("{DEFINITION_NAME} names {name}, which is another member"),
            });
        }
        fs::rename(&unpacked.definition, &named).map_err(io_err(&named))?;
        unpacked.definition = named;
    }
    fs::rename(dir.join(LOCK), lock::lock_path(&unpacked.definition)).map_err(io_err(dir))?;
    let loaded = definition::load(&unpacked.definition).map_err(|source| BundleError::Definition {
        bundle: bundle.to_path_buf(),
        source: Box::new(source),
    })?;
    unpacked.indexes = verify_signed_chain(bundle, &loaded)?;
    unpacked.own_keyring = loaded.definition.debian.keyring;
    Ok(unpacked)
}

/// Verifies the packages the bundle's lock pins against the signed indexes it carries: each
/// `InRelease` signed by the keyring and for its suite, each `Packages.xz` the one it lists,
/// each pinned `.deb` (already checked against its name) listed there with its sha256.
fn verify_signed_chain(bundle: &Path, loaded: &LoadedDefinition) -> Result<Vec<CarriedIndexAge>, BundleError> {
    let (def, dir) = (&loaded.definition, &loaded.base_dir);
    let unsigned = |source| BundleError::Unsigned {
        bundle: bundle.to_path_buf(),
        source: Box::new(source),
    };
    let keyring = match &def.debian.keyring {
        None => uvmkit_debian::signature::Keyring::debian_archive(),
        Some(path) => {
            // Only a keyring the bundle carries (a bundle is built without the host's files).
            let member = member_name(path).ok_or_else(|| BundleError::Malformed {
                bundle: bundle.to_path_buf(),
                message: format!(
                    "[debian] keyring {:?} is not a member of the bundle",
                    path.display().to_string()
                ),
            })?;
            let path = dir.join(member);
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            archive::parse_keyring(&path, &bytes).map_err(unsigned)?
        }
    };
    let lock_path = lock::lock_path(&loaded.path);
    let lock = lock::read(&lock_path)
        .map_err(|e| BundleError::Malformed {
            bundle: bundle.to_path_buf(),
            message: e.to_string(),
        })?
        .ok_or_else(|| BundleError::Malformed {
            bundle: bundle.to_path_buf(),
            message: format!("no {LOCK} member; this is not a uvmkit bundle"),
        })?;
    // Otherwise the build would resolve again instead of taking the verified packages.
    if lock.resolution_inputs != lock::resolution_inputs(def) {
        return Err(BundleError::LockMismatch {
            bundle: bundle.to_path_buf(),
        });
    }
    let read_member = |member: &str| {
        let path = dir.join(member);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => fs::read(&path).map_err(io_err(&path)),
            _ => Err(BundleError::NoIndex {
                bundle: bundle.to_path_buf(),
                member: member.to_string(),
            }),
        }
    };
    let mut archives = Vec::new();
    let mut ages = Vec::new();
    for a in def.debian.archives() {
        let dists = format!("{DISTS}{}/", a.suite);
        let inrelease_member = format!("{dists}InRelease");
        let inrelease = read_member(&inrelease_member)?;
        let mut carried = Vec::new();
        for component in &def.debian.components {
            let member = format!("{dists}{}", archive::packages_index(&def.debian, component));
            carried.push(CarriedPackages {
                component: component.clone(),
                bytes: read_member(&member)?,
                origin: format!("bundle member {member}"),
            });
        }
        let origin = format!("bundle member {inrelease_member}");
        let index =
            archive::verify_carried(&origin, &inrelease, &keyring, &a, &def.debian, carried).map_err(unsigned)?;
        ages.push(CarriedIndexAge {
            suite: a.suite.clone(),
            date: index.date,
            expired: index.expired,
        });
        archives.push(index.packages);
    }
    archive::check_pinned(&lock::pinned_packages(&lock, def), &archives).map_err(unsigned)?;
    Ok(ages)
}

/// The definition's file name the verified `definition-name` member gives, if there is one: a
/// plain `NAME.toml`.
fn original_name(bundle: &Path, dir: &Path) -> Result<Option<String>, BundleError> {
    let path = dir.join(DEFINITION_NAME);
    let name = match fs::read_to_string(&path) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let plain = name.ends_with(".toml")
        && !name.starts_with('.')
        && !name.contains('/')
        && name.len() > ".toml".len()
        && name != LOCK;
    if !plain {
        return Err(BundleError::Malformed {
            bundle: bundle.to_path_buf(),
            message: format!("{DEFINITION_NAME} {name:?} is not a plain NAME.toml file name"),
        });
    }
    fs::remove_file(&path).map_err(io_err(&path))?;
    Ok(Some(name))
}

/// A reader that hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Parses `SHA256SUMS`.
fn parse_sums(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let (hash, member) = line
            .split_once("  ")
            .ok_or_else(|| format!("{SUMS}: bad line {line:?}"))?;
        if map.insert(member.to_string(), hash.to_string()).is_some() {
            return Err(format!("{SUMS} lists {member} twice"));
        }
    }
    Ok(map)
}

/// Parses `MANIFEST.json` and checks that it lists a file exactly where `SHA256SUMS` does, with
/// the same sha256.
fn parse_manifest(bytes: &[u8], sums: &BTreeMap<String, String>) -> Result<BTreeMap<String, ManifestEntry>, String> {
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| format!("{MANIFEST}: {e}"))?;
    if manifest.version != MANIFEST_VERSION {
        return Err(format!(
            "{MANIFEST} is version {}, this uvmkit reads {MANIFEST_VERSION}",
            manifest.version
        ));
    }
    let mut map = BTreeMap::new();
    for entry in manifest.members {
        let name = entry.name().to_string();
        if let ManifestEntry::File { sha256, .. } = &entry {
            if sums.get(&name) != Some(sha256) {
                return Err(format!("{MANIFEST} and {SUMS} disagree about {name}"));
            }
        }
        if map.insert(name.clone(), entry).is_some() {
            return Err(format!("{MANIFEST} lists {name} twice"));
        }
    }
    let files = map.values().filter(|e| matches!(e, ManifestEntry::File { .. })).count();
    // Every file but the manifest itself.
    if files + 1 != sums.len() || !sums.contains_key(MANIFEST) {
        return Err(format!("{MANIFEST} and {SUMS} list different files"));
    }
    Ok(map)
}

/// Reads the bundle's members into `dir` and its blobs into `cache`; returns how many blobs
/// there were and the bundle's sha256.
fn unpack(bundle: &Path, cache: &ContentCache, dir: &Path) -> Result<(usize, Sha256Digest), BundleError> {
    let malformed = |message: String| BundleError::Malformed {
        bundle: bundle.to_path_buf(),
        message,
    };
    let file = File::open(bundle).map_err(io_err(bundle))?;
    let mut archive = tar::Archive::new(HashingReader {
        inner: BufReader::new(file),
        hasher: Sha256::new(),
    });
    let mut sums: Option<BTreeMap<String, String>> = None;
    let mut manifest: Option<BTreeMap<String, ManifestEntry>> = None;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut blobs = 0;
    for entry in archive.entries().map_err(|e| malformed(e.to_string()))? {
        let mut entry = entry.map_err(|e| malformed(format!("not a readable tar: {e}")))?;
        let raw = entry.path().map_err(|e| malformed(e.to_string()))?.into_owned();
        let name = member_name(&raw).ok_or_else(|| {
            malformed(format!(
                "member {:?} is absolute or leaves the bundle",
                raw.display().to_string()
            ))
        })?;
        let kind = entry.header().entry_type();
        let head_again =
            (name == SUMS && (sums.is_some() || manifest.is_some())) || (name == MANIFEST && manifest.is_some());
        if seen.contains(&name) || head_again {
            return Err(malformed(format!("member {name} appears more than once")));
        }
        if name == SUMS {
            let mut text = String::new();
            (&mut entry)
                .take(MANIFEST_MAX)
                .read_to_string(&mut text)
                .map_err(|e| malformed(format!("{SUMS}: {e}")))?;
            sums = Some(parse_sums(&text).map_err(malformed)?);
            continue;
        }
        let Some(manifest) = &manifest else {
            let Some(sums) = sums.take() else {
                return Err(malformed(format!(
                    "{SUMS} must be the first member, found {name} before it"
                )));
            };
            if name != MANIFEST || kind != tar::EntryType::Regular {
                return Err(malformed(format!(
                    "{MANIFEST} must follow {SUMS}, found {name}; a bundle written by an older uvmkit has none: write it again with `uvmkit bundle`"
                )));
            }
            let mut bytes = Vec::new();
            (&mut entry)
                .take(MANIFEST_MAX)
                .read_to_end(&mut bytes)
                .map_err(|e| malformed(format!("{MANIFEST}: {e}")))?;
            let actual = hex::encode(Sha256::digest(&bytes));
            let expected = sums.get(MANIFEST).cloned().unwrap_or_default();
            if actual != expected {
                return Err(BundleError::Tampered {
                    member: name,
                    expected,
                    actual,
                });
            }
            manifest = Some(parse_manifest(&bytes, &sums).map_err(malformed)?);
            continue;
        };
        let target = dir.join(&name);
        refuse_symlinked_parents(dir, &name).map_err(malformed)?;
        let entry_listed = manifest
            .get(&name)
            .ok_or_else(|| malformed(format!("member {name} is not listed in {MANIFEST}")))?;
        let mode = entry.header().mode().unwrap_or(0);
        match (kind, entry_listed) {
            (tar::EntryType::Directory, ManifestEntry::Directory { mode: m, .. }) if *m == octal(mode) => {
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(malformed(format!("member {name} appears more than once"))),
                    Err(_) => {
                        create_parents(dir, &name)?;
                        fs::create_dir(&target).map_err(io_err(&target))?;
                    }
                }
            }
            (
                tar::EntryType::Symlink,
                ManifestEntry::Symlink {
                    target: listed_target, ..
                },
            ) => {
                let link = entry
                    .link_name()
                    .map_err(|e| malformed(e.to_string()))?
                    .ok_or_else(|| malformed(format!("symlink {name} has no target")))?;
                if link.to_str() != Some(listed_target.as_str()) {
                    return Err(malformed(format!(
                        "symlink {name} points to {:?}, but {MANIFEST} lists {listed_target:?}",
                        link.display().to_string()
                    )));
                }
                if !link_stays_inside(&name, &link) {
                    return Err(malformed(format!(
                        "symlink {name} leads out of the bundle (to {:?}); a bundle carries its local files itself",
                        link.display().to_string()
                    )));
                }
                create_parents(dir, &name)?;
                std::os::unix::fs::symlink(&*link, &target).map_err(io_err(&target))?;
            }
            (
                tar::EntryType::Regular,
                ManifestEntry::File {
                    mode: m,
                    sha256: expected,
                    ..
                },
            ) if *m == octal(mode) => {
                if let Some(hex_name) = name.strip_prefix(BLOBS) {
                    if hex_name != expected {
                        return Err(malformed(format!(
                            "{SUMS} gives {name} the sha256 {expected}, not its name"
                        )));
                    }
                    let digest: Sha256Digest = hex_name
                        .parse()
                        .map_err(|_| malformed(format!("{name} is not named by a sha256")))?;
                    match cache.put_reader(&mut entry, Some(digest)) {
                        Ok(_) => blobs += 1,
                        Err(FetchError::DigestMismatch { expected, actual }) => {
                            return Err(BundleError::Tampered {
                                member: name,
                                expected: expected.to_string(),
                                actual: actual.to_string(),
                            });
                        }
                        Err(e) => return Err(BundleError::Cache(e)),
                    }
                } else {
                    // No setuid or setgid bits on unpacked local files.
                    create_parents(dir, &name)?;
                    let actual = write_member(&mut entry, &target, mode & 0o777)?;
                    if &actual != expected {
                        let _ = fs::remove_file(&target);
                        return Err(BundleError::Tampered {
                            member: name,
                            expected: expected.clone(),
                            actual,
                        });
                    }
                }
            }
            (tar::EntryType::Regular | tar::EntryType::Directory | tar::EntryType::Symlink, listed) => {
                let (what, listed_mode) = match listed {
                    ManifestEntry::File { mode, .. } => ("a file", mode.as_str()),
                    ManifestEntry::Directory { mode, .. } => ("a directory", mode.as_str()),
                    ManifestEntry::Symlink { .. } => ("a symbolic link", ""),
                };
                return Err(malformed(format!(
                    "{MANIFEST} lists {name} as {what}{}, but the member is of type {kind:?} with mode {}",
                    if listed_mode.is_empty() {
                        String::new()
                    } else {
                        format!(" with mode {listed_mode}")
                    },
                    octal(mode)
                )));
            }
            (other, _) => return Err(malformed(format!("member {name} is of unsupported type {other:?}"))),
        }
        seen.insert(name);
    }
    let manifest =
        manifest.ok_or_else(|| malformed(format!("no {SUMS} and {MANIFEST}; this is not a uvmkit bundle")))?;
    let missing: Vec<&String> = manifest.keys().filter(|k| !seen.contains(*k)).collect();
    if !missing.is_empty() {
        return Err(malformed(format!(
            "members listed in {MANIFEST} are missing: {missing:?}"
        )));
    }
    for required in [DEFINITION, LOCK] {
        if !seen.iter().any(|s| s == required) {
            return Err(malformed(format!("no {required} member; this is not a uvmkit bundle")));
        }
    }
    // The rest of the file (the tar's end blocks and padding) counts towards its sha256.
    let mut reader = archive.into_inner();
    io::copy(&mut reader, &mut io::sink()).map_err(io_err(bundle))?;
    Ok((blobs, Sha256Digest(reader.hasher.finalize().into())))
}

/// Whether the symbolic link member `name` pointing at `link` resolves inside the bundle: a
/// relative target whose `..` never climbs above the bundle's root (links inside the bundle
/// are checked as they are made, so following them stays inside too).
fn link_stays_inside(name: &str, link: &Path) -> bool {
    let mut depth = name.split('/').count() as i64 - 1;
    for c in link.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Creates the missing parent directories of member `name` below `dir`, one at a time, never
/// through a symbolic link.
fn create_parents(dir: &Path, name: &str) -> Result<(), BundleError> {
    let mut p = dir.to_path_buf();
    let parts: Vec<&str> = name.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        p.push(part);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(BundleError::Unsupported {
                    path: p,
                    problem: "a bundle member's parent is not a directory",
                })
            }
            Err(_) => fs::create_dir(&p).map_err(io_err(&p))?,
        }
    }
    Ok(())
}

/// A member must not be written through a symbolic link an earlier member made.
fn refuse_symlinked_parents(dir: &Path, name: &str) -> Result<(), String> {
    let mut p = dir.to_path_buf();
    let parts: Vec<&str> = name.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        p.push(part);
        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(format!(
                "member {name} would be written through the symbolic link {part}"
            ));
        }
    }
    Ok(())
}

/// Writes a regular member to `target` with `mode`, returning its sha256.
fn write_member(r: &mut impl Read, target: &Path, mode: u32) -> Result<String, BundleError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // Created new, never through a link: an existing file or link at the name is an error.
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(target)
        .map_err(io_err(target))?;
    let mut f = BufWriter::new(file);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf).map_err(io_err(target))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        f.write_all(&buf[..n]).map_err(io_err(target))?;
    }
    f.flush().map_err(io_err(target))?;
    drop(f);
    fs::set_permissions(target, fs::Permissions::from_mode(mode)).map_err(io_err(target))?;
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::package::{FetchedPackage, Role};
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("uvmkit-bundle-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn definition(dir: &Path, text: &str) -> LoadedDefinition {
        let path = dir.join("img.toml");
        fs::write(&path, text).unwrap();
        crate::definition::load(&path).unwrap()
    }

    fn package(cache: &ContentCache, deb: &[u8]) -> FetchedPackage {
        let digest = cache.put_bytes(deb, None).unwrap();
        FetchedPackage {
            name: "tool".into(),
            version: "1.0-1".into(),
            architecture: "amd64".into(),
            filename: "pool/main/t/tool/tool_1.0-1_amd64.deb".into(),
            sha256: digest.to_string(),
            size: deb.len() as u64,
            role: Role::Requested,
            reason: "requested".into(),
            source: None,
            maintainer: None,
            homepage: None,
            archive: "test".into(),
        }
    }

    fn lock_with(cache: &ContentCache, deb: &[u8]) -> LockFile {
        LockFile {
            version: lock::LOCK_VERSION,
            resolution_inputs: "x".into(),
            packages: vec![package(cache, deb)],
        }
    }

    /// The `[debian]` section of a definition whose archive `test` is signed by the test key in
    /// `keys.gpg` (written into `dir`).
    fn signed_debian(dir: &Path) -> String {
        let signer = uvmkit_debian::testing::TestSigner::generate(3);
        fs::write(dir.join("keys.gpg"), signer.public_keyring_bytes()).unwrap();
        "[debian]\nsuite = \"test\"\nkeyring = \"keys.gpg\"\n".into()
    }

    /// The signed index of archive `test` listing `pinned`, in `cache`, as a fetch leaves it.
    fn signed_index(loaded: &LoadedDefinition, cache: &ContentCache, pinned: &[FetchedPackage]) -> ArchiveIndex {
        let mut packages = String::new();
        for p in pinned {
            packages += &format!(
                "Package: {}\nVersion: {}\nArchitecture: {}\nFilename: {}\nSize: {}\nSHA256: {}\n\n",
                p.name, p.version, p.architecture, p.filename, p.size, p.sha256
            );
        }
        let xz = liblzma::encode_all(packages.as_bytes(), 6).unwrap();
        let digest = cache.put_bytes(&xz, None).unwrap();
        let release = format!(
            "Suite: test\nCodename: test\nDate: Sat, 01 Jan 2000 00:00:00 UTC\nValid-Until: Sun, 02 Jan 2000 00:00:00 UTC\nSHA256:\n {digest} {} main/binary-amd64/Packages.xz\n",
            xz.len()
        );
        let inrelease = uvmkit_debian::testing::TestSigner::generate(3).clearsign(&release);
        let archive = loaded.definition.debian.archives().remove(0);
        ArchiveIndex {
            archives: vec![archive::ArchiveFiles {
                archive,
                inrelease: inrelease.into_bytes(),
                files: vec![archive::PackagesFile {
                    component: "main".into(),
                    index: "main/binary-amd64/Packages.xz".into(),
                    blob: cache.path_of(&digest),
                    sha256: digest.to_string(),
                }],
            }],
        }
    }

    #[test]
    fn round_trip_carries_local_files_blobs_and_lock_deterministically() {
        let dir = scratch("rt");
        fs::create_dir_all(dir.join("src/etc/sub")).unwrap();
        fs::write(dir.join("src/etc/sub/a.conf"), b"a=1\n").unwrap();
        fs::write(dir.join("src/run.sh"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(dir.join("src/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("sub/a.conf", dir.join("src/etc/link")).unwrap();
        fs::create_dir_all(dir.join("img")).unwrap();
        fs::write(dir.join("img/app.tar"), b"image archive").unwrap();
        let debian = signed_debian(&dir);
        let loaded = definition(
            &dir,
            &format!("name = \"t\"\n[[files]]\npath = \"/etc\"\ndirectory = \"src/etc\"\n[[files]]\npath = \"/run.sh\"\nsource = \"./src/run.sh\"\n\
             [[services]]\nname = \"dockerd\"\ncommand = [\"/usr/sbin/dockerd\"]\n[preload]\nimages = [\"img/app.tar\"]\n{debian}"),
        );
        let cache = ContentCache::open(&dir.join("cache")).unwrap();
        let lock = LockFile::new(&loaded.definition, &[package(&cache, b"not really a deb")]);
        let index = signed_index(&loaded, &cache, &lock.packages);
        let out = dir.join("b.tar");
        let report = write_bundle(&loaded, &lock, &index, &cache, &out).unwrap();
        assert_eq!(report.blobs, 1);
        let first = fs::read(&out).unwrap();
        assert_eq!(report.sha256, hex::encode(Sha256::digest(&first)));
        assert_eq!(
            fs::read_to_string(dir.join("b.tar.sha256")).unwrap(),
            format!("{}  b.tar\n", report.sha256),
            "FILE.sha256 is in `sha256sum -c` format"
        );
        let f = File::options().write(true).open(dir.join("src/run.sh")).unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12345))
            .unwrap();
        write_bundle(&loaded, &lock, &index, &cache, &out).unwrap();
        assert!(first == fs::read(&out).unwrap(), "bundle bytes depend on file times");

        // The manifest lists every member with its type; the index is carried as served.
        let mut tar = tar::Archive::new(File::open(&out).unwrap());
        let names: Vec<String> = tar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(&names[..2], [SUMS, MANIFEST], "{names:?}");
        assert!(names.contains(&"dists/test/InRelease".to_string()), "{names:?}");
        assert!(
            names.contains(&"dists/test/main/binary-amd64/Packages.xz".to_string()),
            "{names:?}"
        );
        let manifest_text = {
            let mut tar = tar::Archive::new(File::open(&out).unwrap());
            let mut e = tar.entries().unwrap().nth(1).unwrap().unwrap();
            let mut t = String::new();
            e.read_to_string(&mut t).unwrap();
            t
        };
        let manifest: Manifest = serde_json::from_str(&manifest_text).unwrap();
        assert!(manifest.members.contains(&ManifestEntry::Symlink {
            name: "src/etc/link".into(),
            target: "sub/a.conf".into()
        }));
        assert!(manifest.members.contains(&ManifestEntry::File {
            name: "src/run.sh".into(),
            mode: "0755".into(),
            sha256: hex::encode(Sha256::digest(b"#!/bin/sh\n")),
        }));
        assert!(manifest.members.contains(&ManifestEntry::Directory {
            name: "src/etc/sub".into(),
            mode: "0755".into(),
        }));

        let cache2 = ContentCache::open(&dir.join("cache2")).unwrap();
        let wrong_pin = Sha256Digest([7; 32]);
        let e = import_bundle(&out, &cache2, &dir.join("unpacked"), Some(&wrong_pin))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&report.sha256) && e.contains(&wrong_pin.to_string()), "{e}");
        assert!(!dir.join("unpacked").exists());
        let pin: Sha256Digest = report.sha256.parse().unwrap();
        let unpacked = import_bundle(&out, &cache2, &dir.join("unpacked"), Some(&pin)).unwrap();
        assert_eq!(unpacked.blobs, 1);
        assert_eq!(unpacked.sha256, report.sha256);
        assert_eq!(unpacked.own_keyring.as_deref(), Some(Path::new("keys.gpg")));
        assert_eq!(
            unpacked.indexes,
            [CarriedIndexAge {
                suite: "test".into(),
                date: Some("Sat, 01 Jan 2000 00:00:00 UTC".into()),
                expired: Some("Sun, 02 Jan 2000 00:00:00 UTC".into()),
            }],
            "an expired index in a bundle is reported, not refused"
        );
        assert!(cache2.contains(&lock.packages[0].sha256.parse().unwrap()));
        let u = &unpacked.dir;
        assert_eq!(
            unpacked.definition,
            unpacked.dir.join("img.toml"),
            "the definition keeps its name"
        );
        assert_eq!(fs::read_to_string(&unpacked.definition).unwrap(), loaded.source_text);
        assert_eq!(
            lock::read(&lock::lock_path(&unpacked.definition)).unwrap(),
            Some(lock.clone())
        );
        assert_eq!(fs::read(u.join("src/etc/sub/a.conf")).unwrap(), b"a=1\n");
        assert_eq!(fs::read(u.join("img/app.tar")).unwrap(), b"image archive");
        assert_eq!(
            fs::metadata(u.join("src/run.sh")).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(fs::read_link(u.join("src/etc/link")).unwrap(), Path::new("sub/a.conf"));
        let kept = unpacked.dir.clone();
        drop(unpacked);
        assert!(!kept.exists(), "the unpacked directory outlives its guard");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A tar of `SHA256SUMS` and `MANIFEST.json` made for `listed`, then `members`: (name,
    /// type, data or link target).
    fn hostile_tar(path: &Path, listed: &[ManifestEntry], members: &[(&str, tar::EntryType, &[u8])]) {
        let manifest = serde_json::to_vec(&Manifest {
            version: MANIFEST_VERSION,
            members: listed.to_vec(),
        })
        .unwrap();
        let mut sums = format!("{}  {MANIFEST}\n", hex::encode(Sha256::digest(&manifest)));
        for e in listed {
            if let ManifestEntry::File { name, sha256, .. } = e {
                sums += &format!("{sha256}  {name}\n");
            }
        }
        let head: [(&str, tar::EntryType, &[u8]); 2] = [
            (SUMS, tar::EntryType::Regular, sums.as_bytes()),
            (MANIFEST, tar::EntryType::Regular, &manifest),
        ];
        let mut tar = tar::Builder::new(File::create(path).unwrap());
        for (name, kind, data) in head.iter().chain(members) {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
                h.set_size(0);
                tar.append_link(&mut h, name, std::str::from_utf8(data).unwrap())
                    .unwrap();
            } else {
                h.set_size(data.len() as u64);
                tar.append_data(&mut h, name, *data).unwrap();
            }
        }
        tar.finish().unwrap();
    }

    #[test]
    fn hostile_bundles_write_nothing_outside_and_are_refused_naming_the_member() {
        let dir = scratch("hostile");
        let cache = ContentCache::open(&dir.join("cache")).unwrap();
        let outside = dir.join("outside.txt");
        fs::write(&outside, b"precious").unwrap();
        let payload: &[u8] = b"overwritten";
        let file = |name: &str| ManifestEntry::File {
            name: name.into(),
            mode: "0644".into(),
            sha256: hex::encode(Sha256::digest(payload)),
        };
        let link = |name: &str, target: &str| ManifestEntry::Symlink {
            name: name.into(),
            target: target.into(),
        };
        let target = outside.to_str().unwrap().as_bytes();
        let outside_text = outside.to_str().unwrap();
        type Case<'a> = (
            &'a str,
            Vec<ManifestEntry>,
            Vec<(&'a str, tar::EntryType, &'a [u8])>,
            &'a str,
        );
        let cases: [Case; 7] = [
            // A link to a host file, then a regular member of the same name through it.
            (
                "link-then-file",
                vec![file("aaa")],
                vec![
                    ("aaa", tar::EntryType::Symlink, target),
                    ("aaa", tar::EntryType::Regular, payload),
                ],
                "MANIFEST.json lists aaa as a file with mode 0644, but the member is of type Symlink",
            ),
            // A link out of the bundle, listed as such.
            (
                "link-out",
                vec![link("bbb", "../../outside.txt")],
                vec![("bbb", tar::EntryType::Symlink, b"../../outside.txt")],
                "symlink bbb leads out of the bundle",
            ),
            // A link the manifest does not list.
            (
                "unlisted",
                vec![],
                vec![("eee", tar::EntryType::Symlink, b"ddd")],
                "member eee is not listed in MANIFEST.json",
            ),
            // A link to another target than listed.
            (
                "retargeted",
                vec![link("fff", "a")],
                vec![("fff", tar::EntryType::Symlink, b"b")],
                "symlink fff points to \"b\", but MANIFEST.json lists \"a\"",
            ),
            (
                "hard-link",
                vec![link("ccc", outside_text)],
                vec![("ccc", tar::EntryType::Link, target)],
                "member ccc is of unsupported type Link",
            ),
            (
                "device",
                vec![link("ddd", "x")],
                vec![("ddd", tar::EntryType::Char, b"")],
                "member ddd is of unsupported type Char",
            ),
            (
                "duplicate",
                vec![file("aaa")],
                vec![
                    ("aaa", tar::EntryType::Regular, payload),
                    ("aaa", tar::EntryType::Regular, payload),
                ],
                "member aaa appears more than once",
            ),
        ];
        for (case, listed, members, needle) in cases {
            let tar_path = dir.join(format!("{case}.tar"));
            hostile_tar(&tar_path, &listed, &members);
            let into = dir.join(format!("unpacked-{case}"));
            let e = import_bundle(&tar_path, &cache, &into, None).unwrap_err().to_string();
            assert!(e.contains(needle), "{case}: {e}");
            assert_eq!(fs::read(&outside).unwrap(), b"precious", "{case} wrote outside");
            assert!(!into.exists(), "{case}: the refused bundle's directory is left");
        }
        // The directory must be new: one that exists (perhaps prepared with links) is refused.
        fs::create_dir(dir.join("taken")).unwrap();
        let tar_path = dir.join("duplicate.tar");
        assert!(import_bundle(&tar_path, &cache, &dir.join("taken"), None).is_err());
        assert!(dir.join("taken").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn paths_outside_the_definition_and_uncached_packages_are_refused() {
        let dir = scratch("refuse");
        let cache = ContentCache::open(&dir.join("cache")).unwrap();
        let lock = lock_with(&cache, b"deb");
        // A [[files]] source outside is refused when the definition is loaded already.
        fs::write(
            dir.join("img.toml"),
            "name = \"t\"\n[[files]]\npath = \"/x\"\nsource = \"../x\"\n",
        )
        .unwrap();
        let e = crate::definition::load(&dir.join("img.toml")).unwrap_err().to_string();
        assert!(
            e.contains("files[0] (/x)") && e.contains("leaves the definition's directory"),
            "{e}"
        );
        let loaded = definition(
            &dir,
            "name = \"t\"\n[debian]\nsuite = \"test\"\nkeyring = \"../keys.gpg\"\n",
        );
        let index = signed_index(&loaded, &cache, &lock.packages);
        let e = write_bundle(&loaded, &lock, &index, &cache, &dir.join("b.tar"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("debian.keyring") && e.contains("../keys.gpg"), "{e}");
        let loaded = definition(&dir, "name = \"t\"\n[debian]\nsuite = \"test\"\n");
        let other = ContentCache::open(&dir.join("empty")).unwrap();
        let e = write_bundle(&loaded, &lock, &index, &other, &dir.join("b.tar"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tool 1.0-1") && e.contains("uvmkit fetch"), "{e}");
        // A lock pinning what the archive's index does not list (older than the index).
        let newer = signed_index(&loaded, &cache, &[package(&cache, b"the archive's newer deb")]);
        let e = write_bundle(&loaded, &lock, &newer, &cache, &dir.join("b.tar"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("package tool 1.0-1 (amd64) is pinned from test")
                && e.contains("gives it sha256")
                && e.contains("fetch --refresh"),
            "{e}"
        );
        assert!(!dir.join("b.tar").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
