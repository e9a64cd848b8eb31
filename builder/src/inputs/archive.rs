//! The archive index: Debian's signed `InRelease`, verified against the archive keyring, and
//! the `Packages` indexes it lists, fetched into the cache and checked by the sha256 it gives
//! (Debian's repository format, "Release files" and "Packages indices").

use super::error::InputError;
use super::sources::{InputSources, LockUse};
use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use uvmkit_debian::control::{ControlError, PackageIndex};
use uvmkit_debian::release::{Release, ReleaseError};
use uvmkit_debian::signature::{verify_inrelease, Keyring, SignatureError};
use uvmkit_fetch::cache::Sha256Digest;
use uvmkit_fetch::http::Progress;

/// How long a fetched archive index is reused before it is fetched again (unless
/// `--refresh`); a lock file pins exact versions regardless.
pub const INDEX_MAX_AGE: Duration = Duration::from_secs(6 * 3600);

/// Why the archive's index could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The definition's `[debian] keyring` is not an OpenPGP keyring.
    #[error("keyring {}: {source}", path.display())]
    Keyring {
        /// The keyring file.
        path: PathBuf,
        /// What reading it reported.
        source: SignatureError,
    },
    /// `InRelease` is not signed by a key of the keyring.
    #[error("{url}: {source}; the mirror may be tampered with, or the keyring does not match this archive")]
    Signature {
        /// The `InRelease` URL.
        url: String,
        /// What the check reported.
        source: SignatureError,
    },
    /// The signed `InRelease` is malformed.
    #[error("{url}: {source}")]
    Release {
        /// The `InRelease` URL.
        url: String,
        /// What parsing it reported.
        source: ReleaseError,
    },
    /// `InRelease` does not list a `Packages` index the definition needs.
    #[error("{url} lists no {index}; check [debian] suite, components and architecture")]
    NotListed {
        /// The `InRelease` URL.
        url: String,
        /// The index, relative to the suite (`main/binary-amd64/Packages.xz`).
        index: String,
    },
    /// The sha256 `InRelease` gives an index is not a sha256.
    #[error("{url}: bad sha256 for {index}")]
    BadDigest {
        /// The `InRelease` URL.
        url: String,
        /// The index, relative to the suite.
        index: String,
    },
    /// A cached `Packages` index cannot be read.
    #[error("Packages index of {component} (cache blob {}): {source}", blob.display())]
    Index {
        /// The archive component (`main`).
        component: String,
        /// The index's blob in the cache.
        blob: PathBuf,
        /// What reading it reported.
        source: IndexFault,
    },
}

/// What went wrong reading a cached `Packages` index.
#[derive(Debug, thiserror::Error)]
pub enum IndexFault {
    /// Reading or decompressing it failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// It is not valid control data.
    #[error(transparent)]
    Parse(#[from] ControlError),
}

/// A verified archive index: the `Packages` files of every component, parsed only when a
/// resolution is not already cached for their digests.
pub(super) struct ArchiveIndex {
    /// (component, blob path, sha256) of each `Packages.xz`.
    pub(super) files: Vec<(String, PathBuf, String)>,
}

impl ArchiveIndex {
    /// Parses and merges the components' indexes.
    pub(super) fn parse(&self) -> Result<PackageIndex, ArchiveError> {
        let mut merged: Option<PackageIndex> = None;
        for (component, path, _) in &self.files {
            let bad = |source: IndexFault| ArchiveError::Index {
                component: component.clone(),
                blob: path.clone(),
                source,
            };
            let xz = std::fs::read(path).map_err(|e| bad(e.into()))?;
            let text = uvmkit_debian::compression::decompress_named("Packages.xz", &xz).map_err(|e| bad(e.into()))?;
            let index = PackageIndex::parse_bytes(&text).map_err(|e| bad(e.into()))?;
            match &mut merged {
                Some(m) => m.merge(index),
                None => merged = Some(index),
            }
        }
        Ok(merged.unwrap_or_default())
    }
}

/// The keyring `InRelease` must be signed with: `[debian] keyring`, else Debian's archive keys.
fn keyring(src: &InputSources) -> Result<Keyring, InputError> {
    let Some(path) = &src.def.debian.keyring else {
        return Ok(Keyring::debian_archive());
    };
    let path = src.base_dir.join(path);
    let bytes = std::fs::read(&path).map_err(|source| InputError::Read {
        what: format!("keyring {}", path.display()),
        source,
    })?;
    Ok(Keyring::from_bytes(&bytes).map_err(|source| ArchiveError::Keyring { path, source })?)
}

/// Fetches (or reuses from the cache) and verifies the archive index.
pub(super) fn load_index(src: &InputSources) -> Result<ArchiveIndex, InputError> {
    let (deb, opts, cache) = (&src.def.debian, src.opts, &src.cache);
    let mirror = src.mirror.get(|| {
        let why = if opts.lock == LockUse::None {
            "no lock file is used"
        } else if opts.refresh {
            "--refresh resolves again"
        } else {
            "no current lock file pins the packages"
        };
        format!("the archive index of {} ({why})", deb.suite)
    })?;
    let base = mirror.url.trim_end_matches('/');
    let inrelease_url = format!("{base}/dists/{}/InRelease", deb.suite);
    let keyring = keyring(src)?;
    // A recent InRelease from this URL is reused (always, offline); otherwise it is fetched.
    let cached = cache.get_ref("inrelease", &inrelease_url)?.and_then(|d| {
        let path = cache.path_of(&d);
        let age = std::fs::metadata(&path)
            .ok()?
            .modified()
            .ok()?
            .elapsed()
            .unwrap_or(Duration::MAX);
        let usable = opts.offline || (!opts.refresh && age < INDEX_MAX_AGE);
        usable.then(|| std::fs::read(&path).ok()).flatten()
    });
    let inrelease = match cached {
        Some(bytes) => bytes,
        None => {
            let bytes = src.fetcher.fetch_bytes(&inrelease_url)?;
            let digest = cache.put_bytes(&bytes, None)?;
            cache.set_ref("inrelease", &inrelease_url, &digest)?;
            // Reusing the blob later depends on its age: mark it as fetched now.
            let _ = File::options()
                .write(true)
                .open(cache.path_of(&digest))
                .and_then(|f| f.set_modified(SystemTime::now()));
            bytes
        }
    };
    let signed = verify_inrelease(&inrelease, &keyring).map_err(|source| ArchiveError::Signature {
        url: inrelease_url.clone(),
        source,
    })?;
    let release_error = |source| ArchiveError::Release {
        url: inrelease_url.clone(),
        source,
    };
    let release = Release::parse(&signed).map_err(release_error)?;
    let mut files = Vec::new();
    for component in &deb.components {
        let index = format!("{component}/binary-{}/Packages.xz", deb.architecture);
        let entry = release.sha256_of(&index).ok_or_else(|| ArchiveError::NotListed {
            url: inrelease_url.clone(),
            index: index.clone(),
        })?;
        let fetch_path = release.fetch_path(&index).map_err(release_error)?;
        let url = format!("{base}/dists/{}/{fetch_path}", deb.suite);
        let expected: Sha256Digest = entry.sha256.parse().map_err(|_| ArchiveError::BadDigest {
            url: inrelease_url.clone(),
            index: index.clone(),
        })?;
        let blob = src
            .fetcher
            .fetch_to_cache(&url, &expected, Some(entry.size), cache, &Progress::hidden())?;
        files.push((component.clone(), blob, entry.sha256.clone()));
    }
    Ok(ArchiveIndex { files })
}
