//! `uvmkit build`, `fetch` and `bundle` as one straight line each: definition → inputs
//! ([`crate::inputs`], the only network access) → file tree ([`crate::assemble`]) → initrd, UKI,
//! disks, appliance packages and ISO ([`crate::encode`]) → artifacts, `SHA256SUMS`,
//! `manifest.json` and the SBOM ([`crate::publish`]) → the lock file. This module wires the
//! stages and does nothing else.

use crate::assemble::{self, AssembleError, AssembledTree, AssemblyInputs};
use crate::definition::{ConfigError, EspLayout, Format, FormatsError, ImageDefinition, LoadedDefinition};
use crate::encode::appliance::{self, PackageInputs};
use crate::encode::disk::{self, DiskInputs};
use crate::encode::esp::EspBoot;
use crate::encode::iso::{self, IsoInputs};
use crate::encode::system::SystemLocation;
use crate::encode::{self, EncodeError};
use crate::inputs::bundle::{self, BundleError, BundleReport};
use crate::inputs::lock::{self, LockFile};
use crate::inputs::{self, InputError, InputOptions, ResolvedInputs, INIT_BINARY};
use crate::publish::{self, human_bytes, ArtifactDir, BuildReport, PublishError, Timing};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;
use uvmkit_fetch::cache::ContentCache;
use uvmkit_fetch::FetchError;
use uvmkit_filetree::FileData;

/// Default `SOURCE_DATE_EPOCH` (1980-01-01, the FAT epoch): builds are reproducible even when
/// the variable is not set.
pub const DEFAULT_EPOCH: u64 = 315_532_800;

/// The exit codes the README documents.
pub mod exit {
    /// The definition or the command line is wrong (including a stale or missing lock with
    /// `--locked`).
    pub const BAD_INPUT: u8 = 2;
    /// An input could not be fetched or verified.
    pub const FETCH: u8 = 3;
    /// Assembling, encoding or writing failed.
    pub const BUILD: u8 = 4;
    /// `uvmkit outdated`: locked packages have newer versions, none of them a security update.
    pub const UPDATES: u8 = 10;
    /// `uvmkit outdated`: at least one locked package has a security update.
    pub const SECURITY_UPDATES: u8 = 11;
}

/// Options of one build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Where artifacts go.
    pub out_dir: PathBuf,
    /// Which artifacts to write.
    pub formats: Vec<Format>,
    /// Virtual disk size (raw, VHDX, VMDK).
    pub disk_size: u64,
    /// Timestamp for every file and volume date.
    pub epoch: u64,
    /// Input resolution options.
    pub inputs: InputOptions,
    /// The key and certificate the UKI is signed with (`--sign-key`, `--sign-cert`).
    pub signer: Option<encode::uki::UkiSigner>,
}

/// Why a build failed; [`BuildError::exit_code`] tells the command what to exit with.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The definition cannot be written in a format asked for (`--format`).
    #[error(transparent)]
    Formats(#[from] FormatsError),
    /// Fetching or verifying inputs, or recording them in the lock, failed.
    #[error(transparent)]
    Inputs(#[from] InputError),
    /// The file tree could not be assembled.
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    /// An artifact could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// An artifact or summary could not be written.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl BuildError {
    /// The exit code of this failure (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            BuildError::Formats(_) => exit::BAD_INPUT,
            BuildError::Inputs(e) => input_exit_code(e),
            BuildError::Assemble(_) | BuildError::Encode(_) | BuildError::Publish(_) => exit::BUILD,
        }
    }
}

/// The exit code of an inputs failure: a failed fetch or check is 3, a local I/O failure on
/// the lock 4, anything the definition, its files or the lock are to blame for 2.
pub fn input_exit_code(e: &InputError) -> u8 {
    if e.is_fetch_failure() {
        exit::FETCH
    } else if e.is_lock_io() {
        exit::BUILD
    } else {
        exit::BAD_INPUT
    }
}

/// Why `uvmkit fetch`, `bundle` or `inspect` (or loading a definition) failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The definition could not be loaded.
    #[error(transparent)]
    Definition(#[from] ConfigError),
    /// The inputs could not be resolved.
    #[error(transparent)]
    Inputs(#[from] InputError),
    /// The build failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The bundle could not be written or imported.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The cache could not be opened.
    #[error(transparent)]
    Cache(FetchError),
    /// The image's file tree could not be assembled (`inspect`).
    #[error(transparent)]
    Assemble(#[from] AssembleError),
}

impl CommandError {
    /// The exit code of this failure (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Definition(_) => exit::BAD_INPUT,
            CommandError::Inputs(e) => input_exit_code(e),
            CommandError::Build(e) => e.exit_code(),
            CommandError::Bundle(e) if e.is_fetch_failure() => exit::FETCH,
            CommandError::Bundle(_) => exit::BAD_INPUT,
            CommandError::Cache(_) => exit::FETCH,
            CommandError::Assemble(_) => exit::BUILD,
        }
    }
}

