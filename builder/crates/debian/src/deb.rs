//! Reading binary packages: a `.deb` is an ar archive (deb(5)) holding `debian-binary`
//! (`2.0\n`), `control.tar[.gz|.xz|.zst]` and `data.tar[.gz|.xz|.zst]`, in that order.
//!
//! [`unpack_data`] streams the entries of `data.tar.*` to a callback in archive order, with
//! each regular file's contents as a reader, so a 60 MB file never has to sit in memory.
//! Before an entry reaches the callback its path is normalised and checked: a package may
//! not place anything outside the root, through a symbolic link it created, or hard-link to
//! something it did not ship before the link.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Read};

use uvmkit_filetree::TreePath;

use crate::compression::Compression;
use crate::control::{ControlError, Paragraph};

/// Errors from reading a `.deb`.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    /// Reading or decompressing failed.
    #[error("reading the package failed: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not a Debian binary package.
    #[error("not a Debian binary package: {0}")]
    NotADeb(String),
    /// A member uses a compression this crate does not decode.
    #[error("package member {0} uses an unsupported compression (supported: none, .gz, .xz, .zst)")]
    UnsupportedCompression(String),
    /// An entry would escape the root or go through a link; the whole package is refused.
    #[error("unsafe path {entry:?} in package: {reason}; the package is refused")]
    UnsafePath {
        /// The entry's path as stored in the archive.
        entry: String,
        /// Why it is unsafe.
        reason: String,
    },
    /// An entry's path is not UTF-8.
    #[error("entry path {0:?} is not UTF-8; such packages are not supported")]
    NonUtf8Path(String),
    /// The archive holds an entry type a package has no business shipping.
    #[error("entry {entry:?} has unsupported tar type {kind}")]
    UnsupportedEntry {
        /// The entry's path.
        entry: String,
        /// The tar type, as the tar crate names it.
        kind: String,
    },
    /// `control` in `control.tar.*` is malformed.
    #[error("DEBIAN/control: {0}")]
    Control(#[from] ControlError),
    /// The callback failed.
    #[error("{0}")]
    Sink(Box<dyn std::error::Error + Send + Sync>),
}

impl DebError {
    /// Wraps a callback's own error so it can stop [`unpack_data`].
    pub fn sink(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        DebError::Sink(err.into())
    }
}

/// What an entry of `data.tar` is.
pub enum DebEntryKind<'a> {
    /// A directory.
    Dir,
    /// A regular file: read its `size` bytes from `contents` (unread bytes are skipped).
    File {
        /// Size in bytes from the tar header.
        size: u64,
        /// The contents, decompressed as they are read.
        contents: &'a mut dyn Read,
    },
    /// A symbolic link with its target, verbatim.
    Symlink(String),
    /// A hard link to a regular file shipped earlier in the same package.
    HardLink(TreePath),
    /// A character device.
    CharDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

impl fmt::Debug for DebEntryKind<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DebEntryKind::Dir => f.write_str("Dir"),
            DebEntryKind::File { size, .. } => write!(f, "File {{ size: {size} }}"),
            DebEntryKind::Symlink(t) => write!(f, "Symlink({t:?})"),
            DebEntryKind::HardLink(t) => write!(f, "HardLink({t:?})"),
            DebEntryKind::CharDev { major, minor } => write!(f, "CharDev({major}, {minor})"),
            DebEntryKind::BlockDev { major, minor } => write!(f, "BlockDev({major}, {minor})"),
            DebEntryKind::Fifo => f.write_str("Fifo"),
        }
    }
}

/// One entry of a package's `data.tar`, with its path already checked.
#[derive(Debug)]
pub struct DebEntry<'a> {
    /// Normalised path (`./usr/bin/x` becomes `usr/bin/x`; the `./` entry is the root).
    pub path: TreePath,
    /// What the entry is, with a reader for file contents.
    pub kind: DebEntryKind<'a>,
    /// Permission bits including setuid/setgid/sticky (`0o7777`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
}

