//! A compact ext4 writer: formats a filesystem, optionally pre-populated from a [`FileTree`],
//! into a [`SparseImage`] without root, mounts or C code.
//!
//! The byte layouts follow the Linux kernel's Documentation/filesystems/ext4/ and each
//! module covers one of its sections: [`layout`] (block groups), [`superblock`], [`group`]
//! (descriptors and bitmaps), [`inode`], [`extent`] (extent trees), [`dir`] (linear
//! directories), [`journal`] (the jbd2 superblock); [`mkfs`] wires them together and
//! [`device`] writes the result onto a block device (metadata only).
//!
//! The result holds only metadata as bytes and file contents as references to the tree's
//! host files; unused inode tables, free space and the body of the journal stay holes. So a
//! 64 GiB filesystem costs a few megabytes of memory, and formatting a blank device (the
//! `init`'s use, with an empty tree) writes metadata only.
//!
//! Features: `has_journal`, `ext_attr`, `filetype`, `extents`, `sparse_super`,
//! `large_file`, `huge_file`, `dir_nlink`, `extra_isize` and `metadata_csum` (crc32c);
//! 4 KiB blocks, 256-byte inodes, no `64bit` (up to 16 TiB), no `dir_index` (directories are
//! linear, which any size of directory may be), no `flex_bg`, no `resize_inode`.

#![deny(missing_docs)]

pub mod checksum;
pub mod dir;
pub mod extent;
pub mod group;
pub mod inode;
pub mod journal;
pub mod layout;
pub mod mkfs;
pub mod superblock;

use uvmkit_disk::SparseError;
use uvmkit_filetree::TreePath;

pub use mkfs::build_ext4;
#[doc(no_inline)]
pub use uvmkit_disk::SparseImage;
#[doc(no_inline)]
pub use uvmkit_filetree::FileTree;

/// How to format the filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ext4Options {
    /// Size of the device or partition in bytes; the filesystem covers whole 4 KiB blocks of it.
    pub size_bytes: u64,
    /// Volume label (`s_volume_name`), at most 16 bytes.
    pub label: String,
    /// Filesystem UUID (`s_uuid`); it also seeds every metadata checksum.
    pub uuid: [u8; 16],
    /// Seed of the directory-name hash (`s_hash_seed`).
    pub hash_seed: [u8; 16],
    /// Every timestamp (inodes and superblock), in seconds since 1970.
    pub mtime: u32,
    /// Journal size in 4 KiB blocks: `None` picks mke2fs's default for the size (at most
    /// 64 MiB), `Some(0)` makes no journal, otherwise at least 1024.
    pub journal_blocks: Option<u32>,
    /// Bytes of filesystem per inode (mke2fs's `-i`), at least 1024; default 16384.
    pub inode_ratio: u32,
    /// Percentage of blocks reserved for root (mke2fs's `-m`), 0 to 50; default 0.
    pub reserved_percent: u8,
    /// The target reads as zeros wherever nothing is written (a new image file): inode tables
    /// are then marked zeroed and the kernel skips initialising them after the first mount.
    /// Leave `false` when formatting a device that may hold old data; default `false`.
    pub assume_zeroed: bool,
}

impl Default for Ext4Options {
    fn default() -> Self {
        Ext4Options {
            size_bytes: 0,
            label: String::new(),
            uuid: [0; 16],
            hash_seed: [0; 16],
            mtime: 0,
            journal_blocks: None,
            inode_ratio: 16384,
            reserved_percent: 0,
            assume_zeroed: false,
        }
    }
}

/// Why a filesystem could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    /// The size cannot hold the filesystem's own metadata.
    #[error("{size_bytes} bytes is too small for an ext4 filesystem: it needs at least {minimum} bytes; make the partition larger")]
    TooSmall {
        /// The size asked for.
        size_bytes: u64,
        /// The smallest size that holds the metadata.
        minimum: u64,
    },
    /// The size is beyond what 32-bit block numbers address.
    #[error("{size_bytes} bytes is too large: this ext4 writer addresses at most 16 TiB (no 64bit feature); make the partition smaller")]
    TooLarge {
        /// The size asked for.
        size_bytes: u64,
    },
    /// `inode_ratio` is too small for the size.
    #[error("inode ratio {0} is out of range: use at least 1024 bytes per inode (16384 is the default), and fewer than 2^32 inodes in all")]
    BadInodeRatio(u32),
    /// The label is longer than `s_volume_name`.
    #[error("volume label {0:?} is longer than 16 bytes; choose a shorter label")]
    LabelTooLong(String),
    /// `reserved_percent` is above 50.
    #[error("reserved_percent {0} is above 50; use a value from 0 to 50")]
    BadReservedPercent(u8),
    /// The journal size is below jbd2's minimum or larger than the filesystem allows.
    #[error("a journal of {0} blocks is invalid: use 0 for no journal or 1024 blocks (4 MiB) or more, within the filesystem's size")]
    BadJournalSize(u32),
    /// The tree has more nodes than the filesystem has inodes.
    #[error("the tree needs {needed} inodes but the filesystem has {available}; lower inode_ratio or make the partition larger")]
    OutOfInodes {
        /// Inodes the tree needs, the reserved ones included.
        needed: u64,
        /// Inodes the filesystem has.
        available: u32,
    },
    /// The data does not fit.
    #[error("the filesystem is full while placing {0}; make the partition larger")]
    OutOfSpace(String),
    /// A name is longer than a directory entry holds.
    #[error("{0}: the name is longer than ext4's limit of 255 bytes; rename it")]
    NameTooLong(TreePath),
    /// A symbolic link target is empty or longer than a block.
    #[error("{path}: a symbolic link target of {len} bytes cannot be stored; ext4 holds 1 to 4095 bytes")]
    BadSymlink {
        /// The symbolic link.
        path: TreePath,
        /// The length of its target in bytes.
        len: usize,
    },
    /// A file or directory has more links than `i_links_count` holds.
    #[error("{path} has {links} hard links; ext4 allows at most 65000")]
    TooManyLinks {
        /// The file or directory.
        path: TreePath,
        /// The links it would have.
        links: u64,
    },
    /// A file needs more extents than this writer's depth-1 trees hold.
    #[error("{what} needs {extents} extents, more than the {max} this writer supports; make the file smaller")]
    TooFragmented {
        /// The file or directory.
        what: String,
        /// The extents it needs.
        extents: usize,
        /// The extents this writer supports.
        max: usize,
    },
    /// A hard link's target is missing from the tree or not a regular file.
    #[error("hard link {link} points to {target}, which is not a regular file in the tree")]
    BadHardLink {
        /// The hard link.
        link: TreePath,
        /// The path it names.
        target: TreePath,
    },
    /// The tree holds a `/lost+found` that is not a directory.
    #[error("/lost+found in the tree is not a directory; ext4 reserves that name for fsck's directory")]
    LostFoundNotDirectory,
    /// Placing bytes in the image failed (a bug in this writer's layout).
    #[error("cannot place {what} in the image: {source}")]
    Placement {
        /// The structure being placed.
        what: String,
        /// Why the sparse image refused it.
        source: SparseError,
    },
}
