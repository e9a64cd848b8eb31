//! `/etc/uvmkit/init.toml`: what `uvmkit build` tells the init (PID 1) about the image, and
//! the paths and labels both of them name.
//!
//! One definition serves both ends: the builder fills an [`InitConfig`] and writes it with
//! `toml::to_string`; the init reads it back with `toml::from_str` and checks it with
//! [`InitConfig::check_base`] and [`InitConfig::check_services`] before it acts on it. Every
//! table refuses keys it does not know, so a misspelt key is an error that names it, never a
//! setting silently ignored. Every field has a default, so a partial file still boots.

#![deny(missing_docs)]

mod check;
mod memory;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
pub use uvmkit_service_spec::{Readiness, RestartPolicy, RlimitValue, ServiceError, ServiceSpec};

pub use check::{check_interfaces, InitConfigError};
pub use memory::{MemorySection, ZramSize, ZramSizeError, ZRAM_MAX_BYTES, ZRAM_MIN_BYTES, ZRAM_PAGE_BYTES};

/// Where the builder puts the configuration inside the image.
pub const CONFIG_PATH: &str = "/etc/uvmkit/init.toml";

/// The label of the data partition: its GPT partition name and its ext4 volume name, on the
/// partition the builder writes into disk images and on one the init makes on a blank disk.
pub const DATA_LABEL: &str = "uvmkit-data";

/// Where the init mounts the data partition (or, without one, a tmpfs).
pub const DATA_MOUNT_POINT: &str = "/var/lib/uvmkit-data";

/// Where the VM's identity (SSH host keys, TLS material) is kept: on the data partition.
pub const IDENTITY_DIR: &str = "/var/lib/uvmkit-data/uvmkit/identity";

/// The Docker client bundle (`ca.pem`, `cert.pem`, `key.pem`) users copy to `~/.docker`.
pub const CLIENT_BUNDLE_DIR: &str = "/var/lib/uvmkit-data/uvmkit/identity/tls/client";

/// Where service output is kept (`NAME.log`); on the data disk when `/var/lib/uvmkit` is bound.
pub const SERVICE_LOG_DIR: &str = "/var/lib/uvmkit/log";

/// Where the init marks the `[preload]` archives it has loaded, one file per archive sha256.
pub const PRELOAD_MARKER_DIR: &str = "/var/lib/uvmkit/preload";

/// The `PATH` every service starts with.
pub const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The hostname used when the configuration does not name one.
pub const DEFAULT_HOSTNAME: &str = "uvmkit";

/// The whole of `/etc/uvmkit/init.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InitConfig {
    /// The image's hostname, set with `sethostname(2)`.
    pub hostname: String,
    /// Which file system the system runs from.
    pub root: RootMode,
    /// The size limit of the tmpfs root, as tmpfs's `size=` takes it (`2G`, `512m`, `80%`);
    /// when absent, the initramfs's size plus tmpfs's default (half the memory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_size: Option<String>,
    /// The release whose modules live in `/lib/modules/<kernel_release>/`; the running
    /// kernel's release when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    /// The image's kernel modules, in any order (the init orders them by `depends`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<ModuleSpec>,
    /// Network bring-up; absent means the network stays down (as in the minimal image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSection>,
    /// Using the data disk for state; absent means the data partition is only looked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_disk: Option<DataDiskSection>,
    /// Long-running processes the init starts and supervises (`[[services]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceSpec>,
    /// Container image archives loaded once a service is ready (`[preload]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preload: Option<PreloadSection>,
    /// Folders the hypervisor shares, mounted at boot (`[[shares]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<ShareSection>,
    /// The read-only system image the boot initrd mounts as `/` (`root = "system"`); only the
    /// boot initrd's configuration has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemImageSection>,
    /// Memory settings (`[memory]`: a zram swap device); absent means none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemorySection>,
}

impl Default for InitConfig {
    fn default() -> Self {
        InitConfig {
            hostname: DEFAULT_HOSTNAME.to_string(),
            root: RootMode::Tmpfs,
            root_size: None,
            kernel_release: None,
            modules: Vec::new(),
            network: None,
            data_disk: None,
            services: Vec::new(),
            preload: None,
            shares: Vec::new(),
            system: None,
            memory: None,
        }
    }
}

