//! The initrd: the image's whole root tree as zstd-compressed cpio (the kernel's
//! "ramfs-rootfs-initramfs" format), every timestamp `SOURCE_DATE_EPOCH`.
//!
//! The kernel modules and `/init` go into segments of their own (each a complete archive,
//! compressed on its own; the kernel unpacks them one after the other), which are kept in the
//! build cache under their [`uvmkit_initrd::Segment::fingerprint`]: they change when the
//! kernel or the init does, not when a file of the image does, so a rebuild compresses only
//! the rest.

use super::{io_error, EncodeError};
use crate::definition::ImageDefinition;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use uvmkit_fetch::cache::ContentCache;
use uvmkit_filetree::{FileData, FileTree, NodeKind};
use uvmkit_initrd::{Compression, InitrdOptions, InitrdStats, Segment, SegmentRule, SegmentStats, BASE_SEGMENT};

/// The cache's reference namespace for compressed segments; the `v1` changes when a
/// segment's meaning does.
const SEGMENT_NAMESPACE: &str = "initrd-segment-v1";

/// The segments after the base one: what changes with the kernel, and the init.
fn segment_rules() -> Vec<SegmentRule> {
    vec![
        SegmentRule::new("modules", &["/lib/modules", "/usr/lib/modules"]).expect("valid prefixes"),
        SegmentRule::new("init", &["/init"]).expect("valid prefix"),
    ]
}

/// Writes `tree` as the initrd of `def` to `path`, taking the kernel modules' and the init's
/// compressed segments from the content cache at `cache_dir` when an earlier build made them.
pub fn write_initrd(
    tree: &FileTree,
    def: &ImageDefinition,
    epoch: u64,
    cache_dir: &Path,
    path: &Path,
) -> Result<InitrdStats, EncodeError> {
    let io = io_error("initrd");
    let cache = ContentCache::open(cache_dir).map_err(cache_error)?;
    let file = File::create(path).map_err(&io)?;
    let mut w = BufWriter::new(file);
    let compression = match def.initrd.compression_level {
        0 => Compression::None,
        level => Compression::zstd(level),
    };
    let options = InitrdOptions {
        mtime: epoch,
        compression,
        segments: segment_rules(),
    };
    let stats = uvmkit_initrd::write_initrd_with(tree, &options, &mut w, |segment, out| {
        if segment.name() != BASE_SEGMENT && !segment.is_empty() && cacheable(tree, segment) {
            cached_segment(segment, epoch, compression, &cache, out)
        } else {
            Ok(segment.write(epoch, compression, out)?)
        }
    })?;
    w.flush().map_err(&io)?;
    Ok(stats)
}

/// Whether the segment's fingerprint stands for its bytes: every file is held in memory (its
/// bytes are hashed) or has a sha256 that was checked (a blob of the content cache). Another
/// host file (a local kernel's modules) could change without changing its path and size, so
/// such a segment is always compressed again.
fn cacheable(tree: &FileTree, segment: &Segment) -> bool {
    segment.paths().all(|path| match tree.get(path).map(|node| &node.kind) {
        Some(NodeKind::File(data)) => matches!(data, FileData::Inline(_)) || data.known_sha256().is_some(),
        _ => true,
    })
}

fn cache_error(e: uvmkit_fetch::FetchError) -> EncodeError {
    EncodeError::Io {
        what: "initrd segment cache",
        source: std::io::Error::other(e.to_string()),
    }
}

/// Writes the segment from the cache, or compresses it and keeps it there. A cache entry is
/// checked against its sha256 before use; one that fails is made again.
fn cached_segment(
    segment: &Segment,
    epoch: u64,
    compression: Compression,
    cache: &ContentCache,
    out: &mut impl Write,
) -> Result<SegmentStats, EncodeError> {
    let key = hex::encode(segment.fingerprint(epoch, compression));
    let cached = match cache.get_ref(SEGMENT_NAMESPACE, &key).map_err(cache_error)? {
        Some(digest) => cache.read_verified(&digest).map_err(cache_error)?,
        None => None,
    };
    let bytes = match cached {
        Some(bytes) => bytes,
        None => {
            let mut bytes = Vec::new();
            segment.write(epoch, compression, &mut bytes)?;
            // A cache that cannot be written only costs time.
            if let Ok(digest) = cache.put_bytes(&bytes, None) {
                let _ = cache.set_ref(SEGMENT_NAMESPACE, &key, &digest);
            }
            bytes
        }
    };
    out.write_all(&bytes).map_err(io_error("initrd"))?;
    Ok(SegmentStats {
        name: segment.name().to_string(),
        entries: segment.len() as u64,
        uncompressed_bytes: segment.archive_len(),
        compressed_bytes: bytes.len() as u64,
    })
}
