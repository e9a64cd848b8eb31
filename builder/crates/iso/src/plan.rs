//! The layout of the volume: directories with their records, the path tables, continuation
//! areas and file extents, every sector number fixed before a byte is written; then writing
//! it all in one pass (ECMA-119 sections 6 to 9).

use std::collections::BTreeMap;

use uvmkit_filetree::{FileData, FileTree, Node, NodeKind, TreePath};

use crate::both::{both_u16, both_u32};
use crate::names::{self, IsoName};
use crate::rrip::{self, SuspLayout, CONTINUATION_MAX};
use crate::time::{record_date, unspecified_volume_date, volume_date};
use crate::{eltorito, BootImage, IsoError, Output, PVD_LBA, SECTOR};

/// Directory levels ISO 9660 allows below the root (ECMA-119 6.8.2.1 counts the root as 1
/// of 8).
const MAX_DEPTH: usize = 7;
/// Bytes of a directory record before its file identifier (ECMA-119 9.1).
const RECORD_FIXED: usize = 33;
/// Largest directory record we write; even, so every record keeps an even length.
const RECORD_MAX: usize = 254;
/// Largest file one extent can describe (the data length field is 32 bits).
const EXTENT_MAX: u64 = u32::MAX as u64;

/// The boot images, by their place in the tree.
pub(crate) struct BootFiles<'a> {
    /// `isolinux.bin`'s path and bytes (its boot information table is filled in here).
    pub bios: Option<(&'a TreePath, Vec<u8>)>,
    /// The EFI image's path and contents.
    pub efi: Option<(&'a TreePath, &'a BootImage)>,
    /// Files that are ranges of the EFI image: path, byte offset (a multiple of 2048), length.
    pub aliases: Vec<(&'a TreePath, u64, u64)>,
    /// Start the EFI image on an even sector (a 4 KiB boundary for its GPT partition).
    pub align_efi: bool,
}

/// Where a file's bytes come from.
pub(crate) enum Source<'a> {
    /// An ordinary file of the tree.
    Data(&'a FileData),
    /// Bytes prepared here (ISOLINUX with its boot information table).
    Bytes(Vec<u8>),
    /// The EFI boot image.
    Image(&'a BootImage),
    /// A range of the EFI image starting `offset` bytes in; nothing of its own is written.
    Alias { offset: u64 },
}

/// One file extent.
struct FilePlan<'a> {
    path: TreePath,
    source: Source<'a>,
    size: u64,
    lba: u32,
    nlink: u32,
}

/// POSIX attributes for Rock Ridge `PX`.
#[derive(Clone, Copy)]
struct Attrs {
    st_mode: u32,
    nlink: u32,
    uid: u32,
    gid: u32,
}

impl Attrs {
    fn of(node: &Node, nlink: u32) -> Attrs {
        Attrs {
            st_mode: node.st_mode(),
            nlink,
            uid: node.uid,
            gid: node.gid,
        }
    }

    /// The Rock Ridge `PX` entry (RRIP 4.1.1) of these attributes.
    fn px(self) -> Vec<u8> {
        rrip::px(self.st_mode, self.nlink, self.uid, self.gid)
    }
}

/// What a directory record points at.
#[derive(Clone, Copy)]
enum Target {
    Dir(usize),
    File(usize),
    /// Symbolic links, devices, FIFOs: no extent.
    Nothing,
}

/// One directory record (ECMA-119 9.1) with its Rock Ridge entries.
struct Record {
    identifier: Vec<u8>,
    target: Target,
    susp: SuspLayout,
    /// Sector and byte offset of each continuation area, once placed.
    areas_at: Vec<(u32, u32)>,
}

impl Record {
    /// Bytes before the system use field: fixed part, identifier, and the padding byte that
    /// follows an identifier of even length (9.1.12).
    fn base_len(identifier: &[u8]) -> usize {
        RECORD_FIXED + identifier.len() + usize::from(identifier.len().is_multiple_of(2))
    }

    fn len(&self) -> usize {
        (Self::base_len(&self.identifier) + self.susp.inline_len()).next_multiple_of(2)
    }
}

/// One directory and its extent.
pub(crate) struct DirPlan {
    parent: usize,
    /// The identifier in its parent (`None` for the root).
    name: Option<IsoName>,
    records: Vec<Record>,
    lba: u32,
    size: u32,
}

/// The whole volume, placed.
pub(crate) struct Layout<'a> {
    /// Directories in path table order (the root first).
    pub dirs: Vec<DirPlan>,
    files: Vec<FilePlan<'a>>,
    path_table_len: u32,
    l_path_table: u32,
    m_path_table: u32,
    continuation_lba: u32,
    continuation_sectors: u32,
    /// Sector of the boot catalog.
    pub catalog_lba: Option<u32>,
    /// Sector of `isolinux.bin`.
    pub bios_lba: Option<u32>,
    /// Sector of the EFI image.
    pub efi_lba: Option<u32>,
    efi_len: Option<u64>,
    /// First sector after the last file.
    pub data_end: u32,
    /// The volume space size in sectors, padding included; set by the caller.
    pub volume_sectors: u32,
    epoch: i64,
}