/// Streams the entries of `deb`'s `data.tar.*` to `sink`, in archive order.
///
/// The whole package is an error ([`DebError::UnsafePath`]) as soon as an entry is unsafe;
/// entries before it have been passed to `sink` already, so callers should build into
/// something they can throw away (a [`uvmkit_filetree::FileTree`]) rather than the final
/// destination.
pub fn unpack_data(deb: impl Read, sink: &mut dyn FnMut(DebEntry<'_>) -> Result<(), DebError>) -> Result<(), DebError> {
    let mut archive = ar::Archive::new(PlainMemberNames::new(deb));
    check_debian_binary(&mut archive)?;
    while let Some(member) = archive.next_entry() {
        let mut member = member?;
        let name = member_name(member.header().identifier());
        if let Some(suffix) = name.strip_prefix("data.tar") {
            let compression = compression_of(&name, suffix)?;
            let decoder = compression.decoder(&mut member)?;
            return stream_tar(ExtensionGuard::new(decoder), sink);
        }
        if name.starts_with('_') || name.starts_with("control.tar") {
            continue;
        }
        return Err(DebError::NotADeb(format!("unexpected member {name:?} before data.tar")));
    }
    Err(DebError::NotADeb("no data.tar member".into()))
}

/// The fields of `DEBIAN/control`, read from `control.tar.*`.
pub fn control_fields(deb: impl Read) -> Result<Paragraph, DebError> {
    /// Control files are small; refuse anything that is not.
    const CONTROL_LIMIT: u64 = 1 << 20;
    let mut archive = ar::Archive::new(PlainMemberNames::new(deb));
    check_debian_binary(&mut archive)?;
    while let Some(member) = archive.next_entry() {
        let mut member = member?;
        let name = member_name(member.header().identifier());
        let Some(suffix) = name.strip_prefix("control.tar") else {
            if name.starts_with("data.tar") {
                break;
            }
            continue;
        };
        let compression = compression_of(&name, suffix)?;
        let mut tar = tar::Archive::new(ExtensionGuard::new(compression.decoder(&mut member)?));
        for entry in tar.entries()? {
            let mut entry = entry?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            if raw.trim_start_matches("./") != "control" || !entry.header().entry_type().is_file() {
                continue;
            }
            if entry.size() > CONTROL_LIMIT {
                return Err(DebError::NotADeb(format!(
                    "control file is {} bytes; that is not a control file",
                    entry.size()
                )));
            }
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|_| DebError::NotADeb("DEBIAN/control is not UTF-8".into()))?;
            return Ok(Paragraph::parse_single(&text)?);
        }
        return Err(DebError::NotADeb(format!("{name} has no control file")));
    }
    Err(DebError::NotADeb("no control.tar member".into()))
}

/// deb(5): the first member is `debian-binary` holding the format version `2.x`.
fn check_debian_binary<R: Read>(archive: &mut ar::Archive<R>) -> Result<(), DebError> {
    let first = archive
        .next_entry()
        .ok_or_else(|| DebError::NotADeb("empty ar archive".into()))?;
    let mut first = first.map_err(|e| DebError::NotADeb(format!("not an ar archive ({e})")))?;
    let name = member_name(first.header().identifier());
    if name != "debian-binary" {
        return Err(DebError::NotADeb(format!(
            "first member is {name:?}, expected debian-binary"
        )));
    }
    let mut version = Vec::new();
    first.by_ref().take(64).read_to_end(&mut version)?;
    if !version.starts_with(b"2.") {
        return Err(DebError::NotADeb(format!(
            "format version {:?} is not 2.x",
            String::from_utf8_lossy(&version).trim()
        )));
    }
    Ok(())
}

/// Member names may carry the GNU `/` terminator.
fn member_name(identifier: &[u8]) -> String {
    let name = String::from_utf8_lossy(identifier);
    name.trim_end_matches('/').trim().to_string()
}

fn compression_of(name: &str, suffix: &str) -> Result<Compression, DebError> {
    match suffix {
        "" => Ok(Compression::None),
        ".gz" => Ok(Compression::Gzip),
        ".xz" => Ok(Compression::Xz),
        ".zst" => Ok(Compression::Zstd),
        _ => Err(DebError::UnsupportedCompression(name.to_string())),
    }
}

/// Paths seen so far in one archive, for the safety rules.
#[derive(Default)]
struct PathGuard {
    /// Symbolic links the archive created: nothing may go through them.
    symlinks: BTreeSet<TreePath>,
    /// Regular files (and hard links to them): the only valid hard-link targets.
    files: BTreeSet<TreePath>,
}

