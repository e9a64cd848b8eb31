//! A kernel's modules: indexed by name, and the image's selection closed under each module's
//! `.modinfo` `depends=` (and `softdep=` `pre:` modules, which must load first), in load order.
//!
//! Debian ships no `modules.dep`, so dependencies come from the modules themselves; only the
//! selected modules are read, so indexing 4000 modules costs only their paths. A decompressed
//! module is kept in the content cache under the sha256 of the compressed one
//! ([`DECOMPRESSED_MODULE_REFS`]), so a rebuild does not decompress it again.

use super::kernel::{Kernel, KernelError};
use super::parallel::map_in_order;
use crate::definition::ImageDefinition;
use crate::elf;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use uvmkit_fetch::cache::{ContentCache, Sha256Digest};
use uvmkit_filetree::{FileData, FileTree, NodeKind, TreePath};

/// The content cache's references from a compressed module's sha256 to the decompressed one.
pub const DECOMPRESSED_MODULE_REFS: &str = "module-decompressed-v1";

/// The canonical module name: `-` and `_` are interchangeable in module names.
pub fn normalize_module_name(name: &str) -> String {
    name.replace('-', "_")
}

/// The modules `def` loads with `kernel` (whose modules are in `tree`): those its kernel
/// features list, then `[kernel] modules`, with their dependencies; decompressed modules are
/// taken from and kept in `cache`.
pub(super) fn select_modules(
    def: &ImageDefinition,
    kernel: &Kernel,
    tree: &FileTree,
    cache: &ContentCache,
) -> Result<ModuleSelection, KernelError> {
    let index = ModuleIndex::from_tree(tree, &kernel.release)?;
    let mut wanted: Vec<(String, String)> = Vec::new();
    for feature in &def.kernel_features {
        wanted.extend(
            feature
                .modules
                .load
                .iter()
                .map(|m| (m.clone(), format!("kernel-config/{}.toml", feature.name))),
        );
    }
    wanted.extend(
        def.kernel
            .modules
            .iter()
            .map(|m| (m.clone(), "[kernel] modules".to_string())),
    );
    index.select(&wanted, Some(cache))
}

/// A kernel's modules, by canonical name.
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    /// The kernel release the modules belong to.
    pub release: String,
    /// Where the modules are in the kernel's files: `lib/modules/RELEASE` or, merged into
    /// /usr, `usr/lib/modules/RELEASE`.
    root: TreePath,
    modules: BTreeMap<String, (TreePath, FileData)>,
    builtin: BTreeSet<String>,
}

/// One module to load, with the modules that must be loaded before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedModule {
    /// Canonical name.
    pub name: String,
    /// Path relative to `/lib/modules/RELEASE/`.
    pub path: String,
    /// Canonical names of the modules it needs first.
    pub depends: Vec<String>,
    /// Its contents.
    pub data: FileData,
}

/// The modules an image loads, in a valid load order (dependencies first), and the
/// requested ones that are built into the kernel.
#[derive(Debug, Clone, Default)]
pub struct ModuleSelection {
    /// Modules in load order.
    pub modules: Vec<SelectedModule>,
    /// Requested modules the kernel has built in (nothing to load).
    pub builtin: Vec<String>,
}

impl ModuleIndex {
    /// Indexes the modules under `lib/modules/RELEASE/` of `tree`, or `usr/lib/modules/RELEASE/`
    /// where the package is merged into /usr (Debian 13). Only paths are read.
    pub fn from_tree(tree: &FileTree, release: &str) -> Result<ModuleIndex, KernelError> {
        let Some(root) = [format!("/lib/modules/{release}"), format!("/usr/lib/modules/{release}")]
            .iter()
            .map(|p| TreePath::new(p).unwrap())
            .find(|p| tree.contains(p))
        else {
            return Err(KernelError::NoKernel(format!(
                "no /lib/modules/{release} or /usr/lib/modules/{release} directory for the kernel's modules"
            )));
        };
        let mut modules = BTreeMap::new();
        let mut builtin = BTreeSet::new();
        for (path, node) in tree.descendants(&root) {
            let name = path.file_name();
            if name == "modules.builtin" && path.parent().as_ref() == Some(&root) {
                if let NodeKind::File(data) = &node.kind {
                    let text = data.read_all().map_err(|e| KernelError::BadModule {
                        path: path.to_string(),
                        message: e.to_string(),
                    })?;
                    for line in String::from_utf8_lossy(&text).lines() {
                        let file = line.rsplit('/').next().unwrap_or(line);
                        if let Some(stem) = file.strip_suffix(".ko") {
                            builtin.insert(normalize_module_name(stem));
                        }
                    }
                }
                continue;
            }
            let stem = name
                .strip_suffix(".ko")
                .or_else(|| name.strip_suffix(".ko.xz"))
                .or_else(|| name.strip_suffix(".ko.zst"));
            if let (Some(stem), NodeKind::File(data)) = (stem, &node.kind) {
                modules.insert(normalize_module_name(stem), (path.clone(), data.clone()));
            }
        }
        Ok(ModuleIndex {
            release: release.to_string(),
            root,
            modules,
            builtin,
        })
    }

