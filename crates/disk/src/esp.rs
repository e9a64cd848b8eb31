//! The EFI system partition: a FAT32 volume holding the boot loader (UEFI 2.10 §13.3).
//!
//! The volume is laid out directly from the Microsoft FAT specification ("FAT: General
//! Overview of On-Disk Format", v1.03; sections cited as FAT §n) rather than through a FAT
//! library: it is written once and never modified, so every directory and file can be given
//! contiguous clusters up front, and the file contents are referenced in place (a host file or
//! the in-memory bytes) instead of being copied into a scratch image. Only the metadata (boot
//! sectors, the used part of both FATs, directories) is held in memory. (The `fatfs` crate's
//! latest release, 0.3.6, writes long-name entries for `.` and `..` and a non-zero `..` cluster
//! in the root's children, which `fsck.fat` rejects.)
//!
//! Output depends only on the inputs: every timestamp is the caller's epoch, the volume ID and
//! label are the caller's, and directories and files are laid out in path order whatever the
//! order of the input list.

use std::collections::BTreeMap;
use std::sync::Arc;

use uvmkit_filetree::FileData;
use uvmkit_timestamp::CivilTime;

use crate::sparse::{ExtentData, SparseError, SparseImage};

/// Bytes in a sector (the only size UEFI firmware must read on a hard disk).
const SECTOR: u64 = 512;
/// One mebibyte.
const MIB: u64 = 1 << 20;
/// Smallest ESP chosen automatically.
const AUTO_MIN: u64 = 64 * MIB;
/// Fewest clusters a FAT32 volume may have (FAT §3.5), plus the 16-cluster margin that section
/// advises so that drivers which count slightly differently agree it is FAT32.
const FAT32_MIN_CLUSTERS: u64 = 65_525 + 16;
/// Most clusters a FAT32 volume may have (cluster numbers up to 0x0FFFFFF6 are valid).
const FAT32_MAX_CLUSTERS: u64 = 0x0FFF_FFF5 - 1;
/// Reserved sectors before the first FAT: boot sector, FSInfo, backups at 6 and 7 (FAT §3.3).
const RESERVED_SECTORS: u64 = 32;
/// Copies of the FAT.
const FATS: u64 = 2;
/// The root directory's first cluster (`BPB_RootClus`).
const ROOT_CLUSTER: u32 = 2;
/// End-of-chain marker (FAT §4).
const EOC: u32 = 0x0FFF_FFFF;
/// Bytes in a directory entry (FAT §6).
const DIR_ENTRY: usize = 32;
/// Largest directory: 65536 entries of 32 bytes (FAT §6).
const MAX_DIR_BYTES: u64 = 65_536 * 32;
/// UTF-16 units in one long-name entry (FAT §7).
const LFN_UNITS: usize = 13;

/// Directory entry attributes (FAT §6, `DIR_Attr`).
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LONG_NAME: u8 = 0x0F;

/// Where in the image each file's data starts: a multiple of this many bytes.
pub const FILE_DATA_ALIGNMENT: u64 = 4096;

/// One file to put on the ESP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EspFile {
    /// Path inside the volume, `/`-separated, e.g. `EFI/BOOT/BOOTX64.EFI`.
    pub path: String,
    /// The file's contents.
    pub source: FileData,
}

/// How to build the ESP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EspOptions {
    /// Volume size in bytes (a multiple of 512); `None` picks the content plus 25% plus 16 MiB,
    /// at least 64 MiB, rounded up to 1 MiB.
    pub size_bytes: Option<u64>,
    /// The volume serial number (`BS_VolID`).
    pub volume_id: u32,
    /// Volume label: at most 11 characters of upper-case ASCII letters, digits, space and
    /// ``!#$%&'()-@^_`{}~``; empty for none.
    pub label: String,
    /// Seconds since the Unix epoch (UTC) written into every timestamp; clamped to FAT's
    /// 1980–2107 range.
    pub mtime: u64,
}

impl Default for EspOptions {
    fn default() -> Self {
        EspOptions {
            size_bytes: None,
            volume_id: 0,
            label: "EFI".to_string(),
            mtime: 0,
        }
    }
}

/// Why an ESP could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EspError {
    /// A file path that FAT cannot hold.
    #[error("ESP path {path:?} is not valid: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two files with the same path (FAT compares names without case), or a file where another
    /// path needs a directory.
    #[error("ESP paths {first:?} and {second:?} clash (FAT names ignore case); give each file its own path")]
    PathClash {
        /// One path.
        first: String,
        /// The other.
        second: String,
    },
    /// A directory with more entries than FAT allows.
    #[error("ESP directory {path:?} would hold {entries} entries, more than FAT's 65536 directory slots; spread the files over subdirectories")]
    DirectoryTooLarge {
        /// The directory.
        path: String,
        /// Files and subdirectories in it.
        entries: usize,
    },
    /// A label FAT cannot hold.
    #[error(
        "ESP volume label {label:?} is not valid: use at most 11 upper-case ASCII letters, digits, \
         spaces (not leading) or !#$%&'()-@^_`{{}}~"
    )]
    InvalidLabel {
        /// The label as given.
        label: String,
    },
    /// An explicit size that is not a whole number of sectors.
    #[error("ESP size {size} is not a multiple of 512 bytes; give it in whole MiB")]
    UnalignedSize {
        /// The size asked for.
        size: u64,
    },
    /// An explicit size below what FAT32 allows.
    #[error("an ESP of {size} bytes is too small for FAT32, which needs at least {min} bytes; raise the ESP size")]
    TooSmallForFat32 {
        /// The size asked for.
        size: u64,
        /// The smallest whole-MiB size that works.
        min: u64,
    },
    /// An explicit size beyond what FAT32 with 4 KiB clusters can address.
    #[error("an ESP of {size} bytes is larger than this FAT32 writer supports ({max} bytes); lower the ESP size")]
    TooLarge {
        /// The size asked for.
        size: u64,
        /// The largest size that works.
        max: u64,
    },
    /// The files do not fit in the volume.
    #[error(
        "the ESP's files and directories need {needed} bytes of clusters but a {size}-byte ESP holds \
         only {capacity}; raise the ESP size or leave it automatic"
    )]
    ContentTooLarge {
        /// Bytes of clusters the files and directories take.
        needed: u64,
        /// The volume size.
        size: u64,
        /// Bytes of clusters the volume has.
        capacity: u64,
    },
    /// Recording the volume's data in the image failed (cannot happen for a consistent layout).
    #[error("cannot describe the ESP image: {0}")]
    Sparse(#[from] SparseError),
}

