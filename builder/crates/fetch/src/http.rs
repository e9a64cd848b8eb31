//! Verified downloads into the [`ContentCache`] over HTTP(S) or from `file://` URLs.
//!
//! Content is streamed into the cache's temporary file while it is hashed, and becomes visible
//! only once its size and sha256 match what the caller expected (normally what a signed index
//! promised). Connection failures, stalls and server errors (5xx) are retried with backoff;
//! everything else fails at once with an error that names the URL.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::ProgressBar;
use reqwest::blocking::{Client, Response};
use reqwest::Url;

use crate::cache::{ContentCache, PutError, Sha256Digest};
use crate::progress::{CountingReader, DownloadLine};
use crate::{FetchError, Result};

pub use crate::progress::Progress;

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("uvmkit/", env!("CARGO_PKG_VERSION"));
/// How long establishing a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the server may stay silent (before the headers, or between reads of the body).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a request that failed transiently is tried again.
pub const RETRIES: u32 = 3;
/// The wait before the first retry; it doubles with each further one.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Parallel downloads when the caller has no preference.
pub const DEFAULT_JOBS: usize = 4;

/// The most a small file ([`Fetcher::fetch_bytes`]) may be: an `InRelease` is well under 1 MiB.
const MAX_SMALL_FILE: u64 = 64 << 20;

/// One file to download into the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// Where to fetch it.
    pub url: String,
    /// The sha256 it must have.
    pub sha256: Sha256Digest,
    /// The size it must have, if known.
    pub size: Option<u64>,
    /// What to call it in progress output, e.g. "libc6 2.36-9".
    pub label: String,
}

/// What [`Fetcher::fetch_many`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// The cached blob of each download, in the order they were given.
    pub paths: Vec<PathBuf>,
    /// How many were downloaded now (the rest were in the cache already).
    pub downloaded: usize,
    /// Bytes downloaded now.
    pub downloaded_bytes: u64,
}

/// Downloads files into the cache, or refuses to touch the network when offline.
#[derive(Debug, Clone)]
pub struct Fetcher {
    /// `None` when offline.
    client: Option<Client>,
    retries: u32,
    first_backoff: Duration,
}

/// A blob in the cache and the bytes downloaded for it (`None`: it was cached already).
type Fetched = (PathBuf, Option<u64>);

/// Where a URL points.
enum Source {
    Http(Url),
    File(PathBuf),
}

impl Fetcher {
    /// A fetcher with the default timeouts and retries; with `offline`, any network access is
    /// an error naming the URL (`file://` URLs still work).
    pub fn new(offline: bool) -> Result<Self> {
        let client = if offline {
            None
        } else {
            let client = Client::builder()
                .user_agent(USER_AGENT)
                .connect_timeout(CONNECT_TIMEOUT)
                // The blocking client applies this to the wait for the response headers and to
                // each read of the body: a stall limit, not a limit on the whole download.
                .timeout(READ_TIMEOUT)
                .build()
                .map_err(|e| FetchError::Client(error_chain(&e)))?;
            Some(client)
        };
        Ok(Fetcher {
            client,
            retries: RETRIES,
            first_backoff: FIRST_BACKOFF,
        })
    }

    /// The same fetcher with `retries` retries, waiting `first_backoff` before the first and
    /// twice as long before each further one.
    pub fn with_retries(mut self, retries: u32, first_backoff: Duration) -> Self {
        self.retries = retries;
        self.first_backoff = first_backoff;
        self
    }

    /// Whether network access is refused.
    pub fn is_offline(&self) -> bool {
        self.client.is_none()
    }

