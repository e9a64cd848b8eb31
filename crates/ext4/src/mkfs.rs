//! Putting a filesystem together: number the inodes, allocate blocks, encode every structure
//! and place it in a [`SparseImage`].
//!
//! Allocation is strictly sequential (directories and file data in tree order, from the first
//! free block of group 0 onwards; inodes from 12 upwards), which keeps each file's blocks
//! contiguous within a group and makes every group's usage a prefix that two counts describe.

use std::collections::BTreeMap;
use std::sync::Arc;

use uvmkit_disk::{ExtentData, SparseImage};
use uvmkit_filetree::{FileData, FileTree, Node, NodeKind, TreePath};

use crate::checksum::{crc32c, inode_seed};
use crate::dir::{self, DirEntry};
use crate::extent::{self, Run};
use crate::group::{build_group, GroupUsage};
use crate::inode::{Inode, EXTENTS_FL};
use crate::journal::{self, MIN_JOURNAL_BLOCKS};
use crate::layout::{Geometry, BLOCK_SIZE, INODES_PER_BLOCK, INODE_SIZE};
use crate::superblock::*;
use crate::{Ext4Error, Ext4Options};

/// Inode of the root directory.
const ROOT_INO: u32 = 2;
/// Inode of the journal.
const JOURNAL_INO: u32 = 8;
/// Inode of `/lost+found`, the first non-reserved inode, as mke2fs makes it.
const LOST_FOUND_INO: u32 = 11;
/// Blocks mke2fs gives `/lost+found` so fsck can add entries without allocating.
const LOST_FOUND_BLOCKS: usize = 4;
/// Most links `i_links_count` may record (`EXT4_LINK_MAX`).
const LINK_MAX: u64 = 65000;

/// Formats an ext4 filesystem of `opts.size_bytes` holding `tree`.
pub fn build_ext4(tree: &FileTree, opts: &Ext4Options) -> Result<SparseImage, Ext4Error> {
    if opts.label.len() > 16 {
        return Err(Ext4Error::LabelTooLong(opts.label.clone()));
    }
    if opts.reserved_percent > 50 {
        return Err(Ext4Error::BadReservedPercent(opts.reserved_percent));
    }
    let geo = Geometry::new(opts.size_bytes, opts.inode_ratio)?;
    let journal_blocks = match opts.journal_blocks {
        None => journal::default_journal_blocks(geo.blocks_count),
        Some(0) => None,
        Some(n) if n < MIN_JOURNAL_BLOCKS || n > geo.blocks_count / 2 => return Err(Ext4Error::BadJournalSize(n)),
        Some(n) => Some(n),
    };
    let lost_found = Node {
        kind: NodeKind::Directory,
        mode: 0o700,
        uid: 0,
        gid: 0,
    };
    let plan = Plan::new(tree, &lost_found)?;
    if u64::from(plan.max_ino) > u64::from(geo.inodes_count()) {
        return Err(Ext4Error::OutOfInodes {
            needed: u64::from(plan.max_ino) - 10,
            available: geo.inodes_count() - 10,
        });
    }

    let mut fs = Writer {
        image: SparseImage::new(opts.size_bytes),
        alloc: BlockAllocator {
            geo: &geo,
            group: 0,
            next: geo.first_data_block(0),
        },
        inodes: vec![Inode::default(); plan.max_ino as usize],
        fs_seed: crc32c(!0, &opts.uuid),
        time: opts.mtime,
    };
    // Root and lost+found first, then the journal, then everything else in tree order.
    fs.write_node(&plan, 0)?;
    fs.write_node(&plan, 1)?;
    let journal_backup = match journal_blocks {
        Some(blocks) => Some(fs.write_journal(blocks, &opts.uuid)?),
        None => None,
    };
    for index in 2..plan.nodes.len() {
        fs.write_node(&plan, index)?;
    }
    fs.write_inode_tables(&geo)?;

    // Groups: bitmaps, descriptors and the free counts the superblock sums up.
    let mut gdt = vec![0u8; geo.gdt_blocks as usize * BLOCK_SIZE as usize];
    let (mut free_blocks, mut free_inodes) = (0u32, 0u32);
    let mut directories = vec![0u32; geo.groups as usize];
    for n in plan.nodes.iter().filter(|n| n.node.kind == NodeKind::Directory) {
        directories[((n.ino - 1) / geo.inodes_per_group) as usize] += 1;
    }
    for g in 0..geo.groups {
        let usage = fs.usage(&geo, g, directories[g as usize]);
        let group = build_group(&geo, g, &usage, fs.fs_seed, opts.assume_zeroed);
        let at = (g * crate::layout::DESC_SIZE) as usize;
        gdt[at..at + group.descriptor.len()].copy_from_slice(&group.descriptor);
        free_blocks += group.free_blocks;
        free_inodes += group.free_inodes;
        if let Some(bitmap) = group.block_bitmap {
            fs.put_block(geo.block_bitmap(g), bitmap, "a block bitmap")?;
        }
        if let Some(bitmap) = group.inode_bitmap {
            fs.put_block(geo.inode_bitmap(g), bitmap, "an inode bitmap")?;
        }
    }

    let mut compat = COMPAT_EXT_ATTR;
    if journal_blocks.is_some() {
        compat |= COMPAT_HAS_JOURNAL;
    }
    let sb = Superblock {
        geometry: geo.clone(),
        reserved_blocks: (u64::from(geo.blocks_count) * u64::from(opts.reserved_percent) / 100) as u32,
        free_blocks,
        free_inodes,
        time: opts.mtime,
        uuid: opts.uuid,
        label: opts.label.as_bytes().to_vec(),
        hash_seed: opts.hash_seed,
        feature_compat: compat,
        feature_incompat: INCOMPAT_FILETYPE | INCOMPAT_EXTENTS,
        feature_ro_compat: RO_COMPAT_SPARSE_SUPER
            | RO_COMPAT_LARGE_FILE
            | RO_COMPAT_HUGE_FILE
            | RO_COMPAT_DIR_NLINK
            | RO_COMPAT_EXTRA_ISIZE
            | RO_COMPAT_METADATA_CSUM,
        journal_inode: if journal_blocks.is_some() { JOURNAL_INO } else { 0 },
        journal_backup,
    };
    // Every copy of the descriptor table is the same bytes: share them.
    let gdt = Arc::new(gdt);
    for g in (0..geo.groups).filter(|&g| geo.has_super(g)) {
        // Group 0's superblock sits 1024 bytes into block 0 (the first 1024 bytes are left
        // for a boot sector, and written as zeros to clear old signatures); backups start
        // their group's first block.
        let mut block = vec![0u8; BLOCK_SIZE as usize];
        let at = if g == 0 { 1024 } else { 0 };
        block[at..at + 1024].copy_from_slice(&sb.encode(g));
        fs.put_block(geo.group_start(g), block, "a superblock")?;
        let gdt_at = (u64::from(geo.group_start(g)) + 1) * BLOCK_SIZE;
        fs.put(gdt_at, ExtentData::Bytes(gdt.clone()), &|| {
            "a group descriptor table".to_string()
        })?;
    }
    Ok(fs.image)
}

