//! The image definition: the TOML file a user writes (`images/*.toml`).
//!
//! Parsing is strict: unknown keys are errors, and every error names the file, the line and
//! column, and the key, with what is allowed there. Relative paths in the definition are
//! relative to the definition file's directory.

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
pub use uvmkit_service_spec::{Readiness, RestartPolicy, RlimitValue, ServiceSpec};

/// A hypervisor the image must boot under; selects kernel modules and required options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Microsoft Hyper-V (VMBus storage and network, Generation 2 UEFI).
    Hyperv,
    /// VMware Workstation, Fusion and ESXi (pvscsi, LSI Logic, vmxnet3, e1000).
    Vmware,
    /// Oracle VirtualBox (AHCI, e1000, virtio-net).
    Virtualbox,
    /// QEMU/KVM and cloud-hypervisor (virtio).
    Qemu,
}

impl Target {
    /// All targets, in a fixed order.
    pub const ALL: [Target; 4] = [Target::Hyperv, Target::Vmware, Target::Virtualbox, Target::Qemu];

    /// The lowercase name used in definitions and in `kernel-config/`.
    pub fn name(self) -> &'static str {
        match self {
            Target::Hyperv => "hyperv",
            Target::Vmware => "vmware",
            Target::Virtualbox => "virtualbox",
            Target::Qemu => "qemu",
        }
    }

    /// Parses a target name as the command line gives it.
    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// An artifact format `uvmkit build` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `NAME.efi` (UKI), `NAME-kernel` and `NAME-initrd.img`.
    Efi,
    /// `NAME.iso`, hybrid BIOS/UEFI.
    Iso,
    /// `NAME.raw`, a sparse GPT disk.
    Raw,
    /// `NAME.vhdx`, Hyper-V.
    Vhdx,
    /// `NAME.vmdk`, monolithicSparse.
    Vmdk,
    /// `NAME-stream.vmdk`, streamOptimized.
    VmdkStream,
}

impl Format {
    /// Every format, in the order they are built.
    pub const ALL: [Format; 6] = [
        Format::Efi,
        Format::Iso,
        Format::Raw,
        Format::Vhdx,
        Format::Vmdk,
        Format::VmdkStream,
    ];

    /// The name used in definitions and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Efi => "efi",
            Format::Iso => "iso",
            Format::Raw => "raw",
            Format::Vhdx => "vhdx",
            Format::Vmdk => "vmdk",
            Format::VmdkStream => "vmdk-stream",
        }
    }

    /// Parses a format name as the command line gives it.
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// True for the formats that hold a GPT disk.
    pub fn is_disk(self) -> bool {
        matches!(self, Format::Raw | Format::Vhdx | Format::Vmdk | Format::VmdkStream)
    }
}

/// A whole image definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDefinition {
    /// Image name: artifact file names derive from it (`NAME.efi`, `NAME.iso`...).
    pub name: String,
    /// The VM's hostname.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// Kernel command line (without `initrd=`).
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// Hypervisors the image must boot under.
    #[serde(default = "default_targets")]
    pub targets: Vec<Target>,
    /// Kernel features the image needs beyond booting (for example `containers`); each names
    /// a file in `kernel-config/`.
    #[serde(default)]
    pub features: Vec<String>,
    /// Artifacts `uvmkit build` writes when `--format` is not given.
    #[serde(default = "default_formats")]
    pub formats: Vec<Format>,
    /// Where the Debian packages come from.
    #[serde(default)]
    pub debian: DebianSection,
    /// The kernel and its modules.
    #[serde(default)]
    pub kernel: KernelSection,
    /// Packages whose files go into the image.
    #[serde(default)]
    pub packages: Vec<PackageSelection>,
    /// Files, directories and links added to the image.
    #[serde(default)]
    pub files: Vec<ExtraFile>,
    /// How the initrd is compressed.
    #[serde(default)]
    pub initrd: InitrdSection,
    /// Disk image settings (raw, VHDX, VMDK).
    #[serde(default)]
    pub disk: DiskSection,
    /// ISO settings.
    #[serde(default)]
    pub iso: IsoSection,
    /// Settings for the init (PID 1).
    #[serde(default)]
    pub init: InitSection,
    /// `[network]`: the init configures the network; absent, the network stays down.
    #[serde(default)]
    pub network: Option<NetworkSection>,
    /// `[data_disk]`: the init keeps state on the data disk; absent, it only looks for it.
    #[serde(default)]
    pub data_disk: Option<DataDiskSection>,
    /// `[[services]]`: programs the init starts in order, waits for and supervises.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// `[ssh]`: who may log in over SSH (as root, with a key; never with a password).
    #[serde(default)]
    pub ssh: Option<SshSection>,
    /// `[preload]`: container image archives loaded into a service once, on first boot.
    #[serde(default)]
    pub preload: Option<PreloadSection>,
}

