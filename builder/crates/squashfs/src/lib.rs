//! A squashfs 4.0 writer for uvmkit's read-only system image.
//!
//! The layout follows the kernel's `fs/squashfs/squashfs_fs.h` and the on-disk description in
//! the kernel's `Documentation/filesystems/squashfs.rst`: the 96-byte superblock, the file data
//! blocks, the inode table, the directory table and the id table, in that order (the kernel
//! checks that each table ends where the next begins). Choices that keep the bytes the same
//! for the same tree:
//!
//! - every file's data is stored as whole `block_size` blocks, the tail as a short block
//!   (no fragments, flag `NO_FRAGMENTS`), each compressed on its own ([`Compression`]: zstd
//!   at a fixed level, or xz at a fixed preset with or without the x86 BCJ filter, whichever
//!   is smaller) or stored raw when compressing does not shrink it;
//! - every inode carries the one modification time of the options; owners are the tree's;
//! - directories list their entries in byte order of the name (the kernel's lookup stops at
//!   the first entry whose name sorts after the one looked for);
//! - inode numbers follow the tree's path order, the root's is 1;
//! - no extended attributes, no export table.
//!
//! File data is streamed block by block from [`FileData`]; the inode and directory tables are
//! held in memory (a few bytes per entry) and written at the end. A [`BlockCache`] (such as
//! [`DirBlockCache`]) gives back the compressed form of data blocks seen in an earlier build,
//! so a rebuild compresses only what changed; the bytes are the same with or without it.

#![deny(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Seek, SeekFrom, Write};
use thiserror::Error;
use uvmkit_filetree::{FileData, FileTree, Node, NodeKind, TreePath};

mod cache;
mod compress;
mod data;

pub use cache::{BlockCache, BlockName, CacheStats, DirBlockCache, NoCache, StoredBlock};
use compress::{BlockKind, Encoder};
pub use compress::{Compression, XZ_COMPRESSION, ZSTD_COMPRESSION};
use data::StoredFile;

/// `hsqs`, little-endian.
const MAGIC: u32 = 0x7371_7368;
/// Uncompressed bytes in one metadata block.
const METADATA_SIZE: usize = 8192;
/// Superblock flags: no fragments, no extended attributes, compression options present.
const FLAG_NO_FRAGMENTS: u16 = 1 << 4;
const FLAG_NO_XATTRS: u16 = 1 << 9;
const FLAG_COMP_OPT: u16 = 1 << 10;
/// "No table" / "no fragment" / "no xattr".
const INVALID_BLOCK: u64 = u64::MAX;
const INVALID_FRAGMENT: u32 = u32::MAX;
const INVALID_XATTR: u32 = u32::MAX;
/// Bit set in a data block's size word when the block is stored uncompressed.
const DATA_UNCOMPRESSED: u32 = 1 << 24;
/// Bit set in a metadata block's header when the block is stored uncompressed.
const METADATA_UNCOMPRESSED: u16 = 1 << 15;
/// Size of the superblock.
const SUPERBLOCK_SIZE: u64 = 96;

/// Inode types (`SQUASHFS_DIR_TYPE`...): basic types 1–7, extended ones 8–14.
mod inode_type {
    pub const DIR: u16 = 1;
    pub const FILE: u16 = 2;
    pub const SYMLINK: u16 = 3;
    pub const BLOCK_DEVICE: u16 = 4;
    pub const CHAR_DEVICE: u16 = 5;
    pub const FIFO: u16 = 6;
    pub const EXTENDED_DIR: u16 = 8;
    pub const EXTENDED_FILE: u16 = 9;
}

/// How the image is written.
#[derive(Debug, Clone)]
pub struct SquashfsOptions {
    /// Modification time of every inode and of the file system (`SOURCE_DATE_EPOCH`).
    pub mtime: u32,
    /// Data block size: a power of two from 4 KiB to 1 MiB.
    pub block_size: u32,
    /// How data and metadata blocks are compressed.
    pub compression: Compression,
    /// Threads that compress data blocks (at least one); the image's bytes do not depend on it.
    pub threads: usize,
}

/// The threads [`SquashfsOptions::zstd`] and [`SquashfsOptions::xz`] compress on: one per CPU,
/// at most eight.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

impl SquashfsOptions {
    /// zstd level 15 in 128 KiB blocks (the default).
    pub fn zstd() -> Self {
        SquashfsOptions {
            mtime: 0,
            block_size: 128 * 1024,
            compression: Compression::ZSTD_DEFAULT,
            threads: default_threads(),
        }
    }