/// Prints one line per phase with its duration (to stderr, so `--json` output stays clean).
struct Phases {
    start: Instant,
    last: Instant,
    quiet: bool,
    timings: Vec<Timing>,
}

impl Phases {
    fn new(quiet: bool) -> Self {
        let now = Instant::now();
        Phases {
            start: now,
            last: now,
            quiet,
            timings: Vec::new(),
        }
    }
    fn done(&mut self, phase: &str, detail: impl fmt::Display) {
        let now = Instant::now();
        let secs = (now - self.last).as_secs_f64();
        self.last = now;
        self.timings.push(Timing {
            phase: phase.to_string(),
            seconds: secs,
        });
        if !self.quiet {
            eprintln!(
                "[{:6.1}s] {phase}: {detail} ({secs:.1}s)",
                (now - self.start).as_secs_f64()
            );
        }
    }
}

/// A 32-byte seed for identifiers (disk GUIDs, VHDX and VMDK ids, FAT volume ids), derived
/// from everything that defines the image: different images get different identifiers, the
/// same inputs the same ones.
fn identity_seed(loaded: &LoadedDefinition, inputs: &ResolvedInputs, epoch: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(loaded.source_text.as_bytes());
    for p in &inputs.packages {
        h.update(p.sha256.as_bytes());
    }
    h.update(INIT_BINARY);
    h.update(epoch.to_le_bytes());
    h.finalize().into()
}

/// The image's root tree from resolved inputs and the embedded init.
pub fn assemble_image(loaded: &LoadedDefinition, inputs: &ResolvedInputs) -> Result<AssembledTree, AssembleError> {
    assemble::assemble(&AssemblyInputs {
        definition: &loaded.definition,
        base_dir: &loaded.base_dir,
        init: FileData::inline(INIT_BINARY.to_vec()),
        requested: &inputs.requested,
        universe: &inputs.universe,
        kernel_release: &inputs.kernel.release,
        modules: &inputs.modules,
    })
}

/// `uvmkit fetch`: resolves and caches every input of `loaded` and records them in its lock.
pub fn fetch(loaded: &LoadedDefinition, opts: &InputOptions) -> Result<ResolvedInputs, InputError> {
    let resolved = inputs::resolve(&loaded.definition, &loaded.base_dir, opts, inputs::DebFiles::Cached)?;
    lock::record(&opts.lock, &loaded.definition, &resolved.packages)?;
    Ok(resolved)
}

/// `uvmkit bundle`: fetches like [`fetch`], then writes the offline bundle `output` holding the
/// definition, the lock of what was fetched, every pinned `.deb`, the signed archive indexes
/// they are checked against, and the local files.
pub fn bundle(loaded: &LoadedDefinition, opts: &InputOptions, output: &Path) -> Result<BundleReport, CommandError> {
    let resolved = fetch(loaded, opts)?;
    let pinned = LockFile::new(&loaded.definition, &resolved.packages);
    let index = inputs::signed_index(&loaded.definition, &loaded.base_dir, opts)?;
    let cache = ContentCache::open(&opts.cache_dir).map_err(CommandError::Cache)?;
    Ok(bundle::write_bundle(loaded, &pinned, &index, &cache, output)?)
}

/// The files one build writes before publishing them, in the output directory's staging area.
struct Staged {
    /// The published initrd: the boot initrd with the system image appended, or the whole tree.
    initrd_name: String,
    initrd_path: PathBuf,
    initrd: FileData,
    /// The published UKI, built around that initrd (it boots alone).
    uki_name: String,
    uki: FileData,
    uki_layout: uvmkit_uki::UkiLayout,
    initrd_stats: uvmkit_initrd::InitrdStats,
    /// With a system image: the image, and the small initrds and UKIs that find it.
    system: Option<SystemFiles>,
}

/// The system image and the boot files that mount it from the disk's partition or the ISO.
struct SystemFiles {
    image: encode::system::SystemImage,
    boot_initrd: FileData,
    boot_uki: FileData,
    /// With the ISO: the boot initrd and UKI that find the image on the ISO 9660 medium.
    medium_boot: Option<MediumBoot>,
}

/// The ISO's boot initrd (waiting for [`encode::system::SYSTEM_MEDIUM_FILE`]) and its UKI.
struct MediumBoot {
    initrd_path: PathBuf,
    initrd: FileData,
    uki: FileData,
    uki_layout: uvmkit_uki::UkiLayout,
}

