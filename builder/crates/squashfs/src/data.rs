//! The data blocks: every file's bytes cut into `block_size` blocks, compressed (or taken from
//! the [`BlockCache`]) on worker threads a batch at a time, and written in the order they were
//! read, so the image has the same bytes whatever the number of threads.

use crate::cache::{BlockCache, StoredBlock};
use crate::compress::{BlockKind, Encoder};
use crate::{Compression, SquashfsError, DATA_UNCOMPRESSED};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use uvmkit_filetree::{FileData, TreePath};

/// Uncompressed bytes read before a batch is compressed. With the compressed forms this bounds
/// the memory the writer holds (about twice this), while giving every thread several blocks.
const BATCH_BYTES: usize = 8 << 20;

/// Where a file's blocks went.
pub(crate) struct StoredFile {
    /// Offset of the first block in the image (for an empty file: where its blocks would be).
    pub start: u64,
    /// One size word per block (`DATA_UNCOMPRESSED` set for a block stored raw).
    pub block_sizes: Vec<u32>,
}

/// Writes the data blocks of `files`, in order, from `position` on; returns where each file's
/// blocks went and the position after the last block.
pub(crate) fn write_data<'f, W: Write>(
    files: impl IntoIterator<Item = (&'f TreePath, &'f FileData)>,
    compression: Compression,
    block_size: u32,
    threads: usize,
    cache: &dyn BlockCache,
    position: u64,
    out: &mut W,
) -> Result<(Vec<StoredFile>, u64), SquashfsError> {
    let threads = threads.clamp(1, 64);
    let encoders = (0..threads)
        .map(|_| Encoder::new(compression, block_size))
        .collect::<io::Result<Vec<_>>>()
        .map_err(SquashfsError::Write)?;
    let block_size = block_size as usize;
    let mut writer = DataWriter {
        encoders,
        cache,
        tag: compression.tag(block_size as u32),
        batch_blocks: (BATCH_BYTES / block_size).max(threads * 4),
        batch: Vec::new(),
        block_starts: Vec::new(),
        block_sizes: Vec::new(),
        position,
        out,
    };
    // Per file: the number of blocks read before its first, and how many it has.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut read = 0usize;
    for (path, data) in files {
        let first = read;
        let read_error = |source| SquashfsError::Read {
            path: path.clone(),
            source,
        };
        let expected = data.len();
        let mut reader = data.open().map_err(read_error)?;
        let mut total = 0u64;
        loop {
            let mut block = vec![0u8; block_size];
            let filled = fill(&mut reader, &mut block).map_err(read_error)?;
            if filled == 0 {
                break;
            }
            block.truncate(filled);
            total += filled as u64;
            read += 1;
            writer.push(block)?;
            if filled < block_size {
                break;
            }
        }
        if total != expected || fill(&mut reader, &mut [0u8; 1]).map_err(read_error)? != 0 {
            return Err(SquashfsError::Length {
                path: path.clone(),
                expected,
                actual: total,
            });
        }
        spans.push((first, read - first));
    }
    writer.flush()?;
    let end = writer.position;
    let stored = spans
        .into_iter()
        .map(|(first, count)| StoredFile {
            start: writer.block_starts.get(first).copied().unwrap_or(end),
            block_sizes: writer.block_sizes[first..first + count].to_vec(),
        })
        .collect();
    Ok((stored, end))
}

/// Blocks waiting to be compressed, and what was written so far.
struct DataWriter<'a, W> {
    /// One per thread.
    encoders: Vec<Encoder>,
    cache: &'a dyn BlockCache,
    tag: String,
    batch_blocks: usize,
    batch: Vec<Vec<u8>>,
    /// The offset and size word of every block written, in order.
    block_starts: Vec<u64>,
    block_sizes: Vec<u32>,
    position: u64,
    out: &'a mut W,
}

impl<W: Write> DataWriter<'_, W> {
    fn push(&mut self, block: Vec<u8>) -> Result<(), SquashfsError> {
        self.batch.push(block);
        if self.batch.len() >= self.batch_blocks {
            self.flush()?;
        }
        Ok(())
    }

    /// Compresses the batch on the worker threads, then writes it in order.
    fn flush(&mut self) -> Result<(), SquashfsError> {
        let blocks = std::mem::take(&mut self.batch);
        let (cache, tag) = (self.cache, self.tag.as_str());
        let stored: Vec<io::Result<StoredBlock>> = if blocks.len() <= 1 || self.encoders.len() == 1 {
            let encoder = &mut self.encoders[0];
            blocks.iter().map(|b| store(encoder, cache, tag, b)).collect()
        } else {
            let next = AtomicUsize::new(0);
            let results: Vec<Mutex<Option<io::Result<StoredBlock>>>> =
                blocks.iter().map(|_| Mutex::new(None)).collect();
            std::thread::scope(|scope| {
                for encoder in self.encoders.iter_mut().take(blocks.len()) {
                    let (next, results, blocks) = (&next, &results, &blocks);
                    scope.spawn(move || loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(block) = blocks.get(i) else { break };
                        let r = store(encoder, cache, tag, block);
                        *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                    });
                }
            });
            results
                .into_iter()
                .map(|m| {
                    let r = m.into_inner().unwrap_or_else(|p| p.into_inner());
                    r.expect("every block was stored")
                })
                .collect()
        };
        for (block, stored) in blocks.iter().zip(stored) {
            let (bytes, size_word) = match stored.map_err(SquashfsError::Write)? {
                StoredBlock::Compressed(compressed) => {
                    let word = compressed.len() as u32;
                    (std::borrow::Cow::Owned(compressed), word)
                }
                StoredBlock::Raw => (
                    std::borrow::Cow::Borrowed(&block[..]),
                    block.len() as u32 | DATA_UNCOMPRESSED,
                ),
            };
            self.out.write_all(&bytes).map_err(SquashfsError::Write)?;
            self.block_starts.push(self.position);
            self.block_sizes.push(size_word);
            self.position += bytes.len() as u64;
        }
        Ok(())
    }
}

/// How `block` is stored: from the cache, or compressed by `encoder`. A cached answer that is
/// not shorter than the block is not trusted: the block is compressed again.
fn store(encoder: &mut Encoder, cache: &dyn BlockCache, tag: &str, block: &[u8]) -> io::Result<StoredBlock> {
    let mut compress = |block: &[u8]| -> io::Result<StoredBlock> {
        let compressed = encoder.compress(block, BlockKind::Data)?;
        Ok(if compressed.len() < block.len() {
            StoredBlock::Compressed(compressed)
        } else {
            StoredBlock::Raw
        })
    };
    match cache.stored(tag, block, &mut compress)? {
        StoredBlock::Compressed(bytes) if bytes.is_empty() || bytes.len() >= block.len() => compress(block),
        stored => Ok(stored),
    }
}

/// Reads until `buf` is full or the reader ends.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
