//! Resolving an image's inputs: the only stage that touches the network.
//!
//! Debian's signed `InRelease` is fetched and verified against the archive keyring
//! ([`archive`]); the requested packages are chosen, from the lock or by resolving them with
//! their dependencies ([`choose`], [`lock`]); every `.deb` is downloaded into the
//! content-addressed cache and verified ([`fetch`]), and unpacked once into per-file blobs
//! with a manifest ([`unpack`]), so a warm build neither downloads, decompresses nor parses
//! the archive again. Then the kernel ([`kernel`]) and its modules ([`modules`]), the boot
//! loaders' files ([`boot_files`]) and the packages' licenses ([`licenses`]) are taken from
//! the unpacked trees (the signed shim chain checks that the kernel is signed). [`bundle`] carries all of it, with the signed indexes it was verified against, to a machine without a network, and
//! [`outdated`] says which pinned packages the archives have newer versions of.

pub mod archive;
pub mod boot_files;
pub mod bundle;
pub mod choose;
pub mod error;
mod fetch;
pub mod host_directory;
pub mod init;
pub mod kernel;
mod licenses;
pub mod lock;
mod mirror;
pub mod modules;
pub mod outdated;
pub mod package;
mod parallel;
pub mod sources;
pub mod unpack;

pub use boot_files::{
    BootFiles, IsolinuxFiles, ShimChain, ISOLINUX_PACKAGES, SHIM_CHAIN_PACKAGES, STUB_PACKAGE, STUB_PATH,
};
pub use error::InputError;
pub use init::INIT_BINARY;
pub use kernel::Kernel;
pub use modules::ModuleSelection;
pub use package::{FetchedPackage, PackageFiles, Role};
pub use sources::{InputOptions, LockUse};

use crate::definition::ImageDefinition;
use licenses::LicenseCollector;
use sources::InputSources;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use unpack::PackageError;
use uvmkit_debian::copyright::DeclaredLicense;
use uvmkit_fetch::mirror::{ArchiveHost, MirrorSource};
use uvmkit_filetree::{FileData, FileTree, NodeKind, TreePath};

/// Everything a build needs, fetched and verified.
pub struct ResolvedInputs {
    /// The mirrors used (release, security) and where they came from; empty when nothing had
    /// to be fetched (a current lock pinned the packages and the cache held them all), so no
    /// mirror was looked up.
    pub mirrors: Vec<(ArchiveHost, MirrorSource)>,
    /// Every package fetched, sorted by name.
    pub packages: Vec<FetchedPackage>,
    /// The license each package declares in a machine-readable `copyright` file, by name;
    /// packages without one are absent.
    pub licenses: BTreeMap<String, DeclaredLicense>,
    /// The `[[packages]]` entries' files.
    pub requested: Vec<PackageFiles>,
    /// All fetched packages' files merged (libraries are looked up here).
    pub universe: FileTree,
    /// The package each non-directory entry of `universe` came from (for `uvmkit inspect`).
    pub owners: BTreeMap<TreePath, String>,
    /// The kernel.
    pub kernel: Kernel,
    /// Modules to load, in order.
    pub modules: ModuleSelection,
    /// The systemd-boot EFI stub.
    pub uki_stub: FileData,
    /// ISOLINUX files, when an ISO is built.
    pub isolinux: Option<IsolinuxFiles>,
    /// Debian's signed shim, MOK manager and GRUB, when disk images or the ISO boot through
    /// them (`[boot] loader = "shim"`).
    pub shim_chain: Option<ShimChain>,
    /// Bytes downloaded in this run.
    pub downloaded_bytes: u64,
}

/// The unpacked packages, sorted by what they are for.
#[derive(Default)]
struct UnpackedPackages {
    /// Requested packages and their dependencies, merged.
    universe: FileTree,
    /// The package of each non-directory entry of `universe`.
    owners: BTreeMap<TreePath, String>,
    /// The requested packages, each on its own.
    requested: Vec<PackageFiles>,
    /// The kernel packages, merged.
    kernel: FileTree,
    /// Each boot loader package, by name.
    loaders: BTreeMap<String, FileTree>,
    /// What each package declares.
    licenses: LicenseCollector,
}

