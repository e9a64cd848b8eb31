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
//! protective MBR), [`esp`] (a FAT32 EFI system partition) and [`layout`] (a whole GPT disk
//! from a list of partitions).

pub mod esp;
pub mod gpt;
pub mod guid;
pub mod layout;
pub mod sparse;

pub use esp::{auto_esp_size, build_esp, EspError, EspFile, EspOptions};
pub use gpt::{build_gpt, first_usable_lba, last_usable_lba, protective_mbr, GptError, GptPartition, GptTables};
pub use guid::{Guid, GuidError};
pub use layout::{build_disk, room_for_last, DiskLayout, LayoutError, PartitionSpec, PlacedPartition};
pub use sparse::{Extent, ExtentData, SparseError, SparseImage};

/// Helpers the format tests share: scratch directories, writing an image out, running tools.
#[cfg(test)]
pub(crate) mod test_support {
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use crate::{ExtentData, SparseImage};

    /// A fresh, empty directory for one test, removed when dropped.
    pub struct ScratchDir(pub PathBuf);

    impl ScratchDir {
        pub fn new(test: &str) -> ScratchDir {
            let dir = std::env::temp_dir().join(format!("uvmkit-disk-{test}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            ScratchDir(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Writes `image` to `path` as a sparse raw file: only its extents are written.
    pub fn write_sparse(image: &SparseImage, path: &Path) {
        let out = File::create(path).unwrap();
        out.set_len(image.size()).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        for extent in image.extents() {
            match &extent.data {
                ExtentData::Bytes(b) => out.write_all_at(b, extent.offset).unwrap(),
                ExtentData::HostFile { path, offset, len } => {
                    let src = File::open(path).unwrap();
                    let mut done = 0;
                    while done < *len {
                        let n = (*len - done).min(buf.len() as u64) as usize;
                        src.read_exact_at(&mut buf[..n], offset + done).unwrap();
                        out.write_all_at(&buf[..n], extent.offset + done).unwrap();
                        done += n as u64;
                    }
                }
            }
        }
    }

    /// True when `tool` is on PATH; otherwise prints why the calling test is skipped.
    pub fn have(tool: &str) -> bool {
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            eprintln!("note: {tool} is not on PATH; skipping the checks that need it");
        }
        found
    }

    /// Runs `tool args`, returning (success, stdout + stderr).
    pub fn run(tool: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new(tool).args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// `len` bytes of a fixed pseudo-random sequence (xorshift), different per `seed`.
    pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.truncate(len);
        out
    }
}
