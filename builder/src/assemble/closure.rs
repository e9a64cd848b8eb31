//! The ELF shared-library closure: every program and library in the image gets the
//! interpreter and libraries it loads, found in the fetched packages' files (the "universe")
//! the way the dynamic linker would find them.
//!
//! Search order follows ld.so(8) for a system without `/etc/ld.so.cache`: `DT_RPATH` (when
//! there is no `DT_RUNPATH`), `DT_RUNPATH`, then the default directories of Debian's amd64
//! multiarch layout.

use crate::elf;
use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use uvmkit_filetree::{FileData, FileTree, Node, NodeKind, TreePath};

/// The dynamic linker's default directories on Debian amd64.
const DEFAULT_DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Why the closure could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    /// A program needs a library that none of the fetched packages provides.
    #[error(
        "{binary} needs {library}, which no fetched package provides (searched {}); add the package that ships it to the definition",
        searched.join(", ")
    )]
    MissingLibrary {
        /// The program (or library) that needs it.
        binary: TreePath,
        /// The `DT_NEEDED` name.
        library: String,
        /// The directories searched.
        searched: Vec<String>,
    },
    /// A program could not be read.
    #[error("cannot read {binary}: {message}")]
    Unreadable {
        /// The program.
        binary: TreePath,
        /// What reading it reported.
        message: String,
    },
}

/// What the closure added.
#[derive(Debug, Clone, Default)]
pub struct ClosureReport {
    /// ELF files examined.
    pub elf_files: usize,
    /// Libraries (and interpreters) added, as paths in the image.
    pub added: Vec<TreePath>,
}

fn read_dynamic(binary: &TreePath, data: &FileData) -> Result<Option<elf::DynamicInfo>, ClosureError> {
    let unreadable = |message: String| ClosureError::Unreadable {
        binary: binary.clone(),
        message,
    };
    match data {
        FileData::Inline(bytes) => elf::dynamic_info(&bytes[..]).map_err(|e| unreadable(e.to_string())),
        FileData::HostFile { path, .. } => {
            let file = File::open(path).map_err(|e| unreadable(format!("{}: {e}", path.display())))?;
            elf::dynamic_info(&file).map_err(|e| unreadable(e.to_string()))
        }
    }
}

/// Adds to `image` every library its ELF files need, taken from `universe`, recursively.
pub fn add_library_closure(image: &mut FileTree, universe: &FileTree) -> Result<ClosureReport, ClosureError> {
    let mut report = ClosureReport::default();
    let mut queue: VecDeque<TreePath> = image
        .iter()
        .filter(|(_, n)| matches!(n.kind, NodeKind::File(_)))
        .map(|(p, _)| p.clone())
        .collect();
    let mut seen: BTreeSet<TreePath> = queue.iter().cloned().collect();
    while let Some(path) = queue.pop_front() {
        let Some(Node {
            kind: NodeKind::File(data),
            ..
        }) = image.get(&path).cloned()
        else {
            continue;
        };
        let Some(info) = read_dynamic(&path, &data)? else {
            continue;
        };
        report.elf_files += 1;
        let origin = path.parent().map(|p| p.to_string()).unwrap_or_else(|| "/".into());
        let mut wanted: Vec<(String, Vec<String>)> = Vec::new();
        if let Some(interp) = &info.interpreter {
            wanted.push((interp.clone(), vec![]));
        }
        let mut dirs: Vec<String> = info
            .search_path
            .iter()
            .map(|d| d.replace("$ORIGIN", &origin).replace("${ORIGIN}", &origin))
            .collect();
        dirs.extend(DEFAULT_DIRS.iter().map(|d| d.to_string()));
        for lib in &info.needed {
            wanted.push((lib.clone(), dirs.clone()));
        }
        for (lib, dirs) in wanted {
            let candidates: Vec<String> = if lib.contains('/') {
                vec![lib.clone()]
            } else {
                dirs.iter().map(|d| format!("{d}/{lib}")).collect()
            };
            let mut placed = None;
            for candidate in &candidates {
                let Ok(candidate) = TreePath::new(candidate) else {
                    continue;
                };
                // Already in the image (from a package or an earlier program)?
                if let Some(real) = image.resolve(&candidate) {
                    if matches!(image.get(&real).map(|n| &n.kind), Some(NodeKind::File(_))) {
                        placed = Some(real);
                        break;
                    }
                }
                if let Some(real) = copy_with_links(image, universe, &candidate, &mut report.added) {
                    placed = Some(real);
                    break;
                }
            }
            // Debian 13 merged the root into /usr and ships the program interpreter only below
            // /usr/lib64; the `/lib64 -> usr/lib64` alias comes from base-files, which an image
            // does not take. The kernel opens PT_INTERP as written, so the alias goes in.
            if let (None, Some(rest)) = (&placed, lib.strip_prefix("/lib64/")) {
                let alias = TreePath::new("/lib64").unwrap();
                if image.get(&alias).is_none() {
                    let merged = TreePath::new(&format!("/usr/lib64/{rest}"));
                    if let Some(real) = merged
                        .ok()
                        .and_then(|m| copy_with_links(image, universe, &m, &mut report.added))
                    {
                        image.insert(&alias, Node::symlink("usr/lib64")).ok();
                        report.added.push(alias);
                        placed = Some(real);
                    }
                }
            }
            match placed {
                Some(real) => {
                    if seen.insert(real.clone()) {
                        queue.push_back(real);
                    }
                }
                None => {
                    return Err(ClosureError::MissingLibrary {
                        binary: path.clone(),
                        library: lib,
                        searched: dirs_for_message(&candidates),
                    });
                }
            }
        }
    }
    report.added.sort();
    report.added.dedup();
    Ok(report)
}

