//! The `uvmkit` command.
//!
//! Parses the command line, calls the library (`uvmkit::pipeline` for the stages) and turns
//! its typed errors into the exit codes the README documents.

#![deny(missing_docs)]

use clap::{Args, Parser, Subcommand};
#[cfg(unix)]
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use uvmkit::connect::shell::Shell;
use uvmkit::connect::{ConnectError, ConnectOptions};
#[cfg(unix)]
use uvmkit::definition::kernel_config::{self, MissingOption};
#[cfg(unix)]
use uvmkit::definition::{self, parse_size, DiskSizeError, Format, LoadedDefinition, Target};
#[cfg(unix)]
use uvmkit::encode::uki::{SignerError, UkiSigner};
#[cfg(unix)]
use uvmkit::inputs::bundle::{self, UnpackedBundle};
#[cfg(unix)]
use uvmkit::inputs::lock::lock_path;
#[cfg(unix)]
use uvmkit::inputs::{InputOptions, LockUse};
use uvmkit::instance::{parse_docker_setting, parse_interface, InstanceError, InstanceFlags, VolumeFormat};
#[cfg(unix)]
use uvmkit::pipeline::{self, exit, BuildOptions, CommandError, DEFAULT_EPOCH};
#[cfg(unix)]
use uvmkit::publish::human_bytes;
#[cfg(unix)]
use uvmkit_fetch::cache::{ContentCache, Sha256Digest};

/// `SOURCE_DATE_EPOCH` when unset: 1980-01-01, as `uvmkit::pipeline::DEFAULT_EPOCH` (the
/// pipeline is not built on Windows).
#[cfg(not(unix))]
const DEFAULT_EPOCH: u64 = 315_532_800;

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
    #[cfg(unix)]
    /// Build the artifacts of an image definition.
    Build(BuildArgs),
    #[cfg(unix)]
    /// Resolve and cache every input of an image definition, and say what and how much.
    Fetch(InputArgs),
    #[cfg(unix)]
    /// Write an offline bundle: the definition, its lock, every pinned .deb and the local files
    /// it references, in one tar file (`uvmkit build --offline --bundle FILE` builds from it).
    Bundle {
        #[command(flatten)]
        inputs: InputArgs,
        /// The bundle file to write.
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
    #[cfg(unix)]
    /// Print the resolved inputs: packages with versions, files per package, modules, kernel.
    Inspect {
        #[command(flatten)]
        inputs: InputArgs,
        /// Also list every file that goes into the image with its bytes and the package it
        /// came from, largest first.
        #[arg(long)]
        files: bool,
        /// Print the report as JSON (every file included).
        #[arg(long)]
        json: bool,
    },
    #[cfg(unix)]
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
    #[cfg(unix)]
    /// Kernel tools.
    #[command(subcommand)]
    Kernel(KernelCommand),
    /// Write a settings volume for one VM (hostname, SSH keys, addresses, engine settings,
    /// CA certificates, images to preload): attach it as a disk or CD, and the VM's init
    /// applies it at every boot.
    Instance(InstanceArgs),
    /// Connect the Docker CLI to a VM: check its SSH host key, fetch its client certificate
    /// over SSH into a Docker context, and print the environment lines for your shell.
    Connect(ConnectArgs),
    /// Print the environment lines for a context `uvmkit connect` made (no SSH).
    Env(EnvArgs),
    /// The build commands, which need a Linux or macOS host.
    #[cfg(not(unix))]
    #[command(external_subcommand)]
    NeedsUnix(Vec<String>),
}

