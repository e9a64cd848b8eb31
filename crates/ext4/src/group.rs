//! Group descriptors and the two bitmaps of each group (kernel documentation,
//! filesystems/ext4 "Block Group Descriptors" and "Block and inode Bitmaps").
//!
//! Allocation in this writer is sequential, so in every group the used data blocks and the
//! used inodes are each one run from the start; a group is fully described by two counts.

use crate::checksum::crc32c;
use crate::layout::{Geometry, BLOCK_SIZE, DESC_SIZE};
use crate::superblock::{put16, put32};

/// `bg_flags`: the inode bitmap and table are uninitialised (no inode in use).
pub const BG_INODE_UNINIT: u16 = 0x0001;
/// `bg_flags`: the block bitmap is uninitialised (only the group's own metadata in use).
pub const BG_BLOCK_UNINIT: u16 = 0x0002;
/// `bg_flags`: the inode table is known to be zeroed.
pub const BG_INODE_ZEROED: u16 = 0x0004;

/// What is in use in one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupUsage {
    /// Data blocks in use, counted from the group's first data block.
    pub data_blocks: u32,
    /// Inodes in use, counted from the group's first inode.
    pub inodes: u32,
    /// Directories among them.
    pub directories: u32,
}

/// One group's bitmaps and descriptor, as written.
pub struct Group {
    /// The block bitmap block, or `None` when the group is `BLOCK_UNINIT`.
    pub block_bitmap: Option<Vec<u8>>,
    /// The inode bitmap block, or `None` when the group is `INODE_UNINIT`.
    pub inode_bitmap: Option<Vec<u8>>,
    /// The 32-byte descriptor for the descriptor table.
    pub descriptor: [u8; DESC_SIZE as usize],
    /// `bg_free_blocks_count`.
    pub free_blocks: u32,
    /// `bg_free_inodes_count`.
    pub free_inodes: u32,
}

/// Builds group `g`'s bitmaps and descriptor. `fs_seed` is the metadata checksum seed;
/// `zeroed` says the inode table reads as zeros where nothing was written.
pub fn build_group(geo: &Geometry, g: u32, usage: &GroupUsage, fs_seed: u32, zeroed: bool) -> Group {
    let last = g == geo.groups - 1;
    let blocks = geo.group_blocks(g);
    let used_blocks = geo.overhead(g) + usage.data_blocks;

    // Block bitmap: the group's metadata and data prefix, then padding bits past a short
    // last group's end, which must read as in use.
    let mut block_bitmap = vec![0u8; BLOCK_SIZE as usize];
    set_bits(&mut block_bitmap, 0, used_blocks);
    set_bits(&mut block_bitmap, blocks, BLOCK_SIZE as u32 * 8);
    // Inode bitmap: only inodes_per_group bits are meaningful; the rest of the block is set.
    let mut inode_bitmap = vec![0u8; BLOCK_SIZE as usize];
    set_bits(&mut inode_bitmap, 0, usage.inodes);
    set_bits(&mut inode_bitmap, geo.inodes_per_group, BLOCK_SIZE as u32 * 8);

    // Checksums ("Checksums" section): crc32c(fs seed, bitmap), low 16 bits in a 32-byte
    // descriptor. The block bitmap is summed whole, the inode bitmap over inodes_per_group bits.
    let block_csum = crc32c(fs_seed, &block_bitmap);
    let inode_csum = crc32c(fs_seed, &inode_bitmap[..(geo.inodes_per_group / 8) as usize]);

    let mut flags = 0;
    if usage.inodes == 0 {
        flags |= BG_INODE_UNINIT;
    }
    // mke2fs never leaves the last group's bitmap uninitialised: its padding must be on disk.
    if usage.data_blocks == 0 && !last {
        flags |= BG_BLOCK_UNINIT;
    }
    if zeroed {
        flags |= BG_INODE_ZEROED;
    }
    let free_blocks = blocks - used_blocks;
    let free_inodes = geo.inodes_per_group - usage.inodes;

    let mut d = [0u8; DESC_SIZE as usize];
    put32(&mut d, 0x00, geo.block_bitmap(g)); // bg_block_bitmap_lo
    put32(&mut d, 0x04, geo.inode_bitmap(g)); // bg_inode_bitmap_lo
    put32(&mut d, 0x08, geo.inode_table(g)); // bg_inode_table_lo
    put16(&mut d, 0x0C, free_blocks as u16); // bg_free_blocks_count_lo
    put16(&mut d, 0x0E, free_inodes as u16); // bg_free_inodes_count_lo
    put16(&mut d, 0x10, usage.directories as u16); // bg_used_dirs_count_lo
    put16(&mut d, 0x12, flags); // bg_flags
    put16(&mut d, 0x18, block_csum as u16); // bg_block_bitmap_csum_lo
    put16(&mut d, 0x1A, inode_csum as u16); // bg_inode_bitmap_csum_lo
    put16(&mut d, 0x1C, free_inodes as u16); // bg_itable_unused_lo: all free inodes follow the used ones
                                             // bg_checksum: crc32c(fs seed, group number, descriptor with the checksum zeroed) & 0xFFFF.
    let sum = crc32c(crc32c(fs_seed, &g.to_le_bytes()), &d) as u16;
    put16(&mut d, 0x1E, sum);

    Group {
        block_bitmap: (flags & BG_BLOCK_UNINIT == 0).then_some(block_bitmap),
        inode_bitmap: (flags & BG_INODE_UNINIT == 0).then_some(inode_bitmap),
        descriptor: d,
        free_blocks,
        free_inodes,
    }
}

