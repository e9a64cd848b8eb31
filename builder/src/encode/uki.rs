//! The Unified Kernel Image: systemd-boot's EFI stub with the kernel, initrd, command line,
//! os-release and `uname -r` as PE sections (UAPI.5), the one file every bootable format
//! carries; and the kernel on its own, for direct kernel boot.

use super::{io_error, EncodeError};
use crate::assemble::os_release;
use crate::definition::ImageDefinition;
use crate::inputs::ResolvedInputs;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use uvmkit_filetree::FileData;
use uvmkit_uki::{SectionData, UkiLayout, UkiSections};

/// Writes the UKI of `def` to `path`, with the initrd at `initrd_path`; returns where its
/// sections lie (the ISO points into them).
pub fn write_uki(
    def: &ImageDefinition,
    inputs: &ResolvedInputs,
    initrd_path: &Path,
    path: &Path,
) -> Result<UkiLayout, EncodeError> {
    let stub = inputs.uki_stub.read_all().map_err(EncodeError::Stub)?;
    let osrel = os_release(def);
    let uname = inputs.kernel.release.clone();
    let linux = match &inputs.kernel.image {
        FileData::HostFile { path, .. } => SectionData::File(path),
        FileData::Inline(bytes) => SectionData::Bytes(bytes),
    };
    let sections = UkiSections {
        osrel: osrel.as_bytes(),
        cmdline: def.cmdline.as_bytes(),
        uname: Some(uname.as_bytes()),
        initrd: Some(SectionData::File(initrd_path)),
        linux,
    };
    let mut w = BufWriter::new(File::create(path).map_err(io_error("UKI"))?);
    let layout = uvmkit_uki::write_uki(&stub, &sections, &mut w)?;
    w.flush().map_err(io_error("UKI"))?;
    Ok(layout)
}

/// Copies the kernel image to `path`.
pub fn write_kernel(inputs: &ResolvedInputs, path: &Path) -> Result<(), EncodeError> {
    let mut kernel = inputs.kernel.image.open().map_err(io_error("kernel"))?;
    let mut f = File::create(path).map_err(io_error("kernel"))?;
    std::io::copy(&mut kernel, &mut f).map_err(io_error("kernel"))?;
    Ok(())
}
