//! The initramfs: a [`FileTree`] written as cpio "newc" archives, each optionally compressed
//! with zstd, concatenated in the order the kernel unpacks them.
//!
//! The kernel's initramfs unpacker (init/initramfs.c, `unpack_to_rootfs`) reads a sequence of
//! archives, each either plain cpio or compressed, and extracts them one after another into the
//! same rootfs. uvmkit uses that to split an initrd into *segments* chosen by path prefix (the
//! kernel modules, a large daemon...): every segment is a complete archive with its own trailer,
//! compressed as its own zstd frame, so its bytes are a pure function of its entries and the
//! builder can cache each one separately ([`Segment::fingerprint`]).
//!
//! Layout rules the kernel imposes and this module keeps:
//! - a directory is created before anything below it, across segments too: a directory goes
//!   into the earliest segment that holds anything below it (its own rule's when it is empty);
//! - hard links are resolved per archive (the kernel forgets inode numbers at each
//!   `TRAILER!!!`), so every name of a hard-linked file goes into the segment of the link
//!   target, all names share one inode number and the contents are stored once, with the last
//!   name (the convention of GNU cpio; the kernel accepts the data on any one of them);
//! - every archive is a multiple of 4 bytes long, so plain archives can follow each other.
//!
//! Everything that reaches the bytes comes from the tree and the options: one caller-supplied
//! `mtime` for every member, inode numbers assigned in tree order from 1 in each segment,
//! `c_devmajor`/`c_devminor` zero. File contents are streamed from [`FileData::open`]; memory
//! use is bounded by the compressor's window and a fixed buffer.

#![deny(missing_docs)]

mod newc;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufWriter, Write};

use sha2::{Digest, Sha256};
use uvmkit_filetree::{CopyError, FileData, FileTree, Node, NodeKind, TreePath};

use newc::{pad4, Header, HEADER_LEN, PATH_MAX};

/// How each segment is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain cpio archives.
    None,
    /// One zstd frame per segment (with content checksum).
    Zstd {
        /// Compression level, 1 (fast) to 22 (smallest).
        level: i32,
        /// Base-2 logarithm of the match window. The kernel allocates a buffer of this size when
        /// it unpacks the initrd at boot, so it is capped at [`Compression::MAX_WINDOW_LOG`].
        window_log: u32,
    },
}

impl Compression {
    /// The default zstd level: close to the best ratio a large initrd gets below level 19, at a
    /// fraction of its time.
    pub const DEFAULT_ZSTD_LEVEL: i32 = 9;
    /// The default window: 2^23 = 8 MiB, what `zstd -19` uses and the kernel's own initramfs
    /// compression assumes.
    pub const DEFAULT_WINDOW_LOG: u32 = 23;
    /// The largest window accepted: 2^27 = 128 MiB, zstd's limit without `--long` overrides.
    pub const MAX_WINDOW_LOG: u32 = 27;
    /// The smallest window zstd accepts (`ZSTD_WINDOWLOG_MIN`).
    pub const MIN_WINDOW_LOG: u32 = 10;

    /// zstd at `level` with the default, kernel-safe window.
    pub fn zstd(level: i32) -> Self {
        Compression::Zstd {
            level,
            window_log: Self::DEFAULT_WINDOW_LOG,
        }
    }

    fn validate(&self) -> Result<(), InitrdError> {
        if let Compression::Zstd { level, window_log } = *self {
            if !(1..=22).contains(&level) {
                return Err(InitrdError::BadZstdLevel(level));
            }
            if !(Self::MIN_WINDOW_LOG..=Self::MAX_WINDOW_LOG).contains(&window_log) {
                return Err(InitrdError::BadWindowLog(window_log));
            }
        }
        Ok(())
    }
}

impl Default for Compression {
    fn default() -> Self {
        Compression::zstd(Self::DEFAULT_ZSTD_LEVEL)
    }
}

/// The paths that make up one segment: everything at or below any of `prefixes` (whole path
/// components: `usr/bin/dockerd` matches `usr/bin/dockerd` and `usr/bin/dockerd/x`, not
/// `usr/bin/dockerd-proxy`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentRule {
    /// A name for reports and cache keys (`modules`, `docker`...).
    pub name: String,
    /// The subtrees the segment holds.
    pub prefixes: Vec<TreePath>,
}