/// The size [`build_esp`] picks for `content_bytes` of files when no size is given: content plus
/// 25% plus 16 MiB, at least 64 MiB, rounded up to 1 MiB.
pub fn auto_esp_size(content_bytes: u64) -> u64 {
    let raw = content_bytes.saturating_add(content_bytes / 4).saturating_add(16 * MIB);
    raw.max(AUTO_MIN).div_ceil(MIB).saturating_mul(MIB)
}

/// Builds a FAT32 ESP holding `files`. The image refers to host files' contents in place, so
/// they must stay unchanged until the image has been written out.
pub fn build_esp(files: &[EspFile], opts: &EspOptions) -> Result<SparseImage, EspError> {
    let label = volume_label(&opts.label)?;
    let tree = DirTree::plan(files)?;
    let content: u64 = files.iter().map(|f| f.source.len()).sum();
    let size = match opts.size_bytes {
        Some(size) if size % SECTOR != 0 => return Err(EspError::UnalignedSize { size }),
        Some(size) => size,
        None => auto_esp_size(content),
    };
    let geometry = Geometry::for_size(size)?;
    let stamp = DosTime::from_epoch(opts.mtime);

    // Allocate contiguous clusters: the root first (it must be cluster 2), then the other
    // directories and the files, each in path order.
    let cs = geometry.cluster_size();
    let mut next = ROOT_CLUSTER;
    // Allocates whole clusters for `bytes`, the first one `align` clusters-aligned (relative
    // to the data region); returns the first cluster and how many clusters were skipped.
    let mut alloc = |bytes: u64, align: u32| -> (u32, u32) {
        let skip = (align - (next - ROOT_CLUSTER) % align) % align;
        let first = next + skip;
        next = first + bytes.div_ceil(cs).max(1) as u32;
        (first, skip)
    };
    let dir_clusters: Vec<u32> = tree
        .dirs
        .iter()
        .map(|d| alloc(d.entry_bytes(label.is_some()), 1).0)
        .collect();
    // First cluster of each file, by its index in `files` (0 for an empty file, FAT §6).
    let mut file_clusters = vec![0u32; files.len()];
    let mut skipped = 0u64;
    for &i in &tree.files {
        if !files[i].source.is_empty() {
            // Each file's data starts FILE_DATA_ALIGNMENT-aligned in the image (the data
            // region itself is 4 KiB-aligned), so that a container of this image with 2 KiB
            // sectors (the hybrid ISO) can point its own directory records into the bytes.
            let (first, skip) = alloc(files[i].source.len(), (FILE_DATA_ALIGNMENT / cs).max(1) as u32);
            file_clusters[i] = first;
            skipped += u64::from(skip);
        }
    }
    let used = u64::from(next - ROOT_CLUSTER);
    if used > geometry.clusters {
        return Err(EspError::ContentTooLarge {
            needed: used * cs,
            size,
            capacity: geometry.clusters * cs,
        });
    }

    // The FAT's used part: two reserved entries (FAT §4.2), then one chain per object.
    let mut fat: Vec<u32> = vec![0x0FFF_FF00 | u32::from(MEDIA), EOC];
    fat.resize(next as usize, 0);
    let mut chain = |first: u32, bytes: u64| {
        let count = bytes.div_ceil(cs).max(1) as u32;
        for c in first..first + count - 1 {
            fat[c as usize] = c + 1;
        }
        fat[(first + count - 1) as usize] = EOC;
    };
    for (dir, &first) in tree.dirs.iter().zip(&dir_clusters) {
        chain(first, dir.entry_bytes(label.is_some()));
    }
    for &i in &tree.files {
        if file_clusters[i] != 0 {
            chain(file_clusters[i], files[i].source.len());
        }
    }
    let fat_bytes: Vec<u8> = fat.iter().flat_map(|e| e.to_le_bytes()).collect();

    let mut image = SparseImage::new(size);
    // Clusters skipped for alignment stay free.
    let free = geometry.clusters - (used - skipped);
    image.put_bytes(0, geometry.reserved_region(opts.volume_id, label, free as u32, next))?;
    for copy in 0..FATS {
        image.put_bytes(geometry.fat_offset(copy), fat_bytes.clone())?;
    }
    for (d, dir) in tree.dirs.iter().enumerate() {
        let parent_cluster = match dir.parent {
            Some(0) | None => 0, // FAT §6.3: ".." of a root child points at cluster 0
            Some(p) => dir_clusters[p],
        };
        let entries = dir.entries(
            dir_clusters[d],
            parent_cluster,
            label,
            &dir_clusters,
            &file_clusters,
            files,
            stamp,
        );
        image.put_bytes(geometry.cluster_offset(dir_clusters[d]), entries)?;
    }
    for &i in &tree.files {
        let first = file_clusters[i];
        if first == 0 {
            continue;
        }
        let data = match &files[i].source {
            FileData::Inline(bytes) => ExtentData::Bytes(Arc::clone(bytes)),
            FileData::HostFile { path, size, .. } => ExtentData::HostFile {
                path: path.clone(),
                offset: 0,
                len: *size,
            },
        };
        image.put(geometry.cluster_offset(first), data)?;
    }
    Ok(image)
}

