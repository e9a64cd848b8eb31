//! The data blocks: every file's bytes cut into `block_size` blocks, compressed (or taken from
//! the [`BlockCache`]) on worker threads a batch at a time, and written in the order they were
//! read, so the image has the same bytes whatever the number of threads. A file whose sha256
//! the tree records is not read here: its blocks go to the workers by name
//! ([`BlockName::InFile`]), and a worker reads one only when the cache does not hold it.

use crate::cache::{BlockCache, BlockName, StoredBlock};
use crate::compress::{BlockKind, Encoder};
use crate::{Compression, SquashfsError, DATA_UNCOMPRESSED};
use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use uvmkit_filetree::{FileData, TreePath};

/// Uncompressed bytes taken before a batch is stored. With the compressed forms this bounds
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
        block_size,
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
        if let Some(file_sha256) = data.known_sha256() {
            let len = data.len();
            let blocks = len.div_ceil(block_size as u64);
            for index in 0..blocks {
                writer.push(PendingBlock::InFile {
                    path,
                    data,
                    file_sha256,
                    index,
                    len: (len - index * block_size as u64).min(block_size as u64) as usize,
                })?;
            }
            read += blocks as usize;
            spans.push((first, read - first));
            continue;
        }
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
            writer.push(PendingBlock::Read(block))?;
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

/// A block waiting to be stored.
enum PendingBlock<'f> {
    /// Read already: its bytes.
    Read(Vec<u8>),
    /// Block `index` of a file with a known sha256, `len` bytes long, read only when needed.
    InFile {
        path: &'f TreePath,
        data: &'f FileData,
        file_sha256: &'f [u8; 32],
        index: u64,
        len: usize,
    },
}

impl PendingBlock<'_> {
    fn name(&self) -> BlockName<'_> {
        match self {
            PendingBlock::Read(bytes) => BlockName::Bytes(bytes),
            PendingBlock::InFile {
                file_sha256,
                index,
                len,
                ..
            } => BlockName::InFile {
                file_sha256,
                index: *index,
                len: *len,
            },
        }
    }

    /// The block's bytes, read from its file when they were not read before.
    fn bytes(&self, block_size: usize) -> Result<Cow<'_, [u8]>, SquashfsError> {
        match self {
            PendingBlock::Read(bytes) => Ok(Cow::Borrowed(bytes)),
            PendingBlock::InFile {
                path, data, index, len, ..
            } => {
                let mut bytes = vec![0u8; *len];
                data.read_exact_at(index * block_size as u64, &mut bytes)
                    .map_err(|source| SquashfsError::Read {
                        path: (*path).clone(),
                        source,
                    })?;
                Ok(Cow::Owned(bytes))
            }
        }
    }
}

/// A block as the image holds it: its bytes and its size word.
struct WrittenBlock {
    bytes: Vec<u8>,
    size_word: u32,
}

/// Blocks waiting to be stored, and what was written so far.
struct DataWriter<'a, 'f, W> {
    /// One per thread.
    encoders: Vec<Encoder>,
    cache: &'a dyn BlockCache,
    tag: String,
    block_size: usize,
    batch_blocks: usize,
    batch: Vec<PendingBlock<'f>>,
    /// The offset and size word of every block written, in order.
    block_starts: Vec<u64>,
    block_sizes: Vec<u32>,
    position: u64,
    out: &'a mut W,
}

impl<'f, W: Write> DataWriter<'_, 'f, W> {
    fn push(&mut self, block: PendingBlock<'f>) -> Result<(), SquashfsError> {
        self.batch.push(block);
        if self.batch.len() >= self.batch_blocks {
            self.flush()?;
        }
        Ok(())
    }

    /// Stores the batch on the worker threads, then writes it in order.
    fn flush(&mut self) -> Result<(), SquashfsError> {
        let blocks = std::mem::take(&mut self.batch);
        let (cache, tag, block_size) = (self.cache, self.tag.as_str(), self.block_size);
        let written: Vec<Result<WrittenBlock, SquashfsError>> = if blocks.len() <= 1 || self.encoders.len() == 1 {
            let encoder = &mut self.encoders[0];
            blocks
                .iter()
                .map(|b| store(encoder, cache, tag, block_size, b))
                .collect()
        } else {
            let next = AtomicUsize::new(0);
            let results: Vec<Mutex<Option<Result<WrittenBlock, SquashfsError>>>> =
                blocks.iter().map(|_| Mutex::new(None)).collect();
            std::thread::scope(|scope| {
                for encoder in self.encoders.iter_mut().take(blocks.len()) {
                    let (next, results, blocks) = (&next, &results, &blocks);
                    scope.spawn(move || loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(block) = blocks.get(i) else { break };
                        let r = store(encoder, cache, tag, block_size, block);
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
        for block in written {
            let block = block?;
            self.out.write_all(&block.bytes).map_err(SquashfsError::Write)?;
            self.block_starts.push(self.position);
            self.block_sizes.push(block.size_word);
            self.position += block.bytes.len() as u64;
        }
        Ok(())
    }
}

/// How `pending` is stored: from the cache, or read (when it was not) and compressed by
/// `encoder`. A cached answer that is not shorter than the block is not trusted: the block is
/// compressed again.
fn store(
    encoder: &mut Encoder,
    cache: &dyn BlockCache,
    tag: &str,
    block_size: usize,
    pending: &PendingBlock<'_>,
) -> Result<WrittenBlock, SquashfsError> {
    let name = pending.name();
    let mut read: Option<Cow<'_, [u8]>> = None;
    let mut read_failure: Option<SquashfsError> = None;
    let mut compress = || -> io::Result<StoredBlock> {
        let block = match read.take() {
            Some(block) => block,
            None => pending.bytes(block_size).map_err(|e| {
                let message = e.to_string();
                read_failure = Some(e);
                io::Error::other(message)
            })?,
        };
        let compressed = encoder.compress(&block, BlockKind::Data)?;
        let stored = if compressed.len() < block.len() {
            StoredBlock::Compressed(compressed)
        } else {
            StoredBlock::Raw
        };
        read = Some(block);
        Ok(stored)
    };
    let stored = cache.stored(tag, name, &mut compress).and_then(|stored| match stored {
        StoredBlock::Compressed(bytes) if bytes.is_empty() || bytes.len() >= name.len() => compress(),
        stored => Ok(stored),
    });
    let stored = match stored {
        Ok(stored) => stored,
        Err(e) => return Err(read_failure.unwrap_or(SquashfsError::Write(e))),
    };
    Ok(match stored {
        StoredBlock::Compressed(bytes) => WrittenBlock {
            size_word: bytes.len() as u32,
            bytes,
        },
        StoredBlock::Raw => {
            let bytes = match read {
                Some(bytes) => bytes,
                None => pending.bytes(block_size)?,
            };
            WrittenBlock {
                size_word: bytes.len() as u32 | DATA_UNCOMPRESSED,
                bytes: bytes.into_owned(),
            }
        }
    })
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
