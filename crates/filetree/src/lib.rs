//! An in-memory, path-sorted file tree.
//!
//! A [`FileTree`] is what every uvmkit writer that lays out files (the initrd's cpio, the ext4
//! data partition, the ISO) consumes. It holds metadata in memory and file contents either
//! inline (small, generated files) or as a reference to a file on disk (package contents in
//! the content-addressed cache), so a tree of hundreds of megabytes costs little memory.
//!
//! Paths are absolute, normalised and stored without the leading `/` (`usr/bin/dockerd`); the
//! root directory is the empty path. Iteration is in byte order of the path, which puts every
//! directory before its contents. Nothing in a tree depends on the host: no timestamps (writers
//! take one `mtime`, from `SOURCE_DATE_EPOCH`), no host uids, no hash-map order.

#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Cursor, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// A normalised absolute path inside a tree, stored without the leading `/`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TreePath(String);

impl TreePath {
    /// The root directory.
    pub fn root() -> Self {
        TreePath(String::new())
    }

    /// Normalises `path` (absolute or relative to the root): resolves `.`, folds repeated
    /// slashes, and refuses `..` that would climb above the root and NUL bytes.
    pub fn new(path: &str) -> Result<Self, TreeError> {
        if path.contains('\0') {
            return Err(TreeError::InvalidPath(path.to_string()));
        }
        let mut parts: Vec<&str> = Vec::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(TreeError::InvalidPath(path.to_string()));
                    }
                }
                p => parts.push(p),
            }
        }
        Ok(TreePath(parts.join("/")))
    }

    /// The path without the leading slash (`""` for the root).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the root directory.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The parent directory, or `None` for the root.
    pub fn parent(&self) -> Option<TreePath> {
        if self.0.is_empty() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(i) => TreePath(self.0[..i].to_string()),
            None => TreePath::root(),
        })
    }

    /// The last component (`""` for the root).
    pub fn file_name(&self) -> &str {
        match self.0.rfind('/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// `self/name`, with `name` normalised as a relative path.
    pub fn join(&self, name: &str) -> Result<TreePath, TreeError> {
        TreePath::new(&format!("{}/{}", self.0, name))
    }

    /// Number of components (0 for the root).
    pub fn depth(&self) -> usize {
        if self.0.is_empty() {
            0
        } else {
            self.0.split('/').count()
        }
    }

    /// True when `self` is `ancestor` or lies below it.
    pub fn starts_with(&self, ancestor: &TreePath) -> bool {
        ancestor.0.is_empty()
            || self.0 == ancestor.0
            || (self.0.starts_with(&ancestor.0) && self.0.as_bytes().get(ancestor.0.len()) == Some(&b'/'))
    }
}

impl fmt::Display for TreePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

impl fmt::Debug for TreePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", format!("/{}", self.0))
    }
}

/// Where a regular file's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileData {
    /// Bytes held in memory (generated files, small configuration).
    Inline(Arc<Vec<u8>>),
    /// A whole file on the host, usually a blob in the content-addressed cache. `size` is
    /// recorded when the tree is built so that layouts can be computed without I/O.
    HostFile {
        /// The host file whose whole content is the file's.
        path: PathBuf,
        /// Its length in bytes when the tree was built.
        size: u64,
        /// The sha256 of its content, when whoever made the tree checked it (a blob of the
        /// content cache): writers may then name the content by it without reading it.
        sha256: Option<[u8; 32]>,
    },
}

impl FileData {
    /// In-memory contents.
    pub fn inline(bytes: impl Into<Vec<u8>>) -> Self {
        FileData::Inline(Arc::new(bytes.into()))
    }

    /// Contents of a host file, with its size read now.
    pub fn host_file(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let size = std::fs::metadata(&path)?.len();
        Ok(FileData::HostFile {
            path,
            size,
            sha256: None,
        })
    }

    /// A host file of `size` bytes whose content has the sha256 `sha256`, checked by the
    /// caller (a blob of the content cache).
    pub fn checked_host_file(path: impl Into<PathBuf>, size: u64, sha256: [u8; 32]) -> Self {
        FileData::HostFile {
            path: path.into(),
            size,
            sha256: Some(sha256),
        }
    }

