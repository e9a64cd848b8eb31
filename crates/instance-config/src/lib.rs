//! Per-instance settings: what makes one VM of a shared image its own.
//!
//! The image's definition gives defaults; a small settings volume attached to one VM (a FAT or
//! ISO 9660 volume labelled [`VOLUME_LABEL`], holding [`SETTINGS_FILE`] and the files it names)
//! overrides them. `uvmkit instance` writes the volume; the init reads it at every boot. This
//! crate is the contract between the two: the serde types of `uvmkit.toml`, its checks, and the
//! names both sides use.
//!
//! Every table refuses keys it does not know, and a parse error carries the line and column of
//! the fault, so the init can name them on the console and boot with the image's defaults.

#![deny(missing_docs)]

use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uvmkit_docker_config::DockerSection;
use uvmkit_init_config::{check_interfaces, InitConfigError, InterfaceSection};

/// The label of a uvmkit settings volume (FAT volume label or ISO 9660 volume identifier; at
/// most 11 characters so it fits a FAT label, upper case as FAT stores it).
pub const VOLUME_LABEL: &str = "UVMKIT-CFG";

/// The settings file at the root of the volume.
pub const SETTINGS_FILE: &str = "uvmkit.toml";

/// The label of a NoCloud seed volume, whose `meta-data`/`user-data` are read for the subset
/// that maps onto these settings (hostname, SSH keys).
pub const NOCLOUD_LABEL: &str = "cidata";

/// The whole `uvmkit.toml`. Every field is optional: what is absent keeps the image's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSettings {
    /// The VM's host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `[ssh]`: who may log in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSettings>,
    /// `[network]`: per-interface addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSettings>,
    /// `[docker]`: engine settings, the same schema as the image definition's `[docker]`;
    /// keys given here replace the image's values of the same keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerSection>,
    /// `[tls]`: extra trust, and the user's own client CA for dockerd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
    /// `[preload]`: container image archives on the volume, loaded into the engine at boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload: Option<PreloadSettings>,
}

/// `[ssh]` of an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    /// Public keys (`ssh-ed25519 AAAA... comment`) that may log in as root; they are added to
    /// the image's keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorized_keys: Vec<String>,
}

/// `[network]` of an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSettings {
    /// `[[network.interfaces]]`: the same entries as the image definition's; an entry for an
    /// interface the image also lists replaces the image's entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceSection>,
}

/// `[tls]` of an instance. Paths are relative to the root of the settings volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// A PEM file of CA certificates whose client certificates dockerd accepts, besides the
    /// ones the VM's own CA signs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// PEM files of extra CA certificates the VM trusts (a company's TLS-inspecting proxy, a
    /// private registry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_certificates: Vec<PathBuf>,
}

/// `[preload]` of an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreloadSettings {
    /// `docker save` archives on the volume, loaded after the image's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<PathBuf>,
}

/// Why a `uvmkit.toml` cannot be used; the message names the line or key and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SettingsError {
    /// The file is not TOML of this shape (unknown key, wrong type, syntax error).
    #[error("{SETTINGS_FILE} line {line}, column {column}: {message}")]
    Parse {
        /// 1-based line of the fault (0 when the parser gave no position).
        line: usize,
        /// 1-based column of the fault.
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// The host name is not something `sethostname(2)` accepts.
    #[error("{SETTINGS_FILE}: hostname {0:?} is not valid: use 1 to 64 letters, digits, '-' or '.'")]
    Hostname(String),
    /// An SSH key line is not a public key.
    #[error(
        "{SETTINGS_FILE}: [ssh] authorized_keys entry {index} is not a public key line \
         (expected \"ssh-ed25519 AAAA... comment\" or another ssh-/ecdsa- key type)"
    )]
    SshKey {
        /// 1-based position in the list.
        index: usize,
    },
    /// A `[[network.interfaces]]` entry is wrong.
    #[error("{SETTINGS_FILE}: {0}")]
    Interface(InitConfigError),
    /// A path is absolute or leaves the volume.
    #[error(
        "{SETTINGS_FILE}: [{key}] path {:?} must be relative to the settings volume's root, \
         without '..'",
        .path.display()
    )]
    Path {
        /// The key holding the path, such as `tls.client_ca`.
        key: &'static str,
        /// The rejected path.
        path: PathBuf,
    },
}

