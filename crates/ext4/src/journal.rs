//! The jbd2 journal superblock (kernel documentation, filesystems/ext4 "Journal (jbd2)",
//! `journal_superblock_t`). Unlike the rest of ext4 it is big-endian. A freshly made journal
//! is empty (`s_start` = 0), so only this first block has meaning; the kernel never reads the
//! other blocks before writing them.

/// `h_magic` of every jbd2 block.
pub const JBD2_MAGIC: u32 = 0xC03B_3998;
/// `h_blocktype` of a version 2 superblock.
const SUPERBLOCK_V2: u32 = 4;
/// The smallest journal jbd2 accepts, in blocks.
pub const MIN_JOURNAL_BLOCKS: u32 = 1024;
/// The largest default journal (64 MiB of 4 KiB blocks).
pub const MAX_DEFAULT_JOURNAL_BLOCKS: u32 = 16384;

/// mke2fs's default journal size for a filesystem of `fs_blocks` 4 KiB blocks
/// (`ext2fs_default_journal_size`), capped at 64 MiB; `None` below 2048 blocks.
pub fn default_journal_blocks(fs_blocks: u32) -> Option<u32> {
    match fs_blocks {
        0..2048 => None,
        2048..32768 => Some(1024),
        32768..262144 => Some(4096),
        262144..524288 => Some(8192),
        _ => Some(MAX_DEFAULT_JOURNAL_BLOCKS),
    }
}

/// The 1024-byte superblock of an empty journal of `blocks` 4 KiB blocks, for the filesystem
/// `uuid`. The first transaction's sequence number derives from the uuid, so a stale journal
/// left on a reused device does not carry the sequence numbers replay would expect.
pub fn superblock(blocks: u32, uuid: &[u8; 16]) -> Vec<u8> {
    let mut b = vec![0u8; 1024];
    let mut put = |at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    put(0x00, JBD2_MAGIC); // h_magic
    put(0x04, SUPERBLOCK_V2); // h_blocktype
    put(0x0C, 4096); // s_blocksize
    put(0x10, blocks); // s_maxlen
    put(0x14, 1); // s_first: the log starts after this block
    let sequence = u32::from_le_bytes([uuid[0], uuid[1], uuid[2], uuid[3]]) & 0x7FFF_FFFF;
    put(0x18, sequence.max(1)); // s_sequence
    put(0x1C, 0); // s_start: 0 means the journal is empty
    put(0x40, 1); // s_nr_users: one filesystem (this one)
    b[0x30..0x40].copy_from_slice(uuid); // s_uuid
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_is_big_endian_and_empty() {
        let b = superblock(4096, &[1; 16]);
        assert_eq!(b[0..8], [0xC0, 0x3B, 0x39, 0x98, 0, 0, 0, 4]);
        assert_eq!(b[0x10..0x14], [0, 0, 0x10, 0]);
        assert_eq!(b[0x1C..0x20], [0; 4]);
        assert_eq!(b[0x30..0x40], [1; 16]);
        assert_eq!(default_journal_blocks(16384), Some(1024));
        assert_eq!(default_journal_blocks(262144), Some(8192));
        assert_eq!(default_journal_blocks(1 << 24), Some(16384));
        assert_eq!(default_journal_blocks(1000), None);
    }
}