/// Media descriptor for a fixed disk (`BPB_Media`).
const MEDIA: u8 = 0xF8;

/// The regions of a FAT32 volume (FAT §3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    /// Sectors in the volume.
    sectors: u64,
    /// Sectors per cluster.
    per_cluster: u64,
    /// Sectors per FAT.
    fat_sectors: u64,
    /// Clusters in the data region.
    clusters: u64,
}

impl Geometry {
    /// The layout of a `size`-byte volume with clusters of `per_cluster` sectors. The FAT size is
    /// the FAT §3.5 formula, rounded up to 4 sectors so that the data region starts 4 KiB-aligned.
    fn with_cluster(size: u64, per_cluster: u64) -> Geometry {
        let sectors = size / SECTOR;
        let usable = sectors.saturating_sub(RESERVED_SECTORS);
        let fat_sectors = usable.div_ceil((256 * per_cluster + FATS) / 2).next_multiple_of(4);
        let clusters = usable.saturating_sub(FATS * fat_sectors) / per_cluster;
        Geometry {
            sectors,
            per_cluster,
            fat_sectors,
            clusters,
        }
    }

    /// The largest cluster (up to 4 KiB, the page size) that still leaves FAT32 its minimum
    /// cluster count.
    fn for_size(size: u64) -> Result<Geometry, EspError> {
        let max = FAT32_MAX_CLUSTERS * 4096;
        if size > max || size / SECTOR > u64::from(u32::MAX) {
            return Err(EspError::TooLarge {
                size,
                max: max.min(u64::from(u32::MAX) * SECTOR),
            });
        }
        [8, 4, 2, 1]
            .into_iter()
            .map(|per_cluster| Geometry::with_cluster(size, per_cluster))
            .find(|g| g.clusters >= FAT32_MIN_CLUSTERS)
            .ok_or(EspError::TooSmallForFat32 {
                size,
                min: min_fat32_size(),
            })
    }

    fn cluster_size(&self) -> u64 {
        self.per_cluster * SECTOR
    }

    fn fat_offset(&self, copy: u64) -> u64 {
        (RESERVED_SECTORS + copy * self.fat_sectors) * SECTOR
    }

    /// Byte offset of cluster `n` (clusters are numbered from 2, FAT §3.5).
    fn cluster_offset(&self, n: u32) -> u64 {
        self.fat_offset(FATS) + u64::from(n - ROOT_CLUSTER) * self.cluster_size()
    }

    /// Sectors 0–7: boot sector, FSInfo, and their backups at 6 and 7.
    fn reserved_region(&self, volume_id: u32, label: Option<[u8; 11]>, free: u32, next_free: u32) -> Vec<u8> {
        let boot = self.boot_sector(volume_id, label);
        let info = fs_info(free, next_free);
        let mut out = vec![0u8; 8 * SECTOR as usize];
        out[..512].copy_from_slice(&boot);
        out[512..1024].copy_from_slice(&info);
        out[6 * 512..7 * 512].copy_from_slice(&boot);
        out[7 * 512..].copy_from_slice(&info);
        out
    }

    /// The boot sector with the FAT32 BPB (FAT §3.1 and §3.3).
    fn boot_sector(&self, volume_id: u32, label: Option<[u8; 11]>) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]); // BS_jmpBoot: jump over the BPB
        b[3..11].copy_from_slice(b"MSWIN4.1"); // BS_OEMName, the value FAT §3.1 recommends
        b[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes()); // BPB_BytsPerSec
        b[13] = self.per_cluster as u8; // BPB_SecPerClus
        b[14..16].copy_from_slice(&(RESERVED_SECTORS as u16).to_le_bytes()); // BPB_RsvdSecCnt
        b[16] = FATS as u8; // BPB_NumFATs
                            // 17..21 BPB_RootEntCnt and BPB_TotSec16 are zero on FAT32.
        b[21] = MEDIA; // BPB_Media
                       // 22..24 BPB_FATSz16 is zero on FAT32.
        b[24..26].copy_from_slice(&63u16.to_le_bytes()); // BPB_SecPerTrk
        b[26..28].copy_from_slice(&255u16.to_le_bytes()); // BPB_NumHeads
                                                          // 28..32 BPB_HiddSec: zero, the volume does not know where its partition will be.
        b[32..36].copy_from_slice(&(self.sectors as u32).to_le_bytes()); // BPB_TotSec32
        b[36..40].copy_from_slice(&(self.fat_sectors as u32).to_le_bytes()); // BPB_FATSz32
                                                                             // 40..42 BPB_ExtFlags zero: the FATs are mirrored. 42..44 BPB_FSVer 0.0.
        b[44..48].copy_from_slice(&ROOT_CLUSTER.to_le_bytes()); // BPB_RootClus
        b[48..50].copy_from_slice(&1u16.to_le_bytes()); // BPB_FSInfo
        b[50..52].copy_from_slice(&6u16.to_le_bytes()); // BPB_BkBootSec
        b[64] = 0x80; // BS_DrvNum: a hard disk
        b[66] = 0x29; // BS_BootSig: the next three fields are present
        b[67..71].copy_from_slice(&volume_id.to_le_bytes()); // BS_VolID
        b[71..82].copy_from_slice(&label.unwrap_or(*b"NO NAME    ")); // BS_VolLab
        b[82..90].copy_from_slice(b"FAT32   "); // BS_FilSysType
                                                // Boot code: the volume is not bootable from BIOS; halt forever if something jumps here.
        b[90..94].copy_from_slice(&[0xFA, 0xF4, 0xEB, 0xFD]); // cli; hlt; jmp -3
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }
}