    /// Number of loadable modules.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    /// True when the kernel has no loadable modules.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// Selects `requested` (name, who wants it) and everything they depend on, in load order;
    /// decompressed modules are taken from and kept in `cache` when there is one.
    pub fn select(
        &self,
        requested: &[(String, String)],
        cache: Option<&ContentCache>,
    ) -> Result<ModuleSelection, KernelError> {
        let mut selection = ModuleSelection::default();
        let mut depends: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut stored: BTreeMap<String, (TreePath, FileData)> = BTreeMap::new();
        let mut queue: Vec<(String, String)> = requested
            .iter()
            .map(|(n, w)| (normalize_module_name(n), w.clone()))
            .collect();
        // In waves: the modules named so far are decompressed and read on several threads,
        // then their dependencies make the next wave.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        while !queue.is_empty() {
            let mut wave: Vec<(String, &(TreePath, FileData))> = Vec::new();
            while let Some((name, wanted_by)) = queue.pop() {
                if depends.contains_key(&name)
                    || selection.builtin.contains(&name)
                    || wave.iter().any(|(n, _)| *n == name)
                {
                    continue;
                }
                let Some(module) = self.modules.get(&name) else {
                    if self.builtin.contains(&name) {
                        selection.builtin.push(name);
                        continue;
                    }
                    return Err(KernelError::UnknownModule {
                        module: name,
                        wanted_by,
                        release: self.release.clone(),
                    });
                };
                wave.push((name, module));
            }
            let read = map_in_order(&wave, threads, |(_, (path, data))| {
                let (path, data, bytes) = decompressed_module(path, data, cache)?;
                let dependencies = module_dependencies(&path, &bytes)?;
                Ok::<_, KernelError>((path, data, dependencies))
            });
            for ((name, _), read) in wave.into_iter().zip(read) {
                let (path, data, (hard, soft)) = read?;
                stored.insert(name.clone(), (path, data));
                let mut deps = hard.clone();
                for dep in &hard {
                    queue.push((dep.clone(), format!("module {name}")));
                }
                // Soft dependencies may name aliases (`crct10dif` for a crypto algorithm)
                // rather than modules, and modprobe treats them as optional: take the ones
                // that exist.
                for dep in soft {
                    if self.modules.contains_key(&dep) && !deps.contains(&dep) {
                        queue.push((dep.clone(), format!("module {name} (soft dependency)")));
                        deps.push(dep);
                    }
                }
                deps.sort();
                depends.insert(name, deps);
            }
        }
        // Drop dependencies on built-in modules: nothing to wait for.
        for deps in depends.values_mut() {
            deps.retain(|d| !selection.builtin.contains(d));
        }
        for name in load_order(&depends) {
            let (path, data) = stored.remove(&name).expect("every selected module was read");
            let rel = path
                .as_str()
                .strip_prefix(&format!("{}/", self.root.as_str()))
                .unwrap_or(path.as_str());
            selection.modules.push(SelectedModule {
                name: name.clone(),
                path: rel.to_string(),
                depends: depends[&name].clone(),
                data,
            });
        }
        selection.builtin.sort();
        selection.builtin.dedup();
        Ok(selection)
    }
}

/// The largest a decompressed module may be. The biggest module of Debian's 6.12 kernel is a
/// few MiB; a "module" that expands past this is refused rather than filling memory.
const MAX_MODULE_BYTES: u64 = 64 << 20;

