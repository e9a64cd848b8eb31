//! The settings `uvmkit instance` takes as flags, and how they apply over a `--settings` file:
//! a value replaces the file's (hostname, client CA, an interface of the same name or MAC, a
//! Docker key), a list adds to it (SSH keys, CA certificates, preloaded archives).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use uvmkit_docker_config::DockerSection;
use uvmkit_init_config::InterfaceSection;
use uvmkit_instance_config::{InstanceSettings, NetworkSettings, PreloadSettings, SshSettings, TlsSettings};

use super::{add_file, InstanceError};

/// Where files given by flags go on the volume.
const CLIENT_CA_PATH: &str = "tls/client-ca.pem";
/// The directory of `--ca-cert` files on the volume.
const CA_DIR: &str = "tls/ca";
/// The directory of `--preload` archives on the volume.
const PRELOAD_DIR: &str = "preload";

/// What the command line asks for, beside the output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstanceFlags {
    /// `--settings FILE.toml`: a `uvmkit.toml` whose relative paths are relative to it.
    pub settings: Option<PathBuf>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `--ssh-key FILE.pub`, each line of each file a key.
    pub ssh_keys: Vec<PathBuf>,
    /// `--interface`, parsed by [`parse_interface`].
    pub interfaces: Vec<InterfaceSection>,
    /// `--client-ca FILE`.
    pub client_ca: Option<PathBuf>,
    /// `--ca-cert FILE`.
    pub ca_certificates: Vec<PathBuf>,
    /// `--preload FILE.tar`.
    pub preload: Vec<PathBuf>,
    /// `--docker-setting KEY=VALUE`, parsed by [`parse_docker_setting`].
    pub docker_settings: Vec<(String, toml::Value)>,
}

impl InstanceFlags {
    /// Applies the flags over `settings`, recording in `files` (volume path -> host file) the
    /// files they put on the volume.
    pub(crate) fn apply(
        &self,
        settings: &mut InstanceSettings,
        files: &mut BTreeMap<String, PathBuf>,
    ) -> Result<(), InstanceError> {
        if let Some(hostname) = &self.hostname {
            settings.hostname = Some(hostname.clone());
        }
        for path in &self.ssh_keys {
            let keys = read_public_keys(path)?;
            settings
                .ssh
                .get_or_insert_with(SshSettings::default)
                .authorized_keys
                .extend(keys);
        }
        for entry in &self.interfaces {
            let network = settings.network.get_or_insert_with(NetworkSettings::default);
            network
                .interfaces
                .retain(|i| !(i.name.is_some() && i.name == entry.name) && !(i.mac.is_some() && i.mac == entry.mac));
            network.interfaces.push(entry.clone());
        }
        if let Some(ca) = &self.client_ca {
            readable(ca, "--client-ca")?;
            add_file(files, CLIENT_CA_PATH.into(), ca.clone())?;
            settings.tls.get_or_insert_with(TlsSettings::default).client_ca = Some(CLIENT_CA_PATH.into());
        }
        for cert in &self.ca_certificates {
            readable(cert, "--ca-cert")?;
            let path = format!("{CA_DIR}/{}", file_name(cert, "--ca-cert")?);
            add_file(files, path.clone(), cert.clone())?;
            settings
                .tls
                .get_or_insert_with(TlsSettings::default)
                .ca_certificates
                .push(path.into());
        }
        for archive in &self.preload {
            readable(archive, "--preload")?;
            let path = format!("{PRELOAD_DIR}/{}", file_name(archive, "--preload")?);
            add_file(files, path.clone(), archive.clone())?;
            settings
                .preload
                .get_or_insert_with(PreloadSettings::default)
                .images
                .push(path.into());
        }
        if !self.docker_settings.is_empty() {
            // Key by key over the file's `[docker]`, then checked as one section again.
            let mut table = match &settings.docker {
                Some(docker) => match toml::Value::try_from(docker).expect("docker settings serialise") {
                    toml::Value::Table(t) => t,
                    _ => toml::Table::new(),
                },
                None => toml::Table::new(),
            };
            for (key, value) in &self.docker_settings {
                table.insert(key.clone(), value.clone());
            }
            let section: DockerSection =
                toml::Value::Table(table)
                    .try_into()
                    .map_err(|e: toml::de::Error| InstanceError::Flag {
                        flag: "--docker-setting",
                        value: self
                            .docker_settings
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" "),
                        reason: e.message().to_string(),
                    })?;
            settings.docker = Some(section);
        }
        Ok(())
    }
}