/// The top-level keys that hold the services: [`InitConfig::parse_without_services`] drops
/// them.
pub const SERVICE_KEYS: [&str; 2] = ["services", "preload"];

impl InitConfig {
    /// Parses `text` leaving out `[[services]]` and `[preload]`, whatever they hold: for an
    /// init that must still boot (modules, network, data disk) when only the services are
    /// wrong. The rest is read as strictly as by `toml::from_str`, but the error carries no
    /// line number; use it to decide, and report the error of the full parse.
    pub fn parse_without_services(text: &str) -> Result<InitConfig, toml::de::Error> {
        let mut table: toml::Table = toml::from_str(text)?;
        for key in SERVICE_KEYS {
            table.remove(key);
        }
        table.try_into()
    }
}

/// Which file system `/` is once boot is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootMode {
    /// Move the initramfs into a tmpfs and make that `/` (`pivot_root` works there, so runc does).
    Tmpfs,
    /// Stay on the kernel's rootfs.
    Initramfs,
    /// Verify the squashfs system image (`[system]`), mount it read-only with a tmpfs overlay
    /// on top and make that `/`; the initramfs holds only the init and the boot modules.
    System,
}

/// The GPT partition name of the system image on disk artifacts.
pub const SYSTEM_PARTITION_NAME: &str = "uvmkit-system";

/// The system image's path in the initramfs of artifacts that carry it there (the EFI pair and
/// the UKI used alone).
pub const SYSTEM_IMAGE_FILE: &str = "/uvmkit-system.squashfs";

/// The system image's path on the ISO's ISO 9660 file system (Rock Ridge name; the plain
/// ECMA-119 name is `UVMKIT/SYSTEM.SQUASHFS;1`, which Linux's isofs shows the same way).
pub const SYSTEM_MEDIUM_FILE: &str = "/uvmkit/system.squashfs";

/// `[system]`: where the system image is and what it must hash to.
///
/// The init looks at `file` in the initramfs first; when it is absent it waits, up to
/// `wait_seconds`, for whichever of the other places is named: the GPT partition `partition`
/// (disk artifacts) or an ISO 9660 medium holding `medium_file` (the ISO, as a CD or written
/// to a USB disk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemImageSection {
    /// The sha256 of the image's `size` bytes, lower-case hex.
    pub sha256: String,
    /// The image's length in bytes (a partition may be longer).
    pub size: u64,
    /// The file in the initramfs looked at first.
    pub file: PathBuf,
    /// The GPT partition name waited for when the file is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// The file's path on an ISO 9660 medium (a CD drive, or a disk holding a hybrid ISO)
    /// waited for when the file is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium_file: Option<PathBuf>,
    /// Seconds to wait for the partition or the medium to appear.
    pub wait_seconds: u64,
}

/// `[[modules]]`: one kernel module of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSpec {
    /// The module's name, as in `.modinfo` `name=` (e.g. `virtio_blk`).
    pub name: String,
    /// The file, relative to `/lib/modules/<kernel_release>/`; may end `.ko.xz` or `.ko.zst`.
    pub path: PathBuf,
    /// The modules this one needs loaded first (`.modinfo` `depends=`).
    #[serde(default)]
    pub depends: Vec<String>,
}

/// `[network]`: how the init configures the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Run a DHCPv4 client on every Ethernet interface (all but the first with `static`).
    #[serde(default = "default_true")]
    pub dhcp: bool,
    /// Seconds boot waits for a first address before going on (DHCP keeps trying).
    #[serde(default = "default_network_timeout")]
    pub timeout: u64,
    /// A fixed address for the first Ethernet interface.
    #[serde(default, rename = "static", skip_serializing_if = "Option::is_none")]
    pub static_v4: Option<StaticSection>,
    /// Settings for particular interfaces (a second NIC on a host-only network, say); an
    /// interface listed here is configured only as its entry says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceSection>,
}

