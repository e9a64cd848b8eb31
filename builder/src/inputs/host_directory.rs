//! Copying a directory of the host into a file tree: a local kernel's modules, and the
//! `[[files]]` entries that name a `directory`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use uvmkit_filetree::{FileData, FileTree, Node, NodeKind, TreeError, TreePath};

/// Why a host directory could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum HostDirectoryError {
    /// Reading an entry failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The host path.
        path: PathBuf,
        /// What reading it reported.
        source: std::io::Error,
    },
    /// An entry's name is not UTF-8 (tree paths are).
    #[error("{} has a name that is not UTF-8", path.display())]
    NotUtf8 {
        /// The host path.
        path: PathBuf,
    },
    /// An entry is a device, socket or FIFO.
    #[error("{} is neither a file, a directory nor a symbolic link", path.display())]
    Unsupported {
        /// The host path.
        path: PathBuf,
    },
    /// The tree refused an entry.
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// Who owns the copied entries, and the top directory's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    /// The mode of the top directory (default 0755); the entries below keep the host's
    /// permission bits.
    pub mode: Option<u32>,
    /// Owner user id of every entry.
    pub uid: u32,
    /// Owner group id of every entry.
    pub gid: u32,
}

impl Ownership {
    /// root:root, with the default mode.
    pub const ROOT: Ownership = Ownership {
        mode: None,
        uid: 0,
        gid: 0,
    };
}

/// Copies the host directory `src` below `dest`, in sorted order (so the tree does not depend
/// on the order the host lists entries in); owners come from `owner`, modes from the host's
/// permission bits (or `owner.mode`, for the top directory).
pub fn copy_host_directory(
    tree: &mut FileTree,
    dest: &TreePath,
    src: &Path,
    owner: Ownership,
) -> Result<(), HostDirectoryError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HostDirectoryError::Io { path, source }
    };
    tree.mkdir_all(dest)?;
    if let Some(node) = tree.get_mut(dest) {
        node.mode = owner.mode.unwrap_or(0o755);
        node.uid = owner.uid;
        node.gid = owner.gid;
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(src)
        .map_err(io(src))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io(src))?;
    entries.sort();
    for entry in entries {
        let name = entry
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| HostDirectoryError::NotUtf8 { path: entry.clone() })?;
        let target = dest.join(name)?;
        let meta = std::fs::symlink_metadata(&entry).map_err(io(&entry))?;
        let mode = meta.permissions().mode() & 0o7777;
        let kind = if meta.is_dir() {
            let sub = Ownership {
                mode: Some(mode),
                ..owner
            };
            copy_host_directory(tree, &target, &entry, sub)?;
            continue;
        } else if meta.file_type().is_symlink() {
            NodeKind::Symlink(
                std::fs::read_link(&entry)
                    .map_err(io(&entry))?
                    .to_string_lossy()
                    .into_owned(),
            )
        } else if meta.is_file() {
            NodeKind::File(FileData::host_file(&entry).map_err(io(&entry))?)
        } else {
            return Err(HostDirectoryError::Unsupported { path: entry });
        };
        // Linux reports every symbolic link as 0777.
        let mode = if matches!(kind, NodeKind::Symlink(_)) {
            0o777
        } else {
            mode
        };
        tree.insert(
            &target,
            Node {
                kind,
                mode,
                uid: owner.uid,
                gid: owner.gid,
            },
        )?;
    }
    Ok(())
}
