//! Extent trees (kernel documentation, filesystems/ext4 "Extent Tree").
//!
//! Every node starts with a 12-byte `ext4_extent_header`; leaves hold 12-byte
//! `ext4_extent`s, index nodes 12-byte `ext4_extent_idx`s. The root lives in the inode's
//! 60-byte `i_block` (room for 4 entries). Files here are allocated contiguously per block
//! group, so they need few extents: up to 4 fit in the inode (depth 0); beyond that the root
//! indexes up to 4 leaf blocks of 340 extents each (depth 1).

use crate::checksum::{crc32c, inode_seed};
use crate::layout::BLOCK_SIZE;
use crate::superblock::{put16, put32};

/// `eh_magic`.
pub const EXTENT_MAGIC: u16 = 0xF30A;
/// Longest initialised extent (`ee_len` values above 32768 mark unwritten extents).
pub const MAX_EXTENT_LEN: u32 = 32768;
/// Entries in the inode's root node.
const ROOT_ENTRIES: usize = 4;
/// Entries in a tree block: the block minus its header and the 4-byte checksum tail.
pub const BLOCK_ENTRIES: usize = (BLOCK_SIZE as usize - 12) / 12;
/// Most extents a file may have here: a depth-1 tree with a full root.
pub const MAX_EXTENTS: usize = ROOT_ENTRIES * BLOCK_ENTRIES;

/// A run of physical blocks mapped at a logical block of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First logical block in the file (`ee_block`).
    pub logical: u32,
    /// First physical block (`ee_start`).
    pub start: u32,
    /// Number of blocks.
    pub len: u32,
}

/// Splits `runs` into extents no longer than [`MAX_EXTENT_LEN`].
pub fn to_extents(runs: &[Run]) -> Vec<Run> {
    let mut out = Vec::with_capacity(runs.len());
    for run in runs {
        let mut done = 0;
        while done < run.len {
            let len = (run.len - done).min(MAX_EXTENT_LEN);
            out.push(Run {
                logical: run.logical + done,
                start: run.start + done,
                len,
            });
            done += len;
        }
    }
    out
}

/// Tree blocks an extent list of `count` entries needs, or `None` when it is too many.
pub fn tree_blocks_needed(count: usize) -> Option<usize> {
    match count {
        0..=ROOT_ENTRIES => Some(0),
        _ if count <= MAX_EXTENTS => Some(count.div_ceil(BLOCK_ENTRIES)),
        _ => None,
    }
}

/// An encoded tree: the inode's `i_block` and any leaf blocks with their block numbers.
pub struct ExtentTree {
    /// The root node, for `i_block`.
    pub root: [u8; 60],
    /// Leaf blocks and where they go.
    pub leaves: Vec<(u32, Vec<u8>)>,
}

/// Encodes `extents` (from [`to_extents`]) for inode `ino`, placing leaves in `leaf_blocks`
/// (exactly [`tree_blocks_needed`] of them). Leaf checksums chain from `fs_seed`.
pub fn encode(extents: &[Run], leaf_blocks: &[u32], ino: u32, fs_seed: u32) -> ExtentTree {
    let mut root = [0u8; 60];
    if leaf_blocks.is_empty() {
        header(&mut root, extents.len(), ROOT_ENTRIES, 0);
        for (i, e) in extents.iter().enumerate() {
            leaf_entry(&mut root[12 + 12 * i..], e);
        }
        return ExtentTree {
            root,
            leaves: Vec::new(),
        };
    }
    header(&mut root, leaf_blocks.len(), ROOT_ENTRIES, 1);
    let seed = inode_seed(fs_seed, ino, 0);
    let mut leaves = Vec::with_capacity(leaf_blocks.len());
    for (i, (chunk, &block)) in extents.chunks(BLOCK_ENTRIES).zip(leaf_blocks).enumerate() {
        // ext4_extent_idx: ei_block, ei_leaf_lo, ei_leaf_hi, ei_unused.
        let idx = &mut root[12 + 12 * i..];
        put32(idx, 0, chunk[0].logical);
        put32(idx, 4, block);
        let mut leaf = vec![0u8; BLOCK_SIZE as usize];
        header(&mut leaf, chunk.len(), BLOCK_ENTRIES, 0);
        for (j, e) in chunk.iter().enumerate() {
            leaf_entry(&mut leaf[12 + 12 * j..], e);
        }
        // ext4_extent_tail: crc32c(inode seed, node up to eh_max entries).
        let tail = 12 + 12 * BLOCK_ENTRIES;
        let sum = crc32c(seed, &leaf[..tail]);
        put32(&mut leaf, tail, sum);
        leaves.push((block, leaf));
    }
    ExtentTree { root, leaves }
}

/// `ext4_extent_header`: eh_magic, eh_entries, eh_max, eh_depth, eh_generation.
fn header(b: &mut [u8], entries: usize, max: usize, depth: u16) {
    put16(b, 0, EXTENT_MAGIC);
    put16(b, 2, entries as u16);
    put16(b, 4, max as u16);
    put16(b, 6, depth);
}

/// `ext4_extent`: ee_block, ee_len, ee_start_hi, ee_start_lo.
fn leaf_entry(b: &mut [u8], e: &Run) {
    put32(b, 0, e.logical);
    put16(b, 4, e.len as u16);
    put16(b, 6, 0);
    put32(b, 8, e.start);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_trees_live_in_the_inode() {
        let extents = to_extents(&[Run {
            logical: 0,
            start: 1000,
            len: 40000,
        }]);
        assert_eq!(extents.len(), 2);
        assert_eq!(
            extents[1],
            Run {
                logical: 32768,
                start: 33768,
                len: 7232
            }
        );
        assert_eq!(tree_blocks_needed(extents.len()), Some(0));
        let tree = encode(&extents, &[], 12, 0);
        assert!(tree.leaves.is_empty());
        let r = &tree.root;
        assert_eq!(r[..8], [0x0A, 0xF3, 2, 0, 4, 0, 0, 0]);
        assert_eq!(r[12..24], [0, 0, 0, 0, 0, 0x80, 0, 0, 0xE8, 0x03, 0, 0]);
        assert_eq!(r[24..28], 32768u32.to_le_bytes());
    }

    #[test]
    fn many_extents_get_a_checksummed_leaf() {
        let extents: Vec<Run> = (0..5)
            .map(|i| Run {
                logical: i * 10,
                start: 5000 + i * 20,
                len: 10,
            })
            .collect();
        assert_eq!(tree_blocks_needed(5), Some(1));
        assert_eq!(tree_blocks_needed(MAX_EXTENTS + 1), None);
        let tree = encode(&extents, &[777], 12, 0x42);
        assert_eq!(tree.root[..8], [0x0A, 0xF3, 1, 0, 4, 0, 1, 0]);
        assert_eq!(tree.root[16..20], 777u32.to_le_bytes());
        let (block, leaf) = &tree.leaves[0];
        assert_eq!(*block, 777);
        assert_eq!(leaf[..8], [0x0A, 0xF3, 5, 0, 0x54, 0x01, 0, 0]);
        assert_eq!(leaf[12 + 48..12 + 52], 40u32.to_le_bytes());
        let sum = crc32c(inode_seed(0x42, 12, 0), &leaf[..4092]);
        assert_eq!(leaf[4092..], sum.to_le_bytes());
    }
}