impl PathGuard {
    /// Normalises an archive path and checks that it stays inside the root and does not pass
    /// through a symbolic link created earlier (also not via `..` after one).
    fn check(&self, raw: &str) -> Result<TreePath, DebError> {
        let unsafe_path = |reason: String| DebError::UnsafePath {
            entry: raw.to_string(),
            reason,
        };
        if raw.contains('\0') {
            return Err(unsafe_path("it contains a NUL byte".into()));
        }
        let mut parts: Vec<&str> = Vec::new();
        let components: Vec<&str> = raw.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
        for component in &components {
            if !parts.is_empty() {
                let so_far = TreePath::new(&parts.join("/")).map_err(|e| unsafe_path(e.to_string()))?;
                if self.symlinks.contains(&so_far) {
                    return Err(unsafe_path(format!(
                        "it goes through {so_far}, a symbolic link created earlier in the package"
                    )));
                }
            }
            if *component == ".." {
                if parts.pop().is_none() {
                    return Err(unsafe_path("its '..' components climb above the root".into()));
                }
            } else {
                parts.push(component);
            }
        }
        TreePath::new(&parts.join("/")).map_err(|e| unsafe_path(e.to_string()))
    }
}

/// Streams the entries of an uncompressed tar (pax, GNU and ustar as dpkg-deb writes them).
fn stream_tar(
    tar_stream: impl Read,
    sink: &mut dyn FnMut(DebEntry<'_>) -> Result<(), DebError>,
) -> Result<(), DebError> {
    let mut tar = tar::Archive::new(tar_stream);
    let mut guard = PathGuard::default();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let raw_bytes = entry.path_bytes().into_owned();
        let raw = String::from_utf8(raw_bytes)
            .map_err(|e| DebError::NonUtf8Path(String::from_utf8_lossy(e.as_bytes()).into_owned()))?;
        let header = entry.header();
        let entry_type = header.entry_type();
        if matches!(entry_type, tar::EntryType::XGlobalHeader) {
            continue;
        }
        let path = guard.check(&raw)?;
        let mode = header.mode()? & 0o7777;
        let id = |v: u64, what: &str| -> Result<u32, DebError> {
            u32::try_from(v).map_err(|_| DebError::NotADeb(format!("entry {raw:?} has {what} {v}, beyond 32 bits")))
        };
        let uid = id(header.uid()?, "uid")?;
        let gid = id(header.gid()?, "gid")?;
        let link_target = || -> Result<String, DebError> {
            let bytes = entry
                .link_name_bytes()
                .ok_or_else(|| DebError::NotADeb(format!("link {raw:?} has no target")))?;
            String::from_utf8(bytes.into_owned())
                .map_err(|e| DebError::NonUtf8Path(String::from_utf8_lossy(e.as_bytes()).into_owned()))
        };
        let device = |what: &str| -> Result<(u32, u32), DebError> {
            let major = header
                .device_major()?
                .ok_or_else(|| DebError::NotADeb(format!("{what} {raw:?} has no device number")))?;
            let minor = header
                .device_minor()?
                .ok_or_else(|| DebError::NotADeb(format!("{what} {raw:?} has no device number")))?;
            Ok((major, minor))
        };
        if path.is_root() && !entry_type.is_dir() {
            return Err(DebError::UnsafePath {
                entry: raw,
                reason: "only a directory can stand for the root".into(),
            });
        }
        let kind_tag = match entry_type {
            t if t.is_file() => Tag::File,
            tar::EntryType::Directory => Tag::Dir,
            tar::EntryType::Symlink => Tag::Symlink(link_target()?),
            tar::EntryType::Link => {
                let target_raw = link_target()?;
                let target = guard.check(&target_raw).map_err(|e| match e {
                    DebError::UnsafePath { reason, .. } => DebError::UnsafePath {
                        entry: raw.clone(),
                        reason: format!("hard link target {target_raw:?}: {reason}"),
                    },
                    other => other,
                })?;
                if !guard.files.contains(&target) {
                    return Err(DebError::UnsafePath {
                        entry: raw,
                        reason: format!(
                            "it is a hard link to {target}, which is not a regular file earlier in the package"
                        ),
                    });
                }
                Tag::HardLink(target)
            }
            tar::EntryType::Char => {
                let (major, minor) = device("character device")?;
                Tag::Char(major, minor)
            }
            tar::EntryType::Block => {
                let (major, minor) = device("block device")?;
                Tag::Block(major, minor)
            }
            tar::EntryType::Fifo => Tag::Fifo,
            other => {
                return Err(DebError::UnsupportedEntry {
                    entry: raw,
                    kind: format!("{other:?}"),
                })
            }
        };
        // Record what this entry creates before handing it out.
        match &kind_tag {
            Tag::Symlink(_) => {
                guard.symlinks.insert(path.clone());
            }
            Tag::File | Tag::HardLink(_) => {
                guard.files.insert(path.clone());
            }
            _ => {}
        }
        let size = entry.size();
        let kind = match kind_tag {
            Tag::File => DebEntryKind::File {
                size,
                contents: &mut entry,
            },
            Tag::Dir => DebEntryKind::Dir,
            Tag::Symlink(t) => DebEntryKind::Symlink(t),
            Tag::HardLink(t) => DebEntryKind::HardLink(t),
            Tag::Char(major, minor) => DebEntryKind::CharDev { major, minor },
            Tag::Block(major, minor) => DebEntryKind::BlockDev { major, minor },
            Tag::Fifo => DebEntryKind::Fifo,
        };
        sink(DebEntry {
            path,
            kind,
            mode,
            uid,
            gid,
        })?;
    }
    // Read the compressed stream to its end so that its integrity checks (the xz and zstd
    // checksums, the gzip CRC) are verified too, not only the part the tar entries used.
    io::copy(&mut tar.into_inner(), &mut io::sink())?;
    Ok(())
}

