//! The values `/etc/uvmkit/init.toml` may hold beyond what its types say: hostnames, sizes,
//! paths that stay where they belong, services whose `after` lists make sense.
//!
//! The base (everything but the services) and the services are checked apart, so that the
//! init can run without its services when only they are wrong.

use std::path::{Component, Path, PathBuf};

use thiserror::Error;
use uvmkit_service_spec::{check_command, check_services, ServiceError};

use crate::{InitConfig, InterfaceSection, NetworkSection, ShareKind, ShareSection};

/// A value of the configuration that cannot be used; the message names the key and says what
/// is expected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InitConfigError {
    /// The hostname is not something `sethostname(2)` accepts.
    #[error("hostname {hostname:?} is not valid: use 1 to 64 characters, no '/' or NUL")]
    InvalidHostname {
        /// The rejected value.
        hostname: String,
    },
    /// `root_size` is not a tmpfs size.
    #[error(
        "root_size {size:?} is not a tmpfs size: use a number of bytes with an optional k, m or g \
         suffix, or a percentage of memory such as \"80%\""
    )]
    InvalidRootSize {
        /// The rejected value.
        size: String,
    },
    /// A module path is absolute or leaves the modules directory.
    #[error(
        "module {module:?} has path {:?}, which must be relative to /lib/modules/<kernel_release>/ \
         and must not contain '..'",
        .module_path.display()
    )]
    InvalidModulePath {
        /// The module.
        module: String,
        /// The rejected path.
        module_path: PathBuf,
    },
    /// `[network.static] address` is not `A.B.C.D/N`.
    #[error(
        "[network.static] address {address:?} must be an IPv4 address with a prefix length, such \
         as \"10.0.2.15/24\""
    )]
    InvalidStaticAddress {
        /// The rejected value.
        address: String,
    },
    /// A `[[network.interfaces]]` entry cannot be used.
    #[error("[[network.interfaces]] entry {index}: {problem}")]
    InvalidInterface {
        /// The entry's position, from 1.
        index: usize,
        /// What is wrong and what is expected.
        problem: String,
    },
    /// A `[data_disk] binds` entry is not an absolute path with a last component, or two
    /// entries share their last component.
    #[error(
        "[data_disk] binds entry {:?} must be an absolute path without '..' whose last component \
         differs from every other entry's (it names the directory on the data disk)",
        .bind.display()
    )]
    InvalidBind {
        /// The rejected entry.
        bind: PathBuf,
    },
    /// A `[[shares]]` entry cannot be used.
    #[error("[[shares]] entry {index} ({share:?}): {problem}")]
    InvalidShare {
        /// The entry's position, from 1.
        index: usize,
        /// Its `source`.
        share: String,
        /// What is wrong and what is expected.
        problem: String,
    },
    /// A `[[services]]` entry has a bad value.
    #[error(transparent)]
    InvalidService(#[from] ServiceError),
    /// `[preload]` has a bad value.
    #[error("[preload] {key}: {problem}")]
    InvalidPreload {
        /// The key at fault.
        key: &'static str,
        /// What is wrong and what is expected.
        problem: String,
    },
}

impl NetworkSection {
    /// Checks the `[[network.interfaces]]` entries: each names one interface (by a valid name
    /// or MAC address) no earlier entry names, and has `gateway`/`dns` only with an address.
    pub fn check_interfaces(&self) -> Result<(), InitConfigError> {
        for (i, interface) in self.interfaces.iter().enumerate() {
            check_interface(interface, &self.interfaces[..i])
                .map_err(|problem| InitConfigError::InvalidInterface { index: i + 1, problem })?;
        }
        Ok(())
    }
}

