//! VMware VMDK sparse extents: monolithicSparse for hosted products (Workstation, Fusion,
//! VirtualBox) and streamOptimized for ESXi and OVA packages.
//!
//! Both follow VMware's "Virtual Disk Format 1.1" (hosted sparse extents) and "Virtual Disk
//! Format 5.0" (stream-optimized extents, markers). A sparse extent addresses 64 KiB grains
//! through a grain directory (GD) of grain tables (GTs) of 512 entries; each entry is a
//! sector offset in the file, zero for a grain that was never written (reads as zeros).
//!
//! monolithicSparse layout, in sectors: header (0), embedded descriptor (1, 20 sectors),
//! redundant GD and its GTs, GD and its GTs, padding to a whole grain (the "overhead"), then
//! the grains. streamOptimized: header (with gdOffset = GD_AT_END), descriptor, padding to a
//! grain, then compressed grains each behind a grain marker, a GT marker and GT after the
//! grains of each non-empty GT, a GD marker and GD, a footer marker and the footer (the header
//! with the real gdOffset), and the end-of-stream marker.

use std::fmt::Write as _;
use std::io::{Seek, Write};

use flate2::{Compress, Compression, FlushCompress, Status};
use uvmkit_disk::SparseImage;

use crate::sink::{for_each_piece, is_zero, BlockPlacer, SparseSink, PIECE};
use crate::{derive_bytes, Error, Result, WriteStats};

const FORMAT_SPARSE: &str = "VMDK (monolithicSparse)";
const FORMAT_STREAM: &str = "VMDK (streamOptimized)";

const SECTOR: u64 = 512;
/// Grain size in sectors (64 KiB), the size every VMware product uses.
const GRAIN_SECTORS: u64 = 128;
const GRAIN: u64 = GRAIN_SECTORS * SECTOR;
/// numGTEsPerGT: entries per grain table (the spec fixes it at 512).
const GTES_PER_GT: u64 = 512;
/// One grain table of 512 four-byte entries fills 4 sectors.
const GT_SECTORS: u64 = GTES_PER_GT * 4 / SECTOR;
const DESCRIPTOR_OFFSET: u64 = 1;
/// Sectors reserved for the embedded descriptor, as VMware's tools reserve.
const DESCRIPTOR_SECTORS: u64 = 20;

/// SparseExtentHeader flags (Virtual Disk Format 1.1 §"Hosted Sparse Extent Header", 5.0).
const FLAG_VALID_NEWLINE_TEST: u32 = 1 << 0;
const FLAG_REDUNDANT_GT: u32 = 1 << 1;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const COMPRESSION_DEFLATE: u16 = 1;
/// gdOffset in a stream's leading header: the GD is at the end, found through the footer.
const GD_AT_END: u64 = u64::MAX;

/// Marker types (Virtual Disk Format 5.0, "Stream-Optimized Compressed Sparse Extents").
const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// The disk controller a VM should attach the disk to (`ddb.adapterType`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VmdkAdapter {
    /// LSI Logic parallel SCSI: the default of VMware's Linux guest types.
    #[default]
    LsiLogic,
    /// IDE.
    Ide,
    /// BusLogic parallel SCSI.
    BusLogic,
    /// VMware paravirtual SCSI (needs virtual hardware version 7 or later).
    Pvscsi,
}

impl VmdkAdapter {
    /// The descriptor's name for the adapter.
    pub fn ddb_name(self) -> &'static str {
        match self {
            VmdkAdapter::LsiLogic => "lsilogic",
            VmdkAdapter::Ide => "ide",
            VmdkAdapter::BusLogic => "buslogic",
            VmdkAdapter::Pvscsi => "pvscsi",
        }
    }
}

/// How to write a VMDK file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmdkOptions {
    /// The controller named in the descriptor; it also picks the reported geometry.
    pub adapter_type: VmdkAdapter,
    /// Seed for the content ID (CID) and `ddb.uuid`.
    pub seed: [u8; 32],
    /// `ddb.virtualHWVersion`: the oldest VMware virtual hardware that may use the disk.
    pub hw_version: u32,
    /// The file's own name (no directory), which the descriptor's extent line names.
    pub extent_file_name: String,
}