impl SegmentRule {
    /// A rule from path strings (absolute or relative to the root).
    pub fn new(name: impl Into<String>, prefixes: &[&str]) -> Result<Self, InitrdError> {
        let name = name.into();
        let prefixes = prefixes
            .iter()
            .map(|p| {
                TreePath::new(p).map_err(|_| InitrdError::BadPrefix {
                    rule: name.clone(),
                    prefix: p.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SegmentRule { name, prefixes })
    }

    fn matches(&self, path: &TreePath) -> bool {
        self.prefixes.iter().any(|p| path.starts_with(p))
    }
}

/// Everything [`write_initrd`] needs besides the tree.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct InitrdOptions {
    /// Modification time of every member, in seconds since the epoch (`SOURCE_DATE_EPOCH`).
    pub mtime: u64,
    /// Compression of every segment.
    pub compression: Compression,
    /// Extra segments after the first (`base`) one, in unpack order. A path belongs to the first
    /// rule that matches it; paths no rule matches go into `base`.
    pub segments: Vec<SegmentRule>,
}

/// Name of the segment that holds every path no rule claims (and the root directory).
pub const BASE_SEGMENT: &str = "base";

/// What was written for one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentStats {
    /// The segment's name ([`BASE_SEGMENT`] or the rule's).
    pub name: String,
    /// cpio members, not counting the trailer.
    pub entries: u64,
    /// Size of the cpio archive (0 for an empty segment, which writes nothing).
    pub uncompressed_bytes: u64,
    /// Bytes written to the output.
    pub compressed_bytes: u64,
}

/// What [`write_initrd`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitrdStats {
    /// cpio members over all segments, not counting trailers.
    pub entries: u64,
    /// Total size of the cpio archives.
    pub uncompressed_bytes: u64,
    /// Total bytes written to the output.
    pub compressed_bytes: u64,
    /// Per segment, in output order (the base segment first).
    pub segments: Vec<SegmentStats>,
}

/// Errors from planning or writing an initrd.
#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    /// A segment rule names an invalid path.
    #[error("segment rule {rule:?}: {prefix:?} is not a valid path inside the image")]
    BadPrefix {
        /// The rule's segment name.
        rule: String,
        /// The prefix as given.
        prefix: String,
    },
    /// The zstd level is out of range.
    #[error("zstd level {0} is out of range: choose 1 (fastest) to 22 (smallest)")]
    BadZstdLevel(i32),
    /// The zstd window is out of range.
    #[error(
        "zstd window log {0} is out of range: choose {min} to {max} (the kernel allocates the window at boot; 23 = 8 MiB is safe)",
        min = Compression::MIN_WINDOW_LOG,
        max = Compression::MAX_WINDOW_LOG
    )]
    BadWindowLog(u32),
    /// The timestamp does not fit newc's 32-bit field.
    #[error("mtime {0} does not fit the cpio newc format's 32-bit time field: use a SOURCE_DATE_EPOCH before 2106")]
    MtimeOutOfRange(u64),
    /// A file is too large for newc's 32-bit size field.
    #[error("{path} is {size} bytes, but a cpio newc member holds at most 4 GiB - 1: leave it out of the initrd")]
    FileTooLarge {
        /// The file.
        path: TreePath,
        /// Its size in bytes.
        size: u64,
    },
    /// A path is longer than the kernel accepts.
    #[error("{path} is {len} bytes long, but the kernel skips initramfs names longer than {max} bytes", max = PATH_MAX - 1)]
    NameTooLong {
        /// The member.
        path: TreePath,
        /// The length of its name in bytes.
        len: usize,
    },
    /// A symlink target is longer than the kernel accepts.
    #[error(
        "the target of symlink {path} is {len} bytes long, but the kernel skips symlinks longer than {PATH_MAX} bytes"
    )]
    SymlinkTooLong {
        /// The symbolic link.
        path: TreePath,
        /// The length of its target in bytes.
        len: usize,
    },
    /// Reading a file's contents failed.
    #[error("cannot read the contents of {path} for the initrd: {source}")]
    ReadFile {
        /// The file in the tree.
        path: TreePath,
        /// The I/O error.
        source: io::Error,
    },
    /// A file held fewer bytes than the tree recorded.
    #[error(
        "{path} has {actual} bytes, but the file tree recorded {expected}: the source changed while building; rebuild"
    )]
    FileChanged {
        /// The file in the tree.
        path: TreePath,
        /// The size the tree recorded.
        expected: u64,
        /// The bytes that could be read.
        actual: u64,
    },
    /// The zstd encoder refused its parameters.
    #[error("cannot set up the zstd encoder: {0}")]
    Zstd(io::Error),
    /// Writing (or compressing) the output failed.
    #[error("cannot write the initrd: {0}")]
    Write(io::Error),
}

/// A member's contents.
#[derive(Clone, Copy, Debug)]
enum Body<'t> {
    Empty,
    File(&'t FileData),
    Symlink(&'t str),
}

impl Body<'_> {
    fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::File(d) => d.len(),
            Body::Symlink(t) => t.len() as u64,
        }
    }
}