impl InitConfig {
    /// Checks everything but `[[services]]` and `[preload]`.
    pub fn check_base(&self) -> Result<(), InitConfigError> {
        // Linux limits the nodename to HOST_NAME_MAX (64) bytes.
        let hostname = &self.hostname;
        if hostname.is_empty() || hostname.len() > 64 || hostname.contains(['/', '\0']) {
            return Err(InitConfigError::InvalidHostname {
                hostname: hostname.clone(),
            });
        }
        if let Some(size) = self.root_size.as_ref().filter(|size| !is_tmpfs_size(size)) {
            return Err(InitConfigError::InvalidRootSize { size: size.clone() });
        }
        for module in &self.modules {
            let inside = module
                .path
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if !inside || module.path.as_os_str().is_empty() {
                return Err(InitConfigError::InvalidModulePath {
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
            return Err(InitConfigError::InvalidStaticAddress {
                address: address.address.clone(),
            });
        }
        if let Some(network) = &self.network {
            network.check_interfaces()?;
        }
        let binds = self.data_disk.as_ref().map(|d| d.binds.as_slice()).unwrap_or_default();
        for (i, bind) in binds.iter().enumerate() {
            let name = bind.file_name();
            let unique = binds[..i].iter().all(|other| other.file_name() != name);
            if !is_plain_absolute(bind) || name.is_none() || !unique {
                return Err(InitConfigError::InvalidBind { bind: bind.clone() });
            }
        }
        for (i, share) in self.shares.iter().enumerate() {
            check_share(share, &self.shares[..i]).map_err(|problem| InitConfigError::InvalidShare {
                index: i + 1,
                share: share.source.clone(),
                problem,
            })?;
        }
        Ok(())
    }

    /// Checks names, commands, limits and the `after` graph of the services, and `[preload]`.
    pub fn check_services(&self) -> Result<(), InitConfigError> {
        check_services(&self.services)?;
        let Some(preload) = &self.preload else {
            return Ok(());
        };
        let invalid = |key: &'static str, problem: String| InitConfigError::InvalidPreload { key, problem };
        if !self.services.iter().any(|s| s.name == preload.after) {
            return Err(invalid(
                "after",
                format!("names {:?}, which is not a service of this image", preload.after),
            ));
        }
        match (&preload.socket, preload.command.is_empty()) {
            (Some(socket), true) if socket.is_absolute() => {}
            (Some(socket), true) => {
                return Err(invalid(
                    "socket",
                    format!("{:?} is not an absolute path", socket.display()),
                ))
            }
            (None, false) => check_command(&preload.command).map_err(|problem| invalid("command", problem))?,
            (Some(_), false) => {
                return Err(invalid(
                    "socket",
                    "and command are both given; the archives are loaded through one of them".into(),
                ))
            }
            (None, true) => {
                return Err(invalid(
                    "command",
                    "is empty and no socket is given; give the engine's API socket or a loading command".into(),
                ))
            }
        }
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
        Ok(())
    }
}

/// One `[[shares]]` entry, given the entries before it.
fn check_share(share: &ShareSection, earlier: &[ShareSection]) -> Result<(), String> {
    if share.source.is_empty() || share.source.contains(['\0', ',']) {
        return Err("source must name the share (its tag, folder name or //server/share) without ','".into());
    }
    if share.kind == ShareKind::Cifs && !share.source.starts_with("//") {
        return Err("a cifs source is //server/share".into());
    }
    if !is_plain_absolute(&share.path) || share.path == Path::new("/") {
        return Err(format!(
            "path {:?} must be an absolute directory below / without '.' or '..'",
            share.path.display()
        ));
    }
    if earlier.iter().any(|other| other.path == share.path) {
        return Err(format!("path {:?} is also another share's path", share.path.display()));
    }
    if let Some(option) = share.options.iter().find(|o| o.is_empty() || o.contains(['\0', ','])) {
        return Err(format!("option {option:?} must be one non-empty option without ','"));
    }
    Ok(())
}

/// Whether `path` is absolute and made of plain names only (no `.` or `..`).
fn is_plain_absolute(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
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

    fn base(text: &str) -> Result<(), InitConfigError> {
        toml::from_str::<InitConfig>(text).unwrap().check_base()
    }

    fn services(text: &str) -> InitConfigError {
        let config: InitConfig = toml::from_str(text).unwrap();
        assert_eq!(config.check_base(), Ok(()), "the base is not at fault");
        config.check_services().unwrap_err()
    }

    #[test]
    fn invalid_hostnames_are_rejected() {
        for bad in ["", "a/b", &"x".repeat(65)] {
            let err = base(&format!("hostname = {bad:?}")).unwrap_err();
            assert!(matches!(err, InitConfigError::InvalidHostname { .. }), "{bad:?}");
        }
        assert_eq!(base(&format!("hostname = {:?}", "x".repeat(64))), Ok(()));
    }

    #[test]
    fn root_size_takes_tmpfs_sizes_only() {
        for good in ["2G", "512m", "80%", "1048576", "4k"] {
            assert_eq!(base(&format!("root_size = {good:?}")), Ok(()), "{good:?}");
        }
        for bad in ["", "G", "2GB", "-1", "1.5G", "80%%", "2G,nr_inodes=1"] {
            let err = base(&format!("root_size = {bad:?}")).unwrap_err();
            assert!(matches!(err, InitConfigError::InvalidRootSize { .. }), "{bad:?}");
        }
    }

    #[test]
    fn module_paths_must_stay_inside_the_modules_directory() {
        for bad in ["/lib/x.ko", "../x.ko", "kernel/../../x.ko", ""] {
            let err = base(&format!("[[modules]]\nname = \"x\"\npath = {bad:?}\n")).unwrap_err();
            assert!(matches!(err, InitConfigError::InvalidModulePath { .. }), "{bad:?}");
        }
        assert_eq!(
            base("[[modules]]\nname = \"x\"\npath = \"kernel/./x.ko.zst\"\n"),
            Ok(())
        );
    }

    #[test]
    fn static_addresses_need_a_prefix_length() {
        for bad in ["10.0.2.15", "10.0.2.15/33", "10.0.2/24", "x/24"] {
            let err = base(&format!("[network.static]\naddress = {bad:?}\n")).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "[network.static] address {bad:?} must be an IPv4 address with a prefix \
                     length, such as \"10.0.2.15/24\""
                )
            );
        }
    }

    #[test]
    fn data_disk_binds_must_be_plain_absolute_and_distinct() {
        assert_eq!(
            base("[data_disk]\nbinds = [\"/var/lib/docker\", \"/var/lib/containerd\"]\n"),
            Ok(())
        );
        for bad in [
            r#"["var/lib/docker"]"#,
            r#"["/var/../docker"]"#,
            r#"["/"]"#,
            r#"["/a/docker", "/b/docker"]"#,
        ] {
            let err = base(&format!("[data_disk]\nbinds = {bad}\n")).unwrap_err();
            assert!(matches!(err, InitConfigError::InvalidBind { .. }), "{bad}");
        }
    }

    #[test]
    fn bad_services_name_the_service_and_the_key() {
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
            let err = services(&text);
            assert!(matches!(err, InitConfigError::InvalidService(_)), "{err}");
            let message = err.to_string();
            assert!(message.starts_with("[[services]] "), "{message}");
            assert!(message.contains(expected), "{message} lacks {expected}");
        }
    }

