//! QEMU qcow2 images, version 3, as qemu's `docs/interop/qcow2.txt` describes them.
//!
//! A qcow2 file is made of 64 KiB host clusters ("General"). Guest clusters map to host
//! clusters through an L1 table of L2 tables ("Cluster mapping"); every host cluster in use
//! has a reference count in refcount blocks listed by the refcount table ("Host cluster
//! management"). All numbers are big-endian.
//!
//! File layout, in clusters:
//!
//! | cluster            | object                                                    |
//! |--------------------|-----------------------------------------------------------|
//! | 0                  | header (version 3, 104 bytes) and the end-of-extensions mark |
//! | 1 ..               | the L1 table, covering the whole virtual size             |
//! | after it           | data: guest clusters that hold a non-zero byte, in guest order |
//! | after the data     | one L2 table per 512 MiB of the disk that holds data      |
//! | after the L2s      | the refcount blocks, then the refcount table               |
//!
//! Data streams out first; the tables that point at it follow, once every cluster is placed,
//! and the header is written last. All-zero clusters are left unallocated (they read as
//! zeros: there is no backing file). With compression, each data cluster is stored as raw
//! deflate (compression type 0) when that makes it smaller, packed on 512-byte boundaries
//! ("Compressed Clusters Descriptor"), else as a plain cluster.

use std::io::{Seek, Write};

use flate2::{Compress, Compression, FlushCompress, Status};
use uvmkit_disk::SparseImage;

use crate::sink::{for_each_piece, is_zero, BlockPlacer, SparseSink};
use crate::{Error, Result, WriteStats};

const FORMAT: &str = "qcow2";

/// `cluster_bits`: 64 KiB clusters, qemu-img's default.
const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// "Cluster mapping": `l2_entries = cluster_size / sizeof(uint64_t)`.
const L2_ENTRIES: u64 = CLUSTER / 8;
/// `refcount_order` 4: 16-bit refcounts, the only width version 2 knows and qemu's default.
const REFCOUNT_ORDER: u32 = 4;
/// "Host cluster management": `refcount_block_entries = cluster_size * 8 / refcount_bits`.
const REFCOUNT_BLOCK_ENTRIES: u64 = CLUSTER * 8 / (1 << REFCOUNT_ORDER);
/// Entries of the refcount table per cluster (8 bytes each).
const REFCOUNT_TABLE_ENTRIES: u64 = CLUSTER / 8;
/// "Header": version 3 headers are at least 104 bytes; we add no optional field.
const HEADER_LENGTH: u32 = 104;
const SECTOR: u64 = 512;

/// L1 and L2 entry bit 63: the cluster's refcount is exactly one.
const COPIED: u64 = 1 << 63;
/// L2 entry bit 62: a compressed cluster.
const COMPRESSED: u64 = 1 << 62;
/// "Compressed Clusters Descriptor": x = 62 - (cluster_bits - 8); the host offset is in bits
/// 0..x-1, the count of additional 512-byte sectors in bits x..61.
const COMPRESSED_SECTORS_SHIFT: u32 = 62 - (CLUSTER_BITS - 8);
/// Bits 9-55 hold a standard cluster's host offset (and an L2 table's, in the L1 table).
const MAX_HOST_OFFSET: u64 = 1 << 56;
/// qemu reads compressed data with a 4 KiB window (raw deflate, windowBits -12), so the
/// compressor must not refer back further than that.
const DEFLATE_WINDOW_BITS: u8 = 12;

/// How to write a qcow2 file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Qcow2Options {
    /// Store data clusters deflate-compressed where that makes them smaller (a read-only
    /// distribution image; the guest's own writes are stored uncompressed as usual).
    pub compressed: bool,
}

/// The arithmetic of one image: how many entries each table has and where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    /// Guest clusters covering the virtual size.
    guest_clusters: u64,
    /// Entries of the L1 table: one per L2 table the virtual size needs.
    l1_size: u64,
    /// Clusters the L1 table fills.
    l1_clusters: u64,
}

