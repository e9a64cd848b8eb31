//! A content-addressed store of blobs by sha256, shared by every build on the host.
//!
//! Layout under the cache directory `DIR`:
//!
//! ```text
//! DIR/CACHEDIR.TAG                      marks the directory as a cache for backup tools
//! DIR/blobs/sha256/<first two hex>/<hex> one blob, named by the sha256 of its content
//! DIR/refs/<namespace>/<escaped key>     "<hex>\n": a named pointer to a blob
//! DIR/notes/<namespace>/<escaped key>    a small text the caller keeps (see [`ContentCache::set_note`])
//! DIR/tmp/                               blobs and refs being written
//! ```
//!
//! Every write goes to a fresh file in `DIR/tmp` (the same filesystem), is `fsync`ed and then
//! `rename`d into place. `rename` replaces atomically, so a reader sees either no blob or a
//! whole one, and two builds writing the same blob at once both succeed with identical bytes.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::atomic::TempFile;
use crate::{FetchError, Result, CACHE_ENV};

/// Temporary files older than this are left over from a crashed build and are removed.
const STALE_TEMP_AGE: Duration = Duration::from_secs(24 * 3600);

/// Escaped reference keys longer than this are replaced by their sha256 (file name limits).
const MAX_ESCAPED_KEY: usize = 200;

/// Read and write buffer size for streaming blobs.
const CHUNK: usize = 128 * 1024;

/// The `CACHEDIR.TAG` signature (Cache Directory Tagging Specification 1.0).
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by uvmkit.\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

/// A sha256 digest: 32 bytes, written as 64 lowercase hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The digest of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Sha256Digest(Sha256::digest(bytes).into())
    }

    /// The digest of everything `r` yields, read in chunks.
    pub fn of_reader(mut r: impl Read) -> io::Result<Self> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return Ok(Sha256Digest(hasher.finalize().into())),
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

/// A string that is not 64 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a sha256 digest: expected 64 hexadecimal digits")]
pub struct ParseDigestError(pub String);

impl FromStr for Sha256Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| ParseDigestError(s.to_string()))?;
        Ok(Sha256Digest(bytes))
    }
}

impl serde::Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct HexVisitor;
        impl serde::de::Visitor<'_> for HexVisitor {
            type Value = Sha256Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sha256 digest as 64 hexadecimal digits")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Sha256Digest, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(HexVisitor)
    }
}

/// Why a streamed put failed; [`crate::http`] turns these into errors naming the URL.
#[derive(Debug)]
pub(crate) enum PutError {
    /// The source reader failed (for a download: the connection).
    Read(io::Error),
    /// The content has the wrong size: `actual` bytes, or more when `truncated`.
    Size { actual: u64, truncated: bool },
    /// The content has the wrong digest.
    Digest { actual: Sha256Digest },
    /// The cache itself failed.
    Cache(FetchError),
}

/// The content-addressed blob store.
#[derive(Debug, Clone)]
pub struct ContentCache {
    dir: PathBuf,
}

impl ContentCache {
    /// The cache directory to use: `$UVMKIT_CACHE`, else `$XDG_CACHE_HOME/uvmkit`, else
    /// `$HOME/.cache/uvmkit`.
    pub fn default_dir() -> PathBuf {
        default_dir_from(|name| std::env::var_os(name).map(PathBuf::from))
    }