/// `[ssh]`: SSH access. sshd itself is a `[[services]]` entry; this says who may log in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSection {
    /// Public keys (`ssh-ed25519 AAAA... comment` lines) written to `/root/.ssh/authorized_keys`.
    #[serde(default)]
    pub authorized_keys: Vec<String>,
}

/// `[preload]`: container image archives (`docker save` or OCI archives) that go into the image
/// and are loaded once, on the first boot with a given data disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreloadSection {
    /// The archives, relative to the definition; each goes to `/usr/share/uvmkit/preload/`.
    pub images: Vec<String>,
    /// The service that loads them; it must be ready first.
    #[serde(default = "default_preload_service")]
    pub service: String,
    /// The load command; the archive's path inside the image is appended.
    #[serde(default = "default_preload_command")]
    pub command: Vec<String>,
}

fn default_preload_service() -> String {
    "dockerd".into()
}

fn default_preload_command() -> Vec<String> {
    vec!["/usr/bin/docker".into(), "load".into(), "-i".into()]
}

/// `[network]`: how the init brings the network up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Run a DHCPv4 client on every Ethernet interface (but the first when `static` is given).
    #[serde(default = "default_true")]
    pub dhcp: bool,
    /// Seconds boot waits for a first address (DHCP goes on trying afterwards).
    #[serde(default = "default_network_timeout")]
    pub timeout: u64,
    /// A fixed IPv4 address for the first Ethernet interface.
    #[serde(default, rename = "static")]
    pub static_v4: Option<StaticNetwork>,
}

fn default_network_timeout() -> u64 {
    30
}

/// `[network.static]`: a fixed IPv4 configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticNetwork {
    /// Address and prefix length, `192.168.1.5/24`.
    pub address: String,
    /// Default gateway.
    #[serde(default)]
    pub gateway: Option<String>,
    /// DNS servers.
    #[serde(default)]
    pub dns: Vec<String>,
}

/// `[data_disk]`: persistent state for a container host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataDiskSection {
    /// With no `uvmkit-data` partition, partition and format a whole disk that is entirely
    /// blank (never one that holds anything).
    #[serde(default)]
    pub format_blank: bool,
    /// Directories bind-mounted from the data disk (`/var/lib/docker` from `<data>/docker`).
    #[serde(default)]
    pub binds: Vec<String>,
    /// Create SSH host keys and Docker TLS material (CA, server and client certificates) in
    /// `<data>/uvmkit/identity` at boot; the client bundle is `<data>/uvmkit/identity/tls/client`.
    #[serde(default)]
    pub identity: bool,
}

fn default_hostname() -> String {
    "uvmkit".into()
}
fn default_cmdline() -> String {
    "console=tty0 console=ttyS0".into()
}
fn default_targets() -> Vec<Target> {
    Target::ALL.to_vec()
}
fn default_formats() -> Vec<Format> {
    vec![Format::Efi]
}

/// `[debian]`: the archive the kernel and packages come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianSection {
    /// Release name (`bookworm`).
    #[serde(default = "default_suite")]
    pub suite: String,
    /// Archive components (`main`).
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    /// Debian architecture (`amd64`).
    #[serde(default = "default_architecture")]
    pub architecture: String,
    /// Mirror URL; when absent, `UVMKIT_DEBIAN_MIRROR` or the host's apt sources.
    pub mirror: Option<String>,
    /// An OpenPGP keyring to verify the archive with instead of the built-in Debian keys.
    pub keyring: Option<PathBuf>,
}