/// Passes an ar archive through unchanged while reading each member header as it goes by, and
/// fails the stream at a member named the way GNU ar (`/`, `//`, `/123`) or BSD ar (`#1/N`)
/// name their symbol tables, name tables and long names. A `.deb` never holds such members
/// (deb(5): plain names, written by dpkg-deb), and the ar reader handles them badly: it
/// allocates a name table of whatever size the header declares (up to 10 GB) and panics on a
/// `/N` name without a table.
///
/// Layout (deb(5), ar(5)): the 8-byte magic `!<arch>\n`, then members: a 60-byte header
/// (name in bytes 0..16, decimal size in 48..58) and the data, padded to an even length.
struct PlainMemberNames<R> {
    inner: R,
    pos: u64,
    next_header: u64,
    header: [u8; 60],
    filled: usize,
}

impl<R: Read> PlainMemberNames<R> {
    fn new(inner: R) -> Self {
        PlainMemberNames {
            inner,
            pos: 0,
            next_header: 8,
            header: [0; 60],
            filled: 0,
        }
    }

    fn observe(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut at = self.pos;
        let end = self.pos + bytes.len() as u64;
        while at < end {
            if at < self.next_header {
                at = self.next_header.min(end);
                continue;
            }
            let rest = &bytes[(at - self.pos) as usize..];
            let take = (60 - self.filled).min(rest.len());
            self.header[self.filled..self.filled + take].copy_from_slice(&rest[..take]);
            self.filled += take;
            at += take as u64;
            if self.filled == 60 {
                self.filled = 0;
                let name = &self.header[..16];
                if name.starts_with(b"/") || name.starts_with(b"#1/") {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "ar member {:?} is a GNU or BSD ar extension, which no .deb holds",
                            String::from_utf8_lossy(name).trim_end()
                        ),
                    ));
                }
                let size = std::str::from_utf8(&self.header[48..58])
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok());
                // An unreadable size is the ar reader's to report; stop looking.
                self.next_header = size.map_or(u64::MAX, |size| at + size + size % 2);
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for PlainMemberNames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The longest GNU long name or long link ('L', 'K') a package may hold: PATH_MAX is 4096.
const MAX_LONG_NAME_BYTES: u64 = 64 << 10;
/// The longest pax extended header ('x', 'g') a package may hold.
const MAX_PAX_HEADER_BYTES: u64 = 1 << 20;

