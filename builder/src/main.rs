//! The `uvmkit` command.
//!
//! Parses the command line, calls the library (`uvmkit::pipeline` for the stages) and turns
//! its typed errors into the exit codes the README documents.

#![deny(missing_docs)]

use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use uvmkit::definition::kernel_config::{self, MissingOption};
use uvmkit::definition::{self, parse_size, DiskSizeError, Format, LoadedDefinition, Target};
use uvmkit::inputs::bundle::{self, UnpackedBundle};
use uvmkit::inputs::lock::lock_path;
use uvmkit::inputs::{InputOptions, LockUse};
use uvmkit::pipeline::{self, exit, BuildOptions, CommandError, DEFAULT_EPOCH};
use uvmkit::publish::human_bytes;
use uvmkit_fetch::cache::ContentCache;

#[derive(Parser)]
#[command(
    name = "uvmkit",
    version,
    about = "Builds lightweight utility VM images for container hosts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the artifacts of an image definition.
    Build(BuildArgs),
    /// Resolve and cache every input of an image definition, and say what and how much.
    Fetch(InputArgs),
    /// Write an offline bundle: the definition, its lock, every pinned .deb and the local files
    /// it references, in one tar file (`uvmkit build --offline --bundle FILE` builds from it).
    Bundle {
        #[command(flatten)]
        inputs: InputArgs,
        /// The bundle file to write.
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
    /// Print the resolved inputs: packages with versions, files per package, modules, kernel.
    Inspect {
        #[command(flatten)]
        inputs: InputArgs,
        /// Also list every file that goes into the image.
        #[arg(long)]
        files: bool,
    },
    /// Report the locked packages that have newer versions in the definition's archives
    /// (security updates marked). Exits 0 when none do, 10 when some do, 11 when at least
    /// one of them is a security update.
    Outdated {
        #[command(flatten)]
        inputs: InputArgs,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Kernel tools.
    #[command(subcommand)]
    Kernel(KernelCommand),
}

#[derive(Subcommand)]
enum KernelCommand {
    /// Check a kernel .config against what the targets and features need.
    Check {
        /// The kernel's .config file.
        config: PathBuf,
        /// Hypervisor targets (default: all).
        #[arg(long = "target", value_parser = parse_target)]
        targets: Vec<Target>,
        /// Features such as `containers`.
        #[arg(long = "feature")]
        features: Vec<String>,
    },
}

#[derive(Args)]
struct InputArgs {
    /// The image definition (TOML); with `build --bundle`, the bundle's definition is used.
    image: Option<PathBuf>,
    /// Cache directory (default: $UVMKIT_CACHE, else the user's cache directory).
    #[arg(long, env = "UVMKIT_CACHE")]
    cache: Option<PathBuf>,
    /// Use only the cache; any network access is an error.
    #[arg(long)]
    offline: bool,
    /// Fetch the archive index again even if a recent one is cached.
    #[arg(long)]
    refresh: bool,
    /// Log lines only, no progress bars.
    #[arg(long, short)]
    quiet: bool,
    /// Parallel downloads.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Accept a signed archive index past its Valid-Until, or older than one seen before for
    /// the same archive (to build from a deliberate snapshot of a mirror).
    #[arg(long)]
    allow_old_index: bool,
    /// Refuse to build unless IMAGE.lock exists and a fresh resolution matches it.
    #[arg(long)]
    locked: bool,
}

#[derive(Args)]
struct BuildArgs {
    #[command(flatten)]
    inputs: InputArgs,
    /// Output directory.
    #[arg(long, short = 'o', default_value = "out")]
    output: PathBuf,
    /// Formats to write, comma-separated (efi, iso, raw, vhdx, vmdk, vmdk-stream); default:
    /// the definition's `formats`.
    #[arg(long, value_delimiter = ',', value_parser = parse_format)]
    format: Vec<Format>,
    /// Virtual disk size for raw, VHDX and VMDK (such as 64GiB); default: `[disk] size`.
    #[arg(long, value_parser = parse_disk_size)]
    disk_size: Option<u64>,
    /// Print a machine-readable summary (artifacts, sizes, sha256) on stdout.
    #[arg(long)]
    json: bool,
    /// Build from an offline bundle (`uvmkit bundle`) instead of IMAGE: its blobs are verified
    /// and imported into the cache first.
    #[arg(long, value_name = "FILE")]
    bundle: Option<PathBuf>,
}

fn parse_target(s: &str) -> Result<Target, String> {
    Target::from_name(s).ok_or_else(|| format!("unknown target {s:?}; use hyperv, vmware, virtualbox or qemu"))
}

fn parse_format(s: &str) -> Result<Format, String> {
    Format::from_name(s).ok_or_else(|| format!("unknown format {s:?}; use efi, iso, raw, vhdx, vmdk or vmdk-stream"))
}

fn parse_disk_size(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

/// Why the command failed: the library's errors, and the command line's own.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// A library call failed.
    #[error(transparent)]
    Command(CommandError),
    /// No definition was named.
    #[error("name the image definition (IMAGE.toml)")]
    NoImage,
    /// Both a definition and a bundle were named.
    #[error("give either IMAGE or --bundle, not both")]
    ImageAndBundle,
    /// `--disk-size` (or `[disk] size` with `--format`) is not a size the formats allow.
    #[error("disk size: {0}")]
    DiskSize(DiskSizeError),
    /// `SOURCE_DATE_EPOCH` is not a number.
    #[error("SOURCE_DATE_EPOCH={0:?} is not a number of seconds")]
    Epoch(String),
    /// `kernel check`: the `.config` cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    KernelConfig {
        /// The `.config` file.
        path: PathBuf,
        /// What reading it reported.
        source: std::io::Error,
    },
    /// `kernel check --feature` names no feature.
    #[error("unknown feature {0:?}; known: {known}", known = kernel_config::feature_names().join(", "))]
    UnknownFeature(String),
    /// `kernel check`: the kernel lacks options.
    #[error("{} lacks {} option(s) that {} need", path.display(), missing.len(), needed_by.join(", "))]
    KernelLacks {
        /// The `.config` file.
        path: PathBuf,
        /// What it lacks.
        missing: Vec<MissingOption>,
        /// The features checked.
        needed_by: Vec<String>,
    },
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Command(e) => e.exit_code(),
            _ => exit::BAD_INPUT,
        }
    }
}