impl Geometry {
    fn new(size: u64) -> Result<Geometry> {
        if size == 0 || !size.is_multiple_of(SECTOR) {
            return Err(Error::Size {
                format: FORMAT,
                size,
                multiple: SECTOR,
            });
        }
        let guest_clusters = size.div_ceil(CLUSTER);
        let l1_size = guest_clusters.div_ceil(L2_ENTRIES);
        // The header's l1_size is 32 bits; qemu itself stops at 32 MiB of L1 table.
        let max_l1 = (32 << 20) / 8;
        if l1_size > max_l1 {
            return Err(Error::TooLarge {
                format: FORMAT,
                what: "the virtual size",
                value: size,
                max: max_l1 * L2_ENTRIES * CLUSTER,
            });
        }
        Ok(Geometry {
            guest_clusters,
            l1_size,
            l1_clusters: (l1_size * 8).div_ceil(CLUSTER),
        })
    }

    /// Where the L1 table starts: right after the header's cluster.
    fn l1_offset(&self) -> u64 {
        CLUSTER
    }

    /// Where data starts: after the L1 table.
    fn data_offset(&self) -> u64 {
        (1 + self.l1_clusters) * CLUSTER
    }
}

/// Which L1 entry and which L2 entry map guest cluster `cluster`.
fn l1_l2_index(cluster: u64) -> (u64, u64) {
    (cluster / L2_ENTRIES, cluster % L2_ENTRIES)
}

/// Refcount blocks and refcount table clusters for an image of `clusters` host clusters
/// before them: the refcount structures count themselves too, so grow both until they
/// cover everything, themselves included.
fn refcount_clusters(clusters: u64) -> (u64, u64) {
    let (mut blocks, mut table) = (0u64, 0u64);
    loop {
        let total = clusters + blocks + table;
        let need_blocks = total.div_ceil(REFCOUNT_BLOCK_ENTRIES);
        let need_table = need_blocks.div_ceil(REFCOUNT_TABLE_ENTRIES);
        if (need_blocks, need_table) == (blocks, table) {
            return (blocks, table);
        }
        (blocks, table) = (need_blocks, need_table);
    }
}

/// The L2 entry of a compressed cluster of `len` bytes at byte offset `offset`.
fn compressed_descriptor(offset: u64, len: u64) -> u64 {
    debug_assert!(len > 0 && offset < 1 << COMPRESSED_SECTORS_SHIFT);
    // Sectors beyond the one holding the first byte, up to the one holding the last.
    let extra = (offset + len - 1) / SECTOR - offset / SECTOR;
    COMPRESSED | (extra << COMPRESSED_SECTORS_SHIFT) | offset
}

/// Writes `img` as a qcow2 (version 3) file to `out`, which must be empty.
///
/// `data_blocks` in the result counts the guest clusters stored (compressed or not),
/// `file_size` is the file's length.
pub fn write_qcow2<W: Write + Seek>(img: &SparseImage, opts: &Qcow2Options, out: &mut W) -> Result<WriteStats> {
    let geometry = Geometry::new(img.size())?;
    let mut sink = SparseSink::new_empty(out, FORMAT)?;
    let data = if opts.compressed {
        write_compressed_data(img, &geometry, &mut sink)?
    } else {
        write_plain_data(img, &geometry, &mut sink)?
    };
    let data_blocks = data.mapped.len() as u64;
    let file_size = write_tables(&mut sink, img.size(), &geometry, data)?;
    sink.finish(file_size)?;
    Ok(WriteStats {
        virtual_size: img.size(),
        file_size,
        data_blocks,
    })
}

/// What the data phase left: the L2 entry of every stored guest cluster, and the refcount
/// of every host cluster up to the end of the data.
struct DataPlacement {
    /// (guest cluster, L2 entry), in ascending guest order.
    mapped: Vec<(u64, u64)>,
    /// Refcount of each host cluster from 0 to the end of the data (header and L1 included).
    refcounts: Vec<u16>,
}

