//! Compressed blocks kept between builds, so a rebuild compresses only what changed.
//!
//! The writer asks a [`BlockCache`] for every data block; [`DirBlockCache`] keeps them as
//! files in a directory. An entry's name is the sha256 of a format version, the
//! [`crate::Compression::tag`] (compressor, level or preset, filters, block size) and what
//! names the block ([`BlockName`]): its uncompressed bytes, or, for a file whose content's
//! sha256 the tree records, that sha256 and the block's number, so a rebuild finds the block
//! without reading or hashing the file. An entry holds a header, that key again (so an entry copied or
//! renamed onto another name is not taken for it), the sha256 of its payload and the payload
//! (the compressed block, or nothing for a block stored raw); it is written to a
//! temporary file and renamed into place, and checked on every read: an entry that does not
//! check out is ignored, the block compressed again and the entry rewritten, so a damaged
//! cache can cost time but never put wrong bytes into an image.

use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// How one block is stored in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredBlock {
    /// Compressed: these bytes, shorter than the block.
    Compressed(Vec<u8>),
    /// Uncompressed, because compressing did not make it smaller.
    Raw,
}

/// What names a data block in the cache.
#[derive(Debug, Clone, Copy)]
pub enum BlockName<'a> {
    /// The block's bytes.
    Bytes(&'a [u8]),
    /// Block number `index`, `len` bytes long, of a file whose whole content has the sha256
    /// `file_sha256` (checked by whoever made the tree): named without reading it.
    InFile {
        /// The sha256 of the file's content.
        file_sha256: &'a [u8; 32],
        /// The block's number in the file.
        index: u64,
        /// The block's length.
        len: usize,
    },
}

impl BlockName<'_> {
    /// The block's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            BlockName::Bytes(bytes) => bytes.len(),
            BlockName::InFile { len, .. } => *len,
        }
    }

    /// True for an empty block (never written: an empty file has no blocks).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where the writer finds the compressed form of blocks it has seen before. The writer asks
/// from several threads at once.
pub trait BlockCache: Sync {
    /// The stored form of the block `name` under `tag` ([`crate::Compression::tag`]): from the
    /// cache when known, else from `compress` (which reads the block when it has to), which
    /// the cache may then keep.
    fn stored(
        &self,
        tag: &str,
        name: BlockName<'_>,
        compress: &mut dyn FnMut() -> io::Result<StoredBlock>,
    ) -> io::Result<StoredBlock>;
}

/// No cache: every block is compressed.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCache;

impl BlockCache for NoCache {
    fn stored(
        &self,
        _tag: &str,
        _name: BlockName<'_>,
        compress: &mut dyn FnMut() -> io::Result<StoredBlock>,
    ) -> io::Result<StoredBlock> {
        compress()
    }
}

/// Bumped whenever an entry's layout or a compressor's output for the same tag changes.
const FORMAT_VERSION: &[u8] = b"uvmkit-squashfs-block-cache-1";
/// The same for blocks named by their file's sha256 (a name of its own, so a key of one kind
/// can never be the key of the other).
const FILE_BLOCK_FORMAT_VERSION: &[u8] = b"uvmkit-squashfs-file-block-cache-1";
/// How old an entry's modification time may grow before a hit refreshes it.
const REFRESH_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// The first bytes of every entry.
const ENTRY_MAGIC: &[u8; 8] = b"UVSQBLK2";
/// Magic, key (sha256), kind byte, payload length (u32), payload sha256.
const ENTRY_HEADER: usize = 8 + 32 + 1 + 4 + 32;

/// What one build did with the cache.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Blocks found in the cache.
    pub hits: u64,
    /// Blocks compressed (not cached, or too small to cache).
    pub misses: u64,
    /// Entries that did not check out and were rewritten.
    pub rejected: u64,
    /// Entries removed to keep the cache under its limit.
    pub pruned: u64,
}

/// A [`BlockCache`] in a directory: one file per block of at least `min_block` bytes, the
/// directory kept under `max_bytes` by [`DirBlockCache::prune`] (least recently used first; a
/// hit refreshes an entry's modification time, at most once a day).
#[derive(Debug)]
pub struct DirBlockCache {
    dir: PathBuf,
    min_block: usize,
    max_bytes: u64,
    hits: AtomicU64,
    misses: AtomicU64,
    rejected: AtomicU64,
    pruned: AtomicU64,
}

/// Numbers each temporary entry file, so threads writing the same entry never share one.
static TEMPORARY_SEQUENCE: AtomicU64 = AtomicU64::new(0);

impl DirBlockCache {
    /// Blocks smaller than this (a page) are compressed every time by default: they compress
    /// in microseconds, and an entry each would fill the directory with tiny files.
    pub const DEFAULT_MIN_BLOCK: usize = 4096;
    /// The default bound on the directory's size.
    pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