    /// The sha256 of the content, when known without reading it.
    pub fn known_sha256(&self) -> Option<&[u8; 32]> {
        match self {
            FileData::HostFile { sha256, .. } => sha256.as_ref(),
            FileData::Inline(_) => None,
        }
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            FileData::Inline(b) => b.len() as u64,
            FileData::HostFile { size, .. } => *size,
        }
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A reader over the contents. A host file that changed size since the tree was built is
    /// an error rather than a silently different artifact.
    pub fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        match self {
            FileData::Inline(b) => Ok(Box::new(Cursor::new(ArcBytes(b.clone())))),
            FileData::HostFile { path, size, .. } => {
                let file = File::open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))?;
                let actual = file.metadata()?.len();
                if actual != *size {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} changed size ({} bytes, expected {size})", path.display(), actual),
                    ));
                }
                Ok(Box::new(file))
            }
        }
    }

    /// Fills `buf` from `offset` on, opening a host file on its own (so threads can read
    /// different blocks of one file).
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|&end| end <= self.len());
        let Some(end) = end else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "bytes {offset}+{} are past the end of a {}-byte file",
                    buf.len(),
                    self.len()
                ),
            ));
        };
        match self {
            FileData::Inline(b) => {
                buf.copy_from_slice(&b[offset as usize..end as usize]);
                Ok(())
            }
            FileData::HostFile { path, .. } => {
                use std::io::{Seek, SeekFrom};
                File::open(path)
                    .and_then(|mut file| {
                        file.seek(SeekFrom::Start(offset))?;
                        file.read_exact(buf)
                    })
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))
            }
        }
    }

    /// Reads the whole contents into memory (for small files: ELF headers, configuration).
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        match self {
            FileData::Inline(b) => Ok(b.as_ref().clone()),
            FileData::HostFile { .. } => {
                let mut out = Vec::with_capacity(self.len() as usize);
                self.open()?.read_to_end(&mut out)?;
                Ok(out)
            }
        }
    }
}

/// Why [`copy_exact`] stopped.
#[derive(Debug)]
pub enum CopyError {
    /// Reading the source failed.
    Read(io::Error),
    /// Writing the output failed.
    Write(io::Error),
    /// The source ended after `copied` bytes, before the expected length: it changed since its
    /// size was recorded.
    Short {
        /// Bytes that were there.
        copied: u64,
    },
}

/// Streams exactly `expected` bytes from `reader` to `out` through `buf`. Writers record sizes
/// when they plan a layout, so a source that is shorter now is an error, never a silently
/// different artifact; bytes beyond `expected` are not read.
pub fn copy_exact(reader: impl Read, expected: u64, out: &mut impl Write, buf: &mut [u8]) -> Result<(), CopyError> {
    let mut reader = reader.take(expected);
    let mut copied = 0u64;
    loop {
        let n = match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
        copied += n as u64;
    }
    if copied != expected {
        return Err(CopyError::Short { copied });
    }
    Ok(())
}

struct ArcBytes(Arc<Vec<u8>>);
impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// What kind of node an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory.
    Directory,
    /// A regular file.
    File(FileData),
    /// A symbolic link with its target, stored verbatim.
    Symlink(String),
    /// A hard link to another regular file in the tree.
    HardLink(TreePath),
    /// A character device.
    CharDevice {
        /// The device's major number (its driver).
        major: u32,
        /// The device's minor number (the instance within the driver).
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// The device's major number (its driver).
        major: u32,
        /// The device's minor number (the instance within the driver).
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// One node of the tree: its kind, permission bits and owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// What the node is.
    pub kind: NodeKind,
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask), without the file type.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
}

impl Node {
    /// A root-owned directory with mode 0755.
    pub fn directory() -> Self {
        Node {
            kind: NodeKind::Directory,
            mode: 0o755,
            uid: 0,
            gid: 0,
        }
    }
    /// A root-owned file with the given mode.
    pub fn file(data: FileData, mode: u32) -> Self {
        Node {
            kind: NodeKind::File(data),
            mode: mode & 0o7777,
            uid: 0,
            gid: 0,
        }
    }
    /// A root-owned symbolic link (mode 0777, as Linux reports them).
    pub fn symlink(target: impl Into<String>) -> Self {
        Node {
            kind: NodeKind::Symlink(target.into()),
            mode: 0o777,
            uid: 0,
            gid: 0,
        }
    }
    /// The POSIX file-type bits (`S_IFREG`...) for this node, as cpio, ext4 and Rock Ridge
    /// store them. A hard link reports `S_IFREG`.
    pub fn file_type_bits(&self) -> u32 {
        match self.kind {
            NodeKind::Directory => 0o040000,
            NodeKind::File(_) | NodeKind::HardLink(_) => 0o100000,
            NodeKind::Symlink(_) => 0o120000,
            NodeKind::CharDevice { .. } => 0o020000,
            NodeKind::BlockDevice { .. } => 0o060000,
            NodeKind::Fifo => 0o010000,
        }
    }
    /// `file_type_bits() | mode`: the full `st_mode`.
    pub fn st_mode(&self) -> u32 {
        self.file_type_bits() | (self.mode & 0o7777)
    }
}