/// The FSInfo sector (FAT §5) with the free-cluster count and the next free cluster.
fn fs_info(free: u32, next_free: u32) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes()); // FSI_LeadSig
    b[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes()); // FSI_StrucSig
    b[488..492].copy_from_slice(&free.to_le_bytes()); // FSI_Free_Count
    b[492..496].copy_from_slice(&next_free.to_le_bytes()); // FSI_Nxt_Free
    b[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes()); // FSI_TrailSig
    b
}

/// The smallest whole-MiB volume that takes FAT32.
fn min_fat32_size() -> u64 {
    (1..)
        .map(|m| m * MIB)
        .find(|&s| Geometry::with_cluster(s, 1).clusters >= FAT32_MIN_CLUSTERS)
        .unwrap_or(AUTO_MIN)
}

/// The directories of the volume, root first, each with its children.
struct DirTree {
    /// Directories in path order; index 0 is the root.
    dirs: Vec<Dir>,
    /// Indices into the caller's file list, in path order.
    files: Vec<usize>,
}

/// One directory.
struct Dir {
    /// Index of the parent in `DirTree::dirs` (`None` for the root).
    parent: Option<usize>,
    /// Children in name order (upper-cased, then as given), each with its short name.
    children: Vec<Child>,
}

/// One entry of a directory.
struct Child {
    /// The long name as given.
    name: String,
    /// The 8.3 name (FAT §6.1).
    short: [u8; 11],
    /// Whether long-name entries are needed (the name is not exactly its short form).
    needs_lfn: bool,
    /// A subdirectory (index into `DirTree::dirs`) or a file (index into the caller's list).
    target: Target,
}

#[derive(Clone, Copy)]
enum Target {
    Dir(usize),
    File(usize),
}

impl DirTree {
    /// Checks every path and builds the directory tree.
    fn plan(files: &[EspFile]) -> Result<DirTree, EspError> {
        // Every node by upper-cased path (FAT names compare without case): kind and name as given.
        #[derive(Clone)]
        struct Node {
            file: Option<usize>,
            given: String,
        }
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            let parts = split_path(&f.path)?;
            let mut key = String::new();
            for (n, part) in parts.iter().enumerate() {
                if n > 0 {
                    key.push('/');
                }
                key.push_str(&part.to_uppercase());
                let is_file = n + 1 == parts.len();
                let given = parts[..=n].join("/");
                match nodes.get(&key) {
                    Some(existing) if existing.file.is_some() || is_file => {
                        return Err(EspError::PathClash {
                            first: existing.given.clone(),
                            second: given,
                        });
                    }
                    Some(_) => {}
                    None => {
                        nodes.insert(
                            key.clone(),
                            Node {
                                file: is_file.then_some(i),
                                given,
                            },
                        );
                    }
                }
            }
        }
        // Directories in path order (parents sort before their children), root first.
        let mut dirs = vec![Dir {
            parent: None,
            children: Vec::new(),
        }];
        let mut dir_index: BTreeMap<String, usize> = BTreeMap::from([(String::new(), 0)]);
        let mut file_order = Vec::new();
        for (key, node) in &nodes {
            let parent_key = key.rfind('/').map(|i| key[..i].to_string()).unwrap_or_default();
            let parent = dir_index[&parent_key];
            let name = node.given.rsplit('/').next().unwrap_or(&node.given).to_string();
            let target = match node.file {
                Some(i) => {
                    file_order.push(i);
                    Target::File(i)
                }
                None => {
                    dirs.push(Dir {
                        parent: Some(parent),
                        children: Vec::new(),
                    });
                    dir_index.insert(key.clone(), dirs.len() - 1);
                    Target::Dir(dirs.len() - 1)
                }
            };
            let taken: Vec<[u8; 11]> = dirs[parent].children.iter().map(|c| c.short).collect();
            let (short, needs_lfn) = short_name(&name, &taken);
            dirs[parent].children.push(Child {
                name,
                short,
                needs_lfn,
                target,
            });
        }
        for (d, dir) in dirs.iter().enumerate() {
            if dir.entry_bytes(true) > MAX_DIR_BYTES {
                let path = nodes
                    .iter()
                    .find(|(k, _)| dir_index.get(*k) == Some(&d))
                    .map(|(_, n)| n.given.clone())
                    .unwrap_or_else(|| "/".to_string());
                return Err(EspError::DirectoryTooLarge {
                    path,
                    entries: dir.children.len(),
                });
            }
        }
        Ok(DirTree {
            dirs,
            files: file_order,
        })
    }
}

impl Dir {
    /// Bytes of entries: `.`/`..` or the volume label, each child's long-name and short entries.
    fn entry_bytes(&self, has_label: bool) -> u64 {
        let fixed = match self.parent {
            Some(_) => 2,
            None => usize::from(has_label),
        };
        let children: usize = self.children.iter().map(|c| 1 + c.lfn_entries()).sum();
        ((fixed + children) * DIR_ENTRY) as u64
    }

