//! `[[files]]` and `[disk] data_files`: nodes the definition adds to a tree (inline contents,
//! local files and directories, links, empty directories).

use crate::definition::{ExtraFile, ExtraFileKind};
use crate::inputs::host_directory::{copy_host_directory, HostDirectoryError, Ownership};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use uvmkit_filetree::{FileData, FileTree, Node, NodeKind, TreeError, TreePath};

/// Why an entry could not be added.
#[derive(Debug, thiserror::Error)]
pub enum ExtraFileError {
    /// Its `source` cannot be read.
    #[error("source {}: {source}", path.display())]
    Source {
        /// The local file.
        path: PathBuf,
        /// What reading it reported.
        source: std::io::Error,
    },
    /// Its `source` is a directory or a special file.
    #[error("source {} is not a regular file (use `directory` for a tree)", path.display())]
    NotAFile {
        /// The local path.
        path: PathBuf,
    },
    /// Its `directory` cannot be copied.
    #[error("directory {}: {source}", path.display())]
    Directory {
        /// The local directory.
        path: PathBuf,
        /// What copying reported.
        source: HostDirectoryError,
    },
    /// It conflicts with what the tree holds.
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// Adds `files` to `tree`, relative paths resolved against `base_dir`; a failure names the
/// entry's path.
pub fn add_extra_files(
    tree: &mut FileTree,
    files: &[ExtraFile],
    base_dir: &Path,
) -> Result<(), (TreePath, ExtraFileError)> {
    for f in files {
        add_extra_file(tree, f, base_dir).map_err(|e| (f.path.clone(), e))?;
    }
    Ok(())
}

fn add_extra_file(tree: &mut FileTree, f: &ExtraFile, base_dir: &Path) -> Result<(), ExtraFileError> {
    let path = &f.path;
    let node = |kind: NodeKind, default_mode: u32| Node {
        kind,
        mode: f.mode.unwrap_or(default_mode),
        uid: f.uid,
        gid: f.gid,
    };
    match &f.kind {
        ExtraFileKind::Contents(text) => tree.insert(
            path,
            node(NodeKind::File(FileData::inline(text.as_bytes().to_vec())), 0o644),
        )?,
        ExtraFileKind::Symlink(target) => tree.insert(
            path,
            Node {
                kind: NodeKind::Symlink(target.to_string()),
                mode: 0o777,
                uid: f.uid,
                gid: f.gid,
            },
        )?,
        ExtraFileKind::Mkdir => {
            tree.mkdir_all(path)?;
            *tree.get_mut(path).expect("just made") = node(NodeKind::Directory, 0o755);
        }
        ExtraFileKind::Source(src) => {
            let src = base_dir.join(src);
            let read_error = |source| ExtraFileError::Source {
                path: src.clone(),
                source,
            };
            let meta = std::fs::metadata(&src).map_err(read_error)?;
            if !meta.is_file() {
                return Err(ExtraFileError::NotAFile { path: src });
            }
            let exec = meta.permissions().mode() & 0o111 != 0;
            let data = FileData::host_file(&src).map_err(read_error)?;
            tree.insert(path, node(NodeKind::File(data), if exec { 0o755 } else { 0o644 }))?;
        }
        ExtraFileKind::Directory(src) => {
            let src = base_dir.join(src);
            let owner = Ownership {
                mode: f.mode,
                uid: f.uid,
                gid: f.gid,
            };
            copy_host_directory(tree, path, &src, owner)
                .map_err(|source| ExtraFileError::Directory { path: src, source })?;
        }
    }
    Ok(())
}
