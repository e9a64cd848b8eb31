//! The superblock (kernel documentation, filesystems/ext4 "Super Block", `struct
//! ext4_super_block`): 1024 bytes, little-endian, at byte 1024 of the filesystem and at the
//! start of every backup group.

use crate::checksum::crc32c;
use crate::layout::{Geometry, BLOCKS_PER_GROUP, INODE_SIZE};

/// `s_magic`.
pub const EXT4_MAGIC: u16 = 0xEF53;

/// `s_feature_compat`: a journal in inode 8.
pub const COMPAT_HAS_JOURNAL: u32 = 0x0004;
/// `s_feature_compat`: extended attributes may be used.
pub const COMPAT_EXT_ATTR: u32 = 0x0008;
/// `s_feature_incompat`: directory entries record the file type.
pub const INCOMPAT_FILETYPE: u32 = 0x0002;
/// `s_feature_incompat`: files may use extent trees.
pub const INCOMPAT_EXTENTS: u32 = 0x0040;
/// `s_feature_ro_compat`: superblock copies only in groups 0, 1 and powers of 3, 5, 7.
pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;
/// `s_feature_ro_compat`: files may exceed 2 GiB.
pub const RO_COMPAT_LARGE_FILE: u32 = 0x0002;
/// `s_feature_ro_compat`: `i_blocks` has 48 bits.
pub const RO_COMPAT_HUGE_FILE: u32 = 0x0008;
/// `s_feature_ro_compat`: directories may have more than 65000 subdirectories.
pub const RO_COMPAT_DIR_NLINK: u32 = 0x0020;
/// `s_feature_ro_compat`: inodes carry `i_extra_isize` bytes beyond the first 128.
pub const RO_COMPAT_EXTRA_ISIZE: u32 = 0x0040;
/// `s_feature_ro_compat`: crc32c checksums on all metadata.
pub const RO_COMPAT_METADATA_CSUM: u32 = 0x0400;

/// The superblock fields this writer sets; everything else is zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Block and group counts.
    pub geometry: Geometry,
    /// `s_r_blocks_count`: blocks only root may allocate.
    pub reserved_blocks: u32,
    /// `s_free_blocks_count`.
    pub free_blocks: u32,
    /// `s_free_inodes_count`.
    pub free_inodes: u32,
    /// `s_wtime`, `s_lastcheck` and `s_mkfs_time`.
    pub time: u32,
    /// `s_uuid`.
    pub uuid: [u8; 16],
    /// `s_volume_name`, at most 16 bytes.
    pub label: Vec<u8>,
    /// `s_hash_seed` for directory hashing.
    pub hash_seed: [u8; 16],
    /// `s_feature_compat`.
    pub feature_compat: u32,
    /// `s_feature_incompat`.
    pub feature_incompat: u32,
    /// `s_feature_ro_compat`.
    pub feature_ro_compat: u32,
    /// `s_journal_inum` (0 without a journal).
    pub journal_inode: u32,
    /// `s_jnl_blocks`: a copy of the journal inode's `i_block`, `i_size_high` and `i_size`.
    pub journal_backup: Option<[u32; 17]>,
}