    /// The directory's contents (FAT §6 and §7). `dir_clusters` is indexed like
    /// `DirTree::dirs`, `file_clusters` like `files`.
    #[allow(clippy::too_many_arguments)]
    fn entries(
        &self,
        own_cluster: u32,
        parent_cluster: u32,
        label: Option<[u8; 11]>,
        dir_clusters: &[u32],
        file_clusters: &[u32],
        files: &[EspFile],
        stamp: DosTime,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entry_bytes(label.is_some()) as usize);
        if self.parent.is_none() {
            if let Some(label) = label {
                out.extend_from_slice(&short_entry(label, ATTR_VOLUME_ID, 0, 0, stamp));
            }
        } else {
            out.extend_from_slice(&short_entry(*b".          ", ATTR_DIRECTORY, own_cluster, 0, stamp));
            out.extend_from_slice(&short_entry(*b"..         ", ATTR_DIRECTORY, parent_cluster, 0, stamp));
        }
        for child in &self.children {
            if child.needs_lfn {
                long_entries(&child.name, &child.short, &mut out);
            }
            let (attr, cluster, size) = match child.target {
                Target::Dir(d) => (ATTR_DIRECTORY, dir_clusters[d], 0),
                Target::File(i) => (ATTR_ARCHIVE, file_clusters[i], files[i].source.len() as u32),
            };
            out.extend_from_slice(&short_entry(child.short, attr, cluster, size, stamp));
        }
        out
    }
}

impl Child {
    fn lfn_entries(&self) -> usize {
        if self.needs_lfn {
            self.name.encode_utf16().count().div_ceil(LFN_UNITS)
        } else {
            0
        }
    }
}

/// A short directory entry (FAT §6, `DIR_*` fields).
fn short_entry(name: [u8; 11], attr: u8, cluster: u32, size: u32, t: DosTime) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[0..11].copy_from_slice(&name); // DIR_Name
    e[11] = attr; // DIR_Attr
                  // 12 DIR_NTRes: zero.
    e[13] = t.tenths; // DIR_CrtTimeTenth
    e[14..16].copy_from_slice(&t.time.to_le_bytes()); // DIR_CrtTime
    e[16..18].copy_from_slice(&t.date.to_le_bytes()); // DIR_CrtDate
    e[18..20].copy_from_slice(&t.date.to_le_bytes()); // DIR_LstAccDate
    e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes()); // DIR_FstClusHI
    e[22..24].copy_from_slice(&t.time.to_le_bytes()); // DIR_WrtTime
    e[24..26].copy_from_slice(&t.date.to_le_bytes()); // DIR_WrtDate
    e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes()); // DIR_FstClusLO
    e[28..32].copy_from_slice(&size.to_le_bytes()); // DIR_FileSize
    e
}

/// Appends the long-name entries for `name` (FAT §7): last piece first, each holding 13 UTF-16
/// units, the name ended by one 0x0000 and padded with 0xFFFF, each carrying the short name's
/// checksum.
fn long_entries(name: &str, short: &[u8; 11], out: &mut Vec<u8>) {
    let units: Vec<u16> = name.encode_utf16().collect();
    let count = units.len().div_ceil(LFN_UNITS);
    let checksum = lfn_checksum(short);
    for ord in (1..=count).rev() {
        let mut piece = [0xFFFFu16; LFN_UNITS];
        for (k, slot) in piece.iter_mut().enumerate() {
            let idx = (ord - 1) * LFN_UNITS + k;
            if idx < units.len() {
                *slot = units[idx];
            } else if idx == units.len() {
                *slot = 0;
            }
        }
        let mut e = [0u8; 32];
        e[0] = ord as u8 | if ord == count { 0x40 } else { 0 }; // LDIR_Ord, 0x40 marks the last
        e[11] = ATTR_LONG_NAME; // LDIR_Attr
        e[13] = checksum; // LDIR_Chksum
                          // LDIR_Name1 (5 units at 1), LDIR_Name2 (6 at 14), LDIR_Name3 (2 at 28); LDIR_FstClusLO 0.
        for (k, unit) in piece.iter().enumerate() {
            let at = match k {
                0..=4 => 1 + 2 * k,
                5..=10 => 14 + 2 * (k - 5),
                _ => 28 + 2 * (k - 11),
            };
            e[at..at + 2].copy_from_slice(&unit.to_le_bytes());
        }
        out.extend_from_slice(&e);
    }
}

/// The checksum of a short name that ties long-name entries to it (FAT §7.2).
fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &b| ((sum & 1) << 7).wrapping_add(sum >> 1).wrapping_add(b))
}

/// Characters other than letters and digits that a short name may hold (FAT §6.1).
const SHORT_SPECIALS: &[u8] = b"!#$%&'()-@^_`{}~";