/// Uncompressed data: every cluster holding a non-zero byte in the next free cluster.
fn write_plain_data<W: Write + Seek>(
    img: &SparseImage,
    geometry: &Geometry,
    sink: &mut SparseSink<'_, W>,
) -> Result<DataPlacement> {
    let mut placer = BlockPlacer::packed(CLUSTER, geometry.data_offset());
    for_each_piece(img, CLUSTER, |offset, data| placer.put(sink, offset, data))?;
    let (placed, end) = placer.finish();
    check_host_offset(end)?;
    let mapped = placed
        .into_iter()
        .map(|(cluster, host)| (cluster, host | COPIED))
        .collect();
    // Header, L1 and every data cluster are used once.
    let refcounts = vec![1u16; (end / CLUSTER) as usize];
    Ok(DataPlacement { mapped, refcounts })
}

/// Compressed data: each non-zero cluster deflated, and kept that way when it saves at least
/// a sector; consecutive compressed clusters share host clusters.
fn write_compressed_data<W: Write + Seek>(
    img: &SparseImage,
    geometry: &Geometry,
    sink: &mut SparseSink<'_, W>,
) -> Result<DataPlacement> {
    let mut stream = CompressedStream {
        cluster: vec![0; CLUSTER as usize],
        current: None,
        compressor: Compress::new_with_window_bits(Compression::new(6), false, DEFLATE_WINDOW_BITS),
        compressed: Vec::with_capacity(2 * CLUSTER as usize),
        pos: geometry.data_offset(),
        placement: DataPlacement {
            mapped: Vec::new(),
            refcounts: vec![1u16; (geometry.data_offset() / CLUSTER) as usize],
        },
    };
    for_each_piece(img, CLUSTER, |offset, data| stream.put(sink, offset, data))?;
    stream.flush(sink)?;
    let end = stream.pos.next_multiple_of(CLUSTER);
    check_host_offset(end)?;
    let mut placement = stream.placement;
    placement.refcounts.resize((end / CLUSTER) as usize, 0);
    Ok(placement)
}

/// Assembles guest clusters from pieces, then compresses and places each.
struct CompressedStream {
    cluster: Vec<u8>,
    current: Option<u64>,
    compressor: Compress,
    compressed: Vec<u8>,
    /// The next free byte of the file (a multiple of 512).
    pos: u64,
    placement: DataPlacement,
}