/// `uvmkit build`: runs every stage for `loaded`, then records its packages in the lock.
pub fn build(loaded: &LoadedDefinition, opts: &BuildOptions) -> Result<BuildReport, BuildError> {
    let def = &loaded.definition;
    def.check_formats(&opts.formats)?;
    let mut phases = Phases::new(opts.inputs.quiet);

    // Inputs: the only stage that touches the network.
    let inputs = inputs::resolve(def, &loaded.base_dir, &opts.inputs, inputs::DebFiles::ToUnpack)?;
    phases.done(
        "inputs",
        format!(
            "{} packages, kernel {}, {} modules, {} downloaded",
            inputs.packages.len(),
            inputs.kernel.release,
            inputs.modules.modules.len(),
            human_bytes(inputs.downloaded_bytes)
        ),
    );

    // The file tree, in memory.
    let assembled = assemble_image(loaded, &inputs)?;
    let tree = &assembled.tree;
    phases.done(
        "file tree",
        format!(
            "{} entries, {} of files, {} libraries added",
            tree.len(),
            human_bytes(tree.total_file_bytes()),
            assembled.closure.added.len()
        ),
    );

    // The encoders, writing into the output directory's staging area.
    let mut out = ArtifactDir::create(&opts.out_dir).map_err(PublishError::OutputDir)?;
    let seed = identity_seed(loaded, &inputs, opts.epoch);
    let staged = encode_boot_files(loaded, &inputs, tree, &out, opts, &mut phases)?;
    let layout = esp_layout(def, opts);
    let esp_boot = |format: Format| esp_boot(def, layout, &inputs, &staged, format);
    if let Some(format) = opts.formats.iter().copied().find(|f| f.is_disk()) {
        let system = staged.system.as_ref().map(|s| &s.image);
        encode_disks(loaded, &esp_boot(format)?, system, &mut out, opts, seed, &mut phases)?;
    }
    if opts.formats.contains(&Format::Iso) {
        let name = format!("{}.iso", def.name);
        let medium = staged
            .system
            .as_ref()
            .and_then(|s| Some((&s.image, s.medium_boot.as_ref()?)));
        let iso_inputs = IsoInputs {
            definition: def,
            inputs: &inputs,
            esp: &esp_boot(Format::Iso)?,
            uki_layout: medium.map_or(&staged.uki_layout, |(_, m)| &m.uki_layout),
            initrd_path: medium.map_or(&staged.initrd_path, |(_, m)| &m.initrd_path),
            system_image: medium.map(|(image, _)| image),
            seed,
            epoch: opts.epoch,
        };
        iso::write_iso(&iso_inputs, &out.staging_path(&name))?;
        let a = out.publish(&name, "iso").map_err(publish::io_error("ISO"))?;
        phases.done("iso", format!("{} ({})", a.name, human_bytes(a.size)));
    }
    if opts.formats.contains(&Format::Efi) {
        let kernel_name = format!("{}-kernel", def.name);
        encode::uki::write_kernel(&inputs, &out.staging_path(&kernel_name))?;
        out.publish_all(&[
            (&staged.uki_name, "efi"),
            (&kernel_name, "kernel"),
            (&staged.initrd_name, "initrd"),
        ])
        .map_err(publish::io_error("publish"))?;
        phases.done(
            "efi",
            format!("{}, {kernel_name}, {}", staged.uki_name, staged.initrd_name),
        );
    }

    // The summaries, once every artifact is in place.
    let report = BuildReport {
        image: def.name.clone(),
        artifacts: out.published().to_vec(),
        packages: inputs.packages.clone(),
        licenses: inputs.licenses.clone(),
        kernel_release: inputs.kernel.release.clone(),
        modules: inputs.modules.modules.iter().map(|m| m.name.clone()).collect(),
        initrd_entries: staged.initrd_stats.entries as usize,
        initrd_uncompressed: staged.initrd_stats.uncompressed_bytes,
        downloaded_bytes: inputs.downloaded_bytes,
        uki_signature: opts.signer.as_ref().map(|s| s.signature()),
        timings: phases.timings.clone(),
    };
    publish::write_summaries(&out, loaded, &report, opts.epoch)?;
    out.commit().map_err(publish::io_error("the output directory"))?;

    // The lock, once the build succeeded.
    lock::record(&opts.inputs.lock, def, &report.packages).map_err(InputError::from)?;
    Ok(report)
}

