//! The boot loaders' files, taken from their Debian packages: the UKI stub every image needs,
//! ISOLINUX's BIOS boot files for the ISO, and Debian's signed Secure Boot chain (shim, its
//! MOK manager, GRUB) for disk images and the ISO that boot through it.

use super::kernel::Kernel;
use super::unpack::PackageError;
use std::collections::BTreeMap;
use std::io::Read;
use uvmkit_filetree::{FileData, FileTree, NodeKind, TreePath};

/// The package that provides the UKI stub.
pub const STUB_PACKAGE: &str = "systemd-boot-efi";
/// Where the stub lies in that package.
pub const STUB_PATH: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// The packages that provide BIOS boot for the ISO.
pub const ISOLINUX_PACKAGES: [&str; 2] = ["isolinux", "syslinux-common"];

/// Debian's shim, signed by Microsoft's third-party UEFI CA; it embeds Debian's Secure Boot CA
/// and verifies what it loads against it.
pub const SHIM_PACKAGE: &str = "shim-signed";
/// Where shim lies in it.
pub const SHIM_PATH: &str = "/usr/lib/shim/shimx64.efi.signed";
/// shim's MOK manager (and fallback), signed by Debian.
pub const SHIM_HELPERS_PACKAGE: &str = "shim-helpers-amd64-signed";
/// Where the MOK manager lies in it: shim starts it from its own directory as `mmx64.efi`
/// when a MOK change is pending.
pub const MOK_MANAGER_PATH: &str = "/usr/lib/shim/mmx64.efi.signed";
/// Debian's monolithic GRUB images, signed by Debian.
pub const GRUB_PACKAGE: &str = "grub-efi-amd64-signed";
/// The disk image of them: every module built in, `$prefix` `/EFI/debian` on the device it was
/// loaded from, where it reads `grub.cfg` (Debian's grub2 `build-efi-images`).
pub const GRUB_PATH: &str = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";
/// The packages of the signed chain.
pub const SHIM_CHAIN_PACKAGES: [&str; 3] = [SHIM_PACKAGE, SHIM_HELPERS_PACKAGE, GRUB_PACKAGE];

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

/// Debian's signed Secure Boot chain: shim verifies GRUB, GRUB asks shim to verify the kernel.
#[derive(Debug, Clone)]
pub struct ShimChain {
    /// `shimx64.efi`, signed by Microsoft.
    pub shim: FileData,
    /// `mmx64.efi`, the MOK manager, signed by Debian.
    pub mok_manager: FileData,
    /// `grubx64.efi`, signed by Debian.
    pub grub: FileData,
}

/// The boot loaders' files a build uses.
#[derive(Debug, Clone)]
pub struct BootFiles {
    /// The systemd-boot EFI stub of the UKI.
    pub uki_stub: FileData,
    /// ISOLINUX, when the ISO's packages were fetched.
    pub isolinux: Option<IsolinuxFiles>,
    /// The signed chain, when its packages were fetched.
    pub shim_chain: Option<ShimChain>,
}

/// Why the boot loaders cannot boot this kernel.
#[derive(Debug, thiserror::Error)]
pub enum BootFilesError {
    /// The kernel package's image carries no Authenticode signature, so shim and GRUB would
    /// refuse it with Secure Boot on.
    #[error(
        "kernel {release} from {package} is not signed, so Debian's shim chain cannot boot it with \
         Secure Boot on; use the signed kernel (linux-image-amd64, or linux-image-RELEASE without \
         -unsigned), or set [boot] loader = \"uki\""
    )]
    UnsignedKernel {
        /// The kernel release.
        release: String,
        /// The definition's kernel package.
        package: String,
    },
    /// The kernel image could not be read.
    #[error("reading kernel {release}: {source}")]
    Read {
        /// The kernel release.
        release: String,
        /// What reading reported.
        source: std::io::Error,
    },
}

