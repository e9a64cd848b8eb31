//! `/etc/uvmkit/init.toml`: what the builder tells the init about the image.
//!
//! The builder writes this file; the init reads it once per start. Every field is optional so
//! that a missing or partial file still boots with [`Config::default`].

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
pub use uvmkit_service_spec::{check_command, check_services, Readiness, RestartPolicy, ServiceSpec};

/// Where the builder puts the configuration inside the image.
pub const CONFIG_PATH: &str = "/etc/uvmkit/init.toml";

/// The hostname used when the configuration does not name one.
pub const DEFAULT_HOSTNAME: &str = "uvmkit";

/// The init's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The image's hostname, set with `sethostname(2)`.
    pub hostname: String,
    /// Which file system the system runs from.
    pub root: RootMode,
    /// The size limit of the tmpfs root, as tmpfs's `size=` takes it (`2G`, `512m`, `80%`);
    /// when absent, the initramfs's size plus tmpfs's default (half the memory).
    pub root_size: Option<String>,
    /// The release whose modules live in `/lib/modules/<kernel_release>/`; the running
    /// kernel's release when absent.
    pub kernel_release: Option<String>,
    /// The image's kernel modules, in any order.
    pub modules: Vec<ModuleSpec>,
    /// Network bring-up; absent means the network stays down (as in the minimal image).
    pub network: Option<NetworkSection>,
    /// Using the data disk for state; absent means the data partition is only looked for.
    pub data_disk: Option<DataDiskSection>,
    /// Long-running processes the init starts and supervises (`[[services]]`). Parsed apart
    /// from the rest (see [`Config::parse_keeping_base`]).
    #[serde(skip)]
    pub services: Vec<ServiceSpec>,
    /// Container image archives loaded once a service is ready (`[preload]`).
    #[serde(skip)]
    pub preload: Option<PreloadSection>,
}

/// The `[[services]]` and `[preload]` tables, read in a second pass over the same text so that
/// a mistake there leaves the rest of the configuration usable.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ServiceTables {
    services: Vec<ServiceSpec>,
    preload: Option<PreloadSection>,
}

/// The `PATH` every service starts with.
pub const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `[preload]`: container image archives loaded once.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreloadSection {
    /// The service that must be ready before loading.
    pub after: String,
    /// The loading command; the archive path is appended.
    pub command: Vec<String>,
    /// The archives, loaded in this order.
    #[serde(default)]
    pub images: Vec<PreloadImage>,
}

/// One archive of `[preload] images`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreloadImage {
    /// The archive inside the image (absolute).
    pub path: PathBuf,
    /// Its SHA-256 (64 lowercase hex digits); names the marker that says it was loaded.
    pub sha256: String,
}

/// `[network]`: how the init configures the network.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Run a DHCPv4 client on every Ethernet interface (all but the first with `static`).
    #[serde(default = "default_true")]
    pub dhcp: bool,
    /// Seconds boot waits for a first address before going on (DHCP keeps trying).
    #[serde(default = "default_network_timeout")]
    pub timeout: u64,
    /// A fixed address for the first Ethernet interface.
    #[serde(default, rename = "static")]
    pub static_v4: Option<StaticSection>,
}

/// `[network.static]`: a fixed IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticSection {
    /// Address and prefix length, `10.0.2.15/24`.
    pub address: String,
    /// The default gateway.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers for `/etc/resolv.conf`.
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
}

impl StaticSection {
    /// The address and prefix length of `address`, if it is `A.B.C.D/N` with N at most 32.
    pub fn address_and_prefix(&self) -> Option<(Ipv4Addr, u8)> {
        let (addr, prefix) = self.address.split_once('/')?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        Some((addr.parse().ok()?, prefix))
    }
}

/// `[data_disk]`: keep state on the data partition.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataDiskSection {
    /// Partition and format a whole disk that is entirely blank when no data partition exists.
    #[serde(default)]
    pub format_blank: bool,
    /// Directories bind-mounted from the data disk: `/var/lib/docker` comes from
    /// `<data>/docker` (the last component names the directory on the disk).
    #[serde(default)]
    pub binds: Vec<PathBuf>,
    /// Create SSH host keys and Docker TLS material on the data disk (see `identity.rs`).
    #[serde(default)]
    pub identity: bool,
}

