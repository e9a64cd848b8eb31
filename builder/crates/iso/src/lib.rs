//! Hybrid bootable ISO 9660 images, written in one sequential pass.
//!
//! [`write_iso`] lays out an ECMA-119 volume with Rock Ridge (RRIP 1.10 over SUSP 1.12) for
//! POSIX names, modes and symbolic links, an El Torito catalog with a BIOS no-emulation entry
//! (ISOLINUX, with its boot information table) and a UEFI entry (a FAT image holding
//! `\EFI\BOOT\BOOTX64.EFI`), and optionally the isohybrid MBR and a GPT so the same file boots
//! when written to a USB disk. Every extent's place is computed first; the bytes then go out
//! in order, file contents streamed from their sources, so memory stays bounded by metadata.
//!
//! Nothing from the host reaches the image: all dates are the caller's epoch, identifiers
//! derive from the caller's seed, and directories are sorted.

#![deny(missing_docs)]

mod both;
mod eltorito;
mod hybrid;
mod names;
mod plan;
mod rrip;
mod time;

use std::io::{self, Read, Write};

use uvmkit_disk::{build_gpt, GptError, GptPartition, Guid, SparseImage};
use uvmkit_filetree::{FileData, FileTree, Node, TreeError, TreePath};

use crate::eltorito::{BootEntry, PLATFORM_EFI, PLATFORM_X86};
use crate::hybrid::{MbrPartition, BOOT_CODE_LEN, ISOHYBRID_MAGIC};
use crate::plan::{Layout, Source};

/// Bytes in an ISO 9660 logical block (sector).
pub const SECTOR: u64 = 2048;
/// Bytes in a block of the hybrid MBR and GPT.
const DISK_BLOCK: u64 = 512;
/// The primary volume descriptor's sector (ECMA-119 6.2.1: after the 16-sector system area).
const PVD_LBA: u32 = 16;
/// Hybrid images are padded to whole 1 MiB "cylinders" of 64 heads × 32 sectors, as
/// isohybrid does, which also suits USB sticks.
const HYBRID_ALIGN: u64 = 1 << 20;
/// Blocks of the backup GPT at the end of a disk: 32 of entries and the header.
const GPT_BACKUP_BLOCKS: u64 = 33;
/// GPT attributes of the partition over the ISO 9660 data: read-only (bit 60) and no drive
/// letter (bit 63), the Microsoft basic data attributes that keep Windows from offering to
/// format it.
const ISO_DATA_ATTRIBUTES: u64 = (1 << 60) | (1 << 63);
/// MBR type of isohybrid's whole-image partition (it is not a filesystem Windows knows).
const MBR_TYPE_ISOHYBRID: u8 = 0x17;
/// MBR type of an EFI system partition.
const MBR_TYPE_EFI: u8 = 0xEF;
/// MBR type of the GPT protective entry.
const MBR_TYPE_GPT: u8 = 0xEE;

/// One regular file to put on the ISO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsoFile {
    /// Path inside the image, `/`-separated, e.g. `boot/vmlinuz`; parents are created 0755.
    pub path: String,
    /// The file's contents.
    pub data: FileData,
    /// Permission bits (`0o7777` mask), recorded in Rock Ridge.
    pub mode: u32,
}

/// The BIOS boot entry: ISOLINUX, loaded by El Torito in no-emulation mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BiosBoot {
    /// `isolinux.bin` as shipped; its boot information table is filled in on the image.
    pub isolinux_bin: Vec<u8>,
    /// `isohdpfx.bin`, whose first 432 bytes become the boot code of the hybrid MBR.
    pub isohdpfx: Vec<u8>,
    /// Where `isolinux.bin` goes, e.g. `isolinux/isolinux.bin`. ISOLINUX reads `isolinux.cfg`
    /// and `ldlinux.c32` from the same directory: pass those as ordinary [`IsoFile`]s.
    pub path: String,
}

/// The bytes of a UEFI boot image (a FAT filesystem).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootImage {
    /// A file or in-memory bytes.
    Data(FileData),
    /// A sparse image, such as `uvmkit_disk::build_esp` returns.
    Sparse(SparseImage),
}

impl BootImage {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            BootImage::Data(d) => d.len(),
            BootImage::Sparse(s) => s.size(),
        }
    }

    /// True for an empty image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<FileData> for BootImage {
    fn from(d: FileData) -> Self {
        BootImage::Data(d)
    }
}