    /// xz preset 9 with the x86 BCJ filter tried on every data block, in 1 MiB blocks (the
    /// dictionary is as large as a block, so larger blocks find more repeats).
    pub fn xz() -> Self {
        SquashfsOptions {
            mtime: 0,
            block_size: 1 << 20,
            compression: Compression::XZ_DEFAULT,
            threads: default_threads(),
        }
    }
}

impl Default for SquashfsOptions {
    fn default() -> Self {
        SquashfsOptions::zstd()
    }
}

/// What a written image holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SquashfsStats {
    /// Inodes written (hard links share one).
    pub inodes: u32,
    /// Bytes of regular file data before compression.
    pub file_bytes: u64,
    /// Bytes of the image (`bytes_used`, before the padding to 4 KiB).
    pub bytes_used: u64,
    /// Bytes written, padding to a multiple of 4 KiB included.
    pub image_bytes: u64,
}

/// Why an image could not be written.
#[derive(Debug, Error)]
pub enum SquashfsError {
    /// The block size is not a power of two from 4 KiB to 1 MiB.
    #[error("squashfs block size {0} is not a power of two from 4096 to 1048576")]
    BlockSize(u32),
    /// The compressor's settings are out of range.
    #[error("squashfs compression: {0}")]
    Compression(String),
    /// A file's bytes could not be read.
    #[error("reading {path} for the system image: {source}")]
    Read {
        /// The file in the image.
        path: TreePath,
        /// What reading reported.
        source: io::Error,
    },
    /// A file was shorter or longer than the tree recorded.
    #[error(
        "{path} has {actual} bytes but the file tree recorded {expected}; was the cache changed during the build?"
    )]
    Length {
        /// The file in the image.
        path: TreePath,
        /// Bytes recorded in the tree.
        expected: u64,
        /// Bytes read.
        actual: u64,
    },
    /// A hard link names a path that is not a regular file of the tree.
    #[error("hard link {link} points to {target}, which is not a regular file of the tree")]
    BadHardLink {
        /// The link.
        link: TreePath,
        /// What it names.
        target: TreePath,
    },
    /// The tree has more distinct owners than squashfs can record (65536).
    #[error("the tree has more than 65536 distinct uids and gids")]
    TooManyIds,
    /// Writing the image failed.
    #[error("writing the system image: {0}")]
    Write(#[source] io::Error),
}

/// Writes `tree` as a squashfs image to `out`, starting at its current position 0.
pub fn write_squashfs<W: Write + Seek>(
    tree: &FileTree,
    options: &SquashfsOptions,
    out: &mut W,
) -> Result<SquashfsStats, SquashfsError> {
    write_squashfs_cached(tree, options, &NoCache, out)
}