/// The system image (when the definition asks for one), the initrds and the UKIs, which every
/// bootable format carries.
fn encode_boot_files(
    loaded: &LoadedDefinition,
    inputs: &ResolvedInputs,
    tree: &uvmkit_filetree::FileTree,
    out: &ArtifactDir,
    opts: &BuildOptions,
    phases: &mut Phases,
) -> Result<Staged, BuildError> {
    let (def, epoch) = (&loaded.definition, opts.epoch);
    let initrd_name = format!("{}-initrd.img", def.name);
    let initrd_path = out.staging_path(&initrd_name);
    let uki_name = format!("{}.efi", def.name);
    let uki_path = out.staging_path(&uki_name);
    let signer = opts.signer.as_ref();
    let (initrd_stats, system) = if def.init.system_image {
        let image_path = out.staging_path(&format!("{}-system.squashfs", def.name));
        let compression = def.init.system_compression;
        let image = encode::system::write_system_image(tree, compression, epoch, &opts.inputs.cache_dir, &image_path)?;
        phases.done(
            "system image",
            format!(
                "squashfs {}, {} inodes, {} → {}, sha256 {}; blocks cached {}, compressed {}",
                compression.name(),
                image.stats.inodes,
                human_bytes(image.stats.file_bytes),
                human_bytes(image.size),
                &image.sha256[..16],
                image.cache.hits,
                image.cache.misses
            ),
        );
        let boot_tree = encode::system::boot_tree(tree, def, inputs, &image, SystemLocation::Partition)?;
        let boot_initrd_path = out.staging_path(&format!("{}-boot-initrd.img", def.name));
        let stats = encode::initrd::write_initrd(&boot_tree, def, epoch, &opts.inputs.cache_dir, &boot_initrd_path)?;
        let full_len = encode::system::append_system_image(&boot_initrd_path, &image, epoch, &initrd_path)?;
        phases.done(
            "initrd",
            format!(
                "boot initrd {} entries, {} → {}; with the system image {}",
                stats.entries,
                human_bytes(stats.uncompressed_bytes),
                human_bytes(stats.compressed_bytes),
                human_bytes(full_len)
            ),
        );
        let boot_uki_path = out.staging_path(&format!("{}-boot.efi", def.name));
        encode::uki::write_uki(def, inputs, &boot_initrd_path, &boot_uki_path, signer)?;
        let boot_uki = FileData::host_file(&boot_uki_path).map_err(encode::io_error("UKI"))?;
        phases.done(
            "boot UKI",
            format!("{} (on the disks' ESP)", human_bytes(boot_uki.len())),
        );
        let boot_initrd = FileData::host_file(&boot_initrd_path).map_err(encode::io_error("initrd"))?;
        let medium_boot = if opts.formats.contains(&Format::Iso) {
            Some(encode_medium_boot(loaded, inputs, tree, &image, out, opts, phases)?)
        } else {
            None
        };
        let files = SystemFiles {
            image,
            boot_initrd,
            boot_uki,
            medium_boot,
        };
        (stats, Some(files))
    } else {
        let stats = encode::initrd::write_initrd(tree, def, epoch, &opts.inputs.cache_dir, &initrd_path)?;
        phases.done(
            "initrd",
            format!(
                "{} entries, {} → {}",
                stats.entries,
                human_bytes(stats.uncompressed_bytes),
                human_bytes(stats.compressed_bytes)
            ),
        );
        (stats, None)
    };
    let initrd = FileData::host_file(&initrd_path).map_err(encode::io_error("initrd"))?;
    let uki_layout = encode::uki::write_uki(def, inputs, &initrd_path, &uki_path, signer)?;
    let uki = FileData::host_file(&uki_path).map_err(encode::io_error("UKI"))?;
    match &opts.signer {
        Some(s) => phases.done(
            "UKI",
            format!("{}, signed by {}", human_bytes(uki.len()), s.signature().subject),
        ),
        None => phases.done("UKI", human_bytes(uki.len())),
    }
    Ok(Staged {
        initrd_name,
        initrd_path,
        initrd,
        uki_name,
        uki,
        uki_layout,
        initrd_stats,
        system,
    })
}