#[derive(Args)]
struct InstanceArgs {
    /// The volume to write.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: PathBuf,
    /// iso (a CD/DVD), raw, vhdx or vmdk (a disk); default: the output's extension.
    #[arg(long, value_parser = parse_volume_format)]
    format: Option<VolumeFormat>,
    /// A uvmkit.toml to start from; its relative paths are relative to its own directory.
    /// Flags apply over it.
    #[arg(long, value_name = "FILE.toml")]
    settings: Option<PathBuf>,
    /// The VM's host name.
    #[arg(long)]
    hostname: Option<String>,
    /// A public key file (FILE.pub) whose keys may log in as root; repeatable.
    #[arg(long = "ssh-key", value_name = "FILE.pub")]
    ssh_keys: Vec<PathBuf>,
    /// A fixed address for an interface (by name or MAC):
    /// NAME=ADDRESS/PREFIX[,gw=GATEWAY][,dns=SERVER]... or NAME=dhcp; repeatable.
    #[arg(long = "interface", value_name = "NAME=ADDR/PREFIX,gw=..,dns=..", value_parser = parse_interface)]
    interfaces: Vec<uvmkit_init_config::InterfaceSection>,
    /// A PEM file of CA certificates whose client certificates dockerd accepts too.
    #[arg(long, value_name = "FILE.pem")]
    client_ca: Option<PathBuf>,
    /// A PEM file of a CA the VM trusts (a TLS-inspecting proxy, a private registry);
    /// repeatable.
    #[arg(long = "ca-cert", value_name = "FILE.pem")]
    ca_certs: Vec<PathBuf>,
    /// A `docker save` archive loaded into the engine at boot; repeatable.
    #[arg(long, value_name = "FILE.tar")]
    preload: Vec<PathBuf>,
    /// An engine setting, KEY=VALUE with a daemon.json key and a TOML value
    /// (`mtu=1400`, `'dns=["10.0.2.3"]'`) or a plain string (`log-driver=local`); repeatable.
    #[arg(long = "docker-setting", value_name = "KEY=VALUE", value_parser = parse_docker_setting)]
    docker_settings: Vec<(String, toml::Value)>,
}

#[derive(Args)]
struct ConnectArgs {
    /// The VM's address or host name, as this machine reaches it.
    host: String,
    /// The VM's SSH port.
    #[arg(long, short = 'p', default_value_t = 22)]
    port: u16,
    /// The login name.
    #[arg(long, short = 'u', default_value = "root")]
    user: String,
    /// The SSH private key to log in with (default: your ssh client's keys and agent).
    #[arg(long, short = 'i', value_name = "KEY")]
    identity: Option<PathBuf>,
    /// The Docker context's name (default: uvmkit-HOST, with -PORT for a non-default
    /// --docker-port).
    #[arg(long)]
    name: Option<String>,
    /// The VM's SSH host key fingerprint (SHA256:..., as its console prints it); without it
    /// the key pinned by an earlier connect is required, or the first one seen is trusted.
    #[arg(long, value_name = "SHA256:...")]
    fingerprint: Option<String>,
    /// The engine's TLS port as this machine reaches it (a forwarded port).
    #[arg(long, default_value_t = uvmkit::connect::DOCKER_TLS_PORT)]
    docker_port: u16,
    /// The syntax of the environment lines: bash, zsh, fish, powershell or cmd (default: your
    /// shell; PowerShell on Windows).
    #[arg(long, value_parser = parse_shell)]
    shell: Option<Shell>,
}

#[derive(Args)]
struct EnvArgs {
    /// The context's name, as `uvmkit connect` printed it.
    name: String,
    /// bash, zsh, fish, powershell or cmd (default: your shell; PowerShell on Windows).
    #[arg(long, value_parser = parse_shell)]
    shell: Option<Shell>,
}

fn parse_volume_format(s: &str) -> Result<VolumeFormat, String> {
    VolumeFormat::from_name(s).ok_or_else(|| format!("unknown format {s:?}; use iso, raw, vhdx or vmdk"))
}

fn parse_shell(s: &str) -> Result<Shell, String> {
    Shell::from_name(s).ok_or_else(|| format!("unknown shell {s:?}; use bash, zsh, fish, powershell or cmd"))
}

#[cfg(unix)]
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

#[cfg(unix)]
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

#[cfg(unix)]
#[derive(Args)]
struct BuildArgs {
    #[command(flatten)]
    inputs: InputArgs,
    /// Output directory.
    #[arg(long, short = 'o', default_value = "out")]
    output: PathBuf,
    /// Formats to write, comma-separated (efi, iso, raw, vhdx, vmdk, vmdk-stream, qcow2, ova,
    /// vagrant-virtualbox, vagrant-libvirt, vagrant-hyperv); default: the definition's `formats`.
    #[arg(long, value_delimiter = ',', value_parser = parse_format)]
    format: Vec<Format>,
    /// Virtual disk size for the disk images and packages (such as 64GiB); default: `[disk] size`.
    #[arg(long, value_parser = parse_disk_size)]
    disk_size: Option<u64>,
    /// Print a machine-readable summary (artifacts, sizes, sha256) on stdout.
    #[arg(long)]
    json: bool,
    /// Build from an offline bundle (`uvmkit bundle`) instead of IMAGE: its packages are
    /// verified against the signed archive indexes it carries and imported into the cache.
    #[arg(long, value_name = "FILE")]
    bundle: Option<PathBuf>,
    /// The sha256 `uvmkit bundle` printed for the bundle: the build refuses a bundle whose
    /// bytes differ (its definition and local files are not signed by Debian; this pins them).
    #[arg(long, value_name = "HEX", requires = "bundle", value_parser = parse_sha256)]
    bundle_sha256: Option<Sha256Digest>,
    /// Sign the UKI (the .efi, and the one on the disks' ESP and in the ISO) for Secure Boot
    /// with this RSA private key: PEM, PKCS #8 or PKCS #1, unencrypted. Needs --sign-cert.
    #[arg(long, value_name = "KEY.pem", env = "UVMKIT_SIGN_KEY", requires = "sign_cert")]
    sign_key: Option<PathBuf>,
    /// The PEM certificate of --sign-key (firmware boots the UKI when it is in `db`), followed
    /// by any intermediate certificates up to the one in `db`.
    #[arg(long, value_name = "CERT.pem", env = "UVMKIT_SIGN_CERT", requires = "sign_key")]
    sign_cert: Option<PathBuf>,
}

