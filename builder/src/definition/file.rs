//! The definition as its TOML file spells it: serde types that only parse, strictly (unknown
//! keys are errors). [`super::validate`] turns a [`DefinitionFile`] into the
//! [`ImageDefinition`](super::ImageDefinition) the pipeline takes.
//!
//! Sections whose shape validation does not change (`[debian]`, `[network]`, `[ssh]`...) are
//! used by the validated definition as they are.

use super::target::{Format, Target};
use super::units::{deserialize_mode, deserialize_size};
use serde::Deserialize;
use std::path::PathBuf;
use uvmkit_debian::archives::{ArchiveKind, Selection};
use uvmkit_docker_config::DockerSection;
use uvmkit_service_spec::ServiceSpec;

/// A whole image definition, as parsed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionFile {
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
    pub kernel: KernelTable,
    /// Packages whose files go into the image.
    #[serde(default)]
    pub packages: Vec<PackageTable>,
    /// Files, directories and links added to the image.
    #[serde(default)]
    pub files: Vec<FileTable>,
    /// How the initrd is compressed.
    #[serde(default)]
    pub initrd: InitrdSection,
    /// Disk image settings (raw, VHDX, VMDK).
    #[serde(default)]
    pub disk: DiskTable,
    /// ISO settings.
    #[serde(default)]
    pub iso: IsoSection,
    /// The virtual machine an OVA or Vagrant box describes.
    #[serde(default)]
    pub vm: VmTable,
    /// How the disk images and the ISO boot under UEFI.
    #[serde(default)]
    pub boot: BootSection,
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
    /// `[docker]`: dockerd's settings, written as `/etc/docker/daemon.json` (each value is
    /// checked as it is parsed).
    #[serde(default)]
    pub docker: Option<DockerSection>,
    /// `[[shares]]`: folders the hypervisor shares, mounted by the init at boot.
    #[serde(default)]
    pub shares: Vec<uvmkit_init_config::ShareSection>,
    /// `[memory]`: a zram swap device set up by the init; absent, none.
    #[serde(default)]
    pub memory: Option<MemoryTable>,
}

/// `[memory]`: how the guest makes its memory go further.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryTable {
    /// A zram swap device: a share of the guest's memory (`"25%"`) or a size (`"512MiB"`).
    #[serde(default)]
    pub zram: Option<String>,
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
    /// The Docker Engine API socket the init streams each archive to (`POST /images/load`);
    /// the default when no `command` is given is [`DEFAULT_PRELOAD_SOCKET`]. No `docker`
    /// command is needed in the image.
    pub socket: Option<String>,
    /// A load command instead of the API (`["/usr/bin/docker", "load", "-i"]`); the archive's
    /// path inside the image is appended.
    pub command: Option<Vec<String>>,
}

/// dockerd's API socket, where `[preload]` archives go unless the definition says otherwise.
pub const DEFAULT_PRELOAD_SOCKET: &str = "/var/run/docker.sock";

fn default_preload_service() -> String {
    "dockerd".into()
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
    /// `[[network.interfaces]]`: particular interfaces, each configured only as its entry says.
    #[serde(default)]
    pub interfaces: Vec<InterfaceEntry>,
}

/// `[[network.interfaces]]`: one Ethernet interface, by kernel name or MAC address, with a
/// fixed IPv4 address or (without `address`) DHCP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceEntry {
    /// The kernel's name for the interface, such as `eth1`.
    #[serde(default)]
    pub name: Option<String>,
    /// The interface's MAC address, such as `08:00:27:12:34:56`.
    #[serde(default)]
    pub mac: Option<String>,
    /// Address and prefix length, `192.168.56.2/24`; absent, the interface uses DHCP.
    #[serde(default)]
    pub address: Option<String>,
    /// A default gateway through this interface (only with `address`).
    #[serde(default)]
    pub gateway: Option<String>,
    /// DNS servers (only with `address`).
    #[serde(default)]
    pub dns: Vec<String>,
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