/// One cpio member: its name, header (without the time, which comes at write time) and body.
#[derive(Clone, Debug)]
struct Entry<'t> {
    path: &'t TreePath,
    header: Header,
    body: Body<'t>,
}

impl Entry<'_> {
    fn name(&self) -> &str {
        if self.path.is_root() {
            "."
        } else {
            self.path.as_str()
        }
    }

    fn archive_len(&self) -> u64 {
        let head = HEADER_LEN + self.name().len() as u64 + 1;
        let body = self.body.len();
        head + pad4(head) + body + pad4(body)
    }
}

/// One planned segment: the members of one cpio archive, in the order they are written.
#[derive(Clone, Debug)]
pub struct Segment<'t> {
    name: String,
    entries: Vec<Entry<'t>>,
}

impl<'t> Segment<'t> {
    /// The segment's name ([`BASE_SEGMENT`] or its rule's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of members (without the trailer).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no path falls into this segment; it then writes nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The members' paths, in archive order.
    pub fn paths(&self) -> impl Iterator<Item = &'t TreePath> + '_ {
        self.entries.iter().map(|e| e.path)
    }

    /// Size of the uncompressed cpio archive, trailer included (0 when empty); known without I/O.
    pub fn archive_len(&self) -> u64 {
        if self.is_empty() {
            return 0;
        }
        let trailer = HEADER_LEN + newc::TRAILER.len() as u64 + 1;
        self.entries.iter().map(Entry::archive_len).sum::<u64>() + trailer + pad4(trailer)
    }

    /// A SHA-256 over everything that determines this segment's bytes: the members' names,
    /// headers and contents, `mtime`, the compression settings and the zstd library version.
    /// Host files are not read: one with a known sha256 is identified by it, any other by path
    /// and size, which stands for its bytes only where nothing changes a file in place (the
    /// caller decides whether to trust that).
    pub fn fingerprint(&self, mtime: u64, compression: Compression) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"uvmkit-initrd newc v1\0");
        match compression {
            Compression::None => h.update([0u8]),
            Compression::Zstd { level, window_log } => {
                h.update([1u8]);
                h.update(level.to_le_bytes());
                h.update(window_log.to_le_bytes());
                h.update(zstd::zstd_safe::version_number().to_le_bytes());
            }
        }
        h.update(mtime.to_le_bytes());
        h.update((self.entries.len() as u64).to_le_bytes());
        for e in &self.entries {
            h.update(e.name().as_bytes());
            h.update([0u8]);
            let hd = &e.header;
            for field in [
                hd.ino,
                hd.mode,
                hd.uid,
                hd.gid,
                hd.nlink,
                hd.filesize,
                hd.rdevmajor,
                hd.rdevminor,
            ] {
                h.update(field.to_le_bytes());
            }
            match e.body {
                Body::Empty => h.update([0u8]),
                Body::Symlink(target) => {
                    h.update([1u8]);
                    h.update(target.as_bytes());
                }
                Body::File(FileData::Inline(bytes)) => {
                    h.update([2u8]);
                    h.update((bytes.len() as u64).to_le_bytes());
                    h.update(bytes.as_slice());
                }
                Body::File(FileData::HostFile {
                    size,
                    sha256: Some(sha256),
                    ..
                }) => {
                    h.update([4u8]);
                    h.update(size.to_le_bytes());
                    h.update(sha256);
                }
                Body::File(FileData::HostFile {
                    path,
                    size,
                    sha256: None,
                }) => {
                    h.update([3u8]);
                    h.update(size.to_le_bytes());
                    h.update(path.as_os_str().as_encoded_bytes());
                    h.update([0u8]);
                }
            }
        }
        h.finalize().into()
    }

    /// Writes the segment (one cpio archive, compressed as one zstd frame unless
    /// [`Compression::None`]) to `out`. An empty segment writes nothing.
    pub fn write(
        &self,
        mtime: u64,
        compression: Compression,
        out: &mut impl Write,
    ) -> Result<SegmentStats, InitrdError> {
        self.write_with_workers(mtime, compression, zstd_workers(), out)
    }

    /// [`Segment::write`] with an explicit number of zstd worker threads (at least 1). zstd's
    /// output is the same for any number of workers from 1 up, so this only changes speed.
    fn write_with_workers(
        &self,
        mtime: u64,
        compression: Compression,
        workers: u32,
        out: &mut impl Write,
    ) -> Result<SegmentStats, InitrdError> {
        compression.validate()?;
        let mtime32 = u32::try_from(mtime).map_err(|_| InitrdError::MtimeOutOfRange(mtime))?;
        let mut stats = SegmentStats {
            name: self.name.clone(),
            entries: self.entries.len() as u64,
            uncompressed_bytes: 0,
            compressed_bytes: 0,
        };
        if self.is_empty() {
            return Ok(stats);
        }
        let mut counted = CountingWriter { inner: out, count: 0 };
        match compression {
            Compression::None => {
                let mut buffered = BufWriter::with_capacity(BUFFER, &mut counted);
                stats.uncompressed_bytes = self.write_cpio(mtime32, &mut buffered)?;
                buffered.flush().map_err(InitrdError::Write)?;
            }
            Compression::Zstd { level, window_log } => {
                let mut encoder = zstd::stream::write::Encoder::new(&mut counted, level).map_err(InitrdError::Zstd)?;
                encoder.window_log(window_log).map_err(InitrdError::Zstd)?;
                encoder.include_checksum(true).map_err(InitrdError::Zstd)?;
                encoder.multithread(workers.max(1)).map_err(InitrdError::Zstd)?;
                let mut buffered = BufWriter::with_capacity(BUFFER, &mut encoder);
                stats.uncompressed_bytes = self.write_cpio(mtime32, &mut buffered)?;
                buffered.flush().map_err(InitrdError::Write)?;
                drop(buffered);
                encoder.finish().map_err(InitrdError::Write)?;
            }
        }
        stats.compressed_bytes = counted.count;
        Ok(stats)
    }

    /// Writes the plain cpio archive; returns its length.
    fn write_cpio(&self, mtime: u32, out: &mut impl Write) -> Result<u64, InitrdError> {
        let mut written = 0u64;
        let mut buf = vec![0u8; BUFFER];
        for e in &self.entries {
            let header = Header { mtime, ..e.header };
            written += header.write(e.name(), out).map_err(InitrdError::Write)?;
            let body_len = e.body.len();
            match e.body {
                Body::Empty => {}
                Body::Symlink(target) => out.write_all(target.as_bytes()).map_err(InitrdError::Write)?,
                Body::File(data) => copy_exact(e.path, data, &mut buf, out)?,
            }
            let padding = pad4(body_len);
            out.write_all(&[0u8; 3][..padding as usize])
                .map_err(InitrdError::Write)?;
            written += body_len + padding;
        }
        written += newc::write_trailer(out).map_err(InitrdError::Write)?;
        Ok(written)
    }
}