/// Errors from building a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeError {
    /// The path is not a valid absolute path inside the tree.
    InvalidPath(String),
    /// A parent of the path exists and is not a directory.
    NotADirectory(TreePath),
    /// A hard link names a target that is missing or not a regular file.
    BadHardLink {
        /// The hard link being added.
        link: TreePath,
        /// The path it names.
        target: TreePath,
    },
}

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TreeError::InvalidPath(p) => write!(f, "invalid path {p:?}: it must stay inside the image's root"),
            TreeError::NotADirectory(p) => write!(f, "{p} is not a directory, so nothing can be placed below it"),
            TreeError::BadHardLink { link, target } => {
                write!(
                    f,
                    "hard link {link} points to {target}, which is not a regular file in the image"
                )
            }
        }
    }
}

impl std::error::Error for TreeError {}

/// A path-sorted tree of nodes. The root directory always exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileTree {
    nodes: BTreeMap<TreePath, Node>,
}

impl Default for FileTree {
    fn default() -> Self {
        Self::new()
    }
}

impl FileTree {
    /// A tree holding only the root directory (0755, root-owned).
    pub fn new() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(TreePath::root(), Node::directory());
        FileTree { nodes }
    }

    /// Inserts or replaces `node` at `path`, creating missing parents as root-owned 0755
    /// directories. Replacing a directory with a non-directory removes what was below it.
    pub fn insert(&mut self, path: &TreePath, node: Node) -> Result<(), TreeError> {
        if path.is_root() {
            if node.kind != NodeKind::Directory {
                return Err(TreeError::NotADirectory(TreePath::root()));
            }
            self.nodes.insert(TreePath::root(), node);
            return Ok(());
        }
        self.create_parents(path)?;
        if let NodeKind::HardLink(target) = &node.kind {
            match self.nodes.get(target).map(|n| &n.kind) {
                Some(NodeKind::File(_)) => {}
                _ => {
                    return Err(TreeError::BadHardLink {
                        link: path.clone(),
                        target: target.clone(),
                    })
                }
            }
        }
        let was_dir = matches!(self.nodes.get(path).map(|n| &n.kind), Some(NodeKind::Directory));
        if was_dir && node.kind != NodeKind::Directory {
            self.remove(path);
        }
        self.nodes.insert(path.clone(), node);
        Ok(())
    }

    /// Creates `path` and its parents as directories where missing; an existing directory
    /// keeps its mode and owner.
    pub fn mkdir_all(&mut self, path: &TreePath) -> Result<(), TreeError> {
        self.create_parents(path)?;
        match self.nodes.get(path).map(|n| &n.kind) {
            Some(NodeKind::Directory) => Ok(()),
            Some(_) => Err(TreeError::NotADirectory(path.clone())),
            None => {
                self.nodes.insert(path.clone(), Node::directory());
                Ok(())
            }
        }
    }

    fn create_parents(&mut self, path: &TreePath) -> Result<(), TreeError> {
        let mut missing = Vec::new();
        let mut cursor = path.parent();
        while let Some(dir) = cursor {
            match self.nodes.get(&dir).map(|n| &n.kind) {
                Some(NodeKind::Directory) => break,
                Some(_) => return Err(TreeError::NotADirectory(dir)),
                None => {
                    cursor = dir.parent();
                    missing.push(dir);
                }
            }
        }
        for dir in missing {
            self.nodes.insert(dir, Node::directory());
        }
        Ok(())
    }

    /// The node at `path`.
    pub fn get(&self, path: &TreePath) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// The node at `path`, mutably (to change mode or owner).
    pub fn get_mut(&mut self, path: &TreePath) -> Option<&mut Node> {
        self.nodes.get_mut(path)
    }

    /// True when `path` exists.
    pub fn contains(&self, path: &TreePath) -> bool {
        self.nodes.contains_key(path)
    }

    /// Removes `path` and everything below it; returns how many nodes went. Hard links that
    /// pointed into the removed part are removed too, so the tree stays consistent.
    pub fn remove(&mut self, path: &TreePath) -> usize {
        if path.is_root() {
            let n = self.nodes.len() - 1;
            *self = FileTree::new();
            return n;
        }
        let mut doomed: Vec<TreePath> = vec![path.clone()];
        doomed.extend(self.descendants(path).map(|(p, _)| p.clone()));
        let mut removed = 0;
        for p in &doomed {
            removed += self.nodes.remove(p).is_some() as usize;
        }
        let dangling: Vec<TreePath> = self
            .nodes
            .iter()
            .filter(|(_, n)| matches!(&n.kind, NodeKind::HardLink(t) if doomed.contains(t)))
            .map(|(p, _)| p.clone())
            .collect();
        for p in dangling {
            removed += self.nodes.remove(&p).is_some() as usize;
        }
        removed
    }

    /// Follows symbolic links in the directories of `path` and in its last component (up to
    /// 40 hops, as Linux does) and returns the path of the node finally reached, if any.
    pub fn resolve(&self, path: &TreePath) -> Option<TreePath> {
        let mut current = path.clone();
        for _ in 0..40 {
            // Resolve directory components first, from the top.
            let mut resolved = TreePath::root();
            let parts: Vec<&str> = current.as_str().split('/').filter(|s| !s.is_empty()).collect();
            let mut restart = None;
            for (i, part) in parts.iter().enumerate() {
                let next = resolved.join(part).ok()?;
                match self.nodes.get(&next).map(|n| &n.kind) {
                    Some(NodeKind::Symlink(target)) => {
                        let base = if target.starts_with('/') {
                            TreePath::root()
                        } else {
                            resolved.clone()
                        };
                        let mut rest = base.join(target).ok()?;
                        for p in &parts[i + 1..] {
                            rest = rest.join(p).ok()?;
                        }
                        restart = Some(rest);
                        break;
                    }
                    Some(_) => resolved = next,
                    None => return None,
                }
            }
            match restart {
                Some(p) => current = p,
                None => return Some(resolved),
            }
        }
        None
    }

    /// All nodes in path order (every directory before its contents).
    pub fn iter(&self) -> impl Iterator<Item = (&TreePath, &Node)> {
        self.nodes.iter()
    }

    /// Everything below directory `dir` (not `dir` itself), in path order. Descendants share
    /// the prefix `dir/`, so they are one contiguous range of the sorted map.
    pub fn descendants<'a>(&'a self, dir: &TreePath) -> impl Iterator<Item = (&'a TreePath, &'a Node)> + 'a {
        let prefix = if dir.is_root() {
            String::new()
        } else {
            format!("{}/", dir.as_str())
        };
        let start = TreePath(prefix.clone());
        self.nodes
            .range(start..)
            .skip_while(|(p, _)| p.is_root())
            .take_while(move |(p, _)| p.as_str().starts_with(&prefix))
    }

    /// The direct children of directory `dir`, in name order.
    pub fn children<'a>(&'a self, dir: &TreePath) -> impl Iterator<Item = (&'a TreePath, &'a Node)> + 'a {
        let depth = dir.depth() + 1;
        self.descendants(dir).filter(move |(p, _)| p.depth() == depth)
    }

    /// Number of nodes, the root included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the tree holds only the root.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    /// Sum of the sizes of all regular files (hard links counted once).
    pub fn total_file_bytes(&self) -> u64 {
        self.nodes
            .values()
            .filter_map(|n| match &n.kind {
                NodeKind::File(d) => Some(d.len()),
                _ => None,
            })
            .sum()
    }

    /// Copies every node of `other` into this tree, `other` winning on conflicts.
    pub fn merge(&mut self, other: &FileTree) -> Result<(), TreeError> {
        for (path, node) in other.iter() {
            if path.is_root() {
                continue;
            }
            if node.kind == NodeKind::Directory {
                if let Some(existing) = self.nodes.get_mut(path) {
                    if existing.kind == NodeKind::Directory {
                        *existing = node.clone();
                        continue;
                    }
                }
            }
            self.insert(path, node.clone())?;
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

    #[test]
    fn copy_exact_stops_at_the_length_and_reports_short_sources() {
        let mut out = Vec::new();
        copy_exact(&b"abcdef"[..], 4, &mut out, &mut [0u8; 3]).unwrap();
        assert_eq!(out, b"abcd");
        assert!(matches!(
            copy_exact(&b"ab"[..], 4, &mut Vec::new(), &mut [0u8; 3]),
            Err(CopyError::Short { copied: 2 })
        ));
    }

    #[test]
    fn paths_are_normalised_and_cannot_escape() {
        assert_eq!(p("/usr//bin/./x").as_str(), "usr/bin/x");
        assert_eq!(p("usr/lib/../bin").as_str(), "usr/bin");
        assert!(TreePath::new("/../etc").is_err());
        assert!(TreePath::new("a/../../b").is_err());
        assert_eq!(p("/").parent(), None);
        assert_eq!(p("/a/b").parent(), Some(p("/a")));
        assert_eq!(p("/a").parent(), Some(TreePath::root()));
        assert!(p("/a/b").starts_with(&p("/a")));
        assert!(!p("/ab").starts_with(&p("/a")));
    }

    #[test]
    fn insert_creates_parents_and_iterates_parents_first() {
        let mut t = FileTree::new();
        t.insert(&p("/usr/bin/tool"), Node::file(FileData::inline(b"x".to_vec()), 0o755))
            .unwrap();
        t.insert(&p("/usr-local"), Node::directory()).unwrap();
        let order: Vec<String> = t.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(order, ["/", "/usr", "/usr-local", "/usr/bin", "/usr/bin/tool"]);
        for (i, (path, _)) in t.iter().enumerate() {
            if let Some(parent) = path.parent() {
                let pos = t.iter().position(|(q, _)| *q == parent).unwrap();
                assert!(pos < i, "{path} listed before its parent");
            }
        }
    }

    #[test]
    fn file_below_a_file_is_refused() {
        let mut t = FileTree::new();
        t.insert(&p("/a"), Node::file(FileData::inline(vec![]), 0o644)).unwrap();
        assert_eq!(
            t.insert(&p("/a/b"), Node::directory()),
            Err(TreeError::NotADirectory(p("/a")))
        );
    }

    #[test]
    fn remove_takes_descendants_but_not_siblings() {
        let mut t = FileTree::new();
        t.insert(&p("/a/b/c"), Node::directory()).unwrap();
        t.insert(&p("/a-b"), Node::directory()).unwrap();
        t.insert(&p("/a/f"), Node::file(FileData::inline(vec![1]), 0o644))
            .unwrap();
        t.insert(
            &p("/link"),
            Node {
                kind: NodeKind::HardLink(p("/a/f")),
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        )
        .unwrap();
        assert_eq!(t.remove(&p("/a")), 5);
        assert!(t.contains(&p("/a-b")));
        assert!(!t.contains(&p("/link")));
    }

    #[test]
    fn resolve_follows_symlinks() {
        let mut t = FileTree::new();
        t.insert(
            &p("/usr/lib/x86_64-linux-gnu/libc.so.6"),
            Node::file(FileData::inline(vec![]), 0o755),
        )
        .unwrap();
        t.insert(&p("/lib"), Node::symlink("usr/lib")).unwrap();
        t.insert(&p("/usr/lib/x86_64-linux-gnu/libc.so"), Node::symlink("libc.so.6"))
            .unwrap();
        assert_eq!(
            t.resolve(&p("/lib/x86_64-linux-gnu/libc.so")),
            Some(p("/usr/lib/x86_64-linux-gnu/libc.so.6"))
        );
        t.insert(&p("/loop"), Node::symlink("/loop")).unwrap();
        assert_eq!(t.resolve(&p("/loop")), None);
    }

    #[test]
    fn children_lists_direct_entries_only() {
        let mut t = FileTree::new();
        t.insert(&p("/etc/a"), Node::directory()).unwrap();
        t.insert(&p("/etc/a/x"), Node::directory()).unwrap();
        t.insert(&p("/etc/b"), Node::directory()).unwrap();
        t.insert(&p("/etc-x"), Node::directory()).unwrap();
        let names: Vec<&str> = t.children(&p("/etc")).map(|(p, _)| p.file_name()).collect();
        assert_eq!(names, ["a", "b"]);
        let top: Vec<&str> = t.children(&TreePath::root()).map(|(p, _)| p.file_name()).collect();
        assert_eq!(top, ["etc", "etc-x"]);
    }
}