impl Default for DebianSection {
    fn default() -> Self {
        DebianSection {
            suite: default_suite(),
            components: default_components(),
            architecture: default_architecture(),
            mirror: None,
            keyring: None,
        }
    }
}

fn default_suite() -> String {
    "bookworm".into()
}
fn default_components() -> Vec<String> {
    vec!["main".into()]
}
fn default_architecture() -> String {
    "amd64".into()
}

/// `[kernel]`: a Debian kernel package, or a local kernel with its modules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSection {
    /// Debian package providing the kernel (`linux-image-amd64`). Ignored when `path` is set.
    #[serde(default = "default_kernel_package")]
    pub package: String,
    /// A local kernel image (bzImage with EFI stub), instead of a package.
    pub path: Option<PathBuf>,
    /// With `path`: the directory holding `lib/modules/RELEASE/` (or `RELEASE/` itself).
    pub modules_dir: Option<PathBuf>,
    /// With `path`: the kernel's `.config`, checked against the targets.
    pub config: Option<PathBuf>,
    /// Extra modules to load at boot, beyond those the targets and features need.
    #[serde(default)]
    pub modules: Vec<String>,
}

impl Default for KernelSection {
    fn default() -> Self {
        KernelSection {
            package: default_kernel_package(),
            path: None,
            modules_dir: None,
            config: None,
            modules: vec![],
        }
    }
}

fn default_kernel_package() -> String {
    "linux-image-amd64".into()
}

/// `[[packages]]`: a Debian package whose files go into the image.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSelection {
    /// Package name.
    pub name: String,
    /// Globs of paths to take (`/usr/sbin/*`). Default: executables and `/etc`.
    pub include: Option<Vec<String>>,
    /// Globs of paths to leave out, applied after `include`. Docs, man pages and locales are
    /// always left out.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// `[[files]]`: one node added to the image. Exactly one of `contents`, `source`,
/// `directory`, `symlink` or `mkdir` says what it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraFile {
    /// Absolute path in the image.
    pub path: String,
    /// Inline contents of a regular file.
    pub contents: Option<String>,
    /// A local file (relative to the definition) copied as a regular file.
    pub source: Option<PathBuf>,
    /// A local directory (relative to the definition) copied recursively below `path`.
    pub directory: Option<PathBuf>,
    /// Makes `path` a symbolic link to this target.
    pub symlink: Option<String>,
    /// Makes `path` an empty directory.
    #[serde(default)]
    pub mkdir: bool,
    /// Permission bits (`0o644`, or a string `"0644"`). Default 0644 for files, 0755 for
    /// directories and for local files that are executable.
    #[serde(default, deserialize_with = "deserialize_mode")]
    pub mode: Option<u32>,
    /// Owner user id (default 0).
    #[serde(default)]
    pub uid: u32,
    /// Owner group id (default 0).
    #[serde(default)]
    pub gid: u32,
}

/// What an `[[files]]` entry makes, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtraFileKind<'a> {
    /// Inline contents.
    Contents(&'a str),
    /// A local file.
    Source(&'a Path),
    /// A local directory tree.
    Directory(&'a Path),
    /// A symbolic link.
    Symlink(&'a str),
    /// An empty directory.
    Mkdir,
}

impl ExtraFile {
    /// The one thing this entry makes; `validate` guarantees there is exactly one.
    pub fn kind(&self) -> ExtraFileKind<'_> {
        if let Some(c) = &self.contents {
            ExtraFileKind::Contents(c)
        } else if let Some(s) = &self.source {
            ExtraFileKind::Source(s)
        } else if let Some(d) = &self.directory {
            ExtraFileKind::Directory(d)
        } else if let Some(t) = &self.symlink {
            ExtraFileKind::Symlink(t)
        } else {
            ExtraFileKind::Mkdir
        }
    }
}

fn deserialize_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Int(u32),
        Text(String),
    }
    let mode = match Mode::deserialize(d)? {
        Mode::Int(m) => m,
        Mode::Text(s) => {
            let digits = s.strip_prefix("0o").unwrap_or(&s);
            u32::from_str_radix(digits, 8).map_err(|_| {
                serde::de::Error::custom(format!("mode {s:?} is not an octal number such as \"0644\" or 0o755"))
            })?
        }
    };
    if mode > 0o7777 {
        return Err(serde::de::Error::custom(format!(
            "mode {mode:#o} has bits beyond 0o7777; give permission bits only, such as 0o755"
        )));
    }
    Ok(Some(mode))
}

