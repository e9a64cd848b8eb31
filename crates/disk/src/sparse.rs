//! The sparse extent map behind every disk image.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// Where an extent's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtentData {
    /// Bytes in memory.
    Bytes(Arc<Vec<u8>>),
    /// `len` bytes of a host file starting at `offset`.
    HostFile {
        /// The host file.
        path: PathBuf,
        /// Where in it the extent's bytes start.
        offset: u64,
        /// How many bytes the extent takes from it.
        len: u64,
    },
}

impl ExtentData {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            ExtentData::Bytes(b) => b.len() as u64,
            ExtentData::HostFile { len, .. } => *len,
        }
    }

    /// True when the extent holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sub-range `[start, start + len)` of this extent.
    fn slice(&self, start: u64, len: u64) -> ExtentData {
        match self {
            ExtentData::Bytes(b) => ExtentData::Bytes(Arc::new(b[start as usize..(start + len) as usize].to_vec())),
            ExtentData::HostFile { path, offset, .. } => ExtentData::HostFile {
                path: path.clone(),
                offset: offset + start,
                len,
            },
        }
    }
}

/// One allocated range of a [`SparseImage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset in the image.
    pub offset: u64,
    /// The bytes stored there.
    pub data: ExtentData,
}

impl Extent {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.data.len()
    }
}

/// Errors from building a sparse image.
#[derive(Debug)]
pub enum SparseError {
    /// An extent would reach past the image's virtual size.
    OutOfBounds {
        /// Where the extent starts.
        offset: u64,
        /// Its length in bytes.
        len: u64,
        /// The image's virtual size.
        size: u64,
    },
    /// An extent would overlap one already placed.
    Overlap {
        /// Where the new extent starts.
        offset: u64,
        /// Its length in bytes.
        len: u64,
        /// Where the extent it overlaps starts.
        existing_offset: u64,
    },
}

impl fmt::Display for SparseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SparseError::OutOfBounds { offset, len, size } => write!(
                f,
                "{len} bytes at offset {offset} do not fit in a disk of {size} bytes; make the disk larger"
            ),
            SparseError::Overlap {
                offset,
                len,
                existing_offset,
            } => write!(
                f,
                "{len} bytes at offset {offset} overlap data already placed at offset {existing_offset}"
            ),
        }
    }
}

impl std::error::Error for SparseError {}

/// A disk or partition image of `size` bytes: sorted, non-overlapping data extents; holes
/// read as zeros.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SparseImage {
    size: u64,
    extents: BTreeMap<u64, ExtentData>,
}

impl SparseImage {
    /// An all-zero image of `size` bytes.
    pub fn new(size: u64) -> Self {
        SparseImage {
            size,
            extents: BTreeMap::new(),
        }
    }

