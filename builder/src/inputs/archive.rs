//! The archive indexes: for every archive the definition draws from (the release, and
//! `-updates`, `-security`, `-backports` as `[debian]` asks), Debian's signed `InRelease`,
//! verified against the archive keyring and checked to be the suite asked for, and the
//! `Packages` indexes it lists, fetched into the cache and checked by the sha256 it gives
//! (Debian's repository format, "Release files" and "Packages indices"). A bundle carries these
//! same signed files, and [`verify_carried`] checks them again, offline, the same way, and
//! [`check_pinned`] that every pinned `.deb` is one those indexes list.

use super::error::InputError;
use super::mirror::archive_host;
use super::package::FetchedPackage;
use super::sources::{InputSources, LockUse};
use crate::definition::{DebianArchive, DebianSection};
use std::fs::File;
use std::path::{Path, PathBuf};
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
    /// A `Packages` index carried in a bundle is not the one the signed `InRelease` lists.
    #[error("{file} hashes to sha256 {actual}, but the signed {inrelease} lists {expected} for it; the index was altered after the archive signed it")]
    IndexAltered {
        /// Where the index was read (a bundle member).
        file: String,
        /// Where the signed `InRelease` was read.
        inrelease: String,
        /// The sha256 `InRelease` gives.
        expected: String,
        /// The sha256 of the carried file.
        actual: String,
    },
    /// A pinned package is not listed, with that sha256, in the signed index of its archive.
    #[error("package {package} is pinned from {archive}, but {problem}")]
    NotSigned {
        /// The package's name, version and architecture (`hello 1.0-1 (amd64)`).
        package: String,
        /// The archive (suite) the lock says it comes from.
        archive: String,
        /// What the signed index says instead.
        problem: String,
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

/// One verified `Packages` index of an archive, in the cache.
pub struct PackagesFile {
    /// The archive component (`main`).
    pub component: String,
    /// Its path below `dists/SUITE/`, as `InRelease` lists it (`main/binary-amd64/Packages.xz`).
    pub index: String,
    /// Its blob in the cache.
    pub blob: PathBuf,
    /// Its sha256, as the signed `InRelease` gives it.
    pub sha256: String,
}

/// One archive's verified `Packages` files, parsed only when a resolution is not already
/// cached for their digests.
pub struct ArchiveFiles {
    /// The archive.
    pub archive: DebianArchive,
    /// Its signed `InRelease`, byte for byte as the mirror served it (a bundle carries it).
    pub inrelease: Vec<u8>,
    /// Each component's `Packages.xz`.
    pub files: Vec<PackagesFile>,
}

/// Every archive's verified index files, in the definition's order (the release first).
pub struct ArchiveIndex {
    /// The archives.
    pub archives: Vec<ArchiveFiles>,
}

impl ArchiveIndex {
    /// `(suite, sha256)` of every index file, in order: what a resolution depends on.
    pub(super) fn digests(&self) -> impl Iterator<Item = (&str, &str)> {
        self.archives
            .iter()
            .flat_map(|a| a.files.iter().map(|f| (a.archive.suite.as_str(), f.sha256.as_str())))
    }

    /// Parses each archive's components into one index per archive, tagged with its suite.
    pub fn parse(&self) -> Result<Vec<ArchivePackages>, ArchiveError> {
        let mut out = Vec::new();
        for a in &self.archives {
            let mut bytes = Vec::new();
            for f in &a.files {
                bytes.push(std::fs::read(&f.blob).map_err(|e| ArchiveError::Index {
                    component: format!("{}/{}", a.archive.suite, f.component),
                    blob: f.blob.clone(),
                    source: e.into(),
                })?);
            }
            let indexes: Vec<_> = a
                .files
                .iter()
                .zip(&bytes)
                .map(|(f, xz)| (f.component.as_str(), f.blob.as_path(), xz.as_slice()))
                .collect();
            out.push(parse_archive(&a.archive, &indexes)?);
        }
        Ok(out)
    }
}

/// The path below `dists/SUITE/` of the `Packages` index of `component` (Debian's repository
/// format, "Packages indices"): `main/binary-amd64/Packages.xz`.
pub fn packages_index(deb: &DebianSection, component: &str) -> String {
    format!("{component}/binary-{}/Packages.xz", deb.architecture)
}

/// One archive's components' `Packages.xz` (component, where it was read, bytes), parsed and
/// merged into one index tagged with its suite.
fn parse_archive(archive: &DebianArchive, indexes: &[(&str, &Path, &[u8])]) -> Result<ArchivePackages, ArchiveError> {
    let mut merged = PackageIndex::default();
    for (component, path, xz) in indexes {
        let bad = |source: IndexFault| ArchiveError::Index {
            component: format!("{}/{component}", archive.suite),
            blob: path.to_path_buf(),
            source,
        };
        let text = uvmkit_debian::compression::decompress_named("Packages.xz", xz).map_err(|e| bad(e.into()))?;
        merged.merge(PackageIndex::parse_bytes(&text).map_err(|e| bad(e.into()))?);
    }
    Ok(ArchivePackages {
        suite: archive.suite.clone(),
        selection: archive.selection.clone(),
        index: merged,
    })
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
    Ok(parse_keyring(&path, &bytes)?)
}

/// The keyring in `bytes`, read from `path`.
pub fn parse_keyring(path: &Path, bytes: &[u8]) -> Result<Keyring, ArchiveError> {
    Keyring::from_bytes(bytes).map_err(|source| ArchiveError::Keyring {
        path: path.to_path_buf(),
        source,
    })
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
    let release = verify_release(&inrelease_url, &inrelease, keyring, suite)?;
    check_freshness(src, &inrelease_url, &release)?;
    let mut files = Vec::new();
    for component in &deb.components {
        let index = packages_index(deb, component);
        let (entry, expected) = listed(&inrelease_url, &release, &index)?;
        let fetch_path = release.fetch_path(&index).map_err(|source| ArchiveError::Release {
            url: inrelease_url.clone(),
            source,
        })?;
        let url = format!("{base}/dists/{suite}/{fetch_path}");
        let blob = src
            .fetcher
            .fetch_to_cache(&url, &expected, Some(entry.size), cache, &Progress::hidden())?;
        files.push(PackagesFile {
            component: component.clone(),
            index,
            blob,
            sha256: entry.sha256.clone(),
        });
    }
    Ok(ArchiveFiles {
        archive,
        inrelease,
        files,
    })
}

/// The signed content of `inrelease` (read from `origin`, a URL or a bundle member), checked
/// to be signed by `keyring` and to be the suite `suite`.
fn verify_release(origin: &str, inrelease: &[u8], keyring: &Keyring, suite: &str) -> Result<Release, ArchiveError> {
    let signed = verify_inrelease(inrelease, keyring).map_err(|source| ArchiveError::Signature {
        url: origin.to_string(),
        source,
    })?;
    let release = Release::parse(&signed).map_err(|source| ArchiveError::Release {
        url: origin.to_string(),
        source,
    })?;
    // apt checks the same: the signed file must say it is the suite the source names, by
    // its `Suite` (`stable-security`) or its `Codename` (`bookworm-security`); otherwise a
    // validly signed index of another suite (an older one, or `-backports` for the release)
    // could be served in its place.
    if release.suite.as_deref() != Some(suite) && release.codename.as_deref() != Some(suite) {
        return Err(ArchiveError::WrongSuite {
            url: origin.to_string(),
            asked: suite.to_string(),
            suite: release.suite.clone(),
            codename: release.codename.clone(),
        });
    }
    Ok(release)
}

/// The entry the signed `release` (read from `origin`) gives `index`, with its sha256.
fn listed<'r>(
    origin: &str,
    release: &'r Release,
    index: &str,
) -> Result<(&'r uvmkit_debian::release::IndexFile, Sha256Digest), ArchiveError> {
    let entry = release.sha256_of(index).ok_or_else(|| ArchiveError::NotListed {
        url: origin.to_string(),
        index: index.to_string(),
    })?;
    let digest = entry.sha256.parse().map_err(|_| ArchiveError::BadDigest {
        url: origin.to_string(),
        index: index.to_string(),
    })?;
    Ok((entry, digest))
}

