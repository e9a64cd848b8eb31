//! Plumbing every writer shares: reading an image's data in bounded pieces, and writing only
//! the non-zero parts of what goes out.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::PathBuf;

use uvmkit_disk::{ExtentData, SparseImage};

use crate::{Error, Result};

/// The largest piece of data read or handed on at once.
pub(crate) const PIECE: u64 = 1 << 20;

/// Zero detection works on pages of this size, aligned to the output offset: a file system
/// can only leave whole pages unallocated anyway.
pub(crate) const PAGE: u64 = 4096;

/// True when every byte of `buf` is zero.
pub(crate) fn is_zero(buf: &[u8]) -> bool {
    // An OR-fold over fixed chunks vectorises; an early-exit `all` over bytes does not.
    buf.chunks(512).all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Calls `f(offset, bytes)` for the image's data in ascending offset order, in pieces of at
/// most [`PIECE`] bytes that never cross a multiple of `boundary` (a format's block size), so
/// a writer sees each of its blocks as a run of consecutive calls.
pub(crate) fn for_each_piece(
    img: &SparseImage,
    boundary: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    debug_assert!(boundary > 0);
    let mut buf: Vec<u8> = Vec::new();
    let mut open: Option<(PathBuf, File)> = None;
    for extent in img.extents() {
        let end = extent.end();
        let mut off = extent.offset;
        while off < end {
            let next_boundary = (off / boundary).saturating_add(1).saturating_mul(boundary);
            let piece_end = end.min(next_boundary).min(off + PIECE);
            let n = (piece_end - off) as usize;
            let rel = off - extent.offset;
            match &extent.data {
                ExtentData::Bytes(bytes) => f(off, &bytes[rel as usize..rel as usize + n])?,
                ExtentData::HostFile {
                    path,
                    offset: file_offset,
                    ..
                } => {
                    // Keep the last file open: consecutive pieces usually come from it.
                    let cached = match open.take() {
                        Some((p, file)) if p == *path => (p, file),
                        _ => (path.clone(), File::open(path).map_err(|e| read_error(off, path, e))?),
                    };
                    let file = &open.insert(cached).1;
                    if buf.len() < n {
                        buf.resize(PIECE as usize, 0);
                    }
                    uvmkit_disk::read_exact_at(file, &mut buf[..n], file_offset + rel)
                        .map_err(|e| read_error(off, path, e))?;
                    f(off, &buf[..n])?;
                }
            }
            off = piece_end;
        }
    }
    Ok(())
}

fn read_error(offset: u64, path: &std::path::Path, e: io::Error) -> Error {
    Error::Read {
        offset,
        source: io::Error::new(e.kind(), format!("{}: {e}", path.display())),
    }
}

/// A seekable output written at explicit offsets, which can skip all-zero pages so that they
/// become holes (on a file) or zero fill (on anything else). It relies on the output starting
/// empty: skipped pages must read back as zeros.
pub(crate) struct SparseSink<'a, W: Write + Seek> {
    out: &'a mut W,
    format: &'static str,
    /// The output's current position.
    pos: u64,
    /// One past the last byte written.
    end: u64,
    /// Pages that received data, and the last one counted (writes come in ascending order).
    pages: u64,
    last_page: Option<u64>,
}

impl<'a, W: Write + Seek> SparseSink<'a, W> {
    /// Wraps an output that must be empty.
    pub(crate) fn new_empty(out: &'a mut W, format: &'static str) -> Result<Self> {
        let len = out
            .seek(SeekFrom::End(0))
            .map_err(|source| Error::Write { format, source })?;
        if len != 0 {
            return Err(Error::OutputNotEmpty { format, len });
        }
        Ok(Self::at_start(out, format))
    }

    /// Wraps an output whose unwritten parts already read as zeros (a fresh sparse file).
    pub(crate) fn new_zeroed(out: &'a mut W, format: &'static str) -> Result<Self> {
        out.seek(SeekFrom::Start(0))
            .map_err(|source| Error::Write { format, source })?;
        Ok(Self::at_start(out, format))
    }

    /// A sink that has written nothing yet.
    fn at_start(out: &'a mut W, format: &'static str) -> Self {
        SparseSink {
            out,
            format,
            pos: 0,
            end: 0,
            pages: 0,
            last_page: None,
        }
    }

    fn io(&self, source: io::Error) -> Error {
        Error::Write {
            format: self.format,
            source,
        }
    }

    /// Writes all of `data` at `offset`.
    pub(crate) fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if offset != self.pos {
            self.out.seek(SeekFrom::Start(offset)).map_err(|e| self.io(e))?;
        }
        self.out.write_all(data).map_err(|e| self.io(e))?;
        self.pos = offset + data.len() as u64;
        self.end = self.end.max(self.pos);
        Ok(())
    }

    /// Writes the pages of `data` that hold a non-zero byte at `offset`, skipping the others.
    /// Returns whether anything was written.
    pub(crate) fn write_nonzero_at(&mut self, offset: u64, data: &[u8]) -> Result<bool> {
        let mut any = false;
        let mut run: Option<usize> = None;
        let mut i = 0usize;
        while i < data.len() {
            let abs = offset + i as u64;
            let piece_end = data.len().min(i + (PAGE - abs % PAGE) as usize);
            if is_zero(&data[i..piece_end]) {
                if let Some(start) = run.take() {
                    self.write_at(offset + start as u64, &data[start..i])?;
                }
            } else {
                run.get_or_insert(i);
                any = true;
                let page = abs / PAGE;
                if self.last_page.is_none_or(|last| page > last) {
                    self.pages += 1;
                    self.last_page = Some(page);
                }
            }
            i = piece_end;
        }
        if let Some(start) = run {
            self.write_at(offset + start as u64, &data[start..])?;
        }
        Ok(any)
    }

    /// Pages that received data so far.
    pub(crate) fn pages_written(&self) -> u64 {
        self.pages
    }

    /// Makes the output at least `len` bytes long (a skipped zero tail still counts) and
    /// flushes it.
    pub(crate) fn finish(mut self, len: u64) -> Result<()> {
        if self.end < len {
            self.write_at(len - 1, &[0])?;
        }
        self.out.flush().map_err(|e| self.io(e))
    }
}

