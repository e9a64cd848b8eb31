//! Virtual-disk container formats: raw, VHDX, VMDK and qcow2.
//!
//! Every writer takes a [`SparseImage`] (the whole virtual disk) and streams it into one
//! container format, storing only the blocks that hold data. A block whose bytes are all zero
//! is treated as unallocated, so zero-filled extents cost nothing. Memory stays bounded: data
//! moves one piece (at most 1 MiB, or one VMDK grain) at a time, and the allocation tables are
//! generated from the list of blocks actually stored, so a 64 TiB disk costs no more memory
//! than its data needs. Output bytes are deterministic: every identifier derives from the
//! caller's `seed` as `SHA-256(seed || purpose)`.
//!
//! - [`raw`]: a sparse raw file.
//! - [`vhdx`]: Hyper-V VHDX, dynamic or fixed (MS-VHDX).
//! - [`vmdk`]: VMware monolithicSparse (Workstation, Fusion, VirtualBox) and streamOptimized
//!   (ESXi, OVA) (VMware Virtual Disk Format 1.1 / 5.0).
//! - [`qcow2`]: QEMU qcow2 version 3, plain or deflate-compressed (qemu's
//!   `docs/interop/qcow2.txt`).

#![deny(missing_docs)]

pub mod qcow2;
pub mod raw;
pub mod vhdx;
pub mod vmdk;

mod sink;

use std::io;
use std::path::PathBuf;

pub use qcow2::{write_qcow2, Qcow2Options};
pub use raw::write_raw;
pub use uvmkit_disk::SparseImage;
pub use vhdx::{write_vhdx, VhdxOptions};
pub use vmdk::{write_vmdk_sparse, write_vmdk_stream, VmdkAdapter, VmdkOptions};

/// What a writer produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteStats {
    /// The disk's virtual size in bytes.
    pub virtual_size: u64,
    /// The output file's length in bytes (holes included; see the writer's docs).
    pub file_size: u64,
    /// Data blocks stored: VHDX payload blocks, VMDK grains, qcow2 clusters, or raw 4 KiB pages.
    pub data_blocks: u64,
}

/// Why a disk image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The virtual size does not suit the format.
    #[error(
        "a {format} image needs a virtual size that is a nonzero multiple of {multiple} bytes, \
         but this disk is {size} bytes; round the disk size up to a multiple of {multiple}"
    )]
    Size {
        /// The output format.
        format: &'static str,
        /// The disk's virtual size.
        size: u64,
        /// The multiple the format requires.
        multiple: u64,
    },
    /// The disk (or its data) is larger than the format can address.
    #[error(
        "a {format} image cannot hold this disk: {what} is {value} but the format allows at most \
         {max}; make the disk smaller or use another format"
    )]
    TooLarge {
        /// The output format.
        format: &'static str,
        /// The quantity that is too large.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The format's limit.
        max: u64,
    },
    /// A VHDX block size outside the specification's range.
    #[error(
        "VHDX block size {0} bytes is invalid: it must be a power of two from 1 MiB to 256 MiB \
         (MS-VHDX 2.6.2.1); 32 MiB is the usual choice, 1 MiB suits small Linux disks"
    )]
    BlockSize(u32),
    /// A VMDK extent file name the descriptor cannot carry.
    #[error(
        "VMDK extent file name {0:?} is invalid: it must be a non-empty file name without \
         quotes, slashes or control characters; use the output file's own name, e.g. disk.vmdk"
    )]
    ExtentName(String),
    /// The output already held data, which zero-skipping writes would leave in place.
    #[error(
        "the {format} output already holds {len} bytes; writers skip zeros, so they need an \
         empty output: open it with File::create (which truncates) or remove it first"
    )]
    OutputNotEmpty {
        /// The output format.
        format: &'static str,
        /// The output's length when the writer started.
        len: u64,
    },
    /// Reading the disk image's data (a host file behind an extent) failed.
    #[error("cannot read the disk image's data at offset {offset}: {source}")]
    Read {
        /// Offset in the virtual disk.
        offset: u64,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// Writing the output failed.
    #[error("cannot write the {format} output: {source}; check free space and permissions")]
    Write {
        /// The output format.
        format: &'static str,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The raw output file could not be created or sized.
    #[error("cannot create {}: {source}; check that its directory exists and is writable", path.display())]
    Create {
        /// The output path.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
}

/// The result of a writer.
pub type Result<T> = std::result::Result<T, Error>;

/// `N` bytes of `SHA-256(seed || purpose)`: how every identifier in an output is derived.
pub(crate) fn derive_bytes<const N: usize>(seed: &[u8; 32], purpose: &str) -> [u8; N] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(seed)
        .chain_update(purpose.as_bytes())
        .finalize();
    let mut out = [0u8; N];
    out.copy_from_slice(&digest[..N]);
    out
}
