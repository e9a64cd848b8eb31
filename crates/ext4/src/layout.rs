//! Block groups: how many, how many inodes each, and where each group keeps its metadata.
//!
//! Kernel documentation, filesystems/ext4 "Blocks" and "Block Groups": with 4 KiB blocks a
//! group spans 32768 blocks (one block of bitmap). Without `flex_bg` every group starts with
//! its own metadata, in this order:
//!
//! ```text
//! [superblock + group descriptor table, only in backup groups] [block bitmap]
//! [inode bitmap] [inode table] [data blocks ...]
//! ```
//!
//! With `sparse_super`, the superblock and descriptor table are copied into groups 0, 1 and
//! the powers of 3, 5 and 7. No blocks are reserved for online resize (`resize_inode` is
//! off), so the descriptor table is exactly as long as the groups need.

use crate::Ext4Error;

/// Filesystem block size in bytes (`s_log_block_size` = 2).
pub const BLOCK_SIZE: u64 = 4096;
/// Blocks in a full group: one bitmap block's worth of bits.
pub const BLOCKS_PER_GROUP: u32 = 32768;
/// On-disk inode size (`s_inode_size`), room for the 32 extra bytes of `extra_isize`.
pub const INODE_SIZE: u32 = 256;
/// Size of one group descriptor without the `64bit` feature.
pub const DESC_SIZE: u32 = 32;
/// Inodes per inode-table block.
pub const INODES_PER_BLOCK: u32 = BLOCK_SIZE as u32 / INODE_SIZE;
/// mke2fs drops a last group smaller than its own metadata plus this many blocks.
const MIN_LAST_GROUP_DATA: u32 = 50;

/// The fixed shape of a filesystem: block and group counts and the per-group metadata sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// `s_blocks_count`: blocks the filesystem covers (it may end before the device does).
    pub blocks_count: u32,
    /// Number of block groups.
    pub groups: u32,
    /// `s_inodes_per_group`.
    pub inodes_per_group: u32,
    /// Blocks of one group's inode table.
    pub inode_table_blocks: u32,
    /// Blocks of the group descriptor table.
    pub gdt_blocks: u32,
}

impl Geometry {
    /// The geometry of a filesystem of `size_bytes` with one inode per `inode_ratio` bytes.
    pub fn new(size_bytes: u64, inode_ratio: u32) -> Result<Geometry, Ext4Error> {
        if inode_ratio < 1024 {
            return Err(Ext4Error::BadInodeRatio(inode_ratio));
        }
        let blocks = size_bytes / BLOCK_SIZE;
        if blocks > u64::from(u32::MAX) {
            return Err(Ext4Error::TooLarge { size_bytes });
        }
        let geo = Self::for_blocks(blocks as u32, size_bytes, inode_ratio)?;
        // A runt last group would hold little but its own bitmaps and inode table: drop it,
        // as mke2fs does, and let the filesystem end a little before the device.
        let last = geo.group_blocks(geo.groups - 1);
        if geo.groups > 1 && last < geo.overhead(geo.groups - 1) + MIN_LAST_GROUP_DATA {
            return Self::for_blocks(geo.blocks_count - last, size_bytes, inode_ratio);
        }
        if geo.blocks_count < geo.overhead(0) + MIN_LAST_GROUP_DATA {
            return Err(Ext4Error::TooSmall {
                size_bytes,
                minimum: u64::from(geo.overhead(0) + MIN_LAST_GROUP_DATA) * BLOCK_SIZE,
            });
        }
        Ok(geo)
    }

    fn for_blocks(blocks: u32, size_bytes: u64, inode_ratio: u32) -> Result<Geometry, Ext4Error> {
        if blocks < 64 {
            return Err(Ext4Error::TooSmall {
                size_bytes,
                minimum: 64 * BLOCK_SIZE,
            });
        }
        let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
        let wanted_inodes = (u64::from(blocks) * BLOCK_SIZE / u64::from(inode_ratio)).max(1);
        // Whole inode-table blocks, at least one, at most one bitmap block's worth of bits.
        let per_group = wanted_inodes.div_ceil(u64::from(groups));
        let inodes_per_group = (per_group.div_ceil(u64::from(INODES_PER_BLOCK)) * u64::from(INODES_PER_BLOCK))
            .clamp(u64::from(INODES_PER_BLOCK), u64::from(BLOCKS_PER_GROUP)) as u32;
        if u64::from(inodes_per_group) * u64::from(groups) > u64::from(u32::MAX) {
            return Err(Ext4Error::BadInodeRatio(inode_ratio));
        }
        Ok(Geometry {
            blocks_count: blocks,
            groups,
            inodes_per_group,
            inode_table_blocks: inodes_per_group / INODES_PER_BLOCK,
            gdt_blocks: (groups * DESC_SIZE).div_ceil(BLOCK_SIZE as u32),
        })
    }