    /// Opens the cache at `dir`, creating it, and removes temporary files a crashed build left.
    pub fn open(dir: &Path) -> Result<Self> {
        let cache = ContentCache { dir: dir.to_path_buf() };
        for sub in [cache.blob_root(), cache.dir.join("refs"), cache.tmp_dir()] {
            fs::create_dir_all(&sub).map_err(|e| cache.io(&sub, e))?;
        }
        let tag = dir.join("CACHEDIR.TAG");
        if !tag.exists() {
            cache.write_atomically(&tag, CACHEDIR_TAG.as_bytes())?;
        }
        cache.remove_stale_temps();
        Ok(cache)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob with `digest` lives (whether or not it is there).
    pub fn path_of(&self, digest: &Sha256Digest) -> PathBuf {
        let hex = digest.to_string();
        self.blob_root().join(&hex[..2]).join(hex)
    }

    /// Whether a blob with `digest` is present (without checking its content).
    pub fn contains(&self, digest: &Sha256Digest) -> bool {
        self.path_of(digest).is_file()
    }

    /// Whether a blob with `digest` is present and `size` bytes long: the cheap check for hot
    /// paths; [`ContentCache::get_verified`] re-hashes.
    pub fn get_checked(&self, digest: &Sha256Digest, size: u64) -> bool {
        fs::metadata(self.path_of(digest)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// Whether a blob with `digest` is present, `size` bytes long and intact, hashing it only
    /// when its file no longer has the `last` stamp (what the previous check recorded): blobs
    /// are written once, to a temporary file renamed into place, so a file with the same
    /// device, inode, size, modification and change times was not written since. Returns the
    /// stamp to record, or `None` when the blob is missing or damaged (a damaged one is
    /// removed, as [`ContentCache::get_verified`] does).
    pub fn check_blob(&self, digest: &Sha256Digest, size: u64, last: Option<&BlobStamp>) -> Result<Option<BlobStamp>> {
        let path = self.path_of(digest);
        let stamp = match fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.len() == size => BlobStamp::of(&meta),
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(&path, e)),
        };
        if last == Some(&stamp) && stamp.is_settled() {
            return Ok(Some(stamp));
        }
        Ok(self.get_verified(digest)?.map(|_| stamp))
    }

    /// Whether the blob `digest` of `size` bytes is already stored whole, so a new copy can be
    /// dropped. A blob of the right size but other content is not trusted: it is reported
    /// absent and the new copy replaces it.
    fn already_stored(&self, digest: &Sha256Digest, size: u64) -> bool {
        if !self.get_checked(digest, size) {
            return false;
        }
        let path = self.path_of(digest);
        let intact = File::open(&path)
            .and_then(Sha256Digest::of_reader)
            .is_ok_and(|actual| actual == *digest);
        if !intact {
            log::warn!("cache entry {} is corrupt; replacing it", path.display());
        }
        intact
    }

    /// The blob's path if it is present and its content hashes to `digest`. A corrupt entry is
    /// removed, logged as a warning and reported as `None`, so the caller fetches it again.
    pub fn get_verified(&self, digest: &Sha256Digest) -> Result<Option<PathBuf>> {
        let path = self.path_of(digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(&path, e)),
        };
        let opened = file.metadata().map_err(|e| self.io(&path, e))?;
        let actual = Sha256Digest::of_reader(&file).map_err(|e| self.io(&path, e))?;
        if actual == *digest {
            return Ok(Some(path));
        }
        self.discard_corrupt(&path, &actual, &opened)?;
        Ok(None)
    }