impl<'a> Layout<'a> {
    /// Lays out `tree`, whose boot image paths hold placeholders, with the boot images.
    pub fn plan(tree: &'a FileTree, boot: BootFiles<'a>, epoch: i64) -> Result<Layout<'a>, IsoError> {
        let Inventory {
            dir_index,
            file_index,
            tree_dirs,
            mut files,
            bios_file,
            efi_file,
        } = Inventory::take(tree, &boot)?;
        let dirs = directories(tree, &tree_dirs, &dir_index, &file_index, &files, record_date(epoch));
        let mut dirs = in_path_table_order(dirs)?;
        let path_table_len = size_directories(&mut dirs);
        let sectors = Sectors::place(&mut dirs, &mut files, &boot, efi_file, path_table_len)?;
        if let Some(i) = bios_file {
            let file_lba = files[i].lba;
            let Source::Bytes(bytes) = &mut files[i].source else {
                unreachable!("the BIOS image is planned from bytes")
            };
            eltorito::patch_boot_info_table(bytes, PVD_LBA, file_lba);
        }

        Ok(Layout {
            bios_lba: bios_file.map(|i| files[i].lba),
            efi_lba: efi_file.map(|i| files[i].lba),
            efi_len: efi_file.map(|i| files[i].size),
            dirs,
            files,
            path_table_len,
            l_path_table: sectors.l_path_table,
            m_path_table: sectors.m_path_table,
            continuation_lba: sectors.continuation_lba,
            continuation_sectors: sectors.continuation_sectors,
            catalog_lba: sectors.catalog_lba,
            data_end: sectors.data_end,
            volume_sectors: sectors.data_end,
            epoch,
        })
    }

    /// Directory entries that are not directories.
    pub fn entry_count(&self) -> usize {
        self.dirs
            .iter()
            .flat_map(|d| d.records[2..].iter())
            .filter(|r| !matches!(r.target, Target::Dir(_)))
            .count()
    }

    /// Writes sectors 16 to the end of the data: descriptors, path tables, directories,
    /// continuation areas, boot catalog and files.
    pub fn write_volume<W: std::io::Write>(
        &self,
        w: &mut Output<'_, W>,
        volume_id: &str,
        epoch: i64,
        bios: bool,
        efi: bool,
    ) -> Result<(), IsoError> {
        w.zeros_to_sector(PVD_LBA)?;
        w.write(&self.primary_volume_descriptor(volume_id, epoch))?;
        if let Some(catalog) = self.catalog_lba {
            w.write(&eltorito::boot_record(catalog))?;
        }
        // Volume descriptor set terminator (8.3).
        let mut terminator = [0u8; SECTOR as usize];
        terminator[0] = 255;
        terminator[1..6].copy_from_slice(b"CD001");
        terminator[6] = 1;
        w.write(&terminator)?;

        w.zeros_to_sector(self.l_path_table)?;
        w.write(&self.path_table(false))?;
        w.zeros_to_sector(self.m_path_table)?;
        w.write(&self.path_table(true))?;

        for d in &self.dirs {
            w.zeros_to_sector(d.lba)?;
            let mut extent = Vec::with_capacity(d.size as usize);
            for r in &d.records {
                let bytes = self.record(r);
                if extent.len() % SECTOR as usize + bytes.len() > SECTOR as usize {
                    extent.resize(extent.len().next_multiple_of(SECTOR as usize), 0);
                }
                extent.extend_from_slice(&bytes);
            }
            extent.resize(d.size as usize, 0);
            w.write(&extent)?;
        }

        if self.continuation_sectors > 0 {
            w.zeros_to_sector(self.continuation_lba)?;
            let mut areas = vec![0u8; (self.continuation_sectors as u64 * SECTOR) as usize];
            for r in self.dirs.iter().flat_map(|d| d.records.iter()) {
                for (a, &(lba, offset)) in r.areas_at.iter().enumerate() {
                    let mut bytes = r.susp.areas[a].clone();
                    if let Some(&(next_lba, next_offset)) = r.areas_at.get(a + 1) {
                        bytes.extend(rrip::ce(next_lba, next_offset, r.susp.area_len(a + 1) as u32));
                    }
                    let at = ((lba - self.continuation_lba) as u64 * SECTOR) as usize + offset as usize;
                    areas[at..at + bytes.len()].copy_from_slice(&bytes);
                }
            }
            w.write(&areas)?;
        }

        if let Some(catalog) = self.catalog_lba {
            w.zeros_to_sector(catalog)?;
            let efi_len = if efi { self.efi_len } else { None };
            let entries = crate::boot_entries(self, efi_len);
            debug_assert_eq!(entries.len(), usize::from(bios) + usize::from(efi));
            w.write(&eltorito::catalog(&entries))?;
        }

        let mut by_lba: Vec<&FilePlan<'_>> = self
            .files
            .iter()
            .filter(|f| f.size > 0 && !matches!(f.source, Source::Alias { .. }))
            .collect();
        by_lba.sort_by_key(|f| f.lba);
        for f in by_lba {
            w.zeros_to_sector(f.lba)?;
            w.source(&f.source, f.size, &f.path.to_string())?;
        }
        w.zeros_to_sector(self.data_end)?;
        Ok(())
    }

    /// The primary volume descriptor (ECMA-119 8.4).
    fn primary_volume_descriptor(&self, volume_id: &str, epoch: i64) -> [u8; SECTOR as usize] {
        let mut d = [0u8; SECTOR as usize];
        d[0] = 1;
        d[1..6].copy_from_slice(b"CD001");
        d[6] = 1;
        fill_text(&mut d[8..40], ""); // system identifier
        fill_text(&mut d[40..72], volume_id);
        d[80..88].copy_from_slice(&both_u32(self.volume_sectors));
        d[120..124].copy_from_slice(&both_u16(1)); // volume set size
        d[124..128].copy_from_slice(&both_u16(1)); // volume sequence number
        d[128..132].copy_from_slice(&both_u16(SECTOR as u16)); // logical block size
        d[132..140].copy_from_slice(&both_u32(self.path_table_len));
        d[140..144].copy_from_slice(&self.l_path_table.to_le_bytes());
        d[148..152].copy_from_slice(&self.m_path_table.to_be_bytes());
        let root = self.record(&Record {
            identifier: vec![0],
            target: Target::Dir(0),
            susp: SuspLayout::default(),
            areas_at: Vec::new(),
        });
        d[156..190].copy_from_slice(&root);
        fill_text(&mut d[190..318], ""); // volume set
        fill_text(&mut d[318..446], ""); // publisher
        fill_text(&mut d[446..574], ""); // data preparer
        fill_text(&mut d[574..702], "UVMKIT"); // application
        fill_text(&mut d[702..813], ""); // copyright, abstract, bibliographic file ids
        let date = volume_date(epoch);
        d[813..830].copy_from_slice(&date); // creation
        d[830..847].copy_from_slice(&date); // modification
        d[847..864].copy_from_slice(&unspecified_volume_date()); // expiration
        d[864..881].copy_from_slice(&date); // effective
        d[881] = 1; // file structure version
        d
    }

    /// One directory record (ECMA-119 9.1) with its inline system use entries.
    fn record(&self, r: &Record) -> Vec<u8> {
        let (extent, size) = match r.target {
            Target::Dir(i) => (self.dirs[i].lba, self.dirs[i].size),
            Target::File(i) => (self.files[i].lba, self.files[i].size as u32),
            Target::Nothing => (0, 0),
        };
        let len = r.len();
        let mut b = Vec::with_capacity(len);
        b.push(len as u8);
        b.push(0); // extended attribute record length
        b.extend_from_slice(&both_u32(extent));
        b.extend_from_slice(&both_u32(size));
        b.extend_from_slice(&record_date(self.epoch));
        b.push(if matches!(r.target, Target::Dir(_)) { 0x02 } else { 0 }); // file flags
        b.push(0); // file unit size
        b.push(0); // interleave gap
        b.extend_from_slice(&both_u16(1)); // volume sequence number
        b.push(r.identifier.len() as u8);
        b.extend_from_slice(&r.identifier);
        if r.identifier.len().is_multiple_of(2) {
            b.push(0);
        }
        b.extend_from_slice(&r.susp.inline);
        if let Some(&(lba, offset)) = r.areas_at.first() {
            b.extend(rrip::ce(lba, offset, r.susp.area_len(0) as u32));
        }
        b.resize(len, 0);
        b
    }

    /// The L (little-endian) or M (big-endian) path table (ECMA-119 9.4).
    fn path_table(&self, big_endian: bool) -> Vec<u8> {
        let mut t = Vec::with_capacity(self.path_table_len as usize);
        for d in &self.dirs {
            let id = d.name.as_ref().map_or(vec![0], IsoName::identifier);
            t.push(id.len() as u8);
            t.push(0);
            let parent = (d.parent + 1) as u16; // directory numbers start at 1
            if big_endian {
                t.extend_from_slice(&d.lba.to_be_bytes());
                t.extend_from_slice(&parent.to_be_bytes());
            } else {
                t.extend_from_slice(&d.lba.to_le_bytes());
                t.extend_from_slice(&parent.to_le_bytes());
            }
            t.extend_from_slice(&id);
            if id.len() % 2 == 1 {
                t.push(0);
            }
        }
        t
    }
}

