//! The files a `[[packages]]` entry takes from its package: those its include globs match and
//! its exclude globs do not, with the parent directories' modes the package gives them.

use super::AssembleError;
use crate::definition::PackageSelection;
use crate::inputs::PackageFiles;
use uvmkit_filetree::{FileTree, Node, NodeKind};

/// Copies the selected files of `pkg` into `tree`; returns how many and their bytes.
pub(super) fn take_package_files(
    tree: &mut FileTree,
    pkg: &PackageFiles,
    selection: &PackageSelection,
) -> Result<(usize, u64), AssembleError> {
    let (mut files, mut bytes) = (0usize, 0u64);
    for (path, node) in pkg.tree.iter() {
        if matches!(node.kind, NodeKind::Directory) {
            continue;
        }
        if !selection.takes(&path.to_string()) {
            continue;
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
        files += 1;
    }
    if files == 0 {
        return Err(AssembleError::EmptySelection {
            package: pkg.name.clone(),
            include: selection.include.clone(),
        });
    }
    Ok((files, bytes))
}