impl InstanceSettings {
    /// Parses and checks `uvmkit.toml` text.
    pub fn parse(text: &str) -> Result<InstanceSettings, SettingsError> {
        let settings: InstanceSettings = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|span| line_and_column(text, span.start)).unwrap_or((0, 0));
            SettingsError::Parse {
                line,
                column,
                message: e.message().to_string(),
            }
        })?;
        settings.check()?;
        Ok(settings)
    }

    /// Checks the values serde's types do not: host name, key lines, interfaces, paths.
    pub fn check(&self) -> Result<(), SettingsError> {
        if let Some(hostname) = &self.hostname {
            if !is_hostname(hostname) {
                return Err(SettingsError::Hostname(hostname.clone()));
            }
        }
        if let Some(ssh) = &self.ssh {
            for (i, key) in ssh.authorized_keys.iter().enumerate() {
                if !is_public_key_line(key) {
                    return Err(SettingsError::SshKey { index: i + 1 });
                }
            }
        }
        if let Some(network) = &self.network {
            check_interfaces(&network.interfaces).map_err(SettingsError::Interface)?;
        }
        let tls = self.tls.iter();
        let paths = tls
            .clone()
            .flat_map(|t| t.client_ca.iter().map(|p| ("tls.client_ca", p)))
            .chain(tls.flat_map(|t| t.ca_certificates.iter().map(|p| ("tls.ca_certificates", p))))
            .chain(
                self.preload
                    .iter()
                    .flat_map(|p| p.images.iter().map(|i| ("preload.images", i))),
            );
        for (key, path) in paths {
            if !is_inside(path) {
                return Err(SettingsError::Path {
                    key,
                    path: path.clone(),
                });
            }
        }
        Ok(())
    }

    /// The static IPv4 address the settings give the interface `name`/`mac`, if any.
    pub fn static_address(&self, name: &str, mac: [u8; 6]) -> Option<(Ipv4Addr, u8)> {
        self.network
            .as_ref()?
            .interfaces
            .iter()
            .find(|i| i.matches(name, mac))?
            .address_and_prefix()
    }
}

/// 1-based line and column of byte offset `at` in `text`.
fn line_and_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// RFC 1123 labels joined by dots, at most 64 bytes (Linux's HOST_NAME_MAX).
fn is_hostname(name: &str) -> bool {
    name.len() <= 64
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// An OpenSSH public key line: a key type, base64 data, an optional comment (sshd(8),
/// "AUTHORIZED_KEYS FILE FORMAT"; options before the type are not accepted here).
fn is_public_key_line(line: &str) -> bool {
    let mut fields = line.split_ascii_whitespace();
    let kind = fields.next().unwrap_or("");
    let data = fields.next().unwrap_or("");
    (kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-"))
        && data.len() >= 16
        && data.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        && !line.contains(['\n', '\r'])
}

/// Relative, non-empty, and without `..`, so it stays on the volume.
fn is_inside(path: &Path) -> bool {
    !path.as_os_str().is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
hostname = "vm-1"

[ssh]
authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm6 user@laptop"]

[[network.interfaces]]
name = "eth1"
address = "192.168.56.10/24"

[docker]
registry-mirrors = ["http://10.0.2.2:5000"]

[tls]
client_ca = "client-ca.pem"
ca_certificates = ["certs/corp.pem"]

[preload]
images = ["images/app.tar"]
"#;

    #[test]
    fn a_full_file_parses_and_round_trips() {
        let settings = InstanceSettings::parse(FULL).unwrap();
        assert_eq!(settings.hostname.as_deref(), Some("vm-1"));
        assert_eq!(
            settings.static_address("eth1", [0; 6]),
            Some((Ipv4Addr::new(192, 168, 56, 10), 24))
        );
        assert_eq!(
            settings.docker.as_ref().unwrap().registry_mirrors,
            vec!["http://10.0.2.2:5000".to_string()]
        );
        let text = toml::to_string(&settings).unwrap();
        assert_eq!(InstanceSettings::parse(&text).unwrap(), settings);
        assert_eq!(InstanceSettings::parse("").unwrap(), InstanceSettings::default());
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let err = InstanceSettings::parse("hostname = \"a\"\n\n[ssh]\nauthorised_keys = []\n").unwrap_err();
        match &err {
            SettingsError::Parse { line, message, .. } => {
                assert_eq!(*line, 4, "{err}");
                assert!(message.contains("authorised_keys"), "{err}");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().starts_with("uvmkit.toml line 4"), "{err}");
        for (text, says) in [
            ("hostname = \"bad/name\"", "hostname"),
            ("[ssh]\nauthorized_keys = [\"hello\"]", "authorized_keys entry 1"),
            (
                "[[network.interfaces]]\nname = \"eth1\"\naddress = \"10.0.0.1\"",
                "prefix length",
            ),
            ("[tls]\nclient_ca = \"/etc/shadow\"", "tls.client_ca"),
            ("[preload]\nimages = [\"../x.tar\"]", "preload.images"),
            ("[docker]\nhosts = [\"tcp://0.0.0.0:2375\"]", "hosts"),
        ] {
            let err = InstanceSettings::parse(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }
}
