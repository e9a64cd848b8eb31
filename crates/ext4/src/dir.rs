//! Linear directories (kernel documentation, filesystems/ext4 "Directory Entries").
//!
//! Each block is a chain of `ext4_dir_entry_2` records (inode, rec_len, name_len, file_type,
//! name padded to 4 bytes); the last record of a block stretches to the block's end. With
//! `metadata_csum` every block ends in a 12-byte `ext4_dir_entry_tail`, a fake entry with
//! inode 0, rec_len 12 and file type 0xDE, carrying the block's crc32c.

use crate::checksum::crc32c;
use crate::layout::BLOCK_SIZE;
use crate::superblock::{put16, put32};

/// `ext4_dir_entry_2.file_type` for a regular file.
pub const FT_REG_FILE: u8 = 1;
/// ... for a directory.
pub const FT_DIR: u8 = 2;
/// ... for a character device.
pub const FT_CHRDEV: u8 = 3;
/// ... for a block device.
pub const FT_BLKDEV: u8 = 4;
/// ... for a named pipe.
pub const FT_FIFO: u8 = 5;
/// ... for a symbolic link.
pub const FT_SYMLINK: u8 = 7;

/// Bytes of the checksum tail at the end of each block.
const TAIL: usize = 12;
/// Bytes of a block available to entries.
const USABLE: usize = BLOCK_SIZE as usize - TAIL;

/// One name in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry<'a> {
    /// Inode the name refers to.
    pub inode: u32,
    /// The name, 1 to 255 bytes.
    pub name: &'a [u8],
    /// One of the `FT_*` values.
    pub file_type: u8,
}

/// The smallest record that holds a name of `name_len` bytes.
fn rec_len(name_len: usize) -> usize {
    (8 + name_len).div_ceil(4) * 4
}

/// Encodes `entries` (`.` and `..` first) into at least `min_blocks` directory blocks of
/// the directory with inode checksum seed `seed`.
pub fn encode(entries: &[DirEntry], min_blocks: usize, seed: u32) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    let mut block = vec![0u8; BLOCK_SIZE as usize];
    let mut used = 0; // bytes of `block` taken by complete records
    let mut last = None; // offset of the block's last record
    for e in entries {
        let len = rec_len(e.name.len());
        if used + len > USABLE {
            finish_block(&mut block, last, used, seed, &mut out);
            used = 0;
        }
        put32(&mut block, used, e.inode);
        put16(&mut block, used + 4, len as u16);
        block[used + 6] = e.name.len() as u8;
        block[used + 7] = e.file_type;
        block[used + 8..used + 8 + e.name.len()].copy_from_slice(e.name);
        last = Some(used);
        used += len;
    }
    finish_block(&mut block, last, used, seed, &mut out);
    while out.len() < min_blocks * BLOCK_SIZE as usize {
        // An empty block: one unused record (inode 0) spanning it.
        finish_block(&mut block, None, 0, seed, &mut out);
    }
    out
}

/// Stretches the last record (or writes an empty one), adds the tail, appends the block to
/// `out` and clears it for the next.
fn finish_block(block: &mut [u8], last: Option<usize>, used: usize, seed: u32, out: &mut Vec<u8>) {
    match last {
        Some(at) if used > 0 => put16(block, at + 4, (USABLE - at) as u16),
        _ => put16(block, 4, USABLE as u16),
    }
    // ext4_dir_entry_tail: det_reserved_zero1, det_rec_len, det_reserved_zero2,
    // det_reserved_ft, det_checksum over the entries before it.
    put16(block, USABLE + 4, TAIL as u16);
    block[USABLE + 7] = 0xDE;
    let sum = crc32c(seed, &block[..USABLE]);
    put32(block, USABLE + 8, sum);
    out.extend_from_slice(block);
    block.fill(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
    }

    #[test]
    fn records_are_padded_and_the_last_one_fills_the_block() {
        let entries = [
            DirEntry {
                inode: 2,
                name: b".",
                file_type: FT_DIR,
            },
            DirEntry {
                inode: 2,
                name: b"..",
                file_type: FT_DIR,
            },
            DirEntry {
                inode: 11,
                name: b"lost+found",
                file_type: FT_DIR,
            },
        ];
        let b = encode(&entries, 1, 7);
        assert_eq!(b.len(), 4096);
        assert_eq!(b[0..10], [2, 0, 0, 0, 12, 0, 1, 2, b'.', 0]);
        assert_eq!(b[12..22], [2, 0, 0, 0, 12, 0, 2, 2, b'.', b'.']);
        assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()), 11);
        assert_eq!(u16_at(&b, 28), 4084 - 24);
        assert_eq!(&b[32..42], b"lost+found");
        assert_eq!(b[4084..4092], [0, 0, 0, 0, 12, 0, 0, 0xDE]);
        assert_eq!(b[4092..], crc32c(7, &b[..4084]).to_le_bytes());
    }

    #[test]
    fn big_directories_span_blocks_and_empty_blocks_are_one_hole_record() {
        let names: Vec<String> = (0..1000).map(|i| format!("file-{i:05}")).collect();
        let entries: Vec<DirEntry> = names
            .iter()
            .map(|n| DirEntry {
                inode: 12,
                name: n.as_bytes(),
                file_type: FT_REG_FILE,
            })
            .collect();
        // 20-byte records, 204 per block.
        let b = encode(&entries, 1, 0);
        assert_eq!(b.len(), 5 * 4096);
        assert_eq!(u16_at(&b, 203 * 20 + 4), (4084 - 203 * 20) as u16);
        assert_eq!(&b[4096 + 8..4096 + 18], b"file-00204");
        let padded = encode(&entries[..1], 4, 0);
        assert_eq!(padded.len(), 4 * 4096);
        assert_eq!(padded[3 * 4096..3 * 4096 + 8], [0, 0, 0, 0, 0xF4, 0x0F, 0, 0]);
    }
}
