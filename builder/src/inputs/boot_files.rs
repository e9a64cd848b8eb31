//! The boot loaders' files, taken from their Debian packages: the UKI stub every image needs
//! and, for the ISO, ISOLINUX's BIOS boot files.

use super::unpack::PackageError;
use std::collections::BTreeMap;
use uvmkit_filetree::{FileData, FileTree, NodeKind, TreePath};

/// The package that provides the UKI stub.
pub const STUB_PACKAGE: &str = "systemd-boot-efi";
/// Where the stub lies in that package.
pub const STUB_PATH: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// The packages that provide BIOS boot for the ISO.
pub const ISOLINUX_PACKAGES: [&str; 2] = ["isolinux", "syslinux-common"];

/// The BIOS boot files of the ISO.
#[derive(Debug, Clone)]
pub struct IsolinuxFiles {
    /// `isolinux.bin`.
    pub isolinux_bin: FileData,
    /// `isohdpfx.bin`, the isohybrid MBR code.
    pub isohdpfx: FileData,
    /// `ldlinux.c32`.
    pub ldlinux_c32: FileData,
}

/// The UKI stub and, when an ISO is built (`iso`), the ISOLINUX files, from the boot loader
/// packages' trees (by package name).
pub(super) fn boot_files(
    loader_trees: &BTreeMap<String, FileTree>,
    iso: bool,
) -> Result<(FileData, Option<IsolinuxFiles>), PackageError> {
    // A hand-edited (or damaged) lock can leave the stub's package out; it is outside input,
    // so its absence is an error that says what to do, never a panic.
    let stub_tree = loader_trees.get(STUB_PACKAGE).ok_or(PackageError::NotPinned {
        package: STUB_PACKAGE,
        needed_for: "the UKI stub every image boots through",
    })?;
    let uki_stub = file_in(stub_tree, STUB_PATH, STUB_PACKAGE)?;
    if !iso {
        return Ok((uki_stub, None));
    }
    let [iso_tree, common] = ISOLINUX_PACKAGES.map(|name| {
        loader_trees.get(name).ok_or(PackageError::NotPinned {
            package: name,
            needed_for: "the ISO's BIOS boot",
        })
    });
    let (iso_tree, common) = (iso_tree?, common?);
    let isolinux = IsolinuxFiles {
        isolinux_bin: file_in(iso_tree, "/usr/lib/ISOLINUX/isolinux.bin", "isolinux")?,
        isohdpfx: file_in(iso_tree, "/usr/lib/ISOLINUX/isohdpfx.bin", "isolinux")?,
        ldlinux_c32: file_in(common, "/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common")?,
    };
    Ok((uki_stub, Some(isolinux)))
}

/// The file of `tree` at `path`, or an error naming the package that should have had it.
fn file_in(tree: &FileTree, path: &str, package: &str) -> Result<FileData, PackageError> {
    let missing = || PackageError::MissingFile {
        package: package.to_string(),
        path: path.to_string(),
    };
    let tp = TreePath::new(path).map_err(|_| missing())?;
    let real = tree.resolve(&tp).unwrap_or(tp);
    match tree.get(&real).map(|n| &n.kind) {
        Some(NodeKind::File(d)) => Ok(d.clone()),
        _ => Err(missing()),
    }
}
