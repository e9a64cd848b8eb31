//! The archive indexes: for every archive the definition draws from (the release, and
//! `-updates`, `-security`, `-backports` as `[debian]` asks), Debian's signed `InRelease`,
//! verified against the archive keyring and checked to be the suite asked for, and the
//! `Packages` indexes it lists, fetched into the cache and checked by the sha256 it gives
//! (Debian's repository format, "Release files" and "Packages indices").

use super::error::InputError;
use super::mirror::archive_host;
use super::sources::{InputSources, LockUse};
use crate::definition::DebianArchive;
use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use uvmkit_debian::archives::ArchivePackages;
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
    /// The signed `InRelease` is for another suite than the one asked for (a mirror serving
    /// the wrong file, or an attempt to pass one suite's index off as another's).
    #[error(
        "{url} is signed for suite {} (codename {}), not {asked}; the mirror serves the wrong archive \
         there (check [debian] mirror or security_mirror) or is tampered with",
        suite.as_deref().unwrap_or("(none)"),
        codename.as_deref().unwrap_or("(none)")
    )]
    WrongSuite {
        /// The `InRelease` URL.
        url: String,
        /// The suite the definition asks for.
        asked: String,
        /// The file's `Suite:`.
        suite: Option<String>,
        /// The file's `Codename:`.
        codename: Option<String>,
    },
    /// The signed `InRelease` is past its `Valid-Until` (a mirror replaying an old index, or
    /// one that stopped updating).
    #[error("{url} expired at {valid_until} (its Valid-Until); the mirror serves a stale or replayed index: use an up-to-date mirror, or pass --allow-old-index to build from this snapshot deliberately")]
    Expired {
        /// The `InRelease` URL.
        url: String,
        /// Its `Valid-Until`, as written.
        valid_until: String,
    },
    /// The signed `InRelease` is older than one seen before for the same archive (a mirror
    /// rolled back, or an attacker replaying an old signed index with known-vulnerable
    /// packages).
    #[error("{url} is dated {date}, older than the index of {seen} this cache saw before; the mirror rolled back or replays an old index: use an up-to-date mirror, or pass --allow-old-index to build from this snapshot deliberately")]
    Rollback {
        /// The `InRelease` URL.
        url: String,
        /// Its `Date`, as written.
        date: String,
        /// The newest `Date` seen before, as written.
        seen: String,
    },
    /// `Date` or `Valid-Until` is not a date.
    #[error("{url}: {field} {value:?} is not an RFC 2822 date")]
    BadDate {
        /// The `InRelease` URL.
        url: String,
        /// `Date` or `Valid-Until`.
        field: &'static str,
        /// The value, as written.
        value: String,
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

/// One archive's verified `Packages` files, parsed only when a resolution is not already
/// cached for their digests.
pub(super) struct ArchiveFiles {
    /// The archive.
    pub(super) archive: DebianArchive,
    /// (component, blob path, sha256) of each `Packages.xz`.
    pub(super) files: Vec<(String, PathBuf, String)>,
}

/// Every archive's verified index files, in the definition's order (the release first).
pub(super) struct ArchiveIndex {
    /// The archives.
    pub(super) archives: Vec<ArchiveFiles>,
}

impl ArchiveIndex {
    /// `(suite, sha256)` of every index file, in order: what a resolution depends on.
    pub(super) fn digests(&self) -> impl Iterator<Item = (&str, &str)> {
        self.archives.iter().flat_map(|a| {
            a.files
                .iter()
                .map(|(_, _, sha)| (a.archive.suite.as_str(), sha.as_str()))
        })
    }

    /// Parses each archive's components into one index per archive, tagged with its suite.
    pub(super) fn parse(&self) -> Result<Vec<ArchivePackages>, ArchiveError> {
        let mut out = Vec::new();
        for a in &self.archives {
            let mut merged = PackageIndex::default();
            for (component, path, _) in &a.files {
                let bad = |source: IndexFault| ArchiveError::Index {
                    component: format!("{}/{component}", a.archive.suite),
                    blob: path.clone(),
                    source,
                };
                let xz = std::fs::read(path).map_err(|e| bad(e.into()))?;
                let text =
                    uvmkit_debian::compression::decompress_named("Packages.xz", &xz).map_err(|e| bad(e.into()))?;
                merged.merge(PackageIndex::parse_bytes(&text).map_err(|e| bad(e.into()))?);
            }
            out.push(ArchivePackages {
                suite: a.archive.suite.clone(),
                selection: a.archive.selection.clone(),
                index: merged,
            });
        }
        Ok(out)
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

/// Why the archive indexes are being fetched, for the error when no mirror is configured.
fn why_needed(src: &InputSources) -> &'static str {
    if src.opts.lock == LockUse::None {
        "no lock file is used"
    } else if src.opts.refresh {
        "--refresh resolves again"
    } else {
        "no current lock file pins the packages"
    }
}

/// Fetches (or reuses from the cache) and verifies every archive's index.
pub(super) fn load_index(src: &InputSources) -> Result<ArchiveIndex, InputError> {
    let keyring = keyring(src)?;
    let archives = src
        .def
        .debian
        .archives()
        .into_iter()
        .map(|archive| load_archive(src, &keyring, archive))
        .collect::<Result<_, _>>()?;
    Ok(ArchiveIndex { archives })
}

/// The signed `InRelease` at `url`: a recent cached copy (always, offline), else fetched.
fn inrelease_bytes(src: &InputSources, url: &str) -> Result<Vec<u8>, InputError> {
    let (opts, cache) = (src.opts, &src.cache);
    let cached = cache.get_ref("inrelease", url)?.and_then(|d| {
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
    if let Some(bytes) = cached {
        return Ok(bytes);
    }
    let bytes = src.fetcher.fetch_bytes(url)?;
    let digest = cache.put_bytes(&bytes, None)?;
    cache.set_ref("inrelease", url, &digest)?;
    // Reusing the blob later depends on its age: mark it as fetched now.
    let _ = File::options()
        .write(true)
        .open(cache.path_of(&digest))
        .and_then(|f| f.set_modified(SystemTime::now()));
    Ok(bytes)
}

/// Cache references from an `InRelease` URL to the newest `Date` seen there.
const SEEN_DATES: &str = "inrelease-date";

/// Refuses an index past its `Valid-Until`, or dated before the newest one this cache saw for
/// the same `InRelease` URL (apt's checks against replayed indexes, "Date" and "Valid-Until"
/// in Debian's repository format), unless `--allow-old-index`; then records its `Date`.
fn check_freshness(src: &InputSources, url: &str, release: &Release) -> Result<(), InputError> {
    let parse = |field: &'static str, value: &str| {
        uvmkit_debian::release::parse_date(value).ok_or_else(|| ArchiveError::BadDate {
            url: url.to_string(),
            field,
            value: value.to_string(),
        })
    };
    let allow_old = src.opts.allow_old_index;
    if let Some(valid_until) = &release.valid_until {
        let until = parse("Valid-Until", valid_until)?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if now > until && !allow_old {
            return Err(ArchiveError::Expired {
                url: url.to_string(),
                valid_until: valid_until.clone(),
            }
            .into());
        }
    }
    let Some(date_text) = &release.date else {
        return Ok(());
    };
    let date = parse("Date", date_text)?;
    let cache = &src.cache;
    let seen = cache
        .get_ref(SEEN_DATES, url)?
        .and_then(|d| std::fs::read_to_string(cache.path_of(&d)).ok())
        .and_then(|text| Some((uvmkit_debian::release::parse_date(&text)?, text)));
    if let Some((seen, seen_text)) = &seen {
        if date < *seen {
            if !allow_old {
                return Err(ArchiveError::Rollback {
                    url: url.to_string(),
                    date: date_text.clone(),
                    seen: seen_text.clone(),
                }
                .into());
            }
            // A deliberate snapshot does not lower what later builds expect.
            return Ok(());
        }
    }
    if seen.as_ref().is_none_or(|(s, _)| date > *s) {
        let digest = cache.put_bytes(date_text.as_bytes(), None)?;
        cache.set_ref(SEEN_DATES, url, &digest)?;
    }
    Ok(())
}

/// One archive: its `InRelease` verified and checked to be `archive.suite`, then its
/// components' `Packages.xz`.
fn load_archive(src: &InputSources, keyring: &Keyring, archive: DebianArchive) -> Result<ArchiveFiles, InputError> {
    let (deb, cache) = (&src.def.debian, &src.cache);
    let suite = &archive.suite;
    let mirror = src.mirror.get(archive_host(archive.kind), || {
        format!("the archive index of {suite} ({})", why_needed(src))
    })?;
    let base = mirror.url.trim_end_matches('/');
    let inrelease_url = format!("{base}/dists/{suite}/InRelease");
    let inrelease = inrelease_bytes(src, &inrelease_url)?;
    let signed = verify_inrelease(&inrelease, keyring).map_err(|source| ArchiveError::Signature {
        url: inrelease_url.clone(),
        source,
    })?;
    let release_error = |source| ArchiveError::Release {
        url: inrelease_url.clone(),
        source,
    };
    let release = Release::parse(&signed).map_err(release_error)?;
    // apt checks the same: the signed file must say it is the suite the source names, by
    // its `Suite` (`stable-security`) or its `Codename` (`bookworm-security`); otherwise a
    // validly signed index of another suite (an older one, or `-backports` for the release)
    // could be served in its place.
    if release.suite.as_deref() != Some(suite.as_str()) && release.codename.as_deref() != Some(suite.as_str()) {
        return Err(ArchiveError::WrongSuite {
            url: inrelease_url,
            asked: suite.clone(),
            suite: release.suite.clone(),
            codename: release.codename.clone(),
        }
        .into());
    }
    check_freshness(src, &inrelease_url, &release)?;
    let mut files = Vec::new();
    for component in &deb.components {
        let index = format!("{component}/binary-{}/Packages.xz", deb.architecture);
        let entry = release.sha256_of(&index).ok_or_else(|| ArchiveError::NotListed {
            url: inrelease_url.clone(),
            index: index.clone(),
        })?;
        let fetch_path = release.fetch_path(&index).map_err(release_error)?;
        let url = format!("{base}/dists/{suite}/{fetch_path}");
        let expected: Sha256Digest = entry.sha256.parse().map_err(|_| ArchiveError::BadDigest {
            url: inrelease_url.clone(),
            index: index.clone(),
        })?;
        let blob = src
            .fetcher
            .fetch_to_cache(&url, &expected, Some(entry.size), cache, &Progress::hidden())?;
        files.push((component.clone(), blob, entry.sha256.clone()));
    }
    Ok(ArchiveFiles { archive, files })
}
