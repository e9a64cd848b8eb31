//! A whole GPT disk: protective MBR, both tables and the partitions' contents, as one
//! [`SparseImage`].
//!
//! Partitions are placed in order, the first at 1 MiB and each one at the next 1 MiB boundary
//! (the alignment every current partitioning tool uses, good for 4 KiB sectors and SSD erase
//! blocks). The disk GUID and each partition's unique GUID derive from the layout's seed (and
//! the partition's name), so the same layout always gives the same bytes.

use crate::gpt::{self, GptError, GptPartition, SECTOR_SIZE, TABLE_SECTORS};
use crate::guid::Guid;
use crate::sparse::{SparseError, SparseImage};

/// Partition alignment, and the offset of the first partition.
pub const ALIGNMENT: u64 = 1 << 20;

/// One partition to lay out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionSpec {
    /// GPT partition name (at most 36 UTF-16 units), unique within the disk.
    pub name: String,
    /// GPT partition type.
    pub type_guid: Guid,
    /// The partition's bytes; its size is the partition's size (a multiple of 512).
    pub content: SparseImage,
}

/// A disk to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskLayout {
    /// Virtual size of the disk in bytes (a multiple of 512).
    pub size_bytes: u64,
    /// Seed for the disk and partition GUIDs.
    pub seed: [u8; 32],
    /// Partitions in disk order.
    pub partitions: Vec<PartitionSpec>,
}

/// Where a partition ended up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedPartition {
    /// 1-based partition number (its GPT entry index plus one, as in `/dev/sda1`).
    pub number: u32,
    /// The partition's name.
    pub name: String,
    /// Its type.
    pub type_guid: Guid,
    /// Its unique GUID (Linux's `PARTUUID`, which prints it as `{:x}`).
    pub unique_guid: Guid,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// First block.
    pub first_lba: u64,
    /// Last block, inclusive.
    pub last_lba: u64,
}

