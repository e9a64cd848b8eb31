//! Encoding the assembled tree into the bytes a machine boots, one crate per format: the
//! read-only system image and the boot tree that mounts it ([`system`]), the initrd
//! ([`initrd`]), the Unified Kernel Image ([`uki`]), what the ESP holds ([`esp`]: the
//! UKI, or Debian's signed shim chain), the GPT disk with its ESP and ext4 data partition as
//! raw, VHDX, VMDK and qcow2 ([`disk`]), the OVA and Vagrant boxes around that disk
//! ([`appliance`]), and the hybrid ISO ([`iso`]). Every
//! writer takes what it encodes and the path to write; publishing the result is the next
//! stage's work.

pub mod appliance;
pub mod disk;
pub mod esp;
pub mod initrd;
pub mod iso;
pub mod system;
pub mod uki;

use std::io;
use uvmkit_filetree::TreePath;

/// Why an artifact could not be encoded; the message starts with what was being made.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The system image could not be written.
    #[error("system image: {0}")]
    Squashfs(#[from] uvmkit_squashfs::SquashfsError),
    /// The boot initrd's tree could not be made.
    #[error("boot initrd: {what}: {reason}")]
    BootTree {
        /// The file being added.
        what: String,
        /// What went wrong.
        reason: String,
    },
    /// The initrd writer refused the tree.
    #[error("initrd: {0}")]
    Initrd(#[from] uvmkit_initrd::InitrdError),
    /// The UKI stub could not be read.
    #[error("EFI stub: {0}")]
    Stub(#[source] io::Error),
    /// The UKI writer refused the stub, kernel or sections.
    #[error("UKI: {0}")]
    Uki(#[from] uvmkit_uki::UkiError),
    /// The UKI could not be signed.
    #[error("signing the UKI: {0}")]
    Sign(#[from] uvmkit_authenticode::SignError),
    /// The disk's EFI system partition could not be made.
    #[error("EFI system partition: {0}")]
    Esp(#[source] uvmkit_disk::esp::EspError),
    /// A `[disk] data_files` entry could not be made.
    #[error("[disk] data_files: files entry {path}: {source}")]
    DataFiles {
        /// The entry's path on the data partition.
        path: TreePath,
        /// What went wrong.
        source: crate::assemble::ExtraFileError,
    },
    /// The data partition's ext4 file system could not be made.
    #[error("data partition (ext4): {0}")]
    DataPartition(#[from] uvmkit_ext4::Ext4Error),
    /// The system image could not be placed in its partition.
    #[error("system partition: {0}")]
    SystemPartition(String),
    /// The partitions do not fit the disk.
    #[error("disk layout: {0}")]
    Layout(#[from] uvmkit_disk::layout::LayoutError),
    /// A disk format's writer refused the disk.
    #[error("{format}: {source}")]
    Disk {
        /// The format (`vhdx`, `vmdk`...).
        format: &'static str,
        /// What the writer reported.
        source: uvmkit_vdisk::Error,
    },
    /// An OVA or Vagrant box could not be packaged.
    #[error("{format}: {source}")]
    Appliance {
        /// The format (`ova`, `vagrant-virtualbox`...).
        format: &'static str,
        /// What the packager reported.
        source: uvmkit_appliance::Error,
    },
    /// The ISO needs the ISOLINUX packages, which were not fetched.
    #[error("ISO: the isolinux packages were not fetched")]
    NoIsolinux,
    /// `[boot] loader = "shim"`, but the signed chain's packages were not fetched (the
    /// definition's `formats` have no disk image or ISO, and `--format` asked for one).
    #[error("{format}: the shim chain's packages were not fetched; add {format} to the definition's formats")]
    NoShimChain {
        /// The format being built.
        format: &'static str,
    },
    /// The ISO's El Torito EFI image could not be made.
    #[error("ISO EFI image: {0}")]
    IsoEfiImage(#[source] uvmkit_disk::esp::EspError),
    /// The ISO writer refused the files or boot images.
    #[error("ISO: {0}")]
    Iso(#[from] uvmkit_iso::IsoError),
    /// Writing or reading a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being written (`initrd`, `UKI`, `ISO`, `kernel`, a disk format).
        what: &'static str,
        /// What the operation reported.
        source: io::Error,
    },
}

/// Tags an I/O error with what was being written.
pub(crate) fn io_error(what: &'static str) -> impl Fn(io::Error) -> EncodeError {
    move |source| EncodeError::Io { what, source }
}