/// Size of the copy buffer and of the buffer in front of the compressor.
const BUFFER: usize = 256 * 1024;

/// Worker threads for zstd: the machine's cores, at most 4 (more buys little for one frame).
fn zstd_workers() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get().min(4) as u32)
        .unwrap_or(1)
}

/// Streams exactly `data.len()` bytes of `data` to `out`.
fn copy_exact(path: &TreePath, data: &FileData, buf: &mut [u8], out: &mut impl Write) -> Result<(), InitrdError> {
    let read_err = |source| InitrdError::ReadFile {
        path: path.clone(),
        source,
    };
    let expected = data.len();
    let reader = data.open().map_err(read_err)?;
    uvmkit_filetree::copy_exact(reader, expected, out, buf).map_err(|e| match e {
        CopyError::Read(source) => read_err(source),
        CopyError::Write(e) => InitrdError::Write(e),
        CopyError::Short { copied } => InitrdError::FileChanged {
            path: path.clone(),
            expected,
            actual: copied,
        },
    })
}

/// Counts the bytes that pass through to `inner`.
struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Splits `tree` into segments: [`BASE_SEGMENT`] first, then one per rule, in order. Checks
/// every member against the newc format's and the kernel's limits.
pub fn plan_segments<'t>(tree: &'t FileTree, rules: &[SegmentRule]) -> Result<Vec<Segment<'t>>, InitrdError> {
    let nodes: Vec<(&'t TreePath, &'t Node)> = tree.iter().collect();
    let index: BTreeMap<&TreePath, usize> = nodes.iter().enumerate().map(|(i, (p, _))| (*p, i)).collect();
    let links = LinkCounts::of(&nodes, &index);
    let segment_of = assign_segments(&nodes, &index, rules);
    let mut segments: Vec<Segment<'t>> = std::iter::once(BASE_SEGMENT.to_string())
        .chain(rules.iter().map(|r| r.name.clone()))
        .map(|name| Segment {
            name,
            entries: Vec::new(),
        })
        .collect();
    let mut inodes = InodeNumbers {
        next: vec![1u32; segments.len()],
        of_linked: BTreeMap::new(),
    };
    for (i, (path, node)) in nodes.iter().enumerate() {
        let s = segment_of[i];
        let entry = member(path, node, &nodes, &index, &links, s, &mut inodes)?;
        segments[s].entries.push(entry);
    }
    Ok(segments)
}