    #[test]
    fn after_cycles_are_errors() {
        let text = "[[services]]\nname = \"a\"\ncommand = [\"/a\"]\nafter = [\"c\"]\n\
                    [[services]]\nname = \"b\"\ncommand = [\"/b\"]\nafter = [\"a\"]\n\
                    [[services]]\nname = \"c\"\ncommand = [\"/c\"]\nafter = [\"b\"]\n\
                    [[services]]\nname = \"d\"\ncommand = [\"/d\"]\nafter = [\"a\"]\n";
        assert_eq!(
            services(text).to_string(),
            "[[services]] \"a\": after: forms a cycle (a -> c -> b -> a); no service in it could \
             ever start"
        );
    }

    #[test]
    fn bad_preload_is_an_error() {
        let svc = "[[services]]\nname = \"dockerd\"\ncommand = [\"/usr/sbin/dockerd\"]\n";
        let preload = |rest: &str| format!("{svc}[preload]\nafter = \"dockerd\"\n{rest}");
        let sha = "a".repeat(64);
        let cases = [
            (
                format!("{svc}[preload]\nafter = \"docker\"\ncommand = [\"/usr/bin/docker\"]\n"),
                "[preload] after: names \"docker\"",
            ),
            (preload("command = []\n"), "[preload] command: is empty"),
            (
                preload("socket = \"docker.sock\"\n"),
                "[preload] socket: \"docker.sock\" is not an absolute",
            ),
            (
                preload("socket = \"/d.sock\"\ncommand = [\"/d\"]\n"),
                "[preload] socket: and command are both given",
            ),
            (
                preload(&format!(
                    "command = [\"/d\"]\nimages = [{{ path = \"x.tar\", sha256 = \"{sha}\" }}]\n"
                )),
                "[preload] images: path \"x.tar\"",
            ),
            (
                preload(&format!(
                    "command = [\"/d\"]\nimages = [{{ path = \"/x.tar\", sha256 = \"{}\" }}]\n",
                    "A".repeat(64)
                )),
                "[preload] images: sha256",
            ),
        ];
        for (text, expected) in cases {
            let err = services(&text);
            assert!(matches!(err, InitConfigError::InvalidPreload { .. }), "{err}");
            assert!(err.to_string().starts_with(expected), "{err} lacks {expected}");
        }
        let good = preload(&format!(
            "command = [\"/d\"]\nimages = [{{ path = \"/x.tar\", sha256 = \"{sha}\" }}]\n"
        ));
        assert_eq!(toml::from_str::<InitConfig>(&good).unwrap().check_services(), Ok(()));
        let api = preload(&format!(
            "socket = \"/var/run/docker.sock\"\nimages = [{{ path = \"/x.tar\", sha256 = \"{sha}\" }}]\n"
        ));
        assert_eq!(toml::from_str::<InitConfig>(&api).unwrap().check_services(), Ok(()));
    }
}