impl Default for NetworkSection {
    fn default() -> Self {
        NetworkSection {
            dhcp: true,
            timeout: default_network_timeout(),
            static_v4: None,
            interfaces: Vec::new(),
        }
    }
}

/// `[[network.interfaces]]`: one Ethernet interface, picked by its kernel name or its MAC
/// address, with a fixed IPv4 address or (without `address`) DHCP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSection {
    /// The kernel's name for the interface, such as `eth1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The interface's MAC address, `52:54:00:12:34:56` (either case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Address and prefix length, `192.168.56.2/24`; without it the interface uses DHCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A default gateway through this interface (only with `address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers for `/etc/resolv.conf` (only with `address`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
}

impl InterfaceSection {
    /// The address and prefix length of `address`, if it is `A.B.C.D/N` with N at most 32.
    pub fn address_and_prefix(&self) -> Option<(Ipv4Addr, u8)> {
        parse_cidr(self.address.as_deref()?)
    }

    /// The MAC address as six bytes, if `mac` is six colon-separated hex pairs.
    pub fn mac_bytes(&self) -> Option<[u8; 6]> {
        parse_mac(self.mac.as_deref()?)
    }

    /// Whether this entry is for the interface `name` with hardware address `mac`.
    pub fn matches(&self, name: &str, mac: [u8; 6]) -> bool {
        match (&self.name, self.mac_bytes()) {
            (Some(n), _) => n == name,
            (None, Some(m)) => m == mac,
            (None, None) => false,
        }
    }
}

/// `A.B.C.D/N` with N at most 32.
fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = text.split_once('/')?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    Some((addr.parse().ok()?, prefix))
}

/// Six colon-separated pairs of hex digits.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut bytes = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut bytes {
        let part = parts.next().filter(|p| p.len() == 2)?;
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(bytes)
}

/// `[network.static]`: a fixed IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticSection {
    /// Address and prefix length, `10.0.2.15/24`.
    pub address: String,
    /// The default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers for `/etc/resolv.conf`.
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
}

impl StaticSection {
    /// The address and prefix length of `address`, if it is `A.B.C.D/N` with N at most 32.
    pub fn address_and_prefix(&self) -> Option<(Ipv4Addr, u8)> {
        parse_cidr(&self.address)
    }
}

/// `[data_disk]`: keep state on the data partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataDiskSection {
    /// Partition and format a whole disk that is entirely blank when no data partition exists.
    #[serde(default)]
    pub format_blank: bool,
    /// Directories bind-mounted from the data disk: `/var/lib/docker` comes from
    /// `<data>/docker` (the last component names the directory on the disk).
    #[serde(default)]
    pub binds: Vec<PathBuf>,
    /// Create SSH host keys and Docker TLS material in [`IDENTITY_DIR`].
    #[serde(default)]
    pub identity: bool,
}

/// `[preload]`: container image archives loaded once, through the engine's API or a command
/// (exactly one of `socket` and `command`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreloadSection {
    /// The service that must be ready before loading.
    pub after: String,
    /// The Docker Engine API's unix socket: each archive is streamed to it as the body of
    /// `POST /images/load`, and the JSON messages of the answer are checked for errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// A loading command instead; the archive path is appended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// The archives, loaded in this order.
    #[serde(default)]
    pub images: Vec<PreloadImage>,
}

/// One archive of `[preload] images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreloadImage {
    /// The archive inside the image (absolute).
    pub path: PathBuf,
    /// Its SHA-256 (64 lowercase hex digits); names the marker that says it was loaded.
    pub sha256: String,
}