/// What the link counts of members need: nlink of a directory is 2 + its subdirectories; of a
/// hard-linked file, its names.
struct LinkCounts<'t> {
    /// Subdirectories of each directory that has any.
    subdirs: BTreeMap<&'t TreePath, u32>,
    /// Names of each regular file (itself and the hard links to it).
    names: BTreeMap<&'t TreePath, u32>,
    /// The last of each file's names in tree order: the one that carries its data.
    last_name: BTreeMap<&'t TreePath, &'t TreePath>,
}

impl<'t> LinkCounts<'t> {
    fn of(nodes: &[(&'t TreePath, &'t Node)], index: &BTreeMap<&TreePath, usize>) -> LinkCounts<'t> {
        let mut counts = LinkCounts {
            subdirs: BTreeMap::new(),
            names: BTreeMap::new(),
            last_name: BTreeMap::new(),
        };
        for (path, node) in nodes {
            match &node.kind {
                NodeKind::Directory => {
                    if let Some(parent) = path.parent() {
                        if let Some(&i) = index.get(&parent) {
                            *counts.subdirs.entry(nodes[i].0).or_default() += 1;
                        }
                    }
                }
                NodeKind::File(_) => {
                    *counts.names.entry(path).or_default() += 1;
                    counts.last_name.insert(path, path);
                }
                NodeKind::HardLink(target) => {
                    // FileTree guarantees the target is a regular file in the tree.
                    if let Some(&i) = index.get(target) {
                        *counts.names.entry(nodes[i].0).or_default() += 1;
                        counts.last_name.insert(nodes[i].0, path);
                    }
                }
                _ => {}
            }
        }
        counts
    }
}

/// Each member's segment: its rule's; a hard link's is its target's; a directory's is the
/// earliest segment of anything below it (its rule's when it is empty), so it is created
/// before its contents and goes with them when only a later segment needs it. In reverse
/// path order every descendant comes before its ancestors, so one pass settles it.
fn assign_segments(
    nodes: &[(&TreePath, &Node)],
    index: &BTreeMap<&TreePath, usize>,
    rules: &[SegmentRule],
) -> Vec<usize> {
    let home = |path: &TreePath| rules.iter().position(|r| r.matches(path)).map_or(0, |i| i + 1);
    let mut segment_of: Vec<usize> = vec![usize::MAX; nodes.len()];
    for i in (0..nodes.len()).rev() {
        let (path, node) = nodes[i];
        let s = match &node.kind {
            _ if path.is_root() => 0,
            NodeKind::HardLink(target) => home(target),
            NodeKind::Directory if segment_of[i] != usize::MAX => segment_of[i],
            _ => home(path),
        };
        segment_of[i] = s;
        if let Some(parent) = path.parent() {
            if let Some(&p) = index.get(&parent) {
                segment_of[p] = segment_of[p].min(s);
            }
        }
    }
    segment_of
}

/// Inode numbers count from 1 in each segment; all names of a file share the first's.
struct InodeNumbers<'t> {
    /// The next free number, per segment.
    next: Vec<u32>,
    /// The number of each hard-linked file, once given.
    of_linked: BTreeMap<&'t TreePath, u32>,
}

impl InodeNumbers<'_> {
    /// A fresh number in segment `s`.
    fn take(&mut self, s: usize) -> u32 {
        let ino = self.next[s];
        self.next[s] += 1;
        ino
    }
}