/// The tree's directories and files numbered in tree order, with hard links counted: what the
/// later phases index by path.
struct Inventory<'a> {
    /// Each directory's number in `tree_dirs`.
    dir_index: BTreeMap<&'a TreePath, usize>,
    /// Each regular file's number in `files`.
    file_index: BTreeMap<&'a TreePath, usize>,
    /// The directories, in tree order (the root first).
    tree_dirs: Vec<(&'a TreePath, &'a Node)>,
    /// The file extents, not yet placed.
    files: Vec<FilePlan<'a>>,
    /// Which file is `isolinux.bin`.
    bios_file: Option<usize>,
    /// Which file is the EFI image.
    efi_file: Option<usize>,
}

impl<'a> Inventory<'a> {
    /// Numbers `tree`'s directories and files, giving the boot image paths the boot images'
    /// bytes, and checks the depth (ECMA-119 6.8.2.1) and the extent size limit.
    fn take(tree: &'a FileTree, boot: &BootFiles<'a>) -> Result<Inventory<'a>, IsoError> {
        let mut inv = Inventory {
            dir_index: BTreeMap::new(),
            file_index: BTreeMap::new(),
            tree_dirs: Vec::new(),
            files: Vec::new(),
            bios_file: None,
            efi_file: None,
        };
        let mut bios_bytes = boot.bios.as_ref().map(|(_, b)| b.clone());
        for (path, node) in tree.iter() {
            match &node.kind {
                NodeKind::Directory => {
                    if path.depth() > MAX_DEPTH {
                        return Err(IsoError::TooDeep {
                            path: path.to_string(),
                            depth: path.depth(),
                        });
                    }
                    inv.dir_index.insert(path, inv.tree_dirs.len());
                    inv.tree_dirs.push((path, node));
                }
                NodeKind::File(data) => {
                    let (source, size) = if boot.bios.as_ref().is_some_and(|(p, _)| *p == path) {
                        inv.bios_file = Some(inv.files.len());
                        let bytes = bios_bytes.take().expect("one BIOS image");
                        let len = bytes.len() as u64;
                        (Source::Bytes(bytes), len)
                    } else if let Some((_, image)) = boot.efi.filter(|(p, _)| *p == path) {
                        inv.efi_file = Some(inv.files.len());
                        (Source::Image(image), image.len())
                    } else if let Some(&(_, offset, len)) = boot.aliases.iter().find(|(p, _, _)| *p == path) {
                        (Source::Alias { offset }, len)
                    } else {
                        (Source::Data(data), data.len())
                    };
                    if size > EXTENT_MAX {
                        return Err(IsoError::FileTooLarge {
                            path: path.to_string(),
                            size,
                        });
                    }
                    inv.file_index.insert(path, inv.files.len());
                    inv.files.push(FilePlan {
                        path: path.clone(),
                        source,
                        size,
                        lba: 0,
                        nlink: 1,
                    });
                }
                _ => {}
            }
        }
        for (_, node) in tree.iter() {
            if let NodeKind::HardLink(target) = &node.kind {
                if let Some(&i) = inv.file_index.get(target) {
                    inv.files[i].nlink += 1;
                }
            }
        }
        Ok(inv)
    }
}