/// One inode-bearing node of the tree, numbered, with its directory entries.
struct Planned<'t> {
    path: TreePath,
    node: &'t Node,
    ino: u32,
    links: u64,
    /// For directories: the entries after `.` and `..`.
    children: Vec<(&'t str, u32, u8)>,
    parent_ino: u32,
}

/// The tree, numbered: every node that owns an inode, root first and lost+found second.
struct Plan<'t> {
    nodes: Vec<Planned<'t>>,
    max_ino: u32,
}

impl<'t> Plan<'t> {
    fn new(tree: &'t FileTree, default_lost_found: &'t Node) -> Result<Plan<'t>, Ext4Error> {
        let lost_found_path = TreePath::new("lost+found").expect("a valid constant path");
        let mut nodes: Vec<Planned<'t>> = Vec::new();
        let mut index: BTreeMap<&TreePath, usize> = BTreeMap::new();
        let planned = |path: &TreePath, node: &'t Node, ino| Planned {
            path: path.clone(),
            node,
            ino,
            links: 1,
            children: Vec::new(),
            parent_ino: ROOT_INO,
        };
        let root = tree.get(&TreePath::root()).expect("a FileTree always has a root");
        nodes.push(planned(&TreePath::root(), root, ROOT_INO));
        let lost_found = match tree.get(&lost_found_path) {
            Some(n) if n.kind == NodeKind::Directory => n,
            Some(_) => return Err(Ext4Error::LostFoundNotDirectory),
            None => default_lost_found,
        };
        nodes.push(planned(&lost_found_path, lost_found, LOST_FOUND_INO));
        index.insert(&lost_found_path, 1);

        // Number the inodes in tree order; hard links own none.
        let mut next_ino = LOST_FOUND_INO + 1;
        for (path, node) in tree.iter() {
            if path.is_root() || *path == lost_found_path || matches!(node.kind, NodeKind::HardLink(_)) {
                continue;
            }
            index.insert(path, nodes.len());
            nodes.push(planned(path, node, next_ino));
            next_ino += 1;
        }
        let ino_index = |p: &TreePath, index: &BTreeMap<&TreePath, usize>| {
            if p.is_root() {
                Some(0)
            } else {
                index.get(p).copied()
            }
        };

        // Directory entries and link counts. Names borrow from the tree's paths.
        let mut entries: Vec<(&'t str, TreePath, usize, u8)> = Vec::new();
        if !tree.contains(&lost_found_path) {
            entries.push(("lost+found", lost_found_path.clone(), 1, dir::FT_DIR));
        }
        for (path, node) in tree.iter().filter(|(p, _)| !p.is_root()) {
            let target = match &node.kind {
                NodeKind::HardLink(target) => match ino_index(target, &index) {
                    Some(i) if matches!(nodes[i].node.kind, NodeKind::File(_)) => i,
                    _ => {
                        return Err(Ext4Error::BadHardLink {
                            link: path.clone(),
                            target: target.clone(),
                        })
                    }
                },
                _ => ino_index(path, &index).expect("numbered above"),
            };
            entries.push((path.file_name(), path.clone(), target, file_type(node)));
        }
        for (name, path, target, ft) in entries {
            if name.len() > 255 {
                return Err(Ext4Error::NameTooLong(path));
            }
            let parent = path.parent().expect("only the root has no parent");
            let p = ino_index(&parent, &index).expect("a FileTree holds every parent");
            if ft == dir::FT_DIR {
                nodes[p].links += 1; // the child's ".."
                nodes[target].parent_ino = nodes[p].ino;
            } else if nodes[target].path != path {
                nodes[target].links += 1; // one more name for the same inode
            }
            let child_ino = nodes[target].ino;
            nodes[p].children.push((name, child_ino, ft));
        }
        for n in &mut nodes {
            if n.node.kind == NodeKind::Directory {
                n.links += 1; // its own "."
            } else if n.links > LINK_MAX {
                return Err(Ext4Error::TooManyLinks {
                    path: n.path.clone(),
                    links: n.links,
                });
            }
        }
        Ok(Plan {
            nodes,
            max_ino: next_ino - 1,
        })
    }
}