    /// The virtual size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Places `data` at `offset`. Empty data is ignored.
    pub fn put(&mut self, offset: u64, data: ExtentData) -> Result<(), SparseError> {
        let len = data.len();
        if len == 0 {
            return Ok(());
        }
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(SparseError::OutOfBounds {
                offset,
                len,
                size: self.size,
            });
        }
        if let Some((&prev_off, prev)) = self.extents.range(..=offset).next_back() {
            if prev_off + prev.len() > offset {
                return Err(SparseError::Overlap {
                    offset,
                    len,
                    existing_offset: prev_off,
                });
            }
        }
        if let Some((&next_off, _)) = self.extents.range(offset..).next() {
            if next_off < offset + len {
                return Err(SparseError::Overlap {
                    offset,
                    len,
                    existing_offset: next_off,
                });
            }
        }
        self.extents.insert(offset, data);
        Ok(())
    }

    /// Places in-memory bytes at `offset`.
    pub fn put_bytes(&mut self, offset: u64, bytes: Vec<u8>) -> Result<(), SparseError> {
        self.put(offset, ExtentData::Bytes(Arc::new(bytes)))
    }

    /// Places `len` bytes of the host file `path`, from `file_offset`, at `offset`.
    pub fn put_file(
        &mut self,
        offset: u64,
        path: impl Into<PathBuf>,
        file_offset: u64,
        len: u64,
    ) -> Result<(), SparseError> {
        self.put(
            offset,
            ExtentData::HostFile {
                path: path.into(),
                offset: file_offset,
                len,
            },
        )
    }

    /// Places every extent of `inner` (a partition, say) at `offset` in this image.
    pub fn put_image(&mut self, offset: u64, inner: &SparseImage) -> Result<(), SparseError> {
        if offset.checked_add(inner.size).is_none_or(|end| end > self.size) {
            return Err(SparseError::OutOfBounds {
                offset,
                len: inner.size,
                size: self.size,
            });
        }
        for extent in inner.extents() {
            self.put(offset + extent.offset, extent.data)?;
        }
        Ok(())
    }

    /// The extents in offset order.
    pub fn extents(&self) -> impl Iterator<Item = Extent> + '_ {
        self.extents.iter().map(|(&offset, data)| Extent {
            offset,
            data: data.clone(),
        })
    }

    /// Bytes held in extents (an upper bound on what a sparse format stores).
    pub fn allocated_bytes(&self) -> u64 {
        self.extents.values().map(ExtentData::len).sum()
    }

    /// The extents clipped to `[start, start + len)`, offsets relative to the image.
    pub fn extents_in(&self, start: u64, len: u64) -> Vec<Extent> {
        let end = start + len;
        let mut out = Vec::new();
        let first = self
            .extents
            .range(..=start)
            .next_back()
            .map(|(&o, _)| o)
            .unwrap_or(start);
        for (&off, data) in self.extents.range(first..end) {
            let ext_end = off + data.len();
            if ext_end <= start {
                continue;
            }
            let from = off.max(start);
            let to = ext_end.min(end);
            out.push(Extent {
                offset: from,
                data: data.slice(from - off, to - from),
            });
        }
        out
    }

    /// Indices of the `block_size`-byte blocks that hold any extent, ascending. A block whose
    /// extents happen to contain only zeros is still listed; writers that want to skip such
    /// blocks check the bytes they read.
    pub fn allocated_blocks(&self, block_size: u64) -> Vec<u64> {
        assert!(block_size > 0);
        let mut blocks: Vec<u64> = Vec::new();
        for (&off, data) in &self.extents {
            let first = off / block_size;
            let last = (off + data.len() - 1) / block_size;
            let from = match blocks.last() {
                Some(&b) if b >= first => b + 1,
                _ => first,
            };
            blocks.extend(from..=last);
        }
        blocks
    }

    /// Writes the extents to `out` at their offsets and nothing else, streaming host files
    /// through a 1 MiB buffer: formatting a device writes only metadata, and holes keep
    /// whatever `out` held. `out` must already be at least [`SparseImage::size`] long (a
    /// device, or a file sized beforehand).
    pub fn write_extents<W: Write + Seek>(&self, out: &mut W) -> io::Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        for extent in self.extents() {
            out.seek(SeekFrom::Start(extent.offset))?;
            match &extent.data {
                ExtentData::Bytes(bytes) => out.write_all(bytes)?,
                ExtentData::HostFile { path, offset, len } => {
                    let mut src = File::open(path)
                        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))?;
                    src.seek(SeekFrom::Start(*offset))?;
                    let mut left = *len;
                    while left > 0 {
                        let n = left.min(buf.len() as u64) as usize;
                        src.read_exact(&mut buf[..n])
                            .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))?;
                        out.write_all(&buf[..n])?;
                        left -= n as u64;
                    }
                }
            }
        }
        out.flush()
    }

    /// Fills `buf` with the image's bytes at `offset` (zeros in holes). Reading past the
    /// virtual size is an error.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = buf.len() as u64;
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {len} bytes at {offset} is past the end of a {}-byte image",
                    self.size
                ),
            ));
        }
        buf.fill(0);
        let mut open: Option<(PathBuf, File)> = None;
        for extent in self.extents_in(offset, len) {
            let dst = &mut buf[(extent.offset - offset) as usize..(extent.end() - offset) as usize];
            match &extent.data {
                ExtentData::Bytes(b) => dst.copy_from_slice(b),
                ExtentData::HostFile {
                    path, offset: file_off, ..
                } => {
                    if open.as_ref().map(|(p, _)| p != path).unwrap_or(true) {
                        let f = File::open(path)
                            .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))?;
                        open = Some((path.clone(), f));
                    }
                    let file = &open.as_ref().unwrap().1;
                    read_exact_at(file, dst, *file_off)
                        .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))?;
                }
            }
        }
        Ok(())
    }
}