fn default_true() -> bool {
    true
}

fn default_network_timeout() -> u64 {
    30
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: DEFAULT_HOSTNAME.to_string(),
            root: RootMode::Tmpfs,
            root_size: None,
            kernel_release: None,
            modules: Vec::new(),
            network: None,
            data_disk: None,
            services: Vec::new(),
            preload: None,
        }
    }
}

/// Which file system `/` is once boot is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootMode {
    /// Move the initramfs into a tmpfs and make that `/` (`pivot_root` works there, so runc does).
    Tmpfs,
    /// Stay on the kernel's rootfs.
    Initramfs,
}

/// One kernel module of the image.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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

/// Why the configuration could not be used.
#[derive(Debug)]
pub enum ConfigError {
    /// The file exists but could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file is not valid TOML or does not match the expected keys and types.
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The hostname is not something `sethostname(2)` accepts.
    InvalidHostname {
        /// The file.
        path: PathBuf,
        /// The rejected value.
        hostname: String,
    },
    /// `root_size` is not a tmpfs size.
    InvalidRootSize {
        /// The file.
        path: PathBuf,
        /// The rejected value.
        size: String,
    },
    /// A module path is absolute or leaves the modules directory.
    InvalidModulePath {
        /// The file.
        path: PathBuf,
        /// The module.
        module: String,
        /// The rejected path.
        module_path: PathBuf,
    },
    /// `[network.static] address` is not `A.B.C.D/N`.
    InvalidStaticAddress {
        /// The file.
        path: PathBuf,
        /// The rejected value.
        address: String,
    },
    /// A `[data_disk] binds` entry is not an absolute path with a last component, or two
    /// entries share their last component.
    InvalidBind {
        /// The file.
        path: PathBuf,
        /// The rejected entry.
        bind: PathBuf,
    },
    /// A `[[services]]` entry has a bad value.
    InvalidService {
        /// The file.
        path: PathBuf,
        /// The service's name.
        service: String,
        /// The key at fault.
        key: &'static str,
        /// What is wrong and what is expected.
        problem: String,
    },
    /// `[preload]` has a bad value.
    InvalidPreload {
        /// The file.
        path: PathBuf,
        /// The key at fault.
        key: &'static str,
        /// What is wrong and what is expected.
        problem: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => write!(
                f,
                "cannot read {}: {source}; the image builder should have written it",
                path.display()
            ),
            ConfigError::Parse { path, message } => write!(
                f,
                "{} is not a valid init configuration: {}",
                path.display(),
                message.trim_end()
            ),
            ConfigError::InvalidHostname { path, hostname } => write!(
                f,
                "{}: hostname {hostname:?} is not valid: use 1 to 64 characters, no '/' or NUL",
                path.display()
            ),
            ConfigError::InvalidRootSize { path, size } => write!(
                f,
                "{}: root_size {size:?} is not a tmpfs size: use a number of bytes with an \
                 optional k, m or g suffix, or a percentage of memory such as \"80%\"",
                path.display()
            ),
            ConfigError::InvalidModulePath {
                path,
                module,
                module_path,
            } => write!(
                f,
                "{}: module {module:?} has path {:?}, which must be relative to \
                 /lib/modules/<kernel_release>/ and must not contain '..'",
                path.display(),
                module_path.display()
            ),
            ConfigError::InvalidStaticAddress { path, address } => write!(
                f,
                "{}: [network.static] address {address:?} must be an IPv4 address with a prefix \
                 length, such as \"10.0.2.15/24\"",
                path.display()
            ),
            ConfigError::InvalidBind { path, bind } => write!(
                f,
                "{}: [data_disk] binds entry {:?} must be an absolute path without '..' whose \
                 last component differs from every other entry's (it names the directory on the \
                 data disk)",
                path.display(),
                bind.display()
            ),
            ConfigError::InvalidService {
                path,
                service,
                key,
                problem,
            } => write!(f, "{}: [[services]] {service:?}: {key}: {problem}", path.display()),
            ConfigError::InvalidPreload { path, key, problem } => {
                write!(f, "{}: [preload] {key}: {problem}", path.display())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Config {
    /// Reads and checks the configuration at `path`; `Ok(None)` when the file does not exist.
    /// See [`Config::parse_keeping_base`] for the second value.
    pub fn load(path: &Path) -> Result<Option<(Config, Option<ConfigError>)>, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse_keeping_base(&text, path).map(Some),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses and checks configuration text; `path` only names the file in errors.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        match Config::parse_keeping_base(text, path)? {
            (config, None) => Ok(config),
            (_, Some(err)) => Err(err),
        }
    }

    /// Like [`Config::parse`], but a mistake in `[[services]]` or `[preload]` drops only those
    /// tables: the rest of the configuration comes back with, separately, why they were
    /// dropped. A bad service must not cost the machine its modules, network or data disk.
    pub fn parse_keeping_base(text: &str, path: &Path) -> Result<(Config, Option<ConfigError>), ConfigError> {
        let parse_error = |err: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: err.to_string(),
        };
        let mut config: Config = toml::from_str(text).map_err(parse_error)?;
        config.validate(path)?;
        let tables = toml::from_str::<ServiceTables>(text)
            .map_err(parse_error)
            .and_then(|tables| validate_services(&tables, path).map(|()| tables));
        match tables {
            Ok(tables) => {
                config.services = tables.services;
                config.preload = tables.preload;
                Ok((config, None))
            }
            Err(err) => Ok((config, Some(err))),
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        // Linux limits the nodename to HOST_NAME_MAX (64) bytes.
        let hostname_ok =
            !self.hostname.is_empty() && self.hostname.len() <= 64 && !self.hostname.contains(['/', '\0']);
        if !hostname_ok {
            return Err(ConfigError::InvalidHostname {
                path: path.to_path_buf(),
                hostname: self.hostname.clone(),
            });
        }
        if let Some(size) = &self.root_size {
            if !is_tmpfs_size(size) {
                return Err(ConfigError::InvalidRootSize {
                    path: path.to_path_buf(),
                    size: size.clone(),
                });
            }
        }
        for module in &self.modules {
            let inside = module
                .path
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if !inside || module.path.as_os_str().is_empty() {
                return Err(ConfigError::InvalidModulePath {
                    path: path.to_path_buf(),
                    module: module.name.clone(),
                    module_path: module.path.clone(),
                });
            }
        }
        if let Some(address) = self
            .network
            .as_ref()
            .and_then(|n| n.static_v4.as_ref())
            .filter(|s| s.address_and_prefix().is_none())
        {
            return Err(ConfigError::InvalidStaticAddress {
                path: path.to_path_buf(),
                address: address.address.clone(),
            });
        }
        let binds = self.data_disk.as_ref().map(|d| d.binds.as_slice()).unwrap_or_default();
        for (i, bind) in binds.iter().enumerate() {
            let plain = bind.is_absolute()
                && bind
                    .components()
                    .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
            let name = bind.file_name();
            let unique = binds[..i].iter().all(|other| other.file_name() != name);
            if !plain || name.is_none() || !unique {
                return Err(ConfigError::InvalidBind {
                    path: path.to_path_buf(),
                    bind: bind.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Whether `name` is a service name: `[a-z0-9][a-z0-9_.-]*`.
/// Checks names, commands, limits and the `after` graph of the services, and `[preload]`.
fn validate_services(tables: &ServiceTables, path: &Path) -> Result<(), ConfigError> {
    let services = &tables.services;
    check_services(services).map_err(|err| ConfigError::InvalidService {
        path: path.to_path_buf(),
        service: err.service,
        key: err.key,
        problem: err.problem,
    })?;
    if let Some(preload) = &tables.preload {
        let invalid = |key: &'static str, problem: String| ConfigError::InvalidPreload {
            path: path.to_path_buf(),
            key,
            problem,
        };
        if !services.iter().any(|s| s.name == preload.after) {
            return Err(invalid(
                "after",
                format!("names {:?}, which is not a service of this image", preload.after),
            ));
        }
        check_command(&preload.command).map_err(|problem| invalid("command", problem))?;
        for image in &preload.images {
            if !image.path.is_absolute() {
                return Err(invalid(
                    "images",
                    format!("path {:?} is not an absolute path", image.path.display()),
                ));
            }
            let hex = image.sha256.len() == 64
                && image
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex {
                return Err(invalid(
                    "images",
                    format!(
                        "sha256 {:?} of {} is not 64 lowercase hexadecimal digits",
                        image.sha256,
                        image.path.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Whether `text` is a tmpfs `size=` value: digits, then nothing, `k`, `m`, `g` (either case)
/// or `%` (`Documentation/filesystems/tmpfs.rst`).
fn is_tmpfs_size(text: &str) -> bool {
    let digits = text.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', '%']);
    let suffix_len = text.len() - digits.len();
    suffix_len <= 1 && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/uvmkit/init.toml"))
    }

    #[test]
    fn full_file_from_the_builder() {
        let config = parse(
            r#"
hostname = "node-1"
root = "initramfs"
kernel_release = "6.1.0-28-amd64"

[[modules]]
name = "virtio_blk"
path = "kernel/drivers/block/virtio_blk.ko"
depends = ["virtio", "virtio_ring"]

[[modules]]
name = "virtio"
path = "kernel/drivers/virtio/virtio.ko.xz"
"#,
        )
        .unwrap();
        assert_eq!(config.hostname, "node-1");
        assert_eq!(config.root, RootMode::Initramfs);
        assert_eq!(config.kernel_release.as_deref(), Some("6.1.0-28-amd64"));
        assert_eq!(config.modules.len(), 2);
        assert_eq!(config.modules[0].depends, ["virtio", "virtio_ring"]);
        assert_eq!(config.modules[1].path, Path::new("kernel/drivers/virtio/virtio.ko.xz"));
        assert!(config.modules[1].depends.is_empty());
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.hostname, "uvmkit");
        assert_eq!(config.root, RootMode::Tmpfs);
        assert_eq!(config.kernel_release, None);
    }

    #[test]
    fn unknown_top_level_sections_are_ignored() {
        // A newer builder may add sections that this init ignores.
        let config = parse("hostname = \"a\"\n[later]\nthing = true\n").unwrap();
        assert_eq!(config.hostname, "a");
        assert_eq!(config.network, None);
        assert_eq!(config.data_disk, None);
    }

    #[test]
    fn network_section_with_defaults_and_static_address() {
        let config = parse("[network]\n").unwrap();
        let network = config.network.unwrap();
        assert!(network.dhcp);
        assert_eq!(network.timeout, 30);
        assert_eq!(network.static_v4, None);
        let config = parse(
            "[network]\ndhcp = false\ntimeout = 5\n[network.static]\naddress = \"10.0.2.15/24\"\n\
             gateway = \"10.0.2.2\"\ndns = [\"10.0.2.3\"]\n",
        )
        .unwrap();
        let network = config.network.unwrap();
        assert!(!network.dhcp);
        assert_eq!(network.timeout, 5);
        let s = network.static_v4.unwrap();
        assert_eq!(s.address_and_prefix(), Some((Ipv4Addr::new(10, 0, 2, 15), 24)));
        assert_eq!(s.gateway, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(s.dns, [Ipv4Addr::new(10, 0, 2, 3)]);
        for bad in ["10.0.2.15", "10.0.2.15/33", "10.0.2/24", "x/24"] {
            let text = format!("[network.static]\naddress = {bad:?}\n");
            assert!(
                matches!(parse(&text), Err(ConfigError::InvalidStaticAddress { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse("[network]\ndhcp = true\nretries = 3\n"),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn data_disk_binds_must_be_plain_absolute_and_distinct() {
        let config =
            parse("[data_disk]\nformat_blank = true\nbinds = [\"/var/lib/docker\", \"/var/lib/containerd\"]\n")
                .unwrap();
        let data = config.data_disk.unwrap();
        assert!(data.format_blank);
        assert!(!data.identity);
        assert_eq!(data.binds.len(), 2);
        assert!(!parse("[data_disk]\n").unwrap().data_disk.unwrap().format_blank);
        for bad in [
            r#"["var/lib/docker"]"#,
            r#"["/var/../docker"]"#,
            r#"["/"]"#,
            r#"["/a/docker", "/b/docker"]"#,
        ] {
            let text = format!("[data_disk]\nbinds = {bad}\n");
            assert!(matches!(parse(&text), Err(ConfigError::InvalidBind { .. })), "{bad}");
        }
    }

    #[test]
    fn malformed_toml_is_an_error_naming_the_file() {
        let err = parse("hostname = ").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
        assert!(err.to_string().contains("/etc/uvmkit/init.toml"));
    }

    #[test]
    fn wrong_types_and_values_are_errors() {
        assert!(matches!(parse("hostname = 3"), Err(ConfigError::Parse { .. })));
        let err = parse("root = \"disk\"").unwrap_err();
        assert!(err.to_string().contains("disk"), "{err}");
        assert!(matches!(
            parse("[[modules]]\nname = \"x\"\n"),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn invalid_hostnames_are_rejected() {
        for bad in ["", "a/b", &"x".repeat(65)] {
            let text = format!("hostname = {bad:?}");
            assert!(
                matches!(parse(&text), Err(ConfigError::InvalidHostname { .. })),
                "{bad:?}"
            );
        }
        assert!(parse(&format!("hostname = {:?}", "x".repeat(64))).is_ok());
    }

    #[test]
    fn root_size_takes_tmpfs_sizes_only() {
        for good in ["2G", "512m", "80%", "1048576", "4k"] {
            let config = parse(&format!("root_size = {good:?}")).unwrap();
            assert_eq!(config.root_size.as_deref(), Some(good));
        }
        for bad in ["", "G", "2GB", "-1", "1.5G", "80%%", "2G,nr_inodes=1"] {
            assert!(
                matches!(
                    parse(&format!("root_size = {bad:?}")),
                    Err(ConfigError::InvalidRootSize { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn module_paths_must_stay_inside_the_modules_directory() {
        for bad in ["/lib/x.ko", "../x.ko", "kernel/../../x.ko", ""] {
            let text = format!("[[modules]]\nname = \"x\"\npath = {bad:?}\n");
            assert!(
                matches!(parse(&text), Err(ConfigError::InvalidModulePath { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn missing_file_is_none_and_unreadable_is_an_error() {
        assert!(Config::load(Path::new("/nonexistent/uvmkit/init.toml"))
            .unwrap()
            .is_none());
        // A directory cannot be read as a file.
        let err = Config::load(Path::new("/")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    }

    /// What the builder writes for a service and preloaded images (every key of a service is
    /// tested in `uvmkit-service-spec`, which both ends share).
    const DOCKER_SERVICES: &str = r#"
hostname = "docker"

[[services]]
name = "dockerd"
command = ["/usr/sbin/dockerd", "-H", "unix:///var/run/docker.sock"]
ready = { http_unix = "/var/run/docker.sock" }
ready_timeout = 120
restart = "always"
stop_timeout = 20
console = true

[preload]
after = "dockerd"
command = ["/usr/bin/docker", "load", "-i"]
images = [{ path = "/usr/share/uvmkit/preload/busybox.tar", sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" }]
"#;

    #[test]
    fn services_and_preload_from_the_builder() {
        let config = parse(DOCKER_SERVICES).unwrap();
        assert_eq!(config.hostname, "docker");
        let [dockerd] = &config.services[..] else {
            panic!("one service expected: {:?}", config.services)
        };
        assert_eq!(dockerd.ready, Some(Readiness::HttpUnix("/var/run/docker.sock".into())));
        assert_eq!(dockerd.restart, RestartPolicy::Always);
        assert_eq!(dockerd.stop_timeout, 20);
        let preload = config.preload.unwrap();
        assert_eq!(preload.after, "dockerd");
        assert_eq!(preload.command, ["/usr/bin/docker", "load", "-i"]);
        assert_eq!(preload.images.len(), 1);
    }

    /// The error for `text`, which must keep the rest of the configuration usable.
    fn service_error(text: &str) -> ConfigError {
        let text = format!("hostname = \"kept\"\n{text}");
        let (config, err) = Config::parse_keeping_base(&text, Path::new("/etc/uvmkit/init.toml")).unwrap();
        assert_eq!(config.hostname, "kept");
        assert!(config.services.is_empty() && config.preload.is_none());
        err.expect("an error")
    }

    #[test]
    fn bad_services_are_errors_naming_service_and_key_and_keep_the_rest() {
        let one = |extra: &str| format!("[[services]]\nname = \"svc\"\ncommand = [\"/bin/svc\"]\n{extra}");
        let cases = [
            (one("after = [\"nope\"]\n"), "\"svc\": after: names \"nope\""),
            (
                "[[services]]\nname = \"svc\"\ncommand = []\n".to_string(),
                "\"svc\": command: is empty",
            ),
            (
                "[[services]]\nname = \"svc\"\ncommand = [\"svc\"]\n".to_string(),
                "\"svc\": command: program \"svc\" is not an absolute path",
            ),
            (
                one("rlimits = { files = 10 }\n"),
                "\"svc\": rlimits: unknown limit \"files\"",
            ),
            (
                one("rlimits = { nofile = \"lots\" }\n"),
                "\"svc\": rlimits: nofile = \"lots\"",
            ),
            (
                format!("{}{}", one(""), one("")),
                "\"svc\": name: is used by two services",
            ),
            (
                "[[services]]\nname = \"Svc\"\ncommand = [\"/bin/svc\"]\n".to_string(),
                "\"Svc\": name: must match",
            ),
            (one("directories = [\"run/x\"]\n"), "\"svc\": directories:"),
            (one("ready = { unix = \"x.sock\" }\n"), "\"svc\": ready:"),
        ];
        for (text, expected) in cases {
            let err = service_error(&text);
            assert!(matches!(err, ConfigError::InvalidService { .. }), "{err}");
            let message = err.to_string();
            assert!(message.contains(expected), "{message} lacks {expected}");
            assert!(message.starts_with("/etc/uvmkit/init.toml: [[services]] "), "{message}");
        }
        // Unknown keys and wrong types are parse errors with a line number.
        let err = service_error(&one("restart = \"sometimes\"\n"));
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        let err = service_error(&one("colour = true\n"));
        assert!(err.to_string().contains("colour"), "{err}");
        let err = service_error(&one("ready = { udp = 53 }\n"));
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }

    #[test]
    fn after_cycles_are_errors() {
        let text = "[[services]]\nname = \"a\"\ncommand = [\"/a\"]\nafter = [\"c\"]\n\
                    [[services]]\nname = \"b\"\ncommand = [\"/b\"]\nafter = [\"a\"]\n\
                    [[services]]\nname = \"c\"\ncommand = [\"/c\"]\nafter = [\"b\"]\n\
                    [[services]]\nname = \"d\"\ncommand = [\"/d\"]\nafter = [\"a\"]\n";
        let err = service_error(text);
        assert_eq!(
            err.to_string(),
            "/etc/uvmkit/init.toml: [[services]] \"a\": after: forms a cycle (a -> c -> b -> a); \
             no service in it could ever start"
        );
    }

    #[test]
    fn bad_preload_is_an_error() {
        let svc = "[[services]]\nname = \"dockerd\"\ncommand = [\"/usr/sbin/dockerd\"]\n";
        let sha = "a".repeat(64);
        let cases = [
            (format!("{svc}[preload]\nafter = \"docker\"\ncommand = [\"/usr/bin/docker\"]\n"), "after: names \"docker\""),
            (format!("{svc}[preload]\nafter = \"dockerd\"\ncommand = []\n"), "command: is empty"),
            (
                format!("{svc}[preload]\nafter = \"dockerd\"\ncommand = [\"/d\"]\nimages = [{{ path = \"x.tar\", sha256 = \"{sha}\" }}]\n"),
                "images: path \"x.tar\"",
            ),
            (
                format!("{svc}[preload]\nafter = \"dockerd\"\ncommand = [\"/d\"]\nimages = [{{ path = \"/x.tar\", sha256 = \"{}\" }}]\n", "A".repeat(64)),
                "images: sha256",
            ),
        ];
        for (text, expected) in cases {
            let err = service_error(&text);
            assert!(matches!(err, ConfigError::InvalidPreload { .. }), "{err}");
            assert!(err.to_string().contains(expected), "{err} lacks {expected}");
        }
    }
}