/// Each directory of `tree_dirs` with its records: ".", "..", then its children named and
/// sorted (ECMA-119 9.3), every record with its Rock Ridge entries dated `date`.
fn directories<'a>(
    tree: &'a FileTree,
    tree_dirs: &[(&'a TreePath, &'a Node)],
    dir_index: &BTreeMap<&'a TreePath, usize>,
    file_index: &BTreeMap<&'a TreePath, usize>,
    files: &[FilePlan<'a>],
    date: [u8; 7],
) -> Vec<DirPlan> {
    let mut children: Vec<Vec<(&TreePath, &Node)>> = vec![Vec::new(); tree_dirs.len()];
    for (path, node) in tree.iter() {
        if let Some(parent) = path.parent() {
            children[dir_index[&parent]].push((path, node));
        }
    }
    let mut dirs: Vec<DirPlan> = Vec::with_capacity(tree_dirs.len());
    let mut dir_attrs: Vec<Attrs> = Vec::with_capacity(tree_dirs.len());
    for (i, (path, node)) in tree_dirs.iter().enumerate() {
        let subdirs = children[i]
            .iter()
            .filter(|(_, n)| n.kind == NodeKind::Directory)
            .count();
        dir_attrs.push(Attrs::of(node, 2 + subdirs as u32));
        let parent = path.parent().map_or(0, |p| dir_index[&p]);
        dirs.push(DirPlan {
            parent,
            name: None,
            records: Vec::new(),
            lba: 0,
            size: 0,
        });
    }
    for (i, kids) in children.iter().enumerate() {
        let mut entries: Vec<(IsoName, Record)> = Vec::with_capacity(kids.len());
        let named: Vec<(&str, bool)> = kids
            .iter()
            .map(|(p, n)| (p.file_name(), n.kind == NodeKind::Directory))
            .collect();
        for ((path, node), iso) in kids.iter().zip(names::assign(&named)) {
            let (target, attrs) = match &node.kind {
                NodeKind::Directory => {
                    let d = dir_index[path];
                    dirs[d].name = Some(iso.clone());
                    (Target::Dir(d), dir_attrs[d])
                }
                NodeKind::File(_) => {
                    let f = file_index[path];
                    (Target::File(f), Attrs::of(node, files[f].nlink))
                }
                NodeKind::HardLink(t) => match file_index.get(t) {
                    Some(&f) => (Target::File(f), Attrs::of(node, files[f].nlink)),
                    None => (Target::Nothing, Attrs::of(node, 1)),
                },
                _ => (Target::Nothing, Attrs::of(node, 1)),
            };
            let record = child_record(path, node, &iso, target, attrs, date);
            entries.push((iso, record));
        }
        entries.sort_by(|a, b| a.0.sort_key().cmp(&b.0.sort_key()));
        let mut records = Vec::from(dot_records(i, dirs[i].parent, &dir_attrs, date));
        records.extend(entries.into_iter().map(|(_, r)| r));
        dirs[i].records = records;
    }
    dirs
}