/// The 8.3 name for `name` in a directory whose children already use `taken`, and whether
/// long-name entries are needed. A name that is already a valid upper-case 8.3 name is stored
/// as is; any other gets the upper-cased basis name with a `~N` tail when the basis lost
/// characters or clashes (the "numeric-tail generation" of FAT §7.4).
fn short_name(name: &str, taken: &[[u8; 11]]) -> ([u8; 11], bool) {
    let (base, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    };
    let mut lossy = false;
    let mut clean = |part: &str| -> Vec<u8> {
        let mut out = Vec::new();
        for c in part.chars() {
            match c {
                ' ' | '.' => lossy = true,
                c if c.is_ascii_alphanumeric() || (c.is_ascii() && SHORT_SPECIALS.contains(&(c as u8))) => {
                    out.push(c.to_ascii_uppercase() as u8)
                }
                _ => {
                    lossy = true;
                    out.push(b'_');
                }
            }
        }
        out
    };
    let mut base = clean(base);
    let mut ext = clean(ext);
    if base.len() > 8 || ext.len() > 3 || base.is_empty() {
        lossy = true;
    }
    if base.is_empty() {
        base.push(b'_');
    }
    base.truncate(8);
    ext.truncate(3);
    let pack = |base: &[u8], ext: &[u8]| {
        let mut s = [b' '; 11];
        s[..base.len()].copy_from_slice(base);
        s[8..8 + ext.len()].copy_from_slice(ext);
        s
    };
    let exact = pack(&base, &ext);
    if !lossy && !taken.contains(&exact) {
        let as_stored = if ext.is_empty() {
            String::from_utf8_lossy(&base).into_owned()
        } else {
            format!("{}.{}", String::from_utf8_lossy(&base), String::from_utf8_lossy(&ext))
        };
        return (exact, as_stored != name);
    }
    // Tails differ, so among `taken.len() + 1` of them one is free; a directory holds at most
    // 65536 entries, so the tail never exceeds 6 digits.
    let candidate = |n: usize| {
        let tail = format!("~{n}");
        let keep = base.len().min(8usize.saturating_sub(tail.len()));
        let mut b = base[..keep].to_vec();
        b.extend_from_slice(tail.as_bytes());
        b.truncate(8);
        pack(&b, &ext)
    };
    let free = (1..=taken.len() + 1).map(candidate).find(|c| !taken.contains(c));
    (free.unwrap_or(exact), true)
}

/// Splits an ESP path into components, refusing what a FAT long name cannot hold (FAT §7).
fn split_path(path: &str) -> Result<Vec<&str>, EspError> {
    let invalid = |reason| EspError::InvalidPath {
        path: path.to_string(),
        reason,
    };
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for part in &parts {
        match *part {
            "" => return Err(invalid("it has an empty component (a doubled or trailing '/')")),
            "." | ".." => return Err(invalid("it contains '.' or '..'")),
            _ => {}
        }
        if part.chars().any(|c| (c as u32) < 0x20 || "\"*:<>?\\|".contains(c)) {
            return Err(invalid(
                "FAT names cannot hold control characters or any of \" * : < > ? \\ |",
            ));
        }
        if part.ends_with('.') || part.ends_with(' ') {
            return Err(invalid("FAT names cannot end in '.' or ' '"));
        }
        if part.encode_utf16().count() > 255 {
            return Err(invalid("a FAT name holds at most 255 UTF-16 units"));
        }
    }
    Ok(parts)
}

/// The 11-byte, space-padded label of the boot sector and root directory; `None` for no label.
fn volume_label(label: &str) -> Result<Option<[u8; 11]>, EspError> {
    if label.is_empty() {
        return Ok(None);
    }
    let ok = label.len() <= 11
        && !label.starts_with(' ')
        && label
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ' || SHORT_SPECIALS.contains(&b));
    if !ok {
        return Err(EspError::InvalidLabel {
            label: label.to_string(),
        });
    }
    let mut out = [b' '; 11];
    out[..label.len()].copy_from_slice(label.as_bytes());
    Ok(Some(out))
}

/// A timestamp in the directory-entry encoding (FAT §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DosTime {
    /// Bits 15–9 years since 1980, 8–5 month, 4–0 day.
    date: u16,
    /// Bits 15–11 hours, 10–5 minutes, 4–0 seconds / 2.
    time: u16,
    /// Hundredths of a second past `time` (0–199): the odd second, for creation times.
    tenths: u8,
}