    /// The whole content of a small file (an `InRelease`), without caching it.
    pub fn fetch_bytes(&self, url: &str) -> Result<Vec<u8>> {
        let too_big = || FetchError::TooLarge {
            url: url.to_string(),
            limit: MAX_SMALL_FILE,
        };
        match self.source(url)? {
            Source::File(path) => {
                let file = File::open(&path).map_err(|source| FetchError::LocalFile {
                    path: path.clone(),
                    source,
                })?;
                let mut bytes = Vec::new();
                file.take(MAX_SMALL_FILE + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|source| FetchError::LocalFile { path, source })?;
                if bytes.len() as u64 > MAX_SMALL_FILE {
                    return Err(too_big());
                }
                Ok(bytes)
            }
            Source::Http(parsed) => {
                let hidden = Progress::hidden();
                let mut line = hidden.download(url, None, None);
                let bytes = self.with_retries_on(url, &mut line, |line| {
                    let response = self.get(url, &parsed)?;
                    let mut bytes = Vec::new();
                    let mut counting = CountingReader {
                        inner: response.take(MAX_SMALL_FILE + 1),
                        line,
                    };
                    counting.read_to_end(&mut bytes).map_err(|e| transfer(url, &e))?;
                    if bytes.len() as u64 > MAX_SMALL_FILE {
                        return Err(too_big());
                    }
                    Ok(bytes)
                })?;
                line.finish(bytes.len() as u64);
                Ok(bytes)
            }
        }
    }

    /// The cached blob of `url`, downloading it unless a verified copy is cached. The content
    /// must have `expected_sha256` (and `expected_size`, if given), or nothing is stored.
    pub fn fetch_to_cache(
        &self,
        url: &str,
        expected_sha256: &Sha256Digest,
        expected_size: Option<u64>,
        cache: &ContentCache,
        progress: &Progress,
    ) -> Result<PathBuf> {
        let item = Download {
            url: url.to_string(),
            sha256: *expected_sha256,
            size: expected_size,
            label: file_name(url).to_string(),
        };
        self.fetch_one(&item, cache, progress, None).map(|(path, _)| path)
    }