/// `[initrd]`: compression of the initramfs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitrdSection {
    /// zstd level, 1 to 19 (0: no compression).
    #[serde(default = "default_zstd_level")]
    pub compression_level: i32,
}

impl Default for InitrdSection {
    fn default() -> Self {
        InitrdSection {
            compression_level: default_zstd_level(),
        }
    }
}

fn default_zstd_level() -> i32 {
    9
}

/// `[disk]`: the GPT disk images (raw, VHDX, VMDK).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSection {
    /// Virtual size of the disk, such as `"8GiB"` or `"512MiB"`.
    #[serde(default = "default_disk_size", deserialize_with = "deserialize_size")]
    pub size: u64,
    /// VHDX block size, such as `"32MiB"`.
    #[serde(default = "default_vhdx_block", deserialize_with = "deserialize_size")]
    pub vhdx_block_size: u64,
    /// Write a fixed (fully allocated) VHDX instead of a dynamic one.
    #[serde(default)]
    pub vhdx_fixed: bool,
    /// Files placed on the data partition (`uvmkit-data`), paths relative to its root.
    #[serde(default)]
    pub data_files: Vec<ExtraFile>,
}

impl Default for DiskSection {
    fn default() -> Self {
        DiskSection {
            size: default_disk_size(),
            vhdx_block_size: default_vhdx_block(),
            vhdx_fixed: false,
            data_files: vec![],
        }
    }
}

fn default_disk_size() -> u64 {
    8 << 30
}
fn default_vhdx_block() -> u64 {
    // 1 MiB, as Microsoft recommends for Linux guests: small files for sparse ext4 layouts.
    1 << 20
}

/// Parses sizes such as `"8GiB"`, `"512MiB"`, `"1G"`, `"4096"` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("size {text:?} does not start with a number"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        other => {
            return Err(format!("size {text:?} has unit {other:?}; use B, KiB, MiB, GiB or TiB"));
        }
    };
    n.checked_mul(mult).ok_or_else(|| format!("size {text:?} is too large"))
}

fn deserialize_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Int(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Int(n) => Ok(n),
        Size::Text(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

/// `[iso]`: the hybrid ISO.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsoSection {
    /// Volume label (ISO 9660 d-characters, at most 32); default: the image name in upper case.
    pub volume_label: Option<String>,
}

/// `[init]`: how the init brings the system up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitSection {
    /// Move the root from the initramfs to a tmpfs before anything runs (runc needs
    /// `pivot_root`, which the initramfs does not allow).
    #[serde(default = "default_true")]
    pub root_on_tmpfs: bool,
}

impl Default for InitSection {
    fn default() -> Self {
        InitSection { root_on_tmpfs: true }
    }
}

fn default_true() -> bool {
    true
}

/// An image definition loaded from a file, with the directory relative paths start from.
#[derive(Debug, Clone)]
pub struct LoadedDefinition {
    /// The parsed definition.
    pub definition: ImageDefinition,
    /// The file it came from.
    pub path: PathBuf,
    /// The directory relative paths in it are relative to.
    pub base_dir: PathBuf,
    /// The file's bytes (hashed into the manifest and the disk identifiers).
    pub source_text: String,
}

/// Why a definition could not be loaded.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read { path: PathBuf, source: std::io::Error },
    /// The TOML is malformed or a key is unknown or has the wrong type.
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// The TOML is well-formed but a value is not acceptable.
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read image definition {}: {source}", path.display())
            }
            ConfigError::Parse {
                path,
                line,
                column,
                message,
            } => {
                write!(f, "{}:{line}:{column}: {message}", path.display())
            }
            ConfigError::Invalid { path, key, message } => write!(f, "{}: `{key}`: {message}", path.display()),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the definition at `path`.