impl Default for VmdkOptions {
    fn default() -> Self {
        VmdkOptions {
            adapter_type: VmdkAdapter::LsiLogic,
            seed: [0; 32],
            hw_version: 4,
            extent_file_name: "disk.vmdk".to_string(),
        }
    }
}

/// The SparseExtentHeader fields that differ between files.
#[derive(Clone, Copy)]
struct Header {
    version: u32,
    flags: u32,
    capacity: u64,
    rgd_offset: u64,
    gd_offset: u64,
    overhead: u64,
    compress_algorithm: u16,
}

impl Header {
    /// The 512-byte SparseExtentHeader, little-endian and packed.
    fn to_bytes(self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..4].copy_from_slice(b"KDMV"); // magicNumber 0x564d444b
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..20].copy_from_slice(&self.capacity.to_le_bytes());
        b[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
        b[28..36].copy_from_slice(&DESCRIPTOR_OFFSET.to_le_bytes());
        b[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
        b[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
        b[48..56].copy_from_slice(&self.rgd_offset.to_le_bytes());
        b[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        b[64..72].copy_from_slice(&self.overhead.to_le_bytes());
        // 72: uncleanShutdown = 0. 73..77: the characters a text-mode transfer would mangle.
        b[73..77].copy_from_slice(b"\n \r\n");
        b[77..79].copy_from_slice(&self.compress_algorithm.to_le_bytes());
        b
    }
}

/// Grain and table counts for a disk of `capacity` sectors.
struct Tables {
    capacity: u64,
    gts: u64,
    gd_sectors: u64,
}

impl Tables {
    fn new(img: &SparseImage, opts: &VmdkOptions, format: &'static str) -> Result<Tables> {
        let size = img.size();
        if size == 0 || !size.is_multiple_of(SECTOR) {
            return Err(Error::Size {
                format,
                size,
                multiple: SECTOR,
            });
        }
        check_extent_name(&opts.extent_file_name)?;
        let capacity = size / SECTOR;
        let grains = capacity.div_ceil(GRAIN_SECTORS);
        let gts = grains.div_ceil(GTES_PER_GT);
        let gd_sectors = (gts * 4).div_ceil(SECTOR);
        Ok(Tables {
            capacity,
            gts,
            gd_sectors,
        })
    }
}

/// Writes `img` as a monolithicSparse VMDK to `out`, which must be empty.
///
/// Grains (64 KiB) that hold a non-zero byte are stored uncompressed, in disk order; both the
/// grain directory and its redundant copy cover the whole disk, as hosted products expect.
/// `data_blocks` counts grains stored, `file_size` is the file's length.
pub fn write_vmdk_sparse<W: Write + Seek>(img: &SparseImage, opts: &VmdkOptions, out: &mut W) -> Result<WriteStats> {
    let t = Tables::new(img, opts, FORMAT_SPARSE)?;
    let rgd_offset = DESCRIPTOR_OFFSET + DESCRIPTOR_SECTORS;
    let rgt_offset = rgd_offset + t.gd_sectors;
    let gd_offset = rgt_offset + t.gts * GT_SECTORS;
    let gt_offset = gd_offset + t.gd_sectors;
    // The overhead ends on a grain boundary, as VMware's tools lay it out.
    let overhead = (gt_offset + t.gts * GT_SECTORS).next_multiple_of(GRAIN_SECTORS);
    // Table entries are 32-bit sector offsets: the file must stay below 2^32 sectors.
    let max_sectors = overhead + img.allocated_blocks(GRAIN).len() as u64 * GRAIN_SECTORS;
    if max_sectors > u64::from(u32::MAX) {
        return Err(Error::TooLarge {
            format: FORMAT_SPARSE,
            what: "the file (in 512-byte sectors)",
            value: max_sectors,
            max: u32::MAX.into(),
        });
    }

    let mut sink = SparseSink::new_empty(out, FORMAT_SPARSE)?;
    let header = Header {
        version: 1,
        flags: FLAG_VALID_NEWLINE_TEST | FLAG_REDUNDANT_GT,
        capacity: t.capacity,
        rgd_offset,
        gd_offset,
        overhead,
        compress_algorithm: 0,
    };
    sink.write_at(0, &header.to_bytes())?;
    let text = descriptor(opts, t.capacity, "monolithicSparse", DESCRIPTOR_SECTORS)?;
    sink.write_at(DESCRIPTOR_OFFSET * SECTOR, &text)?;

    let mut placer = BlockPlacer::packed(GRAIN, overhead * SECTOR);
    for_each_piece(img, GRAIN, |offset, data| placer.put(&mut sink, offset, data))?;
    let (placed, end) = placer.finish();

    // Both directories point at their own, fully allocated, set of grain tables.
    for (gd, gts) in [(rgd_offset, rgt_offset), (gd_offset, gt_offset)] {
        let directory = (0..t.gts).map(|i| (i, (gts + i * GT_SECTORS) as u32));
        write_entries(&mut sink, gd * SECTOR, t.gts, directory)?;
        let grains = placed.iter().map(|&(grain, slot)| (grain, (slot / SECTOR) as u32));
        write_entries(&mut sink, gts * SECTOR, t.gts * GTES_PER_GT, grains)?;
    }
    sink.finish(end)?;
    Ok(WriteStats {
        virtual_size: img.size(),
        file_size: end,
        data_blocks: placed.len() as u64,
    })
}

/// Writes a table of `count` little-endian u32 entries at `at`, a MiB at a time: `entries`
/// gives the non-zero ones as (index, value) in ascending index order.
fn write_entries<W: Write + Seek>(
    sink: &mut SparseSink<'_, W>,
    at: u64,
    count: u64,
    entries: impl Iterator<Item = (u64, u32)>,
) -> Result<()> {
    let per_chunk = PIECE / 4;
    let mut entries = entries.peekable();
    let mut buf = vec![0u8; (per_chunk.min(count) * 4) as usize];
    let mut first = 0;
    while first < count {
        let n = per_chunk.min(count - first);
        let chunk = &mut buf[..(n * 4) as usize];
        chunk.fill(0);
        while let Some(&(index, value)) = entries.peek() {
            if index >= first + n {
                break;
            }
            let pos = ((index - first) * 4) as usize;
            chunk[pos..pos + 4].copy_from_slice(&value.to_le_bytes());
            entries.next();
        }
        sink.write_nonzero_at(at + first * 4, chunk)?;
        first += n;
    }
    Ok(())
}

/// Writes `img` as a streamOptimized VMDK (version 3, deflate-compressed grains, markers) to
/// `out`, strictly sequentially: `out` can be a pipe or an OVA's tar member.
///
/// Grains that hold a non-zero byte are compressed with zlib (RFC 1950) behind a grain
/// marker; a grain table follows the grains it covers, and tables with no grains are left out
/// (their directory entry is zero). `data_blocks` counts grains stored, `file_size` the bytes
/// written.
pub fn write_vmdk_stream<W: Write>(img: &SparseImage, opts: &VmdkOptions, out: &mut W) -> Result<WriteStats> {
    let t = Tables::new(img, opts, FORMAT_STREAM)?;
    let mut header = Header {
        version: 3,
        flags: FLAG_VALID_NEWLINE_TEST | FLAG_COMPRESSED | FLAG_MARKERS,
        capacity: t.capacity,
        rgd_offset: 0,
        gd_offset: GD_AT_END,
        overhead: GRAIN_SECTORS,
        compress_algorithm: COMPRESSION_DEFLATE,
    };
    let mut stream = Stream { out, pos: 0 };
    stream.write(&header.to_bytes())?;
    stream.write(&descriptor(opts, t.capacity, "streamOptimized", DESCRIPTOR_SECTORS)?)?;
    stream.pad_to(GRAIN_SECTORS * SECTOR)?;

    let mut grains = GrainStream::new(t.gts);
    for_each_piece(img, GRAIN, |offset, data| grains.put(&mut stream, offset, data))?;
    grains.flush_grain(&mut stream)?;
    grains.flush_table(&mut stream)?;

    // The grain directory, behind its marker.
    let gd_offset = stream.sector() + 1;
    stream.write(&metadata_marker(t.gd_sectors, MARKER_GD))?;
    let mut gd = Vec::with_capacity((t.gd_sectors * SECTOR) as usize);
    for entry in &grains.directory {
        gd.extend_from_slice(&entry.to_le_bytes());
    }
    stream.write(&gd)?;
    stream.pad_to(SECTOR)?;

    // The footer: the header again, now with the directory's offset.
    header.gd_offset = gd_offset;
    stream.write(&metadata_marker(1, MARKER_FOOTER))?;
    stream.write(&header.to_bytes())?;
    stream.write(&metadata_marker(0, MARKER_EOS))?;
    stream.out.flush().map_err(|source| Error::Write {
        format: FORMAT_STREAM,
        source,
    })?;
    Ok(WriteStats {
        virtual_size: img.size(),
        file_size: stream.pos,
        data_blocks: grains.stored,
    })
}

/// A sequential output that counts what went through it.
struct Stream<'a, W: Write> {
    out: &'a mut W,
    pos: u64,
}

impl<W: Write> Stream<'_, W> {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.out.write_all(data).map_err(|source| Error::Write {
            format: FORMAT_STREAM,
            source,
        })?;
        self.pos += data.len() as u64;
        Ok(())
    }

    /// Zero-fills up to the next multiple of `align` bytes.
    fn pad_to(&mut self, align: u64) -> Result<()> {
        let pad = self.pos.next_multiple_of(align) - self.pos;
        self.write(&vec![0u8; pad as usize])
    }

    /// The current position in sectors, as a table entry (32 bits) holds it.
    fn sector(&self) -> u64 {
        self.pos / SECTOR
    }

    fn sector_u32(&self) -> Result<u32> {
        u32::try_from(self.sector()).map_err(|_| Error::TooLarge {
            format: FORMAT_STREAM,
            what: "the compressed file (in 512-byte sectors)",
            value: self.sector(),
            max: u32::MAX.into(),
        })
    }
}