#[cfg(unix)]
fn parse_target(s: &str) -> Result<Target, String> {
    Target::from_name(s).ok_or_else(|| format!("unknown target {s:?}; use hyperv, vmware, virtualbox or qemu"))
}

#[cfg(unix)]
fn parse_format(s: &str) -> Result<Format, String> {
    Format::from_name(s).ok_or_else(|| format!("unknown format {s:?}; use one of {}", Format::names()))
}

#[cfg(unix)]
fn parse_sha256(s: &str) -> Result<Sha256Digest, String> {
    s.trim()
        .to_ascii_lowercase()
        .parse()
        .map_err(|_| format!("{s:?} is not a sha256 (64 hexadecimal digits, as `uvmkit bundle` prints)"))
}

#[cfg(unix)]
fn parse_disk_size(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

/// Why the command failed: the library's errors, and the command line's own.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[cfg(unix)]
    /// A library call failed.
    #[error(transparent)]
    Command(CommandError),
    /// `uvmkit instance` failed.
    #[error(transparent)]
    Instance(InstanceError),
    /// `uvmkit connect` or `uvmkit env` failed.
    #[error(transparent)]
    Connect(ConnectError),
    /// No Docker config directory could be found.
    #[error("cannot find the Docker config directory: set DOCKER_CONFIG (or HOME, USERPROFILE on Windows)")]
    NoDockerConfig,
    /// A build command on a host that cannot build.
    #[cfg(not(unix))]
    #[error("uvmkit {0} needs a Linux or macOS host; on Windows, uvmkit runs instance, connect and env")]
    NeedsUnix(String),
    /// No uvmkit config directory could be found.
    #[error("cannot find a directory for uvmkit's pinned host keys: set UVMKIT_CONFIG (or HOME, APPDATA on Windows)")]
    NoUvmkitConfig,
    #[cfg(unix)]
    /// No definition was named.
    #[error("name the image definition (IMAGE.toml)")]
    NoImage,
    #[cfg(unix)]
    /// Both a definition and a bundle were named.
    #[error("give either IMAGE or --bundle, not both")]
    ImageAndBundle,
    #[cfg(unix)]
    /// `--disk-size` (or `[disk] size` with `--format`) is not a size the formats allow.
    #[error("disk size: {0}")]
    DiskSize(DiskSizeError),
    #[cfg(unix)]
    /// `--sign-key` or `--sign-cert` cannot be used.
    #[error(transparent)]
    Signer(SignerError),
    /// `SOURCE_DATE_EPOCH` is not a number.
    #[error("SOURCE_DATE_EPOCH={0:?} is not a number of seconds")]
    Epoch(String),
    #[cfg(unix)]
    /// `kernel check`: the `.config` cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    KernelConfig {
        /// The `.config` file.
        path: PathBuf,
        /// What reading it reported.
        source: std::io::Error,
    },
    #[cfg(unix)]
    /// `kernel check --feature` names no feature.
    #[error("unknown feature {0:?}; known: {known}", known = kernel_config::feature_names().join(", "))]
    UnknownFeature(String),
    #[cfg(unix)]
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
            #[cfg(unix)]
            Failure::Command(e) => e.exit_code(),
            Failure::Instance(e) => e.exit_code(),
            Failure::Connect(e) => e.exit_code(),
            _ => 2, // bad input, as `uvmkit::pipeline::exit::BAD_INPUT`
        }
    }
}

