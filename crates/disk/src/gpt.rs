//! The GUID Partition Table and its protective MBR (UEFI 2.10 §5.2.3 and §5.3).
//!
//! Everything here assumes 512-byte logical blocks and the usual 128 entries of 128 bytes, so
//! the primary table is the header at LBA 1 and the entry array at LBAs 2–33, and the backup is
//! the entry array in the 32 blocks before the last one and its header in the last block
//! (§5.3.1). The functions only compute bytes; placing them is the caller's business.

use crc::{Crc, CRC_32_ISO_HDLC};

use crate::guid::Guid;
use crate::mbr::ChsGeometry;

/// Bytes in a logical block.
pub const SECTOR_SIZE: u64 = 512;
/// Entries in the partition entry array (the minimum §5.3.2 allows for 16 KiB).
pub const ENTRY_COUNT: u32 = 128;
/// Bytes in one partition entry (§5.3.3).
pub const ENTRY_SIZE: u32 = 128;
/// Blocks taken by the entry array.
const ENTRY_ARRAY_SECTORS: u64 = (ENTRY_COUNT as u64 * ENTRY_SIZE as u64) / SECTOR_SIZE;
/// Blocks in one copy of the table: header plus entry array.
pub const TABLE_SECTORS: u64 = 1 + ENTRY_ARRAY_SECTORS;
/// UTF-16 code units in a partition name (§5.3.3, `PartitionName`, 72 bytes).
pub const NAME_UNITS: usize = 36;

/// Size of the GPT header proper (§5.3.2, `HeaderSize`).
const HEADER_SIZE: u32 = 92;
/// `Revision` 1.0 (§5.3.2).
const REVISION: u32 = 0x0001_0000;
/// `Signature` "EFI PART" (§5.3.2).
const SIGNATURE: &[u8; 8] = b"EFI PART";

/// The CRC-32 of §5.3.2 (the one zlib and Ethernet use).
const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// One partition to record in the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptPartition {
    /// What the partition holds (`PartitionTypeGUID`); must not be all zeros.
    pub type_guid: Guid,
    /// This partition's own identity (`UniquePartitionGUID`, Linux's `PARTUUID`).
    pub unique_guid: Guid,
    /// First block (`StartingLBA`).
    pub first_lba: u64,
    /// Last block, inclusive (`EndingLBA`).
    pub last_lba: u64,
    /// `Attributes` bits (§5.3.3, Table 5.7): bit 0 required, bit 2 legacy BIOS bootable.
    pub attributes: u64,
    /// Human-readable name, at most 36 UTF-16 code units.
    pub name: String,
}

/// The two copies of a GPT, ready to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptTables {
    /// Header (LBA 1) followed by the entry array (LBAs 2–33): 33 blocks, written at byte 512.
    pub primary: Vec<u8>,
    /// Entry array followed by the backup header: 33 blocks, written at `backup_offset`.
    pub backup: Vec<u8>,
    /// Byte offset of `backup` on the disk (the disk's last 33 blocks).
    pub backup_offset: u64,
}

/// Why a partition table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GptError {
    /// The disk size is not a whole number of blocks.
    #[error("a GPT disk must be a multiple of 512 bytes, but this one is {disk_bytes} bytes; round the disk size up")]
    UnalignedDisk {
        /// The size asked for.
        disk_bytes: u64,
    },
    /// The disk cannot hold two tables and one block of data.
    #[error(
        "a disk of {disk_bytes} bytes is too small for a GPT (it needs at least {min} bytes); make the disk larger"
    )]
    DiskTooSmall {
        /// The size asked for.
        disk_bytes: u64,
        /// The smallest size that works.
        min: u64,
    },
    /// More partitions than entries.
    #[error("{count} partitions do not fit in a GPT of {max} entries; use fewer partitions")]
    TooManyPartitions {
        /// Partitions asked for.
        count: usize,
        /// Entries available.
        max: u32,
    },
    /// A partition name longer than the entry holds.
    #[error("partition name {name:?} is {units} UTF-16 units long; GPT allows at most {NAME_UNITS}, so shorten it")]
    NameTooLong {
        /// The name.
        name: String,
        /// Its length in UTF-16 code units.
        units: usize,
    },
    /// A partition with the all-zero type GUID, which GPT reads as an unused entry.
    #[error("partition {name:?} has the all-zero type GUID, which marks an unused entry; give it a real type")]
    NilType {
        /// The partition's name.
        name: String,
    },
    /// A partition whose last block comes before its first.
    #[error("partition {name:?} ends (LBA {last_lba}) before it starts (LBA {first_lba})")]
    Inverted {
        /// The partition's name.
        name: String,
        /// Its first block.
        first_lba: u64,
        /// Its last block.
        last_lba: u64,
    },
    /// A partition outside the usable blocks.
    #[error(
        "partition {name:?} spans LBAs {first_lba}..={last_lba}, but only {first_usable}..={last_usable} \
         are usable on this disk; make the disk larger or the partition smaller"
    )]
    OutOfRange {
        /// The partition's name.
        name: String,
        /// Its first block.
        first_lba: u64,
        /// Its last block.
        last_lba: u64,
        /// First usable block of the disk.
        first_usable: u64,
        /// Last usable block of the disk.
        last_usable: u64,
    },
    /// Two partitions share blocks.
    #[error("partitions {first:?} and {second:?} overlap at LBA {lba}; move one of them")]
    Overlap {
        /// One partition's name.
        first: String,
        /// The other's.
        second: String,
        /// First shared block.
        lba: u64,
    },
    /// Two partitions share a unique GUID.
    #[error("partitions {first:?} and {second:?} have the same unique GUID {guid}; each needs its own")]
    DuplicateGuid {
        /// One partition's name.
        first: String,
        /// The other's.
        second: String,
        /// The shared GUID.
        guid: Guid,
    },
}

