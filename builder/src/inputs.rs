//! Resolving an image's inputs: the only stage that touches the network.
//!
//! Debian's signed `InRelease` is fetched and verified against the archive keyring; the
//! `Packages` indexes it lists are fetched and checked by sha256; the requested packages are
//! resolved with their dependencies; every `.deb` is downloaded into the content-addressed
//! cache, verified, and unpacked once into per-file blobs with a manifest, so a warm build
//! neither downloads, decompresses nor parses the archive again.

use crate::assemble::PackageFiles;
use crate::config::{Format, ImageDefinition};
use crate::kernel::{self, Kernel, KernelError, ModuleIndex, ModuleSelection};
use crate::kernelconfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use uvmkit_debian::control::{Package, PackageIndex};
use uvmkit_debian::copyright::{self, DeclaredLicense};
use uvmkit_debian::deb::{self, DebEntryKind};
use uvmkit_debian::release::Release;
use uvmkit_debian::resolve::{Request, Resolver};
use uvmkit_debian::signature::{verify_inrelease, Keyring};
use uvmkit_fetch::cache::{ContentCache, Sha256Digest};
use uvmkit_fetch::http::{Download, Fetcher, Progress};
use uvmkit_fetch::mirror::{discover_debian_mirror, MirrorSource};
use uvmkit_filetree::{FileData, FileTree, Node, NodeKind, TreePath};

/// How long a fetched archive index is reused before it is fetched again (unless
/// `--refresh`); a lock file pins exact versions regardless.
pub const INDEX_MAX_AGE: Duration = Duration::from_secs(6 * 3600);

/// The package that provides the UKI stub.
pub const STUB_PACKAGE: &str = "systemd-boot-efi";
/// Where the stub lies in that package.
pub const STUB_PATH: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// The packages that provide BIOS boot for the ISO.
pub const ISOLINUX_PACKAGES: [&str; 2] = ["isolinux", "syslinux-common"];

/// Options of the inputs stage.
#[derive(Debug, Clone)]
pub struct InputOptions {
    /// The content-addressed cache directory.
    pub cache_dir: PathBuf,
    /// Refuse all network access.
    pub offline: bool,
    /// Fetch the archive index even if a recent one is cached.
    pub refresh: bool,
    /// No progress bars.
    pub quiet: bool,
    /// Parallel downloads.
    pub jobs: usize,
    /// The image's lock file (`lock::lock_path` of the definition); `None`: no lock is read.
    pub lock: Option<PathBuf>,
    /// `--locked`: the lock must exist and match a fresh resolution.
    pub locked: bool,
}

/// Why the inputs could not be resolved.
#[derive(Debug)]
pub enum InputError {
    /// Network, cache or checksum failure.
    Fetch(uvmkit_fetch::FetchError),
    /// The archive's signature, index or a package is bad.
    Archive(String),
    /// Dependency resolution failed.
    Resolve(String),
    /// The kernel is unusable or lacks options the image needs.
    Kernel(String),
    /// A local file could not be read.
    Io(String),
    /// The lock file is unreadable, missing or stale (`--locked`).
    Lock(crate::lock::LockError),
    /// An offline build lacks these inputs (one line each).
    Offline(Vec<String>),
    /// Something has to be fetched (`needed`), and no usable Debian mirror is configured.
    Mirror {
        /// What has to be fetched, for people.
        needed: String,
        /// Why no mirror could be used (it says where one can be configured).
        error: uvmkit_fetch::FetchError,
    },
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::Fetch(e) => e.fmt(f),
            InputError::Archive(m) | InputError::Resolve(m) | InputError::Kernel(m) | InputError::Io(m) => f.write_str(m),
            InputError::Lock(e) => e.fmt(f),
            InputError::Offline(missing) => write!(
                f,
                "offline build: {} input(s) are not in the cache:\n  {}\nrun once without --offline, or build from a bundle (--bundle)",
                missing.len(),
                missing.join("\n  ")
            ),
            InputError::Mirror { needed, error } => write!(f, "{needed} must be fetched, but {error}"),
        }
    }
}

impl std::error::Error for InputError {}

impl From<uvmkit_fetch::FetchError> for InputError {
    fn from(e: uvmkit_fetch::FetchError) -> Self {
        InputError::Fetch(e)
    }
}

impl From<crate::lock::LockError> for InputError {
    fn from(e: crate::lock::LockError) -> Self {
        InputError::Lock(e)
    }
}