impl<E: Into<CommandError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Command(e.into())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger_init();
    let result = match cli.command {
        Command::Build(args) => build(&args).map(|()| 0),
        Command::Fetch(args) => fetch(&args).map(|()| 0),
        Command::Bundle { inputs, output } => write_bundle(&inputs, &output).map(|()| 0),
        Command::Inspect { inputs, files } => inspect(&inputs, files).map(|()| 0),
        Command::Outdated { inputs, json } => outdated(&inputs, json),
        Command::Kernel(KernelCommand::Check {
            config,
            targets,
            features,
        }) => kernel_check(&config, targets, &features).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Warnings from the library go to stderr with a `warning:` prefix.
fn env_logger_init() {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::Level::Warn
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                eprintln!("warning: {}", r.args());
            }
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    let _ = log::set_logger(&LOGGER).map(|()| log::set_max_level(log::LevelFilter::Warn));
}

fn load(path: &Path) -> Result<LoadedDefinition, Failure> {
    Ok(definition::load(path).map_err(CommandError::from)?)
}

/// The definition named on the command line.
fn image_arg(args: &InputArgs) -> Result<&Path, Failure> {
    args.image.as_deref().ok_or(Failure::NoImage)
}

fn cache_dir(args: &InputArgs) -> PathBuf {
    args.cache.clone().unwrap_or_else(ContentCache::default_dir)
}

/// Input options for the definition at `definition` (its lock file is beside it); a bundle's
/// lock is only read.
fn input_options(args: &InputArgs, definition: &Path, from_bundle: bool) -> InputOptions {
    let path = lock_path(definition);
    InputOptions {
        cache_dir: cache_dir(args),
        offline: args.offline,
        refresh: args.refresh,
        allow_old_index: args.allow_old_index,
        quiet: args.quiet,
        jobs: args.jobs.max(1),
        lock: if args.locked {
            LockUse::Locked(path)
        } else if from_bundle {
            LockUse::ReadOnly(path)
        } else {
            LockUse::Update(path)
        },
    }
}

fn source_date_epoch() -> Result<u64, Failure> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse().map_err(|_| Failure::Epoch(v)),
        Err(_) => Ok(DEFAULT_EPOCH),
    }
}

/// Unpacks `--bundle FILE` into a temporary directory, importing its verified blobs.
fn open_bundle(file: &Path, args: &InputArgs) -> Result<UnpackedBundle, Failure> {
    if args.image.is_some() {
        return Err(Failure::ImageAndBundle);
    }
    let cache = ContentCache::open(&cache_dir(args)).map_err(CommandError::Cache)?;
    // A new name: import_bundle creates the directory itself and refuses one that exists.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("uvmkit-bundle-{}-{nanos}", std::process::id()));
    Ok(bundle::import_bundle(file, &cache, &dir)?)
}

/// `uvmkit build`.
fn build(args: &BuildArgs) -> Result<(), Failure> {
    // Kept until the build is done: the bundle's local files are read from it.
    let unpacked = args
        .bundle
        .as_deref()
        .map(|b| open_bundle(b, &args.inputs))
        .transpose()?;
    let definition = match &unpacked {
        Some(u) => u.definition.clone(),
        None => image_arg(&args.inputs)?.to_path_buf(),
    };
    let loaded = load(&definition)?;
    let def = &loaded.definition;
    let formats = if args.format.is_empty() {
        def.formats.clone()
    } else {
        args.format.clone()
    };
    let disk_size = args.disk_size.unwrap_or(def.disk.size);
    // Checked against the formats of this build before anything is fetched.
    definition::check_disk_size(disk_size, &formats).map_err(Failure::DiskSize)?;
    let opts = BuildOptions {
        out_dir: args.output.clone(),
        formats,
        disk_size,
        epoch: source_date_epoch()?,
        inputs: InputOptions {
            quiet: args.inputs.quiet || args.json,
            ..input_options(&args.inputs, &definition, unpacked.is_some())
        },
    };
    let report = pipeline::build(&loaded, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serialises"));
    } else {
        let total: f64 = report.timings.iter().map(|t| t.seconds).sum();
        eprintln!("built {} in {total:.1}s into {}:", report.image, args.output.display());
        for a in &report.artifacts {
            eprintln!(
                "  {:<28} {:>10}  sha256 {}",
                a.name,
                human_bytes(a.size),
                &a.sha256[..16]
            );
        }
        eprintln!("  SHA256SUMS, manifest.json");
    }
    Ok(())
}