/// Places an image's fixed-size blocks (VHDX payload blocks, VMDK grains) into an output.
///
/// Packed placement gives each block that holds a non-zero byte the next free slot after
/// `first_slot`, in ascending block order, and gives all-zero blocks none; identity placement
/// (a fixed VHDX) puts block `n` at `first_slot + n * block_size` whatever it holds. Feed it the
/// pieces of [`for_each_piece`] with `boundary` = `block_size`.
pub(crate) struct BlockPlacer {
    block_size: u64,
    first_slot: u64,
    packed: bool,
    /// The block being written: its index, its slot, and whether any byte went out.
    current: Option<(u64, u64, bool)>,
    next_slot: u64,
    placed: Vec<(u64, u64)>,
}

impl BlockPlacer {
    /// Packs non-zero blocks into consecutive slots starting at `first_slot`.
    pub(crate) fn packed(block_size: u64, first_slot: u64) -> Self {
        BlockPlacer::new(block_size, first_slot, true)
    }

    /// Puts every block at `first_slot + index * block_size`.
    pub(crate) fn identity(block_size: u64, first_slot: u64) -> Self {
        BlockPlacer::new(block_size, first_slot, false)
    }

    fn new(block_size: u64, first_slot: u64, packed: bool) -> Self {
        BlockPlacer {
            block_size,
            first_slot,
            packed,
            current: None,
            next_slot: first_slot,
            placed: Vec::new(),
        }
    }

    /// Writes the non-zero pages of `data`, found at image offset `offset`, into the slot of
    /// their block.
    pub(crate) fn put<W: Write + Seek>(
        &mut self,
        sink: &mut SparseSink<'_, W>,
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        let block = offset / self.block_size;
        let (slot, written) = match self.current {
            Some((index, slot, written)) if index == block => (slot, written),
            _ => {
                self.close();
                let slot = if self.packed {
                    self.next_slot
                } else {
                    self.first_slot + block * self.block_size
                };
                (slot, false)
            }
        };
        let wrote = sink.write_nonzero_at(slot + offset % self.block_size, data)?;
        self.current = Some((block, slot, written || wrote));
        Ok(())
    }

    fn close(&mut self) {
        if let Some((index, slot, true)) = self.current.take() {
            self.placed.push((index, slot));
            if self.packed {
                self.next_slot += self.block_size;
            }
        }
    }

    /// The blocks that received data, as (block index, slot offset) in ascending order, and
    /// the end of the last packed slot.
    pub(crate) fn finish(mut self) -> (Vec<(u64, u64)>, u64) {
        self.close();
        (self.placed, self.next_slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 5000]));
        let mut buf = vec![0u8; 5000];
        buf[4999] = 1;
        assert!(!is_zero(&buf));
        assert!(is_zero(&[]));
    }

    #[test]
    fn sink_skips_zero_pages_and_extends_to_length() {
        let mut out = Cursor::new(Vec::new());
        let mut sink = SparseSink::new_empty(&mut out, "test").unwrap();
        let mut data = vec![0u8; 3 * PAGE as usize];
        data[10] = 1;
        data[2 * PAGE as usize + 5] = 2;
        assert!(sink.write_nonzero_at(100, &data).unwrap());
        assert!(!sink.write_nonzero_at(5 * PAGE, &[0u8; 4096]).unwrap());
        assert_eq!(sink.pages_written(), 2);
        sink.finish(10 * PAGE).unwrap();
        let bytes = out.into_inner();
        assert_eq!(bytes.len() as u64, 10 * PAGE);
        assert_eq!(bytes[110], 1);
        assert_eq!(bytes[100 + 2 * PAGE as usize + 5], 2);
        assert_eq!(bytes.iter().filter(|&&b| b != 0).count(), 2);
    }

    #[test]
    fn sink_refuses_a_non_empty_output() {
        let mut out = Cursor::new(vec![1u8; 10]);
        assert!(matches!(
            SparseSink::new_empty(&mut out, "test"),
            Err(Error::OutputNotEmpty { len: 10, .. })
        ));
    }

    #[test]
    fn pieces_respect_boundaries() {
        let mut img = SparseImage::new(1 << 22);
        img.put_bytes(1000, vec![7; 10_000]).unwrap();
        let mut seen = Vec::new();
        for_each_piece(&img, 4096, |off, data| {
            seen.push((off, data.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(1000, 3096), (4096, 4096), (8192, 2808)]);
    }
}