pub fn load(path: &Path) -> Result<LoadedDefinition, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let definition = parse(&text, path)?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base_dir = if base_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base_dir
    };
    Ok(LoadedDefinition {
        definition,
        path: path.to_path_buf(),
        base_dir,
        source_text: text,
    })
}

/// Parses and validates definition text; `path` is used in messages only.
pub fn parse(text: &str, path: &Path) -> Result<ImageDefinition, ConfigError> {
    let definition: ImageDefinition = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_column(text, s.start)).unwrap_or((1, 1));
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })?;
    validate(&definition, path)?;
    Ok(definition)
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, column)
}

fn validate(def: &ImageDefinition, path: &Path) -> Result<(), ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        key: key.to_string(),
        message,
    };
    if def.name.is_empty()
        || !def
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        || def.name.starts_with('.')
    {
        return Err(invalid(
            "name",
            format!(
                "{:?} must be letters, digits, '-', '_' or '.', as it names the artifact files",
                def.name
            ),
        ));
    }
    let host_ok = |h: &str| {
        !h.is_empty()
            && h.len() <= 63
            && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !h.starts_with('-')
            && !h.ends_with('-')
    };
    if !host_ok(&def.hostname) {
        return Err(invalid(
            "hostname",
            format!(
                "{:?} is not a valid host name (letters, digits and '-', at most 63)",
                def.hostname
            ),
        ));
    }
    if def.targets.is_empty() {
        return Err(invalid(
            "targets",
            "name at least one of \"hyperv\", \"vmware\", \"virtualbox\", \"qemu\"".into(),
        ));
    }
    if def.formats.is_empty() {
        return Err(invalid(
            "formats",
            "name at least one of \"efi\", \"iso\", \"raw\", \"vhdx\", \"vmdk\", \"vmdk-stream\"".into(),
        ));
    }
    for feature in &def.features {
        if crate::kernelconfig::feature(feature).is_none() {
            return Err(invalid(
                "features",
                format!(
                    "unknown feature {feature:?}; known: {}",
                    crate::kernelconfig::feature_names().join(", ")
                ),
            ));
        }
    }
    if !(0..=19).contains(&def.initrd.compression_level) {
        return Err(invalid(
            "initrd.compression_level",
            format!("{} is outside 0..=19", def.initrd.compression_level),
        ));
    }
    if def.disk.size < (64 << 20) || !def.disk.size.is_multiple_of(1 << 20) {
        return Err(invalid(
            "disk.size",
            format!(
                "{} bytes: a disk must be a whole number of MiB and at least 64MiB",
                def.disk.size
            ),
        ));
    }
    let bs = def.disk.vhdx_block_size;
    if !bs.is_power_of_two() || !((1 << 20)..=(256 << 20)).contains(&bs) {
        return Err(invalid(
            "disk.vhdx_block_size",
            format!("{bs} bytes: use a power of two from 1MiB to 256MiB"),
        ));
    }
    if let Some(label) = &def.iso.volume_label {
        if label.is_empty()
            || label.len() > 32
            || !label
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(invalid(
                "iso.volume_label",
                format!("{label:?}: use 1 to 32 of A-Z, 0-9 and _ (ISO 9660 d-characters)"),
            ));
        }
    }
    if def.kernel.path.is_none() && (def.kernel.modules_dir.is_some() || def.kernel.config.is_some()) {
        return Err(invalid(
            "kernel.modules_dir",
            "only goes with kernel.path (a local kernel)".into(),
        ));
    }
    for (i, p) in def.packages.iter().enumerate() {
        for glob in p.include.iter().flatten().chain(&p.exclude) {
            if let Err(e) = globset::Glob::new(glob) {
                return Err(invalid(
                    &format!("packages[{i}] ({})", p.name),
                    format!("bad glob {glob:?}: {e}"),
                ));
            }
        }
    }
    for (section, files) in [("files", &def.files), ("disk.data_files", &def.disk.data_files)] {
        for (i, f) in files.iter().enumerate() {
            let key = format!("{section}[{i}] ({})", f.path);
            let set = [
                f.contents.is_some(),
                f.source.is_some(),
                f.directory.is_some(),
                f.symlink.is_some(),
                f.mkdir,
            ];
            if set.iter().filter(|b| **b).count() != 1 {
                return Err(invalid(
                    &key,
                    "give exactly one of contents, source, directory, symlink or mkdir = true".into(),
                ));
            }
            if !f.path.starts_with('/') || uvmkit_filetree::TreePath::new(&f.path).is_err() {
                return Err(invalid(
                    &key,
                    "path must be absolute and stay inside the image (no '..' above /)".into(),
                ));
            }
        }
    }
    if let Some(network) = &def.network {
        if let Some(s) = &network.static_v4 {
            let address_ok = s.address.split_once('/').is_some_and(|(a, p)| {
                a.parse::<std::net::Ipv4Addr>().is_ok() && p.parse::<u8>().is_ok_and(|p| p <= 32)
            });
            if !address_ok {
                return Err(invalid(
                    "network.static.address",
                    format!(
                        "{:?}: use an IPv4 address and prefix length, such as \"192.168.1.5/24\"",
                        s.address
                    ),
                ));
            }
            for ip in s.gateway.iter().chain(&s.dns) {
                if ip.parse::<std::net::Ipv4Addr>().is_err() {
                    return Err(invalid("network.static", format!("{ip:?} is not an IPv4 address")));
                }
            }
        }
    }
    if let Some(data) = &def.data_disk {
        for (i, bind) in data.binds.iter().enumerate() {
            let path = Path::new(bind);
            let plain = path.is_absolute()
                && path
                    .components()
                    .all(|c| matches!(c, std::path::Component::RootDir | std::path::Component::Normal(_)));
            let name = path.file_name();
            let unique = data.binds[..i].iter().all(|other| Path::new(other).file_name() != name);
            if !plain || name.is_none() || !unique {
                return Err(invalid(
                    &format!("data_disk.binds[{i}]"),
                    format!("{bind:?}: use an absolute path without '..' whose last component no other entry shares (it names the directory on the data disk)"),
                ));
            }
        }
    }
    validate_services(def, &invalid)?;
    Ok(())
}

