//! The network side of uvmkit, and the only crate that touches it.
//!
//! - [`cache`]: a content-addressed store of blobs by sha256, safe for concurrent builds,
//!   with named references ("the InRelease last fetched from URL X").
//! - [`http`]: verified downloads into that cache over HTTP(S) or `file://`, with retries,
//!   parallel jobs, progress bars and an offline mode.
//! - [`mirror`]: where the Debian mirror comes from: the image definition, the environment
//!   or the host's apt sources, never a built-in host.
//! - [`write_atomically`]: replacing a file so that readers never see a part of it, as the
//!   cache does for its blobs and the builder for its lock file and reports.
//!
//! Every fallible function returns a [`FetchError`] whose message names the URL, file or
//! directory concerned and says what to do about it.

#![deny(missing_docs)]

mod atomic;
pub mod cache;
pub mod http;
pub mod mirror;
mod progress;

use std::io;
use std::path::{Path, PathBuf};

pub use atomic::write_atomically;
use cache::Sha256Digest;

/// The environment variable that names the Debian mirror when the image definition does not.
pub const MIRROR_ENV: &str = "UVMKIT_DEBIAN_MIRROR";

/// The environment variable that names the Debian security archive (`SUITE-security`) when
/// the image definition does not.
pub const SECURITY_MIRROR_ENV: &str = "UVMKIT_DEBIAN_SECURITY_MIRROR";

/// The environment variable that overrides the cache directory.
pub const CACHE_ENV: &str = "UVMKIT_CACHE";

/// `Result` with a [`FetchError`].
pub type Result<T> = std::result::Result<T, FetchError>;

/// Why fetching, caching or finding the mirror failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server could not be reached at all (refused, DNS, unreachable, connect timeout).
    #[error("cannot connect to {url}: {reason}; check the mirror URL in the image definition or {MIRROR_ENV}")]
    Connect {
        /// The URL requested.
        url: String,
        /// The underlying cause, e.g. "connection refused".
        reason: String,
    },
    /// The connection broke or stalled while the response was read.
    #[error("downloading {url} failed: {reason}; the mirror or the network is unreliable, try again")]
    Transfer {
        /// The URL requested.
        url: String,
        /// The underlying cause.
        reason: String,
    },
    /// The server answered with an HTTP error status.
    #[error("{url}: HTTP {status}{}", status_advice(*status))]
    Status {
        /// The URL requested.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// Downloaded content does not have the sha256 the signed index promised.
    #[error(
        "{url}: sha256 mismatch: expected {expected}, got {actual}; nothing was stored. The mirror \
         may be out of sync or tampered with: try again later or use another mirror"
    )]
    ChecksumMismatch {
        /// The URL requested.
        url: String,
        /// The digest the caller expected.
        expected: Sha256Digest,
        /// The digest of what arrived.
        actual: Sha256Digest,
    },
    /// Downloaded content does not have the size the signed index promised.
    #[error(
        "{url}: size mismatch: expected {expected} bytes, got {actual}{}; nothing was stored. The \
         mirror may be out of sync: try again later or use another mirror",
        if *.truncated_at_limit { " or more" } else { "" }
    )]
    SizeMismatch {
        /// The URL requested.
        url: String,
        /// The size the caller expected.
        expected: u64,
        /// The size that arrived (or was announced).
        actual: u64,
        /// Whether reading stopped at `expected + 1` bytes (so `actual` is a lower bound).
        truncated_at_limit: bool,
    },
    /// A file that should be small (an `InRelease`) is larger than any such file is.
    #[error("{url} is larger than {limit} bytes, far more than such a file holds; check the mirror URL")]
    TooLarge {
        /// The URL requested.
        url: String,
        /// The size limit.
        limit: u64,
    },
    /// Content given to the cache does not match the digest the caller expected.
    #[error(
        "content does not match its expected sha256: expected {expected}, got {actual}; nothing was \
         stored in the cache"
    )]
    DigestMismatch {
        /// The digest the caller expected.
        expected: Sha256Digest,
        /// The digest of the content.
        actual: Sha256Digest,
    },
    /// The reader whose content was being stored in the cache failed.
    #[error("reading the content to store in the cache failed: {0}")]
    SourceRead(io::Error),
    /// Network access was needed in an offline build.
    #[error("offline build: {url} is not in the cache; run once without --offline to fetch it")]
    Offline {
        /// The URL that would have been fetched.
        url: String,
    },
    /// The URL cannot be fetched (unparsable, or a scheme other than http, https, file).
    #[error("{url} is not a URL uvmkit can fetch: {reason}; use an http://, https:// or file:// URL")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `file://` URL names a file that cannot be read.
    #[error("cannot read {}: {source}; check the file:// mirror URL", path.display())]
    LocalFile {
        /// The local path the URL names.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The disk holding the cache is full.
    #[error(
        "the cache at {} is on a full disk; free some space, or point {CACHE_ENV} (or --cache) at \
         a larger disk",
        dir.display()
    )]
    DiskFull {
        /// The cache directory.
        dir: PathBuf,
    },
    /// Reading or writing the cache failed for another reason.
    #[error("cache {}: {source}; check that the cache directory is writable, or remove it to start afresh", path.display())]
    Cache {
        /// The file or directory concerned.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A reference namespace is not a simple name.
    #[error("cache reference namespace {0:?} must be non-empty ASCII letters, digits, '-', '_' or '.'")]
    BadNamespace(String),
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// The mirror given in the definition or environment is not a usable URL.
    #[error(
        "the Debian mirror {url:?} from {origin} is not usable: {reason}; give an http://, https:// or file:// URL"
    )]
    BadMirror {
        /// The value as given.
        url: String,
        /// Where it came from.
        origin: mirror::MirrorOrigin,
        /// What is wrong with it.
        reason: String,
    },
    /// No mirror was given and the host's apt sources name none.
    #[error(
        "no Debian mirror is configured: set `mirror = \"http://HOST/debian\"` under [debian] in the \
         image definition, or the environment variable {MIRROR_ENV}. (The host's apt sources were \
         searched too: {} name no `deb` entry for a release suite.)",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoMirror {
        /// The apt source files and globs that were searched.
        searched: Vec<PathBuf>,
    },
    /// The definition takes `SUITE-security`, no security archive was given and the host's
    /// apt sources name none.
    #[error(
        "no Debian security archive is configured for [debian] security = true: set \
         `security_mirror = \"http://HOST/debian-security\"` under [debian] in the image definition, \
         or the environment variable {SECURITY_MIRROR_ENV}. (The host's apt sources were searched \
         too: {} name no `deb` entry for a `*-security` suite.)",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoSecurityMirror {
        /// The apt source files and globs that were searched.
        searched: Vec<PathBuf>,
    },
}