impl From<KernelError> for InputError {
    fn from(e: KernelError) -> Self {
        InputError::Kernel(e.to_string())
    }
}

/// Why a package is part of the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Named in `[[packages]]`.
    Requested,
    /// Pulled in by a requested package's dependencies.
    Dependency,
    /// The kernel.
    Kernel,
    /// The UKI stub or ISO boot loader.
    Bootloader,
}

/// A downloaded and verified `.deb`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedPackage {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture.
    pub architecture: String,
    /// Pool path in the archive.
    pub filename: String,
    /// sha256 of the `.deb`.
    pub sha256: String,
    /// Size of the `.deb`.
    pub size: u64,
    /// Why it is here.
    pub role: Role,
    /// `requested`, or which package needed it.
    pub reason: String,
    /// Source package, maintainer, license-relevant fields (for the SBOM).
    pub source: Option<String>,
    /// Maintainer (the SBOM's supplier).
    pub maintainer: Option<String>,
    /// Homepage.
    pub homepage: Option<String>,
}

/// Everything a build needs, fetched and verified.
pub struct ResolvedInputs {
    /// The mirror and where it came from; `None` when nothing had to be fetched (a current
    /// lock pinned the packages and the cache held them all), so no mirror was looked up.
    pub mirror: Option<MirrorSource>,
    /// Every package fetched, sorted by name.
    pub packages: Vec<FetchedPackage>,
    /// The license each package declares in a machine-readable `copyright` file, by name;
    /// packages without one are absent.
    pub licenses: BTreeMap<String, DeclaredLicense>,
    /// The `[[packages]]` entries' files.
    pub requested: Vec<PackageFiles>,
    /// All fetched packages' files merged (libraries are looked up here).
    pub universe: FileTree,
    /// The kernel.
    pub kernel: Kernel,
    /// Modules to load, in order.
    pub modules: ModuleSelection,
    /// The systemd-boot EFI stub.
    pub uki_stub: FileData,
    /// ISOLINUX files, when an ISO is built.
    pub isolinux: Option<IsolinuxFiles>,
    /// Bytes downloaded in this run.
    pub downloaded_bytes: u64,
}

/// The BIOS boot files of the ISO.
#[derive(Debug, Clone)]
pub struct IsolinuxFiles {
    /// `isolinux.bin`.
    pub isolinux_bin: FileData,
    /// `isohdpfx.bin`, the isohybrid MBR code.
    pub isohdpfx: FileData,
    /// `ldlinux.c32`.
    pub ldlinux_c32: FileData,
}

/// The Debian mirror, looked up the first time something has to be fetched: a locked build
/// whose packages are all in the cache needs none configured.
struct MirrorLookup<'a> {
    /// The definition's `[debian] mirror`.
    explicit: Option<&'a str>,
    found: std::cell::OnceCell<MirrorSource>,
}

impl<'a> MirrorLookup<'a> {
    fn new(explicit: Option<&'a str>) -> Self {
        MirrorLookup {
            explicit,
            found: std::cell::OnceCell::new(),
        }
    }

    /// The mirror to fetch `needed` (said in the error when there is none) from.
    fn get(&self, needed: impl FnOnce() -> String) -> Result<&MirrorSource, InputError> {
        if let Some(m) = self.found.get() {
            return Ok(m);
        }
        let mirror = discover_debian_mirror(self.explicit).map_err(|error| InputError::Mirror {
            needed: needed(),
            error,
        })?;
        Ok(self.found.get_or_init(|| mirror))
    }