/// The cpio member for `path` in segment `s`, checked against the newc format's and the
/// kernel's limits.
fn member<'t>(
    path: &'t TreePath,
    node: &'t Node,
    nodes: &[(&'t TreePath, &'t Node)],
    index: &BTreeMap<&TreePath, usize>,
    links: &LinkCounts<'t>,
    s: usize,
    inodes: &mut InodeNumbers<'t>,
) -> Result<Entry<'t>, InitrdError> {
    let name_len = if path.is_root() { 1 } else { path.as_str().len() };
    if name_len >= PATH_MAX {
        return Err(InitrdError::NameTooLong {
            path: path.clone(),
            len: name_len,
        });
    }
    // A hard link takes its target's metadata: the kernel only links members whose
    // inode, mode and device agree.
    let (file_node, file_path) = match &node.kind {
        NodeKind::HardLink(target) => {
            let t = index[target];
            (nodes[t].1, nodes[t].0)
        }
        _ => (node, path),
    };
    let mut header = Header {
        ino: 0,
        mode: file_node.st_mode(),
        uid: file_node.uid,
        gid: file_node.gid,
        nlink: 1,
        mtime: 0,
        filesize: 0,
        rdevmajor: 0,
        rdevminor: 0,
    };
    let body = match &file_node.kind {
        NodeKind::Directory => {
            header.nlink = 2 + links.subdirs.get(path).copied().unwrap_or(0);
            Body::Empty
        }
        NodeKind::File(data) => {
            let count = links.names.get(file_path).copied().unwrap_or(1);
            header.nlink = count;
            if count > 1 {
                header.ino = match inodes.of_linked.get(file_path) {
                    Some(&ino) => ino,
                    None => {
                        let ino = inodes.take(s);
                        inodes.of_linked.insert(file_path, ino);
                        ino
                    }
                };
            }
            let carries_data = count == 1 || links.last_name.get(file_path) == Some(&path);
            if carries_data {
                let size = data.len();
                header.filesize = u32::try_from(size).map_err(|_| InitrdError::FileTooLarge {
                    path: path.clone(),
                    size,
                })?;
                Body::File(data)
            } else {
                Body::Empty
            }
        }
        NodeKind::Symlink(target) => {
            if target.len() > PATH_MAX {
                return Err(InitrdError::SymlinkTooLong {
                    path: path.clone(),
                    len: target.len(),
                });
            }
            header.filesize = target.len() as u32;
            Body::Symlink(target)
        }
        NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
            header.rdevmajor = *major;
            header.rdevminor = *minor;
            Body::Empty
        }
        // FileTree never lets a hard link point at anything but a regular file.
        NodeKind::HardLink(_) | NodeKind::Fifo => Body::Empty,
    };
    if header.ino == 0 {
        header.ino = inodes.take(s);
    }
    Ok(Entry { path, header, body })
}

/// Writes `tree` as an initrd: the segments of [`plan_segments`], each a complete cpio archive
/// compressed on its own, concatenated to `out` in order.
pub fn write_initrd(
    tree: &FileTree,
    options: &InitrdOptions,
    out: &mut impl Write,
) -> Result<InitrdStats, InitrdError> {
    write_initrd_with(tree, options, out, |segment, out| {
        segment.write(options.mtime, options.compression, out)
    })
}

/// [`write_initrd`] with the caller writing each segment (from a cache of compressed
/// segments, say, keyed by [`Segment::fingerprint`]): `write_segment` must write what
/// [`Segment::write`] would, with the options' `mtime` and compression.
pub fn write_initrd_with<W: Write, E: From<InitrdError>>(
    tree: &FileTree,
    options: &InitrdOptions,
    out: &mut W,
    mut write_segment: impl FnMut(&Segment, &mut W) -> Result<SegmentStats, E>,
) -> Result<InitrdStats, E> {
    options.compression.validate()?;
    let segments = plan_segments(tree, &options.segments)?;
    let mut stats = InitrdStats {
        entries: 0,
        uncompressed_bytes: 0,
        compressed_bytes: 0,
        segments: Vec::with_capacity(segments.len()),
    };
    for segment in &segments {
        let s = write_segment(segment, out)?;
        stats.entries += s.entries;
        stats.uncompressed_bytes += s.uncompressed_bytes;
        stats.compressed_bytes += s.compressed_bytes;
        stats.segments.push(s);
    }
    Ok(stats)
}

/// Writes one regular file as an uncompressed cpio archive of its own (the member `name`,
/// then `TRAILER!!!`), to be appended to an initrd at a 4-byte boundary: the kernel copies
/// such a member into the initramfs as it is, with no decompression pass (buffer-format.rst).
/// Returns the bytes written.
pub fn write_file_archive(
    name: &TreePath,
    data: &FileData,
    mode: u32,
    mtime: u64,
    out: &mut impl Write,
) -> Result<u64, InitrdError> {
    let size = data.len();
    let filesize = u32::try_from(size).map_err(|_| InitrdError::FileTooLarge {
        path: name.clone(),
        size,
    })?;
    let mtime32 = u32::try_from(mtime).map_err(|_| InitrdError::MtimeOutOfRange(mtime))?;
    let header = newc::Header {
        ino: 1,
        mode: 0o100000 | (mode & 0o7777),
        nlink: 1,
        mtime: mtime32,
        filesize,
        ..newc::Header::default()
    };
    let mut written = header.write(name.as_str(), out).map_err(InitrdError::Write)?;
    let reader = data.open().map_err(|source| InitrdError::ReadFile {
        path: name.clone(),
        source,
    })?;
    let mut buf = vec![0u8; 1 << 20];
    uvmkit_filetree::copy_exact(reader, size, out, &mut buf).map_err(|e| match e {
        uvmkit_filetree::CopyError::Read(source) => InitrdError::ReadFile {
            path: name.clone(),
            source,
        },
        uvmkit_filetree::CopyError::Write(source) => InitrdError::Write(source),
        uvmkit_filetree::CopyError::Short { copied } => InitrdError::FileChanged {
            path: name.clone(),
            expected: size,
            actual: copied,
        },
    })?;
    let padding = newc::pad4(size);
    out.write_all(&vec![0u8; padding as usize])
        .map_err(InitrdError::Write)?;
    written += size + padding;
    written += newc::write_trailer(out).map_err(InitrdError::Write)?;
    Ok(written)
}