/// [`write_squashfs`], taking the compressed form of data blocks from `cache` when it has
/// them (and offering it the ones it has not). The bytes written are the same.
pub fn write_squashfs_cached<W: Write + Seek>(
    tree: &FileTree,
    options: &SquashfsOptions,
    cache: &dyn BlockCache,
    out: &mut W,
) -> Result<SquashfsStats, SquashfsError> {
    let block_log = block_log(options.block_size)?;
    let compression = options.compression;
    compression.check().map_err(SquashfsError::Compression)?;
    let plan = Plan::new(tree)?;
    let ids = IdTable::new(tree)?;
    let write = SquashfsError::Write;

    // The superblock is written last, once the tables' positions are known. The compression
    // options follow it as one uncompressed metadata block (squashfs.rst, "Compression
    // options"), where the kernel's `squashfs_comp_opts` reads them.
    out.seek(SeekFrom::Start(SUPERBLOCK_SIZE)).map_err(write)?;
    let mut position = SUPERBLOCK_SIZE;
    let comp_options = compression.options(options.block_size);
    if let Some(bytes) = &comp_options {
        let header = bytes.len() as u16 | METADATA_UNCOMPRESSED;
        out.write_all(&header.to_le_bytes()).map_err(write)?;
        out.write_all(bytes).map_err(write)?;
        position += 2 + bytes.len() as u64;
    }
    let files: Vec<(&TreePath, &FileData)> = plan
        .files
        .iter()
        .map(|&index| {
            let (path, node) = plan.entries[index];
            let NodeKind::File(data) = &node.kind else {
                unreachable!("planned as a file")
            };
            (path, data)
        })
        .collect();
    let file_bytes = files.iter().map(|(_, data)| data.len()).sum::<u64>();
    let (stored_files, end) = data::write_data(
        files,
        compression,
        options.block_size,
        options.threads,
        cache,
        position,
        out,
    )?;
    position = end;
    let stored: HashMap<usize, StoredFile> = plan.files.iter().copied().zip(stored_files).collect();

    let mut inodes = MetadataWriter::new(compression, options.block_size)?;
    let mut directories = MetadataWriter::new(compression, options.block_size)?;
    let mut refs: HashMap<usize, InodeRef> = HashMap::new();
    let common = |index: usize, kind: u16| -> Vec<u8> {
        let node = plan.entries[index].1;
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&kind.to_le_bytes());
        b.extend_from_slice(&(node.mode as u16 & 0o7777).to_le_bytes());
        b.extend_from_slice(&ids.index(node.uid).to_le_bytes());
        b.extend_from_slice(&ids.index(node.gid).to_le_bytes());
        b.extend_from_slice(&options.mtime.to_le_bytes());
        b.extend_from_slice(&plan.inode_numbers[index].to_le_bytes());
        b
    };

    // Every inode but the directories first, so a directory (and a hard link in one) can
    // name the inode of any file.
    for (index, &(_, node)) in plan.entries.iter().enumerate() {
        let bytes = match &node.kind {
            NodeKind::Directory | NodeKind::HardLink(_) => continue,
            NodeKind::File(data) => {
                let file = &stored[&index];
                let links = plan.link_counts.get(&index).copied().unwrap_or(1);
                let extended = links > 1 || file.start > u64::from(u32::MAX) || data.len() > u64::from(u32::MAX);
                let mut b;
                if extended {
                    b = common(index, inode_type::EXTENDED_FILE);
                    b.extend_from_slice(&file.start.to_le_bytes());
                    b.extend_from_slice(&data.len().to_le_bytes());
                    b.extend_from_slice(&0u64.to_le_bytes()); // sparse bytes
                    b.extend_from_slice(&links.to_le_bytes());
                    b.extend_from_slice(&INVALID_FRAGMENT.to_le_bytes());
                    b.extend_from_slice(&0u32.to_le_bytes()); // fragment offset
                    b.extend_from_slice(&INVALID_XATTR.to_le_bytes());
                } else {
                    b = common(index, inode_type::FILE);
                    b.extend_from_slice(&(file.start as u32).to_le_bytes());
                    b.extend_from_slice(&INVALID_FRAGMENT.to_le_bytes());
                    b.extend_from_slice(&0u32.to_le_bytes()); // fragment offset
                    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
                }
                for size in &file.block_sizes {
                    b.extend_from_slice(&size.to_le_bytes());
                }
                b
            }
            NodeKind::Symlink(target) => {
                let mut b = common(index, inode_type::SYMLINK);
                b.extend_from_slice(&1u32.to_le_bytes());
                b.extend_from_slice(&(target.len() as u32).to_le_bytes());
                b.extend_from_slice(target.as_bytes());
                b
            }
            NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
                let kind = match node.kind {
                    NodeKind::CharDevice { .. } => inode_type::CHAR_DEVICE,
                    _ => inode_type::BLOCK_DEVICE,
                };
                let mut b = common(index, kind);
                b.extend_from_slice(&1u32.to_le_bytes());
                b.extend_from_slice(&encode_device(*major, *minor).to_le_bytes());
                b
            }
            NodeKind::Fifo => {
                let mut b = common(index, inode_type::FIFO);
                b.extend_from_slice(&1u32.to_le_bytes());
                b
            }
        };
        refs.insert(index, inodes.position());
        inodes.write(&bytes).map_err(write)?;
    }

    // Then the directories, deepest first: a listing names its subdirectories' inodes.
    for &index in &plan.directories_deepest_first {
        let children = &plan.children[index];
        let listing = directory_listing(&plan, children, &refs);
        let (start_block, offset) = directories.position().parts();
        directories.write(&listing).map_err(write)?;
        let subdirectories = children
            .iter()
            .filter(|&&c| plan.entries[c].1.kind == NodeKind::Directory)
            .count() as u32;
        let nlink = 2 + subdirectories;
        let file_size = listing.len() as u64 + 3;
        let parent = match plan.parents[index] {
            Some(parent) => plan.inode_numbers[parent],
            // As mksquashfs: the root's parent is one past the last inode.
            None => plan.inode_count + 1,
        };
        let mut b;
        if file_size > u64::from(u16::MAX) {
            b = common(index, inode_type::EXTENDED_DIR);
            b.extend_from_slice(&nlink.to_le_bytes());
            b.extend_from_slice(&(file_size as u32).to_le_bytes());
            b.extend_from_slice(&start_block.to_le_bytes());
            b.extend_from_slice(&parent.to_le_bytes());
            b.extend_from_slice(&0u16.to_le_bytes()); // directory index entries
            b.extend_from_slice(&offset.to_le_bytes());
            b.extend_from_slice(&INVALID_XATTR.to_le_bytes());
        } else {
            b = common(index, inode_type::DIR);
            b.extend_from_slice(&start_block.to_le_bytes());
            b.extend_from_slice(&nlink.to_le_bytes());
            b.extend_from_slice(&(file_size as u16).to_le_bytes());
            b.extend_from_slice(&offset.to_le_bytes());
            b.extend_from_slice(&parent.to_le_bytes());
        }
        refs.insert(index, inodes.position());
        inodes.write(&b).map_err(write)?;
    }
    let root_ref = refs[&0];

    // The tables, in the order the kernel expects them.
    let inode_table = inodes.finish().map_err(write)?;
    let directory_table = directories.finish().map_err(write)?;
    let inode_table_start = position;
    out.write_all(&inode_table).map_err(write)?;
    position += inode_table.len() as u64;
    let directory_table_start = position;
    out.write_all(&directory_table).map_err(write)?;
    position += directory_table.len() as u64;
    let mut id_blocks = MetadataWriter::new(compression, options.block_size)?;
    for id in &ids.ids {
        id_blocks.write(&id.to_le_bytes()).map_err(write)?;
    }
    let id_blocks = id_blocks.finish().map_err(write)?;
    let id_blocks_start = position;
    out.write_all(&id_blocks).map_err(write)?;
    position += id_blocks.len() as u64;
    // One metadata block holds 2048 ids; the index lists where each block starts.
    let id_table_start = position;
    let mut offset = 0usize;
    while offset < id_blocks.len() {
        out.write_all(&(id_blocks_start + offset as u64).to_le_bytes())
            .map_err(write)?;
        position += 8;
        let header = u16::from_le_bytes([id_blocks[offset], id_blocks[offset + 1]]);
        offset += 2 + usize::from(header & !METADATA_UNCOMPRESSED);
    }
    let bytes_used = position;
    let padded = bytes_used.div_ceil(4096) * 4096;
    out.write_all(&vec![0u8; (padded - bytes_used) as usize])
        .map_err(write)?;

    let mut sb = Vec::with_capacity(SUPERBLOCK_SIZE as usize);
    sb.extend_from_slice(&MAGIC.to_le_bytes());
    sb.extend_from_slice(&plan.inode_count.to_le_bytes());
    sb.extend_from_slice(&options.mtime.to_le_bytes());
    sb.extend_from_slice(&options.block_size.to_le_bytes());
    sb.extend_from_slice(&0u32.to_le_bytes()); // fragments
    sb.extend_from_slice(&compression.id().to_le_bytes());
    sb.extend_from_slice(&block_log.to_le_bytes());
    let comp_opt = if comp_options.is_some() { FLAG_COMP_OPT } else { 0 };
    sb.extend_from_slice(&(FLAG_NO_FRAGMENTS | FLAG_NO_XATTRS | comp_opt).to_le_bytes());
    sb.extend_from_slice(&(ids.ids.len() as u16).to_le_bytes());
    sb.extend_from_slice(&4u16.to_le_bytes()); // version 4.0
    sb.extend_from_slice(&0u16.to_le_bytes());
    sb.extend_from_slice(&root_ref.0.to_le_bytes());
    sb.extend_from_slice(&bytes_used.to_le_bytes());
    sb.extend_from_slice(&id_table_start.to_le_bytes());
    sb.extend_from_slice(&INVALID_BLOCK.to_le_bytes()); // xattr id table
    sb.extend_from_slice(&inode_table_start.to_le_bytes());
    sb.extend_from_slice(&directory_table_start.to_le_bytes());
    sb.extend_from_slice(&INVALID_BLOCK.to_le_bytes()); // fragment table
    sb.extend_from_slice(&INVALID_BLOCK.to_le_bytes()); // export table
    debug_assert_eq!(sb.len() as u64, SUPERBLOCK_SIZE);
    out.seek(SeekFrom::Start(0)).map_err(write)?;
    out.write_all(&sb).map_err(write)?;
    out.seek(SeekFrom::Start(padded)).map_err(write)?;
    out.flush().map_err(write)?;
    Ok(SquashfsStats {
        inodes: plan.inode_count,
        file_bytes,
        bytes_used,
        image_bytes: padded,
    })
}