    /// The mirror, if it was needed.
    fn into_used(self) -> Option<MirrorSource> {
        self.found.into_inner()
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A verified archive index: the `Packages` files of every component, parsed only when a
/// resolution is not already cached for their digests.
struct ArchiveIndex {
    /// (component, blob path, sha256) of each `Packages.xz`.
    files: Vec<(String, PathBuf, String)>,
}

impl ArchiveIndex {
    fn parse(&self) -> Result<PackageIndex, InputError> {
        let mut merged: Option<PackageIndex> = None;
        for (component, path, _) in &self.files {
            let bad = |e: String| {
                InputError::Archive(format!(
                    "Packages index of {component} (cache blob {}): {e}",
                    path.display()
                ))
            };
            let xz = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let text =
                uvmkit_debian::compression::decompress_named("Packages.xz", &xz).map_err(|e| bad(e.to_string()))?;
            let index = PackageIndex::parse_bytes(&text).map_err(|e| bad(e.to_string()))?;
            match &mut merged {
                Some(m) => m.merge(index),
                None => merged = Some(index),
            }
        }
        Ok(merged.unwrap_or_default())
    }
}

fn load_index(
    def: &ImageDefinition,
    mirror: &MirrorLookup,
    cache: &ContentCache,
    fetcher: &Fetcher,
    opts: &InputOptions,
    base_dir: &Path,
) -> Result<ArchiveIndex, InputError> {
    let deb = &def.debian;
    let mirror = mirror.get(|| {
        let why = if opts.lock.is_none() {
            "no lock file is used"
        } else if opts.refresh {
            "--refresh resolves again"
        } else {
            "no current lock file pins the packages"
        };
        format!("the archive index of {} ({why})", deb.suite)
    })?;
    let base = mirror.url.trim_end_matches('/');
    let inrelease_url = format!("{base}/dists/{}/InRelease", deb.suite);
    let keyring = match &deb.keyring {
        Some(path) => {
            let path = base_dir.join(path);
            let bytes = std::fs::read(&path).map_err(|e| InputError::Io(format!("keyring {}: {e}", path.display())))?;
            Keyring::from_bytes(&bytes).map_err(|e| InputError::Archive(format!("keyring {}: {e}", path.display())))?
        }
        None => Keyring::debian_archive(),
    };
    // A recent InRelease from this URL is reused (always, offline); otherwise it is fetched.
    let cached = cache.get_ref("inrelease", &inrelease_url)?.and_then(|d| {
        let path = cache.path_of(&d);
        let age = std::fs::metadata(&path)
            .ok()?
            .modified()
            .ok()?
            .elapsed()
            .unwrap_or(Duration::MAX);
        let usable = opts.offline || (!opts.refresh && age < INDEX_MAX_AGE);
        usable.then(|| std::fs::read(&path).ok()).flatten()
    });
    let inrelease = match cached {
        Some(bytes) => bytes,
        None => {
            let bytes = fetcher.fetch_bytes(&inrelease_url)?;
            let digest = cache.put_bytes(&bytes, None)?;
            cache.set_ref("inrelease", &inrelease_url, &digest)?;
            // Reusing the blob later depends on its age: mark it as fetched now.
            let _ = File::options()
                .write(true)
                .open(cache.path_of(&digest))
                .and_then(|f| f.set_modified(SystemTime::now()));
            bytes
        }
    };
    let signed = verify_inrelease(&inrelease, &keyring).map_err(|e| {
        InputError::Archive(format!(
            "{inrelease_url}: {e}; the mirror may be tampered with, or the keyring does not match this archive"
        ))
    })?;
    let release = Release::parse(&signed).map_err(|e| InputError::Archive(format!("{inrelease_url}: {e}")))?;
    let mut files = Vec::new();
    for component in &deb.components {
        let rel_path = format!("{component}/binary-{}/Packages.xz", deb.architecture);
        let entry = release.sha256_of(&rel_path).ok_or_else(|| {
            InputError::Archive(format!(
                "{inrelease_url} lists no {rel_path}; check [debian] suite, components and architecture"
            ))
        })?;
        let fetch_path = release
            .fetch_path(&rel_path)
            .map_err(|e| InputError::Archive(e.to_string()))?;
        let url = format!("{base}/dists/{}/{fetch_path}", deb.suite);
        let expected: Sha256Digest = entry
            .sha256
            .parse()
            .map_err(|_| InputError::Archive(format!("{inrelease_url}: bad sha256 for {rel_path}")))?;
        let blob = fetcher.fetch_to_cache(&url, &expected, Some(entry.size), cache, &Progress::hidden())?;
        files.push((component.clone(), blob, entry.sha256.clone()));
    }
    Ok(ArchiveIndex { files })
}

/// The packages to fetch: the definition's with their dependencies, the kernel (following its
/// `linux-image-*` dependencies only: the rest serve installing a kernel on a Debian system),
/// and the boot loaders the formats need (without dependencies: only their files are used).
fn resolve_packages(def: &ImageDefinition, index: &PackageIndex) -> Result<Vec<FetchedPackage>, InputError> {
    let resolver = Resolver::new(index, &def.debian.architecture);
    let mut out: BTreeMap<String, FetchedPackage> = BTreeMap::new();
    let fetched = |p: &Package, role: Role, reason: String| FetchedPackage {
        name: p.name.clone(),
        version: p.version.to_string(),
        architecture: p.architecture.clone(),
        filename: p.filename.clone(),
        sha256: p.sha256.clone(),
        size: p.size,
        role,
        reason,
        source: Some(p.source.clone()).filter(|s| !s.is_empty()),
        maintainer: p.maintainer.clone(),
        homepage: p.homepage.clone(),
    };
    if !def.packages.is_empty() {
        let requests: Vec<Request> = def.packages.iter().map(|p| Request::new(p.name.clone())).collect();
        let resolution = resolver
            .resolve(&requests)
            .map_err(|e| InputError::Resolve(e.to_string()))?;
        for r in &resolution.packages {
            let role = if r.reason == "requested" {
                Role::Requested
            } else {
                Role::Dependency
            };
            out.insert(r.package.name.clone(), fetched(&r.package, role, r.reason.clone()));
        }
    }
    if def.kernel.path.is_none() {
        let mut queue = vec![(def.kernel.package.clone(), None, "kernel".to_string())];
        while let Some((name, constraint, reason)) = queue.pop() {
            let pkg = resolver.best(&name, constraint.as_ref()).ok_or_else(|| {
                InputError::Resolve(format!(
                    "kernel package {name} is not in {}/{}",
                    def.debian.suite,
                    def.debian.components.join(",")
                ))
            })?;
            for group in &pkg.depends {
                if let Some(rel) = group.iter().find(|r| r.name.starts_with("linux-image-")) {
                    queue.push((
                        rel.name.clone(),
                        rel.constraint.clone(),
                        format!("dependency of {}", pkg.name),
                    ));
                }
            }
            out.insert(pkg.name.clone(), fetched(pkg, Role::Kernel, reason));
        }
    }
    let mut loaders = vec![STUB_PACKAGE];
    if def.formats.contains(&Format::Iso) {
        loaders.extend(ISOLINUX_PACKAGES);
    }
    for name in loaders {
        let pkg = resolver
            .best(name, None)
            .ok_or_else(|| InputError::Resolve(format!("boot loader package {name} is not in {}", def.debian.suite)))?;
        out.entry(name.to_string())
            .or_insert_with(|| fetched(pkg, Role::Bootloader, "boot loader".into()));
    }
    Ok(out.into_values().collect())
}

/// Cache references from a `.deb`'s sha256 to the manifest of its unpacked files; the version
/// changes with the manifest's layout, so an older layout is never misread.
const MANIFEST_NAMESPACE: &str = "deb-tree-v2";

/// One node of an unpacked package, as its manifest in the cache records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ManifestEntry {
    path: String,
    mode: u32,
    uid: u32,
    gid: u32,
    #[serde(flatten)]
    kind: ManifestKind,
}

/// What a manifest entry is; a file's bytes are the cache blob named by its digest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum ManifestKind {
    Dir,
    File { sha256: String, size: u64 },
    Symlink { target: String },
    Hardlink { target: String },
    Char { major: u32, minor: u32 },
    Block { major: u32, minor: u32 },
    Fifo,
}

