//! `IMAGE.lock`: the exact inputs of an image, beside its definition.
//!
//! `uvmkit build` writes it after resolving; later builds of an unchanged definition take the
//! packages from it instead of resolving again (so they need no archive index, and build
//! offline from a filled cache); `--locked` refuses to build when resolution would differ and
//! names what changed.

use super::package::FetchedPackage;
use super::sources::LockUse;
use crate::atomic_file::write_atomically;
use crate::definition::{Format, ImageDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The lock file format version this build writes and reads.
pub const LOCK_VERSION: u32 = 1;

/// The contents of `IMAGE.lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// Format version.
    pub version: u32,
    /// Hash of the parts of the definition that decide resolution; a different value means
    /// the lock is stale.
    pub resolution_inputs: String,
    /// Every pinned package, sorted by name.
    #[serde(rename = "package")]
    pub packages: Vec<FetchedPackage>,
}

impl LockFile {
    /// The lock of `def` pinning `packages`.
    pub fn new(def: &ImageDefinition, packages: &[FetchedPackage]) -> LockFile {
        LockFile {
            version: LOCK_VERSION,
            resolution_inputs: resolution_inputs(def),
            packages: packages.to_vec(),
        }
    }
}

/// Why a lock file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What the operation reported.
        source: std::io::Error,
    },
    /// The file is not a valid lock file.
    #[error("{}: not a valid lock file ({message}); delete it to resolve again", path.display())]
    Malformed {
        /// The lock file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// `--locked`, and resolution differs from the lock.
    #[error(
        "--locked: resolution differs from {}:\n  {}\nbuild without --locked to update the lock",
        path.display(),
        changes.join("\n  ")
    )]
    Drift {
        /// The lock file.
        path: PathBuf,
        /// One line per package that differs (`+ name version (reason)`, `- ...`, `~ ...`).
        changes: Vec<String>,
    },
    /// `outdated`, and there is no lock file to compare.
    #[error("{}: there is no lock to compare; run `uvmkit fetch` on the definition first", path.as_deref().map_or("(no lock file is used)".into(), |p| p.display().to_string()))]
    NothingToCompare {
        /// Where the lock file was looked for.
        path: Option<PathBuf>,
    },
    /// `--locked`, and there is no lock file.
    #[error("--locked: there is no {}; build once without --locked to create it", path.display())]
    Missing {
        /// Where the lock file was looked for.
        path: PathBuf,
    },
}

/// `images/docker.toml` → `images/docker.lock`.
pub fn lock_path(definition: &Path) -> PathBuf {
    definition.with_extension("lock")
}

/// Hash of what decides resolution: the archive, the packages, the kernel and the boot loaders.
pub fn resolution_inputs(def: &ImageDefinition) -> String {
    let d = &def.debian;
    let mut text = format!(
        "suite={}\narch={}\ncomponents={}\n",
        d.suite,
        d.architecture,
        d.components.join(",")
    );
    // Only a definition that draws from more than its release says so, so the locks of
    // definitions from before several archives stay current.
    let archives = d.archives();
    if archives.len() > 1 {
        let suites: Vec<&str> = archives.iter().map(|a| a.suite.as_str()).collect();
        let mut pins = d.backports.clone();
        pins.sort();
        text.push_str(&format!(
            "archives={}\nbackports={}\n",
            suites.join(","),
            pins.join(",")
        ));
    }
    text.push_str(&format!(
        "kernel={}\nlocal-kernel={}\n",
        def.kernel.package,
        def.kernel.local.is_some()
    ));
    let mut names: Vec<&str> = def.packages.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    text.push_str(&format!("packages={}\n", names.join(",")));
    text.push_str(&format!("iso={}\n", def.formats.contains(&Format::Iso)));
    // Only a definition that boots through the signed chain says so, so the locks of
    // definitions that need none of its packages stay current.
    if def.boots_through_shim(&def.formats) {
        text.push_str("shim=true\n");
    }
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The packages `lock` pins, each with its archive: the release suite of `def` where the
/// lock (written before images drew from several archives) does not say.
pub fn pinned_packages(lock: &LockFile, def: &ImageDefinition) -> Vec<FetchedPackage> {
    let mut packages = lock.packages.clone();
    for p in packages.iter_mut().filter(|p| p.archive.is_empty()) {
        p.archive = def.debian.suite.clone();
    }
    packages
}

/// Reads the lock at `path`, if there is one.
pub fn read(path: &Path) -> Result<Option<LockFile>, LockError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LockError::Io {
                path: path.into(),
                source,
            })
        }
    };
    let lock: LockFile = toml::from_str(&text).map_err(|e| LockError::Malformed {
        path: path.into(),
        message: e.message().to_string(),
    })?;
    if lock.version != LOCK_VERSION {
        return Err(LockError::Malformed {
            path: path.into(),
            message: format!("version {} is not {LOCK_VERSION}", lock.version),
        });
    }
    Ok(Some(lock))
}