    /// The blob's bytes if it is present and they hash to `digest`, read once (for small
    /// blobs: manifests, initrd segments). A corrupt entry is removed as by
    /// [`ContentCache::get_verified`].
    pub fn read_verified(&self, digest: &Sha256Digest) -> Result<Option<Vec<u8>>> {
        let path = self.path_of(digest);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(&path, e)),
        };
        let opened = file.metadata().map_err(|e| self.io(&path, e))?;
        let mut bytes = Vec::with_capacity(opened.len() as usize);
        file.read_to_end(&mut bytes).map_err(|e| self.io(&path, e))?;
        let actual = Sha256Digest::of_bytes(&bytes);
        if actual == *digest {
            return Ok(Some(bytes));
        }
        self.discard_corrupt(&path, &actual, &opened)?;
        Ok(None)
    }

    /// Logs the blob at `path` (which hashed to `actual` when `opened`) as corrupt and removes
    /// it, so the caller fetches or makes it again.
    fn discard_corrupt(&self, path: &Path, actual: &Sha256Digest, opened: &fs::Metadata) -> Result<()> {
        log::warn!(
            "cache entry {} is corrupt (its content hashes to {actual}); removing it so it is fetched again",
            path.display()
        );
        // Remove it only if it is still the file we hashed: a concurrent build may have
        // replaced it with a good copy meanwhile.
        let still_same = fs::metadata(path).is_ok_and(|m| m.ino() == opened.ino() && m.dev() == opened.dev());
        if still_same {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(path, e)),
            }
        }
        Ok(())
    }

    /// Stores everything `r` yields and returns its digest. With `expected`, content with
    /// another digest is an error and nothing is kept.
    pub fn put_reader(&self, r: impl Read, expected: Option<Sha256Digest>) -> Result<Sha256Digest> {
        self.put_stream(r, expected.as_ref(), None)
            .map(|(digest, _)| digest)
            .map_err(|e| match e {
                PutError::Read(source) => FetchError::SourceRead(source),
                PutError::Digest { actual } => FetchError::DigestMismatch {
                    expected: expected.unwrap_or(actual),
                    actual,
                },
                // Only checked when a size is expected, which it is not here.
                PutError::Size { actual, .. } => {
                    FetchError::SourceRead(io::Error::other(format!("unexpected size {actual}")))
                }
                PutError::Cache(e) => e,
            })
    }

    /// Stores `bytes` and returns their digest. With `expected`, bytes with another digest are
    /// an error and nothing is kept.
    pub fn put_bytes(&self, bytes: &[u8], expected: Option<Sha256Digest>) -> Result<Sha256Digest> {
        let actual = Sha256Digest::of_bytes(bytes);
        if let Some(expected) = expected {
            if expected != actual {
                return Err(FetchError::DigestMismatch { expected, actual });
            }
        }
        if self.already_stored(&actual, bytes.len() as u64) {
            return Ok(actual);
        }
        let dest = self.path_of(&actual);
        self.create_parent(&dest)?;
        self.write_atomically(&dest, bytes)?;
        Ok(actual)
    }

    /// Points the reference `key` in `namespace` at `digest`, atomically replacing any previous
    /// value. Keys are arbitrary strings (URLs, digests); namespaces are simple names.
    pub fn set_ref(&self, namespace: &str, key: &str, digest: &Sha256Digest) -> Result<()> {
        let path = self.ref_path(namespace, key)?;
        self.create_parent(&path)?;
        self.write_atomically(&path, format!("{digest}\n").as_bytes())
    }

    /// The digest the reference `key` in `namespace` points at, if it was set. A damaged
    /// reference is logged as a warning and reported as unset.
    pub fn get_ref(&self, namespace: &str, key: &str) -> Result<Option<Sha256Digest>> {
        let path = self.ref_path(namespace, key)?;
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => String::new(),
            Err(e) => return Err(self.io(&path, e)),
        };
        match text.trim_end().parse() {
            Ok(d) => Ok(Some(d)),
            Err(_) => {
                log::warn!("cache reference {} is damaged; ignoring it", path.display());
                Ok(None)
            }
        }
    }

    /// Keeps `text` as the note `key` in `namespace`, atomically replacing any previous one:
    /// state a caller keeps between builds that is not content (such as [`BlobStamp`]s).
    pub fn set_note(&self, namespace: &str, key: &str, text: &str) -> Result<()> {
        let path = self.note_path(namespace, key)?;
        self.create_parent(&path)?;
        self.write_atomically(&path, text.as_bytes())
    }

    /// The note `key` in `namespace`, if one was kept and is text.
    pub fn get_note(&self, namespace: &str, key: &str) -> Result<Option<String>> {
        let path = self.note_path(namespace, key)?;
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(None),
            Err(e) => Err(self.io(&path, e)),
        }
    }

    /// Streams `r` into the cache while hashing it, checking the size (reading at most one
    /// byte past `expected_size`) and then the digest before anything becomes visible;
    /// returns the digest and the size.
    pub(crate) fn put_stream(
        &self,
        r: impl Read,
        expected: Option<&Sha256Digest>,
        expected_size: Option<u64>,
    ) -> std::result::Result<(Sha256Digest, u64), PutError> {
        let mut r = r.take(expected_size.map_or(u64::MAX, |n| n.saturating_add(1)));
        let mut temp = self.create_temp().map_err(PutError::Cache)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(PutError::Read(e)),
            };
            hasher.update(&buf[..n]);
            temp.file
                .write_all(&buf[..n])
                .map_err(|e| PutError::Cache(self.io(&temp.path, e)))?;
            total += n as u64;
        }
        if let Some(size) = expected_size {
            if total != size {
                return Err(PutError::Size {
                    actual: total,
                    truncated: total > size,
                });
            }
        }
        let actual = Sha256Digest(hasher.finalize().into());
        if expected.is_some_and(|e| *e != actual) {
            return Err(PutError::Digest { actual });
        }
        // Someone stored it already (another build, or the same file in another package):
        // keep theirs and skip the fsync, once its content is checked.
        if self.already_stored(&actual, total) {
            return Ok((actual, total));
        }
        let dest = self.path_of(&actual);
        self.create_parent(&dest).map_err(PutError::Cache)?;
        self.persist(temp, &dest).map_err(PutError::Cache)?;
        Ok((actual, total))
    }

    fn blob_root(&self) -> PathBuf {
        self.dir.join("blobs").join("sha256")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    fn io(&self, path: &Path, e: io::Error) -> FetchError {
        FetchError::cache_io(&self.dir, path, e)
    }

    fn ref_path(&self, namespace: &str, key: &str) -> Result<PathBuf> {
        self.keyed_path("refs", namespace, key)
    }

    fn note_path(&self, namespace: &str, key: &str) -> Result<PathBuf> {
        self.keyed_path("notes", namespace, key)
    }

    /// `DIR/<area>/<namespace>/<escaped key>`, for a simple `namespace`.
    fn keyed_path(&self, area: &str, namespace: &str, key: &str) -> Result<PathBuf> {
        let simple = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if namespace.is_empty() || namespace.starts_with('.') || !namespace.chars().all(simple) {
            return Err(FetchError::BadNamespace(namespace.to_string()));
        }
        Ok(self.dir.join(area).join(namespace).join(escape_key(key)))
    }

    fn create_parent(&self, path: &Path) -> Result<()> {
        match path.parent() {
            Some(parent) => fs::create_dir_all(parent).map_err(|e| self.io(parent, e)),
            None => Ok(()),
        }
    }

    /// A new, empty file in `DIR/tmp`, removed again unless it is persisted.
    fn create_temp(&self) -> Result<TempFile> {
        let dir = self.tmp_dir();
        TempFile::create_in(&dir, "").map_err(|e| self.io(&dir, e))
    }

    /// Writes `bytes` through a temporary file in `DIR/tmp` and renames it to `dest`. Unlike
    /// [`crate::write_atomically`] this skips the directory `fsync`: a cache entry lost in a
    /// crash is only fetched again.
    fn write_atomically(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let mut temp = self.create_temp()?;
        temp.file.write_all(bytes).map_err(|e| self.io(&temp.path, e))?;
        self.persist(temp, dest)
    }

    /// Moves a finished temporary file to `dest`.
    fn persist(&self, temp: TempFile, dest: &Path) -> Result<()> {
        temp.persist(dest).map_err(|e| self.io(dest, e))
    }

    /// Best effort: a failure here only leaves garbage behind.
    fn remove_stale_temps(&self) {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE_TEMP_AGE));
            if stale {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// The cache directory from environment lookups (see [`ContentCache::default_dir`]).
fn default_dir_from(var: impl Fn(&str) -> Option<PathBuf>) -> PathBuf {
    let set = |name: &str| var(name).filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = set(CACHE_ENV) {
        return dir;
    }
    // The XDG Base Directory Specification ignores relative values.
    if let Some(dir) = set("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return dir.join("uvmkit");
    }
    match set("HOME") {
        Some(home) => home.join(".cache").join("uvmkit"),
        None => std::env::temp_dir().join("uvmkit-cache"),
    }
}

/// A reference key as a file name: bytes outside `[A-Za-z0-9._-]` (and a leading `.`) become
/// `%XX`; an empty key is `%-empty` and a long one `%-sha256-<hex of the key>`. The `%-`
/// forms cannot come out of the escaping, so distinct keys get distinct names.
fn escape_key(key: &str) -> String {
    if key.is_empty() {
        return "%-empty".to_string();
    }
    let mut out = String::with_capacity(key.len());
    for (i, b) in key.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > MAX_ESCAPED_KEY {
        return format!("%-sha256-{}", Sha256Digest::of_bytes(key.as_bytes()));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    /// A fresh, empty directory for one test, removed when dropped.
    pub(crate) struct TestDir(pub PathBuf);

    impl TestDir {
        pub(crate) fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("uvmkit-fetch-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TestDir(dir)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Every file under `dir`, recursively.
    pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d).unwrap().flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    /// Deterministic, incompressible-looking test content.
    pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
        let mut x = 0x9E37_79B9u32 ^ u32::from(seed);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[test]
    fn digest_hex_round_trips_and_rejects_garbage() {
        let d = Sha256Digest::of_bytes(b"abc");
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(d.to_string(), hex);
        assert_eq!(hex.parse::<Sha256Digest>().unwrap(), d);
        assert_eq!(hex.to_uppercase().parse::<Sha256Digest>().unwrap(), d);
        assert!("abc".parse::<Sha256Digest>().is_err());
        assert!(format!("{hex}00").parse::<Sha256Digest>().is_err());
        let e = hex.replace('b', "g").parse::<Sha256Digest>().unwrap_err();
        assert!(e.to_string().contains("64 hexadecimal digits"), "{e}");
        assert_eq!(Sha256Digest::of_reader(&b"abc"[..]).unwrap(), d);
    }

    #[test]
    fn digest_serialises_as_a_hex_string() {
        let d = Sha256Digest::of_bytes(b"abc");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Sha256Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Sha256Digest>("\"nothex\"").is_err());
    }

    #[test]
    fn default_dir_follows_the_environment_in_order() {
        fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<PathBuf> + 'a {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| PathBuf::from(v))
        }
        let all = [("UVMKIT_CACHE", "/c"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(default_dir_from(env(&all)), PathBuf::from("/c"));
        assert_eq!(default_dir_from(env(&all[1..])), PathBuf::from("/x/uvmkit"));
        assert_eq!(default_dir_from(env(&all[2..])), PathBuf::from("/h/.cache/uvmkit"));
        assert_eq!(
            default_dir_from(env(&[("UVMKIT_CACHE", ""), ("XDG_CACHE_HOME", "rel"), ("HOME", "/h")])),
            PathBuf::from("/h/.cache/uvmkit")
        );
    }

    #[test]
    fn open_creates_the_layout() {
        let t = TestDir::new("layout");
        let dir = t.0.join("cache");
        let cache = ContentCache::open(&dir).unwrap();
        for sub in ["blobs/sha256", "refs", "tmp"] {
            assert!(dir.join(sub).is_dir(), "{sub}");
        }
        assert!(fs::read_to_string(dir.join("CACHEDIR.TAG"))
            .unwrap()
            .starts_with("Signature: 8a477f597d28d172789f06886806bc55"));
        let d = cache.put_bytes(b"hello", None).unwrap();
        assert_eq!(
            cache.path_of(&d),
            dir.join("blobs/sha256/2c/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
        // Reopening an existing cache is fine.
        ContentCache::open(&dir).unwrap();
    }

    #[test]
    fn put_stores_blobs_atomically_and_leaves_no_temporaries() {
        let t = TestDir::new("put");
        let cache = ContentCache::open(&t.0).unwrap();
        let data = pattern(1_000_000, 1);
        let d = cache.put_reader(&data[..], None).unwrap();
        assert_eq!(d, Sha256Digest::of_bytes(&data));
        assert_eq!(fs::read(cache.path_of(&d)).unwrap(), data);
        assert!(cache.contains(&d));
        assert!(cache.get_checked(&d, data.len() as u64));
        assert!(!cache.get_checked(&d, data.len() as u64 - 1));
        assert_eq!(cache.get_verified(&d).unwrap(), Some(cache.path_of(&d)));
        // Storing it again, with the right expectation, is a no-op.
        assert_eq!(cache.put_reader(&data[..], Some(d)).unwrap(), d);
        assert_eq!(cache.put_bytes(&data, Some(d)).unwrap(), d);
        assert!(files_under(&cache.tmp_dir()).is_empty());
        let missing = Sha256Digest::of_bytes(b"missing");
        assert!(!cache.contains(&missing));
        assert_eq!(cache.get_verified(&missing).unwrap(), None);
    }

    #[test]
    fn a_mismatch_with_the_expected_digest_keeps_nothing() {
        let t = TestDir::new("mismatch");
        let cache = ContentCache::open(&t.0).unwrap();
        let wrong = Sha256Digest::of_bytes(b"something else");
        let actual = Sha256Digest::of_bytes(b"content");
        for e in [
            cache.put_reader(&b"content"[..], Some(wrong)).unwrap_err(),
            cache.put_bytes(b"content", Some(wrong)).unwrap_err(),
        ] {
            match &e {
                FetchError::DigestMismatch { expected, actual: got } => {
                    assert_eq!((*expected, *got), (wrong, actual));
                }
                other => panic!("unexpected {other:?}"),
            }
            let msg = e.to_string();
            assert!(
                msg.contains(&wrong.to_string())
                    && msg.contains(&actual.to_string())
                    && msg.contains("nothing was stored"),
                "{msg}"
            );
        }
        assert!(files_under(&cache.blob_root()).is_empty());
        assert!(files_under(&cache.tmp_dir()).is_empty());
    }

    #[test]
    fn a_corrupt_entry_is_detected_and_removed() {
        let t = TestDir::new("corrupt");
        let cache = ContentCache::open(&t.0).unwrap();
        let d = cache.put_bytes(b"precious", None).unwrap();
        fs::write(cache.path_of(&d), b"pre-ious").unwrap();
        // The cheap check cannot tell; the verifying one can.
        assert!(cache.get_checked(&d, 8));
        assert_eq!(cache.get_verified(&d).unwrap(), None);
        assert!(!cache.path_of(&d).exists(), "the corrupt blob must be removed");
        // Stored again, it is whole.
        cache.put_bytes(b"precious", Some(d)).unwrap();
        assert_eq!(cache.get_verified(&d).unwrap(), Some(cache.path_of(&d)));
    }

    #[test]
    fn a_blob_of_the_right_size_but_wrong_content_is_replaced_not_trusted() {
        let t = TestDir::new("dedup-corrupt");
        let cache = ContentCache::open(&t.0).unwrap();
        let d = cache.put_bytes(b"precious", None).unwrap();
        fs::write(cache.path_of(&d), b"pre-ious").unwrap();
        assert!(
            cache.check_blob(&d, 8, None).unwrap().is_none(),
            "a damaged blob passed the build's check"
        );
        fs::write(cache.path_of(&d), b"pre-ious").unwrap();
        // De-duplication by stream and by bytes both replace it.
        assert_eq!(cache.put_reader(&b"precious"[..], None).unwrap(), d);
        assert_eq!(fs::read(cache.path_of(&d)).unwrap(), b"precious");
        fs::write(cache.path_of(&d), b"pre-ious").unwrap();
        assert_eq!(cache.put_bytes(b"precious", None).unwrap(), d);
        assert_eq!(fs::read(cache.path_of(&d)).unwrap(), b"precious");
        assert!(cache.check_blob(&d, 8, None).unwrap().is_some());
        assert!(cache.check_blob(&d, 9, None).unwrap().is_none());
    }

    #[test]
    fn a_blob_is_hashed_again_only_when_its_file_changed_since_its_stamp() {
        let t = TestDir::new("stamps");
        let cache = ContentCache::open(&t.0).unwrap();
        let d = cache.put_bytes(b"precious", None).unwrap();
        let stamp = cache.check_blob(&d, 8, None).unwrap().expect("a whole blob");
        assert_eq!(stamp.to_string().parse::<BlobStamp>(), Ok(stamp));
        assert!("1 2 3 4.5 6".parse::<BlobStamp>().is_err());
        // Just written: not settled, so its stamp is not trusted yet.
        assert!(!stamp.is_settled());
        let old = BlobStamp([stamp.0[0], stamp.0[1], 8, 1, 0, 1, 0]);
        assert!(old.is_settled());
        assert_eq!(cache.check_blob(&d, 8, Some(&stamp)).unwrap(), Some(stamp));
        // Damaged in place, its modification time put back: the change time still differs,
        // so it is hashed, found damaged and removed.
        let path = cache.path_of(&d);
        let modified = fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&path, b"pre-ious").unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        assert_eq!(cache.check_blob(&d, 8, Some(&stamp)).unwrap(), None);
        assert!(!path.exists(), "the damaged blob must be removed");
        // A note keeps the stamps between builds.
        assert_eq!(cache.get_note("checked", "k").unwrap(), None);
        cache.set_note("checked", "k", &format!("{stamp}\n")).unwrap();
        assert_eq!(cache.get_note("checked", "k").unwrap(), Some(format!("{stamp}\n")));
        assert!(cache.set_note("../x", "k", "").is_err());
    }

    #[test]
    fn concurrent_puts_of_the_same_blob_both_succeed_and_readers_never_see_part_of_it() {
        let t = TestDir::new("concurrent");
        let cache = ContentCache::open(&t.0).unwrap();
        let data = Arc::new(pattern(4 << 20, 2));
        let digest = Sha256Digest::of_bytes(&data);
        for round in 0..8 {
            let _ = fs::remove_file(cache.path_of(&digest));
            let barrier = Arc::new(Barrier::new(3));
            let writers: Vec<_> = (0..2)
                .map(|_| {
                    let (cache, data, barrier) = (cache.clone(), data.clone(), barrier.clone());
                    // Each writer opens its own handle, as a second build would.
                    std::thread::spawn(move || {
                        let cache = ContentCache::open(cache.dir()).unwrap();
                        barrier.wait();
                        cache.put_reader(&data[..], Some(digest))
                    })
                })
                .collect();
            let reader = {
                let (cache, barrier) = (cache.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut seen = 0;
                    for _ in 0..200 {
                        if let Ok(bytes) = fs::read(cache.path_of(&digest)) {
                            assert_eq!(Sha256Digest::of_bytes(&bytes), digest, "a reader saw a partial blob");
                            seen += 1;
                        }
                    }
                    seen
                })
            };
            for w in writers {
                assert_eq!(w.join().unwrap().unwrap(), digest, "round {round}");
            }
            reader.join().unwrap();
            assert_eq!(cache.get_verified(&digest).unwrap(), Some(cache.path_of(&digest)));
        }
        assert!(files_under(&cache.tmp_dir()).is_empty());
    }

    #[test]
    fn refs_round_trip_for_awkward_keys() {
        let t = TestDir::new("refs");
        let cache = ContentCache::open(&t.0).unwrap();
        let a = Sha256Digest::of_bytes(b"a");
        let b = Sha256Digest::of_bytes(b"b");
        let long = format!("http://example.org/{}", "x/".repeat(300));
        let keys = [
            "http://example.org/debian/dists/bookworm/InRelease",
            "",
            ".",
            "..",
            "a/../../b",
            "%-empty",
            "ünïcode key",
            long.as_str(),
        ];
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(cache.get_ref("inrelease", key).unwrap(), None, "{key:?}");
            let d = if i % 2 == 0 { a } else { b };
            cache.set_ref("inrelease", key, &d).unwrap();
            assert_eq!(cache.get_ref("inrelease", key).unwrap(), Some(d), "{key:?}");
        }
        // Overwriting replaces; other namespaces are separate.
        cache.set_ref("inrelease", keys[0], &b).unwrap();
        assert_eq!(cache.get_ref("inrelease", keys[0]).unwrap(), Some(b));
        assert_eq!(cache.get_ref("deb-tree", keys[0]).unwrap(), None);
        // Every key has its own file directly in the namespace directory.
        let files = files_under(&t.0.join("refs/inrelease"));
        assert_eq!(files.len(), keys.len());
        assert!(files.iter().all(|f| f.parent() == Some(&t.0.join("refs/inrelease"))));
        assert!(matches!(
            cache.set_ref("../x", "k", &a),
            Err(FetchError::BadNamespace(_))
        ));
        assert!(matches!(cache.get_ref("", "k"), Err(FetchError::BadNamespace(_))));
        // A damaged reference reads as unset.
        fs::write(t.0.join("refs/inrelease").join(escape_key("")), "garbage").unwrap();
        assert_eq!(cache.get_ref("inrelease", "").unwrap(), None);
        assert!(files_under(&cache.tmp_dir()).is_empty());
    }

    #[test]
    fn key_escaping_is_injective_on_tricky_inputs() {
        let keys = ["", "%-empty", "%2D", "-", ".a", "%2Ea", "a.", "a b", "a%20b"];
        let mut names: Vec<String> = keys.iter().map(|k| escape_key(k)).collect();
        assert!(names
            .iter()
            .all(|n| !n.contains('/') && n != "." && n != ".." && !n.is_empty()));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), keys.len());
    }

    #[test]
    fn stale_temporaries_are_removed_on_open() {
        let t = TestDir::new("stale");
        let cache = ContentCache::open(&t.0).unwrap();
        let old = cache.tmp_dir().join("1.0.part");
        let fresh = cache.tmp_dir().join("1.1.part");
        fs::write(&old, b"x").unwrap();
        fs::write(&fresh, b"x").unwrap();
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(3 * 24 * 3600);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        ContentCache::open(&t.0).unwrap();
        assert!(!old.exists());
        assert!(fresh.exists(), "a temporary being written by another build must stay");
    }
}

