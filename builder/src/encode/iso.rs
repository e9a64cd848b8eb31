//! The hybrid ISO (ECMA-119 with El Torito, and an MBR for USB disks): BIOS boots ISOLINUX,
//! which loads the kernel and initrd from ISO 9660; UEFI boots the UKI from the El Torito EFI
//! image. The kernel and initrd are stored once: the ISO 9660 records point into the EFI image.

use super::{io_error, EncodeError};
use crate::definition::ImageDefinition;
use crate::inputs::ResolvedInputs;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use uvmkit_disk::esp::{build_esp, EspFile, EspOptions};
use uvmkit_disk::SparseImage;
use uvmkit_filetree::FileData;

/// What the ISO is made of.
pub struct IsoInputs<'a> {
    /// The definition (command line, volume label).
    pub definition: &'a ImageDefinition,
    /// The kernel and the ISOLINUX files.
    pub inputs: &'a ResolvedInputs,
    /// The UKI, written to a file.
    pub uki: &'a FileData,
    /// Where the UKI's sections lie in it.
    pub uki_layout: &'a uvmkit_uki::UkiLayout,
    /// The initrd file.
    pub initrd_path: &'a Path,
    /// The seed the ISO's and the FAT image's identifiers derive from.
    pub seed: [u8; 32],
    /// Timestamp of every file and volume date.
    pub epoch: u64,
}

/// Writes the ISO to `path`.
pub fn write_iso(iso: &IsoInputs, path: &Path) -> Result<(), EncodeError> {
    let (def, inputs, uki, seed, epoch) = (iso.definition, iso.inputs, iso.uki, iso.seed, iso.epoch);
    let isolinux = inputs.isolinux.as_ref().ok_or(EncodeError::NoIsolinux)?;
    let err = io_error("ISO");
    // The El Torito EFI image: a small FAT holding the UKI as the removable-media boot path.
    let efi_img = build_esp(
        &[EspFile {
            path: "EFI/BOOT/BOOTX64.EFI".into(),
            source: uki.clone(),
        }],
        &EspOptions {
            size_bytes: Some(fat_size_for(uki.len())),
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
    // The BIOS path reads the kernel and initrd from ISO 9660; the UEFI path reads the UKI
    // from the FAT image, which holds the same bytes as its .linux and .initrd sections. Both
    // are 4 KiB-aligned in the FAT image, so the ISO 9660 records point at them: stored once.
    let aliases = shared_boot_files(&efi_img, uki, iso.uki_layout, &inputs.kernel.image, &initrd);
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
    if aliases.is_empty() {
        log::warn!(
            "ISO: the UKI's sections are not 2 KiB-aligned in the EFI image; storing the kernel and initrd twice"
        );
        files.push(uvmkit_iso::IsoFile {
            path: "boot/vmlinuz".into(),
            data: inputs.kernel.image.clone(),
            mode: 0o644,
        });
        files.push(uvmkit_iso::IsoFile {
            path: "boot/initrd.img".into(),
            data: initrd,
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

/// ISO 9660 records for `/boot/vmlinuz` and `/boot/initrd.img` that point into the EFI image
/// where the UKI's `.linux` and `.initrd` sections lie; empty when they are not where a 2 KiB
/// ISO block can point (then the files are stored separately).
fn shared_boot_files(
    efi_img: &SparseImage,
    uki: &FileData,
    layout: &uvmkit_uki::UkiLayout,
    kernel: &FileData,
    initrd: &FileData,
) -> Vec<uvmkit_iso::EfiAlias> {
    let FileData::HostFile { path: uki_path, .. } = uki else {
        return vec![];
    };
    let Some(uki_start) = efi_img.extents().find_map(|e| match &e.data {
        uvmkit_disk::ExtentData::HostFile { path, offset: 0, len } if path == uki_path && *len == uki.len() => {
            Some(e.offset)
        }
        _ => None,
    }) else {
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

/// A FAT image just large enough for `payload` bytes (FAT32 needs at least 65525 clusters).
fn fat_size_for(payload: u64) -> u64 {
    let want = payload + payload / 16 + (4 << 20);
    let mib = want.div_ceil(1 << 20).max(34);
    mib << 20
}