impl From<SparseImage> for BootImage {
    fn from(s: SparseImage) -> Self {
        BootImage::Sparse(s)
    }
}

/// The UEFI boot entry: a FAT image holding `\EFI\BOOT\BOOTX64.EFI`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EfiBoot {
    /// The FAT image.
    pub image: BootImage,
    /// Where the image appears in the ISO, e.g. `boot/efi.img`.
    pub path: String,
}

/// A file whose contents are a range of the EFI image, e.g. the kernel inside a UKI inside the
/// FAT image, listed in the ISO at `path` without being stored a second time. Its directory
/// record points into the EFI image's extent, so the range must start on a 2048-byte boundary
/// of the image and lie in one piece within it (FAT files that `build_esp` writes are
/// contiguous).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EfiAlias {
    /// Path inside the ISO, e.g. `boot/vmlinuz`.
    pub path: String,
    /// Byte offset in the EFI image; a multiple of 2048.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Permission bits recorded in Rock Ridge.
    pub mode: u32,
}

/// How to write the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsoOptions {
    /// Volume identifier: 1 to 32 of `A`–`Z`, `0`–`9`, `_` (ECMA-119 d-characters) and `-`
    /// (an a-character, which Linux's blkid and isofs, Windows and macOS all show as is; a
    /// settings volume's label `UVMKIT-CFG` needs it).
    pub volume_id: String,
    /// Seconds since the Unix epoch for every date in the image (`SOURCE_DATE_EPOCH`).
    pub epoch: i64,
    /// Seed of the MBR disk signature and the GPT GUIDs.
    pub seed: [u8; 32],
    /// Also write the isohybrid MBR (and, with an EFI image, the GPT) so that the file boots
    /// from a disk.
    pub hybrid: bool,
}

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsoStats {
    /// Size of the image in bytes.
    pub bytes: u64,
    /// Size in 2048-byte sectors (the volume space size).
    pub sectors: u32,
    /// Directories, the root included.
    pub directories: usize,
    /// Directory entries that are not directories (files, links, devices).
    pub entries: usize,
    /// Sector of the El Torito boot catalog, when there is one.
    pub boot_catalog_lba: Option<u32>,
    /// Sector of `isolinux.bin`, when there is a BIOS entry.
    pub bios_image_lba: Option<u32>,
    /// Sector of the EFI image, when there is a UEFI entry.
    pub efi_image_lba: Option<u32>,
}