/// `[debian]`: the archives the kernel and packages come from.
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
    /// Mirror URL of the release (also `-updates` and `-backports`); when absent,
    /// `UVMKIT_DEBIAN_MIRROR` or the host's apt sources.
    pub mirror: Option<String>,
    /// An OpenPGP keyring to verify every archive with instead of the built-in Debian keys.
    pub keyring: Option<PathBuf>,
    /// Also draw from `SUITE-updates` (stable updates between point releases).
    #[serde(default)]
    pub updates: bool,
    /// Also draw from `SUITE-security`, from the security archive.
    #[serde(default)]
    pub security: bool,
    /// Packages taken from `SUITE-backports`, and only these.
    #[serde(default)]
    pub backports: Vec<String>,
    /// Mirror URL of the security archive; when absent, `UVMKIT_DEBIAN_SECURITY_MIRROR` or
    /// the host's apt source for a `*-security` suite.
    pub security_mirror: Option<String>,
    /// The most bytes one package may unpack to; a `.deb` that expands beyond it is refused
    /// (an archive can compress a huge file into a few bytes).
    #[serde(default = "default_max_unpacked_size", deserialize_with = "deserialize_size")]
    pub max_unpacked_size: u64,
}

/// 4 GiB: more than any Debian package a utility VM takes unpacks to (the generic kernel with
/// its modules is about 400 MiB).
fn default_max_unpacked_size() -> u64 {
    4 << 30
}

impl Default for DebianSection {
    fn default() -> Self {
        DebianSection {
            suite: default_suite(),
            components: default_components(),
            architecture: default_architecture(),
            mirror: None,
            keyring: None,
            updates: false,
            security: false,
            backports: Vec::new(),
            security_mirror: None,
            max_unpacked_size: default_max_unpacked_size(),
        }
    }
}

/// One archive an image draws packages from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianArchive {
    /// Which archive of the release it is.
    pub kind: ArchiveKind,
    /// Its suite (`bookworm-security`).
    pub suite: String,
    /// Which of its packages may be used.
    pub selection: Selection,
}