impl Superblock {
    /// The 1024 bytes of the copy kept in group `group` (`s_block_group_nr` differs per copy,
    /// and so does the checksum).
    pub fn encode(&self, group: u32) -> [u8; 1024] {
        let mut b = [0u8; 1024];
        let geo = &self.geometry;
        put32(&mut b, 0x00, geo.inodes_count()); // s_inodes_count
        put32(&mut b, 0x04, geo.blocks_count); // s_blocks_count_lo
        put32(&mut b, 0x08, self.reserved_blocks); // s_r_blocks_count_lo
        put32(&mut b, 0x0C, self.free_blocks); // s_free_blocks_count_lo
        put32(&mut b, 0x10, self.free_inodes); // s_free_inodes_count
        put32(&mut b, 0x14, 0); // s_first_data_block: 0 for blocks over 1 KiB
        put32(&mut b, 0x18, 2); // s_log_block_size: 1024 << 2
        put32(&mut b, 0x1C, 2); // s_log_cluster_size
        put32(&mut b, 0x20, BLOCKS_PER_GROUP); // s_blocks_per_group
        put32(&mut b, 0x24, BLOCKS_PER_GROUP); // s_clusters_per_group
        put32(&mut b, 0x28, geo.inodes_per_group); // s_inodes_per_group
        put32(&mut b, 0x30, self.time); // s_wtime
        put16(&mut b, 0x36, 0xFFFF); // s_max_mnt_count: -1, no mount-count checks
        put16(&mut b, 0x38, EXT4_MAGIC); // s_magic
        put16(&mut b, 0x3A, 1); // s_state: cleanly unmounted
        put16(&mut b, 0x3C, 1); // s_errors: continue
        put32(&mut b, 0x40, self.time); // s_lastcheck
        put32(&mut b, 0x4C, 1); // s_rev_level: dynamic inode sizes
        put32(&mut b, 0x54, 11); // s_first_ino: inodes 1-10 are reserved
        put16(&mut b, 0x58, INODE_SIZE as u16); // s_inode_size
        put16(&mut b, 0x5A, group as u16); // s_block_group_nr
        put32(&mut b, 0x5C, self.feature_compat);
        put32(&mut b, 0x60, self.feature_incompat);
        put32(&mut b, 0x64, self.feature_ro_compat);
        b[0x68..0x78].copy_from_slice(&self.uuid); // s_uuid
        b[0x78..0x78 + self.label.len()].copy_from_slice(&self.label); // s_volume_name
        put32(&mut b, 0xE0, self.journal_inode); // s_journal_inum
        b[0xEC..0xFC].copy_from_slice(&self.hash_seed); // s_hash_seed
        b[0xFC] = 1; // s_def_hash_version: half_md4, mke2fs's default
        if let Some(words) = self.journal_backup {
            b[0xFD] = 1; // s_jnl_backup_type: EXT3_JNL_BACKUP_BLOCKS
            for (i, w) in words.iter().enumerate() {
                put32(&mut b, 0x10C + 4 * i, *w); // s_jnl_blocks
            }
        }
        put32(&mut b, 0x100, 0x000C); // s_default_mount_opts: user_xattr, acl
        put32(&mut b, 0x108, self.time); // s_mkfs_time
        put16(&mut b, 0x15C, 32); // s_min_extra_isize
        put16(&mut b, 0x15E, 32); // s_want_extra_isize
        put32(&mut b, 0x160, 0x0001); // s_flags: signed directory hash, as on x86
        if self.feature_ro_compat & RO_COMPAT_METADATA_CSUM != 0 {
            b[0x175] = 1; // s_checksum_type: crc32c
            let sum = crc32c(!0, &b[..0x3FC]);
            put32(&mut b, 0x3FC, sum); // s_checksum
        }
        b
    }

    /// The seed every other metadata checksum starts from: `crc32c(~0, s_uuid)`.
    pub fn checksum_seed(&self) -> u32 {
        crc32c(!0, &self.uuid)
    }
}

pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_land_at_their_documented_offsets() {
        let sb = Superblock {
            geometry: Geometry::new(1 << 30, 16384).unwrap(),
            reserved_blocks: 7,
            free_blocks: 1000,
            free_inodes: 2000,
            time: 1_700_000_000,
            uuid: [0xAB; 16],
            label: b"data".to_vec(),
            hash_seed: [0xCD; 16],
            feature_compat: COMPAT_HAS_JOURNAL,
            feature_incompat: INCOMPAT_FILETYPE | INCOMPAT_EXTENTS,
            feature_ro_compat: RO_COMPAT_SPARSE_SUPER | RO_COMPAT_METADATA_CSUM,
            journal_inode: 8,
            journal_backup: Some([3; 17]),
        };
        let b = sb.encode(3);
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
        assert_eq!(u32_at(0x00), 65536);
        assert_eq!(u32_at(0x04), 262144);
        assert_eq!(u32_at(0x08), 7);
        assert_eq!(u32_at(0x0C), 1000);
        assert_eq!(u32_at(0x10), 2000);
        assert_eq!(u16_at(0x38), 0xEF53);
        assert_eq!(u16_at(0x36), 0xFFFF);
        assert_eq!(u16_at(0x5A), 3);
        assert_eq!(u32_at(0x108), 1_700_000_000);
        assert_eq!(&b[0x78..0x7C], b"data");
        assert_eq!(b[0x7C], 0);
        assert_eq!(&b[0xEC..0xFC], &[0xCD; 16]);
        assert_eq!(u32_at(0x10C + 16 * 4), 3);
        assert_eq!(b[0x175], 1);
        assert_eq!(u32_at(0x3FC), crc32c(!0, &b[..0x3FC]));
        assert_ne!(sb.encode(0)[0x3FC..], b[0x3FC..], "each copy has its own checksum");
    }
}