/// A metadata marker sector (Virtual Disk Format 5.0): numSectors of metadata that follow,
/// size 0, the type.
fn metadata_marker(num_sectors: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[0..8].copy_from_slice(&num_sectors.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// Assembles grains from pieces, compresses and emits them, and keeps the tables.
struct GrainStream {
    /// The grain being assembled and its index.
    grain: Vec<u8>,
    current: Option<u64>,
    /// The grain table being filled and its index.
    table: Vec<u32>,
    table_index: u64,
    /// Sector offsets of the emitted grain tables (zero for tables left out).
    directory: Vec<u32>,
    compressor: Compress,
    /// A grain marker with its compressed grain.
    marker: Vec<u8>,
    stored: u64,
}

impl GrainStream {
    fn new(gts: u64) -> Self {
        GrainStream {
            grain: vec![0; GRAIN as usize],
            current: None,
            table: vec![0; GTES_PER_GT as usize],
            table_index: 0,
            directory: vec![0; gts as usize],
            // Level 6, zlib's default: a fair trade of time for size on file system data.
            compressor: Compress::new(Compression::new(6), true),
            marker: Vec::with_capacity(GRAIN as usize * 2),
            stored: 0,
        }
    }

    /// Adds a piece of image data (never crossing a grain boundary).
    fn put<W: Write>(&mut self, stream: &mut Stream<'_, W>, offset: u64, data: &[u8]) -> Result<()> {
        let index = offset / GRAIN;
        if self.current != Some(index) {
            self.flush_grain(stream)?;
            self.grain.fill(0);
            self.current = Some(index);
        }
        let at = (offset % GRAIN) as usize;
        self.grain[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }

    /// Emits the assembled grain unless it is all zeros.
    fn flush_grain<W: Write>(&mut self, stream: &mut Stream<'_, W>) -> Result<()> {
        let Some(index) = self.current.take() else {
            return Ok(());
        };
        if is_zero(&self.grain) {
            return Ok(());
        }
        if index / GTES_PER_GT != self.table_index {
            self.flush_table(stream)?;
            self.table_index = index / GTES_PER_GT;
        }
        // Grain marker: lba (u64, sectors), size (u32), then the compressed grain.
        self.marker.clear();
        self.marker.extend_from_slice(&(index * GRAIN_SECTORS).to_le_bytes());
        self.marker.extend_from_slice(&[0; 4]);
        self.compressor.reset();
        let status = self
            .compressor
            .compress_vec(&self.grain, &mut self.marker, FlushCompress::Finish)
            .map_err(|e| Error::Write {
                format: FORMAT_STREAM,
                source: std::io::Error::other(format!("deflate failed: {e}")),
            })?;
        if status != Status::StreamEnd {
            // The buffer holds twice a grain, far beyond zlib's worst-case expansion.
            return Err(Error::Write {
                format: FORMAT_STREAM,
                source: std::io::Error::other("deflate did not finish a grain"),
            });
        }
        let size = (self.marker.len() - 12) as u32;
        self.marker[8..12].copy_from_slice(&size.to_le_bytes());
        self.marker
            .resize((self.marker.len() as u64).next_multiple_of(SECTOR) as usize, 0);
        self.table[(index % GTES_PER_GT) as usize] = stream.sector_u32()?;
        stream.write(&self.marker)?;
        self.stored += 1;
        Ok(())
    }

    /// Emits the current grain table behind its marker, unless it has no grains.
    fn flush_table<W: Write>(&mut self, stream: &mut Stream<'_, W>) -> Result<()> {
        if self.table.iter().all(|&e| e == 0) {
            return Ok(());
        }
        stream.write(&metadata_marker(GT_SECTORS, MARKER_GT))?;
        self.directory[self.table_index as usize] = stream.sector_u32()?;
        let mut bytes = Vec::with_capacity((GT_SECTORS * SECTOR) as usize);
        for entry in &self.table {
            bytes.extend_from_slice(&entry.to_le_bytes());
        }
        stream.write(&bytes)?;
        self.table.fill(0);
        Ok(())
    }
}

/// Cylinders, heads and sectors per track as the descriptor reports them. IDE disks use the
/// ATA limit of 16 heads (at most 16383 cylinders); SCSI disks the BIOS translation of 255
/// heads. Guests use LBA; the geometry only has to be plausible.
fn geometry(capacity: u64, adapter: VmdkAdapter) -> (u64, u64, u64) {
    let (heads, sectors, max_cylinders) = match adapter {
        VmdkAdapter::Ide => (16, 63, 16383),
        _ => (255, 63, 65535),
    };
    let cylinders = (capacity / (heads * sectors)).clamp(1, max_cylinders);
    (cylinders, heads, sectors)
}

/// The embedded descriptor (Virtual Disk Format 1.1, "The Descriptor File"), zero-padded to
/// `sectors` sectors.
fn descriptor(opts: &VmdkOptions, capacity: u64, create_type: &str, sectors: u64) -> Result<Vec<u8>> {
    let mut cid = u32::from_le_bytes(derive_bytes(&opts.seed, "vmdk cid"));
    if cid == u32::MAX {
        // ffffffff means "no parent"; a disk's own CID must differ from it.
        cid -= 1;
    }
    let uuid: [u8; 16] = derive_bytes(&opts.seed, "vmdk uuid");
    let mut uuid_text = String::new();
    for (i, byte) in uuid.iter().enumerate() {
        let sep = match i {
            0 => "",
            8 => "-",
            _ => " ",
        };
        let _ = write!(uuid_text, "{sep}{byte:02x}");
    }
    let (cylinders, heads, track_sectors) = geometry(capacity, opts.adapter_type);
    let text = format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         encoding=\"UTF-8\"\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"{create_type}\"\n\
         \n\
         # Extent description\n\
         RW {capacity} SPARSE \"{name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.adapterType = \"{adapter}\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"{heads}\"\n\
         ddb.geometry.sectors = \"{track_sectors}\"\n\
         ddb.uuid = \"{uuid_text}\"\n\
         ddb.virtualHWVersion = \"{hw}\"\n",
        name = opts.extent_file_name,
        adapter = opts.adapter_type.ddb_name(),
        hw = opts.hw_version,
    );
    let mut bytes = text.into_bytes();
    // The name is at most 255 bytes, so the text always fits in 20 sectors.
    debug_assert!(bytes.len() as u64 <= sectors * SECTOR);
    bytes.resize((sectors * SECTOR) as usize, 0);
    Ok(bytes)
}

/// The extent line quotes the name; keep it a plain file name.
fn check_extent_name(name: &str) -> Result<()> {
    let bad = |c: char| c == '"' || c == '/' || c == '\\' || c.is_control();
    if name.is_empty() || name.len() > 255 || name.chars().any(bad) {
        return Err(Error::ExtentName(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn header_layout() {
        let h = Header {
            version: 1,
            flags: 3,
            capacity: 20480,
            rgd_offset: 21,
            gd_offset: 22,
            overhead: 128,
            compress_algorithm: 0,
        };
        let b = h.to_bytes();
        assert_eq!(&b[0..4], b"KDMV");
        assert_eq!(u64::from_le_bytes(b[12..20].try_into().unwrap()), 20480);
        assert_eq!(u32::from_le_bytes(b[44..48].try_into().unwrap()), 512);
        assert_eq!(&b[73..77], b"\n \r\n");
    }

    #[test]
    fn descriptor_names_type_geometry_and_ids() {
        let opts = VmdkOptions {
            adapter_type: VmdkAdapter::Ide,
            ..Default::default()
        };
        let bytes = descriptor(&opts, 20480, "monolithicSparse", 20).unwrap();
        assert_eq!(bytes.len(), 20 * 512);
        let text = String::from_utf8(bytes).unwrap();
        let text = text.trim_end_matches('\0');
        assert!(text.contains("createType=\"monolithicSparse\"\n"));
        assert!(text.contains("RW 20480 SPARSE \"disk.vmdk\"\n"));
        assert!(text.contains("ddb.adapterType = \"ide\"\n"));
        assert!(text.contains("ddb.geometry.cylinders = \"20\"\n"));
        assert!(text.contains("parentCID=ffffffff\n"));
        let uuid = text.lines().find(|l| l.starts_with("ddb.uuid")).unwrap();
        assert_eq!(uuid.len(), "ddb.uuid = \"\"".len() + 47, "{uuid}");
        let other = VmdkOptions {
            seed: [1; 32],
            ..opts.clone()
        };
        assert_ne!(
            descriptor(&other, 20480, "x", 20).unwrap(),
            descriptor(&opts, 20480, "x", 20).unwrap()
        );
    }

    #[test]
    fn geometry_limits() {
        assert_eq!(geometry(64 << 21, VmdkAdapter::Ide), (16383, 16, 63));
        assert_eq!(geometry(64 << 21, VmdkAdapter::LsiLogic), (8354, 255, 63));
        assert_eq!(geometry(1, VmdkAdapter::LsiLogic), (1, 255, 63));
    }

    #[test]
    fn rejects_bad_input() {
        let opts = VmdkOptions::default();
        let mut out = Cursor::new(Vec::new());
        let err = write_vmdk_sparse(&SparseImage::new(1000), &opts, &mut out).unwrap_err();
        assert!(matches!(err, Error::Size { .. }), "{err}");
        let err = write_vmdk_stream(&SparseImage::new(0), &opts, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, Error::Size { .. }), "{err}");
        let named = VmdkOptions {
            extent_file_name: "a\"b".into(),
            ..Default::default()
        };
        let err = write_vmdk_stream(&SparseImage::new(512), &named, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, Error::ExtentName(_)), "{err}");
    }

    #[test]
    fn stream_ends_with_footer_and_eos() {
        let mut img = SparseImage::new(4 << 20);
        img.put_bytes(70_000, vec![5; 1000]).unwrap();
        let mut out = Vec::new();
        let stats = write_vmdk_stream(&img, &VmdkOptions::default(), &mut out).unwrap();
        assert_eq!(stats.data_blocks, 1);
        assert_eq!(stats.file_size, out.len() as u64);
        let n = out.len();
        assert_eq!(n % 512, 0);
        assert_eq!(&out[n - 512..], &[0u8; 512][..]);
        assert_eq!(&out[n - 1024..n - 1020], b"KDMV");
        let footer_marker = &out[n - 1536..n - 1024];
        assert_eq!(
            u32::from_le_bytes(footer_marker[12..16].try_into().unwrap()),
            MARKER_FOOTER
        );
        // The one grain sits right after the 64 KiB overhead; its marker names LBA 128.
        assert_eq!(u64::from_le_bytes(out[65536..65544].try_into().unwrap()), 128);
    }
}
