//! The validated definition: what the pipeline takes. Every value in it has been checked once,
//! in [`super::validate`], and has the type its users need (a tree path, compiled globs, one
//! kind per `[[files]]` entry, the kernel features it selects), so no later stage checks or
//! converts it again.

use super::file::EspLayout;
use super::file::{
    BootSection, DataDiskSection, DebianSection, InitSection, InitrdSection, IsoSection, PreloadSection, SshSection,
};
use super::kernel_config::Feature;
use super::target::{Format, Target};
use globset::GlobSet;
use std::path::PathBuf;
use uvmkit_filetree::TreePath;
use uvmkit_service_spec::ServiceSpec;

/// A whole image definition, validated.
#[derive(Debug, Clone)]
pub struct ImageDefinition {
    /// Image name: artifact file names derive from it (`NAME.efi`, `NAME.iso`...).
    pub name: String,
    /// The VM's hostname (at most 63 letters, digits and '-').
    pub hostname: String,
    /// Kernel command line (without `initrd=`).
    pub cmdline: String,
    /// Hypervisors the image must boot under (at least one).
    pub targets: Vec<Target>,
    /// The named kernel features, as written (each one exists in `kernel-config/`).
    pub features: Vec<String>,
    /// What the kernel must provide: `base`, then the targets, then the named features.
    pub kernel_features: Vec<&'static Feature>,
    /// Artifacts `uvmkit build` writes when `--format` is not given (at least one).
    pub formats: Vec<Format>,
    /// Where the Debian packages come from.
    pub debian: DebianSection,
    /// The kernel and its modules.
    pub kernel: KernelSection,
    /// Packages whose files go into the image.
    pub packages: Vec<PackageSelection>,
    /// Files, directories and links added to the image.
    pub files: Vec<ExtraFile>,
    /// How the initrd is compressed (`compression_level` is within 0..=19).
    pub initrd: InitrdSection,
    /// Disk image settings (raw, VHDX, VMDK).
    pub disk: DiskSection,
    /// ISO settings (the label, when given, is ISO 9660 d-characters).
    pub iso: IsoSection,
    /// `[vm]`: the virtual hardware an OVA or a Vagrant box asks for.
    pub vm: VmSection,
    /// What UEFI starts from the disk images' and the ISO's ESP (with `shim`, the command line
    /// passes through GRUB unchanged: no `\\` or `'`, balanced `"`).
    pub boot: BootSection,
    /// Settings for the init (PID 1).
    pub init: InitSection,
    /// `[network]`: the init configures the network; absent, the network stays down.
    pub network: Option<uvmkit_init_config::NetworkSection>,
    /// `[data_disk]`: the init keeps state on the data disk; absent, it only looks for it.
    pub data_disk: Option<DataDiskSection>,
    /// `[[services]]`: programs the init starts in order, waits for and supervises.
    pub services: Vec<ServiceSpec>,
    /// `[ssh]`: who may log in over SSH (as root, with a key; never with a password).
    pub ssh: Option<SshSection>,
    /// `[preload]`: container image archives loaded into a service once, on first boot.
    pub preload: Option<PreloadSection>,
    /// `[docker]`: dockerd's settings, as the text of `/etc/docker/daemon.json`.
    pub docker_daemon_json: Option<String>,
    /// `[[shares]]`: folders the hypervisor shares, mounted by the init at boot (checked).
    pub shares: Vec<uvmkit_init_config::ShareSection>,
    /// `[memory]`: the zram swap device the init sets up, if any (its size checked).
    pub memory: Option<uvmkit_init_config::MemorySection>,
}

impl ImageDefinition {
    /// Whether this definition can be written in every one of `formats`: a Vagrant box needs
    /// a key to log in with, as the image has no passwords.
    pub fn check_formats(&self, formats: &[Format]) -> Result<(), FormatsError> {
        let has_key = self.ssh.as_ref().is_some_and(|ssh| !ssh.authorized_keys.is_empty());
        match formats.iter().find(|f| f.is_vagrant_box()) {
            Some(&format) if !has_key => Err(FormatsError::VagrantWithoutKey { format }),
            _ => Ok(()),
        }
    }

    /// The ISO volume label: `[iso] volume_label`, else the image name in upper case with
    /// `-` and `.` as `_` (ISO 9660 d-characters).
    pub fn iso_volume_label(&self) -> String {
        self.iso
            .volume_label
            .clone()
            .unwrap_or_else(|| self.name.to_ascii_uppercase().replace(['-', '.'], "_"))
    }

    /// Whether `formats` boot through Debian's signed shim chain: `[boot] loader = "shim"` and
    /// a disk image or the ISO among them (the `efi` artifact is the UKI either way).
    pub fn boots_through_shim(&self, formats: &[Format]) -> bool {
        self.boot.loader == EspLayout::Shim && formats.iter().any(|f| f.is_disk() || *f == Format::Iso)
    }
}

/// Why a definition cannot be written in a format asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatsError {
    /// A Vagrant box was asked for, but nothing lets Vagrant log in.
    #[error(
        "format {} needs a login key: Vagrant logs in as root over SSH and the image has no \
         passwords; add your public key to [ssh] authorized_keys (and an sshd service), then \
         set config.ssh.private_key_path to its private half",
        format.name()
    )]
    VagrantWithoutKey {
        /// The Vagrant format.
        format: Format,
    },
}

