//! The block compressors: zstd (`ZSTD_COMPRESSION`) and xz (`XZ_COMPRESSION`).
//!
//! Every data block and every metadata block is compressed on its own (the kernel decompresses
//! one block at a time). For xz each block is one complete `.xz` stream, as the kernel's
//! `fs/squashfs/xz_wrapper.c` hands it to `xz_dec_run` (lib/xz): LZMA2 with a CRC32 integrity
//! check (xz_dec accepts CRC32 and none; CRC64 and SHA-256 only when built with
//! `XZ_DEC_ANY_CHECK`, which skips them unchecked), optionally behind the x86 BCJ filter, which
//! the kernel decodes only when built with `CONFIG_XZ_DEC_X86` (Debian's kernels are).

use std::io;

/// Compressor id of xz (`XZ_COMPRESSION` in the kernel's `squashfs_fs.h`).
pub const XZ_COMPRESSION: u16 = 4;
/// Compressor id of zstd (`ZSTD_COMPRESSION`).
pub const ZSTD_COMPRESSION: u16 = 6;
/// Bit 0 of the xz options' `flags`: the x86 BCJ filter may be in use (squashfs-tools numbers
/// the filters x86, powerpc, ia64, arm, armthumb, sparc; the kernel ignores the flags, as the
/// filter chain is in each stream's header).
const XZ_FLAG_X86: u32 = 1;

/// How blocks are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd at a level from 1 to 22.
    Zstd {
        /// The zstd level.
        level: i32,
    },
    /// xz: LZMA2 at a preset with the dictionary as large as the block size.
    Xz {
        /// The LZMA2 preset, 0–9.
        preset: u32,
        /// Also try every data block behind the x86 BCJ filter and keep the smaller result
        /// (as `mksquashfs -Xbcj x86`); metadata blocks never use it.
        x86_bcj: bool,
    },
}

impl Compression {
    /// zstd level 15, the default.
    pub const ZSTD_DEFAULT: Compression = Compression::Zstd { level: 15 };
    /// xz preset 9 with the x86 BCJ filter tried on every data block.
    pub const XZ_DEFAULT: Compression = Compression::Xz {
        preset: 9,
        x86_bcj: true,
    };

    /// The superblock's compressor id.
    pub fn id(self) -> u16 {
        match self {
            Compression::Zstd { .. } => ZSTD_COMPRESSION,
            Compression::Xz { .. } => XZ_COMPRESSION,
        }
    }

    /// A name for everything that changes the compressed bytes of a block of `block_size`,
    /// e.g. `xz-9-x86-b1048576`: part of a [`crate::BlockCache`] key.
    pub fn tag(self, block_size: u32) -> String {
        match self {
            Compression::Zstd { level } => format!("zstd-{level}-b{block_size}"),
            Compression::Xz { preset, x86_bcj } => {
                let bcj = if x86_bcj { "-x86" } else { "" };
                format!("xz-{preset}{bcj}-b{block_size}")
            }
        }
    }

    /// The compression options written after the superblock (flag `COMP_OPT`), or none.
    ///
    /// xz: `struct disk_comp_opts { __le32 dictionary_size; __le32 flags; }` of the kernel's
    /// `xz_wrapper.c`, which requires the dictionary size to be 2^n or 2^n + 2^(n-1) and
    /// preallocates a dictionary that large; ours is the block size (a power of two).
    pub fn options(self, block_size: u32) -> Option<Vec<u8>> {
        match self {
            Compression::Zstd { .. } => None,
            Compression::Xz { x86_bcj, .. } => {
                let mut b = Vec::with_capacity(8);
                b.extend_from_slice(&block_size.to_le_bytes());
                let flags = if x86_bcj { XZ_FLAG_X86 } else { 0 };
                b.extend_from_slice(&flags.to_le_bytes());
                Some(b)
            }
        }
    }

    /// Checks the settings.
    pub(crate) fn check(self) -> Result<(), String> {
        match self {
            Compression::Zstd { level } if !(1..=22).contains(&level) => {
                Err(format!("zstd level {level} is not from 1 to 22"))
            }
            Compression::Xz { preset, .. } if preset > 9 => Err(format!("xz preset {preset} is not from 0 to 9")),
            _ => Ok(()),
        }
    }
}

/// Which kind of block is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockKind {
    /// A file's data block: xz may try the BCJ filter.
    Data,
    /// An 8 KiB metadata block: never BCJ.
    Metadata,
}

/// A compressor for one image's blocks.
pub(crate) enum Encoder {
    Zstd(Box<zstd::bulk::Compressor<'static>>),
    Xz {
        preset: u32,
        x86_bcj: bool,
        block_size: u32,
    },
}

impl Encoder {
    pub(crate) fn new(compression: Compression, block_size: u32) -> io::Result<Self> {
        Ok(match compression {
            Compression::Zstd { level } => Encoder::Zstd(Box::new(zstd::bulk::Compressor::new(level)?)),
            Compression::Xz { preset, x86_bcj } => Encoder::Xz {
                preset,
                x86_bcj,
                block_size,
            },
        })
    }

    /// `block` compressed; the caller stores it raw when this is not smaller.
    pub(crate) fn compress(&mut self, block: &[u8], kind: BlockKind) -> io::Result<Vec<u8>> {
        match self {
            Encoder::Zstd(c) => c.compress(block),
            Encoder::Xz {
                preset,
                x86_bcj,
                block_size,
            } => {
                let plain = xz_stream(block, *preset, false, *block_size)?;
                if *x86_bcj && kind == BlockKind::Data {
                    let filtered = xz_stream(block, *preset, true, *block_size)?;
                    // The smaller one; on a tie the one without the filter.
                    if filtered.len() < plain.len() {
                        return Ok(filtered);
                    }
                }
                Ok(plain)
            }
        }
    }
}

/// One `.xz` stream holding `block`: [x86 BCJ,] LZMA2 at `preset`, CRC32.
///
/// The dictionary is the smallest power of two that holds the block (at least 4 KiB, the
/// LZMA2 minimum), at most `block_size`: the stream header records it, and the kernel's
/// preallocated decoder accepts any dictionary up to the one in the options block; a smaller
/// one only makes the encoder's set-up cheaper for small files.
fn xz_stream(block: &[u8], preset: u32, x86_bcj: bool, block_size: u32) -> io::Result<Vec<u8>> {
    use liblzma::stream::{Action, Check, Filters, LzmaOptions, Status, Stream};
    let lzma_error = |e: liblzma::stream::Error| io::Error::other(format!("xz: {e}"));
    let dict = (block.len() as u32)
        .next_power_of_two()
        .clamp(4096, block_size.max(4096));
    let mut lzma = LzmaOptions::new_preset(preset).map_err(lzma_error)?;
    lzma.dict_size(dict);
    let mut filters = Filters::new();
    if x86_bcj {
        filters.x86();
    }
    filters.lzma2(&lzma);
    let mut stream = Stream::new_stream_encoder(&filters, Check::Crc32).map_err(lzma_error)?;
    // LZMA2 never grows data by more than a few bytes per 64 KiB chunk, plus the headers.
    let mut out = Vec::with_capacity(block.len() + block.len() / 1024 + 128);
    let mut input = block;
    loop {
        let before = stream.total_in();
        let status = stream
            .process_vec(input, &mut out, Action::Finish)
            .map_err(lzma_error)?;
        input = &input[(stream.total_in() - before) as usize..];
        match status {
            Status::StreamEnd => return Ok(out),
            _ => out.reserve(out.capacity().max(4096)),
        }
    }
}