/// Checks a list of `[[network.interfaces]]` entries (the image's, or an instance's).
pub fn check_interfaces(interfaces: &[InterfaceSection]) -> Result<(), InitConfigError> {
    for (i, interface) in interfaces.iter().enumerate() {
        check_interface(interface, &interfaces[..i])
            .map_err(|problem| InitConfigError::InvalidInterface { index: i + 1, problem })?;
    }
    Ok(())
}

/// One `[[network.interfaces]]` entry, against the entries before it.
fn check_interface(interface: &InterfaceSection, earlier: &[InterfaceSection]) -> Result<(), String> {
    match (&interface.name, &interface.mac) {
        (Some(_), Some(_)) | (None, None) => {
            return Err("give exactly one of `name` (such as \"eth1\") or `mac`".into());
        }
        (Some(name), None) if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) => {
            return Err(format!(
                "name {name:?} is not an interface name (1 to 15 characters, no '/' or space)"
            ));
        }
        (None, Some(mac)) if interface.mac_bytes().is_none() => {
            return Err(format!(
                "mac {mac:?} must be six hex pairs separated by ':', such as \"52:54:00:12:34:56\""
            ));
        }
        _ => {}
    }
    if let Some(address) = &interface.address {
        if interface.address_and_prefix().is_none() {
            return Err(format!(
                "address {address:?} must be an IPv4 address with a prefix length, such as \"192.168.56.2/24\""
            ));
        }
    } else if interface.gateway.is_some() || !interface.dns.is_empty() {
        return Err("`gateway` and `dns` need a fixed `address` (with DHCP the server gives them)".into());
    }
    let same = |other: &InterfaceSection| {
        (interface.name.is_some() && other.name == interface.name)
            || (interface.mac_bytes().is_some() && other.mac_bytes() == interface.mac_bytes())
    };
    if earlier.iter().any(same) {
        return Err("another entry already names this interface".into());
    }
    Ok(())
}