/// Unpacks `deb` into per-file blobs and returns its manifest.
fn unpack_to_cache(name: &str, deb_path: &Path, cache: &ContentCache) -> Result<Vec<ManifestEntry>, InputError> {
    let bad = |e: String| InputError::Archive(format!("package {name} ({}): {e}", deb_path.display()));
    let file = File::open(deb_path).map_err(|e| bad(e.to_string()))?;
    let mut entries = Vec::new();
    deb::unpack_data(BufReader::new(file), &mut |entry| {
        let kind = match entry.kind {
            DebEntryKind::Dir => ManifestKind::Dir,
            DebEntryKind::File { size, contents } => {
                let digest = cache.put_reader(contents, None).map_err(deb::DebError::sink)?;
                ManifestKind::File {
                    sha256: digest.to_string(),
                    size,
                }
            }
            DebEntryKind::Symlink(target) => ManifestKind::Symlink { target },
            DebEntryKind::HardLink(target) => ManifestKind::Hardlink {
                target: format!("/{}", target.as_str()),
            },
            DebEntryKind::CharDev { major, minor } => ManifestKind::Char { major, minor },
            DebEntryKind::BlockDev { major, minor } => ManifestKind::Block { major, minor },
            DebEntryKind::Fifo => ManifestKind::Fifo,
        };
        let path = format!("/{}", entry.path.as_str());
        entries.push(ManifestEntry {
            path,
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
            kind,
        });
        Ok(())
    })
    .map_err(|e| bad(e.to_string()))?;
    Ok(entries)
}