fn dirs_for_message(candidates: &[String]) -> Vec<String> {
    candidates
        .iter()
        .map(|c| c.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default())
        .collect()
}

/// Copies `path` from `universe` into `image`, following symbolic links in its directories
/// and its last component, and copying each link it passes through so the image's paths
/// resolve the same way. Returns the path of the regular file reached.
fn copy_with_links(
    image: &mut FileTree,
    universe: &FileTree,
    path: &TreePath,
    added: &mut Vec<TreePath>,
) -> Option<TreePath> {
    let mut current = path.clone();
    for _ in 0..40 {
        // Walk the components; copy a symbolic link met on the way and restart from its target.
        let mut prefix = TreePath::root();
        let parts: Vec<String> = current
            .as_str()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let mut next = None;
        for (i, part) in parts.iter().enumerate() {
            let step = prefix.join(part).ok()?;
            let node = universe.get(&step)?;
            match &node.kind {
                NodeKind::Symlink(target) => {
                    if image.get(&step).is_none() {
                        image.insert(&step, node.clone()).ok()?;
                        added.push(step.clone());
                    }
                    let base = if target.starts_with('/') {
                        TreePath::root()
                    } else {
                        prefix.clone()
                    };
                    let mut rest = base.join(target).ok()?;
                    for p in &parts[i + 1..] {
                        rest = rest.join(p).ok()?;
                    }
                    next = Some(rest);
                    break;
                }
                NodeKind::File(_) if i + 1 == parts.len() => {
                    if image.get(&step).is_none() {
                        image.insert(&step, node.clone()).ok()?;
                        added.push(step.clone());
                    }
                    return Some(step);
                }
                NodeKind::HardLink(target) if i + 1 == parts.len() => {
                    let target_node = universe.get(target)?.clone();
                    if image.get(&step).is_none() {
                        image.insert(&step, target_node).ok()?;
                        added.push(step.clone());
                    }
                    return Some(step);
                }
                NodeKind::Directory => prefix = step,
                _ => return None,
            }
        }
        current = next?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies the test binary's own libraries' layout into a universe, proving the closure
    /// finds an interpreter through a symlink and libraries by search path.
    #[test]
    fn closure_of_a_real_program() {
        let exe = std::env::current_exe().unwrap();
        let info = elf::dynamic_info(&File::open(&exe).unwrap()).unwrap().unwrap();
        let mut universe = FileTree::new();
        let mut host_libs = Vec::new();
        for lib in &info.needed {
            let host = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"]
                .iter()
                .map(|d| std::path::Path::new(d).join(lib))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("host lacks {lib}"));
            host_libs.push(host.clone());
            let real = std::fs::canonicalize(&host).unwrap();
            let tp = TreePath::new(&format!("/usr/lib/x86_64-linux-gnu/{lib}")).unwrap();
            universe
                .insert(&tp, Node::file(FileData::host_file(&real).unwrap(), 0o644))
                .unwrap();
        }
        let interp = info.interpreter.unwrap();
        let interp_real = std::fs::canonicalize(&interp).unwrap();
        universe
            .insert(
                &TreePath::new("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").unwrap(),
                Node::file(FileData::host_file(&interp_real).unwrap(), 0o755),
            )
            .unwrap();
        universe
            .insert(
                &TreePath::new(&interp).unwrap(),
                Node::symlink("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
            )
            .unwrap();
        // "/lib" as a link into /usr, as on merged-/usr systems.
        universe
            .insert(&TreePath::new("/lib").unwrap(), Node::symlink("usr/lib"))
            .unwrap();

        let mut image = FileTree::new();
        image
            .insert(
                &TreePath::new("/usr/bin/prog").unwrap(),
                Node::file(FileData::host_file(&exe).unwrap(), 0o755),
            )
            .unwrap();
        let report = add_library_closure(&mut image, &universe).unwrap();
        assert!(report.elf_files >= 2, "{report:?}");
        for lib in &info.needed {
            let p = TreePath::new(&format!("/lib/x86_64-linux-gnu/{lib}")).unwrap();
            assert!(image.resolve(&p).is_some(), "{lib} not reachable in image: {report:?}");
        }
        assert!(matches!(
            image.get(&TreePath::new(&interp).unwrap()).map(|n| &n.kind),
            Some(NodeKind::Symlink(_))
        ));
    }

    #[test]
    fn missing_library_names_binary_and_library() {
        let exe = std::env::current_exe().unwrap();
        let mut image = FileTree::new();
        image
            .insert(
                &TreePath::new("/usr/bin/prog").unwrap(),
                Node::file(FileData::host_file(&exe).unwrap(), 0o755),
            )
            .unwrap();
        let e = add_library_closure(&mut image, &FileTree::new())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/usr/bin/prog needs "), "{e}");
        assert!(e.contains("no fetched package provides"), "{e}");
    }
}
