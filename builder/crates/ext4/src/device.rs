//! Writing a built filesystem onto a device or into an existing file.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use uvmkit_disk::{ExtentData, SparseImage};

/// Writes `image`'s extents to `out` at their offsets and nothing else, so formatting a
/// block device writes only metadata. `out` must already be at least `image.size()` long
/// (a device, or a file sized beforehand); holes keep whatever `out` held.
pub fn write_extents<W: Write + Seek>(image: &SparseImage, out: &mut W) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    for extent in image.extents() {
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
