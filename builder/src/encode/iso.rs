//! The hybrid ISO (ECMA-119 with El Torito, and an MBR for USB disks): BIOS boots ISOLINUX,
//! which loads the kernel and initrd from ISO 9660; UEFI boots the El Torito EFI image, which
//! holds what the disk's ESP holds ([`super::esp`]: the UKI, or shim, GRUB and the kernel). The
//! kernel and initrd are stored once: the ISO 9660 records point into the EFI image.
//!
//! With a system image, the image is a file of its own on the ISO 9660 file system
//! ([`SYSTEM_MEDIUM_FILE`]) and both boot paths load only the small boot initrd, whose init
//! finds the medium (the CD, or the ISO written to a USB disk), checks the file's sha256 and
//! mounts it from there: the image is read through the CD driver as it is used, never copied
//! into the initramfs.

use super::esp::{EspBoot, GRUB_CFG_PATH, INITRD_PATH, KERNEL_PATH};
use super::system::{SystemImage, SYSTEM_MEDIUM_FILE};
use super::{io_error, EncodeError};
use crate::definition::ImageDefinition;
use crate::inputs::ResolvedInputs;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use uvmkit_disk::esp::{build_esp, EspFile, EspOptions};
use uvmkit_disk::{ExtentData, SparseImage};
use uvmkit_filetree::FileData;

/// What the ISO is made of.
pub struct IsoInputs<'a> {
    /// The definition (command line, volume label).
    pub definition: &'a ImageDefinition,
    /// The kernel and the ISOLINUX files.
    pub inputs: &'a ResolvedInputs,
    /// What the EFI image holds.
    pub esp: &'a EspBoot<'a>,
    /// Where the UKI's sections lie in it (with [`EspBoot::Uki`]).
    pub uki_layout: &'a uvmkit_uki::UkiLayout,
    /// The initrd file.
    pub initrd_path: &'a Path,
    /// The system image, stored as [`SYSTEM_MEDIUM_FILE`] (the initrd then finds it there).
    pub system_image: Option<&'a SystemImage>,
    /// The seed the ISO's and the FAT image's identifiers derive from.
    pub seed: [u8; 32],
    /// Timestamp of every file and volume date.
    pub epoch: u64,
}

/// Writes the ISO to `path`.
pub fn write_iso(iso: &IsoInputs, path: &Path) -> Result<(), EncodeError> {
    let (def, inputs, seed, epoch) = (iso.definition, iso.inputs, iso.seed, iso.epoch);
    let isolinux = inputs.isolinux.as_ref().ok_or(EncodeError::NoIsolinux)?;
    let err = io_error("ISO");
    // The El Torito EFI image: a small FAT holding the ESP's files.
    let esp_files = iso.esp.files();
    let efi_img = build_esp(
        &esp_files,
        &EspOptions {
            size_bytes: Some(fat_size_for(esp_files.iter().map(|f| f.source.len()).sum())),
            volume_id: u32::from_le_bytes(seed[4..8].try_into().unwrap()),
            label: "UVMKIT_EFI".into(),
            mtime: epoch,
        },
    )
    .map_err(EncodeError::IsoEfiImage)?;
    let cfg = format!(
        "DEFAULT uvmkit\nPROMPT 0\nTIMEOUT 0\nLABEL uvmkit\n  KERNEL /boot/vmlinuz\n  APPEND initrd=/boot/initrd.img {}\n",
        def.cmdline
    );
    let bytes = |d: &FileData| d.read_all().map_err(io_error("ISO"));
    let initrd = FileData::host_file(iso.initrd_path).map_err(&err)?;
    // The BIOS path reads the kernel and initrd from ISO 9660, the UEFI path the same bytes
    // from the FAT image (as the UKI's .linux and .initrd sections, or as files). Every file
    // there is 4 KiB-aligned, so the ISO 9660 records point at them: stored once. With shim,
    // GRUB's `grub.cfg` is listed too: GRUB may see the CD as one ISO 9660 device rather than
    // the El Torito image it was started from, and then reads its `$prefix` there.
    let mut wanted = vec![
        (KERNEL_PATH, inputs.kernel.image.clone()),
        (INITRD_PATH, initrd.clone()),
    ];
    let aliases = match iso.esp {
        EspBoot::Uki { uki } => uki_aliases(&efi_img, uki, iso.uki_layout, &inputs.kernel.image, &initrd),
        EspBoot::Shim { .. } => {
            if let Some(cfg) = esp_files.iter().find(|f| f.path == GRUB_CFG_PATH) {
                wanted.push((GRUB_CFG_PATH, cfg.source.clone()));
            }
            file_aliases(&efi_img, &esp_files, &[KERNEL_PATH, INITRD_PATH, GRUB_CFG_PATH])
        }
    };
    let mut files = vec![
        uvmkit_iso::IsoFile {
            path: "isolinux/isolinux.cfg".into(),
            data: FileData::inline(cfg.into_bytes()),
            mode: 0o644,
        },
        uvmkit_iso::IsoFile {
            path: "isolinux/ldlinux.c32".into(),
            data: isolinux.ldlinux_c32.clone(),
            mode: 0o644,
        },
    ];
    if let Some(image) = iso.system_image {
        files.push(uvmkit_iso::IsoFile {
            path: SYSTEM_MEDIUM_FILE.trim_start_matches('/').into(),
            data: image.data(),
            mode: 0o444,
        });
    }
    for (path, data) in wanted {
        if aliases.iter().any(|a| a.path == path) {
            continue;
        }
        log::warn!("ISO: {path} does not lie 2 KiB-aligned in the EFI image; storing it twice");
        files.push(uvmkit_iso::IsoFile {
            path: path.into(),
            data,
            mode: 0o644,
        });
    }
    let bios = uvmkit_iso::BiosBoot {
        isolinux_bin: bytes(&isolinux.isolinux_bin)?,
        isohdpfx: bytes(&isolinux.isohdpfx)?,
        path: "isolinux/isolinux.bin".into(),
    };
    let efi = uvmkit_iso::EfiBoot {
        image: uvmkit_iso::BootImage::Sparse(efi_img),
        path: "boot/efi.img".into(),
    };
    let opts = uvmkit_iso::IsoOptions {
        volume_id: def.iso_volume_label(),
        epoch: epoch as i64,
        seed,
        hybrid: true,
    };
    let mut w = BufWriter::new(File::create(path).map_err(&err)?);
    uvmkit_iso::write_iso_with_aliases(&files, Some(&bios), Some(&efi), &aliases, &opts, &mut w)?;
    w.flush().map_err(&err)?;
    Ok(())
}