/// `[[shares]]`: a folder the hypervisor shares with the VM, mounted at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareSection {
    /// What the hypervisor calls the share: the mount tag of a 9p or virtiofs device (QEMU's
    /// `mount_tag=` or `tag=`), a VirtualBox shared folder's name, or `//server/share` for
    /// SMB (Hyper-V hosts share folders that way).
    pub source: String,
    /// Where it is mounted: an absolute path, made if missing.
    pub path: PathBuf,
    /// The file system that reaches it.
    #[serde(rename = "type")]
    pub kind: ShareKind,
    /// Mount options as `mount -o` takes them (`ro`, `username=me`, `cache=loose`), after the
    /// type's defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// The file systems host folders are shared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShareKind {
    /// 9P2000.L over virtio (QEMU `-virtfs`, `virtio-9p-pci`).
    #[serde(rename = "9p")]
    NineP,
    /// virtio-fs (QEMU with virtiofsd, cloud-hypervisor, libkrun).
    #[serde(rename = "virtiofs")]
    Virtiofs,
    /// VirtualBox shared folders (needs the vboxguest device).
    #[serde(rename = "vboxsf")]
    Vboxsf,
    /// SMB/CIFS, the way Hyper-V hosts share folders; needs the network.
    #[serde(rename = "cifs")]
    Cifs,
}