/// The ISO's boot initrd and UKI: the same boot tree as the disks', told to find the system
/// image as a file on the ISO 9660 medium rather than as a partition.
fn encode_medium_boot(
    loaded: &LoadedDefinition,
    inputs: &ResolvedInputs,
    tree: &uvmkit_filetree::FileTree,
    image: &encode::system::SystemImage,
    out: &ArtifactDir,
    opts: &BuildOptions,
    phases: &mut Phases,
) -> Result<MediumBoot, BuildError> {
    let def = &loaded.definition;
    let boot_tree = encode::system::boot_tree(tree, def, inputs, image, SystemLocation::Medium)?;
    let initrd_path = out.staging_path(&format!("{}-iso-initrd.img", def.name));
    let stats = encode::initrd::write_initrd(&boot_tree, def, opts.epoch, &opts.inputs.cache_dir, &initrd_path)?;
    let uki_path = out.staging_path(&format!("{}-iso.efi", def.name));
    let uki_layout = encode::uki::write_uki(def, inputs, &initrd_path, &uki_path, opts.signer.as_ref())?;
    let uki = FileData::host_file(&uki_path).map_err(encode::io_error("UKI"))?;
    phases.done(
        "ISO boot initrd",
        format!(
            "{} (finds the system image on the medium), UKI {}",
            human_bytes(stats.compressed_bytes),
            human_bytes(uki.len())
        ),
    );
    Ok(MediumBoot {
        initrd: FileData::host_file(&initrd_path).map_err(encode::io_error("initrd"))?,
        initrd_path,
        uki,
        uki_layout,
    })
}

/// What the ESP of the disk images and the ISO holds: the one place the layout is chosen. A
/// UKI signed with the user's key boots directly (the user's `db` trusts it; shim would not
/// be needed), otherwise `[boot] loader` decides.
fn esp_layout(def: &ImageDefinition, opts: &BuildOptions) -> EspLayout {
    match opts.signer {
        Some(_) => EspLayout::Uki,
        None => def.boot.loader,
    }
}

/// The ESP's contents in `layout` for `format` (which names the artifact in an error when the
/// signed chain was not fetched). With a system image, a disk boots the small boot initrd that
/// finds its partition and the ISO the one that finds the image's file on the medium.
fn esp_boot<'a>(
    def: &'a ImageDefinition,
    layout: EspLayout,
    inputs: &'a ResolvedInputs,
    staged: &'a Staged,
    format: Format,
) -> Result<EspBoot<'a>, EncodeError> {
    let medium = staged.system.as_ref().and_then(|s| s.medium_boot.as_ref());
    let (uki, initrd) = match (&staged.system, medium) {
        (Some(system), _) if format.is_disk() => (&system.boot_uki, &system.boot_initrd),
        (Some(_), Some(medium)) if format == Format::Iso => (&medium.uki, &medium.initrd),
        _ => (&staged.uki, &staged.initrd),
    };
    Ok(match layout {
        EspLayout::Uki => EspBoot::Uki { uki },
        EspLayout::Shim => EspBoot::Shim {
            chain: inputs
                .shim_chain
                .as_ref()
                .ok_or(EncodeError::NoShimChain { format: format.name() })?,
            kernel: &inputs.kernel.image,
            initrd,
            cmdline: &def.cmdline,
        },
    })
}

/// The GPT disk, laid out once and written in each disk format asked for, then packaged in
/// each appliance format.
fn encode_disks(
    loaded: &LoadedDefinition,
    esp: &EspBoot,
    system: Option<&encode::system::SystemImage>,
    out: &mut ArtifactDir,
    opts: &BuildOptions,
    seed: [u8; 32],
    phases: &mut Phases,
) -> Result<(), BuildError> {
    let disk_formats: Vec<Format> = opts.formats.iter().copied().filter(|f| f.is_disk()).collect();
    let image = disk::build_disk_image(&DiskInputs {
        definition: &loaded.definition,
        base_dir: &loaded.base_dir,
        esp: &esp.files(),
        system,
        size: opts.disk_size,
        seed,
        epoch: opts.epoch,
    })?;
    phases.done(
        "disk layout",
        format!(
            "{} virtual, {} allocated, ESP boots {}",
            human_bytes(image.size()),
            human_bytes(image.allocated_bytes()),
            esp.layout().name()
        ),
    );
    let scratch_dir = out.scratch_dir("packages").map_err(PublishError::OutputDir)?;
    for format in disk_formats {
        let file_name = disk::disk_file_name(&loaded.definition.name, format);
        let path = out.staging_path(&file_name);
        if format.is_package() {
            let inputs = PackageInputs {
                definition: &loaded.definition,
                disk: &image,
                seed,
                epoch: opts.epoch,
                scratch_dir: &scratch_dir,
            };
            appliance::write_package(&inputs, format, &path)?;
        } else {
            disk::write_disk(&image, format, &loaded.definition, seed, &path, &file_name)?;
        }
        let a = out
            .publish(&file_name, format.name())
            .map_err(publish::io_error(format.name()))?;
        phases.done(
            format.name(),
            format!("{} ({} on disk)", a.name, human_bytes(a.allocated)),
        );
    }
    Ok(())
}
