//! Inodes (kernel documentation, filesystems/ext4 "Index Nodes", `struct ext4_inode`):
//! 256 bytes each, the classic 128 plus 32 bytes of `i_extra_isize` (nanosecond and epoch
//! bits, creation time, the high half of the checksum).

use crate::checksum::crc32c;
use crate::layout::INODE_SIZE;
use crate::superblock::{put16, put32};

/// `i_flags`: the file's `i_block` holds an extent tree.
pub const EXTENTS_FL: u32 = 0x0008_0000;
/// Bytes of `i_extra_isize` this writer fills.
const EXTRA_ISIZE: u16 = 32;

/// The fields of one inode this writer sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    /// `i_mode`: file type and permission bits.
    pub mode: u16,
    /// Owner, split into `i_uid` and `l_i_uid_high`.
    pub uid: u32,
    /// Group, split into `i_gid` and `l_i_gid_high`.
    pub gid: u32,
    /// `i_size_lo` / `i_size_high`.
    pub size: u64,
    /// `i_links_count`.
    pub links: u16,
    /// `i_blocks` in 512-byte units (`huge_file` without `EXT4_HUGE_FILE_FL`).
    pub sectors: u64,
    /// `i_flags`.
    pub flags: u32,
    /// `i_block`: extent tree root, fast symlink target or device number.
    pub block: [u8; 60],
    /// atime, ctime, mtime and crtime, in seconds since 1970.
    pub time: u32,
}

impl Default for Inode {
    /// An unused inode: all zero.
    fn default() -> Self {
        Inode {
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            links: 0,
            sectors: 0,
            flags: 0,
            block: [0; 60],
            time: 0,
        }
    }
}

impl Inode {
    /// The 256 on-disk bytes of inode number `ino`, checksummed from `fs_seed`
    /// (generation 0).
    pub fn encode(&self, ino: u32, fs_seed: u32) -> [u8; INODE_SIZE as usize] {
        let mut b = [0u8; INODE_SIZE as usize];
        let (secs, epoch) = split_time(self.time);
        put16(&mut b, 0x00, self.mode); // i_mode
        put16(&mut b, 0x02, self.uid as u16); // i_uid
        put32(&mut b, 0x04, self.size as u32); // i_size_lo
        put32(&mut b, 0x08, secs); // i_atime
        put32(&mut b, 0x0C, secs); // i_ctime
        put32(&mut b, 0x10, secs); // i_mtime
        put16(&mut b, 0x18, self.gid as u16); // i_gid
        put16(&mut b, 0x1A, self.links); // i_links_count
        put32(&mut b, 0x1C, self.sectors as u32); // i_blocks_lo
        put32(&mut b, 0x20, self.flags); // i_flags
        b[0x28..0x64].copy_from_slice(&self.block); // i_block
        put32(&mut b, 0x6C, (self.size >> 32) as u32); // i_size_high
        put16(&mut b, 0x74, (self.sectors >> 32) as u16); // l_i_blocks_high
        put16(&mut b, 0x78, (self.uid >> 16) as u16); // l_i_uid_high
        put16(&mut b, 0x7A, (self.gid >> 16) as u16); // l_i_gid_high
        put16(&mut b, 0x80, EXTRA_ISIZE); // i_extra_isize
        if self.mode != 0 {
            put32(&mut b, 0x84, epoch); // i_ctime_extra
            put32(&mut b, 0x88, epoch); // i_mtime_extra
            put32(&mut b, 0x8C, epoch); // i_atime_extra
            put32(&mut b, 0x90, secs); // i_crtime
            put32(&mut b, 0x94, epoch); // i_crtime_extra
        }
        // "Checksums": crc32c over the whole inode with both checksum fields zero, seeded
        // with the inode's own seed; low half in l_i_checksum_lo, high half in i_checksum_hi.
        let sum = crc32c(crate::checksum::inode_seed(fs_seed, ino, 0), &b);
        put16(&mut b, 0x7C, sum as u16);
        put16(&mut b, 0x82, (sum >> 16) as u16);
        b
    }
}

/// Splits seconds since 1970 into the signed 32-bit field and the `*_extra` word, whose two
/// low bits extend the field's epoch ("Inode Timestamps"); nanoseconds stay zero.
fn split_time(time: u32) -> (u32, u32) {
    let extra = ((i64::from(time) - i64::from(time as i32)) >> 32) as u32 & 3;
    (time, extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_checksum() {
        let inode = Inode {
            mode: 0o104755,
            uid: 0x0001_0002,
            gid: 1000,
            size: 5 << 32 | 7,
            links: 3,
            sectors: 1 << 33 | 8,
            flags: EXTENTS_FL,
            block: [0x5A; 60],
            time: 1_700_000_000,
        };
        let b = inode.encode(12, 0xDEAD_BEEF);
        let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        assert_eq!(u16_at(0x00), 0o104755);
        assert_eq!((u16_at(0x02), u16_at(0x78)), (2, 1));
        assert_eq!((u32_at(0x04), u32_at(0x6C)), (7, 5));
        assert_eq!((u32_at(0x1C), u16_at(0x74)), (8, 2));
        assert_eq!(u32_at(0x10), 1_700_000_000);
        assert_eq!(u32_at(0x90), 1_700_000_000);
        assert_eq!(u16_at(0x80), 32);
        let mut zeroed = b;
        zeroed[0x7C..0x7E].fill(0);
        zeroed[0x82..0x84].fill(0);
        let sum = crc32c(crate::checksum::inode_seed(0xDEAD_BEEF, 12, 0), &zeroed);
        assert_eq!(u32::from(u16_at(0x7C)) | u32::from(u16_at(0x82)) << 16, sum);
    }

    #[test]
    fn times_past_2038_use_the_epoch_bits() {
        assert_eq!(split_time(1_700_000_000), (1_700_000_000, 0));
        assert_eq!(split_time(0x8000_0000), (0x8000_0000, 1));
        assert_eq!(split_time(u32::MAX), (u32::MAX, 1));
    }
}
