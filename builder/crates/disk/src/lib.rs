//! Virtual disks as sparse extent maps, and the partitioning that goes on them.
//!
//! A [`SparseImage`] describes a disk (or a partition) of a fixed virtual size as a set of
//! non-overlapping data extents; everything else reads as zeros. Extents hold either bytes in
//! memory (metadata a writer generated) or a range of a host file (file contents, a FAT image
//! in a temporary file), so a 64 GiB disk holding a few hundred megabytes costs only its
//! metadata in memory. Every output format (raw, VHDX, VMDK) is written from a `SparseImage`
//! and stores only its allocated parts.

pub mod sparse;

pub use sparse::{Extent, ExtentData, SparseImage, SparseError};