/// Sets bits `[from, to)` of a little-endian bitmap.
fn set_bits(bitmap: &mut [u8], from: u32, to: u32) {
    for bit in from..to {
        bitmap[(bit / 8) as usize] |= 1 << (bit % 8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_and_bitmaps_describe_the_usage() {
        let geo = Geometry::new(1 << 30, 16384).unwrap();
        let usage = GroupUsage {
            data_blocks: 10,
            inodes: 13,
            directories: 2,
        };
        let g = build_group(&geo, 0, &usage, 0x1234_5678, false);
        let d = &g.descriptor;
        let u16_at = |o: usize| u16::from_le_bytes(d[o..o + 2].try_into().unwrap());
        assert_eq!(u32::from_le_bytes(d[0..4].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(d[8..12].try_into().unwrap()), 4);
        assert_eq!(u32::from(u16_at(0x0C)), 32768 - (4 + 512 + 10));
        assert_eq!(u32::from(u16_at(0x0E)), 8192 - 13);
        assert_eq!(u16_at(0x10), 2);
        assert_eq!(u16_at(0x12), 0);
        assert_eq!(u16_at(0x1C), 8192 - 13);
        let mut zeroed = *d;
        zeroed[0x1E..0x20].fill(0);
        assert_eq!(
            u16_at(0x1E),
            crc32c(crc32c(0x1234_5678, &0u32.to_le_bytes()), &zeroed) as u16
        );
        let bb = g.block_bitmap.unwrap();
        assert_eq!(bb[0..65], [0xFF; 65]); // 526 used bits = 65 bytes and 6 bits
        assert_eq!(bb[65], 0b0011_1111);
        assert_eq!(bb[66], 0);
        let ib = g.inode_bitmap.unwrap();
        assert_eq!((ib[0], ib[1], ib[2]), (0xFF, 0b0001_1111, 0));
        assert_eq!(ib[1024], 0xFF, "bits past inodes_per_group are padding");

        let idle = build_group(&geo, 3, &GroupUsage::default(), 0, true);
        assert!(idle.block_bitmap.is_none() && idle.inode_bitmap.is_none());
        assert_eq!(u16::from_le_bytes(idle.descriptor[0x12..0x14].try_into().unwrap()), 0x7);
    }
}