/// Why a disk could not be laid out.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The partitions and tables need more room than the disk has.
    #[error("the partitions need {needed_mib} MiB, the disk is {disk_mib} MiB; raise --disk-size")]
    DoesNotFit {
        /// MiB the layout needs, rounded up.
        needed_mib: u64,
        /// MiB the disk has, rounded down.
        disk_mib: u64,
    },
    /// The disk size is not a whole number of sectors.
    #[error("the disk size {size_bytes} is not a multiple of 512 bytes; give it in whole MiB")]
    UnalignedDisk {
        /// The size asked for.
        size_bytes: u64,
    },
    /// A partition size that is not a whole number of sectors, or zero.
    #[error("partition {name:?} is {size} bytes; a partition must be a non-zero multiple of 512 bytes")]
    BadPartitionSize {
        /// The partition's name.
        name: String,
        /// Its content's size.
        size: u64,
    },
    /// Two partitions with one name (their GUIDs derive from it).
    #[error("two partitions are named {name:?}; give each partition its own name")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// The partition table refused the layout.
    #[error(transparent)]
    Gpt(#[from] GptError),
    /// Placing bytes on the disk failed.
    #[error("cannot place partition data on the disk: {0}")]
    Sparse(#[from] SparseError),
}

impl DiskLayout {
    /// Bytes a partition appended after the current ones could take: the aligned room up to
    /// the backup table, rounded down to whole MiB. Use it to size a data partition that takes
    /// the rest of the disk.
    pub fn room_after(&self) -> Result<u64, LayoutError> {
        let sizes: Vec<u64> = self.partitions.iter().map(|p| p.content.size()).collect();
        room_for_last(self.size_bytes, &sizes)
    }
}

/// Bytes a last partition can take on a disk of `disk_bytes` after partitions of
/// `earlier_sizes`: from the next 1 MiB boundary to the last whole MiB before the backup table.
/// Errors when not even 1 MiB is left.
pub fn room_for_last(disk_bytes: u64, earlier_sizes: &[u64]) -> Result<u64, LayoutError> {
    let start = earlier_sizes
        .iter()
        .fold(ALIGNMENT, |at, &size| align_up(at.saturating_add(size)));
    let end = align_down(usable_end(disk_bytes));
    if end < start + ALIGNMENT {
        return Err(LayoutError::DoesNotFit {
            needed_mib: (start + ALIGNMENT + TABLE_SECTORS * SECTOR_SIZE).div_ceil(ALIGNMENT),
            disk_mib: disk_bytes / ALIGNMENT,
        });
    }
    Ok(end - start)
}

/// Builds the disk: protective MBR at 0, primary GPT at LBA 1, each partition's content at its
/// place, backup GPT in the last 33 sectors. Returns the image and where each partition went.
pub fn build_disk(layout: &DiskLayout) -> Result<(SparseImage, Vec<PlacedPartition>), LayoutError> {
    let size = layout.size_bytes;
    if !size.is_multiple_of(SECTOR_SIZE) {
        return Err(LayoutError::UnalignedDisk { size_bytes: size });
    }
    let placed = place(layout)?;

    let entries: Vec<GptPartition> = placed
        .iter()
        .map(|p| GptPartition {
            type_guid: p.type_guid,
            unique_guid: p.unique_guid,
            first_lba: p.first_lba,
            last_lba: p.last_lba,
            attributes: 0,
            name: p.name.clone(),
        })
        .collect();
    let tables = gpt::build_gpt(size, Guid::derive(&layout.seed, "gpt-disk"), &entries)?;

    let mut disk = SparseImage::new(size);
    disk.put_bytes(0, gpt::protective_mbr(size).to_vec())?;
    disk.put_bytes(SECTOR_SIZE, tables.primary)?;
    for (p, spec) in placed.iter().zip(&layout.partitions) {
        disk.put_image(p.offset, &spec.content)?;
    }
    disk.put_bytes(tables.backup_offset, tables.backup)?;
    Ok((disk, placed))
}

/// Computes every partition's place, checking names, sizes and that all of them fit.
fn place(layout: &DiskLayout) -> Result<Vec<PlacedPartition>, LayoutError> {
    let mut placed: Vec<PlacedPartition> = Vec::with_capacity(layout.partitions.len());
    let mut at = ALIGNMENT;
    for (i, spec) in layout.partitions.iter().enumerate() {
        let size = spec.content.size();
        if size == 0 || size % SECTOR_SIZE != 0 {
            return Err(LayoutError::BadPartitionSize {
                name: spec.name.clone(),
                size,
            });
        }
        if placed.iter().any(|p| p.name == spec.name) {
            return Err(LayoutError::DuplicateName {
                name: spec.name.clone(),
            });
        }
        let offset = at;
        let end = offset.saturating_add(size);
        placed.push(PlacedPartition {
            number: i as u32 + 1,
            name: spec.name.clone(),
            type_guid: spec.type_guid,
            unique_guid: Guid::derive(&layout.seed, &format!("gpt-partition:{}", spec.name)),
            offset,
            size,
            first_lba: offset / SECTOR_SIZE,
            last_lba: end / SECTOR_SIZE - 1,
        });
        at = align_up(end);
    }
    let end = placed.last().map(|p| p.offset + p.size).unwrap_or(ALIGNMENT);
    if end > usable_end(layout.size_bytes) {
        return Err(LayoutError::DoesNotFit {
            needed_mib: (end + TABLE_SECTORS * SECTOR_SIZE).div_ceil(ALIGNMENT),
            disk_mib: layout.size_bytes / ALIGNMENT,
        });
    }
    Ok(placed)
}

/// One past the last byte a partition may use: the start of the backup table.
fn usable_end(disk_bytes: u64) -> u64 {
    (disk_bytes / SECTOR_SIZE).saturating_sub(TABLE_SECTORS) * SECTOR_SIZE
}

fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGNMENT).saturating_mul(ALIGNMENT)
}