    /// Fetches every item into the cache with up to `jobs` downloads at once (0 means
    /// [`DEFAULT_JOBS`]), showing one overall bar and a line per active download. On failure the
    /// error of the first failed item (in the given order) is returned and no new downloads
    /// start.
    pub fn fetch_many(
        &self,
        items: &[Download],
        cache: &ContentCache,
        jobs: usize,
        progress: &Progress,
    ) -> Result<FetchReport> {
        let jobs = if jobs == 0 { DEFAULT_JOBS } else { jobs }.min(items.len()).max(1);
        // A cheap estimate of what is missing, for the overall bar; each worker still verifies.
        let estimated: Vec<bool> = items
            .iter()
            .map(|d| !d.size.is_some_and(|s| cache.get_checked(&d.sha256, s)))
            .collect();
        let missing = estimated.iter().filter(|m| **m).count();
        let total = items
            .iter()
            .zip(&estimated)
            .filter(|(_, m)| **m)
            .filter_map(|(d, _)| d.size)
            .sum();
        let overall = progress.batch(missing, total);

        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Mutex<Vec<Option<Result<Fetched>>>> = Mutex::new(items.iter().map(|_| None).collect());
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(|| {
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        let result = self.fetch_one(item, cache, progress, Some((&overall, estimated[i])));
                        if result.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(result);
                    }
                });
            }
        });

        let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut report = FetchReport::default();
        let mut first_error = None;
        for result in results {
            match result {
                Some(Ok((path, downloaded))) => {
                    if let Some(bytes) = downloaded {
                        report.downloaded += 1;
                        report.downloaded_bytes += bytes;
                    }
                    report.paths.push(path);
                }
                Some(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                // Not attempted after another item failed.
                None => {}
            }
        }
        if let Some(e) = first_error {
            overall.abandon();
            return Err(e);
        }
        Progress::batch_done(&overall, report.downloaded, items.len(), report.downloaded_bytes);
        Ok(report)
    }

    /// Fetches one item; returns its blob and the bytes downloaded (`None` when it was
    /// cached). `overall` is the batch's bar and whether its total counts this item.
    fn fetch_one(
        &self,
        item: &Download,
        cache: &ContentCache,
        progress: &Progress,
        overall: Option<(&ProgressBar, bool)>,
    ) -> Result<Fetched> {
        if let Some(path) = cache.get_verified(&item.sha256)? {
            return Ok((path, None));
        }
        let source = self.source(&item.url)?;
        if let (Some((bar, false)), Some(size)) = (overall, item.size) {
            // The estimate took it for cached, but it was damaged.
            bar.inc_length(size);
        }
        let mut line = progress.download(&item.label, item.size, overall.map(|(bar, _)| bar));
        let result = match source {
            Source::File(path) => File::open(&path)
                .map_err(|source| FetchError::LocalFile {
                    path: path.clone(),
                    source,
                })
                .and_then(|file| self.store(item, file, cache, &mut line)),
            Source::Http(parsed) => self.with_retries_on(&item.url, &mut line, |line| {
                let response = self.get(&item.url, &parsed)?;
                if let Some(announced) = response.content_length() {
                    match item.size {
                        Some(expected) if announced != expected => {
                            let url = item.url.clone();
                            return Err(FetchError::SizeMismatch {
                                url,
                                expected,
                                actual: announced,
                                truncated_at_limit: false,
                            });
                        }
                        Some(_) => {}
                        None => line.set_size(announced),
                    }
                }
                self.store(item, response, cache, line)
            }),
        };
        match result {
            Ok(bytes) => {
                line.finish(bytes);
                Ok((cache.path_of(&item.sha256), Some(bytes)))
            }
            Err(e) => {
                line.abandon();
                Err(e)
            }
        }
    }

    /// Streams `r` into the cache as `item`; returns the bytes stored.
    fn store(&self, item: &Download, r: impl Read, cache: &ContentCache, line: &mut DownloadLine<'_>) -> Result<u64> {
        let counting = CountingReader { inner: r, line };
        let stored = cache.put_stream(counting, Some(&item.sha256), item.size);
        let url = item.url.clone();
        match stored {
            Ok((_, bytes)) => Ok(bytes),
            Err(PutError::Read(e)) => Err(transfer(&url, &e)),
            Err(PutError::Size { actual, truncated }) => Err(FetchError::SizeMismatch {
                url,
                expected: item.size.unwrap_or(0),
                actual,
                truncated_at_limit: truncated,
            }),
            Err(PutError::Digest { actual }) => Err(FetchError::ChecksumMismatch {
                url,
                expected: item.sha256,
                actual,
            }),
            Err(PutError::Cache(e)) => Err(e),
        }
    }

    /// Parses `url`, refusing network URLs when offline.
    fn source(&self, url: &str) -> Result<Source> {
        let parsed = Url::parse(url).map_err(|e| FetchError::BadUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        match parsed.scheme() {
            "file" => parsed
                .to_file_path()
                .map(Source::File)
                .map_err(|()| FetchError::BadUrl {
                    url: url.to_string(),
                    reason: "it names no local path".into(),
                }),
            "http" | "https" if self.client.is_none() => Err(FetchError::Offline { url: url.to_string() }),
            "http" | "https" => Ok(Source::Http(parsed)),
            other => Err(FetchError::BadUrl {
                url: url.to_string(),
                reason: format!("the scheme {other}: is not supported"),
            }),
        }
    }

    /// Sends a GET and checks the status.
    fn get(&self, url: &str, parsed: &Url) -> Result<Response> {
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| FetchError::Offline { url: url.to_string() })?;
        let response = client.get(parsed.clone()).send().map_err(|e| request_error(url, &e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        Ok(response)
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries are used up.
    fn with_retries_on<'p, T>(
        &self,
        url: &str,
        line: &mut DownloadLine<'p>,
        mut attempt: impl FnMut(&mut DownloadLine<'p>) -> Result<T>,
    ) -> Result<T> {
        let mut wait = self.first_backoff;
        let mut tries = 0;
        loop {
            match attempt(line) {
                Err(e) if e.is_transient() && tries < self.retries => {
                    tries += 1;
                    log::warn!(
                        "{e}; trying {url} again in {:.1} s (retry {tries} of {})",
                        wait.as_secs_f64(),
                        self.retries
                    );
                    line.restart();
                    std::thread::sleep(wait);
                    wait = wait.saturating_mul(2);
                }
                other => return other,
            }
        }
    }
}

/// The last path segment of `url`, for labels.
fn file_name(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

/// An error from sending a request, classified.
fn request_error(url: &str, e: &reqwest::Error) -> FetchError {
    if e.is_connect() {
        FetchError::Connect {
            url: url.to_string(),
            reason: root_cause(e),
        }
    } else if e.is_timeout() {
        FetchError::Transfer {
            url: url.to_string(),
            reason: format!("no response within {} s", READ_TIMEOUT.as_secs()),
        }
    } else if e.is_redirect() {
        FetchError::BadUrl {
            url: url.to_string(),
            reason: "it redirects too often".into(),
        }
    } else {
        FetchError::Transfer {
            url: url.to_string(),
            reason: root_cause(e),
        }
    }
}

/// A failure while reading the response body.
fn transfer(url: &str, e: &io::Error) -> FetchError {
    let reason = match e.kind() {
        io::ErrorKind::TimedOut => format!("the server sent nothing for {} s", READ_TIMEOUT.as_secs()),
        _ => root_cause(e),
    };
    FetchError::Transfer {
        url: url.to_string(),
        reason,
    }
}

/// The most specific cause in an error's chain, in words a person reads.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(io) = current.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused => return "connection refused".into(),
                io::ErrorKind::ConnectionReset => return "connection reset by the server".into(),
                io::ErrorKind::TimedOut => return "timed out".into(),
                io::ErrorKind::UnexpectedEof => return "the connection closed before the whole file arrived".into(),
                _ => {}
            }
        }
        match current.source() {
            Some(next) => current = next,
            None => return current.to_string(),
        }
    }
}