/// Fills `buf` from `file` at `offset`, on every host: `pread(2)` on Unix; on Windows
/// `seek_read` (which also moves the file's cursor, harmless here: every read names its
/// offset), repeated until the buffer is full because it may return fewer bytes.
pub fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            match std::os::windows::fs::FileExt::seek_read(file, &mut buf[done..], offset + done as u64) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file ended early")),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_extents_and_leaves_holes_alone() {
        let dir = std::env::temp_dir().join(format!("uvmkit-disk-write-extents-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let host = dir.join("host");
        std::fs::write(&host, b"0123456789").unwrap();
        let mut img = SparseImage::new(16);
        img.put_bytes(1, vec![0xaa; 2]).unwrap();
        img.put_file(8, &host, 3, 4).unwrap();
        let mut device = io::Cursor::new(vec![0xeeu8; 16]);
        img.write_extents(&mut device).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let mut expected = vec![0xeeu8; 16];
        expected[1..3].copy_from_slice(&[0xaa; 2]);
        expected[8..12].copy_from_slice(b"3456");
        assert_eq!(device.into_inner(), expected);
    }

    #[test]
    fn reads_extents_and_zero_holes() {
        let mut img = SparseImage::new(64);
        img.put_bytes(4, vec![1, 2, 3, 4]).unwrap();
        img.put_bytes(10, vec![9; 6]).unwrap();
        let mut buf = [0xffu8; 16];
        img.read_at(2, &mut buf).unwrap();
        assert_eq!(buf, [0, 0, 1, 2, 3, 4, 0, 0, 9, 9, 9, 9, 9, 9, 0, 0]);
        assert!(img.read_at(60, &mut [0u8; 8]).is_err());
    }

    #[test]
    fn refuses_overlap_and_overflow() {
        let mut img = SparseImage::new(32);
        img.put_bytes(8, vec![0; 8]).unwrap();
        assert!(matches!(
            img.put_bytes(12, vec![0; 8]),
            Err(SparseError::Overlap { .. })
        ));
        assert!(matches!(img.put_bytes(4, vec![0; 5]), Err(SparseError::Overlap { .. })));
        assert!(matches!(
            img.put_bytes(30, vec![0; 5]),
            Err(SparseError::OutOfBounds { .. })
        ));
        img.put_bytes(16, vec![1; 4]).unwrap();
    }

    #[test]
    fn allocated_blocks_are_deduplicated() {
        let mut img = SparseImage::new(1 << 20);
        img.put_bytes(0, vec![1; 10]).unwrap();
        img.put_bytes(100, vec![1; 10]).unwrap();
        img.put_bytes(4090, vec![1; 10]).unwrap();
        img.put_bytes(3 * 4096, vec![1; 1]).unwrap();
        assert_eq!(img.allocated_blocks(4096), vec![0, 1, 3]);
    }

    #[test]
    fn nested_images_and_host_files() {
        let dir = std::env::temp_dir().join(format!("uvmkit-sparse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("blob");
        std::fs::write(&f, b"abcdefgh").unwrap();
        let mut part = SparseImage::new(16);
        part.put_file(2, &f, 3, 4).unwrap();
        let mut disk = SparseImage::new(64);
        disk.put_image(32, &part).unwrap();
        let mut buf = [0u8; 8];
        disk.read_at(32, &mut buf).unwrap();
        assert_eq!(&buf, b"\0\0defg\0\0");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