/// The key lines of an OpenSSH `.pub` (or `authorized_keys`) file: blank lines and comments
/// skipped.
fn read_public_keys(path: &Path) -> Result<Vec<String>, InstanceError> {
    let text = std::fs::read_to_string(path).map_err(|source| InstanceError::Read {
        path: path.to_path_buf(),
        what: "--ssh-key".into(),
        source,
    })?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if keys.is_empty() {
        return Err(InstanceError::NoPublicKey(path.to_path_buf()));
    }
    Ok(keys)
}

/// Fails early, naming the flag, when `path` cannot be opened.
fn readable(path: &Path, flag: &str) -> Result<(), InstanceError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|source| InstanceError::Read {
            path: path.to_path_buf(),
            what: flag.into(),
            source,
        })
}

fn file_name(path: &Path, flag: &'static str) -> Result<String, InstanceError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| InstanceError::Flag {
            flag,
            value: path.display().to_string(),
            reason: "name a file (with a UTF-8 name)".into(),
        })
}

/// `--interface NAME=ADDRESS/PREFIX[,gw=IP][,dns=IP]...` or `NAME=dhcp`; NAME is an interface
/// name (`eth1`) or a MAC address (`52:54:00:12:34:56`).
pub fn parse_interface(text: &str) -> Result<InterfaceSection, String> {
    const USAGE: &str = "use NAME=ADDRESS/PREFIX[,gw=GATEWAY][,dns=SERVER...] or NAME=dhcp, \
                         e.g. eth1=192.168.56.10/24,gw=192.168.56.1,dns=192.168.56.1";
    let (who, rest) = text.split_once('=').ok_or_else(|| format!("no '='; {USAGE}"))?;
    if who.is_empty() {
        return Err(format!("no interface name or MAC before '='; {USAGE}"));
    }
    let is_mac = who.len() == 17 && who.split(':').count() == 6;
    let mut entry = InterfaceSection {
        name: (!is_mac).then(|| who.to_string()),
        mac: is_mac.then(|| who.to_string()),
        address: None,
        gateway: None,
        dns: Vec::new(),
    };
    let mut parts = rest.split(',');
    let first = parts.next().unwrap_or("");
    if first.eq_ignore_ascii_case("dhcp") {
        if parts.next().is_some() {
            return Err("a DHCP interface takes no gw= or dns= (the lease gives them)".into());
        }
        return Ok(entry);
    }
    entry.address = Some(first.to_string());
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not KEY=VALUE; {USAGE}"))?;
        if !matches!(key, "gw" | "gateway" | "dns") {
            return Err(format!("unknown key {key:?}; {USAGE}"));
        }
        let ip: Ipv4Addr = value
            .parse()
            .map_err(|_| format!("{key}={value}: not an IPv4 address"))?;
        if key == "dns" {
            entry.dns.push(ip);
        } else {
            entry.gateway = Some(ip);
        }
    }
    if entry.address_and_prefix().is_none() {
        return Err(format!(
            "{first:?} is not ADDRESS/PREFIX such as 192.168.56.10/24; {USAGE}"
        ));
    }
    if is_mac && entry.mac_bytes().is_none() {
        return Err(format!("{who:?} is not a MAC address such as 52:54:00:12:34:56"));
    }
    Ok(entry)
}