/// Passes a tar stream through unchanged while reading each header block as it goes by, and
/// fails the stream at a GNU long name or link, or a pax extended header, longer than the
/// limits above. The tar reader keeps such an entry's data in memory whole, and a compressed
/// `data.tar` of a few kilobytes can declare one of gigabytes.
///
/// Layout (POSIX.1-2001 `pax`, "ustar Interchange Format", and GNU tar's manual, "Basic Tar
/// Format"): 512-byte blocks; an entry is a header block, then its data in whole blocks; the
/// size is at offset 124 (12 bytes, octal, or base-256 when the top bit of the first byte is
/// set), the type flag at 156. A pax 'x' header's `size=` record replaces the size of the entry
/// after it.
struct ExtensionGuard<R> {
    inner: R,
    /// Bytes passed through so far.
    pos: u64,
    /// Where the next header block starts.
    next_header: u64,
    /// The header block being collected, and how much of it has arrived.
    block: [u8; 512],
    filled: usize,
    /// The data of the pax 'x' header being passed through: (where it ends, its bytes).
    pax: Option<(u64, Vec<u8>)>,
    /// The size a completed pax header gives the next entry.
    pax_size: Option<u64>,
}

impl<R: Read> ExtensionGuard<R> {
    fn new(inner: R) -> Self {
        ExtensionGuard {
            inner,
            pos: 0,
            next_header: 0,
            block: [0; 512],
            filled: 0,
            pax: None,
            pax_size: None,
        }
    }

    /// Looks at `bytes`, which start at stream offset `self.pos`.
    fn observe(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut at = self.pos;
        let end = self.pos + bytes.len() as u64;
        while at < end {
            let rest = &bytes[(at - self.pos) as usize..];
            if let Some((pax_end, data)) = &mut self.pax {
                let take = (*pax_end - at).min(rest.len() as u64) as usize;
                data.extend_from_slice(&rest[..take]);
                at += take as u64;
                if at == *pax_end {
                    self.pax_size = pax_size_record(data);
                    self.pax = None;
                }
                continue;
            }
            if at < self.next_header {
                at = self.next_header.min(end);
                continue;
            }
            let take = (512 - self.filled).min(rest.len());
            self.block[self.filled..self.filled + take].copy_from_slice(&rest[..take]);
            self.filled += take;
            at += take as u64;
            if self.filled == 512 {
                self.filled = 0;
                self.header_done(at)?;
            }
        }
        Ok(())
    }

    /// A whole header block ended at stream offset `end`: check it and find the next one.
    fn header_done(&mut self, end: u64) -> io::Result<()> {
        let block = &self.block;
        if block.iter().all(|&b| b == 0) {
            self.next_header = end;
            return Ok(());
        }
        let kind = block[156];
        let field = &block[124..136];
        let size = if field[0] & 0x80 != 0 {
            field[4..].iter().fold(0u64, |n, &b| n << 8 | u64::from(b))
        } else {
            let text = String::from_utf8_lossy(field);
            let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
            u64::from_str_radix(digits, 8).unwrap_or(0)
        };
        let limit = match kind {
            b'L' | b'K' => Some((MAX_LONG_NAME_BYTES, "GNU long name or link")),
            b'x' | b'g' => Some((MAX_PAX_HEADER_BYTES, "pax extended header")),
            _ => None,
        };
        if let Some((limit, what)) = limit {
            if size > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a tar {what} of {size} bytes, more than the {limit} a package may use"),
                ));
            }
        }
        let size = match kind {
            b'L' | b'K' | b'x' | b'g' => size,
            _ => self.pax_size.take().unwrap_or(size),
        };
        if kind == b'x' {
            self.pax = Some((end + size, Vec::new()));
        }
        self.next_header = end.saturating_add(size.div_ceil(512).saturating_mul(512));
        Ok(())
    }
}

impl<R: Read> Read for ExtensionGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The `size=` value of pax extended header records (`LENGTH KEY=VALUE\n`).
fn pax_size_record(data: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(data).ok()?;
    text.split('\n')
        .filter_map(|record| record.split_once(' ')?.1.strip_prefix("size="))
        .last()?
        .parse()
        .ok()
}

/// An entry's kind before the contents reader is borrowed.
enum Tag {
    File,
    Dir,
    Symlink(String),
    HardLink(TreePath),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}
