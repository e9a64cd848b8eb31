//! The packages around the disk (`builder/crates/appliance`): the OVA (OVF descriptor,
//! streamOptimized VMDK, manifest) and the Vagrant boxes for VirtualBox (the same descriptor
//! and VMDK), libvirt (a qcow2 image) and Hyper-V (a VHDX and its VM description). The disk inside is written to a scratch file first,
//! since a package names its size and digest before its bytes.

use super::{io_error, EncodeError};
use crate::definition::{Format, ImageDefinition};
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use uvmkit_appliance::{OvaLayout, VirtualMachine};
use uvmkit_disk::SparseImage;

/// What a package is made of.
pub struct PackageInputs<'a> {
    /// The definition (`name`, `[vm]`, `[disk] qcow2_compressed`).
    pub definition: &'a ImageDefinition,
    /// The laid-out disk.
    pub disk: &'a SparseImage,
    /// The seed the VMDK's identifiers derive from.
    pub seed: [u8; 32],
    /// The timestamp of every archive member.
    pub epoch: u64,
    /// Where the disk inside is written first (removed afterwards).
    pub scratch_dir: &'a Path,
}

/// Writes the package `format` (an OVA or a Vagrant box) to `path`.
pub fn write_package(inputs: &PackageInputs, format: Format, path: &Path) -> Result<(), EncodeError> {
    let def = inputs.definition;
    let what = format.name();
    let vm = VirtualMachine {
        name: def.name.clone(),
        cpus: def.vm.cpus,
        memory_mib: def.vm.memory_mib,
    };
    let capacity = inputs.disk.size();
    let refused = |source| EncodeError::Appliance { format: what, source };
    let ova = OvaLayout::for_image(&def.name);
    // The disk as the package holds it, named as it is inside.
    let (inner, inner_name) = match format {
        Format::Ova => (Format::VmdkStream, ova.disk.as_str()),
        Format::VagrantVirtualbox => (Format::VmdkStream, uvmkit_appliance::VIRTUALBOX_DISK),
        Format::VagrantLibvirt => (Format::Qcow2, "box.img"),
        Format::VagrantHyperv => (Format::Vhdx, "box.vhdx"),
        _ => unreachable!("{what} is not a package"),
    };
    let scratch = inputs.scratch_dir.join(format!("{what}-{inner_name}"));
    super::disk::write_disk(inputs.disk, inner, def, inputs.seed, &scratch, inner_name)?;
    let out = BufWriter::with_capacity(1 << 20, File::create(path).map_err(io_error(what))?);
    let written = match format {
        Format::Ova => uvmkit_appliance::write_ova(out, &vm, &ova, &scratch, capacity, inputs.epoch),
        Format::VagrantVirtualbox => uvmkit_appliance::write_virtualbox_box(out, &vm, &scratch, capacity, inputs.epoch),
        Format::VagrantLibvirt => uvmkit_appliance::write_libvirt_box(out, &vm, &scratch, capacity, inputs.epoch),
        _ => uvmkit_appliance::write_hyperv_box(out, &vm, &scratch, inputs.epoch),
    };
    let out = written.map_err(refused)?;
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .map_err(io_error(what))?;
    std::fs::remove_file(&scratch).map_err(io_error(what))?;
    Ok(())
}