/// The record of the child `path` named `iso` in its directory: `PX`, `TF`, `NM`, and `SL` or
/// `PN` for symbolic links and devices (RRIP 4.1).
fn child_record(path: &TreePath, node: &Node, iso: &IsoName, target: Target, attrs: Attrs, date: [u8; 7]) -> Record {
    let mut susp = vec![attrs.px(), rrip::tf(date)];
    susp.extend(rrip::nm(path.file_name().as_bytes()));
    match &node.kind {
        NodeKind::Symlink(t) => susp.extend(rrip::sl(t)),
        NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
            susp.push(rrip::pn(*major, *minor))
        }
        _ => {}
    }
    let identifier = iso.identifier();
    let room = RECORD_MAX - Record::base_len(&identifier);
    Record {
        identifier,
        target,
        susp: rrip::split(susp, room),
        areas_at: Vec::new(),
    }
}

/// "." and ".." of directory `dir` (identifiers 0x00 and 0x01, ECMA-119 6.8.2.2), which come
/// first; the root's "." starts with SUSP's SP and carries the Rock Ridge ER (SUSP 5.3, 5.5).
fn dot_records(dir: usize, parent: usize, dir_attrs: &[Attrs], date: [u8; 7]) -> [Record; 2] {
    let dot_room = RECORD_MAX - Record::base_len(&[0]);
    let mut dot = Vec::new();
    if dir == 0 {
        dot.push(rrip::sp());
    }
    dot.push(dir_attrs[dir].px());
    dot.push(rrip::tf(date));
    if dir == 0 {
        dot.push(rrip::er());
    }
    let dotdot = vec![dir_attrs[parent].px(), rrip::tf(date)];
    [
        Record {
            identifier: vec![0],
            target: Target::Dir(dir),
            susp: rrip::split(dot, dot_room),
            areas_at: Vec::new(),
        },
        Record {
            identifier: vec![1],
            target: Target::Dir(parent),
            susp: rrip::split(dotdot, dot_room),
            areas_at: Vec::new(),
        },
    ]
}