/// The directory-entry file type of a node (a hard link names a regular file).
fn file_type(node: &Node) -> u8 {
    match node.kind {
        NodeKind::Directory => dir::FT_DIR,
        NodeKind::File(_) | NodeKind::HardLink(_) => dir::FT_REG_FILE,
        NodeKind::Symlink(_) => dir::FT_SYMLINK,
        NodeKind::CharDevice { .. } => dir::FT_CHRDEV,
        NodeKind::BlockDevice { .. } => dir::FT_BLKDEV,
        NodeKind::Fifo => dir::FT_FIFO,
    }
}

/// Hands out blocks in order, group by group, skipping each group's metadata.
struct BlockAllocator<'g> {
    geo: &'g Geometry,
    /// The group `next` lies in.
    group: u32,
    /// The next free block.
    next: u32,
}

impl BlockAllocator<'_> {
    /// `count` blocks as runs that each stay within a group, numbered from logical block 0.
    fn allocate(&mut self, count: u64, what: &dyn Fn() -> String) -> Result<Vec<Run>, Ext4Error> {
        let mut runs = Vec::new();
        let mut logical = 0u64;
        while logical < count {
            if self.group >= self.geo.groups {
                return Err(Ext4Error::OutOfSpace(what()));
            }
            let end = self.geo.group_start(self.group) + self.geo.group_blocks(self.group);
            if self.next == end {
                self.group += 1;
                if self.group < self.geo.groups {
                    self.next = self.geo.first_data_block(self.group);
                }
                continue;
            }
            let len = (count - logical).min(u64::from(end - self.next)) as u32;
            let logical32 = u32::try_from(logical).map_err(|_| Ext4Error::OutOfSpace(what()))?;
            runs.push(Run {
                logical: logical32,
                start: self.next,
                len,
            });
            self.next += len;
            logical += u64::from(len);
        }
        Ok(runs)
    }

    /// Data blocks in use in group `g`.
    fn used_in(&self, g: u32) -> u32 {
        match g.cmp(&self.group) {
            std::cmp::Ordering::Less => self.geo.data_blocks(g),
            std::cmp::Ordering::Equal => self.next - self.geo.first_data_block(g),
            std::cmp::Ordering::Greater => 0,
        }
    }
}

/// The filesystem being written.
struct Writer<'g> {
    image: SparseImage,
    alloc: BlockAllocator<'g>,
    /// Inode `n` is `inodes[n - 1]`; reserved inodes stay all-zero.
    inodes: Vec<Inode>,
    fs_seed: u32,
    time: u32,
}