/// Where in `efi_img` the contents of `file` start: the extent `build_esp` made of it (the
/// same host file, or the same bytes in memory).
fn offset_in_image(efi_img: &SparseImage, file: &FileData) -> Option<u64> {
    efi_img.extents().find_map(|e| {
        let same = match (&e.data, file) {
            (ExtentData::HostFile { path, offset: 0, len }, FileData::HostFile { path: p, size, .. }) => {
                path == p && len == size
            }
            (ExtentData::Bytes(b), FileData::Inline(i)) => std::sync::Arc::ptr_eq(b, i),
            _ => false,
        };
        same.then_some(e.offset)
    })
}

/// ISO 9660 records at `paths` for the ESP files of the same paths, pointing at their bytes in
/// `efi_img`; a file that does not start on a 2 KiB ISO block gets none (it is then stored).
fn file_aliases(efi_img: &SparseImage, files: &[EspFile], paths: &[&str]) -> Vec<uvmkit_iso::EfiAlias> {
    paths
        .iter()
        .filter_map(|&path| {
            let file = files.iter().find(|f| f.path == path)?;
            let offset = offset_in_image(efi_img, &file.source)?;
            (offset % uvmkit_iso::SECTOR == 0).then(|| uvmkit_iso::EfiAlias {
                path: path.into(),
                offset,
                len: file.source.len(),
                mode: 0o644,
            })
        })
        .collect()
}

/// ISO 9660 records for `/boot/vmlinuz` and `/boot/initrd.img` that point into the EFI image
/// where the UKI's `.linux` and `.initrd` sections lie; empty when they are not where a 2 KiB
/// ISO block can point (then the files are stored separately).
fn uki_aliases(
    efi_img: &SparseImage,
    uki: &FileData,
    layout: &uvmkit_uki::UkiLayout,
    kernel: &FileData,
    initrd: &FileData,
) -> Vec<uvmkit_iso::EfiAlias> {
    let Some(uki_start) = offset_in_image(efi_img, uki) else {
        return vec![];
    };
    let mut aliases = Vec::new();
    for (section, iso_path, data) in [
        (".linux", "boot/vmlinuz", kernel),
        (".initrd", "boot/initrd.img", initrd),
    ] {
        let Some(s) = layout.sections.iter().find(|s| s.name == section) else {
            return vec![];
        };
        let offset = uki_start + u64::from(s.file_offset);
        if offset % uvmkit_iso::SECTOR != 0 || u64::from(s.raw_size) < data.len() {
            return vec![];
        }
        aliases.push(uvmkit_iso::EfiAlias {
            path: iso_path.into(),
            offset,
            len: data.len(),
            mode: 0o644,
        });
    }
    aliases
}

/// A FAT image just large enough for `payload` bytes of files (FAT32 needs at least 65525 clusters).
fn fat_size_for(payload: u64) -> u64 {
    let want = payload + payload / 16 + (4 << 20);
    let mib = want.div_ceil(1 << 20).max(34);
    mib << 20
}