impl DebianSection {
    /// The archives to draw from, the release first (among equal versions the first wins),
    /// then `-updates`, `-security` and `-backports` as the keys ask.
    pub fn archives(&self) -> Vec<DebianArchive> {
        let mut out = vec![(ArchiveKind::Release, Selection::Every)];
        if self.updates {
            out.push((ArchiveKind::Updates, Selection::Every));
        }
        if self.security {
            out.push((ArchiveKind::Security, Selection::Every));
        }
        if !self.backports.is_empty() {
            out.push((
                ArchiveKind::Backports,
                Selection::Only(self.backports.iter().cloned().collect()),
            ));
        }
        out.into_iter()
            .map(|(kind, selection)| DebianArchive {
                kind,
                suite: kind.suite(&self.suite),
                selection,
            })
            .collect()
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
pub struct KernelTable {
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

impl Default for KernelTable {
    fn default() -> Self {
        KernelTable {
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
pub struct PackageTable {
    /// Package name.
    pub name: String,
    /// Globs of paths to take (`/usr/sbin/*`). Default: executables and `/etc`.
    pub include: Option<Vec<String>>,
    /// Globs of paths to leave out, applied after `include`. Docs, man pages and locales are
    /// always left out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Let setuid or setgid files and device nodes of this package into the image (refused
    /// otherwise: a package has no business giving a utility VM new privileged programs).
    #[serde(default)]
    pub allow_setuid_and_devices: bool,
    /// Apply uvmkit's default exclusions for this package (test tools, legacy shims: see
    /// `definition::package_defaults` and `uvmkit inspect`). `false` takes what `include` and
    /// `exclude` select and nothing is left out on uvmkit's behalf.
    #[serde(default = "default_true")]
    pub defaults: bool,
}

/// `[[files]]`: one node added to the image. Exactly one of `contents`, `source`,
/// `directory`, `symlink` or `mkdir` says what it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTable {
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
pub struct DiskTable {
    /// Virtual size of the disk, such as `"8GiB"` or `"512MiB"`.
    #[serde(default = "default_disk_size", deserialize_with = "deserialize_size")]
    pub size: u64,
    /// VHDX block size, such as `"32MiB"`.
    #[serde(default = "default_vhdx_block", deserialize_with = "deserialize_size")]
    pub vhdx_block_size: u64,
    /// Write a fixed (fully allocated) VHDX instead of a dynamic one.
    #[serde(default)]
    pub vhdx_fixed: bool,
    /// Store the qcow2 image's clusters deflate-compressed (also the libvirt box's image).
    #[serde(default)]
    pub qcow2_compressed: bool,
    /// Files placed on the data partition (`uvmkit-data`), paths relative to its root.
    #[serde(default)]
    pub data_files: Vec<FileTable>,
}

impl Default for DiskTable {
    fn default() -> Self {
        DiskTable {
            size: default_disk_size(),
            vhdx_block_size: default_vhdx_block(),
            vhdx_fixed: false,
            qcow2_compressed: false,
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

/// `[vm]`: the virtual hardware an OVA or a Vagrant box asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmTable {
    /// Virtual CPUs.
    #[serde(default = "default_vm_cpus")]
    pub cpus: u32,
    /// Memory, such as `"2GiB"`.
    #[serde(default = "default_vm_memory", deserialize_with = "deserialize_size")]
    pub memory: u64,
}

impl Default for VmTable {
    fn default() -> Self {
        VmTable {
            cpus: default_vm_cpus(),
            memory: default_vm_memory(),
        }
    }
}

fn default_vm_cpus() -> u32 {
    2
}
fn default_vm_memory() -> u64 {
    2 << 30
}

/// `[iso]`: the hybrid ISO.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsoSection {
    /// Volume label (ISO 9660 d-characters, at most 32); default: the image name in upper case.
    pub volume_label: Option<String>,
}

/// `[boot]`: what UEFI firmware starts from the ESP of the disk images and of the ISO. (The
/// `efi` artifact is always the UKI, and the ISO's BIOS path is always ISOLINUX.)
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSection {
    /// `shim` (Debian's signed chain, Secure Boot with Microsoft's keys) or `uki`.
    #[serde(default)]
    pub loader: EspLayout,
}

/// What the ESP holds as the removable-media boot path `\EFI\BOOT\BOOTX64.EFI` (UEFI 2.10,
/// 3.5.1.1), and so what Secure Boot firmware has to trust.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EspLayout {
    /// Debian's `shim-signed` (signed by Microsoft's third-party UEFI CA), which verifies
    /// Debian's signed GRUB, which verifies the Debian-signed kernel and loads the initrd: boots
    /// with Secure Boot on under firmware that trusts that CA, and with it off.
    #[default]
    Shim,
    /// The Unified Kernel Image alone: boots with Secure Boot off (or once signed with keys the
    /// firmware trusts).
    Uki,
}

impl EspLayout {
    /// The name used in definitions.
    pub fn name(self) -> &'static str {
        match self {
            EspLayout::Shim => "shim",
            EspLayout::Uki => "uki",
        }
    }
}

/// `[init]`: how the init brings the system up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitSection {
    /// Move the root from the initramfs to a tmpfs before anything runs (runc needs
    /// `pivot_root`, which the initramfs does not allow).
    #[serde(default = "default_true")]
    pub root_on_tmpfs: bool,
    /// Write the root tree as a read-only squashfs system image (its own partition on disk
    /// artifacts, a file in the initrd otherwise) that the init verifies and mounts under a
    /// tmpfs overlay; the initrd then holds only the init and the boot modules. `false` puts
    /// the whole tree in the initrd as before (`root_on_tmpfs` then decides).
    #[serde(default = "default_true")]
    pub system_image: bool,
    /// How the system image's blocks are compressed: `"zstd"` (level 15, 128 KiB blocks,
    /// quick to build and to read) or `"xz"` (LZMA2 preset 9 with the x86 BCJ filter where it
    /// helps, 1 MiB blocks: smaller, slower to read under emulation).
    #[serde(default)]
    pub system_compression: SystemCompression,
}

impl Default for InitSection {
    fn default() -> Self {
        InitSection {
            root_on_tmpfs: true,
            system_image: true,
            system_compression: SystemCompression::default(),
        }
    }
}

/// `[init] system_compression`: the compressor of the squashfs system image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SystemCompression {
    /// zstd level 15 in 128 KiB blocks.
    #[default]
    Zstd,
    /// xz (LZMA2 preset 9, x86 BCJ where smaller) in 1 MiB blocks.
    Xz,
}

impl SystemCompression {
    /// The name used in definitions.
    pub fn name(self) -> &'static str {
        match self {
            SystemCompression::Zstd => "zstd",
            SystemCompression::Xz => "xz",
        }
    }
}

impl<'de> Deserialize<'de> for SystemCompression {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match name.as_str() {
            "zstd" => Ok(SystemCompression::Zstd),
            "xz" => Ok(SystemCompression::Xz),
            other => Err(serde::de::Error::custom(format!(
                "[init] system_compression = \"{other}\" is not a compressor uvmkit writes; use \"zstd\" (the default) or \"xz\""
            ))),
        }
    }
}

fn default_true() -> bool {
    true
}