/// A module as the image stores it: uncompressed. Debian 13 ships `.ko.xz` (kernel
/// `CONFIG_MODULE_COMPRESS_XZ`); the initrd is compressed as a whole, so compressing each module
/// too would only cost boot time, and the init can then load every module with
/// `finit_module` without the kernel's in-kernel decompression. Returns its path, where its
/// bytes are kept and the bytes themselves (read once, for `.modinfo`).
fn decompressed_module(
    path: &TreePath,
    data: &FileData,
    cache: Option<&ContentCache>,
) -> Result<(TreePath, FileData, Vec<u8>), KernelError> {
    let name = path.as_str();
    let Some((stem, compression)) = [".xz", ".zst", ".gz"].iter().find_map(|suffix| {
        let stem = name.strip_suffix(suffix)?;
        Some((stem, uvmkit_debian::compression::Compression::from_name(name)?))
    }) else {
        let bytes = data.read_all().map_err(|e| KernelError::BadModule {
            path: name.to_string(),
            message: e.to_string(),
        })?;
        return Ok((path.clone(), data.clone(), bytes));
    };
    let bad = |message: String| KernelError::BadModule {
        path: name.to_string(),
        message,
    };
    let stem = TreePath::new(stem).map_err(|e| bad(e.to_string()))?;
    // Only a module whose sha256 was checked can name its decompressed form.
    let cached = cache.zip(data.known_sha256().map(hex::encode));
    if let Some((cache, key)) = &cached {
        if let Some((decompressed, bytes)) = cached_decompressed(cache, key) {
            return Ok((stem, decompressed, bytes));
        }
    }
    let compressed = data.read_all().map_err(|e| bad(e.to_string()))?;
    let mut bytes = Vec::new();
    compression
        .decoder(&compressed[..])
        .map_err(|e| bad(e.to_string()))?
        .take(MAX_MODULE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("cannot decompress: {e}")))?;
    if bytes.len() as u64 > MAX_MODULE_BYTES {
        return Err(bad(format!(
            "expands to more than {} MiB; this is not a kernel module",
            MAX_MODULE_BYTES >> 20
        )));
    }
    if let Some((cache, key)) = &cached {
        // A cache that cannot be written only costs the next build time.
        let kept = cache
            .put_bytes(&bytes, None)
            .and_then(|digest| cache.set_ref(DECOMPRESSED_MODULE_REFS, key, &digest).map(|()| digest));
        match kept {
            Ok(digest) => {
                let size = bytes.len() as u64;
                let kept = FileData::checked_host_file(cache.path_of(&digest), size, digest.0);
                return Ok((stem, kept, bytes));
            }
            Err(e) => log::debug!("not keeping the decompressed {name}: {e}"),
        }
    }
    Ok((stem, FileData::inline(bytes.clone()), bytes))
}

/// The decompressed module the cache holds for the compressed one with sha256 `key`, and its
/// bytes, when it is there and checks out.
fn cached_decompressed(cache: &ContentCache, key: &str) -> Option<(FileData, Vec<u8>)> {
    let digest: Sha256Digest = cache.get_ref(DECOMPRESSED_MODULE_REFS, key).ok()??;
    let bytes = cache.read_verified(&digest).ok()??;
    let data = FileData::checked_host_file(cache.path_of(&digest), bytes.len() as u64, digest.0);
    Some((data, bytes))
}

/// `depends=` names and `softdep=` `pre:` names from a module's `.modinfo` section.
fn module_dependencies(path: &TreePath, bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), KernelError> {
    let bad = |message: String| KernelError::BadModule {
        path: path.to_string(),
        message,
    };
    let modinfo = elf::section(bytes, ".modinfo")
        .map_err(|e| bad(e.to_string()))?
        .ok_or_else(|| bad("no .modinfo section".into()))?;
    Ok(parse_modinfo_dependencies(&modinfo))
}

/// Dependencies named in `.modinfo` text (`key=value` strings separated by NULs): the hard
/// ones (`depends=`) and the soft ones that must load first (`softdep=` `pre:`).
pub fn parse_modinfo_dependencies(modinfo: &[u8]) -> (Vec<String>, Vec<String>) {
    let mut deps = Vec::new();
    let mut soft = Vec::new();
    for field in modinfo.split(|&b| b == 0) {
        let field = String::from_utf8_lossy(field);
        if let Some(list) = field.strip_prefix("depends=") {
            deps.extend(list.split(',').filter(|s| !s.is_empty()).map(normalize_module_name));
        } else if let Some(spec) = field.strip_prefix("softdep=") {
            // "pre: a b post: c": only `pre:` modules must be present before this one.
            let mut in_pre = false;
            for word in spec.split_whitespace() {
                match word {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    name if in_pre => soft.push(normalize_module_name(name)),
                    _ => {}
                }
            }
        }
    }
    deps.sort();
    deps.dedup();
    soft.sort();
    soft.dedup();
    (deps, soft)
}