impl CompressedStream {
    fn put<W: Write + Seek>(&mut self, sink: &mut SparseSink<'_, W>, offset: u64, data: &[u8]) -> Result<()> {
        let index = offset / CLUSTER;
        if self.current != Some(index) {
            self.flush(sink)?;
            self.cluster.fill(0);
            self.current = Some(index);
        }
        let at = (offset % CLUSTER) as usize;
        self.cluster[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }

    /// Stores the assembled cluster unless it is all zeros.
    fn flush<W: Write + Seek>(&mut self, sink: &mut SparseSink<'_, W>) -> Result<()> {
        let Some(index) = self.current.take() else {
            return Ok(());
        };
        if is_zero(&self.cluster) {
            return Ok(());
        }
        self.compressed.clear();
        self.compressor.reset();
        let status = self
            .compressor
            .compress_vec(&self.cluster, &mut self.compressed, FlushCompress::Finish)
            .map_err(|e| Error::Write {
                format: FORMAT,
                source: std::io::Error::other(format!("deflate failed: {e}")),
            })?;
        // The buffer holds twice a cluster, beyond deflate's worst-case expansion.
        let finished = status == Status::StreamEnd;
        let len = self.compressed.len() as u64;
        if finished && len.next_multiple_of(SECTOR) < CLUSTER {
            let offset = self.pos;
            sink.write_at(offset, &self.compressed)?;
            self.placement.mapped.push((index, compressed_descriptor(offset, len)));
            self.count(offset, len);
            self.pos = (offset + len).next_multiple_of(SECTOR);
        } else {
            // Incompressible: a standard cluster, which must be cluster-aligned.
            let offset = self.pos.next_multiple_of(CLUSTER);
            sink.write_at(offset, &self.cluster)?;
            self.placement.mapped.push((index, offset | COPIED));
            self.count(offset, CLUSTER);
            self.pos = offset + CLUSTER;
        }
        Ok(())
    }

    /// Counts one reference to every host cluster that `[offset, offset + len)` touches: a
    /// host cluster holding parts of several compressed clusters is referenced by each.
    fn count(&mut self, offset: u64, len: u64) {
        let last = (offset + len - 1) / CLUSTER;
        let refcounts = &mut self.placement.refcounts;
        if refcounts.len() as u64 <= last {
            refcounts.resize(last as usize + 1, 0);
        }
        for cluster in offset / CLUSTER..=last {
            // At most 129 compressed clusters touch one host cluster (64 KiB / 512 + 1).
            refcounts[cluster as usize] += 1;
        }
    }
}

fn check_host_offset(end: u64) -> Result<()> {
    if end >= MAX_HOST_OFFSET {
        return Err(Error::TooLarge {
            format: FORMAT,
            what: "the file",
            value: end,
            max: MAX_HOST_OFFSET,
        });
    }
    Ok(())
}

/// Writes the L2 tables, refcount blocks, refcount table, L1 table and header after the data
/// ending at the last host cluster in `data.refcounts`; returns the file's length.
fn write_tables<W: Write + Seek>(
    sink: &mut SparseSink<'_, W>,
    size: u64,
    geometry: &Geometry,
    data: DataPlacement,
) -> Result<u64> {
    let DataPlacement { mapped, mut refcounts } = data;
    let mut l1 = vec![0u64; geometry.l1_size as usize];

    // One L2 table per L1 entry that maps any data, in guest order.
    let mut next = refcounts.len() as u64 * CLUSTER;
    let mut table = vec![0u8; CLUSTER as usize];
    let mut rest = mapped.as_slice();
    while let Some(&(first, _)) = rest.first() {
        let (l1_index, _) = l1_l2_index(first);
        let count = rest.iter().take_while(|&&(c, _)| l1_l2_index(c).0 == l1_index).count();
        table.fill(0);
        for &(cluster, entry) in &rest[..count] {
            let (_, l2_index) = l1_l2_index(cluster);
            let at = (l2_index * 8) as usize;
            table[at..at + 8].copy_from_slice(&entry.to_be_bytes());
        }
        sink.write_at(next, &table)?;
        l1[l1_index as usize] = next | COPIED;
        refcounts.push(1);
        next += CLUSTER;
        rest = &rest[count..];
    }

    // The refcount blocks and table, which count every cluster up to their own end.
    let (blocks, table_clusters) = refcount_clusters(refcounts.len() as u64);
    let blocks_offset = next;
    let table_offset = blocks_offset + blocks * CLUSTER;
    let file_size = table_offset + table_clusters * CLUSTER;
    check_host_offset(file_size)?;
    refcounts.resize((file_size / CLUSTER) as usize, 1);
    let mut rt = vec![0u8; (table_clusters * CLUSTER) as usize];
    let mut block = vec![0u8; CLUSTER as usize];
    for (i, counts) in refcounts.chunks(REFCOUNT_BLOCK_ENTRIES as usize).enumerate() {
        block.fill(0);
        for (j, count) in counts.iter().enumerate() {
            block[2 * j..2 * j + 2].copy_from_slice(&count.to_be_bytes());
        }
        let offset = blocks_offset + i as u64 * CLUSTER;
        sink.write_at(offset, &block)?;
        rt[8 * i..8 * i + 8].copy_from_slice(&offset.to_be_bytes());
    }
    sink.write_at(table_offset, &rt)?;

    let mut l1_bytes = Vec::with_capacity(l1.len() * 8);
    for entry in &l1 {
        l1_bytes.extend_from_slice(&entry.to_be_bytes());
    }
    sink.write_nonzero_at(geometry.l1_offset(), &l1_bytes)?;

    let header = Header {
        size,
        l1_size: geometry.l1_size as u32,
        l1_table_offset: geometry.l1_offset(),
        refcount_table_offset: table_offset,
        refcount_table_clusters: table_clusters as u32,
    };
    sink.write_at(0, &header.to_bytes())?;
    Ok(file_size)
}

/// The header fields that differ between images ("Header").
struct Header {
    size: u64,
    l1_size: u32,
    l1_table_offset: u64,
    refcount_table_offset: u64,
    refcount_table_clusters: u32,
}

impl Header {
    /// The version 3 header, followed by the end of the (empty) header extension area.
    fn to_bytes(&self) -> [u8; HEADER_LENGTH as usize + 8] {
        let mut b = [0u8; HEADER_LENGTH as usize + 8];
        b[0..4].copy_from_slice(b"QFI\xfb");
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        // 8..16 backing_file_offset and 16..20 backing_file_size: no backing file.
        b[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
        b[24..32].copy_from_slice(&self.size.to_be_bytes());
        // 32..36 crypt_method: none.
        b[36..40].copy_from_slice(&self.l1_size.to_be_bytes());
        b[40..48].copy_from_slice(&self.l1_table_offset.to_be_bytes());
        b[48..56].copy_from_slice(&self.refcount_table_offset.to_be_bytes());
        b[56..60].copy_from_slice(&self.refcount_table_clusters.to_be_bytes());
        // 60..64 nb_snapshots and 64..72 snapshots_offset: none. 72..96: no incompatible,
        // compatible or autoclear features (compression type 0, zlib, needs no bit).
        b[96..100].copy_from_slice(&REFCOUNT_ORDER.to_be_bytes());
        b[100..104].copy_from_slice(&HEADER_LENGTH.to_be_bytes());
        // 104..112: header extension type 0, length 0: the end of the extension area.
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};
    use std::io::Cursor;

    fn be64(b: &[u8], at: usize) -> u64 {
        u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
    }
    fn be32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// Reads guest cluster `cluster` back through the L1 and L2 tables, as "Cluster mapping"
    /// describes; `None` for an unallocated cluster.
    fn read_cluster(file: &[u8], cluster: u64) -> Option<Vec<u8>> {
        let l1_offset = be64(file, 40) as usize;
        let (l1_index, l2_index) = l1_l2_index(cluster);
        let l1_entry = be64(file, l1_offset + 8 * l1_index as usize);
        let l2_offset = (l1_entry & !COPIED) as usize;
        if l2_offset == 0 {
            return None;
        }
        let entry = be64(file, l2_offset + 8 * l2_index as usize);
        if entry == 0 {
            return None;
        }
        if entry & COMPRESSED == 0 {
            let host = (entry & !COPIED) as usize;
            return Some(file[host..host + CLUSTER as usize].to_vec());
        }
        let offset = (entry & ((1 << COMPRESSED_SECTORS_SHIFT) - 1)) as usize;
        let sectors = ((entry & !COMPRESSED) >> COMPRESSED_SECTORS_SHIFT) as usize + 1;
        let len = sectors * 512 - offset % 512;
        let mut out = Vec::with_capacity(CLUSTER as usize);
        let mut inflate = Decompress::new_with_window_bits(false, DEFLATE_WINDOW_BITS);
        inflate
            .decompress_vec(
                &file[offset..(offset + len).min(file.len())],
                &mut out,
                FlushDecompress::Finish,
            )
            .unwrap();
        assert_eq!(out.len(), CLUSTER as usize);
        Some(out)
    }

    /// Every host cluster's refcount, read through the refcount table.
    fn refcount(file: &[u8], cluster: u64) -> u16 {
        let table = be64(file, 48) as usize;
        let block = be64(file, table + 8 * (cluster / REFCOUNT_BLOCK_ENTRIES) as usize) as usize;
        let at = block + 2 * (cluster % REFCOUNT_BLOCK_ENTRIES) as usize;
        u16::from_be_bytes(file[at..at + 2].try_into().unwrap())
    }

    #[test]
    fn header_fields() {
        let h = Header {
            size: 1 << 30,
            l1_size: 2,
            l1_table_offset: CLUSTER,
            refcount_table_offset: 9 * CLUSTER,
            refcount_table_clusters: 1,
        };
        let b = h.to_bytes();
        assert_eq!(&b[0..4], b"QFI\xfb");
        assert_eq!(be32(&b, 4), 3);
        assert_eq!(be64(&b, 8), 0);
        assert_eq!(be32(&b, 20), 16);
        assert_eq!(be64(&b, 24), 1 << 30);
        assert_eq!(be32(&b, 36), 2);
        assert_eq!(be64(&b, 40), 65536);
        assert_eq!(be64(&b, 48), 9 * 65536);
        assert_eq!(be32(&b, 56), 1);
        assert_eq!(be64(&b, 72), 0, "no incompatible features");
        assert_eq!(be32(&b, 96), 4);
        assert_eq!(be32(&b, 100), 104);
        assert_eq!(&b[104..112], &[0; 8], "end of header extensions");
    }

    #[test]
    fn l1_and_l2_indexes_at_table_boundaries() {
        // One L2 table maps 8192 clusters of 64 KiB: 512 MiB.
        assert_eq!(l1_l2_index(0), (0, 0));
        assert_eq!(l1_l2_index(8191), (0, 8191));
        assert_eq!(l1_l2_index(8192), (1, 0));
        let g = Geometry::new(512 << 20).unwrap();
        assert_eq!((g.guest_clusters, g.l1_size, g.l1_clusters), (8192, 1, 1));
        let g = Geometry::new((512 << 20) + 512).unwrap();
        assert_eq!((g.guest_clusters, g.l1_size), (8193, 2));
        // 8192 L1 entries fill one cluster exactly: 4 TiB; one more entry needs a second.
        let g = Geometry::new(4 << 40).unwrap();
        assert_eq!((g.l1_size, g.l1_clusters, g.data_offset()), (8192, 1, 2 * CLUSTER));
        let g = Geometry::new((4 << 40) + (512 << 20)).unwrap();
        assert_eq!((g.l1_size, g.l1_clusters, g.data_offset()), (8193, 2, 3 * CLUSTER));
    }

    #[test]
    fn refcount_structures_count_themselves() {
        // A refcount block covers 32768 clusters (2 GiB of file).
        assert_eq!(refcount_clusters(1), (1, 1));
        // 32766 clusters + one block + one table cluster fill a block exactly.
        assert_eq!(refcount_clusters(32766), (1, 1));
        // One more and the second block (which counts itself) is needed.
        assert_eq!(refcount_clusters(32767), (2, 1));
        // The table holds 8192 block offsets; past that it needs a second cluster.
        let per_table = REFCOUNT_TABLE_ENTRIES * REFCOUNT_BLOCK_ENTRIES;
        assert_eq!(refcount_clusters(per_table - 8192 - 1), (8192, 1));
        assert_eq!(refcount_clusters(per_table - 8192), (8193, 2));
    }

    #[test]
    fn compressed_descriptor_counts_extra_sectors() {
        // x = 62 - (16 - 8) = 54.
        assert_eq!(COMPRESSED_SECTORS_SHIFT, 54);
        assert_eq!(compressed_descriptor(131_072, 512), COMPRESSED | 131_072);
        assert_eq!(compressed_descriptor(131_072, 513), COMPRESSED | (1 << 54) | 131_072);
        // 100 bytes from 1000 stay in sector 1; 100 bytes from 1000 + 450 reach sector 2.
        assert_eq!(compressed_descriptor(1000, 24), COMPRESSED | 1000);
        assert_eq!(compressed_descriptor(1000, 100), COMPRESSED | (1 << 54) | 1000);
    }

    fn sample() -> SparseImage {
        let mut img = SparseImage::new(1 << 30);
        // A cluster of text, one straddling the first L2 table's end, one all-zero extent,
        // and pseudo-random bytes that deflate cannot shrink.
        img.put_bytes(0, b"uvmkit qcow2 ".repeat(6000)).unwrap();
        img.put_bytes((512 << 20) - 100, vec![0xAB; 200]).unwrap();
        img.put_bytes(600 << 20, vec![0; 3 << 16]).unwrap();
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..CLUSTER)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        img.put_bytes(700 << 20, noise).unwrap();
        img
    }