/// The lock file's text: a header, then the packages as TOML.
pub fn render(lock: &LockFile) -> String {
    let body = toml::to_string(lock).expect("lock file serialises");
    format!("# uvmkit lock file: the exact inputs of this image. Written by `uvmkit build`;\n# `uvmkit build --locked` refuses to build if resolution would differ.\n{body}")
}

/// Writes the lock atomically, unless it already has exactly these contents.
pub fn write(path: &Path, lock: &LockFile) -> Result<bool, LockError> {
    let text = render(lock);
    if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
        return Ok(false);
    }
    write_atomically(path, text.as_bytes()).map_err(|source| LockError::Io {
        path: path.into(),
        source,
    })?;
    Ok(true)
}

/// Records `packages` in the image's lock file when `lock` says to ([`LockUse::Update`]);
/// returns whether the file changed. The one place a lock is updated: call it once the build
/// or fetch that used these packages succeeded.
pub fn record(lock: &LockUse, def: &ImageDefinition, packages: &[FetchedPackage]) -> Result<bool, LockError> {
    match lock {
        LockUse::Update(path) => write(path, &LockFile::new(def, packages)),
        LockUse::None | LockUse::ReadOnly(_) | LockUse::Locked(_) => Ok(false),
    }
}

/// What differs between the pinned packages and a new resolution, one line each.
pub fn drift(pinned: &[FetchedPackage], resolved: &[FetchedPackage]) -> Vec<String> {
    let old: BTreeMap<&str, &FetchedPackage> = pinned.iter().map(|p| (p.name.as_str(), p)).collect();
    let new: BTreeMap<&str, &FetchedPackage> = resolved.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut changes = Vec::new();
    for (name, p) in &old {
        match new.get(name) {
            None => changes.push(format!("- {name} {} (no longer needed)", p.version)),
            Some(q) if q.version != p.version => changes.push(format!("~ {name} {} -> {}", p.version, q.version)),
            Some(q) if q.sha256 != p.sha256 => {
                changes.push(format!("~ {name} {}: sha256 {} -> {}", p.version, p.sha256, q.sha256))
            }
            _ => {}
        }
    }
    for (name, q) in &new {
        if !old.contains_key(name) {
            changes.push(format!("+ {name} {} ({})", q.version, q.reason));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::package::Role;

    fn pkg(name: &str, version: &str, sha: char) -> FetchedPackage {
        FetchedPackage {
            name: name.into(),
            version: version.into(),
            architecture: "amd64".into(),
            filename: format!("pool/main/{name}_{version}_amd64.deb"),
            sha256: sha.to_string().repeat(64),
            size: 10,
            role: Role::Requested,
            reason: "requested".into(),
            source: None,
            maintainer: Some("Someone <s@example.org>".into()),
            homepage: None,
            archive: "bookworm".into(),
        }
    }

    #[test]
    fn round_trips_and_rewrites_only_on_change() {
        let dir = std::env::temp_dir().join(format!("uvmkit-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("img.lock");
        let lock = LockFile {
            version: LOCK_VERSION,
            resolution_inputs: "abc".into(),
            packages: vec![pkg("a", "1.0", 'a'), pkg("b", "2:1.0~rc1-1", 'b')],
        };
        assert!(write(&path, &lock).unwrap());
        assert!(!write(&path, &lock).unwrap(), "unchanged lock rewritten");
        assert_eq!(read(&path).unwrap(), Some(lock));
        std::fs::write(&path, "version = 1\nbogus = 2\n").unwrap();
        assert!(matches!(read(&path), Err(LockError::Malformed { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn drift_names_added_removed_and_changed_packages() {
        let old = vec![pkg("a", "1.0", 'a'), pkg("b", "1.0", 'b'), pkg("c", "1.0", 'c')];
        let new = vec![pkg("a", "1.1", 'd'), pkg("c", "1.0", 'e'), pkg("n", "3", 'f')];
        let d = drift(&old, &new);
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(d.contains(&"~ a 1.0 -> 1.1".to_string()));
        assert!(d.iter().any(|l| l.starts_with("- b 1.0")));
        assert!(d.iter().any(|l| l.starts_with("~ c 1.0: sha256")));
        assert!(d.iter().any(|l| l.starts_with("+ n 3")));
        assert!(drift(&old, &old).is_empty());
    }

    #[test]
    fn only_an_updatable_lock_is_recorded() {
        let dir = std::env::temp_dir().join(format!("uvmkit-lock-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("img.lock");
        let def = crate::definition::parse("name = \"m\"\n", Path::new("m.toml")).unwrap();
        let packages = [pkg("a", "1.0", 'a')];
        for lock in [
            LockUse::None,
            LockUse::ReadOnly(path.clone()),
            LockUse::Locked(path.clone()),
        ] {
            assert!(!record(&lock, &def, &packages).unwrap(), "{lock:?}");
            assert!(!path.exists(), "{lock:?} wrote the lock");
        }
        assert!(record(&LockUse::Update(path.clone()), &def, &packages).unwrap());
        let written = read(&path).unwrap().unwrap();
        assert_eq!(written, LockFile::new(&def, &packages));
        assert_eq!(written.resolution_inputs, resolution_inputs(&def));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