/// `log2(block_size)`, checked.
fn block_log(block_size: u32) -> Result<u16, SquashfsError> {
    if !block_size.is_power_of_two() || !(4096..=1 << 20).contains(&block_size) {
        return Err(SquashfsError::BlockSize(block_size));
    }
    Ok(block_size.trailing_zeros() as u16)
}

/// The kernel's `new_encode_dev` (squashfs stores device numbers that way).
fn encode_device(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// The tree as numbered inodes with their directories' children.
struct Plan<'t> {
    /// Every entry in path order; index 0 is the root.
    entries: Vec<(&'t TreePath, &'t Node)>,
    /// Each entry's inode number (a hard link's is its target's).
    inode_numbers: Vec<u32>,
    /// The inode a directory entry names: itself, or a hard link's target.
    inode_of: Vec<usize>,
    /// Each entry's parent directory.
    parents: Vec<Option<usize>>,
    /// Each directory's children in name order (empty for others).
    children: Vec<Vec<usize>>,
    /// Regular files (not hard links) in path order: the order of their data.
    files: Vec<usize>,
    /// Directories, every one after all of its subdirectories.
    directories_deepest_first: Vec<usize>,
    /// Names of a file with more than one name.
    link_counts: HashMap<usize, u32>,
    inode_count: u32,
}

