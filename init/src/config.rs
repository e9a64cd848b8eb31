//! `/etc/uvmkit/init.toml`: what the builder tells the init about the image.
//!
//! The builder writes this file; the init reads it once per start. Every field is optional so
//! that a missing or partial file still boots with [`Config::default`].

use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: DEFAULT_HOSTNAME.to_string(),
            root: RootMode::Tmpfs,
            root_size: None,
            kernel_release: None,
            modules: Vec::new(),
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
    pub fn load(path: &Path) -> Result<Option<Config>, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path).map(Some),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses and checks configuration text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: path.to_path_buf(),
            message: err.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
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
        Ok(())
    }
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
        // A newer builder may add sections (network, services...) that this init ignores.
        let config = parse("hostname = \"a\"\n[network]\ndhcp = true\n").unwrap();
        assert_eq!(config.hostname, "a");
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
}