impl fmt::Display for InitrdStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} entries, {} bytes of cpio in {} bytes",
            self.entries, self.uncompressed_bytes, self.compressed_bytes
        )?;
        for s in self.segments.iter().filter(|s| s.entries > 0) {
            write!(
                f,
                "; {}: {} entries, {} -> {} bytes",
                s.name, s.entries, s.uncompressed_bytes, s.compressed_bytes
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> TreePath {
        TreePath::new(s).unwrap()
    }

    fn sample() -> FileTree {
        let mut t = FileTree::new();
        t.insert(
            &p("/bin/sh"),
            Node::file(FileData::inline(b"#!/bin/true\n".to_vec()), 0o755),
        )
        .unwrap();
        t.insert(
            &p("/lib/modules/6.1/kernel/a.ko"),
            Node::file(FileData::inline(vec![7u8; 5000]), 0o644),
        )
        .unwrap();
        t.insert(
            &p("/lib/modules/6.1/modules.dep"),
            Node::file(FileData::inline(b"".to_vec()), 0o644),
        )
        .unwrap();
        t.insert(&p("/lib/libc.so"), Node::file(FileData::inline(b"elf".to_vec()), 0o755))
            .unwrap();
        t.insert(
            &p("/usr/bin/dockerd"),
            Node::file(FileData::inline(vec![1u8; 3000]), 0o755),
        )
        .unwrap();
        t.insert(
            &p("/usr/bin/docker-link"),
            Node {
                kind: NodeKind::HardLink(p("/usr/bin/dockerd")),
                mode: 0o700,
                uid: 9,
                gid: 9,
            },
        )
        .unwrap();
        t.insert(
            &p("/sbin/dockerd-alias"),
            Node {
                kind: NodeKind::HardLink(p("/usr/bin/dockerd")),
                mode: 0,
                uid: 0,
                gid: 0,
            },
        )
        .unwrap();
        t
    }

    fn rules() -> Vec<SegmentRule> {
        vec![
            SegmentRule::new("modules", &["/lib/modules/"]).unwrap(),
            SegmentRule::new("docker", &["usr/bin/dockerd"]).unwrap(),
        ]
    }

    #[test]
    fn directories_precede_their_contents_across_segments() {
        let tree = sample();
        let segments = plan_segments(&tree, &rules()).unwrap();
        let mut seen: Vec<&TreePath> = Vec::new();
        for s in &segments {
            for path in s.paths() {
                if let Some(parent) = path.parent() {
                    assert!(
                        seen.contains(&&parent),
                        "{path} in segment {} before its parent",
                        s.name()
                    );
                }
                seen.push(path);
            }
        }
        assert_eq!(seen.len(), tree.len());
        let modules: Vec<&str> = segments[1].paths().map(|p| p.as_str()).collect();
        assert_eq!(
            modules,
            [
                "lib/modules",
                "lib/modules/6.1",
                "lib/modules/6.1/kernel",
                "lib/modules/6.1/kernel/a.ko",
                "lib/modules/6.1/modules.dep"
            ]
        );
        // `lib` is needed by base (libc.so) and so stays there.
        assert!(segments[0].paths().any(|p| p.as_str() == "lib"));
        // All names of dockerd follow the target into the docker segment; `sbin`, `usr` and
        // `usr/bin` hold nothing else, so they go there too.
        let docker: Vec<&str> = segments[2].paths().map(|p| p.as_str()).collect();
        assert_eq!(
            docker,
            [
                "sbin",
                "sbin/dockerd-alias",
                "usr",
                "usr/bin",
                "usr/bin/docker-link",
                "usr/bin/dockerd"
            ]
        );
    }

    #[test]
    fn hard_links_share_an_inode_and_store_data_once() {
        let tree = sample();
        let segments = plan_segments(&tree, &rules()).unwrap();
        let docker = &segments[2];
        let links: Vec<&Entry> = docker
            .entries
            .iter()
            .filter(|e| e.header.mode & 0o170000 == 0o100000)
            .collect();
        let inos: Vec<u32> = links.iter().map(|e| e.header.ino).collect();
        assert_eq!(inos, [2, 2, 2]);
        assert!(links.iter().all(|e| e.header.nlink == 3 && e.header.mode == 0o100755));
        let sizes: Vec<u32> = links.iter().map(|e| e.header.filesize).collect();
        assert_eq!(sizes, [0, 0, 3000]);
    }

    #[test]
    fn directory_nlink_counts_subdirectories() {
        let tree = sample();
        let segments = plan_segments(&tree, &[]).unwrap();
        let root = &segments[0].entries[0];
        assert_eq!(root.name(), ".");
        // bin, lib, sbin, usr
        assert_eq!(root.header.nlink, 6);
        let lib = segments[0].entries.iter().find(|e| e.path.as_str() == "lib").unwrap();
        assert_eq!(lib.header.nlink, 3);
    }

    #[test]
    fn archive_len_is_what_is_written() {
        let tree = sample();
        for s in plan_segments(&tree, &rules()).unwrap() {
            let mut out = Vec::new();
            let stats = s.write(0, Compression::None, &mut out).unwrap();
            assert_eq!(stats.uncompressed_bytes, s.archive_len());
            assert_eq!(out.len() as u64, s.archive_len());
            assert_eq!(out.len() % 4, 0);
        }
    }

    #[test]
    fn zstd_output_does_not_depend_on_worker_count() {
        let mut tree = FileTree::new();
        // Enough data for several zstd jobs, compressible but not trivially.
        let data: Vec<u8> = (0..6_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8 & 0x1f)
            .collect();
        tree.insert(&p("/big"), Node::file(FileData::inline(data), 0o644))
            .unwrap();
        let segments = plan_segments(&tree, &[]).unwrap();
        let c = Compression::Zstd {
            level: 3,
            window_log: 20,
        };
        let mut one = Vec::new();
        let mut three = Vec::new();
        segments[0].write_with_workers(1, c, 1, &mut one).unwrap();
        segments[0].write_with_workers(1, c, 3, &mut three).unwrap();
        assert!(one == three, "zstd output differs between 1 and 3 workers");
    }

    #[test]
    fn fingerprint_follows_the_bytes() {
        let tree = sample();
        let a = plan_segments(&tree, &rules()).unwrap();
        let mut changed = sample();
        changed
            .insert(
                &p("/bin/sh"),
                Node::file(FileData::inline(b"#!/bin/false\n".to_vec()), 0o755),
            )
            .unwrap();
        let b = plan_segments(&changed, &rules()).unwrap();
        let c = Compression::default();
        assert_ne!(a[0].fingerprint(0, c), b[0].fingerprint(0, c));
        assert_eq!(a[1].fingerprint(0, c), b[1].fingerprint(0, c));
        assert_eq!(a[2].fingerprint(0, c), b[2].fingerprint(0, c));
        assert_ne!(a[1].fingerprint(0, c), a[1].fingerprint(1, c));
        assert_ne!(a[1].fingerprint(0, c), a[1].fingerprint(0, Compression::zstd(3)));
    }

    #[test]
    fn limits_are_reported() {
        let mut t = FileTree::new();
        t.insert(&p("/x"), Node::file(FileData::inline(vec![]), 0o644)).unwrap();
        let err = write_initrd(
            &t,
            &InitrdOptions {
                mtime: 1 << 33,
                ..Default::default()
            },
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(matches!(err, InitrdError::MtimeOutOfRange(_)), "{err}");
        let bad = InitrdOptions {
            compression: Compression::Zstd {
                level: 9,
                window_log: 31,
            },
            ..Default::default()
        };
        assert!(matches!(
            write_initrd(&t, &bad, &mut Vec::new()),
            Err(InitrdError::BadWindowLog(31))
        ));
        let mut long = FileTree::new();
        long.insert(&p(&"a/".repeat(2100)), Node::directory()).unwrap();
        assert!(matches!(
            plan_segments(&long, &[]),
            Err(InitrdError::NameTooLong { .. })
        ));
        let mut big = FileTree::new();
        big.insert(
            &p("/huge"),
            Node::file(
                FileData::HostFile {
                    path: "/nonexistent".into(),
                    size: 5 << 30,
                    sha256: None,
                },
                0o644,
            ),
        )
        .unwrap();
        assert!(matches!(
            plan_segments(&big, &[]),
            Err(InitrdError::FileTooLarge { .. })
        ));
    }

    #[test]
    fn empty_segments_write_nothing() {
        let tree = sample();
        let rules = vec![SegmentRule::new("nothing", &["/opt"]).unwrap()];
        let mut out = Vec::new();
        let stats = write_initrd(
            &tree,
            &InitrdOptions {
                segments: rules,
                ..Default::default()
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(
            stats.segments[1],
            SegmentStats {
                name: "nothing".into(),
                entries: 0,
                uncompressed_bytes: 0,
                compressed_bytes: 0
            }
        );
        assert_eq!(stats.compressed_bytes, out.len() as u64);
    }
}
