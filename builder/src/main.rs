//! The `uvmkit` command.

use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use uvmkit::bundle::{self, BundleError};
use uvmkit::config::{self, Format, LoadedDefinition, Target};
use uvmkit::inputs::{self, InputOptions};
use uvmkit::lock::{self, LockError};
use uvmkit::pipeline::{self, human_bytes, BuildError, BuildOptions};
use uvmkit::{kernelconfig, pipeline::DEFAULT_EPOCH};

/// Exit codes a pipeline can tell apart.
mod exit {
    /// The definition or the command line is wrong.
    pub const BAD_INPUT: u8 = 2;
    /// An input could not be fetched or verified.
    pub const FETCH: u8 = 3;
    /// Assembling or encoding failed.
    pub const BUILD: u8 = 4;
}

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
    #[arg(long, value_parser = config::parse_size)]
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger_init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
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

type Failure = (u8, String);

fn load(path: &Path) -> Result<LoadedDefinition, Failure> {
    config::load(path).map_err(|e| (exit::BAD_INPUT, e.to_string()))
}

/// The definition named on the command line.
fn image_arg(args: &InputArgs) -> Result<&Path, Failure> {
    args.image
        .as_deref()
        .ok_or_else(|| (exit::BAD_INPUT, "name the image definition (IMAGE.toml)".to_string()))
}

fn cache_dir(args: &InputArgs) -> PathBuf {
    args.cache
        .clone()
        .unwrap_or_else(uvmkit_fetch::cache::ContentCache::default_dir)
}

/// Input options for the definition at `definition` (its lock file is beside it).
fn input_options(args: &InputArgs, definition: &Path) -> InputOptions {
    InputOptions {
        cache_dir: cache_dir(args),
        offline: args.offline,
        refresh: args.refresh,
        quiet: args.quiet,
        jobs: args.jobs.max(1),
        lock: Some(lock::lock_path(definition)),
        locked: args.locked,
    }
}

fn source_date_epoch() -> Result<u64, Failure> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse().map_err(|_| {
            (
                exit::BAD_INPUT,
                format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"),
            )
        }),
        Err(_) => Ok(DEFAULT_EPOCH),
    }
}

fn input_failure(e: inputs::InputError) -> Failure {
    let code = match e {
        inputs::InputError::Fetch(_)
        | inputs::InputError::Archive(_)
        | inputs::InputError::Offline(_)
        | inputs::InputError::Mirror { .. } => exit::FETCH,
        inputs::InputError::Lock(LockError::Io { .. }) => exit::BUILD,
        inputs::InputError::Resolve(_)
        | inputs::InputError::Kernel(_)
        | inputs::InputError::Io(_)
        | inputs::InputError::Lock(_) => exit::BAD_INPUT,
    };
    (code, e.to_string())
}

fn bundle_failure(e: BundleError) -> Failure {
    let code = match e {
        BundleError::Unbundlable { .. } | BundleError::Io { .. } => exit::BAD_INPUT,
        BundleError::NotCached { .. }
        | BundleError::Malformed { .. }
        | BundleError::Tampered { .. }
        | BundleError::Cache(_) => exit::FETCH,
    };
    (code, e.to_string())
}