    /// A cache in `dir` (created when missing) with the default bounds.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(DirBlockCache {
            dir: dir.to_path_buf(),
            min_block: Self::DEFAULT_MIN_BLOCK,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            pruned: AtomicU64::new(0),
        })
    }

    /// The same with other bounds.
    pub fn with_bounds(mut self, min_block: usize, max_bytes: u64) -> Self {
        self.min_block = min_block;
        self.max_bytes = max_bytes;
        self
    }

    /// What happened so far. When blocks are compressed on several threads, two equal blocks
    /// may both be compressed before either is stored, so the split between hits and misses
    /// can vary between runs; the image's bytes do not.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            pruned: self.pruned.load(Ordering::Relaxed),
        }
    }

    /// The entry file of the block `name` under `tag` (whether or not it exists).
    pub fn entry_path(&self, tag: &str, name: BlockName<'_>) -> PathBuf {
        self.path_of(&key(tag, name))
    }

    fn path_of(&self, key: &[u8; 32]) -> PathBuf {
        let hex = hex(key);
        self.dir.join(&hex[..2]).join(hex)
    }

    /// Removes the least recently used entries until the directory holds at most its
    /// `max_bytes`, and temporary files a crashed build left.
    pub fn prune(&mut self) -> io::Result<()> {
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        let mut total = 0u64;
        for sub in fs::read_dir(&self.dir)? {
            let sub = sub?.path();
            if !sub.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&sub)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "tmp") {
                    let age = meta.modified()?.elapsed().unwrap_or_default();
                    if age.as_secs() > 3600 {
                        let _ = fs::remove_file(&path);
                    }
                    continue;
                }
                total += meta.len();
                entries.push((meta.modified()?, meta.len(), path));
            }
        }
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            fs::remove_file(&path)?;
            total -= len;
            self.pruned.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The entry in `file` for the block with `key` of `block_len` bytes, if it checks out.
    fn read(mut file: &fs::File, key: &[u8; 32], block_len: usize) -> Option<StoredBlock> {
        let mut bytes = Vec::with_capacity(ENTRY_HEADER + block_len);
        file.read_to_end(&mut bytes).ok()?;
        if bytes.len() < ENTRY_HEADER || &bytes[..8] != ENTRY_MAGIC || &bytes[8..40] != key {
            return None;
        }
        let kind = bytes[40];
        let len = u32::from_le_bytes(bytes[41..45].try_into().ok()?) as usize;
        let payload = &bytes[ENTRY_HEADER..];
        if payload.len() != len || Sha256::digest(payload).as_slice() != &bytes[45..77] {
            return None;
        }
        match kind {
            0 if len == 0 => Some(StoredBlock::Raw),
            1 if len > 0 && len < block_len => Some(StoredBlock::Compressed(payload.to_vec())),
            _ => None,
        }
    }

    /// Writes the entry for `stored` at `path` through a temporary file.
    fn write(path: &Path, key: &[u8; 32], stored: &StoredBlock) -> io::Result<()> {
        let (kind, payload): (u8, &[u8]) = match stored {
            StoredBlock::Raw => (0, &[]),
            StoredBlock::Compressed(bytes) => (1, bytes),
        };
        let mut bytes = Vec::with_capacity(ENTRY_HEADER + payload.len());
        bytes.extend_from_slice(ENTRY_MAGIC);
        bytes.extend_from_slice(key);
        bytes.push(kind);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&Sha256::digest(payload));
        bytes.extend_from_slice(payload);
        let dir = path.parent().expect("an entry lies in a subdirectory");
        fs::create_dir_all(dir)?;
        let sequence = TEMPORARY_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("{}-{sequence}.tmp", std::process::id()));
        fs::write(&tmp, &bytes)?;
        fs::rename(&tmp, path).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
    }
}

impl BlockCache for DirBlockCache {
    fn stored(
        &self,
        tag: &str,
        name: BlockName<'_>,
        compress: &mut dyn FnMut() -> io::Result<StoredBlock>,
    ) -> io::Result<StoredBlock> {
        if name.len() < self.min_block {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return compress();
        }
        let key = key(tag, name);
        let path = self.path_of(&key);
        if let Ok(file) = fs::File::open(&path) {
            if let Some(stored) = Self::read(&file, &key, name.len()) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                // Recently used: pruned last. Refreshed at most once a day, so a rebuild does
                // not rewrite the inode of every entry it reads.
                let age = file
                    .metadata()
                    .and_then(|m| m.modified())
                    .map(|t| t.elapsed().unwrap_or_default());
                if age.is_ok_and(|age| age >= REFRESH_AFTER) {
                    if let Ok(file) = fs::File::options().append(true).open(&path) {
                        let _ = file.set_modified(SystemTime::now());
                    }
                }
                return Ok(stored);
            }
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let stored = compress()?;
        // A cache that cannot be written only costs time.
        let _ = Self::write(&path, &key, &stored);
        Ok(stored)
    }
}

/// An entry's key: the sha256 of the format version, `tag`, the block's length and its bytes;
/// or, for a block named by its file, of the other format version, `tag`, the block's length,
/// its number and the file's sha256.
fn key(tag: &str, name: BlockName<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    let version = match name {
        BlockName::Bytes(_) => FORMAT_VERSION,
        BlockName::InFile { .. } => FILE_BLOCK_FORMAT_VERSION,
    };
    h.update(version);
    h.update([0]);
    h.update(tag.as_bytes());
    h.update([0]);
    h.update((name.len() as u64).to_le_bytes());
    match name {
        BlockName::Bytes(block) => h.update(block),
        BlockName::InFile { file_sha256, index, .. } => {
            h.update(index.to_le_bytes());
            h.update(file_sha256);
        }
    }
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