/// Builds a package's tree from its manifest; `None` when a blob it names is missing or has
/// the wrong size (the package is then unpacked again).
fn tree_from_manifest(entries: &[ManifestEntry], cache: &ContentCache) -> Result<Option<FileTree>, InputError> {
    let bad = |e: String| InputError::Archive(format!("cached package manifest: {e}"));
    let mut tree = FileTree::new();
    for entry in entries {
        let kind = match &entry.kind {
            ManifestKind::Dir => NodeKind::Directory,
            ManifestKind::File { sha256, size } => {
                let digest: Sha256Digest = sha256.parse().map_err(|_| bad(format!("bad digest {sha256}")))?;
                if !cache.get_checked(&digest, *size) {
                    return Ok(None);
                }
                NodeKind::File(FileData::HostFile {
                    path: cache.path_of(&digest),
                    size: *size,
                })
            }
            ManifestKind::Symlink { target } => NodeKind::Symlink(target.clone()),
            ManifestKind::Hardlink { target } => {
                NodeKind::HardLink(TreePath::new(target).map_err(|e| bad(e.to_string()))?)
            }
            ManifestKind::Char { major, minor } => NodeKind::CharDevice {
                major: *major,
                minor: *minor,
            },
            ManifestKind::Block { major, minor } => NodeKind::BlockDevice {
                major: *major,
                minor: *minor,
            },
            ManifestKind::Fifo => NodeKind::Fifo,
        };
        // Linux reports every symbolic link as 0777, whatever the archive says.
        let mode = if matches!(kind, NodeKind::Symlink(_)) {
            0o777
        } else {
            entry.mode
        };
        let path = TreePath::new(&entry.path).map_err(|e| bad(e.to_string()))?;
        tree.insert(
            &path,
            Node {
                kind,
                mode,
                uid: entry.uid,
                gid: entry.gid,
            },
        )
        .map_err(|e| bad(e.to_string()))?;
    }
    Ok(Some(tree))
}

/// The package's files, from the cache when it was unpacked before.
fn package_tree(pkg: &FetchedPackage, deb_path: &Path, cache: &ContentCache) -> Result<FileTree, InputError> {
    if let Some(digest) = cache.get_ref(MANIFEST_NAMESPACE, &pkg.sha256)? {
        if let Ok(bytes) = std::fs::read(cache.path_of(&digest)) {
            if let Ok(entries) = serde_json::from_slice::<Vec<ManifestEntry>>(&bytes) {
                if let Some(tree) = tree_from_manifest(&entries, cache)? {
                    return Ok(tree);
                }
            }
        }
        log::warn!(
            "the cached unpacked files of {} {} are incomplete; unpacking it again",
            pkg.name,
            pkg.version
        );
    }
    let entries = unpack_to_cache(&pkg.name, deb_path, cache)?;
    let manifest = serde_json::to_vec(&entries).expect("manifest serialises");
    let digest = cache.put_bytes(&manifest, None)?;
    cache.set_ref(MANIFEST_NAMESPACE, &pkg.sha256, &digest)?;
    tree_from_manifest(&entries, cache)?
        .ok_or_else(|| InputError::Archive(format!("package {}: unpacked files vanished from the cache", pkg.name)))
}

fn resolution_key(def: &ImageDefinition, index: &ArchiveIndex) -> String {
    let mut key = format!(
        "v1\narch={}\nkernel={}\nlocal-kernel={}\n",
        def.debian.architecture,
        def.kernel.package,
        def.kernel.path.is_some()
    );
    for (_, _, sha) in &index.files {
        key.push_str(&format!("index={sha}\n"));
    }
    for p in &def.packages {
        key.push_str(&format!("package={}\n", p.name));
    }
    key.push_str(&format!("iso={}\n", def.formats.contains(&Format::Iso)));
    sha256_hex(key.as_bytes())
}

/// The file of `tree` at `path`, or an error naming the package that should have had it.
fn file_in(tree: &FileTree, path: &str, package: &str) -> Result<FileData, InputError> {
    let tp = TreePath::new(path).expect("static path");
    let real = tree.resolve(&tp).unwrap_or(tp);
    match tree.get(&real).map(|n| &n.kind) {
        Some(NodeKind::File(d)) => Ok(d.clone()),
        _ => Err(InputError::Archive(format!("package {package} has no {path}"))),
    }
}