    /// `s_inodes_count`.
    pub fn inodes_count(&self) -> u32 {
        self.inodes_per_group * self.groups
    }

    /// First block of group `g`.
    pub fn group_start(&self, g: u32) -> u32 {
        g * BLOCKS_PER_GROUP
    }

    /// Blocks in group `g` (the last group may be short).
    pub fn group_blocks(&self, g: u32) -> u32 {
        (self.blocks_count - self.group_start(g)).min(BLOCKS_PER_GROUP)
    }

    /// True when group `g` holds a copy of the superblock and descriptor table
    /// (`sparse_super`: groups 0, 1 and powers of 3, 5 and 7).
    pub fn has_super(&self, g: u32) -> bool {
        fn power_of(mut n: u32, base: u32) -> bool {
            while n.is_multiple_of(base) {
                n /= base;
            }
            n == 1
        }
        g <= 1 || power_of(g, 3) || power_of(g, 5) || power_of(g, 7)
    }

    /// Block number of group `g`'s block bitmap.
    pub fn block_bitmap(&self, g: u32) -> u32 {
        self.group_start(g) + if self.has_super(g) { 1 + self.gdt_blocks } else { 0 }
    }

    /// Block number of group `g`'s inode bitmap.
    pub fn inode_bitmap(&self, g: u32) -> u32 {
        self.block_bitmap(g) + 1
    }

    /// First block of group `g`'s inode table.
    pub fn inode_table(&self, g: u32) -> u32 {
        self.block_bitmap(g) + 2
    }

    /// First block of group `g` that is free for data.
    pub fn first_data_block(&self, g: u32) -> u32 {
        self.inode_table(g) + self.inode_table_blocks
    }

    /// Blocks group `g` spends on its own metadata.
    pub fn overhead(&self, g: u32) -> u32 {
        self.first_data_block(g) - self.group_start(g)
    }

    /// Blocks group `g` has for data.
    pub fn data_blocks(&self, g: u32) -> u32 {
        self.group_blocks(g) - self.overhead(g)
    }

    /// The group holding block `block`.
    pub fn group_of_block(&self, block: u32) -> u32 {
        block / BLOCKS_PER_GROUP
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_groups_follow_sparse_super() {
        let geo = Geometry::new(1 << 40, 16384).unwrap();
        let backups: Vec<u32> = (0..400).filter(|&g| geo.has_super(g)).collect();
        assert_eq!(backups, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125, 243, 343]);
    }

    #[test]
    fn one_gib_matches_mke2fs_shape() {
        let geo = Geometry::new(1 << 30, 16384).unwrap();
        assert_eq!(geo.blocks_count, 262144);
        assert_eq!(geo.groups, 8);
        assert_eq!(geo.inodes_per_group, 8192);
        assert_eq!(geo.inode_table_blocks, 512);
        assert_eq!(geo.gdt_blocks, 1);
        assert_eq!(geo.block_bitmap(0), 2);
        assert_eq!(geo.block_bitmap(2), 65536);
        assert_eq!(geo.first_data_block(1), 32768 + 2 + 2 + 512);
    }

    #[test]
    fn runt_last_group_is_dropped_and_tiny_sizes_refused() {
        let geo = Geometry::new((32768 + 100) * BLOCK_SIZE, 16384).unwrap();
        assert_eq!((geo.groups, geo.blocks_count), (1, 32768));
        assert!(matches!(
            Geometry::new(100 * 1024, 16384),
            Err(Ext4Error::TooSmall { .. })
        ));
        assert!(matches!(
            Geometry::new(1 << 30, 100),
            Err(Ext4Error::BadInodeRatio(100))
        ));
        assert!(matches!(Geometry::new(1 << 45, 16384), Err(Ext4Error::TooLarge { .. })));
    }
}
