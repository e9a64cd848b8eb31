//! Hyper-V VHDX images, dynamic or fixed, as [MS-VHDX] v1 describes them.
//!
//! File layout (every object aligned to 1 MiB, MS-VHDX §2.1):
//!
//! | offset       | object                                              |
//! |--------------|-----------------------------------------------------|
//! | 0            | file type identifier (§2.2.1)                        |
//! | 64 KiB       | header 1, sequence number 1 (§2.2.2)                 |
//! | 128 KiB      | header 2, sequence number 2: the current header      |
//! | 192, 256 KiB | region table and its copy (§2.2.3)                   |
//! | 1 MiB        | log, 1 MiB of zeros: LogGuid is zero, nothing to replay (§2.3) |
//! | 2 MiB        | metadata region, 1 MiB (§2.6)                        |
//! | 3 MiB        | block allocation table, whole MiBs (§2.5)            |
//! | after it     | payload blocks in virtual-disk order (§2.4.1)        |
//!
//! A dynamic file stores only blocks that hold a non-zero byte; a fixed one stores every
//! block (and says so with LeaveBlockAllocated), with all-zero pages left as holes when the
//! output is a file. Headers, region tables and metadata go out first, then the payload
//! blocks, then the BAT, whose entries are known once the blocks are placed.

use std::io::{Seek, Write};

use uvmkit_disk::{Guid, SparseImage};

use crate::sink::{for_each_piece, BlockPlacer, SparseSink, PIECE};
use crate::{Error, Result, WriteStats};

const FORMAT: &str = "VHDX";

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

const HEADER1_OFFSET: u64 = 64 * KIB;
const HEADER2_OFFSET: u64 = 128 * KIB;
const REGION_TABLE1_OFFSET: u64 = 192 * KIB;
const REGION_TABLE2_OFFSET: u64 = 256 * KIB;
const LOG_OFFSET: u64 = MIB;
const LOG_LENGTH: u64 = MIB;
const METADATA_OFFSET: u64 = 2 * MIB;
const METADATA_LENGTH: u64 = MIB;
const BAT_OFFSET: u64 = 3 * MIB;

/// The header's checksummed size (§2.2.2) and the region table's (§2.2.3).
const HEADER_SIZE: usize = 4096;
const REGION_TABLE_SIZE: usize = 64 * 1024;

/// Metadata items start after the 64 KiB metadata table (§2.6.1.2: "Offset ... at least 64 KB").
const METADATA_ITEMS_OFFSET: u32 = 64 * 1024;

/// §2.6.2.4: the only logical sector size we write; the kernel's and Hyper-V's default.
const LOGICAL_SECTOR_SIZE: u32 = 512;
/// §2.6.2.5: 4096 tells guests to align their I/O to 4 KiB.
const PHYSICAL_SECTOR_SIZE: u32 = 4096;

/// §2.6.2.2: VirtualDiskSize is at most 64 TiB.
const MAX_VIRTUAL_SIZE: u64 = 64 << 40;

/// §2.5.1.1 payload block states.
const PAYLOAD_BLOCK_FULLY_PRESENT: u64 = 6;

