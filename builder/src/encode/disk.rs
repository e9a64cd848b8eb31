//! The GPT disk: an EFI system partition holding the removable-media boot path (UEFI 2.10,
//! 3.5.1.1: `\EFI\BOOT\BOOTX64.EFI`, the UKI or shim, see [`super::esp`]), the read-only
//! system image (squashfs, partition `uvmkit-system`, type "Linux root (x86-64)" of the
//! Discoverable Partitions Specification) and the ext4 data partition the init finds by its
//! label, laid out once and written as raw, VHDX, VMDK or qcow2.

use super::system::SystemImage;
use super::{io_error, EncodeError};
use crate::assemble::add_extra_files;
use crate::definition::{Format, ImageDefinition};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use uvmkit_disk::esp::{build_esp, EspFile, EspOptions};
use uvmkit_disk::guid::Guid;
use uvmkit_disk::layout::{build_disk, room_for_last, DiskLayout, PartitionSpec};
use uvmkit_disk::SparseImage;
use uvmkit_filetree::FileTree;

/// The label the init looks for to find its data partition, and the GPT name of the system
/// image's partition.
pub use uvmkit_init_config::{DATA_LABEL, SYSTEM_PARTITION_NAME};

/// What the disk is made of.
pub struct DiskInputs<'a> {
    /// The definition (`[disk] data_files`).
    pub definition: &'a ImageDefinition,
    /// The directory `data_files` paths start from.
    pub base_dir: &'a Path,
    /// The ESP's files ([`super::esp::EspBoot::files`]).
    pub esp: &'a [EspFile],
    /// The system image, in a partition of its own between the ESP and the data partition.
    pub system: Option<&'a SystemImage>,
    /// The disk's virtual size in bytes (a whole number of MiB, at least 64 MiB).
    pub size: u64,
    /// The seed disk and file system identifiers derive from.
    pub seed: [u8; 32],
    /// Timestamp of every file and of the file systems.
    pub epoch: u64,
}

/// Lays out the disk: the ESP first, then the system image, the data partition in the rest.
pub fn build_disk_image(inputs: &DiskInputs) -> Result<SparseImage, EncodeError> {
    let (seed, epoch) = (&inputs.seed, inputs.epoch);
    let esp = build_esp(
        inputs.esp,
        &EspOptions {
            size_bytes: None,
            volume_id: u32::from_le_bytes(seed[..4].try_into().unwrap()),
            label: "EFI".into(),
            mtime: epoch,
        },
    )
    .map_err(EncodeError::Esp)?;
    let system = match inputs.system {
        Some(image) => {
            let mut content = SparseImage::new(image.size);
            content
                .put_file(0, &image.path, 0, image.size)
                .map_err(|e| EncodeError::SystemPartition(e.to_string()))?;
            Some(content)
        }
        None => None,
    };
    let data_tree = data_partition_tree(inputs.definition, inputs.base_dir)?;
    let before_data: Vec<u64> = [Some(&esp), system.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| p.size())
        .collect();
    let data_size = room_for_last(inputs.size, &before_data)?;
    let data = uvmkit_ext4::build_ext4(
        &data_tree,
        &uvmkit_ext4::Ext4Options {
            size_bytes: data_size,
            label: DATA_LABEL.into(),
            uuid: Guid::derive(seed, "data-fs-uuid").0,
            hash_seed: Guid::derive(seed, "data-fs-hash-seed").0,
            mtime: epoch as u32,
            // Image files read as zeros where nothing is written: the kernel need not zero the
            // inode tables on first mount (which would also grow a dynamic VHDX).
            assume_zeroed: true,
            ..uvmkit_ext4::Ext4Options::default()
        },
    )?;
    let mut partitions = vec![PartitionSpec {
        name: "EFI system partition".into(),
        type_guid: Guid::EFI_SYSTEM,
        content: esp,
    }];
    if let Some(content) = system {
        partitions.push(PartitionSpec {
            name: SYSTEM_PARTITION_NAME.into(),
            type_guid: Guid::LINUX_ROOT_X86_64,
            content,
        });
    }
    partitions.push(PartitionSpec {
        name: DATA_LABEL.into(),
        type_guid: Guid::LINUX_FILESYSTEM,
        content: data,
    });
    let layout = DiskLayout {
        size_bytes: inputs.size,
        seed: inputs.seed,
        partitions,
    };
    let (disk, _placed) = build_disk(&layout)?;
    Ok(disk)
}