    fn check_image(compressed: bool) {
        let img = sample();
        let mut out = Cursor::new(Vec::new());
        let stats = write_qcow2(&img, &Qcow2Options { compressed }, &mut out).unwrap();
        let file = out.into_inner();
        assert_eq!(stats.file_size, file.len() as u64);
        assert_eq!(file.len() as u64 % CLUSTER, 0);
        // Clusters 0 and 1 (text), 8191 and 8192 (the straddle), 11200 (noise).
        assert_eq!(stats.data_blocks, 5);
        assert_eq!(be32(&file, 36), 2, "two L1 entries cover 1 GiB");
        for cluster in [0u64, 1, 8191, 8192, 11200] {
            let mut expected = vec![0u8; CLUSTER as usize];
            img.read_at(cluster * CLUSTER, &mut expected).unwrap();
            assert_eq!(
                read_cluster(&file, cluster).as_deref(),
                Some(&expected[..]),
                "cluster {cluster}"
            );
        }
        assert_eq!(read_cluster(&file, 2), None);
        assert_eq!(read_cluster(&file, 9600), None, "all-zero clusters stay unallocated");
        // Every cluster of the file is referenced once, except the ones compressed clusters
        // share.
        let clusters = file.len() as u64 / CLUSTER;
        let total: u64 = (0..clusters).map(|c| u64::from(refcount(&file, c))).sum();
        if compressed {
            // The text and the straddling clusters compress into one shared host cluster.
            assert!(total > clusters, "{total} references for {clusters} clusters");
        } else {
            assert_eq!(total, clusters);
            assert!((0..clusters).all(|c| refcount(&file, c) == 1));
        }
    }