/// Resolves the packages from the archive index, from the cache when these index digests and
/// requests were resolved before.
fn resolve_from_index(
    def: &ImageDefinition,
    base_dir: &Path,
    mirror: &MirrorLookup,
    cache: &ContentCache,
    fetcher: &Fetcher,
    opts: &InputOptions,
) -> Result<Vec<FetchedPackage>, InputError> {
    let archive = load_index(def, mirror, cache, fetcher, opts, base_dir)?;
    let key = resolution_key(def, &archive);
    let cached: Option<Vec<FetchedPackage>> = cache
        .get_ref("resolution", &key)?
        .and_then(|d| std::fs::read(cache.path_of(&d)).ok())
        .and_then(|b| serde_json::from_slice(&b).ok());
    match cached {
        Some(p) => Ok(p),
        None => {
            let index = archive.parse()?;
            let packages = resolve_packages(def, &index)?;
            let digest = cache.put_bytes(&serde_json::to_vec(&packages).expect("serialises"), None)?;
            cache.set_ref("resolution", &key, &digest)?;
            Ok(packages)
        }
    }
}

/// The packages to build with: pinned by a current lock file (no archive index is fetched or
/// parsed), else resolved from the index. With `--locked`, a missing lock or one that differs
/// from a fresh resolution is an error naming the changes.
fn choose_packages(
    def: &ImageDefinition,
    base_dir: &Path,
    mirror: &MirrorLookup,
    cache: &ContentCache,
    fetcher: &Fetcher,
    opts: &InputOptions,
) -> Result<Vec<FetchedPackage>, InputError> {
    let Some(lock_path) = &opts.lock else {
        return resolve_from_index(def, base_dir, mirror, cache, fetcher, opts);
    };
    let lock = crate::lock::read(lock_path)?;
    let current = lock
        .as_ref()
        .filter(|l| l.resolution_inputs == crate::lock::resolution_inputs(def));
    match (lock.as_ref(), current) {
        (_, Some(lock)) if !opts.refresh => Ok(lock.packages.clone()),
        (None, _) if opts.locked => Err(crate::lock::LockError::Missing {
            path: lock_path.clone(),
        }
        .into()),
        (Some(lock), _) if opts.locked => {
            let fresh = resolve_from_index(def, base_dir, mirror, cache, fetcher, opts)?;
            let changes = crate::lock::drift(&lock.packages, &fresh);
            if changes.is_empty() {
                Ok(fresh)
            } else {
                Err(crate::lock::LockError::Drift {
                    path: lock_path.clone(),
                    changes,
                }
                .into())
            }
        }
        _ => resolve_from_index(def, base_dir, mirror, cache, fetcher, opts),
    }
}

/// Records `packages` in the image's lock file (unless `--locked`, or no lock is used);
/// returns whether the file changed. Call it after the build or fetch succeeded.
pub fn update_lock(
    def: &ImageDefinition,
    opts: &InputOptions,
    packages: &[FetchedPackage],
) -> Result<bool, InputError> {
    let Some(path) = opts.lock.as_ref().filter(|_| !opts.locked) else {
        return Ok(false);
    };
    let lock = crate::lock::LockFile {
        version: crate::lock::LOCK_VERSION,
        resolution_inputs: crate::lock::resolution_inputs(def),
        packages: packages.to_vec(),
    };
    Ok(crate::lock::write(path, &lock)?)
}

/// The cached `.deb` of each package (verified by sha256), downloading from the mirror only
/// the ones that are missing or damaged; returns their paths and the bytes downloaded.
fn fetch_packages(
    packages: &[FetchedPackage],
    mirror: &MirrorLookup,
    cache: &ContentCache,
    fetcher: &Fetcher,
    opts: &InputOptions,
) -> Result<(Vec<PathBuf>, u64), InputError> {
    let digests: Vec<Sha256Digest> = packages
        .iter()
        .map(|p| {
            p.sha256
                .parse()
                .map_err(|_| InputError::Archive(format!("package {}: bad sha256 {}", p.name, p.sha256)))
        })
        .collect::<Result<_, _>>()?;
    let present = verified_in_cache(cache, &digests, opts.jobs)?;
    let missing: Vec<usize> = (0..packages.len()).filter(|&i| !present[i]).collect();
    let describe = |i: &usize| {
        let p = &packages[*i];
        format!("{} {} ({}, sha256 {})", p.name, p.version, p.filename, p.sha256)
    };
    if missing.is_empty() {
        return Ok((digests.iter().map(|d| cache.path_of(d)).collect(), 0));
    }
    if opts.offline {
        return Err(InputError::Offline(missing.iter().map(describe).collect()));
    }
    let mirror = mirror.get(|| {
        let names: Vec<String> = missing
            .iter()
            .map(|&i| format!("{} {}", packages[i].name, packages[i].version))
            .collect();
        format!("{} package(s) not in the cache ({})", missing.len(), names.join(", "))
    })?;
    let base = mirror.url.trim_end_matches('/');
    let downloads: Vec<Download> = missing
        .iter()
        .map(|&i| Download {
            url: format!("{base}/{}", packages[i].filename),
            sha256: digests[i],
            size: Some(packages[i].size),
            label: format!("{} {}", packages[i].name, packages[i].version),
        })
        .collect();
    let progress = if opts.quiet {
        Progress::hidden()
    } else {
        Progress::bars()
    };
    let report = fetcher.fetch_many(&downloads, cache, opts.jobs, &progress)?;
    Ok((
        digests.iter().map(|d| cache.path_of(d)).collect(),
        report.downloaded_bytes,
    ))
}

