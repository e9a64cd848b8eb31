//! Raw disk images: the virtual disk byte for byte, as a sparse file.
//!
//! The file is sized with `set_len` (a hole of the full virtual size) and only pages holding
//! non-zero data are written, so a 64 GiB disk with 20 MB of data occupies about 20 MB.

use std::fs::File;
use std::path::Path;

use uvmkit_disk::SparseImage;

use crate::sink::{for_each_piece, SparseSink, PIECE};
use crate::{Error, Result, WriteStats};

const FORMAT: &str = "raw";

/// Writes `img` to `path` as a sparse raw image, replacing any file there.
///
/// `data_blocks` in the result counts the 4 KiB pages written; `file_size` is the virtual size.
pub fn write_raw(img: &SparseImage, path: &Path) -> Result<WriteStats> {
    let create_error = |source| Error::Create {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::create(path).map_err(create_error)?;
    file.set_len(img.size()).map_err(create_error)?;
    let mut sink = SparseSink::new_zeroed(&mut file, FORMAT)?;
    for_each_piece(img, PIECE, |offset, data| sink.write_nonzero_at(offset, data).map(drop))?;
    let data_blocks = sink.pages_written();
    sink.finish(img.size())?;
    Ok(WriteStats {
        virtual_size: img.size(),
        file_size: img.size(),
        data_blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn writes_data_and_leaves_holes() {
        let dir = std::env::temp_dir().join(format!("uvmkit-vdisk-raw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.raw");
        let mut img = SparseImage::new(64 << 20);
        img.put_bytes(0, vec![1; 512]).unwrap();
        img.put_bytes(1 << 20, vec![0; 1 << 20]).unwrap();
        img.put_bytes((64 << 20) - 3, vec![9, 8, 7]).unwrap();
        let stats = write_raw(&img, &path).unwrap();
        assert_eq!(
            stats,
            WriteStats {
                virtual_size: 64 << 20,
                file_size: 64 << 20,
                data_blocks: 2
            }
        );
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 64 << 20);
        // Two pages of data; file systems may allocate a little more, never the zero MiB.
        assert!(
            meta.blocks() * 512 < 256 * 1024,
            "{} bytes allocated",
            meta.blocks() * 512
        );
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes[..512].iter().all(|&b| b == 1));
        assert_eq!(&bytes[(64 << 20) - 3..], &[9, 8, 7]);
        assert!(bytes[512..(64 << 20) - 3].iter().all(|&b| b == 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