/// A carried archive index (one a bundle brings), verified.
pub struct CarriedIndex {
    /// Its packages.
    pub packages: ArchivePackages,
    /// The signed `Date`, as written.
    pub date: Option<String>,
    /// The signed `Valid-Until`, as written, when it has passed.
    pub expired: Option<String>,
}

/// One `Packages.xz` a bundle carries: its component, where it was read, and its bytes.
pub struct CarriedPackages {
    /// The archive component (`main`).
    pub component: String,
    /// Where it was read (`bundle member dists/...`), for messages.
    pub origin: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// Verifies an archive index carried from elsewhere (a bundle) exactly as a fetched one: the
/// `inrelease` read at `origin` signed by `keyring` and for `archive`'s suite, and each of
/// `packages` (one per `[debian] components` entry) the file it lists by sha256. Being a
/// snapshot, its age is reported (`expired`), not refused: it was checked when the bundle was
/// written.
pub fn verify_carried(
    origin: &str,
    inrelease: &[u8],
    keyring: &Keyring,
    archive: &DebianArchive,
    deb: &DebianSection,
    packages: Vec<CarriedPackages>,
) -> Result<CarriedIndex, ArchiveError> {
    let release = verify_release(origin, inrelease, keyring, &archive.suite)?;
    let mut indexes = Vec::new();
    for carried in &packages {
        let index = packages_index(deb, &carried.component);
        let (_, expected) = listed(origin, &release, &index)?;
        let actual = Sha256Digest::of_bytes(&carried.bytes);
        if actual != expected {
            return Err(ArchiveError::IndexAltered {
                file: carried.origin.clone(),
                inrelease: origin.to_string(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        indexes.push((
            carried.component.as_str(),
            Path::new(&carried.origin),
            carried.bytes.as_slice(),
        ));
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let expired = release
        .valid_until
        .clone()
        .filter(|v| uvmkit_debian::release::parse_date(v).is_none_or(|until| now > until));
    Ok(CarriedIndex {
        packages: parse_archive(archive, &indexes)?,
        date: release.date.clone(),
        expired,
    })
}

/// Checks that every one of `pinned` is listed in the signed index of its archive (from
/// `archives`) with its version, architecture, sha256 and size: so a lock brings in only
/// `.deb`s the archive signed.
pub fn check_pinned(pinned: &[FetchedPackage], archives: &[ArchivePackages]) -> Result<(), ArchiveError> {
    for p in pinned {
        let not_signed = |problem: String| ArchiveError::NotSigned {
            package: format!("{} {} ({})", p.name, p.version, p.architecture),
            archive: p.archive.clone(),
            problem,
        };
        let Some(archive) = archives.iter().find(|a| a.suite == p.archive) else {
            let suites: Vec<&str> = archives.iter().map(|a| a.suite.as_str()).collect();
            return Err(not_signed(format!(
                "the definition draws from {} only",
                suites.join(", ")
            )));
        };
        let stanzas: Vec<_> = archive.index.by_name(&p.name).collect();
        let Some(stanza) = stanzas
            .iter()
            .find(|s| s.version.to_string() == p.version && s.architecture == p.architecture)
        else {
            let listed: Vec<String> = stanzas
                .iter()
                .map(|s| format!("{} ({})", s.version, s.architecture))
                .collect();
            return Err(not_signed(if listed.is_empty() {
                format!("the signed index of {} lists no package {}", p.archive, p.name)
            } else {
                format!(
                    "the signed index of {} lists {} only at {}",
                    p.archive,
                    p.name,
                    listed.join(", ")
                )
            }));
        };
        if stanza.sha256 != p.sha256 || stanza.size != p.size {
            return Err(not_signed(format!(
                "the signed index of {} gives it sha256 {} ({} bytes), not the pinned {} ({} bytes)",
                p.archive, stanza.sha256, stanza.size, p.sha256, p.size
            )));
        }
    }
    Ok(())
}