/// Every message in an error's chain, joined.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut current = e.source();
    while let Some(c) = current {
        parts.push(c.to_string());
        current = c.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::{files_under, pattern, TestDir};
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::Arc;

    /// What the test server answers for a path.
    #[derive(Clone)]
    enum Route {
        Bytes(Vec<u8>),
        /// Fail with this status for the first `n` requests, then serve the bytes.
        FailFirst(u16, usize, Vec<u8>),
    }

    /// An HTTP server on 127.0.0.1 serving `routes` (404 elsewhere), counting requests per
    /// path; it stops when dropped.
    struct TestServer {
        base: String,
        hits: Arc<Mutex<BTreeMap<String, usize>>>,
        server: Arc<tiny_http::Server>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl TestServer {
        fn start(routes: Vec<(&str, Route)>) -> Self {
            let routes: BTreeMap<String, Route> = routes.into_iter().map(|(p, r)| (p.to_string(), r)).collect();
            let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
            let base = format!("http://127.0.0.1:{}", server.server_addr().to_ip().unwrap().port());
            let hits = Arc::new(Mutex::new(BTreeMap::new()));
            let thread = {
                let (server, hits) = (server.clone(), hits.clone());
                std::thread::spawn(move || {
                    for request in server.incoming_requests() {
                        let path = request.url().to_string();
                        let n = {
                            let mut hits = hits.lock().unwrap();
                            let n = hits.entry(path.clone()).or_insert(0);
                            *n += 1;
                            *n
                        };
                        let agent_ok = request
                            .headers()
                            .iter()
                            .any(|h| h.field.equiv("User-Agent") && h.value.as_str() == USER_AGENT);
                        let response = match routes.get(&path) {
                            _ if !agent_ok => {
                                tiny_http::Response::from_data(b"bad agent".to_vec()).with_status_code(400)
                            }
                            Some(Route::Bytes(b)) => tiny_http::Response::from_data(b.clone()),
                            Some(Route::FailFirst(status, fails, _)) if n <= *fails => {
                                tiny_http::Response::from_data(Vec::new()).with_status_code(*status)
                            }
                            Some(Route::FailFirst(_, _, b)) => tiny_http::Response::from_data(b.clone()),
                            None => tiny_http::Response::from_data(b"not here".to_vec()).with_status_code(404),
                        };
                        let _ = request.respond(response);
                    }
                })
            };
            TestServer {
                base,
                hits,
                server,
                thread: Some(thread),
            }
        }

        fn url(&self, path: &str) -> String {
            format!("{}{path}", self.base)
        }

        fn hits(&self, path: &str) -> usize {
            self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.server.unblock();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// A fetcher whose retries wait only milliseconds.
    fn fetcher() -> Fetcher {
        Fetcher::new(false).unwrap().with_retries(3, Duration::from_millis(10))
    }

    fn nothing_stored(cache: &ContentCache) {
        assert!(files_under(&cache.dir().join("blobs")).is_empty(), "a blob was stored");
        assert!(
            files_under(&cache.dir().join("tmp")).is_empty(),
            "a temporary file was left"
        );
    }

    #[test]
    fn fetches_bytes_and_blobs_and_reuses_the_cache() {
        let data = pattern(300_000, 3);
        let digest = Sha256Digest::of_bytes(&data);
        let server = TestServer::start(vec![
            ("/dists/test/InRelease", Route::Bytes(b"signed".to_vec())),
            ("/pool/a.deb", Route::Bytes(data.clone())),
        ]);
        let t = TestDir::new("http-ok");
        let cache = ContentCache::open(&t.0).unwrap();
        let f = fetcher();
        assert_eq!(f.fetch_bytes(&server.url("/dists/test/InRelease")).unwrap(), b"signed");

        let url = server.url("/pool/a.deb");
        let path = f
            .fetch_to_cache(&url, &digest, Some(data.len() as u64), &cache, &Progress::hidden())
            .unwrap();
        assert_eq!(path, cache.path_of(&digest));
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert_eq!(server.hits("/pool/a.deb"), 1);
        // Present and verified: no request at all, even offline.
        f.fetch_to_cache(&url, &digest, Some(data.len() as u64), &cache, &Progress::hidden())
            .unwrap();
        Fetcher::new(true)
            .unwrap()
            .fetch_to_cache(&url, &digest, None, &cache, &Progress::hidden())
            .unwrap();
        assert_eq!(server.hits("/pool/a.deb"), 1);
        // A damaged copy is detected and fetched again.
        std::fs::write(&path, b"damaged").unwrap();
        f.fetch_to_cache(&url, &digest, Some(data.len() as u64), &cache, &Progress::hidden())
            .unwrap();
        assert_eq!(server.hits("/pool/a.deb"), 2);
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn not_found_is_an_http_status_error_naming_the_url() {
        let server = TestServer::start(vec![]);
        let t = TestDir::new("http-404");
        let cache = ContentCache::open(&t.0).unwrap();
        let url = server.url("/pool/missing.deb");
        let e = fetcher()
            .fetch_to_cache(&url, &Sha256Digest::of_bytes(b"x"), None, &cache, &Progress::hidden())
            .unwrap_err();
        assert!(matches!(&e, FetchError::Status { status: 404, .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("{url}: HTTP 404 Not Found")), "{msg}");
        // A 404 is not retried.
        assert_eq!(server.hits("/pool/missing.deb"), 1);
        assert!(matches!(
            fetcher().fetch_bytes(&url),
            Err(FetchError::Status { status: 404, .. })
        ));
        nothing_stored(&cache);
    }

    #[test]
    fn a_checksum_mismatch_names_both_digests_and_stores_nothing() {
        let server = TestServer::start(vec![("/pool/evil.deb", Route::Bytes(b"tampered".to_vec()))]);
        let t = TestDir::new("http-mismatch");
        let cache = ContentCache::open(&t.0).unwrap();
        let expected = Sha256Digest::of_bytes(b"original");
        let url = server.url("/pool/evil.deb");
        let e = fetcher()
            .fetch_to_cache(&url, &expected, Some(8), &cache, &Progress::hidden())
            .unwrap_err();
        let actual = Sha256Digest::of_bytes(b"tampered");
        assert!(
            matches!(&e, FetchError::ChecksumMismatch { expected: x, actual: a, .. } if *x == expected && *a == actual),
            "{e:?}"
        );
        let msg = e.to_string();
        for needle in [
            url.as_str(),
            "sha256",
            &expected.to_string(),
            &actual.to_string(),
            "nothing was stored",
        ] {
            assert!(msg.contains(needle), "{needle} not in: {msg}");
        }
        nothing_stored(&cache);
    }

    #[test]
    fn a_size_mismatch_is_refused_before_the_body_is_read() {
        let server = TestServer::start(vec![("/pool/big.deb", Route::Bytes(vec![7u8; 1000]))]);
        let t = TestDir::new("http-size");
        let cache = ContentCache::open(&t.0).unwrap();
        let url = server.url("/pool/big.deb");
        let e = fetcher()
            .fetch_to_cache(
                &url,
                &Sha256Digest::of_bytes(&[7u8; 1000]),
                Some(999),
                &cache,
                &Progress::hidden(),
            )
            .unwrap_err();
        assert!(
            matches!(
                &e,
                FetchError::SizeMismatch {
                    expected: 999,
                    actual: 1000,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("expected 999 bytes, got 1000"), "{e}");
        nothing_stored(&cache);
    }

    #[test]
    fn connection_refused_says_to_check_the_mirror() {
        // Bind, note the port, and close it again: nobody listens there now.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/debian/dists/test/InRelease");
        let e = fetcher().fetch_bytes(&url).unwrap_err();
        assert!(matches!(&e, FetchError::Connect { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("cannot connect to {url}: connection refused; check the mirror URL in the image definition or UVMKIT_DEBIAN_MIRROR")
        );
    }

    #[test]
    fn server_errors_are_retried_and_then_reported() {
        let data = b"eventually".to_vec();
        let server = TestServer::start(vec![
            ("/flaky", Route::FailFirst(503, 2, data.clone())),
            ("/broken", Route::FailFirst(500, usize::MAX, Vec::new())),
        ]);
        assert_eq!(fetcher().fetch_bytes(&server.url("/flaky")).unwrap(), data);
        assert_eq!(server.hits("/flaky"), 3);
        let e = fetcher().fetch_bytes(&server.url("/broken")).unwrap_err();
        assert!(matches!(&e, FetchError::Status { status: 500, .. }), "{e:?}");
        // The first try and three retries.
        assert_eq!(server.hits("/broken"), 4);
    }

    #[test]
    fn a_connection_that_breaks_mid_body_is_retried() {
        // A raw server: the first two connections announce 1000 bytes but send 10 and hang
        // up; the third sends everything. It serves three connections and stops.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let data = pattern(1000, 4);
        let served = {
            let data = data.clone();
            std::thread::spawn(move || {
                for n in 0..3 {
                    let (mut stream, _) = listener.accept().unwrap();
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request);
                    let body = if n < 2 { &data[..10] } else { &data[..] };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(body);
                }
            })
        };
        let t = TestDir::new("http-broken-body");
        let cache = ContentCache::open(&t.0).unwrap();
        let url = format!("http://127.0.0.1:{port}/pool/c.deb");
        let digest = Sha256Digest::of_bytes(&data);
        let path = fetcher()
            .fetch_to_cache(&url, &digest, Some(1000), &cache, &Progress::hidden())
            .unwrap();
        assert_eq!(std::fs::read(path).unwrap(), data);
        served.join().unwrap();
        assert!(files_under(&cache.dir().join("tmp")).is_empty());
    }

    #[test]
    fn offline_refuses_the_network_but_reads_files() {
        let t = TestDir::new("http-offline");
        let cache = ContentCache::open(&t.0.join("cache")).unwrap();
        let offline = Fetcher::new(true).unwrap();
        assert!(offline.is_offline());
        let e = offline
            .fetch_bytes("http://127.0.0.1:1/debian/dists/test/InRelease")
            .unwrap_err();
        assert_eq!(e.to_string(), "offline build: http://127.0.0.1:1/debian/dists/test/InRelease is not in the cache; run once without --offline to fetch it");
        let e = offline
            .fetch_to_cache(
                "https://example.org/pool/x.deb",
                &Sha256Digest::of_bytes(b"x"),
                None,
                &cache,
                &Progress::hidden(),
            )
            .unwrap_err();
        assert!(matches!(e, FetchError::Offline { .. }), "{e:?}");

        // file:// works offline and online.
        let local = t.0.join("repo/pool/x.deb");
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        std::fs::write(&local, b"local file").unwrap();
        let url = format!("file://{}", local.display());
        assert_eq!(offline.fetch_bytes(&url).unwrap(), b"local file");
        let digest = Sha256Digest::of_bytes(b"local file");
        let path = offline
            .fetch_to_cache(&url, &digest, Some(10), &cache, &Progress::hidden())
            .unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"local file");
        let e = fetcher()
            .fetch_bytes(&format!("file://{}/missing", t.0.display()))
            .unwrap_err();
        assert!(matches!(e, FetchError::LocalFile { .. }), "{e:?}");
        let e = fetcher().fetch_bytes("ftp://example.org/x").unwrap_err();
        assert!(matches!(e, FetchError::BadUrl { .. }), "{e:?}");
    }

    #[test]
    fn fetch_many_downloads_in_parallel_in_order_and_counts_what_it_fetched() {
        let blobs: Vec<Vec<u8>> = (0..12).map(|i| pattern(50_000 + i * 1000, i as u8)).collect();
        let routes: Vec<(String, Route)> = blobs
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("/pool/p{i}.deb"), Route::Bytes(b.clone())))
            .collect();
        let server = TestServer::start(routes.iter().map(|(p, r)| (p.as_str(), r.clone())).collect());
        let t = TestDir::new("http-many");
        let cache = ContentCache::open(&t.0).unwrap();
        let items: Vec<Download> = blobs
            .iter()
            .enumerate()
            .map(|(i, b)| Download {
                url: server.url(&format!("/pool/p{i}.deb")),
                sha256: Sha256Digest::of_bytes(b),
                size: Some(b.len() as u64),
                label: format!("p{i} 1.0"),
            })
            .collect();
        // Two are cached already.
        cache.put_bytes(&blobs[0], None).unwrap();
        cache.put_bytes(&blobs[5], None).unwrap();
        let report = fetcher().fetch_many(&items, &cache, 4, &Progress::hidden()).unwrap();
        assert_eq!(
            report.paths,
            items.iter().map(|d| cache.path_of(&d.sha256)).collect::<Vec<_>>()
        );
        assert_eq!(report.downloaded, 10);
        let expected_bytes: u64 = blobs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 0 && *i != 5)
            .map(|(_, b)| b.len() as u64)
            .sum();
        assert_eq!(report.downloaded_bytes, expected_bytes);
        for (i, b) in blobs.iter().enumerate() {
            assert_eq!(&std::fs::read(&report.paths[i]).unwrap(), b);
            assert_eq!(
                server.hits(&format!("/pool/p{i}.deb")),
                usize::from(i != 0 && i != 5),
                "p{i}"
            );
        }
        // Everything cached: nothing downloaded, even offline.
        let again = Fetcher::new(true)
            .unwrap()
            .fetch_many(&items, &cache, 0, &Progress::lines())
            .unwrap();
        assert_eq!((again.downloaded, again.downloaded_bytes), (0, 0));
        assert_eq!(again.paths, report.paths);
    }

    #[test]
    fn fetch_many_reports_the_first_failure_in_order() {
        let server = TestServer::start(vec![("/ok", Route::Bytes(b"ok".to_vec()))]);
        let t = TestDir::new("http-many-fail");
        let cache = ContentCache::open(&t.0).unwrap();
        let item = |path: &str, content: &[u8]| Download {
            url: server.url(path),
            sha256: Sha256Digest::of_bytes(content),
            size: Some(content.len() as u64),
            label: path.to_string(),
        };
        let items = vec![item("/ok", b"ok"), item("/gone-1", b"a"), item("/gone-2", b"b")];
        let e = fetcher()
            .fetch_many(&items, &cache, 1, &Progress::hidden())
            .unwrap_err();
        assert!(
            matches!(&e, FetchError::Status { url, status: 404 } if url.ends_with("/gone-1")),
            "{e:?}"
        );
        // With one job, nothing starts after the failure.
        assert_eq!(server.hits("/gone-2"), 0);
    }
}