/// `dirs` renumbered into path table order: breadth first, each directory's subdirectories in
/// record order, which is ECMA-119 6.9.1's order (by level, then parent number, then
/// identifier). The path table numbers directories in 16 bits.
fn in_path_table_order(dirs: Vec<DirPlan>) -> Result<Vec<DirPlan>, IsoError> {
    let mut order = vec![0usize];
    let mut next = 0;
    while next < order.len() {
        let d = order[next];
        order.extend(dirs[d].records[2..].iter().filter_map(|r| match r.target {
            Target::Dir(c) => Some(c),
            _ => None,
        }));
        next += 1;
    }
    if order.len() > usize::from(u16::MAX) {
        return Err(IsoError::InvalidPath {
            path: "/".to_string(),
            reason: format!("{} directories exceed the path table's 65535; use fewer", order.len()),
        });
    }
    let mut renumber = vec![0usize; dirs.len()];
    for (new, &old) in order.iter().enumerate() {
        renumber[old] = new;
    }
    let mut slots: Vec<Option<DirPlan>> = dirs.into_iter().map(Some).collect();
    let mut dirs: Vec<DirPlan> = order
        .iter()
        .map(|&old| slots[old].take().expect("each directory once"))
        .collect();
    for d in &mut dirs {
        d.parent = renumber[d.parent];
        for r in &mut d.records {
            if let Target::Dir(c) = &mut r.target {
                *c = renumber[*c];
            }
        }
    }
    Ok(dirs)
}

/// Sets each directory's extent size, records never straddling a sector (ECMA-119 6.8.1.1);
/// returns the length of one path table.
fn size_directories(dirs: &mut [DirPlan]) -> u32 {
    for d in dirs.iter_mut() {
        let mut size = 0usize;
        for r in &d.records {
            let len = r.len();
            if size % SECTOR as usize + len > SECTOR as usize {
                size = size.next_multiple_of(SECTOR as usize);
            }
            size += len;
        }
        d.size = size.next_multiple_of(SECTOR as usize) as u32;
    }
    dirs.iter().map(|d| path_table_record_len(d) as u32).sum()
}