impl<'t> Plan<'t> {
    fn new(tree: &'t FileTree) -> Result<Self, SquashfsError> {
        let entries: Vec<(&TreePath, &Node)> = tree.iter().collect();
        let index: HashMap<&str, usize> = entries.iter().enumerate().map(|(i, (p, _))| (p.as_str(), i)).collect();
        let mut plan = Plan {
            inode_numbers: vec![0; entries.len()],
            inode_of: (0..entries.len()).collect(),
            parents: vec![None; entries.len()],
            children: vec![Vec::new(); entries.len()],
            files: Vec::new(),
            directories_deepest_first: Vec::new(),
            link_counts: HashMap::new(),
            inode_count: 0,
            entries,
        };
        let mut next = 1u32;
        for (i, (path, node)) in plan.entries.iter().enumerate() {
            if let Some(parent) = path.parent() {
                let p = index[parent.as_str()];
                plan.parents[i] = Some(p);
                // Path order within one directory is name order.
                plan.children[p].push(i);
            }
            match &node.kind {
                NodeKind::HardLink(target) => {
                    let t = index
                        .get(target.as_str())
                        .copied()
                        .filter(|&t| matches!(plan.entries[t].1.kind, NodeKind::File(_)));
                    let Some(t) = t else {
                        return Err(SquashfsError::BadHardLink {
                            link: (*path).clone(),
                            target: target.clone(),
                        });
                    };
                    plan.inode_of[i] = t;
                    *plan.link_counts.entry(t).or_insert(1) += 1;
                }
                kind => {
                    plan.inode_numbers[i] = next;
                    next += 1;
                    if let NodeKind::File(_) = kind {
                        plan.files.push(i);
                    }
                }
            }
        }
        for i in 0..plan.entries.len() {
            plan.inode_numbers[i] = plan.inode_numbers[plan.inode_of[i]];
        }
        plan.inode_count = next - 1;
        let mut dirs: Vec<usize> = (0..plan.entries.len())
            .filter(|&i| plan.entries[i].1.kind == NodeKind::Directory)
            .collect();
        // Deeper paths first; a stable sort keeps path order within one depth.
        dirs.sort_by_key(|&i| std::cmp::Reverse(plan.entries[i].0.depth()));
        plan.directories_deepest_first = dirs;
        Ok(plan)
    }
}

