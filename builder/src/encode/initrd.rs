//! The initrd: the image's whole root tree as zstd-compressed cpio (the kernel's
//! "ramfs-rootfs-initramfs" format), every timestamp `SOURCE_DATE_EPOCH`.

use super::{io_error, EncodeError};
use crate::definition::ImageDefinition;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use uvmkit_filetree::FileTree;
use uvmkit_initrd::{Compression, InitrdOptions, InitrdStats};

/// Writes `tree` as the initrd of `def` to `path`.
pub fn write_initrd(
    tree: &FileTree,
    def: &ImageDefinition,
    epoch: u64,
    path: &Path,
) -> Result<InitrdStats, EncodeError> {
    let file = File::create(path).map_err(io_error("initrd"))?;
    let mut w = BufWriter::new(file);
    let compression = match def.initrd.compression_level {
        0 => Compression::None,
        level => Compression::zstd(level),
    };
    let options = InitrdOptions {
        mtime: epoch,
        compression,
        segments: vec![],
    };
    let stats = uvmkit_initrd::write_initrd(tree, &options, &mut w)?;
    w.flush().map_err(io_error("initrd"))?;
    Ok(stats)
}