/// The data partition's files (`[disk] data_files`).
fn data_partition_tree(def: &ImageDefinition, base_dir: &Path) -> Result<FileTree, EncodeError> {
    let mut tree = FileTree::new();
    add_extra_files(&mut tree, &def.disk.data_files, base_dir)
        .map_err(|(path, source)| EncodeError::DataFiles { path, source })?;
    Ok(tree)
}

/// The artifact file name of a disk format.
pub fn disk_file_name(name: &str, format: Format) -> String {
    match format {
        Format::Raw => format!("{name}.raw"),
        Format::Vhdx => format!("{name}.vhdx"),
        Format::Vmdk => format!("{name}.vmdk"),
        Format::VmdkStream => format!("{name}-stream.vmdk"),
        Format::Qcow2 => format!("{name}.qcow2"),
        Format::Ova => format!("{name}.ova"),
        Format::VagrantVirtualbox => format!("{name}-virtualbox.box"),
        Format::VagrantLibvirt => format!("{name}-libvirt.box"),
        Format::VagrantHyperv => format!("{name}-hyperv.box"),
        Format::Efi | Format::Iso => unreachable!("not a disk format"),
    }
}

/// Writes `disk` in `format` to `path`; a VMDK's descriptor names its extent `file_name`.
pub fn write_disk(
    disk: &SparseImage,
    format: Format,
    def: &ImageDefinition,
    seed: [u8; 32],
    path: &Path,
    file_name: &str,
) -> Result<(), EncodeError> {
    let what = format.name();
    let refused = |source| EncodeError::Disk { format: what, source };
    if format == Format::Raw {
        uvmkit_vdisk::write_raw(disk, path).map_err(refused)?;
        return Ok(());
    }
    let mut f = File::create(path).map_err(io_error(what))?;
    let vmdk = uvmkit_vdisk::VmdkOptions {
        seed,
        extent_file_name: file_name.to_string(),
        ..uvmkit_vdisk::VmdkOptions::default()
    };
    match format {
        Format::Vhdx => {
            let o = uvmkit_vdisk::VhdxOptions {
                block_size: def.disk.vhdx_block_size,
                fixed: def.disk.vhdx_fixed,
                seed,
            };
            uvmkit_vdisk::write_vhdx(disk, &o, &mut f).map_err(refused)?;
        }
        Format::Vmdk => {
            uvmkit_vdisk::write_vmdk_sparse(disk, &vmdk, &mut f).map_err(refused)?;
        }
        Format::VmdkStream => {
            let mut w = BufWriter::new(&mut f);
            uvmkit_vdisk::write_vmdk_stream(disk, &vmdk, &mut w).map_err(refused)?;
            w.flush().map_err(io_error(what))?;
        }
        Format::Qcow2 => {
            let o = uvmkit_vdisk::Qcow2Options {
                compressed: def.disk.qcow2_compressed,
            };
            let mut w = BufWriter::with_capacity(1 << 20, &mut f);
            uvmkit_vdisk::write_qcow2(disk, &o, &mut w).map_err(refused)?;
            w.flush().map_err(io_error(what))?;
        }
        Format::Raw
        | Format::Efi
        | Format::Iso
        | Format::Ova
        | Format::VagrantVirtualbox
        | Format::VagrantLibvirt
        | Format::VagrantHyperv => {
            unreachable!("not written here")
        }
    }
    Ok(())
}