/// Whether [`resolve`] makes sure every package's `.deb` is in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebFiles {
    /// Every `.deb` is checked in the cache and fetched when missing or damaged (`uvmkit
    /// fetch`, and the bundles made from its cache, carry them), and every unpacked file is
    /// hashed again.
    Cached,
    /// Only the `.deb`s of packages whose unpacked files are not in the cache intact: a build
    /// reads the unpacked files, never a `.deb` it unpacked before, and hashes again only the
    /// unpacked files that changed since they were last hashed.
    ToUnpack,
}

/// Fetches, verifies and unpacks everything `def` needs. The Debian mirror is looked up only
/// when something has to be fetched: not when a current lock pins the packages and the cache
/// holds them all.
pub fn resolve(
    def: &ImageDefinition,
    base_dir: &Path,
    opts: &InputOptions,
    debs: DebFiles,
) -> Result<ResolvedInputs, InputError> {
    let src = InputSources::open(def, base_dir, opts)?;
    let packages = choose::choose_packages(&src)?;
    let (unpacked, downloaded_bytes) = unpack_all(&src, &packages, debs)?;

    let (kernel, module_tree) = match &def.kernel.local {
        None => (kernel::find_kernel(&unpacked.kernel)?, unpacked.kernel),
        Some(local) => kernel::local_kernel(local, base_dir)?,
    };
    kernel::check_kernel_config(def, &kernel)?;
    let modules = modules::select_modules(def, &kernel, &module_tree, &src.cache)?;
    let BootFiles {
        uki_stub,
        isolinux,
        shim_chain,
    } = boot_files::boot_files(&unpacked.loaders, def.formats.contains(&crate::definition::Format::Iso))?;
    if shim_chain.is_some() {
        let package = def.kernel.local.is_none().then_some(def.kernel.package.as_str());
        boot_files::check_kernel_signed(&kernel, package)?;
    }
    Ok(ResolvedInputs {
        mirrors: src.mirror.into_used(),
        packages,
        licenses: unpacked.licenses.finish(),
        requested: unpacked.requested,
        universe: unpacked.universe,
        owners: unpacked.owners,
        kernel,
        modules,
        uki_stub,
        isolinux,
        shim_chain,
        downloaded_bytes,
    })
}

/// Every archive's signed `InRelease` and `Packages` files for `def`, verified as a resolution
/// verifies them (signature, suite, `Valid-Until`, `Date`, sha256): what a bundle carries so
/// that an offline build can check its packages against Debian's signature again. A recent
/// cached index is reused; with `opts.offline`, only the cached one.
pub fn signed_index(
    def: &ImageDefinition,
    base_dir: &Path,
    opts: &InputOptions,
) -> Result<archive::ArchiveIndex, InputError> {
    archive::load_index(&InputSources::open(def, base_dir, opts)?)
}