/// First block a partition may use: after the protective MBR, the header and the entry array.
pub fn first_usable_lba() -> u64 {
    1 + TABLE_SECTORS
}

/// Last block a partition may use on a disk of `disk_bytes` (the backup table takes the last
/// 33 blocks). Meaningless (saturates at 0) for disks too small for a GPT.
pub fn last_usable_lba(disk_bytes: u64) -> u64 {
    (disk_bytes / SECTOR_SIZE).saturating_sub(TABLE_SECTORS + 1)
}

/// The protective MBR of UEFI 2.10 §5.2.3: no boot code, one partition record of type 0xEE
/// covering the disk from LBA 1 (or as much as 32 bits can say), signature 0xAA55.
pub fn protective_mbr(disk_bytes: u64) -> [u8; 512] {
    let mut mbr = [0u8; 512];
    let last_lba = (disk_bytes / SECTOR_SIZE).saturating_sub(1);
    let size_in_lba = u32::try_from(last_lba).unwrap_or(u32::MAX);
    // Table 5.4: the record at offset 446.
    let rec = &mut mbr[446..462];
    rec[0] = 0x00; // BootIndicator: not bootable (the firmware must not boot it as legacy MBR)
    rec[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // StartingCHS: LBA 1
    rec[4] = 0xEE; // OSType: GPT protective
                   // EndingCHS: the last block, or 0xFFFFFF when CHS cannot address it.
    rec[5..8].copy_from_slice(&ChsGeometry::LBA_ASSIST.address(last_lba).unwrap_or([0xFF; 3]));
    rec[8..12].copy_from_slice(&1u32.to_le_bytes()); // StartingLBA
    rec[12..16].copy_from_slice(&size_in_lba.to_le_bytes()); // SizeInLBA
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    mbr
}

/// Builds both copies of a GPT for a disk of `disk_bytes` holding `partitions`, in that entry
/// order, after checking that every partition lies in the usable blocks and none overlap.
pub fn build_gpt(disk_bytes: u64, disk_guid: Guid, partitions: &[GptPartition]) -> Result<GptTables, GptError> {
    if !disk_bytes.is_multiple_of(SECTOR_SIZE) {
        return Err(GptError::UnalignedDisk { disk_bytes });
    }
    // Protective MBR, two tables and at least one usable block.
    let min = (2 + 2 * TABLE_SECTORS) * SECTOR_SIZE;
    if disk_bytes < min {
        return Err(GptError::DiskTooSmall { disk_bytes, min });
    }
    if partitions.len() > ENTRY_COUNT as usize {
        return Err(GptError::TooManyPartitions {
            count: partitions.len(),
            max: ENTRY_COUNT,
        });
    }
    let first_usable = first_usable_lba();
    let last_usable = last_usable_lba(disk_bytes);
    check_partitions(partitions, first_usable, last_usable)?;

    // §5.3.3: the entry array; unused entries stay all zeros.
    let mut entries = vec![0u8; (ENTRY_COUNT * ENTRY_SIZE) as usize];
    for (p, entry) in partitions.iter().zip(entries.chunks_exact_mut(ENTRY_SIZE as usize)) {
        entry[0..16].copy_from_slice(&p.type_guid.0);
        entry[16..32].copy_from_slice(&p.unique_guid.0);
        entry[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        entry[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        entry[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        for (i, unit) in p.name.encode_utf16().enumerate() {
            entry[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
    }
    let entries_crc = CRC32.checksum(&entries);

    let last_lba = disk_bytes / SECTOR_SIZE - 1;
    let backup_entries_lba = last_lba - ENTRY_ARRAY_SECTORS;
    let header = |my_lba: u64, alternate_lba: u64, entries_lba: u64| {
        gpt_header(&HeaderFields {
            my_lba,
            alternate_lba,
            first_usable,
            last_usable,
            disk_guid,
            entries_lba,
            entries_crc,
        })
    };

    let mut primary = Vec::with_capacity((TABLE_SECTORS * SECTOR_SIZE) as usize);
    primary.extend_from_slice(&header(1, last_lba, 2));
    primary.extend_from_slice(&entries);

    let mut backup = entries;
    backup.extend_from_slice(&header(last_lba, 1, backup_entries_lba));

    Ok(GptTables {
        primary,
        backup,
        backup_offset: backup_entries_lba * SECTOR_SIZE,
    })
}

fn check_partitions(partitions: &[GptPartition], first_usable: u64, last_usable: u64) -> Result<(), GptError> {
    for p in partitions {
        let units = p.name.encode_utf16().count();
        if units > NAME_UNITS {
            return Err(GptError::NameTooLong {
                name: p.name.clone(),
                units,
            });
        }
        if p.type_guid.is_nil() {
            return Err(GptError::NilType { name: p.name.clone() });
        }
        if p.last_lba < p.first_lba {
            return Err(GptError::Inverted {
                name: p.name.clone(),
                first_lba: p.first_lba,
                last_lba: p.last_lba,
            });
        }
        if p.first_lba < first_usable || p.last_lba > last_usable {
            return Err(GptError::OutOfRange {
                name: p.name.clone(),
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                first_usable,
                last_usable,
            });
        }
    }
    let mut by_start: Vec<&GptPartition> = partitions.iter().collect();
    by_start.sort_by_key(|p| (p.first_lba, p.last_lba));
    for pair in by_start.windows(2) {
        if pair[1].first_lba <= pair[0].last_lba {
            return Err(GptError::Overlap {
                first: pair[0].name.clone(),
                second: pair[1].name.clone(),
                lba: pair[1].first_lba,
            });
        }
    }
    let mut by_guid: Vec<&GptPartition> = partitions.iter().collect();
    by_guid.sort_by_key(|p| p.unique_guid);
    for pair in by_guid.windows(2) {
        if pair[0].unique_guid == pair[1].unique_guid {
            return Err(GptError::DuplicateGuid {
                first: pair[0].name.clone(),
                second: pair[1].name.clone(),
                guid: pair[0].unique_guid,
            });
        }
    }
    Ok(())
}

/// The fields that differ between headers or depend on the disk.
struct HeaderFields {
    my_lba: u64,
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Guid,
    entries_lba: u64,
    entries_crc: u32,
}

/// One header block (§5.3.2, Table 5.5), the rest of the block zero.
fn gpt_header(h: &HeaderFields) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[0..8].copy_from_slice(SIGNATURE);
    b[8..12].copy_from_slice(&REVISION.to_le_bytes());
    b[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
    // 16..20 HeaderCRC32, computed below over HeaderSize bytes with this field zero.
    // 20..24 Reserved, zero.
    b[24..32].copy_from_slice(&h.my_lba.to_le_bytes());
    b[32..40].copy_from_slice(&h.alternate_lba.to_le_bytes());
    b[40..48].copy_from_slice(&h.first_usable.to_le_bytes());
    b[48..56].copy_from_slice(&h.last_usable.to_le_bytes());
    b[56..72].copy_from_slice(&h.disk_guid.0);
    b[72..80].copy_from_slice(&h.entries_lba.to_le_bytes());
    b[80..84].copy_from_slice(&ENTRY_COUNT.to_le_bytes());
    b[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
    b[88..92].copy_from_slice(&h.entries_crc.to_le_bytes());
    let crc = CRC32.checksum(&b[..HEADER_SIZE as usize]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn part(name: &str, first: u64, last: u64) -> GptPartition {
        GptPartition {
            type_guid: Guid::LINUX_FILESYSTEM,
            unique_guid: Guid::derive(b"test", name),
            first_lba: first,
            last_lba: last,
            attributes: 0,
            name: name.to_string(),
        }
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    #[test]
    fn crcs_sit_where_the_spec_says_and_cover_the_right_bytes() {
        let disk = 64 * MIB;
        let t = build_gpt(disk, Guid::derive(b"test", "disk"), &[part("a", 2048, 4095)]).unwrap();
        assert_eq!(t.primary.len(), 33 * 512);
        assert_eq!(t.backup.len(), 33 * 512);
        assert_eq!(t.backup_offset, disk - 33 * 512);

        let (ph, pe) = t.primary.split_at(512);
        let (be, bh) = t.backup.split_at(32 * 512);
        assert_eq!(pe, be, "both copies hold the same entry array");
        for (h, my, alt, entries) in [(ph, 1, disk / 512 - 1, 2), (bh, disk / 512 - 1, 1, disk / 512 - 33)] {
            assert_eq!(&h[0..8], b"EFI PART");
            assert_eq!(u32_at(h, 8), 0x0001_0000);
            assert_eq!(u32_at(h, 12), 92);
            let mut zeroed = h[..92].to_vec();
            zeroed[16..20].fill(0);
            assert_eq!(u32_at(h, 16), CRC32.checksum(&zeroed), "header CRC at offset 16");
            assert_eq!(u64_at(h, 24), my);
            assert_eq!(u64_at(h, 32), alt);
            assert_eq!(u64_at(h, 40), 34);
            assert_eq!(u64_at(h, 48), disk / 512 - 34);
            assert_eq!(u64_at(h, 72), entries);
            assert_eq!(u32_at(h, 80), 128);
            assert_eq!(u32_at(h, 84), 128);
            assert_eq!(u32_at(h, 88), CRC32.checksum(pe), "entry array CRC at offset 88");
            assert!(h[92..].iter().all(|&b| b == 0));
        }
        // The entry: type, unique GUID, LBAs, name in UTF-16LE.
        assert_eq!(&pe[0..16], &Guid::LINUX_FILESYSTEM.0);
        assert_eq!(u64_at(pe, 32), 2048);
        assert_eq!(u64_at(pe, 40), 4095);
        assert_eq!(&pe[56..60], &[b'a', 0, 0, 0]);
        assert!(pe[128..].iter().all(|&b| b == 0));
    }

    #[test]
    fn crc_matches_the_published_check_value() {
        // The CRC-32 catalogue's check value for "123456789".
        assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn protective_mbr_covers_the_disk() {
        let mbr = protective_mbr(64 * MIB);
        assert_eq!(&mbr[510..], &[0x55, 0xAA]);
        assert_eq!(mbr[446 + 4], 0xEE);
        assert_eq!(u32_at(&mbr, 446 + 8), 1);
        assert_eq!(u32_at(&mbr, 446 + 12), (64 * MIB / 512 - 1) as u32);
        // LBA 131071 = cylinder 8, head 40, sector 32 in 255/63 geometry.
        assert_eq!(&mbr[446 + 5..446 + 8], &[40, 32, 8]);
        assert!(mbr[462..510].iter().all(|&b| b == 0), "only one record");

        let big = protective_mbr(4 << 40);
        assert_eq!(u32_at(&big, 446 + 12), u32::MAX);
        assert_eq!(&big[446 + 5..446 + 8], &[0xFF, 0xFF, 0xFF]);
    }

    #[test]
    fn refuses_bad_partitions() {
        let disk = 64 * MIB;
        let last = last_usable_lba(disk);
        let g = Guid::NIL;
        assert!(matches!(
            build_gpt(disk + 1, g, &[]),
            Err(GptError::UnalignedDisk { .. })
        ));
        assert!(matches!(
            build_gpt(67 * 512, g, &[]),
            Err(GptError::DiskTooSmall { .. })
        ));
        assert!(build_gpt(68 * 512, g, &[]).is_ok());
        assert!(matches!(
            build_gpt(disk, g, &[part("a", 33, 100)]),
            Err(GptError::OutOfRange { .. })
        ));
        assert!(matches!(
            build_gpt(disk, g, &[part("a", 34, last + 1)]),
            Err(GptError::OutOfRange { .. })
        ));
        assert!(build_gpt(disk, g, &[part("a", 34, last)]).is_ok());
        assert!(matches!(
            build_gpt(disk, g, &[part("a", 100, 99)]),
            Err(GptError::Inverted { .. })
        ));
        assert!(matches!(
            build_gpt(disk, g, &[part("a", 2048, 4096), part("b", 4096, 8191)]),
            Err(GptError::Overlap { .. })
        ));
        let long = "x".repeat(37);
        assert!(matches!(
            build_gpt(disk, g, &[part(&long, 2048, 4095)]),
            Err(GptError::NameTooLong { .. })
        ));
        assert!(build_gpt(disk, g, &[part(&"x".repeat(36), 2048, 4095)]).is_ok());
        let mut nil = part("a", 2048, 4095);
        nil.type_guid = Guid::NIL;
        assert!(matches!(build_gpt(disk, g, &[nil]), Err(GptError::NilType { .. })));
        let mut twin = part("b", 4096, 8191);
        twin.unique_guid = part("a", 0, 0).unique_guid;
        assert!(matches!(
            build_gpt(disk, g, &[part("a", 2048, 4095), twin]),
            Err(GptError::DuplicateGuid { .. })
        ));
        let many: Vec<_> = (0..129)
            .map(|i| part(&i.to_string(), 2048 + i * 8, 2048 + i * 8 + 7))
            .collect();
        assert!(matches!(
            build_gpt(disk, g, &many),
            Err(GptError::TooManyPartitions { .. })
        ));
        assert!(build_gpt(disk, g, &many[..128]).is_ok());
    }
}
