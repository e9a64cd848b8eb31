//! Virtual appliance packages around a disk image that is already written.
//!
//! - [`ovf`]: the OVF 1.0 descriptor (DMTF DSP0243 1.0.0) of one virtual machine with EFI
//!   firmware, CPUs, memory, a SATA (AHCI) disk and an E1000 NIC, which VMware and VirtualBox
//!   both import, each booting EFI: VMware from its `vmw:Config` firmware key, VirtualBox from
//!   its own machine description ([`vbox`]).
//! - [`ova`]: the OVA package: a ustar archive of the descriptor, the streamOptimized VMDK and
//!   the SHA-256 manifest, in that order.
//! - [`vagrant`]: Vagrant boxes for the `virtualbox` provider (the OVF and the VMDK), the
//!   `libvirt` provider (a qcow2 image) and the `hyperv` provider (a VHDX and the VM
//!   description Vagrant reads), with `metadata.json` and a `Vagrantfile`.
//!
//! Everything written is deterministic: archive members carry the caller's timestamp, owner
//! root (uid and gid 0) and fixed modes, in a fixed order.

#![deny(missing_docs)]

mod archive;
pub mod hyperv;
pub mod ova;
pub mod ovf;
pub mod vagrant;
pub mod vbox;

use std::io;
use std::path::PathBuf;

pub use ova::{write_ova, OvaLayout};
pub use ovf::{ovf_descriptor, OvfDisk, VirtualMachine};
pub use vagrant::{write_hyperv_box, write_libvirt_box, write_virtualbox_box, VIRTUALBOX_DISK};

/// Why a package could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The disk image to package could not be read.
    #[error("cannot read the disk image {}: {source}", path.display())]
    ReadDisk {
        /// The disk image.
        path: PathBuf,
        /// What reading it reported.
        #[source]
        source: io::Error,
    },
    /// Writing the package failed.
    #[error("cannot write the {what}: {source}; check free space and permissions")]
    Write {
        /// The package being written (`OVA`, `Vagrant box`).
        what: &'static str,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// A member name does not fit a ustar header or is not a plain file name.
    #[error(
        "archive member name {0:?} is invalid: use a plain file name of at most 100 bytes \
         (letters, digits, '-', '_' and '.')"
    )]
    MemberName(String),
}

/// The result of a package writer.
pub type Result<T> = std::result::Result<T, Error>;