    #[test]
    fn plain_image_maps_and_counts_every_cluster() {
        check_image(false);
    }

    #[test]
    fn compressed_image_reads_back() {
        check_image(true);
    }

    #[test]
    fn compression_shrinks_and_keeps_incompressible_clusters_whole() {
        let img = sample();
        let mut plain = Cursor::new(Vec::new());
        let mut packed = Cursor::new(Vec::new());
        write_qcow2(&img, &Qcow2Options { compressed: false }, &mut plain).unwrap();
        write_qcow2(&img, &Qcow2Options { compressed: true }, &mut packed).unwrap();
        let (plain, packed) = (plain.into_inner(), packed.into_inner());
        assert!(packed.len() < plain.len(), "{} vs {}", packed.len(), plain.len());
        // The noise cluster is stored as a standard cluster (bit 62 clear, bit 63 set).
        let l1_offset = be64(&packed, 40) as usize;
        let second_l2 = be64(&packed, l1_offset + 8) & !COPIED;
        let entry = be64(&packed, second_l2 as usize + 8 * (11200 - 8192));
        assert_eq!(entry & COMPRESSED, 0);
        assert_ne!(entry & COPIED, 0);
        // The text cluster is compressed, with the copied flag clear.
        let first_l2 = be64(&packed, l1_offset) & !COPIED;
        let entry = be64(&packed, first_l2 as usize);
        assert_ne!(entry & COMPRESSED, 0);
        assert_eq!(entry & COPIED, 0);
    }

    #[test]
    fn rejects_bad_sizes() {
        let mut out = Cursor::new(Vec::new());
        let err = write_qcow2(&SparseImage::new(1000), &Qcow2Options::default(), &mut out).unwrap_err();
        assert!(matches!(err, Error::Size { multiple: 512, .. }), "{err}");
        let err = write_qcow2(&SparseImage::new(0), &Qcow2Options::default(), &mut out).unwrap_err();
        assert!(matches!(err, Error::Size { .. }), "{err}");
    }

    #[test]
    fn empty_disk_is_header_l1_and_refcounts() {
        let mut out = Cursor::new(Vec::new());
        let stats = write_qcow2(&SparseImage::new(64 << 30), &Qcow2Options::default(), &mut out).unwrap();
        assert_eq!(stats.data_blocks, 0);
        // Header, L1, one refcount block, one refcount table cluster.
        assert_eq!(stats.file_size, 4 * CLUSTER);
        let file = out.into_inner();
        assert_eq!(be64(&file, 48), 3 * CLUSTER);
        assert!((0..4).all(|c| refcount(&file, c) == 1));
    }
}