#[cfg(unix)]
impl<E: Into<CommandError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Command(e.into())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger_init();
    let result = match cli.command {
        #[cfg(unix)]
        Command::Build(args) => build(&args).map(|()| 0),
        #[cfg(unix)]
        Command::Fetch(args) => fetch(&args).map(|()| 0),
        #[cfg(unix)]
        Command::Bundle { inputs, output } => write_bundle(&inputs, &output).map(|()| 0),
        #[cfg(unix)]
        Command::Inspect { inputs, files, json } => inspect(&inputs, files, json).map(|()| 0),
        #[cfg(unix)]
        Command::Outdated { inputs, json } => outdated(&inputs, json),
        #[cfg(unix)]
        Command::Kernel(KernelCommand::Check {
            config,
            targets,
            features,
        }) => kernel_check(&config, targets, &features).map(|()| 0),
        Command::Instance(args) => instance(&args).map(|()| 0),
        Command::Connect(args) => connect(&args).map(|()| 0),
        Command::Env(args) => env(&args).map(|()| 0),
        #[cfg(not(unix))]
        Command::NeedsUnix(args) => Err(Failure::NeedsUnix(args.first().cloned().unwrap_or_default())),
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

#[cfg(unix)]
fn load(path: &Path) -> Result<LoadedDefinition, Failure> {
    Ok(definition::load(path).map_err(CommandError::from)?)
}

#[cfg(unix)]
/// The definition named on the command line.
fn image_arg(args: &InputArgs) -> Result<&Path, Failure> {
    args.image.as_deref().ok_or(Failure::NoImage)
}

#[cfg(unix)]
fn cache_dir(args: &InputArgs) -> PathBuf {
    args.cache.clone().unwrap_or_else(ContentCache::default_dir)
}

#[cfg(unix)]
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

#[cfg(unix)]
/// Unpacks `--bundle FILE` into a temporary directory, importing its blobs once the signed
/// chain and the pin (when given) hold, and says what was verified and what was not.
fn open_bundle(file: &Path, args: &BuildArgs) -> Result<UnpackedBundle, Failure> {
    if args.inputs.image.is_some() {
        return Err(Failure::ImageAndBundle);
    }
    let cache = ContentCache::open(&cache_dir(&args.inputs)).map_err(CommandError::Cache)?;
    // A new name: import_bundle creates the directory itself and refuses one that exists.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("uvmkit-bundle-{}-{nanos}", std::process::id()));
    let pin = args.bundle_sha256.as_ref();
    let unpacked = bundle::import_bundle(file, &cache, &dir, pin)?;
    if pin.is_none() {
        let keyring = match &unpacked.own_keyring {
            Some(k) => format!(
                "; its packages are checked against its own [debian] keyring ({}), which came with it, so they are only as trustworthy as the bundle",
                k.display()
            ),
            None => "; its packages are checked against Debian's archive keys".into(),
        };
        eprintln!(
            "warning: bundle {} is not pinned: the bundle's definition and local files are trusted as given{keyring}. Pin it with --bundle-sha256 {} (check that this is the sha256 `uvmkit bundle` printed where the bundle was made)",
            file.display(),
            unpacked.sha256
        );
    }
    if !args.inputs.quiet && !args.json {
        for age in &unpacked.indexes {
            eprintln!(
                "bundle: {} index signed{}{}",
                age.suite,
                age.date.as_deref().map(|d| format!(", dated {d}")).unwrap_or_default(),
                age.expired
                    .as_deref()
                    .map(|v| format!(
                        "; past its Valid-Until ({v}): a bundle is a snapshot, its packages are as of that date"
                    ))
                    .unwrap_or_default()
            );
        }
    }
    Ok(unpacked)
}

#[cfg(unix)]
/// `uvmkit build`.
fn build(args: &BuildArgs) -> Result<(), Failure> {
    // Kept until the build is done: the bundle's local files are read from it.
    let unpacked = args.bundle.as_deref().map(|b| open_bundle(b, args)).transpose()?;
    let definition = match &unpacked {
        Some(u) => u.definition.clone(),
        None => image_arg(&args.inputs)?.to_path_buf(),
    };
    // The key is checked before anything is fetched or built.
    let signer = match (&args.sign_key, &args.sign_cert) {
        (Some(key), Some(cert)) => Some(UkiSigner::load(key, cert).map_err(Failure::Signer)?),
        _ => None,
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
        signer,
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
        if let Some(s) = &report.uki_signature {
            eprintln!(
                "  UKI signed by {} (certificate sha256 {})",
                s.subject, s.certificate_sha256
            );
        }
        eprintln!("  SHA256SUMS, manifest.json");
    }
    Ok(())
}

#[cfg(unix)]
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

#[cfg(unix)]
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
    // The pin travels apart from the bundle: whoever builds from it checks it.
    println!("sha256 {}", report.sha256);
    eprintln!(
        "  (also in {}); build from it with: uvmkit build --offline --bundle {} --bundle-sha256 {}",
        report.sha256_file.display(),
        output.display(),
        report.sha256
    );
    Ok(())
}