/// Unpacks `--bundle FILE` into a temporary directory, importing its verified blobs.
fn open_bundle(file: &Path, args: &InputArgs) -> Result<bundle::UnpackedBundle, Failure> {
    if args.image.is_some() {
        return Err((exit::BAD_INPUT, "give either IMAGE or --bundle, not both".into()));
    }
    let cache = uvmkit_fetch::cache::ContentCache::open(&cache_dir(args)).map_err(|e| (exit::FETCH, e.to_string()))?;
    let dir = std::env::temp_dir().join(format!("uvmkit-bundle-{}", std::process::id()));
    bundle::import_bundle(file, &cache, &dir).map_err(bundle_failure)
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Build(args) => {
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
            if disk_size % (1 << 20) != 0 || disk_size < (64 << 20) {
                return Err((
                    exit::BAD_INPUT,
                    format!("--disk-size {disk_size}: use a whole number of MiB, at least 64MiB"),
                ));
            }
            let opts = BuildOptions {
                out_dir: args.output.clone(),
                formats,
                disk_size,
                epoch: source_date_epoch()?,
                inputs: InputOptions {
                    quiet: args.inputs.quiet || args.json,
                    ..input_options(&args.inputs, &definition)
                },
            };
            let report = pipeline::build(&loaded, &opts).map_err(|e| match e {
                BuildError::Inputs(e) => input_failure(e),
                BuildError::Build(m) => (exit::BUILD, m),
            })?;
            if unpacked.is_none() {
                inputs::update_lock(def, &opts.inputs, &report.packages).map_err(input_failure)?;
            }
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
        Command::Fetch(args) => {
            let image = image_arg(&args)?;
            let loaded = load(image)?;
            let start = std::time::Instant::now();
            let opts = input_options(&args, image);
            let resolved = inputs::resolve(&loaded.definition, &loaded.base_dir, &opts).map_err(input_failure)?;
            inputs::update_lock(&loaded.definition, &opts, &resolved.packages).map_err(input_failure)?;
            let total: u64 = resolved.packages.iter().map(|p| p.size).sum();
            println!(
                "{} packages ({} of .debs, {} downloaded now), kernel {}, {} modules; {} ({:.1}s)",
                resolved.packages.len(),
                human_bytes(total),
                human_bytes(resolved.downloaded_bytes),
                resolved.kernel.release,
                resolved.modules.modules.len(),
                match &resolved.mirror {
                    Some(m) => format!("mirror from {}", m.origin),
                    None => "all pinned by the lock and in the cache, no mirror needed".into(),
                },
                start.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Bundle { inputs: args, output } => {
            let image = image_arg(&args)?;
            let loaded = load(image)?;
            let opts = InputOptions {
                quiet: true,
                ..input_options(&args, image)
            };
            let resolved = inputs::resolve(&loaded.definition, &loaded.base_dir, &opts).map_err(input_failure)?;
            inputs::update_lock(&loaded.definition, &opts, &resolved.packages).map_err(input_failure)?;
            let pinned = lock::LockFile {
                version: lock::LOCK_VERSION,
                resolution_inputs: lock::resolution_inputs(&loaded.definition),
                packages: resolved.packages.clone(),
            };
            let cache =
                uvmkit_fetch::cache::ContentCache::open(&opts.cache_dir).map_err(|e| (exit::FETCH, e.to_string()))?;
            let report = bundle::write_bundle(&loaded, &pinned, &cache, &output).map_err(bundle_failure)?;
            eprintln!(
                "wrote {}: {} members, {} packages, {}",
                output.display(),
                report.members,
                report.blobs,
                human_bytes(report.bytes)
            );
            Ok(())
        }
        Command::Inspect { inputs: args, files } => {
            let image = image_arg(&args)?;
            let loaded = load(image)?;
            let resolved = inputs::resolve(&loaded.definition, &loaded.base_dir, &input_options(&args, image))
                .map_err(input_failure)?;
            uvmkit::inspect::print(&loaded, &resolved, files).map_err(|e| (exit::BUILD, e))
        }
        Command::Kernel(KernelCommand::Check {
            config,
            targets,
            features,
        }) => {
            let text = std::fs::read_to_string(&config)
                .map_err(|e| (exit::BAD_INPUT, format!("cannot read {}: {e}", config.display())))?;
            for f in &features {
                if kernelconfig::feature(f).is_none() {
                    return Err((
                        exit::BAD_INPUT,
                        format!(
                            "unknown feature {f:?}; known: {}",
                            kernelconfig::feature_names().join(", ")
                        ),
                    ));
                }
            }
            let targets = if targets.is_empty() {
                Target::ALL.to_vec()
            } else {
                targets
            };
            let selected = kernelconfig::selected(&targets, &features);
            let missing = kernelconfig::check(&text, &selected);
            let names: Vec<&str> = selected.iter().map(|f| f.name.as_str()).collect();
            if missing.is_empty() {
                println!("{}: everything {} need is there", config.display(), names.join(", "));
                Ok(())
            } else {
                for m in &missing {
                    println!("missing: {m}");
                }
                Err((
                    exit::BAD_INPUT,
                    format!(
                        "{} lacks {} option(s) that {} need",
                        config.display(),
                        missing.len(),
                        names.join(", ")
                    ),
                ))
            }
        }
    }
}