impl DosTime {
    /// The UTC calendar time of `epoch`, clamped to what a FAT timestamp holds (1980-01-01
    /// 00:00:00 to 2107-12-31 23:59:59).
    fn from_epoch(epoch: u64) -> DosTime {
        const FAT_MIN: u64 = 315_532_800; // 1980-01-01T00:00:00Z
        const FAT_MAX: u64 = 4_354_819_199; // 2107-12-31T23:59:59Z
        let t = CivilTime::from_unix_unsigned(epoch.clamp(FAT_MIN, FAT_MAX));
        let (year, month, day) = ((t.year - 1980) as u16, u16::from(t.month), u16::from(t.day));
        let (hour, min, sec) = (u16::from(t.hour), u16::from(t.minute), t.second);
        DosTime {
            date: (year << 9) | (month << 5) | day,
            time: (hour << 11) | (min << 5) | u16::from(sec / 2),
            tenths: (sec % 2) * 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{have, pattern, run, write_sparse, ScratchDir};

    fn file(path: &str, bytes: Vec<u8>) -> EspFile {
        EspFile {
            path: path.to_string(),
            source: FileData::inline(bytes),
        }
    }

    fn opts(mtime: u64) -> EspOptions {
        EspOptions {
            size_bytes: None,
            volume_id: 0x1234_ABCD,
            label: "EFI".to_string(),
            mtime,
        }
    }

    fn fsck(image: &SparseImage, scratch: &ScratchDir, name: &str) -> Option<String> {
        if !have("fsck.fat") {
            return None;
        }
        let raw = scratch.path().join(name);
        write_sparse(image, &raw);
        let (ok, out) = run("fsck.fat", &["-n", "-v", raw.to_str().unwrap()]);
        assert!(ok, "fsck.fat found problems:\n{out}");
        // Problems are a path line followed by a two-space-indented description; summary
        // mistakes (free count, dirty bit) are reported unindented.
        let complaint = out.lines().any(|l| {
            l.strip_prefix("  ")
                .is_some_and(|r| r.starts_with(|c: char| c.is_alphabetic()))
                || ["wrong", "uninitialized", "Dirty bit", "differ"]
                    .iter()
                    .any(|w| l.contains(w))
        });
        assert!(!complaint, "fsck.fat reported something:\n{out}");
        Some(out)
    }

    #[test]
    fn fsck_fat_and_mtools_accept_the_volume() {
        let scratch = ScratchDir::new("esp-fsck");
        let boot = pattern(3_000_123, 1);
        let host = scratch.path().join("kernel.efi");
        std::fs::write(&host, &boot).unwrap();
        let files = vec![
            EspFile {
                path: "EFI/BOOT/BOOTX64.EFI".into(),
                source: FileData::host_file(&host).unwrap(),
            },
            file("loader/entries/uvm.conf", b"title uvm\n".to_vec()),
            file("EFI/Linux/a-very-long-file-name-for-lfn.txt", pattern(5000, 2)),
            file("EFI/Linux/a-very-long-file-name-for-lfn-2.txt", pattern(7000, 3)),
            file("EFI/Linux/Mixed Case + plus.Efi", pattern(100, 4)),
            file("startup.nsh", Vec::new()),
        ];
        // 2023-11-14T22:13:20Z
        let image = build_esp(&files, &opts(1_700_000_000)).unwrap();
        assert_eq!(
            image.size(),
            64 * MIB,
            "content is small, so the automatic size is the minimum"
        );
        assert!(
            image.allocated_bytes() < 4 * MIB,
            "only metadata and data are stored: {}",
            image.allocated_bytes()
        );

        if let Some(out) = fsck(&image, &scratch, "esp.img") {
            assert!(out.contains("32 bit entries"), "not FAT32:\n{out}");
        }
        let raw = scratch.path().join("esp.img");
        write_sparse(&image, &raw);
        if have("mdir") && have("mcopy") {
            let target = format!("{}@@0", raw.display());
            let (ok, out) = run("mdir", &["-i", &target, "::/EFI/BOOT"]);
            assert!(ok, "mdir failed:\n{out}");
            assert!(
                out.contains("BOOTX64  EFI   3000123 2023-11-14  22:13"),
                "listing:\n{out}"
            );
            let (ok, out) = run("mdir", &["-i", &target, "::/"]);
            assert!(ok && out.contains("Volume in drive : is EFI"), "label:\n{out}");
            assert!(out.contains("Volume Serial Number is 1234-ABCD"), "serial:\n{out}");
            let (ok, out) = run("mdir", &["-i", &target, "::/EFI/Linux"]);
            assert!(
                ok && out.contains("a-very-long-file-name-for-lfn-2.txt"),
                "long names:\n{out}"
            );
            assert!(out.contains("Mixed Case + plus.Efi"), "long names:\n{out}");
            for (i, f) in files.iter().enumerate() {
                let back = scratch.path().join(format!("back-{i}"));
                let (ok, out) = run(
                    "mcopy",
                    &["-n", "-i", &target, &format!("::/{}", f.path), back.to_str().unwrap()],
                );
                assert!(ok, "mcopy {} failed:\n{out}", f.path);
                assert_eq!(
                    std::fs::read(&back).unwrap(),
                    f.source.read_all().unwrap(),
                    "{} differs",
                    f.path
                );
            }
        }
    }

    #[test]
    fn same_inputs_give_the_same_bytes() {
        let files = vec![
            file("EFI/BOOT/BOOTX64.EFI", pattern(200_000, 3)),
            file("a/b/c/d.txt", b"d".to_vec()),
        ];
        let a = build_esp(&files, &opts(1_600_000_000)).unwrap();
        let mut reversed = files.clone();
        reversed.reverse();
        assert_eq!(
            a,
            build_esp(&reversed, &opts(1_600_000_000)).unwrap(),
            "input order must not matter"
        );
        assert_ne!(
            a,
            build_esp(&files, &opts(1_600_000_002)).unwrap(),
            "the epoch must reach the timestamps"
        );
    }

    #[test]
    fn sizes_follow_the_rules() {
        assert_eq!(auto_esp_size(0), 64 * MIB);
        assert_eq!(
            auto_esp_size(100_000_000),
            (100_000_000u64 + 25_000_000 + 16 * MIB).div_ceil(MIB) * MIB
        );
        assert_eq!(Geometry::for_size(64 * MIB).unwrap().per_cluster, 1);
        assert_eq!(Geometry::for_size(150 * MIB).unwrap().per_cluster, 4);
        assert_eq!(Geometry::for_size(300 * MIB).unwrap().per_cluster, 8);
        let min = min_fat32_size();
        assert!(min > 32 * MIB && min <= 40 * MIB, "{min}");
        assert!(matches!(
            Geometry::for_size(min - MIB),
            Err(EspError::TooSmallForFat32 { .. })
        ));
        for size in [min, 64 * MIB, 100 * MIB, 257 * MIB, 1 << 30] {
            let g = Geometry::for_size(size).unwrap();
            assert!(
                g.fat_sectors * 128 >= g.clusters + 2,
                "the FAT covers every cluster at {size}"
            );
            assert_eq!(
                g.cluster_offset(2) % 4096,
                0,
                "the data region is 4 KiB-aligned at {size}"
            );
            assert!(g.cluster_offset(2) + g.clusters * g.cluster_size() <= size);
        }

        let small = EspOptions {
            size_bytes: Some(32 * MIB),
            ..opts(0)
        };
        let err = build_esp(&[], &small).unwrap_err();
        assert!(matches!(err, EspError::TooSmallForFat32 { .. }), "{err}");
        let odd = EspOptions {
            size_bytes: Some(64 * MIB + 1),
            ..opts(0)
        };
        assert!(matches!(build_esp(&[], &odd), Err(EspError::UnalignedSize { .. })));
        let full = EspOptions {
            size_bytes: Some(min),
            ..opts(0)
        };
        let err = build_esp(&[file("big.bin", vec![1; 40 << 20])], &full).unwrap_err();
        assert!(matches!(err, EspError::ContentTooLarge { .. }), "{err}");
        assert!(err.to_string().contains("raise the ESP size"));

        // The smallest FAT32 volume and a 4 KiB-cluster one both pass fsck.fat.
        let scratch = ScratchDir::new("esp-sizes");
        let image = build_esp(&[file("x", vec![7; 1000])], &full).unwrap();
        if let Some(out) = fsck(&image, &scratch, "min.img") {
            assert!(out.contains("512 bytes per cluster"), "{out}");
        }
        let big = EspOptions {
            size_bytes: Some(300 * MIB),
            ..opts(0)
        };
        let image = build_esp(&[file("EFI/BOOT/BOOTX64.EFI", pattern(10_000, 5))], &big).unwrap();
        if let Some(out) = fsck(&image, &scratch, "big.img") {
            assert!(out.contains("4096 bytes per cluster"), "{out}");
        }
    }

    #[test]
    fn many_clashing_short_names_get_distinct_tails() {
        let files: Vec<EspFile> = (0..40)
            .map(|i| file(&format!("EFI/Linux/uvmkit-kernel-{i:02}.efi"), vec![i as u8; 10]))
            .collect();
        let image = build_esp(&files, &opts(0)).unwrap();
        let scratch = ScratchDir::new("esp-tails");
        fsck(&image, &scratch, "tails.img");
        let tree = DirTree::plan(&files).unwrap();
        let linux = &tree.dirs[2];
        let mut shorts: Vec<[u8; 11]> = linux.children.iter().map(|c| c.short).collect();
        assert_eq!(&shorts[0], b"UVMKIT~1EFI");
        assert_eq!(&shorts[10], b"UVMKI~11EFI");
        shorts.sort();
        shorts.dedup();
        assert_eq!(shorts.len(), 40);
    }

    #[test]
    fn short_names_and_checksums() {
        assert_eq!(short_name("BOOTX64.EFI", &[]), (*b"BOOTX64 EFI", false));
        assert_eq!(short_name("EFI", &[]), (*b"EFI        ", false));
        assert_eq!(short_name("loader", &[]), (*b"LOADER     ", true));
        assert_eq!(short_name("a.b.c", &[]), (*b"AB~1    C  ", true));
        assert_eq!(short_name("x+y", &[]), (*b"X_Y~1      ", true));
        assert_eq!(short_name("BOOT", &[*b"BOOT       "]), (*b"BOOT~1     ", true));
        // FAT §7.2's algorithm on a name worked by hand: rotate right, add.
        let mut sum = 0u8;
        for &b in b"BOOTX64 EFI" {
            sum = sum.rotate_right(1).wrapping_add(b);
        }
        assert_eq!(lfn_checksum(b"BOOTX64 EFI"), sum);
    }

    #[test]
    fn refuses_bad_paths_and_labels() {
        let build = |files: &[EspFile], label: &str| {
            build_esp(
                files,
                &EspOptions {
                    label: label.to_string(),
                    ..opts(0)
                },
            )
        };
        let x = || vec![1u8];
        for bad in ["", "a//b", "a/", "../x", "a/./b", "a:b", "a/b?", "dot."] {
            assert!(
                matches!(build(&[file(bad, x())], "EFI"), Err(EspError::InvalidPath { .. })),
                "{bad:?}"
            );
        }
        let clash = build(
            &[file("EFI/BOOT/BOOTX64.EFI", x()), file("efi/boot/bootx64.efi", x())],
            "EFI",
        );
        assert!(matches!(clash, Err(EspError::PathClash { .. })));
        let clash = build(&[file("EFI/BOOT", x()), file("EFI/BOOT/BOOTX64.EFI", x())], "EFI");
        assert!(matches!(clash, Err(EspError::PathClash { .. })));
        for bad in ["efi", "TWELVE CHARS", " LEAD", "A.B"] {
            assert!(matches!(build(&[], bad), Err(EspError::InvalidLabel { .. })), "{bad:?}");
        }
        assert!(build(&[], "").is_ok(), "no label is allowed");
    }

    #[test]
    fn epochs_become_fat_timestamps() {
        let t = DosTime::from_epoch(1_700_000_000); // 2023-11-14T22:13:20Z
        assert_eq!(t.date, (43 << 9) | (11 << 5) | 14);
        assert_eq!(t.time, (22 << 11) | (13 << 5) | 10);
        assert_eq!(t.tenths, 0);
        assert_eq!(DosTime::from_epoch(1_700_000_001).tenths, 100);
        let leap_day = DosTime::from_epoch(951_782_400); // 2000-02-29T00:00:00Z
        assert_eq!((leap_day.date, leap_day.time), ((20 << 9) | (2 << 5) | 29, 0));
        let early = DosTime::from_epoch(0);
        assert_eq!((early.date, early.time), ((1 << 5) | 1, 0));
        let late = DosTime::from_epoch(u64::MAX);
        assert_eq!(late.date, (127 << 9) | (12 << 5) | 31);
        assert_eq!(late.time, (23 << 11) | (59 << 5) | 29);
    }
}