/// Where the parts of the volume that are not directories or files start.
struct Sectors {
    /// The L path table.
    l_path_table: u32,
    /// The M path table.
    m_path_table: u32,
    /// The first continuation area.
    continuation_lba: u32,
    /// Sectors of continuation areas.
    continuation_sectors: u32,
    /// The boot catalog, when there is a boot image.
    catalog_lba: Option<u32>,
    /// First sector after the last file.
    data_end: u32,
}

impl Sectors {
    /// Gives every structure its sectors: 16 PVD, 17 El Torito boot record, then the
    /// terminator, path tables, directories, continuation areas, boot catalog, files, and the
    /// EFI image last (with the aliases inside it).
    fn place(
        dirs: &mut [DirPlan],
        files: &mut [FilePlan<'_>],
        boot: &BootFiles<'_>,
        efi_file: Option<usize>,
        path_table_len: u32,
    ) -> Result<Sectors, IsoError> {
        let path_table_sectors = path_table_len.div_ceil(SECTOR as u32);
        let has_boot = boot.bios.is_some() || boot.efi.is_some();
        let mut lba = PVD_LBA + 1;
        if has_boot {
            lba += 1;
        }
        lba += 1; // terminator
        let l_path_table = lba;
        lba += path_table_sectors;
        let m_path_table = lba;
        lba += path_table_sectors;
        for d in dirs.iter_mut() {
            d.lba = lba;
            lba = checked_add(lba, d.size / SECTOR as u32)?;
        }
        let continuation_lba = lba;
        let continuation_sectors = place_continuation_areas(dirs, continuation_lba);
        lba += continuation_sectors;
        let catalog_lba = has_boot.then_some(lba);
        if has_boot {
            lba += 1;
        }
        for (i, f) in files.iter_mut().enumerate() {
            if Some(i) == efi_file || f.size == 0 || matches!(f.source, Source::Alias { .. }) {
                continue;
            }
            f.lba = lba;
            lba = checked_add(lba, f.size.div_ceil(SECTOR) as u32)?;
        }
        if let Some(i) = efi_file {
            if boot.align_efi {
                lba = lba.next_multiple_of(2);
            }
            let efi_lba = lba;
            files[i].lba = efi_lba;
            lba = checked_add(lba, files[i].size.div_ceil(SECTOR) as u32)?;
            // The caller checked that each alias lies within the image, 2048-aligned.
            for f in files.iter_mut() {
                if let Source::Alias { offset } = f.source {
                    f.lba = efi_lba + (offset / SECTOR) as u32;
                }
            }
        }
        Ok(Sectors {
            l_path_table,
            m_path_table,
            continuation_lba,
            continuation_sectors,
            catalog_lba,
            data_end: lba,
        })
    }
}

/// Packs every record's continuation areas into sectors from `first_lba` on, none straddling
/// a sector (an area lies within one logical block); returns the sectors used.
fn place_continuation_areas(dirs: &mut [DirPlan], first_lba: u32) -> u32 {
    let mut cursor = (0u32, 0u32);
    for d in dirs.iter_mut() {
        for r in &mut d.records {
            for a in 0..r.susp.areas.len() {
                let len = r.susp.area_len(a) as u32;
                if cursor.1 + len > CONTINUATION_MAX as u32 {
                    cursor = (cursor.0 + 1, 0);
                }
                r.areas_at.push((first_lba + cursor.0, cursor.1));
                cursor.1 += len;
            }
        }
    }
    if cursor == (0, 0) {
        0
    } else {
        cursor.0 + 1
    }
}

fn path_table_record_len(d: &DirPlan) -> usize {
    let id_len = d.name.as_ref().map_or(1, |n| n.identifier().len());
    8 + id_len + id_len % 2
}

fn checked_add(lba: u32, sectors: u32) -> Result<u32, IsoError> {
    lba.checked_add(sectors).ok_or(IsoError::ImageTooLarge {
        bytes: (u64::from(lba) + u64::from(sectors)) * SECTOR,
    })
}

/// Fills a text field with `text` padded with spaces (ECMA-119 7.4).
fn fill_text(field: &mut [u8], text: &str) {
    field.fill(b' ');
    field[..text.len()].copy_from_slice(text.as_bytes());
}
