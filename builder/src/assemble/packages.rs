//! The files a `[[packages]]` entry takes from its package: those its include globs match and
//! its exclude globs do not, less the package's default exclusions
//! ([`crate::definition::package_defaults`]), with the parent directories' modes the package
//! gives them.

use super::AssembleError;
use crate::definition::{PackageSelection, Selected};
use crate::inputs::PackageFiles;
use serde::Serialize;
use uvmkit_filetree::{FileTree, Node, NodeKind, TreePath};

/// A file an entry selected but the package's defaults left out of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftOut {
    /// The package.
    pub package: String,
    /// The file's path.
    pub path: String,
    /// Its size in bytes (0 for a link).
    pub bytes: u64,
    /// Why the defaults leave it out.
    pub reason: String,
}

/// What one entry took: files, their bytes, their paths, and what the defaults left out.
pub(super) struct Taken {
    pub files: usize,
    pub bytes: u64,
    pub paths: Vec<TreePath>,
    pub left_out: Vec<LeftOut>,
}

/// Copies the selected files of `pkg` into `tree`.
pub(super) fn take_package_files(
    tree: &mut FileTree,
    pkg: &PackageFiles,
    selection: &PackageSelection,
) -> Result<Taken, AssembleError> {
    let (mut files, mut bytes) = (0usize, 0u64);
    let (mut paths, mut left_out) = (Vec::new(), Vec::new());
    for (path, node) in pkg.tree.iter() {
        if matches!(node.kind, NodeKind::Directory) {
            continue;
        }
        match selection.select(&path.to_string()) {
            Selected::Taken => {}
            Selected::NotSelected => continue,
            Selected::LeftOutByDefault(reason) => {
                left_out.push(LeftOut {
                    package: pkg.name.clone(),
                    path: path.to_string(),
                    bytes: match &node.kind {
                        NodeKind::File(d) => d.len(),
                        _ => 0,
                    },
                    reason: reason.to_string(),
                });
                continue;
            }
        }
        // Keep the directory modes the package gives its parents.
        let mut ancestors = Vec::new();
        let mut cur = path.parent();
        while let Some(dir) = cur {
            if dir.is_root() || tree.contains(&dir) {
                break;
            }
            cur = dir.parent();
            ancestors.push(dir);
        }
        for dir in ancestors.into_iter().rev() {
            let node = pkg
                .tree
                .get(&dir)
                .cloned()
                .filter(|n| n.kind == NodeKind::Directory)
                .unwrap_or_else(Node::directory);
            tree.insert(&dir, node)?;
        }
        let node = match &node.kind {
            // A hard link whose target was not selected becomes a copy of the file.
            NodeKind::HardLink(target) if !tree.contains(target) => {
                pkg.tree.get(target).cloned().unwrap_or_else(|| node.clone())
            }
            _ => node.clone(),
        };
        if let NodeKind::File(d) = &node.kind {
            bytes += d.len();
        }
        tree.insert(path, node)?;
        paths.push(path.clone());
        files += 1;
    }
    if files == 0 {
        return Err(AssembleError::EmptySelection {
            package: pkg.name.clone(),
            include: selection.include.clone(),
        });
    }
    Ok(Taken {
        files,
        bytes,
        paths,
        left_out,
    })
}