impl ShareKind {
    /// The file system type `mount(2)` takes.
    pub fn fs_type(self) -> &'static str {
        match self {
            ShareKind::NineP => "9p",
            ShareKind::Virtiofs => "virtiofs",
            ShareKind::Vboxsf => "vboxsf",
            ShareKind::Cifs => "cifs",
        }
    }

    /// Every kind of share, for what the image carries modules for.
    pub const ALL: [ShareKind; 4] = [
        ShareKind::NineP,
        ShareKind::Virtiofs,
        ShareKind::Vboxsf,
        ShareKind::Cifs,
    ];

    /// The kernel modules only this kind of share needs (what nothing else loads on its own
    /// account): the file system and, for 9p, its virtio transport. virtio-fs is built into
    /// Debian's kernel.
    pub fn modules(self) -> &'static [&'static str] {
        match self {
            ShareKind::NineP => &["9p", "9pnet_virtio"],
            ShareKind::Virtiofs => &[],
            ShareKind::Vboxsf => &["vboxsf"],
            ShareKind::Cifs => &["cifs"],
        }
    }

    /// The options used unless the entry's own say otherwise: 9p over virtio with the
    /// protocol version Linux file semantics need and a 512 KiB message size
    /// (Documentation/filesystems/9p.rst).
    pub fn default_options(self) -> &'static [&'static str] {
        match self {
            ShareKind::NineP => &["trans=virtio", "version=9p2000.L", "msize=524288"],
            ShareKind::Virtiofs | ShareKind::Vboxsf | ShareKind::Cifs => &[],
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_network_timeout() -> u64 {
    30
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    /// A configuration with every table and every optional key set.
    fn everything() -> InitConfig {
        InitConfig {
            hostname: "docker".into(),
            root: RootMode::Initramfs,
            root_size: Some("80%".into()),
            kernel_release: Some("6.1.0-28-amd64".into()),
            modules: vec![
                ModuleSpec {
                    name: "virtio_blk".into(),
                    path: "kernel/drivers/block/virtio_blk.ko".into(),
                    depends: vec!["virtio".into(), "virtio_ring".into()],
                },
                ModuleSpec {
                    name: "virtio".into(),
                    path: "kernel/drivers/virtio/virtio.ko.xz".into(),
                    depends: vec![],
                },
            ],
            network: Some(NetworkSection {
                dhcp: false,
                timeout: 5,
                static_v4: Some(StaticSection {
                    address: "10.0.2.15/24".into(),
                    gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
                    dns: vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)],
                }),
                interfaces: vec![InterfaceSection {
                    name: Some("eth1".into()),
                    mac: None,
                    address: Some("192.168.56.2/24".into()),
                    gateway: None,
                    dns: vec![],
                }],
            }),
            data_disk: Some(DataDiskSection {
                format_blank: true,
                binds: vec!["/var/lib/docker".into(), "/var/lib/uvmkit".into()],
                identity: true,
            }),
            services: vec![ServiceSpec {
                name: "dockerd".into(),
                command: vec![
                    "/usr/sbin/dockerd".into(),
                    "-H".into(),
                    "unix:///var/run/docker.sock".into(),
                ],
                env: BTreeMap::from([("DOCKER_CONFIG".into(), "/root/.docker".into())]),
                after: vec![],
                ready: Some(Readiness::HttpUnix("/var/run/docker.sock".into())),
                ready_timeout: 120,
                restart: RestartPolicy::Always,
                rlimits: BTreeMap::from([
                    ("nofile".into(), RlimitValue::Value(1 << 20)),
                    ("core".into(), RlimitValue::Word("unlimited".into())),
                ]),
                stop_timeout: 20,
                directories: vec!["/run/docker".into()],
                console: true,
            }],
            preload: Some(PreloadSection {
                after: "dockerd".into(),
                socket: Some("/var/run/docker.sock".into()),
                command: vec![],
                images: vec![PreloadImage {
                    path: "/usr/share/uvmkit/preload/busybox.tar".into(),
                    sha256: "0123456789abcdef".repeat(4),
                }],
            }),
            shares: vec![ShareSection {
                source: "work".into(),
                path: "/mnt/work".into(),
                kind: ShareKind::NineP,
                options: vec!["ro".into()],
            }],
            system: Some(SystemImageSection {
                sha256: "ab".repeat(32),
                size: 42 << 20,
                file: SYSTEM_IMAGE_FILE.into(),
                partition: Some(SYSTEM_PARTITION_NAME.into()),
                medium_file: Some(SYSTEM_MEDIUM_FILE.into()),
                wait_seconds: 30,
            }),
            memory: Some(MemorySection {
                zram: Some(ZramSize::Percent(25)),
            }),
        }
    }

    #[test]
    fn what_the_builder_writes_the_init_reads_back_unchanged() {
        let config = everything();
        let text = toml::to_string(&config).unwrap();
        let back: InitConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, config, "{text}");
        assert_eq!(back.check_base(), Ok(()));
        assert_eq!(back.check_services(), Ok(()));
        // The text is TOML a person can read: addresses as strings, tables by name.
        assert!(text.contains("gateway = \"10.0.2.2\""), "{text}");
        assert!(text.contains("[network.static]"), "{text}");
        assert!(text.contains("[[modules]]") && text.contains("[[services]]"), "{text}");
        // Serializing is deterministic.
        assert_eq!(toml::to_string(&back).unwrap(), text);
    }

    #[test]
    fn the_iso_names_only_its_medium_file_and_a_disk_only_its_partition() {
        let iso = SystemImageSection {
            sha256: "cd".repeat(32),
            size: 4096,
            file: SYSTEM_IMAGE_FILE.into(),
            partition: None,
            medium_file: Some(SYSTEM_MEDIUM_FILE.into()),
            wait_seconds: 60,
        };
        let text = toml::to_string(&iso).unwrap();
        assert!(text.contains("medium_file = \"/uvmkit/system.squashfs\""), "{text}");
        assert!(!text.contains("partition"), "{text}");
        assert_eq!(toml::from_str::<SystemImageSection>(&text).unwrap(), iso);
        // A disk's section, as written before the ISO had its own: no medium is looked for.
        let disk = "sha256 = \"ab\"\nsize = 1\nfile = \"/f\"\npartition = \"uvmkit-system\"\nwait_seconds = 5\n";
        let disk: SystemImageSection = toml::from_str(disk).unwrap();
        assert_eq!(disk.partition.as_deref(), Some(SYSTEM_PARTITION_NAME));
        assert_eq!(disk.medium_file, None);
    }

    #[test]
    fn the_default_configuration_round_trips_as_its_two_keys() {
        let text = toml::to_string(&InitConfig::default()).unwrap();
        assert_eq!(text, "hostname = \"uvmkit\"\nroot = \"tmpfs\"\n");
        assert_eq!(toml::from_str::<InitConfig>(&text).unwrap(), InitConfig::default());
        assert_eq!(toml::from_str::<InitConfig>("").unwrap(), InitConfig::default());
    }

    #[test]
    fn unknown_keys_are_refused_naming_the_key() {
        let cases = [
            ("hostname = \"a\"\nhostnme = \"b\"\n", "hostnme"),
            ("[later]\nthing = true\n", "later"),
            ("[network]\ndhcp = true\nretries = 3\n", "retries"),
            (
                "[network.static]\naddress = \"10.0.0.2/8\"\nmask = \"255.0.0.0\"\n",
                "mask",
            ),
            ("[data_disk]\nbind = [\"/var/lib/docker\"]\n", "bind"),
            ("[[modules]]\nname = \"x\"\npath = \"x.ko\"\nsoftdep = []\n", "softdep"),
            (
                "[[services]]\nname = \"s\"\ncommand = [\"/s\"]\ncolour = true\n",
                "colour",
            ),
            ("[preload]\nafter = \"s\"\ncommand = [\"/d\"]\nimage = []\n", "image"),
        ];
        for (text, key) in cases {
            let err = toml::from_str::<InitConfig>(text).unwrap_err();
            assert!(
                err.message().contains(&format!("unknown field `{key}`")),
                "{key}: {err}"
            );
            // The message points at the line.
            assert!(err.span().is_some(), "{key}: {err}");
        }
    }

    #[test]
    fn wrong_types_and_missing_keys_are_refused() {
        for text in [
            "hostname = 3",
            "root = \"disk\"",
            "[[modules]]\nname = \"x\"\n",
            "[network.static]\naddress = \"10.0.0.2/8\"\ngateway = \"router\"\n",
            "[[services]]\nname = \"s\"\ncommand = [\"/s\"]\nrestart = \"sometimes\"\n",
        ] {
            assert!(toml::from_str::<InitConfig>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn section_defaults() {
        let config: InitConfig = toml::from_str("[network]\n[data_disk]\n").unwrap();
        assert_eq!(config.network, Some(NetworkSection::default()));
        let network = config.network.unwrap();
        assert!(network.dhcp);
        assert_eq!(network.timeout, 30);
        assert_eq!(config.data_disk, Some(DataDiskSection::default()));
    }

    #[test]
    fn static_address_and_prefix() {
        let section = |address: &str| StaticSection {
            address: address.into(),
            gateway: None,
            dns: vec![],
        };
        assert_eq!(
            section("10.0.2.15/24").address_and_prefix(),
            Some((Ipv4Addr::new(10, 0, 2, 15), 24))
        );
        for bad in ["10.0.2.15", "10.0.2.15/33", "10.0.2/24", "x/24"] {
            assert_eq!(section(bad).address_and_prefix(), None, "{bad}");
        }
    }

    #[test]
    fn parse_without_services_keeps_the_rest_whatever_the_services_hold() {
        let text = "hostname = \"kept\"\n[network]\n[[services]]\nname = \"s\"\ncolour = 1\n\
                    [preload]\nwhat = 2\n";
        assert!(toml::from_str::<InitConfig>(text).is_err());
        let base = InitConfig::parse_without_services(text).unwrap();
        assert_eq!(base.hostname, "kept");
        assert!(base.network.is_some());
        assert!(base.services.is_empty() && base.preload.is_none());
        // The rest is as strict as ever.
        let err = InitConfig::parse_without_services("hostnme = \"x\"\n[[services]]\n").unwrap_err();
        assert!(err.to_string().contains("hostnme"), "{err}");
        assert!(InitConfig::parse_without_services("hostname = ").is_err());
    }

    #[test]
    fn runtime_paths_live_on_the_data_disk() {
        assert!(Path::new(IDENTITY_DIR).starts_with(DATA_MOUNT_POINT));
        assert!(Path::new(CLIENT_BUNDLE_DIR).starts_with(IDENTITY_DIR));
        assert_eq!(CONFIG_PATH, "/etc/uvmkit/init.toml");
        // GPT partition names hold 36 UTF-16 units, ext4 volume names 16 bytes.
        assert!(DATA_LABEL.len() <= 16);
    }

    #[test]
    fn share_entries_are_checked_with_messages_naming_them() {
        let share = |source: &str, path: &str, kind: ShareKind, options: &[&str]| ShareSection {
            source: source.into(),
            path: path.into(),
            kind,
            options: options.iter().map(|o| o.to_string()).collect(),
        };
        let with = |shares: Vec<ShareSection>| InitConfig {
            shares,
            ..InitConfig::default()
        };
        let good = with(vec![
            share("work", "/mnt/work", ShareKind::NineP, &["cache=loose"]),
            share("//host/users", "/mnt/users", ShareKind::Cifs, &["guest"]),
        ]);
        assert_eq!(good.check_base(), Ok(()));
        let text = toml::to_string(&good).unwrap();
        assert!(text.contains("[[shares]]") && text.contains("type = \"9p\""), "{text}");
        assert_eq!(toml::from_str::<InitConfig>(&text).unwrap(), good);
        for (bad, says) in [
            (vec![share("", "/mnt/a", ShareKind::NineP, &[])], "source must name"),
            (
                vec![share("work", "mnt/a", ShareKind::NineP, &[])],
                "absolute directory",
            ),
            (vec![share("work", "/", ShareKind::Virtiofs, &[])], "absolute directory"),
            (
                vec![share("work", "/mnt/../etc", ShareKind::Vboxsf, &[])],
                "absolute directory",
            ),
            (
                vec![share("host/users", "/mnt/u", ShareKind::Cifs, &[])],
                "//server/share",
            ),
            (
                vec![share("a", "/mnt/a", ShareKind::NineP, &["ro,exec"])],
                "without ','",
            ),
            (
                vec![
                    share("a", "/mnt/a", ShareKind::NineP, &[]),
                    share("b", "/mnt/a", ShareKind::Virtiofs, &[]),
                ],
                "another share's path",
            ),
        ] {
            let err = with(bad).check_base().unwrap_err().to_string();
            assert!(err.starts_with("[[shares]] entry ") && err.contains(says), "{err}");
        }
        let err =
            toml::from_str::<InitConfig>("[[shares]]\nsource = \"a\"\npath = \"/a\"\ntype = \"nfs\"\n").unwrap_err();
        assert!(err.to_string().contains("nfs"), "{err}");
    }

    #[test]
    fn interface_entries_are_checked_and_matched() {
        let entry = |name: Option<&str>, mac: Option<&str>, address: Option<&str>| InterfaceSection {
            name: name.map(Into::into),
            mac: mac.map(Into::into),
            address: address.map(Into::into),
            gateway: None,
            dns: vec![],
        };
        let with = |interfaces: Vec<InterfaceSection>| InitConfig {
            network: Some(NetworkSection {
                interfaces,
                ..NetworkSection::default()
            }),
            ..InitConfig::default()
        };
        assert!(with(vec![entry(Some("eth1"), None, Some("192.168.56.2/24"))])
            .check_base()
            .is_ok());
        let by_mac = entry(None, Some("52:54:00:AB:cd:01"), None);
        assert!(by_mac.matches("eth7", [0x52, 0x54, 0, 0xab, 0xcd, 1]));
        assert!(!by_mac.matches("eth7", [0x52, 0x54, 0, 0xab, 0xcd, 2]));
        for (bad, says) in [
            (vec![entry(None, None, None)], "exactly one of"),
            (
                vec![entry(Some("eth1"), Some("52:54:00:00:00:01"), None)],
                "exactly one of",
            ),
            (vec![entry(None, Some("52:54:00:00:00"), None)], "six hex pairs"),
            (vec![entry(Some("eth1"), None, Some("192.168.56.2"))], "prefix length"),
            (
                vec![entry(Some("eth1"), None, None), entry(Some("eth1"), None, None)],
                "already names",
            ),
        ] {
            let err = with(bad).check_base().unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("[[network.interfaces]]"), "{err}");
        }
        let mut gateway_without_address = entry(Some("eth1"), None, None);
        gateway_without_address.gateway = Some(Ipv4Addr::new(192, 168, 56, 1));
        let err = with(vec![gateway_without_address])
            .check_base()
            .unwrap_err()
            .to_string();
        assert!(err.contains("need a fixed `address`"), "{err}");
    }
}