/// Whether each blob is in the cache with its content intact (re-hashed, on up to `jobs`
/// threads); a damaged one is removed, so it counts as missing.
fn verified_in_cache(cache: &ContentCache, digests: &[Sha256Digest], jobs: usize) -> Result<Vec<bool>, InputError> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<bool, uvmkit_fetch::FetchError>>>> =
        digests.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, digests.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(d) = digests.get(i) else { break };
                let r = cache.get_verified(d).map(|p| p.is_some());
                *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            let r = m.into_inner().unwrap_or_else(|p| p.into_inner());
            Ok(r.expect("every blob was checked")?)
        })
        .collect()
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
    let bytes = data
        .read_all()
        .map_err(|e| InputError::Io(format!("package {}: reading {}: {e}", pkg.name, real.as_str())))?;
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

/// Fetches, verifies and unpacks everything `def` needs. The Debian mirror is looked up only
/// when something has to be fetched: not when a current lock pins the packages and the cache
/// holds them all.
pub fn resolve(def: &ImageDefinition, base_dir: &Path, opts: &InputOptions) -> Result<ResolvedInputs, InputError> {
    let cache = ContentCache::open(&opts.cache_dir)?;
    let mirror = MirrorLookup::new(def.debian.mirror.as_deref());
    let fetcher = Fetcher::new(opts.offline)?;
    let packages = choose_packages(def, base_dir, &mirror, &cache, &fetcher, opts)?;
    let (deb_paths, downloaded_bytes) = fetch_packages(&packages, &mirror, &cache, &fetcher, opts)?;

    // Unpack (once per .deb) and build the trees.
    let mut universe = FileTree::new();
    let mut kernel_tree = FileTree::new();
    let mut requested = Vec::new();
    let mut loader_trees: BTreeMap<String, FileTree> = BTreeMap::new();
    let mut licenses = BTreeMap::new();
    let mut doc_links = Vec::new();
    for (pkg, deb_path) in packages.iter().zip(&deb_paths) {
        let tree = package_tree(pkg, deb_path, &cache)?;
        match package_license(pkg, &tree)? {
            Some(license) => {
                licenses.insert(pkg.name.clone(), license);
            }
            None => doc_links.extend(doc_link_target(pkg, &tree).map(|target| (pkg.name.clone(), target))),
        }
        let merge_err = |e: uvmkit_filetree::TreeError| InputError::Archive(format!("package {}: {e}", pkg.name));
        match pkg.role {
            Role::Kernel => kernel_tree.merge(&tree).map_err(merge_err)?,
            Role::Bootloader => {
                loader_trees.insert(pkg.name.clone(), tree);
            }
            Role::Requested | Role::Dependency => {
                universe.merge(&tree).map_err(merge_err)?;
                if pkg.role == Role::Requested {
                    requested.push(PackageFiles {
                        name: pkg.name.clone(),
                        version: pkg.version.clone(),
                        tree,
                    });
                }
            }
        }
    }
    // A doc directory linking to another package's stands for that package's copyright.
    for (name, target) in doc_links {
        if let Some(license) = licenses.get(&target).cloned() {
            licenses.insert(name, license);
        }
    }

    let (kernel, module_tree) = match &def.kernel.path {
        None => (kernel::find_kernel(&kernel_tree)?, kernel_tree),
        Some(path) => local_kernel(def, base_dir, path)?,
    };
    check_kernel_config(def, &kernel)?;
    let index = ModuleIndex::from_tree(&module_tree, &kernel.release)?;
    let mut wanted: Vec<(String, String)> = Vec::new();
    for feature in kernelconfig::selected(&def.targets, &def.features) {
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
    let modules = index.select(&wanted)?;

    let stub_tree = &loader_trees[STUB_PACKAGE];
    let uki_stub = file_in(stub_tree, STUB_PATH, STUB_PACKAGE)?;
    let isolinux = match (loader_trees.get("isolinux"), loader_trees.get("syslinux-common")) {
        (Some(iso), Some(common)) => Some(IsolinuxFiles {
            isolinux_bin: file_in(iso, "/usr/lib/ISOLINUX/isolinux.bin", "isolinux")?,
            isohdpfx: file_in(iso, "/usr/lib/ISOLINUX/isohdpfx.bin", "isolinux")?,
            ldlinux_c32: file_in(common, "/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common")?,
        }),
        _ => None,
    };
    Ok(ResolvedInputs {
        mirror: mirror.into_used(),
        packages,
        licenses,
        requested,
        universe,
        kernel,
        modules,
        uki_stub,
        isolinux,
        downloaded_bytes,
    })
}

/// A kernel from local files: `[kernel] path`, `modules_dir`, `config`.
fn local_kernel(def: &ImageDefinition, base_dir: &Path, image: &Path) -> Result<(Kernel, FileTree), InputError> {
    let image_path = base_dir.join(image);
    let image = FileData::host_file(&image_path)
        .map_err(|e| InputError::Io(format!("[kernel] path {}: {e}", image_path.display())))?;
    let Some(modules_dir) = &def.kernel.modules_dir else {
        return Err(InputError::Kernel(
            "[kernel] path needs modules_dir (the directory holding lib/modules/RELEASE)".into(),
        ));
    };
    let dir = base_dir.join(modules_dir);
    let root = if dir.join("lib/modules").is_dir() {
        dir.join("lib/modules")
    } else {
        dir.clone()
    };
    let releases: Vec<String> = std::fs::read_dir(&root)
        .map_err(|e| InputError::Io(format!("[kernel] modules_dir {}: {e}", root.display())))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("kernel").is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let [release] = releases.as_slice() else {
        return Err(InputError::Kernel(format!(
            "{} must hold exactly one RELEASE/kernel/ directory, found {:?}",
            root.display(),
            releases
        )));
    };
    let mut tree = FileTree::new();
    let files = crate::config::ExtraFile {
        path: format!("/lib/modules/{release}"),
        contents: None,
        source: None,
        directory: Some(root.join(release)),
        symlink: None,
        mkdir: false,
        mode: None,
        uid: 0,
        gid: 0,
    };
    crate::assemble::add_extra_files(&mut tree, &[files], Path::new("/")).map_err(|e| InputError::Io(e.to_string()))?;
    let config = match &def.kernel.config {
        Some(c) => Some(
            FileData::host_file(base_dir.join(c))
                .map_err(|e| InputError::Io(format!("[kernel] config {}: {e}", c.display())))?,
        ),
        None => None,
    };
    Ok((
        Kernel {
            release: release.clone(),
            image,
            config,
        },
        tree,
    ))
}

fn check_kernel_config(def: &ImageDefinition, kernel: &Kernel) -> Result<(), InputError> {
    let Some(config) = &kernel.config else {
        log::warn!(
            "kernel {} comes without its .config; its options were not checked",
            kernel.release
        );
        return Ok(());
    };
    let text = config
        .read_all()
        .map_err(|e| InputError::Io(format!("kernel config: {e}")))?;
    let features = kernelconfig::selected(&def.targets, &def.features);
    let missing = kernelconfig::check(&String::from_utf8_lossy(&text), &features);
    if missing.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = missing.iter().map(|m| format!("  {m}")).collect();
    Err(InputError::Kernel(format!(
        "kernel {} lacks options this image needs:\n{}",
        kernel.release,
        list.join("\n")
    )))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A requested package `name` version 1.0-1, for tests here and in other modules.
    pub(crate) fn pkg(name: &str) -> FetchedPackage {
        FetchedPackage {
            name: name.into(),
            version: "1.0-1".into(),
            architecture: "amd64".into(),
            filename: format!("pool/main/{name}_1.0-1_amd64.deb"),
            sha256: "ab".repeat(32),
            size: 1,
            role: Role::Requested,
            reason: "requested".into(),
            source: None,
            maintainer: None,
            homepage: None,
        }
    }

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