/// What a blob's file looked like when its content was last hashed: device, inode, size,
/// modification and change times (to the nanosecond). Written as one line of numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobStamp([i64; 7]);

impl BlobStamp {
    /// How long after its last change a file's stamp is trusted: file times come from a coarse
    /// clock, so a file changed twice within one tick could keep its stamp.
    pub const SETTLE: Duration = Duration::from_secs(2);

    /// Whether the file last changed at least [`BlobStamp::SETTLE`] ago, so a later change
    /// gives it another stamp. Only such stamps are worth keeping (git's "racily clean").
    pub fn is_settled(&self) -> bool {
        let [_, _, _, _, _, changed, _] = self.0;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        changed + (Self::SETTLE.as_secs() as i64) < now
    }

    fn of(meta: &fs::Metadata) -> Self {
        BlobStamp([
            meta.dev() as i64,
            meta.ino() as i64,
            meta.len() as i64,
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
        ])
    }
}

impl fmt::Display for BlobStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [dev, ino, size, m, mn, c, cn] = self.0;
        write!(f, "{dev} {ino} {size} {m}.{mn:09} {c}.{cn:09}")
    }
}

impl FromStr for BlobStamp {
    type Err = ();

    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        let mut numbers = s.split([' ', '.']).map(|n| n.parse::<i64>().map_err(|_| ()));
        let mut stamp = [0i64; 7];
        for slot in &mut stamp {
            *slot = numbers.next().ok_or(())??;
        }
        if numbers.next().is_some() {
            return Err(());
        }
        Ok(BlobStamp(stamp))
    }
}