#[cfg(unix)]
/// `uvmkit inspect`.
fn inspect(args: &InputArgs, files: bool, json: bool) -> Result<(), Failure> {
    let image = image_arg(args)?;
    let loaded = load(image)?;
    let resolved = uvmkit::inputs::resolve(
        &loaded.definition,
        &loaded.base_dir,
        &input_options(args, image, false),
        uvmkit::inputs::DebFiles::ToUnpack,
    )
    .map_err(CommandError::from)?;
    Ok(uvmkit::inspect::print(&loaded, &resolved, files, json).map_err(CommandError::from)?)
}

#[cfg(unix)]
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

#[cfg(unix)]
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

/// `uvmkit instance`.
fn instance(args: &InstanceArgs) -> Result<(), Failure> {
    let format = match args.format {
        Some(f) => f,
        None => VolumeFormat::from_path(&args.output)
            .ok_or_else(|| Failure::Instance(InstanceError::NoFormat(args.output.clone())))?,
    };
    let flags = InstanceFlags {
        settings: args.settings.clone(),
        hostname: args.hostname.clone(),
        ssh_keys: args.ssh_keys.clone(),
        interfaces: args.interfaces.clone(),
        client_ca: args.client_ca.clone(),
        ca_certificates: args.ca_certs.clone(),
        preload: args.preload.clone(),
        docker_settings: args.docker_settings.clone(),
    };
    let plan = uvmkit::instance::plan(&flags).map_err(Failure::Instance)?;
    let written =
        uvmkit::instance::write(&plan, format, &args.output, source_date_epoch()?).map_err(Failure::Instance)?;
    let size = uvmkit::instance::human_size;
    eprintln!(
        "wrote {}: {} settings volume {}, {} file(s) ({}), {} file{}; sha256 {}",
        written.path.display(),
        written.format.name(),
        uvmkit_instance_config::VOLUME_LABEL,
        written.files,
        std::iter::once(uvmkit_instance_config::SETTINGS_FILE.to_string())
            .chain(plan.files.iter().map(|f| f.path.clone()))
            .collect::<Vec<_>>()
            .join(", "),
        size(written.file_size),
        if written.virtual_size != written.file_size {
            format!(" ({} virtual)", size(written.virtual_size))
        } else {
            String::new()
        },
        &written.sha256[..16]
    );
    Ok(())
}

fn docker_config() -> Result<PathBuf, Failure> {
    uvmkit::connect::context::docker_config_dir().ok_or(Failure::NoDockerConfig)
}

/// `uvmkit connect`.
fn connect(args: &ConnectArgs) -> Result<(), Failure> {
    let options = ConnectOptions {
        host: args.host.clone(),
        ssh_port: args.port,
        user: args.user.clone(),
        identity: args.identity.clone(),
        name: args.name.clone(),
        fingerprint: args.fingerprint.clone(),
        docker_port: args.docker_port,
        docker_config: docker_config()?,
        uvmkit_config: uvmkit::connect::uvmkit_config_dir().ok_or(Failure::NoUvmkitConfig)?,
        ssh: "ssh".into(),
        keyscan: "ssh-keyscan".into(),
    };
    let connected = uvmkit::connect::connect(&options, &mut |line| eprintln!("{line}")).map_err(Failure::Connect)?;
    let shell = args.shell.unwrap_or_else(Shell::detect);
    print!(
        "{}",
        uvmkit::connect::shell::env_lines(shell, &connected.name, &connected.docker_host, &connected.cert_path)
    );
    Ok(())
}

/// `uvmkit env`.
fn env(args: &EnvArgs) -> Result<(), Failure> {
    let shell = args.shell.unwrap_or_else(Shell::detect);
    let lines = uvmkit::connect::env(&docker_config()?, &args.name, shell).map_err(Failure::Connect)?;
    print!("{lines}");
    Ok(())
}
