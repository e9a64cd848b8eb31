//! The license each package declares: its machine-readable `copyright` file (DEP-5), or the
//! one of the package its documentation directory links to (Debian Policy 12.5).

use super::error::InputError;
use super::package::FetchedPackage;
use std::collections::BTreeMap;
use uvmkit_debian::copyright::{self, DeclaredLicense};
use uvmkit_filetree::{FileTree, NodeKind, TreePath};

/// Collects the packages' licenses as their trees are unpacked, then fills in the packages
/// whose doc directory links to another package's.
#[derive(Debug, Default)]
pub(super) struct LicenseCollector {
    licenses: BTreeMap<String, DeclaredLicense>,
    doc_links: Vec<(String, String)>,
}

impl LicenseCollector {
    /// Records what `pkg`'s files (`tree`) declare.
    pub(super) fn add(&mut self, pkg: &FetchedPackage, tree: &FileTree) -> Result<(), InputError> {
        match package_license(pkg, tree)? {
            Some(license) => {
                self.licenses.insert(pkg.name.clone(), license);
            }
            None => self
                .doc_links
                .extend(doc_link_target(pkg, tree).map(|target| (pkg.name.clone(), target))),
        }
        Ok(())
    }

    /// The declared license of every package that has one, by name.
    pub(super) fn finish(mut self) -> BTreeMap<String, DeclaredLicense> {
        // A doc directory linking to another package's stands for that package's copyright.
        for (name, target) in self.doc_links {
            if let Some(license) = self.licenses.get(&target).cloned() {
                self.licenses.insert(name, license);
            }
        }
        self.licenses
    }
}

/// The license `pkg` declares in `/usr/share/doc/NAME/copyright` of its own files (following
/// symbolic links only within the package); `None` when it has no such file or a free-form one.
fn package_license(pkg: &FetchedPackage, tree: &FileTree) -> Result<Option<DeclaredLicense>, InputError> {
    let Ok(path) = TreePath::new(&format!("/usr/share/doc/{}/copyright", pkg.name)) else {
        return Ok(None);
    };
    let Some(mut real) = tree.resolve(&path) else {
        return Ok(None);
    };
    if let Some(NodeKind::HardLink(target)) = tree.get(&real).map(|n| &n.kind) {
        real = target.clone();
    }
    let Some(NodeKind::File(data)) = tree.get(&real).map(|n| &n.kind) else {
        return Ok(None);
    };
    let bytes = data.read_all().map_err(|source| InputError::Read {
        what: format!("package {}: reading {}", pkg.name, real.as_str()),
        source,
    })?;
    Ok(copyright::declared_license(&String::from_utf8_lossy(&bytes)))
}

/// The package whose documentation directory `pkg`'s `/usr/share/doc/NAME` links to, when it is
/// a symbolic link to another directory of `/usr/share/doc`. Debian Policy 12.5 allows that only
/// between packages of one source where the first depends on the second, so the copyright of
/// the second is the first's.
fn doc_link_target(pkg: &FetchedPackage, tree: &FileTree) -> Option<String> {
    let path = TreePath::new(&format!("/usr/share/doc/{}", pkg.name)).ok()?;
    let NodeKind::Symlink(target) = &tree.get(&path)?.kind else {
        return None;
    };
    let name = target
        .trim_end_matches('/')
        .strip_prefix("/usr/share/doc/")
        .unwrap_or(target.trim_end_matches('/'));
    (!name.is_empty() && !name.contains('/') && name != "." && name != "..").then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::package::tests::pkg;
    use uvmkit_filetree::{FileData, Node};

    fn tree(files: &[(&str, &str)], links: &[(&str, &str)]) -> FileTree {
        let mut t = FileTree::new();
        for (path, text) in files {
            let p = TreePath::new(path).unwrap();
            t.mkdir_all(&p.parent().unwrap()).unwrap();
            t.insert(&p, Node::file(FileData::inline(text.as_bytes().to_vec()), 0o644))
                .unwrap();
        }
        for (path, target) in links {
            let p = TreePath::new(path).unwrap();
            t.mkdir_all(&p.parent().unwrap()).unwrap();
            t.insert(&p, Node::symlink(*target)).unwrap();
        }
        t
    }

    const DEP5: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: 2000 A\nLicense: BSD-3-clause\n";

    #[test]
    fn licenses_come_from_the_packages_own_copyright_file() {
        let own = tree(&[("/usr/share/doc/a/copyright", DEP5)], &[]);
        let l = package_license(&pkg("a"), &own).unwrap().unwrap();
        assert_eq!(l.expression, "BSD-3-Clause");

        let free_form = tree(
            &[("/usr/share/doc/a/copyright", "Copyright 2000 A.\nYou may use it.\n")],
            &[],
        );
        assert_eq!(package_license(&pkg("a"), &free_form).unwrap(), None);

        // A doc directory linking to another directory of the same package is followed.
        let linked = tree(
            &[("/usr/share/doc/a-common/copyright", DEP5)],
            &[("/usr/share/doc/a", "a-common")],
        );
        assert_eq!(
            package_license(&pkg("a"), &linked).unwrap().unwrap().expression,
            "BSD-3-Clause"
        );
        // One linking into another package (not in this tree) declares nothing.
        let elsewhere = tree(&[], &[("/usr/share/doc/a", "a-common")]);
        assert_eq!(package_license(&pkg("a"), &elsewhere).unwrap(), None);
        // ...but names the package whose copyright stands for it (Debian Policy 12.5).
        assert_eq!(doc_link_target(&pkg("a"), &elsewhere).as_deref(), Some("a-common"));
        let absolute = tree(&[], &[("/usr/share/doc/a", "/usr/share/doc/a-common/")]);
        assert_eq!(doc_link_target(&pkg("a"), &absolute).as_deref(), Some("a-common"));
        let outside = tree(&[], &[("/usr/share/doc/a", "../../lib/a")]);
        assert_eq!(doc_link_target(&pkg("a"), &outside), None);
        assert_eq!(doc_link_target(&pkg("a"), &own), None);
        assert_eq!(package_license(&pkg("a"), &FileTree::new()).unwrap(), None);
    }
}