/// `uvmkit fetch`.
fn fetch(args: &InputArgs) -> Result<(), Failure> {
    let image = image_arg(args)?;
    let loaded = load(image)?;
    let start = std::time::Instant::now();
    let resolved = pipeline::fetch(&loaded, &input_options(args, image, false))?;
    let total: u64 = resolved.packages.iter().map(|p| p.size).sum();
    println!(
        "{} packages ({} of .debs, {} downloaded now), kernel {}, {} modules; {} ({:.1}s)",
        resolved.packages.len(),
        human_bytes(total),
        human_bytes(resolved.downloaded_bytes),
        resolved.kernel.release,
        resolved.modules.modules.len(),
        uvmkit::inputs::describe_mirrors(&resolved.mirrors)
            .unwrap_or_else(|| "all pinned by the lock and in the cache, no mirror needed".into()),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `uvmkit bundle`.
fn write_bundle(args: &InputArgs, output: &Path) -> Result<(), Failure> {
    let image = image_arg(args)?;
    let loaded = load(image)?;
    let opts = InputOptions {
        quiet: true,
        ..input_options(args, image, false)
    };
    let report = pipeline::bundle(&loaded, &opts, output)?;
    eprintln!(
        "wrote {}: {} members, {} packages, {}",
        output.display(),
        report.members,
        report.blobs,
        human_bytes(report.bytes)
    );
    Ok(())
}

/// `uvmkit inspect`.
fn inspect(args: &InputArgs, files: bool) -> Result<(), Failure> {
    let image = image_arg(args)?;
    let loaded = load(image)?;
    let resolved = uvmkit::inputs::resolve(&loaded.definition, &loaded.base_dir, &input_options(args, image, false))
        .map_err(CommandError::from)?;
    Ok(uvmkit::inspect::print(&loaded, &resolved, files).map_err(CommandError::from)?)
}

/// `uvmkit outdated`: the report, and the exit code that tells a pipeline what it found.
fn outdated(args: &InputArgs, json: bool) -> Result<u8, Failure> {
    let image = image_arg(args)?;
    let loaded = load(image)?;
    let report =
        uvmkit::inputs::outdated::outdated(&loaded.definition, &loaded.base_dir, &input_options(args, image, false))
            .map_err(CommandError::from)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serialises"));
    } else {
        println!(
            "image {}: {} of {} locked packages have newer versions in {} ({} security update(s))",
            report.image,
            report.outdated.len(),
            report.locked_packages,
            report.archives.join(", "),
            report.security_updates()
        );
        for p in &report.outdated {
            println!(
                "  {:<32} {} ({}) -> {} ({}){}",
                p.name,
                p.locked,
                p.locked_archive,
                p.available,
                p.available_archive,
                if p.security { "  security" } else { "" }
            );
        }
        if report.lock_stale {
            println!("note: the definition changed since the lock was written; a build resolves again");
        }
        if !report.outdated.is_empty() {
            println!("run `uvmkit fetch --refresh {}` to update the lock", image.display());
        }
    }
    Ok(if report.security_updates() > 0 {
        exit::SECURITY_UPDATES
    } else if report.outdated.is_empty() {
        0
    } else {
        exit::UPDATES
    })
}

/// `uvmkit kernel check`.
fn kernel_check(config: &Path, targets: Vec<Target>, features: &[String]) -> Result<(), Failure> {
    let text = std::fs::read_to_string(config).map_err(|source| Failure::KernelConfig {
        path: config.to_path_buf(),
        source,
    })?;
    if let Some(unknown) = features.iter().find(|f| kernel_config::feature(f).is_none()) {
        return Err(Failure::UnknownFeature(unknown.clone()));
    }
    let targets = if targets.is_empty() {
        Target::ALL.to_vec()
    } else {
        targets
    };
    let selected = kernel_config::selected(&targets, features);
    let missing = kernel_config::check(&text, &selected);
    let names: Vec<String> = selected.iter().map(|f| f.name.clone()).collect();
    if missing.is_empty() {
        println!("{}: everything {} need is there", config.display(), names.join(", "));
        return Ok(());
    }
    for m in &missing {
        println!("missing: {m}");
    }
    Err(Failure::KernelLacks {
        path: config.to_path_buf(),
        missing,
        needed_by: names,
    })
}