fn align_down(x: u64) -> u64 {
    x / ALIGNMENT * ALIGNMENT
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::time::Instant;

    use super::*;
    use crate::esp::{build_esp, EspFile, EspOptions};
    use crate::test_support::{have, pattern, run, write_sparse, ScratchDir};
    use uvmkit_filetree::FileData;

    const MIB: u64 = 1 << 20;
    const SEED: [u8; 32] = [0x5A; 32];

    fn esp_with(boot: FileData) -> SparseImage {
        let files = [EspFile {
            path: "EFI/BOOT/BOOTX64.EFI".into(),
            source: boot,
        }];
        build_esp(
            &files,
            &EspOptions {
                volume_id: 0xC0FFEE,
                mtime: 1_700_000_000,
                ..EspOptions::default()
            },
        )
        .unwrap()
    }

    /// ESP, then a data partition taking the rest of a `size`-byte disk.
    fn layout(size: u64, esp: SparseImage) -> DiskLayout {
        let mut layout = DiskLayout {
            size_bytes: size,
            seed: SEED,
            partitions: vec![PartitionSpec {
                name: "ESP".into(),
                type_guid: Guid::EFI_SYSTEM,
                content: esp,
            }],
        };
        let mut data = SparseImage::new(layout.room_after().unwrap());
        data.put_bytes(0, b"data partition".to_vec()).unwrap();
        layout.partitions.push(PartitionSpec {
            name: "data".into(),
            type_guid: Guid::LINUX_FILESYSTEM,
            content: data,
        });
        layout
    }

    fn extract(disk: &std::path::Path, offset: u64, len: u64, to: &std::path::Path) {
        use std::os::unix::fs::FileExt;
        let src = std::fs::File::open(disk).unwrap();
        let out = std::fs::File::create(to).unwrap();
        let mut buf = vec![0u8; MIB as usize];
        for at in (0..len).step_by(MIB as usize) {
            let n = (len - at).min(MIB) as usize;
            src.read_exact_at(&mut buf[..n], offset + at).unwrap();
            out.write_all_at(&buf[..n], at).unwrap();
        }
    }

    #[test]
    fn partitioning_tools_accept_the_disk() {
        let scratch = ScratchDir::new("layout-tools");
        let boot = pattern(1_234_567, 9);
        let size = 256 * MIB;
        let (disk, placed) = build_disk(&layout(size, esp_with(FileData::inline(boot.clone())))).unwrap();
        assert_eq!(placed.len(), 2);
        assert_eq!(
            (placed[0].offset, placed[0].first_lba, placed[0].number),
            (MIB, 2048, 1)
        );
        assert_eq!(placed[1].offset, MIB + 64 * MIB);
        assert_eq!(
            placed[1].offset + placed[1].size,
            255 * MIB,
            "the data partition takes the rest in whole MiB"
        );
        let path = scratch.path().join("disk.img");
        write_sparse(&disk, &path);
        let p = path.to_str().unwrap();

        if have("sgdisk") {
            let (ok, out) = run("sgdisk", &["-v", p]);
            assert!(ok && out.contains("No problems found"), "sgdisk -v:\n{out}");
            let (ok, out) = run("sgdisk", &["-p", p]);
            assert!(ok, "sgdisk -p:\n{out}");
            let disk_guid = Guid::derive(&SEED, "gpt-disk");
            assert!(
                out.contains(&format!("Disk identifier (GUID): {disk_guid}")),
                "disk GUID:\n{out}"
            );
            assert!(out.contains("Partition table holds up to 128 entries"), "{out}");
            let rows: Vec<&str> = out.lines().filter(|l| l.trim_start().starts_with(['1', '2'])).collect();
            assert!(
                rows[0].contains("2048") && rows[0].contains("133119") && rows[0].contains("64.0 MiB"),
                "{out}"
            );
            assert!(rows[0].contains("EF00") && rows[0].ends_with("ESP"), "{out}");
            assert!(
                rows[1].contains("133120") && rows[1].contains("522239") && rows[1].contains("8300"),
                "{out}"
            );
            assert!(rows[1].ends_with("data"), "{out}");
            // sgdisk prints GUIDs from the on-disk bytes: they must read back as our text.
            for (n, part) in placed.iter().enumerate() {
                let (ok, out) = run("sgdisk", &["-i", &(n + 1).to_string(), p]);
                assert!(ok, "{out}");
                assert!(
                    out.contains(&format!("Partition GUID code: {}", part.type_guid)),
                    "{out}"
                );
                assert!(
                    out.contains(&format!("Partition unique GUID: {}", part.unique_guid)),
                    "{out}"
                );
                assert!(out.contains(&format!("First sector: {} ", part.first_lba)), "{out}");
                assert!(out.contains(&format!("Last sector: {} ", part.last_lba)), "{out}");
            }
        }
        if have("fdisk") {
            let (ok, out) = run("fdisk", &["-l", p]);
            assert!(ok, "fdisk -l:\n{out}");
            assert!(out.contains("Disklabel type: gpt"), "{out}");
            assert!(
                out.contains(&format!("Disk identifier: {}", Guid::derive(&SEED, "gpt-disk"))),
                "{out}"
            );
            assert!(out.contains("EFI System") && out.contains("Linux filesystem"), "{out}");
            assert!(
                !out.to_lowercase().contains("corrupt") && !out.contains("mismatch"),
                "{out}"
            );
        }
        let esp_path = scratch.path().join("esp.img");
        extract(&path, placed[0].offset, placed[0].size, &esp_path);
        if have("fsck.fat") {
            let (ok, out) = run("fsck.fat", &["-n", esp_path.to_str().unwrap()]);
            assert!(ok, "fsck.fat on the ESP at its offset:\n{out}");
        }
        if have("mdir") && have("mcopy") {
            let target = format!("{p}@@{}", placed[0].offset);
            let (ok, out) = run("mdir", &["-i", &target, "::/EFI/BOOT"]);
            assert!(ok && out.contains("BOOTX64  EFI   1234567"), "mdir:\n{out}");
            let back = scratch.path().join("BOOTX64.EFI");
            let (ok, out) = run(
                "mcopy",
                &["-n", "-i", &target, "::/EFI/BOOT/BOOTX64.EFI", back.to_str().unwrap()],
            );
            assert!(ok, "{out}");
            assert!(std::fs::read(&back).unwrap() == boot, "BOOTX64.EFI came back different");
        }
    }

    #[test]
    fn same_layout_gives_the_same_disk() {
        let esp = || esp_with(FileData::inline(pattern(300_000, 1)));
        let (a, pa) = build_disk(&layout(128 * MIB, esp())).unwrap();
        let (b, pb) = build_disk(&layout(128 * MIB, esp())).unwrap();
        assert_eq!(a, b);
        assert_eq!(pa, pb);
        let mut other = layout(128 * MIB, esp());
        other.seed[0] ^= 1;
        let (c, pc) = build_disk(&other).unwrap();
        assert_ne!(pa[0].unique_guid, pc[0].unique_guid, "the seed picks the GUIDs");
        assert_ne!(a, c);
        assert_ne!(pa[0].unique_guid, pa[1].unique_guid);
    }

    #[test]
    fn a_64_gib_disk_with_a_100_mb_esp_is_fast_and_sparse() {
        let scratch = ScratchDir::new("layout-64g");
        let kernel = scratch.path().join("uki.efi");
        std::fs::write(&kernel, pattern(100_000_000, 7)).unwrap();
        let started = Instant::now();
        let esp = esp_with(FileData::host_file(&kernel).unwrap());
        let (disk, placed) = build_disk(&layout(64 << 30, esp)).unwrap();
        let built = started.elapsed();
        let path = scratch.path().join("disk.img");
        write_sparse(&disk, &path);
        let total = started.elapsed();
        let meta = std::fs::metadata(&path).unwrap();
        let on_disk = meta.blocks() * 512;
        eprintln!(
            "64 GiB disk, 100 MB ESP of {} MiB: layout {:?}, layout + write {:?}, {} MiB allocated, {} MiB in extents",
            placed[0].size / MIB,
            built,
            total,
            on_disk / MIB,
            disk.allocated_bytes() / MIB
        );
        assert_eq!(meta.len(), 64 << 30);
        assert!(
            on_disk < 110 * MIB,
            "the raw file should hold little more than the ESP's data: {on_disk}"
        );
        assert!(built.as_secs() < 5, "laying out must not touch the data: {built:?}");
        assert!(total.as_secs() < 60, "writing took {total:?}");
        if have("sgdisk") {
            let (ok, out) = run("sgdisk", &["-v", path.to_str().unwrap()]);
            assert!(ok && out.contains("No problems found"), "sgdisk -v:\n{out}");
        }
    }

    #[test]
    fn explains_what_does_not_fit() {
        let esp = esp_with(FileData::inline(vec![1; 10]));
        let mut l = layout(256 * MIB, esp.clone());
        l.size_bytes = 100 * MIB;
        let err = build_disk(&l).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the partitions need 256 MiB, the disk is 100 MiB; raise --disk-size"
        );
        assert!(matches!(
            room_for_last(66 * MIB, &[64 * MIB]),
            Err(LayoutError::DoesNotFit { .. })
        ));
        assert_eq!(room_for_last(67 * MIB, &[64 * MIB]).unwrap(), MIB);
        assert_eq!(
            room_for_last(100 * MIB, &[64 * MIB + 512]).unwrap(),
            100 * MIB - 67 * MIB
        );
        let mut odd = layout(256 * MIB, esp.clone());
        odd.size_bytes += 1;
        assert!(matches!(build_disk(&odd), Err(LayoutError::UnalignedDisk { .. })));
        let mut twins = layout(256 * MIB, esp.clone());
        twins.partitions[1].name = "ESP".into();
        assert!(matches!(build_disk(&twins), Err(LayoutError::DuplicateName { .. })));
        let mut ragged = layout(256 * MIB, esp);
        ragged.partitions[1].content = SparseImage::new(1000);
        assert!(matches!(build_disk(&ragged), Err(LayoutError::BadPartitionSize { .. })));
    }
}