/// The boot loaders' files from the boot loader packages' trees (by package name): the UKI
/// stub always, ISOLINUX when an ISO is built (`iso`), the signed chain when its packages were
/// fetched.
pub(super) fn boot_files(loader_trees: &BTreeMap<String, FileTree>, iso: bool) -> Result<BootFiles, PackageError> {
    // A hand-edited (or damaged) lock can leave the stub's package out; it is outside input,
    // so its absence is an error that says what to do, never a panic.
    let stub_tree = loader_trees.get(STUB_PACKAGE).ok_or(PackageError::NotPinned {
        package: STUB_PACKAGE,
        needed_for: "the UKI stub every image boots through",
    })?;
    let uki_stub = file_in(stub_tree, STUB_PATH, STUB_PACKAGE)?;
    let isolinux = if iso {
        let [iso_tree, common] = ISOLINUX_PACKAGES.map(|name| {
            loader_trees.get(name).ok_or(PackageError::NotPinned {
                package: name,
                needed_for: "the ISO's BIOS boot",
            })
        });
        let (iso_tree, common) = (iso_tree?, common?);
        Some(IsolinuxFiles {
            isolinux_bin: file_in(iso_tree, "/usr/lib/ISOLINUX/isolinux.bin", "isolinux")?,
            isohdpfx: file_in(iso_tree, "/usr/lib/ISOLINUX/isohdpfx.bin", "isolinux")?,
            ldlinux_c32: file_in(common, "/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common")?,
        })
    } else {
        None
    };
    let shim_chain = match (
        loader_trees.get(SHIM_PACKAGE),
        loader_trees.get(SHIM_HELPERS_PACKAGE),
        loader_trees.get(GRUB_PACKAGE),
    ) {
        (Some(shim), Some(helpers), Some(grub)) => Some(ShimChain {
            shim: file_in(shim, SHIM_PATH, SHIM_PACKAGE)?,
            mok_manager: file_in(helpers, MOK_MANAGER_PATH, SHIM_HELPERS_PACKAGE)?,
            grub: file_in(grub, GRUB_PATH, GRUB_PACKAGE)?,
        }),
        _ => None,
    };
    Ok(BootFiles {
        uki_stub,
        isolinux,
        shim_chain,
    })
}

/// Checks that a kernel the signed chain is to boot carries an Authenticode signature. A
/// package's unsigned kernel is an error (Debian has the signed one); a local kernel only a
/// warning, since it still boots with Secure Boot off.
pub(super) fn check_kernel_signed(kernel: &Kernel, package: Option<&str>) -> Result<(), BootFilesError> {
    let mut head = Vec::new();
    kernel
        .image
        .open()
        .and_then(|r| r.take(PE_HEADER_READ).read_to_end(&mut head))
        .map_err(|source| BootFilesError::Read {
            release: kernel.release.clone(),
            source,
        })?;
    if has_authenticode_signature(&head) {
        return Ok(());
    }
    match package {
        Some(package) => Err(BootFilesError::UnsignedKernel {
            release: kernel.release.clone(),
            package: package.to_string(),
        }),
        None => {
            log::warn!(
                "the local kernel {} is not signed: the disk images and the ISO boot it through shim only \
                 with Secure Boot off",
                kernel.release
            );
            Ok(())
        }
    }
}

/// How much of a PE image holds its headers (the data directories are within the first KiB of
/// a Linux EFI stub kernel).
const PE_HEADER_READ: u64 = 4096;

/// Whether the PE/COFF image starting with `head` has a certificate table: the Certificate
/// Table data directory (PE format, "Optional Header Data Directories", entry 4, which
/// Authenticode signatures go in) with a non-zero size.
pub fn has_authenticode_signature(head: &[u8]) -> bool {
    let u16_at = |o: usize| head.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| head.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    if head.get(..2) != Some(b"MZ") {
        return false;
    }
    // e_lfanew at 0x3C points at the "PE\0\0" signature; the optional header follows the
    // 20-byte COFF header.
    let Some(pe) = u32_at(0x3C).map(|v| v as usize) else {
        return false;
    };
    if head.get(pe..pe + 4) != Some(b"PE\0\0") {
        return false;
    }
    let optional = pe + 24;
    // The data directories start at 96 bytes into a PE32 optional header, 112 into PE32+.
    let directories = match u16_at(optional) {
        Some(0x10B) => optional + 96,
        Some(0x20B) => optional + 112,
        _ => return false,
    };
    let Some(count) = u32_at(directories - 4) else {
        return false;
    };
    count > 4 && u32_at(directories + 4 * 8 + 4).is_some_and(|size| size > 0)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A PE32+ header whose certificate table has `cert_size` bytes.
    fn pe32_plus(cert_size: u32) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[..2].copy_from_slice(b"MZ");
        b[0x3C..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        let optional = 0x80 + 24;
        b[optional..optional + 2].copy_from_slice(&0x20Bu16.to_le_bytes());
        // NumberOfRvaAndSizes, then 16 directories of (address, size).
        b[optional + 108..optional + 112].copy_from_slice(&16u32.to_le_bytes());
        let cert = optional + 112 + 4 * 8;
        b[cert..cert + 4].copy_from_slice(&0x1000u32.to_le_bytes());
        b[cert + 4..cert + 8].copy_from_slice(&cert_size.to_le_bytes());
        b
    }

    #[test]
    fn a_certificate_table_means_signed() {
        assert!(has_authenticode_signature(&pe32_plus(0x5F0)));
        assert!(!has_authenticode_signature(&pe32_plus(0)));
        assert!(!has_authenticode_signature(b"MZ"));
        assert!(!has_authenticode_signature(&[0u8; 512]));
    }
}