/// A deterministic topological order: dependencies first, ties broken by name. Modules in a
/// dependency cycle (which the kernel would refuse anyway) come last, in name order.
pub fn load_order(depends: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut order = Vec::new();
    loop {
        let ready: Vec<String> = depends
            .iter()
            .filter(|(n, deps)| !done.contains(*n) && deps.iter().all(|d| done.contains(d) || !depends.contains_key(d)))
            .map(|(n, _)| n.clone())
            .collect();
        if ready.is_empty() {
            break;
        }
        for n in ready {
            done.insert(n.clone());
            order.push(n);
        }
    }
    order.extend(depends.keys().filter(|n| !done.contains(*n)).cloned());
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use uvmkit_filetree::Node;

    #[test]
    fn modinfo_depends_and_softdeps() {
        let info = b"license=GPL\0depends=mbcache,jbd2,crc16\0softdep=pre: crc32c post: foo-bar\0name=ext4\0";
        let (hard, soft) = parse_modinfo_dependencies(info);
        assert_eq!(hard, ["crc16", "jbd2", "mbcache"]);
        assert_eq!(soft, ["crc32c"]);
        assert!(parse_modinfo_dependencies(b"depends=\0").0.is_empty());
    }

    #[test]
    fn load_order_puts_dependencies_first() {
        let mut d = BTreeMap::new();
        d.insert("ext4".to_string(), vec!["jbd2".to_string(), "mbcache".to_string()]);
        d.insert("jbd2".to_string(), vec![]);
        d.insert("mbcache".to_string(), vec![]);
        d.insert("a".to_string(), vec!["b".to_string()]);
        d.insert("b".to_string(), vec!["a".to_string()]);
        assert_eq!(load_order(&d), ["jbd2", "mbcache", "ext4", "a", "b"]);
    }

    /// A relocatable ELF object with `info` as its `.modinfo` section, as `kbuild` makes one.
    fn module_object(info: &[u8]) -> Vec<u8> {
        use object::write::Object;
        let mut obj = Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::X86_64,
            object::Endianness::Little,
        );
        let section = obj.add_section(Vec::new(), b".modinfo".to_vec(), object::SectionKind::ReadOnlyData);
        obj.append_section_data(section, info, 1);
        obj.write().unwrap()
    }

    fn xz(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        liblzma::read::XzEncoder::new(bytes, 6).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn xz_compressed_modules_are_stored_uncompressed_with_their_dependencies() {
        let release = "6.12.0-x";
        let mut tree = FileTree::new();
        let dir = TreePath::new(&format!("/lib/modules/{release}/kernel/net")).unwrap();
        tree.mkdir_all(&dir).unwrap();
        let a = module_object(b"name=xt_tcpudp\0depends=x_tables\0");
        let b = module_object(b"name=x_tables\0depends=\0");
        for (name, bytes) in [("xt_tcpudp.ko.xz", &a), ("x_tables.ko.xz", &b)] {
            tree.insert(&dir.join(name).unwrap(), Node::file(FileData::inline(xz(bytes)), 0o644))
                .unwrap();
        }
        let index = ModuleIndex::from_tree(&tree, release).unwrap();
        let selection = index
            .select(&[("xt-tcpudp".into(), "feature containers".into())], None)
            .unwrap();
        let got: Vec<(&str, &str)> = selection
            .modules
            .iter()
            .map(|m| (m.name.as_str(), m.path.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("x_tables", "kernel/net/x_tables.ko"),
                ("xt_tcpudp", "kernel/net/xt_tcpudp.ko")
            ]
        );
        assert_eq!(selection.modules[1].data.read_all().unwrap(), a);
        assert_eq!(selection.modules[1].depends, ["x_tables"]);
    }

    #[test]
    fn a_module_that_expands_without_bound_is_refused() {
        let release = "6.12.0-x";
        let mut tree = FileTree::new();
        let dir = TreePath::new(&format!("/lib/modules/{release}")).unwrap();
        tree.mkdir_all(&dir).unwrap();
        let bomb = xz(&vec![0u8; (MAX_MODULE_BYTES + 1) as usize]);
        tree.insert(
            &dir.join("bomb.ko.xz").unwrap(),
            Node::file(FileData::inline(bomb), 0o644),
        )
        .unwrap();
        let index = ModuleIndex::from_tree(&tree, release).unwrap();
        let e = index
            .select(&[("bomb".into(), "test".into())], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bomb.ko.xz") && e.contains("64 MiB"), "{e}");
    }

    #[test]
    fn unknown_module_is_named() {
        let mut tree = FileTree::new();
        tree.mkdir_all(&TreePath::new("/lib/modules/6.1.0-x").unwrap()).unwrap();
        let index = ModuleIndex::from_tree(&tree, "6.1.0-x").unwrap();
        let e = index
            .select(&[("nope".into(), "target qemu".into())], None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"nope\"") && e.contains("target qemu") && e.contains("6.1.0-x"),
            "{e}"
        );
    }
}