/// §2.2.3.2 region GUIDs.
const BAT_REGION: Guid = Guid::from_fields(
    0x2DC2_7766,
    0xF623,
    0x4200,
    [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
);
const METADATA_REGION: Guid = Guid::from_fields(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);

/// §2.6.2 metadata item GUIDs.
const FILE_PARAMETERS: Guid = Guid::from_fields(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
const VIRTUAL_DISK_SIZE: Guid = Guid::from_fields(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
/// Page 83 Data: the SCSI VPD page 0x83 identity, i.e. the virtual disk's ID.
const PAGE_83_DATA: Guid = Guid::from_fields(
    0xBECA_12AB,
    0xB2E6,
    0x4523,
    [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46],
);
const LOGICAL_SECTOR_SIZE_ITEM: Guid = Guid::from_fields(
    0x8141_BF1D,
    0xA96F,
    0x4709,
    [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
);
const PHYSICAL_SECTOR_SIZE_ITEM: Guid = Guid::from_fields(
    0xCDA3_48C7,
    0x445D,
    0x4471,
    [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56],
);

/// §2.6.1.2 metadata entry flags.
const META_IS_VIRTUAL_DISK: u32 = 1 << 1;
const META_IS_REQUIRED: u32 = 1 << 2;

/// §2.6.2.1 file parameter flags.
const LEAVE_BLOCKS_ALLOCATED: u32 = 1;

/// CRC-32C (Castagnoli), which every VHDX checksum uses (§2.2.2).
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// How to write a VHDX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VhdxOptions {
    /// Payload block size in bytes: a power of two from 1 MiB to 256 MiB. Hyper-V's default
    /// is 32 MiB; 1 MiB keeps small, scattered Linux file systems compact.
    pub block_size: u32,
    /// Store every block (a fixed VHDX) instead of only those holding data (dynamic).
    pub fixed: bool,
    /// Seed for the file's GUIDs (FileWriteGuid, DataWriteGuid, the virtual disk ID).
    pub seed: [u8; 32],
}

impl Default for VhdxOptions {
    fn default() -> Self {
        VhdxOptions {
            block_size: 32 << 20,
            fixed: false,
            seed: [0; 32],
        }
    }
}

/// Where everything goes for one disk.
struct Layout {
    block_size: u64,
    /// Payload blocks covering the virtual size (§2.5: "DataBlocksCount").
    blocks: u64,
    /// Payload blocks per sector bitmap block (§2.5: "ChunkRatio").
    chunk_ratio: u64,
    /// Payload and sector bitmap entries (§2.5.1, for a file without a parent).
    bat_entries: u64,
    bat_length: u64,
    data_offset: u64,
}

impl Layout {
    fn new(size: u64, opts: &VhdxOptions) -> Result<Layout> {
        let bs = opts.block_size;
        if !bs.is_power_of_two() || !(MIB..=256 * MIB).contains(&u64::from(bs)) {
            return Err(Error::BlockSize(bs));
        }
        if size == 0 || !size.is_multiple_of(u64::from(LOGICAL_SECTOR_SIZE)) {
            return Err(Error::Size {
                format: FORMAT,
                size,
                multiple: LOGICAL_SECTOR_SIZE.into(),
            });
        }
        if size > MAX_VIRTUAL_SIZE {
            return Err(Error::TooLarge {
                format: FORMAT,
                what: "the virtual size",
                value: size,
                max: MAX_VIRTUAL_SIZE,
            });
        }
        let block_size = u64::from(bs);
        let blocks = size.div_ceil(block_size);
        // §2.5: ChunkRatio = (2^23 * LogicalSectorSize) / BlockSize.
        let chunk_ratio = (1u64 << 23) * u64::from(LOGICAL_SECTOR_SIZE) / block_size;
        // §2.5.1: TotalBATEntries = DataBlocksCount + floor((DataBlocksCount - 1) / ChunkRatio).
        let bat_entries = blocks + (blocks - 1) / chunk_ratio;
        let bat_length = (bat_entries * 8).next_multiple_of(MIB);
        Ok(Layout {
            block_size,
            blocks,
            chunk_ratio,
            bat_entries,
            bat_length,
            data_offset: BAT_OFFSET + bat_length,
        })
    }

    /// The BAT index of payload block `block`: one sector bitmap entry follows every
    /// `chunk_ratio` payload entries (§2.5).
    fn bat_index(&self, block: u64) -> u64 {
        block + block / self.chunk_ratio
    }
}

/// Writes `img` as a VHDX file to `out`, which must be empty.
///
/// Returns the file's length as `file_size` and the payload blocks stored as `data_blocks`.
/// The output is sparse where it can be: all-zero pages inside stored blocks (and the log and
/// reserved areas) are skipped with a seek, so a fixed VHDX of a mostly empty disk costs
/// little space on a file system with holes.
pub fn write_vhdx<W: Write + Seek>(img: &SparseImage, opts: &VhdxOptions, out: &mut W) -> Result<WriteStats> {
    let layout = Layout::new(img.size(), opts)?;
    let mut sink = SparseSink::new_empty(out, FORMAT)?;

    sink.write_at(0, &file_identifier())?;
    let file_write_guid = Guid::derive(&opts.seed, "vhdx file write guid");
    let data_write_guid = Guid::derive(&opts.seed, "vhdx data write guid");
    for (offset, sequence) in [(HEADER1_OFFSET, 1), (HEADER2_OFFSET, 2)] {
        sink.write_at(offset, &header(sequence, file_write_guid, data_write_guid))?;
    }
    let regions = region_table(&layout);
    sink.write_at(REGION_TABLE1_OFFSET, &regions)?;
    sink.write_at(REGION_TABLE2_OFFSET, &regions)?;
    let disk_id = Guid::derive(&opts.seed, "vhdx virtual disk id");
    sink.write_at(METADATA_OFFSET, &metadata(img.size(), &layout, opts.fixed, disk_id))?;

    let mut placer = if opts.fixed {
        BlockPlacer::identity(layout.block_size, layout.data_offset)
    } else {
        BlockPlacer::packed(layout.block_size, layout.data_offset)
    };
    for_each_piece(img, layout.block_size, |offset, data| {
        placer.put(&mut sink, offset, data)
    })?;
    let (placed, packed_end) = placer.finish();

    let (file_size, data_blocks) = if opts.fixed {
        (layout.data_offset + layout.blocks * layout.block_size, layout.blocks)
    } else {
        (packed_end, placed.len() as u64)
    };
    write_bat(&mut sink, &layout, opts.fixed, &placed)?;
    sink.finish(file_size)?;
    Ok(WriteStats {
        virtual_size: img.size(),
        file_size,
        data_blocks,
    })
}

/// §2.2.1: the signature and a UTF-16 creator string.
fn file_identifier() -> Vec<u8> {
    let mut buf = vec![0u8; 8 + 512];
    buf[..8].copy_from_slice(b"vhdxfile");
    for (i, unit) in "uvmkit".encode_utf16().enumerate() {
        buf[8 + 2 * i..10 + 2 * i].copy_from_slice(&unit.to_le_bytes());
    }
    buf
}

/// §2.2.2: one header. LogGuid stays zero, so no reader replays the (empty) log.
fn header(sequence: u64, file_write_guid: Guid, data_write_guid: Guid) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER_SIZE];
    buf[0..4].copy_from_slice(b"head");
    buf[8..16].copy_from_slice(&sequence.to_le_bytes());
    buf[16..32].copy_from_slice(&file_write_guid.0);
    buf[32..48].copy_from_slice(&data_write_guid.0);
    // 48..64 LogGuid: zero. 64..66 LogVersion: 0.
    buf[66..68].copy_from_slice(&1u16.to_le_bytes()); // Version
    buf[68..72].copy_from_slice(&(LOG_LENGTH as u32).to_le_bytes());
    buf[72..80].copy_from_slice(&LOG_OFFSET.to_le_bytes());
    put_checksum(&mut buf);
    buf
}

/// §2.2.3: the region table naming the BAT and metadata regions, both required.
fn region_table(layout: &Layout) -> Vec<u8> {
    let mut buf = vec![0u8; REGION_TABLE_SIZE];
    buf[0..4].copy_from_slice(b"regi");
    buf[8..12].copy_from_slice(&2u32.to_le_bytes()); // EntryCount
    let entries = [
        (BAT_REGION, BAT_OFFSET, layout.bat_length),
        (METADATA_REGION, METADATA_OFFSET, METADATA_LENGTH),
    ];
    for (i, (guid, offset, length)) in entries.into_iter().enumerate() {
        let e = &mut buf[16 + 32 * i..16 + 32 * (i + 1)];
        e[0..16].copy_from_slice(&guid.0);
        e[16..24].copy_from_slice(&offset.to_le_bytes());
        // At most 64 TiB / 1 MiB entries of 8 bytes: 512 MiB, well inside a u32.
        e[24..28].copy_from_slice(&(length as u32).to_le_bytes());
        e[28..32].copy_from_slice(&1u32.to_le_bytes()); // Required
    }
    put_checksum(&mut buf);
    buf
}

/// §2.6: the metadata table and its five required items.
fn metadata(size: u64, layout: &Layout, fixed: bool, disk_id: Guid) -> Vec<u8> {
    let mut file_parameters = (layout.block_size as u32).to_le_bytes().to_vec();
    let flags = if fixed { LEAVE_BLOCKS_ALLOCATED } else { 0 };
    file_parameters.extend_from_slice(&flags.to_le_bytes());
    let virtual_disk = META_IS_VIRTUAL_DISK | META_IS_REQUIRED;
    let items: [(Guid, u32, Vec<u8>); 5] = [
        (FILE_PARAMETERS, META_IS_REQUIRED, file_parameters),
        (VIRTUAL_DISK_SIZE, virtual_disk, size.to_le_bytes().to_vec()),
        (PAGE_83_DATA, virtual_disk, disk_id.0.to_vec()),
        (
            LOGICAL_SECTOR_SIZE_ITEM,
            virtual_disk,
            LOGICAL_SECTOR_SIZE.to_le_bytes().to_vec(),
        ),
        (
            PHYSICAL_SECTOR_SIZE_ITEM,
            virtual_disk,
            PHYSICAL_SECTOR_SIZE.to_le_bytes().to_vec(),
        ),
    ];
    let mut buf = vec![0u8; METADATA_ITEMS_OFFSET as usize];
    buf[0..8].copy_from_slice(b"metadata");
    buf[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes()); // EntryCount
    for (i, (guid, flags, data)) in items.iter().enumerate() {
        // Items follow one another from METADATA_ITEMS_OFFSET on.
        let item_offset = buf.len() as u32;
        let e = &mut buf[32 + 32 * i..32 + 32 * (i + 1)];
        e[0..16].copy_from_slice(&guid.0);
        e[16..20].copy_from_slice(&item_offset.to_le_bytes());
        e[20..24].copy_from_slice(&(data.len() as u32).to_le_bytes());
        e[24..28].copy_from_slice(&flags.to_le_bytes());
        buf.extend_from_slice(data);
    }
    buf
}

/// §2.5: the BAT, generated a MiB at a time from the placed blocks. Sector bitmap entries
/// stay SB_BLOCK_NOT_PRESENT (zero): only differencing disks use them.
fn write_bat<W: Write + Seek>(
    sink: &mut SparseSink<'_, W>,
    layout: &Layout,
    fixed: bool,
    placed: &[(u64, u64)],
) -> Result<()> {
    let entry = |file_offset: u64| {
        // §2.5.1: State in bits 0-2, FileOffsetMB in bits 20-63.
        ((file_offset / MIB) << 20) | PAYLOAD_BLOCK_FULLY_PRESENT
    };
    let per_chunk = PIECE / 8;
    let mut placed = placed.iter().peekable();
    let mut buf = vec![0u8; PIECE as usize];
    let mut first = 0u64;
    while first < layout.bat_entries {
        let count = per_chunk.min(layout.bat_entries - first);
        let chunk = &mut buf[..(count * 8) as usize];
        chunk.fill(0);
        let mut set = |index: u64, value: u64| {
            let at = ((index - first) * 8) as usize;
            chunk[at..at + 8].copy_from_slice(&value.to_le_bytes());
        };
        if fixed {
            for index in first..first + count {
                let group = layout.chunk_ratio + 1;
                if index % group != layout.chunk_ratio {
                    let block = index - index / group;
                    set(index, entry(layout.data_offset + block * layout.block_size));
                }
            }
        } else {
            while let Some(&&(block, offset)) = placed.peek() {
                let index = layout.bat_index(block);
                if index >= first + count {
                    break;
                }
                set(index, entry(offset));
                placed.next();
            }
        }
        sink.write_nonzero_at(BAT_OFFSET + first * 8, chunk)?;
        first += count;
    }
    Ok(())
}

/// Stores the CRC-32C of `buf`, taken with its checksum field (bytes 4..8) zero.
fn put_checksum(buf: &mut [u8]) {
    buf[4..8].fill(0);
    let crc = CRC32C.checksum(buf);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn crc32c_check_value() {
        // The catalogue check value of CRC-32C.
        assert_eq!(CRC32C.checksum(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn bat_interleaves_sector_bitmap_entries() {
        let opts = VhdxOptions {
            block_size: 32 << 20,
            ..Default::default()
        };
        let layout = Layout::new(64 << 30, &opts).unwrap();
        assert_eq!(layout.chunk_ratio, 128);
        assert_eq!(layout.blocks, 2048);
        // 2048 payload entries and 15 bitmap entries between them (the 16th would follow the
        // last payload entry and is not counted for a disk without a parent).
        assert_eq!(layout.bat_entries, 2048 + 15);
        assert_eq!(layout.bat_index(127), 127);
        assert_eq!(layout.bat_index(128), 129);
        assert_eq!(layout.bat_length, MIB);
    }

    #[test]
    fn rejects_bad_sizes() {
        let opts = VhdxOptions::default();
        let mut out = Cursor::new(Vec::new());
        let err = write_vhdx(&SparseImage::new(1000), &opts, &mut out).unwrap_err();
        assert!(matches!(err, Error::Size { multiple: 512, .. }), "{err}");
        let err = write_vhdx(&SparseImage::new(65 << 40), &opts, &mut out).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
        for bad in [0, 512 << 10, 3 << 20, 512 << 20] {
            let opts = VhdxOptions {
                block_size: bad,
                ..Default::default()
            };
            let err = write_vhdx(&SparseImage::new(1 << 30), &opts, &mut out).unwrap_err();
            assert!(matches!(err, Error::BlockSize(_)), "{err}");
        }
    }

    #[test]
    fn headers_and_tables_carry_valid_checksums() {
        let mut img = SparseImage::new(8 << 20);
        img.put_bytes(4 << 20, vec![0xAB; 4096]).unwrap();
        let opts = VhdxOptions {
            block_size: 1 << 20,
            ..Default::default()
        };
        let mut out = Cursor::new(Vec::new());
        let stats = write_vhdx(&img, &opts, &mut out).unwrap();
        let file = out.into_inner();
        assert_eq!(stats.data_blocks, 1);
        assert_eq!(stats.file_size, file.len() as u64);
        assert_eq!(&file[..8], b"vhdxfile");
        let check = |at: usize, len: usize| {
            let mut copy = file[at..at + len].to_vec();
            let stored = u32::from_le_bytes(copy[4..8].try_into().unwrap());
            copy[4..8].fill(0);
            assert_eq!(CRC32C.checksum(&copy), stored, "checksum at {at}");
        };
        check(HEADER1_OFFSET as usize, HEADER_SIZE);
        check(HEADER2_OFFSET as usize, HEADER_SIZE);
        check(REGION_TABLE1_OFFSET as usize, REGION_TABLE_SIZE);
        check(REGION_TABLE2_OFFSET as usize, REGION_TABLE_SIZE);
        // Block 4 is the only one stored, right after the 1 MiB BAT.
        let bat = &file[BAT_OFFSET as usize..];
        let e4 = u64::from_le_bytes(bat[32..40].try_into().unwrap());
        assert_eq!(e4, (4 << 20) | PAYLOAD_BLOCK_FULLY_PRESENT);
        assert_eq!(file[(4 << 20) as usize], 0xAB);
        assert_eq!(file.len() as u64, 5 << 20);
    }
}