impl Writer<'_> {
    /// Allocates, encodes and places one planned node and records its inode.
    fn write_node(&mut self, plan: &Plan, index: usize) -> Result<(), Ext4Error> {
        let n = &plan.nodes[index];
        let what = || n.path.to_string();
        let mut inode = Inode {
            mode: n.node.st_mode() as u16,
            uid: n.node.uid,
            gid: n.node.gid,
            links: n.links.min(LINK_MAX) as u16,
            time: self.time,
            ..Inode::default()
        };
        match &n.node.kind {
            NodeKind::Directory => {
                // dir_nlink: a directory with too many subdirectories counts 1 link.
                if n.links > LINK_MAX {
                    inode.links = 1;
                }
                let mut entries = vec![
                    DirEntry {
                        inode: n.ino,
                        name: b".",
                        file_type: dir::FT_DIR,
                    },
                    DirEntry {
                        inode: n.parent_ino,
                        name: b"..",
                        file_type: dir::FT_DIR,
                    },
                ];
                entries.extend(n.children.iter().map(|&(name, inode, file_type)| DirEntry {
                    inode,
                    name: name.as_bytes(),
                    file_type,
                }));
                let min_blocks = if n.ino == LOST_FOUND_INO { LOST_FOUND_BLOCKS } else { 1 };
                let bytes = dir::encode(&entries, min_blocks, inode_seed(self.fs_seed, n.ino, 0));
                inode.size = bytes.len() as u64;
                let runs = self.alloc.allocate(inode.size / BLOCK_SIZE, &what)?;
                self.put_runs(&runs, &bytes, &what)?;
                self.map_blocks(&mut inode, n.ino, &runs, &what)?;
            }
            NodeKind::File(data) => {
                inode.size = data.len();
                let runs = self.alloc.allocate(data.len().div_ceil(BLOCK_SIZE), &what)?;
                for run in &runs {
                    let from = u64::from(run.logical) * BLOCK_SIZE;
                    let len = (u64::from(run.len) * BLOCK_SIZE).min(data.len() - from);
                    let extent = match data {
                        FileData::Inline(bytes) => {
                            ExtentData::Bytes(Arc::new(bytes[from as usize..(from + len) as usize].to_vec()))
                        }
                        FileData::HostFile { path, .. } => ExtentData::HostFile {
                            path: path.clone(),
                            offset: from,
                            len,
                        },
                    };
                    self.put(u64::from(run.start) * BLOCK_SIZE, extent, &what)?;
                }
                self.map_blocks(&mut inode, n.ino, &runs, &what)?;
            }
            NodeKind::Symlink(target) => {
                let len = target.len();
                inode.size = len as u64;
                if len == 0 || len >= BLOCK_SIZE as usize {
                    return Err(Ext4Error::BadSymlink {
                        path: n.path.clone(),
                        len,
                    });
                }
                if len < 60 {
                    // A fast symlink: the target lives in i_block, no blocks, no extents.
                    inode.block[..len].copy_from_slice(target.as_bytes());
                } else {
                    let runs = self.alloc.allocate(1, &what)?;
                    self.put_runs(&runs, target.as_bytes(), &what)?;
                    self.map_blocks(&mut inode, n.ino, &runs, &what)?;
                }
            }
            NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
                // "Inode: i_block" for devices: the old 8:8 encoding in word 0 when it fits,
                // else the new encoding (minor low 8 | major << 8 | minor high << 20) in word 1.
                let (major, minor) = (*major, *minor);
                if major < 256 && minor < 256 {
                    put32(&mut inode.block, 0, major << 8 | minor);
                } else {
                    put32(
                        &mut inode.block,
                        4,
                        (minor & 0xFF) | (major << 8) | ((minor & !0xFF) << 12),
                    );
                }
            }
            NodeKind::Fifo => {}
            NodeKind::HardLink(_) => unreachable!("hard links own no inode and are never planned"),
        }
        self.inodes[n.ino as usize - 1] = inode;
        Ok(())
    }

    /// Gives `inode` an extent tree over `runs`, allocating and placing leaf blocks when the
    /// root cannot hold them, and counts its blocks.
    fn map_blocks(
        &mut self,
        inode: &mut Inode,
        ino: u32,
        runs: &[Run],
        what: &dyn Fn() -> String,
    ) -> Result<(), Ext4Error> {
        let extents = extent::to_extents(runs);
        let tree_blocks = extent::tree_blocks_needed(extents.len()).ok_or_else(|| Ext4Error::TooFragmented {
            what: what(),
            extents: extents.len(),
            max: extent::MAX_EXTENTS,
        })?;
        let leaf_blocks: Vec<u32> = self
            .alloc
            .allocate(tree_blocks as u64, what)?
            .iter()
            .flat_map(|r| r.start..r.start + r.len)
            .collect();
        let tree = extent::encode(&extents, &leaf_blocks, ino, self.fs_seed);
        for (block, bytes) in tree.leaves {
            self.put_block(block, bytes, "an extent tree block")?;
        }
        inode.block = tree.root;
        inode.flags |= EXTENTS_FL;
        let blocks: u64 = runs.iter().map(|r| u64::from(r.len)).sum::<u64>() + tree_blocks as u64;
        inode.sectors = blocks * (BLOCK_SIZE / 512);
        Ok(())
    }

    /// Writes the journal (inode 8) and returns the superblock's backup of its inode.
    fn write_journal(&mut self, blocks: u32, uuid: &[u8; 16]) -> Result<[u32; 17], Ext4Error> {
        let what = || "the journal".to_string();
        let runs = self.alloc.allocate(u64::from(blocks), &what)?;
        // Only the journal superblock is data; the log after it is never read while empty.
        let at = u64::from(runs[0].start) * BLOCK_SIZE;
        self.put(
            at,
            ExtentData::Bytes(Arc::new(journal::superblock(blocks, uuid))),
            &what,
        )?;
        let mut inode = Inode {
            mode: 0o100600,
            size: u64::from(blocks) * BLOCK_SIZE,
            links: 1,
            time: self.time,
            ..Inode::default()
        };
        self.map_blocks(&mut inode, JOURNAL_INO, &runs, &what)?;
        let mut backup = [0u32; 17];
        for (i, word) in inode.block.chunks(4).enumerate() {
            backup[i] = u32::from_le_bytes(word.try_into().expect("4-byte chunks"));
        }
        backup[15] = (inode.size >> 32) as u32;
        backup[16] = inode.size as u32;
        self.inodes[JOURNAL_INO as usize - 1] = inode;
        Ok(backup)
    }

    /// Places every used inode, whole inode-table blocks at a time; the rest stays a hole.
    fn write_inode_tables(&mut self, geo: &Geometry) -> Result<(), Ext4Error> {
        let ipg = geo.inodes_per_group as usize;
        let inodes = std::mem::take(&mut self.inodes);
        for (g, chunk) in inodes.chunks(ipg).enumerate() {
            let blocks = chunk.len().div_ceil(INODES_PER_BLOCK as usize);
            let mut table = vec![0u8; blocks * BLOCK_SIZE as usize];
            for (i, inode) in chunk.iter().enumerate() {
                let ino = (g * ipg + i + 1) as u32;
                let at = i * INODE_SIZE as usize;
                table[at..at + INODE_SIZE as usize].copy_from_slice(&inode.encode(ino, self.fs_seed));
            }
            self.put_block(geo.inode_table(g as u32), table, "an inode table")?;
        }
        self.inodes = inodes;
        Ok(())
    }

    /// What group `g`, holding `directories` directories, uses.
    fn usage(&self, geo: &Geometry, g: u32, directories: u32) -> GroupUsage {
        let first = g * geo.inodes_per_group;
        let inodes = (self.inodes.len() as u32)
            .saturating_sub(first)
            .min(geo.inodes_per_group);
        GroupUsage {
            data_blocks: self.alloc.used_in(g),
            inodes,
            directories,
        }
    }

    /// Places `bytes` across `runs` (logical block order).
    fn put_runs(&mut self, runs: &[Run], bytes: &[u8], what: &dyn Fn() -> String) -> Result<(), Ext4Error> {
        for run in runs {
            let from = (u64::from(run.logical) * BLOCK_SIZE) as usize;
            let to = (from + run.len as usize * BLOCK_SIZE as usize).min(bytes.len());
            let data = ExtentData::Bytes(Arc::new(bytes[from..to].to_vec()));
            self.put(u64::from(run.start) * BLOCK_SIZE, data, what)?;
        }
        Ok(())
    }

    fn put_block(&mut self, block: u32, bytes: Vec<u8>, what: &str) -> Result<(), Ext4Error> {
        self.put(
            u64::from(block) * BLOCK_SIZE,
            ExtentData::Bytes(Arc::new(bytes)),
            &|| what.to_string(),
        )
    }

    fn put(&mut self, offset: u64, data: ExtentData, what: &dyn Fn() -> String) -> Result<(), Ext4Error> {
        self.image
            .put(offset, data)
            .map_err(|source| Ext4Error::Placement { what: what(), source })
    }
}