/// The directory table entries of one directory: runs of at most 256 entries whose inodes lie
/// in one metadata block, each under a header naming that block and a base inode number.
fn directory_listing(plan: &Plan, children: &[usize], refs: &HashMap<usize, InodeRef>) -> Vec<u8> {
    let mut listing = Vec::new();
    let mut run: Vec<u8> = Vec::new();
    let mut run_len = 0u32;
    let mut run_block = 0u32;
    let mut run_base = 0u32;
    let flush = |listing: &mut Vec<u8>, run: &mut Vec<u8>, len: u32, block: u32, base: u32| {
        if len == 0 {
            return;
        }
        listing.extend_from_slice(&(len - 1).to_le_bytes());
        listing.extend_from_slice(&block.to_le_bytes());
        listing.extend_from_slice(&base.to_le_bytes());
        listing.append(run);
    };
    for &child in children {
        let (path, node) = plan.entries[child];
        let target = plan.inode_of[child];
        let (block, offset) = refs[&target].parts();
        let number = plan.inode_numbers[child];
        let delta = i64::from(number) - i64::from(run_base);
        if run_len == 256 || (run_len > 0 && (block != run_block || !(-32768..=32767).contains(&delta))) {
            flush(&mut listing, &mut run, run_len, run_block, run_base);
            run_len = 0;
        }
        if run_len == 0 {
            run_block = block;
            run_base = number;
        }
        let name = path.file_name().as_bytes();
        let kind = match &node.kind {
            NodeKind::Directory => inode_type::DIR,
            NodeKind::File(_) | NodeKind::HardLink(_) => inode_type::FILE,
            NodeKind::Symlink(_) => inode_type::SYMLINK,
            NodeKind::BlockDevice { .. } => inode_type::BLOCK_DEVICE,
            NodeKind::CharDevice { .. } => inode_type::CHAR_DEVICE,
            NodeKind::Fifo => inode_type::FIFO,
        };
        run.extend_from_slice(&offset.to_le_bytes());
        run.extend_from_slice(&((i64::from(number) - i64::from(run_base)) as i16).to_le_bytes());
        run.extend_from_slice(&kind.to_le_bytes());
        run.extend_from_slice(&((name.len() - 1) as u16).to_le_bytes());
        run.extend_from_slice(name);
        run_len += 1;
    }
    flush(&mut listing, &mut run, run_len, run_block, run_base);
    listing
}

/// A reference to metadata: the start of its block relative to the table, and the offset in
/// the block's uncompressed bytes (`block << 16 | offset`).
#[derive(Debug, Clone, Copy)]
struct InodeRef(u64);

impl InodeRef {
    fn parts(self) -> (u32, u16) {
        ((self.0 >> 16) as u32, self.0 as u16)
    }
}

/// A stream of metadata chopped into 8 KiB blocks, each compressed (or stored raw when that
/// is not smaller) behind a two-byte header.
struct MetadataWriter {
    done: Vec<u8>,
    pending: Vec<u8>,
    compressor: Encoder,
}

impl MetadataWriter {
    fn new(compression: Compression, block_size: u32) -> Result<Self, SquashfsError> {
        Ok(MetadataWriter {
            done: Vec::new(),
            pending: Vec::with_capacity(METADATA_SIZE),
            compressor: Encoder::new(compression, block_size).map_err(SquashfsError::Write)?,
        })
    }

    /// Where the next byte written goes.
    fn position(&self) -> InodeRef {
        InodeRef(((self.done.len() as u64) << 16) | self.pending.len() as u64)
    }

    fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let room = METADATA_SIZE - self.pending.len();
            let take = room.min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() == METADATA_SIZE {
                self.flush_block()?;
            }
        }
        Ok(())
    }

    fn flush_block(&mut self) -> io::Result<()> {
        let compressed = self.compressor.compress(&self.pending, BlockKind::Metadata)?;
        if compressed.len() < self.pending.len() {
            self.done.extend_from_slice(&(compressed.len() as u16).to_le_bytes());
            self.done.extend_from_slice(&compressed);
        } else {
            let header = self.pending.len() as u16 | METADATA_UNCOMPRESSED;
            self.done.extend_from_slice(&header.to_le_bytes());
            self.done.extend_from_slice(&self.pending);
        }
        self.pending.clear();
        Ok(())
    }

    fn finish(mut self) -> io::Result<Vec<u8>> {
        if !self.pending.is_empty() {
            self.flush_block()?;
        }
        Ok(self.done)
    }
}

/// The distinct uids and gids, sorted; inodes name them by index.
struct IdTable {
    ids: Vec<u32>,
    index: BTreeMap<u32, u16>,
}

impl IdTable {
    fn new(tree: &FileTree) -> Result<Self, SquashfsError> {
        let mut ids: Vec<u32> = tree.iter().flat_map(|(_, n)| [n.uid, n.gid]).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > 65536 {
            return Err(SquashfsError::TooManyIds);
        }
        let index = ids.iter().enumerate().map(|(i, &id)| (id, i as u16)).collect();
        Ok(IdTable { ids, index })
    }

    fn index(&self, id: u32) -> u16 {
        self.index[&id]
    }
}

#[cfg(test)]
mod tests;