impl FetchError {
    /// Whether trying the same request again may succeed (connection trouble, server errors).
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Connect { .. } | FetchError::Transfer { .. } => true,
            FetchError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }

    /// An I/O error on `path` inside the cache at `dir`; a full disk gets its own message.
    pub(crate) fn cache_io(dir: &Path, path: &Path, source: io::Error) -> Self {
        if is_disk_full(&source) {
            FetchError::DiskFull { dir: dir.to_path_buf() }
        } else {
            FetchError::Cache {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// ENOSPC or EDQUOT.
fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

/// The name of an HTTP status and what to do about it.
fn status_advice(status: u16) -> &'static str {
    match status {
        404 | 410 => " Not Found; the mirror lacks this file: check the suite, components and architecture in the image definition, or the mirror may be out of sync",
        401 | 403 => " Forbidden; the mirror refuses access: check the mirror URL",
        408 | 429 => " (server busy); try again later",
        500..=599 => " (server error); the mirror is having trouble: try again later or use another mirror",
        _ => "; check the mirror URL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_named_as_such() {
        let dir = Path::new("/var/cache/uvmkit");
        let e = FetchError::cache_io(dir, &dir.join("tmp/x"), io::Error::from_raw_os_error(28));
        assert!(matches!(e, FetchError::DiskFull { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "the cache at /var/cache/uvmkit is on a full disk; free some space, or point UVMKIT_CACHE (or --cache) at a larger disk"
        );
        let other = FetchError::cache_io(dir, &dir.join("tmp/x"), io::Error::from_raw_os_error(13));
        assert!(matches!(other, FetchError::Cache { .. }), "{other:?}");
        assert!(
            other.to_string().starts_with("cache /var/cache/uvmkit/tmp/x: "),
            "{other}"
        );
    }

    #[test]
    fn transient_errors_are_the_retryable_ones() {
        let url = "http://127.0.0.1/x".to_string();
        assert!(FetchError::Status {
            url: url.clone(),
            status: 503
        }
        .is_transient());
        assert!(!FetchError::Status {
            url: url.clone(),
            status: 404
        }
        .is_transient());
        assert!(FetchError::Connect {
            url: url.clone(),
            reason: "connection refused".into()
        }
        .is_transient());
        assert!(!FetchError::Offline { url }.is_transient());
    }
}
