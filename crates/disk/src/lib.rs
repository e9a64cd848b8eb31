//! Virtual disks as sparse extent maps, and the partitioning that goes on them.
//!
//! A [`SparseImage`] describes a disk (or a partition) of a fixed virtual size as a set of
//! non-overlapping data extents; everything else reads as zeros. Extents hold either bytes in
//! memory (metadata a writer generated) or a range of a host file (file contents, a FAT image
//! in a temporary file), so a 64 GiB disk holding a few hundred megabytes costs only its
//! metadata in memory. Every output format (raw, VHDX, VMDK) is written from a `SparseImage`
//! and stores only its allocated parts.
//!
//! On top of that: [`guid`] (GPT's mixed-endian GUIDs), [`gpt`] (the partition table and
//! protective MBR), [`mbr`] (the CHS addresses of MBR partition records), [`esp`] (a FAT32
//! EFI system partition) and [`layout`] (a whole GPT disk from a list of partitions).

#![deny(missing_docs)]

pub mod esp;
pub mod gpt;
pub mod guid;
pub mod layout;
pub mod mbr;
pub mod sparse;

pub use esp::{auto_esp_size, build_esp, EspError, EspFile, EspOptions};
pub use gpt::{build_gpt, first_usable_lba, last_usable_lba, protective_mbr, GptError, GptPartition, GptTables};
pub use guid::{Guid, GuidError};
pub use layout::{build_disk, room_for_last, DiskLayout, LayoutError, PartitionSpec, PlacedPartition};
pub use mbr::ChsGeometry;
pub use sparse::{read_exact_at, Extent, ExtentData, SparseError, SparseImage};

/// Helpers the format tests share: the test kit, and writing an image out.
#[cfg(test)]
pub(crate) mod test_support {
    use std::fs::File;
    use std::path::Path;

    pub use uvmkit_testkit::{have, pattern, run, ScratchDir};

    use crate::SparseImage;

    /// Writes `image` to `path` as a sparse raw file: only its extents are written.
    pub fn write_sparse(image: &SparseImage, path: &Path) {
        let mut out = File::create(path).unwrap();
        out.set_len(image.size()).unwrap();
        image.write_extents(&mut out).unwrap();
    }
}