/// `[vm]`: the virtual hardware an OVA or a Vagrant box asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSection {
    /// Virtual CPUs (1 to 128).
    pub cpus: u32,
    /// Memory in MiB (at least 128).
    pub memory_mib: u64,
}

/// `[kernel]`: a Debian kernel package, or a local kernel with its modules.
#[derive(Debug, Clone)]
pub struct KernelSection {
    /// Debian package providing the kernel (`linux-image-amd64`); not fetched when `local` is
    /// set.
    pub package: String,
    /// A kernel from local files instead of the package.
    pub local: Option<LocalKernel>,
    /// Extra modules to load at boot, beyond those the targets and features need.
    pub modules: Vec<String>,
}

/// `[kernel] path`, `modules_dir` and `config`: a kernel from local files, paths relative to
/// the definition.
#[derive(Debug, Clone)]
pub struct LocalKernel {
    /// The kernel image (bzImage with EFI stub).
    pub image: PathBuf,
    /// The directory holding `lib/modules/RELEASE/` (or `RELEASE/` itself).
    pub modules_dir: PathBuf,
    /// The kernel's `.config`, checked against the targets.
    pub config: Option<PathBuf>,
}

/// Where dockerd reads the settings `[docker]` gives.
pub const DOCKER_DAEMON_JSON: &str = uvmkit_docker_config::DAEMON_JSON_PATH;

/// What a package contributes when its `[[packages]]` entry gives no `include`: its programs
/// and its configuration.
pub const DEFAULT_INCLUDE: [&str; 6] = [
    "/bin/*",
    "/sbin/*",
    "/usr/bin/*",
    "/usr/sbin/*",
    "/usr/libexec/**",
    "/etc/**",
];

/// Never taken from a package: documentation, manuals, translations.
pub const ALWAYS_EXCLUDE: [&str; 6] = [
    "/usr/share/doc/**",
    "/usr/share/man/**",
    "/usr/share/info/**",
    "/usr/share/locale/**",
    "/usr/share/lintian/**",
    "/usr/share/bug/**",
];

/// `[[packages]]`: a Debian package and which of its files go into the image.
#[derive(Debug, Clone)]
pub struct PackageSelection {
    /// Package name.
    pub name: String,
    /// The globs of paths taken, as written ([`DEFAULT_INCLUDE`] when none were given).
    pub include: Vec<String>,
    /// `include`, compiled.
    pub include_set: GlobSet,
    /// The entry's `exclude` globs and [`ALWAYS_EXCLUDE`], compiled.
    pub exclude_set: GlobSet,
    /// `allow_setuid_and_devices`: setuid/setgid files and device nodes may be taken.
    pub allow_setuid_and_devices: bool,
    /// The package's default exclusions that apply to this entry, `(path, why)`: none with
    /// `defaults = false`, and none for a path `include` names literally.
    pub left_out_by_default: Vec<(&'static str, &'static str)>,
}

/// What a `[[packages]]` entry does with one file of its package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected {
    /// Taken into the image.
    Taken,
    /// Not matched by `include`, or matched by `exclude` (or [`ALWAYS_EXCLUDE`]).
    NotSelected,
    /// Selected by `include`, but left out by the package's defaults, for this reason.
    LeftOutByDefault(&'static str),
}

impl PackageSelection {
    /// What the entry does with the file at `path` (absolute, as text).
    pub fn select(&self, path: &str) -> Selected {
        if !self.include_set.is_match(path) || self.exclude_set.is_match(path) {
            return Selected::NotSelected;
        }
        match self.left_out_by_default.iter().find(|(p, _)| *p == path) {
            Some((_, why)) => Selected::LeftOutByDefault(why),
            None => Selected::Taken,
        }
    }

    /// Whether the file at `path` (absolute, as text) is taken from the package.
    pub fn takes(&self, path: &str) -> bool {
        self.select(path) == Selected::Taken
    }
}

/// `[[files]]` or `[disk] data_files`: one node added to a file tree.
#[derive(Debug, Clone)]
pub struct ExtraFile {
    /// Where it goes (absolute, inside the tree).
    pub path: TreePath,
    /// What it is.
    pub kind: ExtraFileKind,
    /// Permission bits (at most 0o7777); `None`: 0644 for files, 0755 for directories and for
    /// local files that are executable.
    pub mode: Option<u32>,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
}

/// What an `[[files]]` entry makes: exactly one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtraFileKind {
    /// A regular file with these contents.
    Contents(String),
    /// A local file (relative to the definition) copied as a regular file.
    Source(PathBuf),
    /// A local directory (relative to the definition) copied recursively.
    Directory(PathBuf),
    /// A symbolic link to this target.
    Symlink(String),
    /// An empty directory.
    Mkdir,
}

/// `[disk]`: the GPT disk images (raw, VHDX, VMDK).
#[derive(Debug, Clone)]
pub struct DiskSection {
    /// Virtual size of the disk in bytes: a whole number of MiB, at least 64 MiB.
    pub size: u64,
    /// VHDX block size in bytes: a power of two from 1 MiB to 256 MiB.
    pub vhdx_block_size: u32,
    /// Write a fixed (fully allocated) VHDX instead of a dynamic one.
    pub vhdx_fixed: bool,
    /// Store the qcow2 image's clusters deflate-compressed.
    pub qcow2_compressed: bool,
    /// Files placed on the data partition (`uvmkit-data`), paths relative to its root.
    pub data_files: Vec<ExtraFile>,
}