/// `[[services]]`, `[ssh]` and `[preload]`: names, commands, ordering without cycles, limits.
fn validate_services(def: &ImageDefinition, invalid: &dyn Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
    let absolute = |p: &str| p.starts_with('/') && uvmkit_filetree::TreePath::new(p).is_ok();
    uvmkit_service_spec::check_services(&def.services).map_err(|err| {
        invalid(
            &format!("services[{}] ({}).{}", err.index, err.service, err.key),
            err.problem,
        )
    })?;
    if let Some(ssh) = &def.ssh {
        for (i, key) in ssh.authorized_keys.iter().enumerate() {
            let mut fields = key.split_whitespace();
            let kind = fields.next().unwrap_or("");
            let known = kind.starts_with("ssh-") || kind.starts_with("ecdsa-sha2-") || kind.starts_with("sk-");
            if !known || fields.next().is_none() || key.contains('\n') {
                return Err(invalid(
                    &format!("ssh.authorized_keys[{i}]"),
                    "give one public key per entry, as in a .pub file: \"ssh-ed25519 AAAA... comment\"".into(),
                ));
            }
        }
    }
    if let Some(preload) = &def.preload {
        if !def.services.iter().any(|s| s.name == preload.service) {
            return Err(invalid(
                "preload.service",
                format!(
                    "{:?} is not a service of this definition; images are loaded once it is ready",
                    preload.service
                ),
            ));
        }
        if !preload.command.first().is_some_and(|p| absolute(p)) {
            return Err(invalid(
                "preload.command",
                "give the program as an absolute path inside the image".into(),
            ));
        }
        for (i, image) in preload.images.iter().enumerate() {
            let name = Path::new(image).file_name();
            if name.is_none()
                || preload.images[..i]
                    .iter()
                    .any(|other| Path::new(other).file_name() == name)
            {
                return Err(invalid(
                    &format!("preload.images[{i}]"),
                    format!(
                        "{image:?}: each archive needs a file name of its own (they share one directory in the image)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> String {
        parse(text, Path::new("img.toml")).unwrap_err().to_string()
    }

    #[test]
    fn minimal_definition_gets_defaults() {
        let def = parse("name = \"m\"\n", Path::new("m.toml")).unwrap();
        assert_eq!(def.hostname, "uvmkit");
        assert_eq!(def.targets, Target::ALL.to_vec());
        assert_eq!(def.debian.suite, "bookworm");
        assert_eq!(def.kernel.package, "linux-image-amd64");
        assert_eq!(def.disk.size, 8 << 30);
    }

    #[test]
    fn unknown_key_names_position_and_allowed_keys() {
        let e = parse_err("name = \"m\"\n[debian]\nsuite = \"bookworm\"\nmirorr = \"x\"\n");
        assert!(e.starts_with("img.toml:4:1:"), "{e}");
        assert!(e.contains("mirorr") && e.contains("mirror"), "{e}");
    }

    #[test]
    fn wrong_type_and_bad_values_are_explained() {
        let e = parse_err("name = \"m\"\ntargets = [\"xen\"]\n");
        assert!(e.starts_with("img.toml:2:"), "{e}");
        assert!(e.contains("xen") && e.contains("hyperv"), "{e}");
        let e = parse_err("name = \"m\"\n[disk]\nsize = \"8 parsecs\"\n");
        assert!(e.contains("img.toml:3:") && e.contains("unit"), "{e}");
        let e = parse_err("name = \"m/x\"\n");
        assert!(e.contains("`name`"), "{e}");
        let e = parse_err("name = \"m\"\n[[files]]\npath = \"/a\"\ncontents = \"x\"\nsymlink = \"y\"\n");
        assert!(e.contains("files[0] (/a)") && e.contains("exactly one"), "{e}");
        let e = parse_err("name = \"m\"\n[[files]]\npath = \"/a\"\nmode = \"0999\"\ncontents = \"\"\n");
        assert!(e.contains("octal"), "{e}");
        let e = parse_err("name = \"m\"\nfeatures = [\"gpu\"]\n");
        assert!(e.contains("unknown feature \"gpu\"") && e.contains("containers"), "{e}");
        let e = parse_err("name = \"m\"\nname = \"n\"\n");
        assert!(e.starts_with("img.toml:2:"), "{e}");
    }

    #[test]
    fn modes_and_sizes() {
        let def = parse(
            "name = \"m\"\n[[files]]\npath = \"/a\"\ncontents = \"\"\nmode = 0o750\n[[files]]\npath = \"/b\"\nmkdir = true\nmode = \"0700\"\n[disk]\nsize = \"64GiB\"\n",
            Path::new("m.toml"),
        )
        .unwrap();
        assert_eq!(def.files[0].mode, Some(0o750));
        assert_eq!(def.files[1].mode, Some(0o700));
        assert_eq!(def.disk.size, 64 << 30);
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert!(parse_size("12 furlongs").is_err());
    }

    #[test]
    fn network_and_data_disk_sections() {
        let def = parse("name = \"m\"\n", Path::new("m.toml")).unwrap();
        assert!(def.network.is_none() && def.data_disk.is_none());
        let def = parse(
            "name = \"m\"\n[network]\ntimeout = 10\n[network.static]\naddress = \"10.0.0.2/8\"\ngateway = \"10.0.0.1\"\n[data_disk]\nformat_blank = true\nbinds = [\"/var/lib/docker\"]\n",
            Path::new("m.toml"),
        )
        .unwrap();
        let network = def.network.unwrap();
        assert!(network.dhcp);
        assert_eq!(network.timeout, 10);
        assert_eq!(network.static_v4.unwrap().address, "10.0.0.2/8");
        assert!(def.data_disk.unwrap().format_blank);
        let e = parse_err("name = \"m\"\n[network.static]\naddress = \"10.0.0.2\"\n");
        assert!(e.contains("network.static.address"), "{e}");
        let e = parse_err("name = \"m\"\n[network.static]\naddress = \"10.0.0.2/8\"\ndns = [\"x\"]\n");
        assert!(e.contains("\"x\" is not an IPv4 address"), "{e}");
        let e = parse_err("name = \"m\"\n[data_disk]\nbinds = [\"/a/x\", \"/b/x\"]\n");
        assert!(e.contains("data_disk.binds[1]"), "{e}");
    }

    const TWO_SERVICES: &str = r#"name = "m"
[[services]]
name = "containerd"
command = ["/usr/bin/containerd"]
ready = { unix = "/run/containerd/containerd.sock" }
restart = "always"
rlimits = { nofile = 1048576, core = "unlimited" }

[[services]]
name = "dockerd"
command = ["/usr/sbin/dockerd", "-H", "unix:///var/run/docker.sock"]
after = ["containerd"]
ready = { http_unix = "/var/run/docker.sock" }
"#;

    #[test]
    fn services_parse_with_readiness_restart_and_limits() {
        let def = parse(TWO_SERVICES, Path::new("m.toml")).unwrap();
        assert_eq!(def.services.len(), 2);
        let containerd = &def.services[0];
        assert_eq!(
            containerd.ready,
            Some(Readiness::Unix("/run/containerd/containerd.sock".into()))
        );
        assert_eq!(containerd.restart, RestartPolicy::Always);
        assert_eq!(containerd.rlimits["nofile"], RlimitValue::Value(1048576));
        assert_eq!(
            def.services[1].ready,
            Some(Readiness::HttpUnix("/var/run/docker.sock".into()))
        );
        assert_eq!(def.services[1].after, ["containerd"]);
        assert_eq!(def.services[1].restart, RestartPolicy::OnFailure);
    }

    #[test]
    fn bad_services_name_the_entry_and_key() {
        let cases = [
            ("name = \"m\"\n[[services]]\nname = \"a\"\ncommand = [\"sshd\"]\n", "services[0] (a).command`: program \"sshd\" is not an absolute path"),
            ("name = \"m\"\n[[services]]\nname = \"A b\"\ncommand = [\"/x\"]\n", "services[0] (A b).name"),
            ("name = \"m\"\n[[services]]\nname = \"a\"\ncommand = [\"/x\"]\nafter = [\"b\"]\n", "names \"b\", which is not another service"),
            ("name = \"m\"\n[[services]]\nname = \"a\"\ncommand = [\"/x\"]\nrlimits = { files = 3 }\n", "unknown limit \"files\""),
            ("name = \"m\"\n[[services]]\nname = \"a\"\ncommand = [\"/x\"]\nrlimits = { nofile = \"lots\" }\n", "nofile = \"lots\" is not a limit"),
            ("name = \"m\"\n[[services]]\nname = \"a\"\ncommand = [\"/x\"]\nrestart = \"sometimes\"\n", "sometimes"),
            ("name = \"m\"\n[[services]]\nname = \"a\"\ncommand = [\"/x\"]\nready = { udp = 53 }\n", "udp"),
            ("name = \"m\"\n[[services]]\nname = \"a\"\ncommand = [\"/x\"]\n[[services]]\nname = \"a\"\ncommand = [\"/y\"]\n", "services[1] (a).name`: is used by two services"),
            ("name = \"m\"\n[ssh]\nauthorized_keys = [\"hunter2\"]\n", "ssh.authorized_keys[0]"),
            ("name = \"m\"\n[preload]\nimages = [\"a.tar\"]\n", "preload.service"),
        ];
        for (text, expected) in cases {
            let e = parse_err(text);
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }

    #[test]
    fn service_cycles_are_refused_with_the_path() {
        let text = "name = \"m\"\n[[services]]\nname = \"a\"\ncommand = [\"/a\"]\nafter = [\"c\"]\n\
                    [[services]]\nname = \"b\"\ncommand = [\"/b\"]\nafter = [\"a\"]\n\
                    [[services]]\nname = \"c\"\ncommand = [\"/c\"]\nafter = [\"b\"]\n";
        let e = parse_err(text);
        assert!(
            e.contains("services[0] (a).after`: forms a cycle (a -> c -> b -> a)"),
            "{e}"
        );
    }

    #[test]
    fn shipped_definitions_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
        for name in ["minimal.toml", "docker.toml"] {
            load(&dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