/// Why an ISO could not be written.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    /// The volume identifier has characters ISO 9660 does not allow or the wrong length.
    #[error("volume id {0:?} is not valid: use 1 to 32 characters of A-Z, 0-9, _ and -")]
    InvalidVolumeId(String),
    /// A path that cannot be placed in the image.
    #[error("path {path:?} cannot go on the ISO: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two entries (or an entry and a boot image) at the same path.
    #[error("{0} is given twice (as a file and again as a file or boot image); keep one")]
    DuplicatePath(String),
    /// A directory deeper than ISO 9660 allows.
    #[error("directory {path} is {depth} levels below the root; ISO 9660 allows 7, so flatten the tree")]
    TooDeep {
        /// The directory.
        path: String,
        /// Its depth.
        depth: usize,
    },
    /// A file larger than one ISO 9660 extent.
    #[error("{path} is {size} bytes; ISO 9660 records files of at most 4 GiB - 1 byte, so split or shrink it")]
    FileTooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
    },
    /// The whole image would be larger than 32-bit sector numbers reach.
    #[error("the image would be {bytes} bytes, more than ISO 9660's 8 TiB; put less in it")]
    ImageTooLarge {
        /// The size it would have.
        bytes: u64,
    },
    /// The BIOS boot files are not usable.
    #[error("BIOS boot file is not usable: {0}; pass isolinux.bin and isohdpfx.bin from Debian's isolinux package")]
    BadBiosBoot(String),
    /// The EFI image is not usable.
    #[error("EFI boot image {path} is not usable: {reason}")]
    BadEfiImage {
        /// Its path in the ISO.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// An alias that cannot point into the EFI image.
    #[error("{path} cannot share the EFI image's bytes: {reason}")]
    BadAlias {
        /// The alias's path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The GPT could not be built.
    #[error("cannot build the hybrid GPT: {0}")]
    Gpt(#[from] GptError),
    /// A file's contents could not be read.
    #[error("cannot read the contents of {path} for the ISO: {source}")]
    Read {
        /// The file's path in the ISO.
        path: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The output could not be written.
    #[error("cannot write the ISO: {0}; check the output path and free space")]
    Write(#[source] io::Error),
}

/// Writes an ISO holding `files` (and the boot images) to `out`.
pub fn write_iso(
    files: &[IsoFile],
    bios: Option<&BiosBoot>,
    efi: Option<&EfiBoot>,
    opts: &IsoOptions,
    out: &mut impl Write,
) -> Result<IsoStats, IsoError> {
    write_iso_with_aliases(files, bios, efi, &[], opts, out)
}

/// Like [`write_iso`], and also lists `aliases`: files whose bytes are stored once, inside the
/// EFI image (a UKI's kernel and initrd sections), so the BIOS entry can load them too.
pub fn write_iso_with_aliases(
    files: &[IsoFile],
    bios: Option<&BiosBoot>,
    efi: Option<&EfiBoot>,
    aliases: &[EfiAlias],
    opts: &IsoOptions,
    out: &mut impl Write,
) -> Result<IsoStats, IsoError> {
    let mut tree = FileTree::new();
    for f in files {
        let path = tree_path(&f.path)?;
        if tree.contains(&path) {
            return Err(IsoError::DuplicatePath(path.to_string()));
        }
        tree.insert(&path, Node::file(f.data.clone(), f.mode))
            .map_err(|e| tree_error(&f.path, e))?;
    }
    write_image(&tree, bios, efi, aliases, opts, out)
}

/// Writes an ISO of a whole [`FileTree`] (directories with their modes and owners, symbolic
/// links, hard links, devices) plus the boot images to `out`.
pub fn write_iso_tree(
    tree: &FileTree,
    bios: Option<&BiosBoot>,
    efi: Option<&EfiBoot>,
    opts: &IsoOptions,
    out: &mut impl Write,
) -> Result<IsoStats, IsoError> {
    write_image(tree, bios, efi, &[], opts, out)
}

fn write_image(
    tree: &FileTree,
    bios: Option<&BiosBoot>,
    efi: Option<&EfiBoot>,
    aliases: &[EfiAlias],
    opts: &IsoOptions,
    out: &mut impl Write,
) -> Result<IsoStats, IsoError> {
    check_volume_id(&opts.volume_id)?;
    let mut tree = tree.clone();
    let bios_path = match bios {
        Some(b) => {
            check_bios(b, opts.hybrid)?;
            Some(add_boot_file(&mut tree, &b.path, 0o444)?)
        }
        None => None,
    };
    let efi_path = match efi {
        Some(e) => {
            check_efi(e)?;
            Some(add_boot_file(&mut tree, &e.path, 0o444)?)
        }
        None => None,
    };
    let mut alias_paths = Vec::with_capacity(aliases.len());
    for a in aliases {
        check_alias(a, efi)?;
        alias_paths.push(add_boot_file(&mut tree, &a.path, a.mode)?);
    }
    let boot = plan::BootFiles {
        bios: bios.zip(bios_path.as_ref()).map(|(b, p)| (p, b.isolinux_bin.clone())),
        efi: efi.zip(efi_path.as_ref()).map(|(e, p)| (p, &e.image)),
        aliases: alias_paths
            .iter()
            .zip(aliases)
            .map(|(p, a)| (p, a.offset, a.len))
            .collect(),
        // The GPT partition of the EFI image starts on a 4 KiB boundary.
        align_efi: opts.hybrid,
    };
    let mut layout = Layout::plan(&tree, boot, opts.epoch)?;
    let efi_blocks = efi.map(|e| e.image.len().div_ceil(DISK_BLOCK).next_multiple_of(8));
    let total = image_end(&layout, opts.hybrid, efi_blocks);
    let sectors = u32::try_from(total / SECTOR).map_err(|_| IsoError::ImageTooLarge { bytes: total })?;
    layout.volume_sectors = sectors;
    let (system_area, backup_gpt) = if opts.hybrid {
        hybrid_system_area(&layout, bios, efi_blocks, total, &opts.seed)?
    } else {
        (vec![0u8; (16 * SECTOR) as usize], None)
    };

    let mut w = Output { inner: out, pos: 0 };
    w.write(&system_area)?;
    layout.write_volume(&mut w, &opts.volume_id, opts.epoch, bios.is_some(), efi.is_some())?;
    if let Some((offset, bytes)) = backup_gpt {
        w.zeros_to(offset)?;
        w.write(&bytes)?;
    }
    w.zeros_to(total)?;
    w.inner.flush().map_err(IsoError::Write)?;

    Ok(IsoStats {
        bytes: total,
        sectors,
        directories: layout.dirs.len(),
        entries: layout.entry_count(),
        boot_catalog_lba: layout.catalog_lba,
        bios_image_lba: layout.bios_lba,
        efi_image_lba: layout.efi_lba,
    })
}

/// Where the image ends: hybrid images leave room for the backup GPT after the EFI image's
/// partition (`efi_blocks` disk blocks) and round up to [`HYBRID_ALIGN`].
fn image_end(layout: &Layout<'_>, hybrid: bool, efi_blocks: Option<u64>) -> u64 {
    let data_end = u64::from(layout.data_end) * SECTOR;
    if !hybrid {
        return data_end;
    }
    let mut end = data_end;
    if let (Some(lba), Some(blocks)) = (layout.efi_lba, efi_blocks) {
        end = end.max(u64::from(lba) * SECTOR + blocks * DISK_BLOCK) + GPT_BACKUP_BLOCKS * DISK_BLOCK;
    }
    end.next_multiple_of(HYBRID_ALIGN)
}

/// The system area (sectors 0–15) of a hybrid image of `total` bytes: the isohybrid MBR and,
/// with an EFI image, the primary GPT; also the backup GPT's offset and bytes.
fn hybrid_system_area(
    layout: &Layout<'_>,
    bios: Option<&BiosBoot>,
    efi_blocks: Option<u64>,
    total: u64,
    seed: &[u8; 32],
) -> Result<(Vec<u8>, Option<(u64, Vec<u8>)>), IsoError> {
    let mut system_area = vec![0u8; (16 * SECTOR) as usize];
    let mut backup_gpt = None;
    let signature: [u8; 4] = Guid::derive(seed, "uvmkit-iso mbr signature").0[..4]
        .try_into()
        .expect("a GUID has 16 bytes");
    let total_blocks = u32::try_from(total / DISK_BLOCK).map_err(|_| IsoError::ImageTooLarge { bytes: total })?;
    let mut parts = Vec::new();
    if let (Some(lba), Some(blocks)) = (layout.efi_lba, efi_blocks) {
        let efi_start = u64::from(lba) * SECTOR / DISK_BLOCK;
        let iso_first = u64::from(PVD_LBA) * SECTOR / DISK_BLOCK;
        let gpt_parts = [
            GptPartition {
                type_guid: Guid::BASIC_DATA,
                unique_guid: Guid::derive(seed, "uvmkit-iso gpt iso9660"),
                first_lba: iso_first,
                last_lba: efi_start - 1,
                attributes: ISO_DATA_ATTRIBUTES,
                name: "ISO9660".to_string(),
            },
            GptPartition {
                type_guid: Guid::EFI_SYSTEM,
                unique_guid: Guid::derive(seed, "uvmkit-iso gpt efi"),
                first_lba: efi_start,
                last_lba: efi_start + blocks - 1,
                attributes: 0,
                name: "EFI boot".to_string(),
            },
        ];
        let tables = build_gpt(total, Guid::derive(seed, "uvmkit-iso gpt disk"), &gpt_parts)?;
        system_area[DISK_BLOCK as usize..DISK_BLOCK as usize + tables.primary.len()].copy_from_slice(&tables.primary);
        backup_gpt = Some((tables.backup_offset, tables.backup));
        for p in &gpt_parts {
            parts.push(MbrPartition {
                bootable: parts.is_empty(),
                kind: if p.type_guid == Guid::EFI_SYSTEM {
                    MBR_TYPE_EFI
                } else {
                    MBR_TYPE_ISOHYBRID
                },
                start: p.first_lba as u32,
                blocks: (p.last_lba - p.first_lba + 1) as u32,
            });
        }
        parts.push(MbrPartition {
            bootable: false,
            kind: MBR_TYPE_GPT,
            start: 1,
            blocks: iso_first as u32 - 1,
        });
    } else {
        parts.push(MbrPartition {
            bootable: true,
            kind: MBR_TYPE_ISOHYBRID,
            start: 0,
            blocks: total_blocks,
        });
    }
    let boot_code = bios.map(|b| &b.isohdpfx[..BOOT_CODE_LEN]);
    let boot_block = layout.bios_lba.map_or(0, |lba| u64::from(lba) * SECTOR / DISK_BLOCK);
    system_area[..512].copy_from_slice(&hybrid::mbr(boot_code, boot_block, signature, &parts));
    Ok((system_area, backup_gpt))
}

/// The catalog entries for the boot images, BIOS first (it becomes the default entry).
pub(crate) fn boot_entries(layout: &Layout, efi_len: Option<u64>) -> Vec<BootEntry> {
    let mut entries = Vec::new();
    if let Some(lba) = layout.bios_lba {
        // ISOLINUX loads the rest of itself; El Torito loads the first 4 virtual sectors.
        entries.push(BootEntry {
            platform: PLATFORM_X86,
            sector_count: 4,
            lba,
        });
    }
    if let (Some(lba), Some(len)) = (layout.efi_lba, efi_len) {
        // A count that does not fit in 16 bits is recorded as 0, which UEFI firmware reads as
        // "to the end of the medium" (EDK2 does); the FAT inside knows its own size.
        let count = u16::try_from(len.div_ceil(DISK_BLOCK)).unwrap_or(0);
        entries.push(BootEntry {
            platform: PLATFORM_EFI,
            sector_count: count,
            lba,
        });
    }
    entries
}

fn tree_path(path: &str) -> Result<TreePath, IsoError> {
    let p = TreePath::new(path).map_err(|e| tree_error(path, e))?;
    if p.is_root() {
        return Err(IsoError::InvalidPath {
            path: path.to_string(),
            reason: "it names the root directory".to_string(),
        });
    }
    Ok(p)
}

fn tree_error(path: &str, e: TreeError) -> IsoError {
    IsoError::InvalidPath {
        path: path.to_string(),
        reason: e.to_string(),
    }
}

/// Puts a placeholder for a boot image at `path`; the planner swaps in the real contents.
fn add_boot_file(tree: &mut FileTree, path: &str, mode: u32) -> Result<TreePath, IsoError> {
    let p = tree_path(path)?;
    if tree.contains(&p) {
        return Err(IsoError::DuplicatePath(p.to_string()));
    }
    tree.insert(&p, Node::file(FileData::inline(Vec::new()), mode))
        .map_err(|e| tree_error(path, e))?;
    Ok(p)
}

fn check_volume_id(id: &str) -> Result<(), IsoError> {
    let ok = (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(IsoError::InvalidVolumeId(id.to_string()))
    }
}

fn check_bios(b: &BiosBoot, hybrid: bool) -> Result<(), IsoError> {
    if b.isolinux_bin.len() < 2048 {
        return Err(IsoError::BadBiosBoot(format!(
            "isolinux.bin is {} bytes, less than the 2048 El Torito loads",
            b.isolinux_bin.len()
        )));
    }
    if u32::try_from(b.isolinux_bin.len()).is_err() {
        return Err(IsoError::BadBiosBoot("isolinux.bin is larger than 4 GiB".to_string()));
    }
    if hybrid {
        let magic = u32::from_le_bytes(b.isolinux_bin[0x40..0x44].try_into().expect("4 bytes"));
        if magic != ISOHYBRID_MAGIC {
            return Err(IsoError::BadBiosBoot(
                "isolinux.bin lacks the isohybrid entry point (0x7078C0FB at byte 64), so the hybrid MBR cannot start it"
                    .to_string(),
            ));
        }
        if b.isohdpfx.len() < BOOT_CODE_LEN {
            return Err(IsoError::BadBiosBoot(format!(
                "isohdpfx.bin is {} bytes, but the MBR boot code is {BOOT_CODE_LEN}",
                b.isohdpfx.len()
            )));
        }
    }
    Ok(())
}

fn check_efi(e: &EfiBoot) -> Result<(), IsoError> {
    let len = e.image.len();
    let reason = if len == 0 {
        "it is empty"
    } else if !len.is_multiple_of(DISK_BLOCK) {
        "its size is not a multiple of 512 bytes"
    } else if u32::try_from(len).is_err() {
        "it is larger than 4 GiB"
    } else {
        return Ok(());
    };
    Err(IsoError::BadEfiImage {
        path: e.path.clone(),
        reason: reason.to_string(),
    })
}

fn check_alias(a: &EfiAlias, efi: Option<&EfiBoot>) -> Result<(), IsoError> {
    let reason = match efi {
        None => "there is no EFI image".to_string(),
        Some(_) if !a.offset.is_multiple_of(SECTOR) => format!(
            "its offset {} in the EFI image is not a multiple of 2048, so no ISO extent can start there; \
             align the file in the FAT image",
            a.offset
        ),
        Some(e) if a.offset.checked_add(a.len).is_none_or(|end| end > e.image.len()) => format!(
            "bytes {}..{} lie outside the {}-byte EFI image",
            a.offset,
            a.offset.saturating_add(a.len),
            e.image.len()
        ),
        Some(_) => return Ok(()),
    };
    Err(IsoError::BadAlias {
        path: a.path.clone(),
        reason,
    })
}

/// The output stream, with its position, so padding and placement can be checked as we go.
pub(crate) struct Output<'a, W: Write> {
    inner: &'a mut W,
    pos: u64,
}

impl<W: Write> Output<'_, W> {
    /// Writes `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), IsoError> {
        self.inner.write_all(bytes).map_err(IsoError::Write)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Writes zeros up to byte `offset`.
    pub fn zeros_to(&mut self, offset: u64) -> Result<(), IsoError> {
        if offset < self.pos {
            // The layout is computed before writing; this would be a bug in it, not bad input.
            return Err(IsoError::Write(io::Error::other(format!(
                "internal layout error: byte {offset} was due after byte {} had been written",
                self.pos
            ))));
        }
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        while self.pos < offset {
            let n = (offset - self.pos).min(ZEROS.len() as u64) as usize;
            self.write(&ZEROS[..n])?;
        }
        Ok(())
    }

    /// Writes zeros up to sector `lba`.
    pub fn zeros_to_sector(&mut self, lba: u32) -> Result<(), IsoError> {
        self.zeros_to(u64::from(lba) * SECTOR)
    }

    /// Copies exactly `len` bytes from `reader`, failing if it has more or fewer.
    pub fn copy(&mut self, reader: &mut dyn Read, len: u64, path: &str) -> Result<(), IsoError> {
        let read_err = |source| IsoError::Read {
            path: path.to_string(),
            source,
        };
        let mut buf = vec![0u8; 256 * 1024];
        let mut left = len;
        while left > 0 {
            let n = (left.min(buf.len() as u64)) as usize;
            reader.read_exact(&mut buf[..n]).map_err(read_err)?;
            self.write(&buf[..n])?;
            left -= n as u64;
        }
        let mut probe = [0u8; 1];
        if reader.read(&mut probe).map_err(read_err)? != 0 {
            return Err(read_err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("it is longer than the {len} bytes recorded when the image was planned"),
            )));
        }
        Ok(())
    }

    /// Streams a sparse image, reading its holes as zeros.
    pub fn copy_sparse(&mut self, image: &SparseImage, path: &str) -> Result<(), IsoError> {
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0;
        while offset < image.size() {
            let n = (image.size() - offset).min(buf.len() as u64) as usize;
            image.read_at(offset, &mut buf[..n]).map_err(|source| IsoError::Read {
                path: path.to_string(),
                source,
            })?;
            self.write(&buf[..n])?;
            offset += n as u64;
        }
        Ok(())
    }

    /// Writes one planned file's contents.
    pub fn source(&mut self, source: &Source<'_>, len: u64, path: &str) -> Result<(), IsoError> {
        match source {
            Source::Data(d) => {
                let mut r = d.open().map_err(|source| IsoError::Read {
                    path: path.to_string(),
                    source,
                })?;
                self.copy(&mut r, len, path)
            }
            Source::Bytes(b) => self.write(b),
            Source::Image(BootImage::Data(d)) => {
                let mut r = d.open().map_err(|source| IsoError::Read {
                    path: path.to_string(),
                    source,
                })?;
                self.copy(&mut r, len, path)
            }
            Source::Image(BootImage::Sparse(s)) => self.copy_sparse(s, path),
            // Its bytes are written as part of the EFI image.
            Source::Alias { .. } => Ok(()),
        }
    }
}
