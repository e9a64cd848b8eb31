//! Offline bundles: one tar file holding everything a build needs, for air-gapped machines.
//!
//! Members, in byte order of their names (the tar is deterministic: sorted, mtime 0, uid and
//! gid 0, no user or group names):
//! - `SHA256SUMS`: the sha256 of every other regular member (`sha256sum -c` format);
//! - `blobs/sha256/HEX`: every pinned `.deb`, named by its sha256;
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
//! Importing checks every member against `SHA256SUMS`, and every blob against its name, before
//! it is used: a tampered bundle is refused, naming the member. It unpacks into a fresh private
//! directory (created new, mode 0700) and writes nothing outside it, even for a bundle it then
//! refuses: every file is created new without following links (`O_EXCL | O_NOFOLLOW`), no member
//! is written through a symbolic link, and a member named twice, a hard link, a device, a member
//! `SHA256SUMS` lists as a file that is something else, and a symbolic link leading out of the
//! bundle are refused.

use super::lock::{self, LockFile};
use crate::atomic_file::temporary_beside;
use crate::definition::{ExtraFile, ExtraFileKind, LoadedDefinition};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
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
/// The directory of the `.deb` blobs.
pub const BLOBS: &str = "blobs/sha256/";

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
}

impl BundleError {
    /// True when the bundle or the cache failed (exit code 3: a damaged, tampered or
    /// incomplete bundle, a package not fetched yet); false when a local file is at fault.
    pub fn is_fetch_failure(&self) -> bool {
        !matches!(
            self,
            BundleError::Unbundlable { .. } | BundleError::Io { .. } | BundleError::Unsupported { .. }
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

/// Writes the bundle of `loaded` with the packages `lock` pins (every one must be in `cache`)
/// to `out`, atomically.
pub fn write_bundle(
    loaded: &LoadedDefinition,
    lock: &LockFile,
    cache: &ContentCache,
    out: &Path,
) -> Result<BundleReport, BundleError> {
    let mut members: BTreeMap<String, Member> = BTreeMap::new();
    for (key, path) in local_paths(loaded) {
        let name = member_name(&path).ok_or_else(|| BundleError::Unbundlable {
            key: key.clone(),
            path: path.clone(),
            why: "the path is absolute or leaves the definition's directory".into(),
        })?;
        let top = name.split('/').next().unwrap_or_default();
        if [SUMS, DEFINITION, DEFINITION_NAME, LOCK, "blobs"].contains(&top) {
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
    for (name, m) in &members {
        let hash = match m {
            Member::Bytes(b) => hex::encode(Sha256::digest(b)),
            // Named by their sha256, which `get_verified` just checked.
            Member::File { .. } if name.starts_with(BLOBS) => name[BLOBS.len()..].to_string(),
            Member::File { path, .. } => sha256_file(path)?,
            Member::Dir { .. } | Member::Symlink(_) => continue,
        };
        sums.push_str(&format!("{hash}  {name}\n"));
    }
    members.insert(SUMS.into(), Member::Bytes(sums.into_bytes()));

    let tmp = temporary_beside(out);
    let result = write_tar(&members, &tmp).and_then(|()| fs::rename(&tmp, out).map_err(io_err(out)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    let bytes = fs::metadata(out).map_err(io_err(out))?.len();
    Ok(BundleReport {
        members: members.len(),
        blobs,
        bytes,
    })
}

fn write_tar(members: &BTreeMap<String, Member>, path: &Path) -> Result<(), BundleError> {
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

/// A bundle unpacked into a directory; the directory is removed when this is dropped.
#[derive(Debug)]
pub struct UnpackedBundle {
    /// The directory holding the definition and its local files.
    pub dir: PathBuf,
    /// The definition inside it; its lock is at `lock::lock_path(&definition)`.
    pub definition: PathBuf,
    /// How many blobs were imported into the cache.
    pub blobs: usize,
}

impl Drop for UnpackedBundle {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Unpacks `bundle` into the directory `dir`, which it creates (it must not exist), importing
/// every blob into `cache` after verifying its sha256, and checking every other member against
/// `SHA256SUMS`.
pub fn import_bundle(bundle: &Path, cache: &ContentCache, dir: &Path) -> Result<UnpackedBundle, BundleError> {
    use std::os::unix::fs::DirBuilderExt;
    // Created new and private: a directory someone prepared (with links in it) is never used.
    fs::DirBuilder::new().mode(0o700).create(dir).map_err(io_err(dir))?;
    // Dropped on error: the directory is removed.
    let mut unpacked = UnpackedBundle {
        dir: dir.to_path_buf(),
        definition: dir.join(DEFINITION),
        blobs: 0,
    };
    unpacked.blobs = unpack(bundle, cache, dir)?;
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
    Ok(unpacked)
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

fn unpack(bundle: &Path, cache: &ContentCache, dir: &Path) -> Result<usize, BundleError> {
    let malformed = |message: String| BundleError::Malformed {
        bundle: bundle.to_path_buf(),
        message,
    };
    let file = File::open(bundle).map_err(io_err(bundle))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut sums: Option<BTreeMap<String, String>> = None;
    let mut seen: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
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
        if name == SUMS && sums.is_some() || seen.contains(&name) {
            return Err(malformed(format!("member {name} appears more than once")));
        }
        if name == SUMS {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| malformed(format!("{SUMS}: {e}")))?;
            let mut map = BTreeMap::new();
            for line in text.lines() {
                let (hash, member) = line
                    .split_once("  ")
                    .ok_or_else(|| malformed(format!("{SUMS}: bad line {line:?}")))?;
                map.insert(member.to_string(), hash.to_string());
            }
            sums = Some(map);
            continue;
        }
        let Some(sums) = &sums else {
            return Err(malformed(format!(
                "{SUMS} must be the first member, found {name} before it"
            )));
        };
        let target = dir.join(&name);
        refuse_symlinked_parents(dir, &name).map_err(malformed)?;
        if kind != tar::EntryType::Regular && sums.contains_key(&name) {
            return Err(malformed(format!(
                "{SUMS} lists {name} as a file, but the member is of type {kind:?}"
            )));
        }
        match kind {
            tar::EntryType::Directory => match fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(malformed(format!("member {name} appears more than once"))),
                Err(_) => {
                    create_parents(dir, &name)?;
                    fs::create_dir(&target).map_err(io_err(&target))?;
                }
            },
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| malformed(e.to_string()))?
                    .ok_or_else(|| malformed(format!("symlink {name} has no target")))?;
                if !link_stays_inside(&name, &link) {
                    return Err(malformed(format!(
                        "symlink {name} leads out of the bundle (to {:?}); a bundle carries its local files itself",
                        link.display().to_string()
                    )));
                }
                create_parents(dir, &name)?;
                std::os::unix::fs::symlink(&*link, &target).map_err(io_err(&target))?;
            }
            tar::EntryType::Regular => {
                let expected = sums
                    .get(&name)
                    .ok_or_else(|| malformed(format!("member {name} is not listed in {SUMS}")))?;
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
                    let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
                    create_parents(dir, &name)?;
                    let actual = write_member(&mut entry, &target, mode)?;
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
            other => return Err(malformed(format!("member {name} is of unsupported type {other:?}"))),
        }
        seen.insert(name);
    }
    let sums = sums.ok_or_else(|| malformed(format!("no {SUMS} member; this is not a uvmkit bundle")))?;
    let missing: Vec<&String> = sums.keys().filter(|k| !seen.contains(*k)).collect();
    if !missing.is_empty() {
        return Err(malformed(format!("members listed in {SUMS} are missing: {missing:?}")));
    }
    for required in [DEFINITION, LOCK] {
        if !seen.iter().any(|s| s == required) {
            return Err(malformed(format!("no {required} member; this is not a uvmkit bundle")));
        }
    }
    Ok(blobs)
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

    fn lock_with(cache: &ContentCache, deb: &[u8]) -> LockFile {
        let digest = cache.put_bytes(deb, None).unwrap();
        let pkg = FetchedPackage {
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
            archive: "bookworm".into(),
        };
        LockFile {
            version: lock::LOCK_VERSION,
            resolution_inputs: "x".into(),
            packages: vec![pkg],
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
        let loaded = definition(
            &dir,
            "name = \"t\"\n[[files]]\npath = \"/etc\"\ndirectory = \"src/etc\"\n[[files]]\npath = \"/run.sh\"\nsource = \"./src/run.sh\"\n\
             [[services]]\nname = \"dockerd\"\ncommand = [\"/usr/sbin/dockerd\"]\n[preload]\nimages = [\"img/app.tar\"]\n",
        );
        let cache = ContentCache::open(&dir.join("cache")).unwrap();
        let lock = lock_with(&cache, b"not really a deb");
        let out = dir.join("b.tar");
        let report = write_bundle(&loaded, &lock, &cache, &out).unwrap();
        assert_eq!(report.blobs, 1);
        let first = fs::read(&out).unwrap();
        let f = File::options().write(true).open(dir.join("src/run.sh")).unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12345))
            .unwrap();
        write_bundle(&loaded, &lock, &cache, &out).unwrap();
        assert!(first == fs::read(&out).unwrap(), "bundle bytes depend on file times");

        let cache2 = ContentCache::open(&dir.join("cache2")).unwrap();
        let unpacked = import_bundle(&out, &cache2, &dir.join("unpacked")).unwrap();
        assert_eq!(unpacked.blobs, 1);
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

    /// A tar of `members`: (name, type, data or link target).
    fn hostile_tar(path: &Path, members: &[(&str, tar::EntryType, &[u8])]) {
        let mut tar = tar::Builder::new(File::create(path).unwrap());
        for (name, kind, data) in members {
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
        let sums = format!("{}  aaa\n", hex::encode(Sha256::digest(payload)));
        let target = outside.to_str().unwrap().as_bytes();
        let cases: [(&str, Vec<(&str, tar::EntryType, &[u8])>, &str); 5] = [
            // A link to a host file, then a regular member of the same name through it.
            (
                "link-then-file",
                vec![
                    (SUMS, tar::EntryType::Regular, sums.as_bytes()),
                    ("aaa", tar::EntryType::Symlink, target),
                    ("aaa", tar::EntryType::Regular, payload),
                ],
                "SHA256SUMS lists aaa as a file, but the member is of type Symlink",
            ),
            // A link out of the bundle, not listed.
            (
                "link-out",
                vec![
                    (SUMS, tar::EntryType::Regular, b""),
                    ("bbb", tar::EntryType::Symlink, b"../../outside.txt"),
                ],
                "symlink bbb leads out of the bundle",
            ),
            (
                "hard-link",
                vec![
                    (SUMS, tar::EntryType::Regular, b""),
                    ("ccc", tar::EntryType::Link, target),
                ],
                "member ccc is of unsupported type Link",
            ),
            (
                "device",
                vec![(SUMS, tar::EntryType::Regular, b""), ("ddd", tar::EntryType::Char, b"")],
                "member ddd is of unsupported type Char",
            ),
            (
                "duplicate",
                vec![
                    (SUMS, tar::EntryType::Regular, sums.as_bytes()),
                    ("aaa", tar::EntryType::Regular, payload),
                    ("aaa", tar::EntryType::Regular, payload),
                ],
                "member aaa appears more than once",
            ),
        ];
        for (case, members, needle) in cases {
            let tar_path = dir.join(format!("{case}.tar"));
            hostile_tar(&tar_path, &members);
            let into = dir.join(format!("unpacked-{case}"));
            let e = import_bundle(&tar_path, &cache, &into).unwrap_err().to_string();
            assert!(e.contains(needle), "{case}: {e}");
            assert_eq!(fs::read(&outside).unwrap(), b"precious", "{case} wrote outside");
            assert!(!into.exists(), "{case}: the refused bundle's directory is left");
        }
        // The directory must be new: one that exists (perhaps prepared with links) is refused.
        fs::create_dir(dir.join("taken")).unwrap();
        let tar_path = dir.join("duplicate.tar");
        assert!(import_bundle(&tar_path, &cache, &dir.join("taken")).is_err());
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
        let loaded = definition(&dir, "name = \"t\"\n[debian]\nkeyring = \"../keys.gpg\"\n");
        let e = write_bundle(&loaded, &lock, &cache, &dir.join("b.tar"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("debian.keyring") && e.contains("../keys.gpg"), "{e}");
        let loaded = definition(&dir, "name = \"t\"\n");
        let other = ContentCache::open(&dir.join("empty")).unwrap();
        let e = write_bundle(&loaded, &lock, &other, &dir.join("b.tar"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tool 1.0-1") && e.contains("uvmkit fetch"), "{e}");
        assert!(!dir.join("b.tar").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