/// "mirror from X" (and "security archive from Y") for people, or `None` when no mirror was
/// needed.
pub fn describe_mirrors(mirrors: &[(ArchiveHost, MirrorSource)]) -> Option<String> {
    let parts: Vec<String> = mirrors
        .iter()
        .map(|(host, m)| match host {
            ArchiveHost::Release => format!("mirror from {}", m.origin),
            ArchiveHost::Security => format!("security archive from {}", m.origin),
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Refuses setuid and setgid files and device nodes that a `[[packages]]` entry for `name`
/// would take into the image, unless that entry sets `allow_setuid_and_devices`.
fn refuse_privileged(def: &ImageDefinition, name: &str, tree: &FileTree) -> Result<(), PackageError> {
    use uvmkit_filetree::NodeKind;
    for selection in def
        .packages
        .iter()
        .filter(|p| p.name == name && !p.allow_setuid_and_devices)
    {
        for (path, node) in tree.iter() {
            let what = match node.kind {
                NodeKind::CharDevice { .. } => "a character device".to_string(),
                NodeKind::BlockDevice { .. } => "a block device".to_string(),
                NodeKind::File(_) | NodeKind::HardLink(_) if node.mode & 0o6000 != 0 => {
                    let bit = if node.mode & 0o4000 != 0 { "setuid" } else { "setgid" };
                    format!("{bit} (mode {:o})", node.mode & 0o7777)
                }
                _ => continue,
            };
            let path = path.to_string();
            if selection.takes(&path) {
                return Err(PackageError::Privileged {
                    package: name.to_string(),
                    path,
                    what,
                });
            }
        }
    }
    Ok(())
}

/// Every package's files, sorted by role in package order, and the bytes downloaded: taken
/// from the cache where the package was unpacked before (each file checked against its
/// sha256 as `debs` says, on up to `jobs` threads), else unpacked from its `.deb`, fetched
/// when missing.
fn unpack_all(
    src: &InputSources,
    packages: &[FetchedPackage],
    debs: DebFiles,
) -> Result<(UnpackedPackages, u64), InputError> {
    let (cache, limit) = (&src.cache, src.def.debian.max_unpacked_size);
    let recheck = match debs {
        DebFiles::Cached => unpack::Recheck::Every,
        DebFiles::ToUnpack => unpack::Recheck::Changed,
    };
    let mut trees: Vec<Option<FileTree>> = parallel::map_in_order(packages, src.opts.jobs, |pkg| {
        unpack::cached_tree(pkg, cache, limit, recheck)
    })
    .into_iter()
    .collect::<Result<_, _>>()?;
    // The `.deb`s to have in the cache: every one, or those of the packages to unpack.
    let needed: Vec<usize> = (0..packages.len())
        .filter(|&i| debs == DebFiles::Cached || trees[i].is_none())
        .collect();
    let needed_packages: Vec<FetchedPackage> = needed.iter().map(|&i| packages[i].clone()).collect();
    let (deb_paths, downloaded_bytes) = fetch::fetch_packages(src, &needed_packages)?;
    let to_unpack: Vec<(usize, &PathBuf)> = needed
        .into_iter()
        .zip(&deb_paths)
        .filter(|&(i, _)| trees[i].is_none())
        .collect();
    let unpacked = parallel::map_in_order(&to_unpack, src.opts.jobs, |&(i, deb_path)| {
        unpack::unpacked_tree(&packages[i], deb_path, cache, limit)
    });
    for ((i, _), tree) in to_unpack.into_iter().zip(unpacked) {
        trees[i] = Some(tree?);
    }

    let mut out = UnpackedPackages::default();
    for (pkg, tree) in packages.iter().zip(trees) {
        let tree = tree.expect("every package has its tree");
        out.licenses.add(pkg, &tree)?;
        let merge_err = |source| PackageError::Merge {
            package: pkg.name.clone(),
            source,
        };
        match pkg.role {
            Role::Kernel => out.kernel.merge(&tree).map_err(merge_err)?,
            Role::Bootloader => {
                out.loaders.insert(pkg.name.clone(), tree);
            }
            Role::Requested | Role::Dependency => {
                out.universe.merge(&tree).map_err(merge_err)?;
                for (path, _) in tree.iter().filter(|(_, n)| n.kind != NodeKind::Directory) {
                    out.owners.entry(path.clone()).or_insert_with(|| pkg.name.clone());
                }
                if pkg.role == Role::Requested {
                    refuse_privileged(src.def, &pkg.name, &tree)?;
                    out.requested.push(PackageFiles {
                        name: pkg.name.clone(),
                        version: pkg.version.clone(),
                        tree,
                    });
                }
            }
        }
    }
    Ok((out, downloaded_bytes))
}
