//! Reading `/etc/uvmkit/init.toml`, whose types, checks and paths `uvmkit_init_config` owns
//! (the builder writes the same types).
//!
//! How mistakes degrade: a file that is missing, unreadable or wrong outside its services
//! costs the whole configuration (the init boots with [`InitConfig::default`]); a mistake in
//! `[[services]]` or `[preload]` costs only those tables, so a bad service never costs the
//! machine its modules, network or data disk.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;
use uvmkit_init_config::{InitConfig, InitConfigError};

/// Why the configuration, or its services, could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read {}: {source}; the image builder should have written it", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file is not valid TOML or does not match the expected keys and types.
    #[error(
        "{} is not a valid init configuration: {}",
        .path.display(),
        .source.to_string().trim_end()
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error, with line and column.
        source: toml::de::Error,
    },
    /// A value has the right type but cannot be used.
    #[error("{}: {source}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key at fault and what is expected.
        source: InitConfigError,
    },
}

/// Reads and checks the configuration at `path`; `Ok(None)` when the file does not exist.
/// See [`parse_keeping_base`] for the second value.
pub fn load(path: &Path) -> Result<Option<(InitConfig, Option<ConfigError>)>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_keeping_base(&text, path).map(Some),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Parses and checks configuration text, services included; `path` only names the file in
/// errors.
#[cfg(test)]
pub fn parse(text: &str, path: &Path) -> Result<InitConfig, ConfigError> {
    match parse_keeping_base(text, path)? {
        (config, None) => Ok(config),
        (_, Some(err)) => Err(err),
    }
}

/// Like [`parse`], but a mistake in `[[services]]` or `[preload]` drops only those tables:
/// the rest of the configuration comes back with, separately, why they were dropped.
pub fn parse_keeping_base(text: &str, path: &Path) -> Result<(InitConfig, Option<ConfigError>), ConfigError> {
    let parse_error = |source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    };
    let invalid = |source| ConfigError::Invalid {
        path: path.to_path_buf(),
        source,
    };
    let (mut config, mut services_error) = match toml::from_str::<InitConfig>(text) {
        Ok(config) => (config, None),
        // The full parse's error has the line and column, so it is the one reported; whether
        // it lies in the services is decided by parsing the rest alone.
        Err(err) => match InitConfig::parse_without_services(text) {
            Ok(base) => (base, Some(parse_error(err))),
            Err(_) => return Err(parse_error(err)),
        },
    };
    config.check_base().map_err(invalid)?;
    if services_error.is_none() {
        if let Err(err) = config.check_services() {
            services_error = Some(invalid(err));
        }
    }
    if services_error.is_some() {
        config.services.clear();
        config.preload = None;
    }
    Ok((config, services_error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uvmkit_init_config::{Readiness, RestartPolicy, RootMode, CONFIG_PATH};

    fn parse(text: &str) -> Result<InitConfig, ConfigError> {
        super::parse(text, Path::new(CONFIG_PATH))
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
        assert_eq!(config, InitConfig::default());
        assert_eq!(config.hostname, "uvmkit");
        assert_eq!(config.root, RootMode::Tmpfs);
    }

    #[test]
    fn unknown_keys_cost_the_whole_configuration_and_are_named() {
        // The builder and the init ship together: a key this init does not know is a mistake.
        let err = parse("hostname = \"a\"\n[later]\nthing = true\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.starts_with("/etc/uvmkit/init.toml is not a valid init configuration: "),
            "{message}"
        );
        assert!(
            message.contains("unknown field `later`") && message.contains("line 2"),
            "{message}"
        );
        let err = parse("[network]\ndhcp = true\nretries = 3\n").unwrap_err();
        assert!(err.to_string().contains("retries"), "{err}");
    }

    #[test]
    fn bad_values_are_errors_naming_the_file_and_key() {
        let err = parse("[network.static]\naddress = \"10.0.2.15\"\n").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    source: InitConfigError::InvalidStaticAddress { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("/etc/uvmkit/init.toml: [network.static] address \"10.0.2.15\" must be"),
            "{err}"
        );
        let err = parse("[data_disk]\nbinds = [\"/a/docker\", \"/b/docker\"]\n").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    source: InitConfigError::InvalidBind { .. },
                    ..
                }
            ),
            "{err}"
        );
        let err = parse("hostname = \"a/b\"").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    source: InitConfigError::InvalidHostname { .. },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn malformed_toml_and_wrong_types_are_errors_naming_the_file() {
        for text in ["hostname = ", "hostname = 3", "[[modules]]\nname = \"x\"\n"] {
            let err = parse(text).unwrap_err();
            assert!(matches!(err, ConfigError::Parse { .. }), "{text}: {err}");
            assert!(err.to_string().contains("/etc/uvmkit/init.toml"), "{err}");
        }
        let err = parse("root = \"disk\"").unwrap_err();
        assert!(err.to_string().contains("disk"), "{err}");
    }

    #[test]
    fn missing_file_is_none_and_unreadable_is_an_error() {
        assert!(load(Path::new("/nonexistent/uvmkit/init.toml")).unwrap().is_none());
        // A directory cannot be read as a file.
        let err = load(Path::new("/")).unwrap_err();
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
        let text = format!("hostname = \"kept\"\n[network]\ntimeout = 7\n{text}");
        let (config, err) = parse_keeping_base(&text, Path::new(CONFIG_PATH)).unwrap();
        assert_eq!(config.hostname, "kept");
        assert_eq!(config.network.map(|n| n.timeout), Some(7));
        assert!(config.services.is_empty() && config.preload.is_none());
        err.expect("an error")
    }

    #[test]
    fn bad_services_are_logged_errors_that_keep_the_rest() {
        let one = |extra: &str| format!("[[services]]\nname = \"svc\"\ncommand = [\"/bin/svc\"]\n{extra}");
        // Bad values (every check is tested in `uvmkit-init-config`).
        let err = service_error(&one("after = [\"nope\"]\n"));
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    source: InitConfigError::InvalidService(_),
                    ..
                }
            ),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.starts_with("/etc/uvmkit/init.toml: [[services]] \"svc\": after: names \"nope\""),
            "{message}"
        );
        let err = service_error(&format!(
            "{}[preload]\nafter = \"other\"\ncommand = [\"/d\"]\n",
            one("")
        ));
        assert!(
            err.to_string()
                .starts_with("/etc/uvmkit/init.toml: [preload] after: names \"other\""),
            "{err}"
        );
        // Unknown keys and wrong types are parse errors with a line number.
        let err = service_error(&one("restart = \"sometimes\"\n"));
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        let err = service_error(&one("colour = true\n"));
        assert!(
            err.to_string().contains("colour") && err.to_string().contains("line 7"),
            "{err}"
        );
        let err = service_error(&one("ready = { udp = 53 }\n"));
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        // Neither the engine's socket nor a command: nothing to load with.
        let err = service_error(&format!("{}[preload]\nafter = \"svc\"\n", one("")));
        assert!(err.to_string().contains("no socket is given"), "{err}");
    }

    #[test]
    fn a_bad_base_costs_everything_even_with_good_services() {
        let text = format!("hostname = \"\"\n{DOCKER_SERVICES}").replace("hostname = \"docker\"\n", "");
        let err = parse_keeping_base(&text, Path::new(CONFIG_PATH)).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    source: InitConfigError::InvalidHostname { .. },
                    ..
                }
            ),
            "{err}"
        );
        let err = parse_keeping_base("hostnme = \"x\"\n[[services]]\nname = 1\n", Path::new(CONFIG_PATH)).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }
}