/// `--docker-setting KEY=VALUE`: VALUE is a TOML value (`mtu=1400`, `'dns=["10.0.2.3"]'`,
/// `debug=true`), or else taken as a string (`log-driver=local`).
pub fn parse_docker_setting(text: &str) -> Result<(String, toml::Value), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| "use KEY=VALUE with a daemon.json key, e.g. log-driver=local".to_string())?;
    if key.is_empty() {
        return Err("no key before '='".into());
    }
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    Ok((key.to_string(), parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_parse_from_one_flag() {
        let e = parse_interface("eth1=192.168.56.10/24,gw=192.168.56.1,dns=1.1.1.1,dns=8.8.8.8").unwrap();
        assert_eq!(e.name.as_deref(), Some("eth1"));
        assert_eq!(e.address.as_deref(), Some("192.168.56.10/24"));
        assert_eq!(e.gateway, Some(Ipv4Addr::new(192, 168, 56, 1)));
        assert_eq!(e.dns, vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(8, 8, 8, 8)]);
        let dhcp = parse_interface("52:54:00:12:34:56=dhcp").unwrap();
        assert_eq!(
            (dhcp.name, dhcp.mac.as_deref(), dhcp.address),
            (None, Some("52:54:00:12:34:56"), None)
        );
        for (bad, says) in [
            ("eth1", "no '='"),
            ("eth1=10.0.0.1", "ADDRESS/PREFIX"),
            ("eth1=10.0.0.1/24,gw=x", "not an IPv4"),
            ("eth1=10.0.0.1/24,mtu=1500", "unknown key"),
            ("eth1=dhcp,dns=1.1.1.1", "DHCP"),
        ] {
            let err = parse_interface(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn docker_settings_take_toml_values_or_strings() {
        assert_eq!(
            parse_docker_setting("mtu=1400").unwrap(),
            ("mtu".to_string(), toml::Value::Integer(1400))
        );
        assert_eq!(
            parse_docker_setting("log-driver=local").unwrap().1,
            toml::Value::String("local".into())
        );
        let (_, dns) = parse_docker_setting("dns=[\"10.0.2.3\"]").unwrap();
        assert_eq!(dns, toml::Value::Array(vec![toml::Value::String("10.0.2.3".into())]));
        assert!(parse_docker_setting("nothing").is_err());
    }

    #[test]
    fn flags_apply_over_a_settings_file() {
        let mut settings = InstanceSettings::parse(
            "hostname = \"a\"\n[[network.interfaces]]\nname = \"eth1\"\naddress = \"10.0.0.2/24\"\n\
             [docker]\nlog-driver = \"local\"\n",
        )
        .unwrap();
        let flags = InstanceFlags {
            hostname: Some("b".into()),
            interfaces: vec![parse_interface("eth1=10.9.0.2/16").unwrap()],
            docker_settings: vec![parse_docker_setting("mtu=1400").unwrap()],
            ..InstanceFlags::default()
        };
        let mut files = BTreeMap::new();
        flags.apply(&mut settings, &mut files).unwrap();
        assert_eq!(settings.hostname.as_deref(), Some("b"));
        let interfaces = &settings.network.as_ref().unwrap().interfaces;
        assert_eq!(interfaces.len(), 1);
        assert_eq!(interfaces[0].address.as_deref(), Some("10.9.0.2/16"));
        let docker = settings.docker.as_ref().unwrap();
        assert_eq!(docker.log_driver.as_deref(), Some("local"));
        assert_eq!(docker.mtu, Some(1400));

        let bad = InstanceFlags {
            docker_settings: vec![parse_docker_setting("hosts=[\"tcp://0.0.0.0:2375\"]").unwrap()],
            ..InstanceFlags::default()
        };
        let err = bad.apply(&mut settings, &mut files).unwrap_err().to_string();
        assert!(err.starts_with("--docker-setting \"hosts="), "{err}");
        assert!(err.contains("set by the image's dockerd command line"), "{err}");
    }
}
