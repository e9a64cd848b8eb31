//! `[docker]`: the Docker engine settings of an image definition, checked when the image is
//! built and written as dockerd's configuration file, [`DAEMON_JSON_PATH`].
//!
//! The keys are dockerd's own `daemon.json` keys (the dockerd reference, "Daemon configuration
//! file"), so what a user knows from Docker's documentation works unchanged:
//!
//! ```toml
//! [docker]
//! dns = ["192.168.1.1"]
//! registry-mirrors = ["https://mirror.example:5000"]
//! insecure-registries = ["registry.lan:5000", "10.20.0.0/16"]
//! log-driver = "json-file"
//! log-opts = { max-size = "10m", max-file = 3 }
//! default-address-pools = [{ base = "10.200.0.0/16", size = 24 }]
//! storage-driver = "overlay2"
//! ```
//!
//! dockerd reads the file only when it starts and refuses to start at all over a value it does
//! not accept, which in a VM means an engine that never answers. So every value is checked here,
//! at build time, against what dockerd accepts and what the image can do (its data disk is
//! ext4, it has no journald), and a mistake is an error naming the key and the value.
//! Keys the image's dockerd command line already sets (`hosts`, the TLS files, `containerd`)
//! are refused too: dockerd will not start when a setting is given both as a flag and in the
//! file.

#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

/// Where dockerd reads its configuration (its default `--config-file`).
pub const DAEMON_JSON_PATH: &str = "/etc/docker/daemon.json";

/// The log drivers built into dockerd that work in the image (the dockerd reference, "Configure
/// logging drivers"). `journald` needs a systemd journal and `etwlogs` Windows, neither of
/// which the image has.
pub const LOG_DRIVERS: [&str; 10] = [
    "json-file",
    "local",
    "syslog",
    "gelf",
    "fluentd",
    "awslogs",
    "splunk",
    "gcplogs",
    "logentries",
    "none",
];

/// The storage drivers that work on the image's data disk (ext4, overlay in the kernel):
/// `overlay2`, and `vfs` (full copies, slow, for debugging). btrfs and zfs need those file
/// systems and fuse-overlayfs its helper program, none of which the image has.
pub const STORAGE_DRIVERS: [&str; 2] = ["overlay2", "vfs"];

/// `log-opts` that every log driver takes: delivery mode and buffer (the dockerd reference,
/// "Configure the delivery mode of log messages from container to log driver").
const COMMON_LOG_OPTS: [&str; 2] = ["mode", "max-buffer-size"];
/// `log-opts` of the `json-file` driver (the dockerd reference, "JSON File logging driver").
const JSON_FILE_LOG_OPTS: [&str; 8] = [
    "max-size",
    "max-file",
    "labels",
    "labels-regex",
    "env",
    "env-regex",
    "tag",
    "compress",
];
/// `log-opts` of the `local` driver (the dockerd reference, "Local file logging driver").
const LOCAL_LOG_OPTS: [&str; 3] = ["max-size", "max-file", "compress"];

/// The checked `[docker]` section: deserializing it checks every value (see
/// [`DockerSection::check`]), and serializing it to JSON gives `daemon.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "RawSection", rename_all = "kebab-case")]
pub struct DockerSection {
    /// DNS servers for containers, instead of the VM's own resolv.conf servers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// DNS search domains for containers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// resolv.conf `options` for containers (`ndots:2`, `timeout:3`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_opts: Vec<String>,
    /// Pull-through mirrors of Docker Hub, `http://` or `https://` URLs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub registry_mirrors: Vec<String>,
    /// Registries reached without TLS verification: `host[:port]` or a CIDR block.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub insecure_registries: Vec<String>,
    /// The default log driver of containers, one of [`LOG_DRIVERS`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<String>,
    /// Options of the log driver; dockerd takes only strings, so numbers are written as strings.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub log_opts: BTreeMap<String, String>,
    /// Where user-defined networks take their subnets from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub default_address_pools: Vec<AddressPool>,
    /// The storage driver, one of [`STORAGE_DRIVERS`]; absent: dockerd picks overlay2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_driver: Option<String>,
    /// The default bridge's address and prefix (`172.26.0.1/16`), when 172.17.0.0/16 is taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bip: Option<String>,
    /// The MTU of container networks, for links with a smaller MTU than 1500 (VPNs, tunnels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Keep containers running while dockerd restarts (the init restarts it when it dies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_restore: Option<bool>,
    /// dockerd's debug logging.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
}

/// One `default-address-pools` entry: subnets of prefix `size` are carved out of `base`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddressPool {
    /// The pool, as a network in CIDR notation (`10.200.0.0/16`).
    pub base: String,
    /// The prefix length of each network taken from it (24 gives /24 networks).
    pub size: u8,
}

/// A `[docker]` value dockerd or the image would not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerConfigError {
    /// A key the image's dockerd command line owns.
    #[error(
        "[docker] {key}: set by the image's dockerd command line ({owner}); dockerd refuses to start when a \
         setting is given both as a flag and in daemon.json, so change the dockerd [[services]] command instead"
    )]
    SetOnCommandLine {
        /// The key.
        key: &'static str,
        /// What the command line does with it.
        owner: &'static str,
    },
    /// A value that is malformed for its key.
    #[error("[docker] {key}: {value:?} {problem}")]
    Invalid {
        /// The key (`dns`, `log-opts.max-size`, ...).
        key: String,
        /// The value as given.
        value: String,
        /// What is wrong and what is expected.
        problem: String,
    },
}

impl DockerSection {
    /// Checks every value against what dockerd accepts and the image supports.
    pub fn check(&self) -> Result<(), DockerConfigError> {
        for dns in &self.dns {
            if dns.parse::<IpAddr>().is_err() {
                return Err(invalid(
                    "dns",
                    dns,
                    "is not an IP address (dockerd takes addresses, e.g. \"192.168.1.1\")",
                ));
            }
        }
        for domain in &self.dns_search {
            check_domain("dns-search", domain)?;
        }
        for opt in &self.dns_opts {
            if opt.is_empty() || opt.contains(char::is_whitespace) {
                return Err(invalid(
                    "dns-opts",
                    opt,
                    "is not a resolv.conf option (e.g. \"ndots:2\")",
                ));
            }
        }
        for mirror in &self.registry_mirrors {
            check_mirror(mirror)?;
        }
        for registry in &self.insecure_registries {
            check_insecure_registry(registry)?;
        }
        if let Some(driver) = &self.log_driver {
            check_log_driver(driver)?;
        }
        self.check_log_opts()?;
        for pool in &self.default_address_pools {
            check_pool(pool)?;
        }
        if let Some(driver) = &self.storage_driver {
            if !STORAGE_DRIVERS.contains(&driver.as_str()) {
                return Err(invalid(
                    "storage-driver",
                    driver,
                    &format!(
                        "does not work in this image: its data disk is ext4 with overlay in the kernel; use one of {}",
                        STORAGE_DRIVERS.join(", ")
                    ),
                ));
            }
        }
        if let Some(bip) = &self.bip {
            let cidr = Cidr::parse(bip).map_err(|why| invalid("bip", bip, &why))?;
            if !cidr.addr.is_ipv4() || cidr.prefix > 30 || cidr.is_network_address() {
                return Err(invalid(
                    "bip",
                    bip,
                    "is not the bridge's own IPv4 address with a prefix of at most /30 (e.g. \"172.26.0.1/16\")",
                ));
            }
        }
        if let Some(mtu) = self.mtu {
            // RFC 791: every IPv4 host must take 68-octet datagrams; 65535 is the largest IPv4
            // datagram.
            if !(68..=65535).contains(&mtu) {
                return Err(invalid("mtu", &mtu.to_string(), "is outside 68..=65535"));
            }
        }
        Ok(())
    }

    /// `log-opts` are checked against the driver's own options where dockerd would refuse to
    /// start over an unknown one (json-file, local): the driver is `log-driver`, or json-file
    /// when that is absent.
    fn check_log_opts(&self) -> Result<(), DockerConfigError> {
        let driver = self.log_driver.as_deref().unwrap_or("json-file");
        let own: &[&str] = match driver {
            "json-file" => &JSON_FILE_LOG_OPTS,
            "local" => &LOCAL_LOG_OPTS,
            _ => &[],
        };
        for (key, value) in &self.log_opts {
            let name = format!("log-opts.{key}");
            if !own.is_empty() && !own.contains(&key.as_str()) && !COMMON_LOG_OPTS.contains(&key.as_str()) {
                return Err(invalid(
                    &name,
                    value,
                    &format!(
                        "is not an option of the {driver} log driver, which takes {}",
                        own.iter()
                            .chain(&COMMON_LOG_OPTS)
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            match key.as_str() {
                "max-size" | "max-buffer-size" if !is_byte_size(value) => {
                    return Err(invalid(
                        &name,
                        value,
                        "is not a size such as \"10m\", \"512k\" or \"1g\"",
                    ));
                }
                "max-file" if !value.parse::<u32>().is_ok_and(|n| n >= 1) => {
                    return Err(invalid(&name, value, "is not a number of files, 1 or more"));
                }
                "mode" if value != "blocking" && value != "non-blocking" => {
                    return Err(invalid(&name, value, "is neither \"blocking\" nor \"non-blocking\""));
                }
                "compress" if value != "true" && value != "false" => {
                    return Err(invalid(&name, value, "is neither true nor false"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The `daemon.json` dockerd reads: the set keys only, in a fixed order, two-space indented,
    /// with a final newline. The same section always gives the same bytes.
    pub fn daemon_json(&self) -> Result<String, DockerConfigError> {
        self.check()?;
        let mut text = serde_json::to_string_pretty(self).expect("plain strings, numbers and maps serialize");
        text.push('\n');
        Ok(text)
    }
}

/// One key of `daemon.json` that [`merge_daemon_json`] set: its JSON value before (absent when
/// the image did not set it) and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    /// The `daemon.json` key (`registry-mirrors`).
    pub key: String,
    /// The image's value as compact JSON, if it set the key.
    pub before: Option<String>,
    /// The new value as compact JSON.
    pub after: String,
}

/// Why an image's `daemon.json` and an instance's `[docker]` cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// The image's file is not a JSON object.
    #[error("{DAEMON_JSON_PATH} in the image is not a JSON object ({0}); fix the image's [docker] or [[files]]")]
    ImageFile(String),
    /// The merged settings do not go together (a log option of the image's driver with the
    /// instance's driver, say).
    #[error("the image's {DAEMON_JSON_PATH} with these settings: {0}")]
    Merged(DockerConfigError),
}

/// The result of [`merge_daemon_json`]: the file to write and the keys that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedDaemonJson {
    /// The new `daemon.json` text, ending in a newline.
    pub text: String,
    /// The keys whose values `overrides` set or replaced, in key order; a key given the value
    /// it already had is not listed.
    pub changes: Vec<KeyChange>,
}

/// Merges `overrides` key by key over the image's `daemon.json` (`image`, absent when the image
/// has none): every key `overrides` sets replaces the image's value of that key whole (as
/// dockerd reads a key: `dns` is one list, not items to add), and every other key of the image
/// stays. The result is checked as one section, so keys that must agree (`log-driver` and
/// `log-opts`) are judged together. When the image's file holds only keys this crate knows
/// (as the builder writes it), the text is in the same fixed form as [`DockerSection::daemon_json`].
pub fn merge_daemon_json(image: Option<&str>, overrides: &DockerSection) -> Result<MergedDaemonJson, MergeError> {
    let mut merged: serde_json::Map<String, serde_json::Value> = match image {
        Some(text) => serde_json::from_str(text).map_err(|e| MergeError::ImageFile(e.to_string()))?,
        None => serde_json::Map::new(),
    };
    let serde_json::Value::Object(given) =
        serde_json::to_value(overrides).expect("plain strings, numbers and maps serialize")
    else {
        unreachable!("a struct serializes to a JSON object")
    };
    let mut changes = Vec::new();
    for (key, value) in given {
        let before = merged.get(&key).map(|v| v.to_string());
        let after = value.to_string();
        if before.as_deref() != Some(after.as_str()) {
            changes.push(KeyChange {
                key: key.clone(),
                before,
                after,
            });
        }
        merged.insert(key, value);
    }
    let value = serde_json::Value::Object(merged);
    // Keys this crate does not know (an image's own [[files]] daemon.json) are kept as they are;
    // when every key is known, the section checks the values together, and writes them in the
    // one fixed order.
    let text = match serde_json::from_value::<RawSection>(value.clone()) {
        Ok(raw) => DockerSection::try_from(raw)
            .and_then(|section| section.daemon_json())
            .map_err(MergeError::Merged)?,
        Err(_) => {
            let mut text = serde_json::to_string_pretty(&value).expect("JSON values serialize");
            text.push('\n');
            text
        }
    };
    Ok(MergedDaemonJson { text, changes })
}

fn invalid(key: &str, value: &str, problem: &str) -> DockerConfigError {
    DockerConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        problem: problem.to_string(),
    }
}

/// RFC 1035 section 2.3.4: at most 253 characters in dotted form, labels of 1 to 63.
fn check_domain(key: &str, domain: &str) -> Result<(), DockerConfigError> {
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.trim_end_matches('.').split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(key, domain, "is not a domain name (e.g. \"corp.example\")"))
    }
}

/// What dockerd's mirror check accepts: an http or https URL with a host and no user, query or
/// fragment.
fn check_mirror(mirror: &str) -> Result<(), DockerConfigError> {
    let rest = mirror
        .strip_prefix("https://")
        .or_else(|| mirror.strip_prefix("http://"))
        .ok_or_else(|| invalid("registry-mirrors", mirror, "is not an http:// or https:// URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || mirror.contains(char::is_whitespace) {
        return Err(invalid("registry-mirrors", mirror, "has no host"));
    }
    if authority.contains('@') {
        return Err(invalid(
            "registry-mirrors",
            mirror,
            "holds a user name or password, which dockerd refuses; log in with `docker login` instead",
        ));
    }
    if mirror.contains('?') || mirror.contains('#') {
        return Err(invalid(
            "registry-mirrors",
            mirror,
            "has a query or fragment, which dockerd refuses",
        ));
    }
    Ok(())
}

/// `host[:port]`, `[v6]:port` or a CIDR block; dockerd refuses a scheme.
fn check_insecure_registry(registry: &str) -> Result<(), DockerConfigError> {
    let key = "insecure-registries";
    if registry.contains("://") {
        return Err(invalid(
            key,
            registry,
            "names a scheme; give host[:port] or a CIDR block (e.g. \"registry.lan:5000\")",
        ));
    }
    if registry.contains('/') {
        return Cidr::parse(registry)
            .map(drop)
            .map_err(|why| invalid(key, registry, &why));
    }
    let host = match registry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
            if port.parse::<u16>().is_err() {
                return Err(invalid(key, registry, "has a port that is not a number up to 65535"));
            }
            host
        }
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    check_domain(key, host)
}

fn check_log_driver(driver: &str) -> Result<(), DockerConfigError> {
    let problem = match driver {
        d if LOG_DRIVERS.contains(&d) => return Ok(()),
        "journald" => "needs a systemd journal, which the image does not run".to_string(),
        "etwlogs" => "exists on Windows only".to_string(),
        _ => format!(
            "is not a log driver built into dockerd; use one of {}",
            LOG_DRIVERS.join(", ")
        ),
    };
    Err(invalid("log-driver", driver, &problem))
}

fn check_pool(pool: &AddressPool) -> Result<(), DockerConfigError> {
    let key = "default-address-pools.base";
    let cidr = Cidr::parse(&pool.base).map_err(|why| invalid(key, &pool.base, &why))?;
    if !cidr.is_network_address() {
        return Err(invalid(
            key,
            &pool.base,
            "has host bits set; give the network address of the block",
        ));
    }
    let max = if cidr.addr.is_ipv4() { 32 } else { 128 };
    if pool.size < cidr.prefix || pool.size > max {
        return Err(invalid(
            "default-address-pools.size",
            &pool.size.to_string(),
            &format!(
                "must be between the pool's own prefix /{} and /{max}: networks are carved out of {}",
                cidr.prefix, pool.base
            ),
        ));
    }
    Ok(())
}

/// `ADDRESS/PREFIX`.
struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| "is not in CIDR notation (ADDRESS/PREFIX, e.g. \"10.200.0.0/16\")".to_string())?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("has {addr:?}, which is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("has a prefix length that is not 0 to {max}"))?;
        Ok(Cidr { addr, prefix })
    }

    /// True when every bit after the prefix is zero.
    fn is_network_address(&self) -> bool {
        let (bits, width) = match self.addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        };
        let host_bits = width - u32::from(self.prefix);
        host_bits == 0 || bits & ((1u128 << host_bits) - 1) == 0
    }
}

/// `k`, `m` or `g` after a number of bytes, as dockerd's size parser takes them.
fn is_byte_size(text: &str) -> bool {
    let digits = text.trim_end_matches(|c: char| "kKmMgGbB".contains(c));
    let unit = &text[digits.len()..];
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && ["", "k", "m", "g", "kb", "mb", "gb", "b"].contains(&unit.to_ascii_lowercase().as_str())
}

/// A `log-opts` value as written in TOML: dockerd takes strings only, but `max-file = 3` and
/// `compress = true` are what people write.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum OptValue {
    Text(String),
    Number(i64),
    Flag(bool),
}

impl fmt::Display for OptValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptValue::Text(s) => f.write_str(s),
            OptValue::Number(n) => write!(f, "{n}"),
            OptValue::Flag(b) => write!(f, "{b}"),
        }
    }
}

/// `[docker]` as written: dockerd's keys, and the keys the command line owns so that they get
/// their own message rather than "unknown field".
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSection {
    #[serde(default)]
    dns: Vec<String>,
    #[serde(default)]
    dns_search: Vec<String>,
    #[serde(default)]
    dns_opts: Vec<String>,
    #[serde(default)]
    registry_mirrors: Vec<String>,
    #[serde(default)]
    insecure_registries: Vec<String>,
    log_driver: Option<String>,
    #[serde(default)]
    log_opts: BTreeMap<String, OptValue>,
    #[serde(default)]
    default_address_pools: Vec<AddressPool>,
    storage_driver: Option<String>,
    bip: Option<String>,
    mtu: Option<u32>,
    live_restore: Option<bool>,
    debug: Option<bool>,
    hosts: Option<IgnoredAny>,
    tls: Option<IgnoredAny>,
    tlsverify: Option<IgnoredAny>,
    tlscacert: Option<IgnoredAny>,
    tlscert: Option<IgnoredAny>,
    tlskey: Option<IgnoredAny>,
    containerd: Option<IgnoredAny>,
    data_root: Option<IgnoredAny>,
}

impl TryFrom<RawSection> for DockerSection {
    type Error = DockerConfigError;

    fn try_from(raw: RawSection) -> Result<Self, Self::Error> {
        const TLS: &str = "port 2376 with TLS and the VM's own certificates";
        let owned = [
            ("hosts", raw.hosts.is_some(), "the unix socket and tcp://0.0.0.0:2376"),
            ("tls", raw.tls.is_some(), TLS),
            ("tlsverify", raw.tlsverify.is_some(), TLS),
            ("tlscacert", raw.tlscacert.is_some(), TLS),
            ("tlscert", raw.tlscert.is_some(), TLS),
            ("tlskey", raw.tlskey.is_some(), TLS),
            (
                "containerd",
                raw.containerd.is_some(),
                "the containerd service's socket",
            ),
            (
                "data-root",
                raw.data_root.is_some(),
                "/var/lib/docker, kept on the data disk",
            ),
        ];
        if let Some((key, _, owner)) = owned.into_iter().find(|(_, set, _)| *set) {
            return Err(DockerConfigError::SetOnCommandLine { key, owner });
        }
        let section = DockerSection {
            dns: raw.dns,
            dns_search: raw.dns_search,
            dns_opts: raw.dns_opts,
            registry_mirrors: raw.registry_mirrors,
            insecure_registries: raw.insecure_registries,
            log_driver: raw.log_driver,
            log_opts: raw.log_opts.into_iter().map(|(k, v)| (k, v.to_string())).collect(),
            default_address_pools: raw.default_address_pools,
            storage_driver: raw.storage_driver,
            bip: raw.bip,
            mtu: raw.mtu,
            live_restore: raw.live_restore,
            debug: raw.debug,
        };
        section.check()?;
        Ok(section)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Definition {
        docker: DockerSection,
    }

    fn parse(text: &str) -> Result<DockerSection, String> {
        toml::from_str::<Definition>(&format!("[docker]\n{text}"))
            .map(|d| d.docker)
            .map_err(|e| e.message().to_string())
    }

    #[test]
    fn every_key_gives_the_json_dockerd_reads() {
        let section = parse(
            r#"
dns = ["192.168.1.1", "2001:db8::53"]
dns-search = ["corp.example"]
dns-opts = ["ndots:2"]
registry-mirrors = ["https://mirror.example:5000"]
insecure-registries = ["registry.lan:5000", "10.20.0.0/16", "[2001:db8::1]:5000"]
log-driver = "json-file"
log-opts = { max-size = "10m", max-file = 3, compress = true }
default-address-pools = [{ base = "10.200.0.0/16", size = 24 }]
storage-driver = "overlay2"
bip = "172.26.0.1/16"
mtu = 1400
live-restore = true
debug = false
"#,
        )
        .unwrap();
        let expected = r#"{
  "dns": [
    "192.168.1.1",
    "2001:db8::53"
  ],
  "dns-search": [
    "corp.example"
  ],
  "dns-opts": [
    "ndots:2"
  ],
  "registry-mirrors": [
    "https://mirror.example:5000"
  ],
  "insecure-registries": [
    "registry.lan:5000",
    "10.20.0.0/16",
    "[2001:db8::1]:5000"
  ],
  "log-driver": "json-file",
  "log-opts": {
    "compress": "true",
    "max-file": "3",
    "max-size": "10m"
  },
  "default-address-pools": [
    {
      "base": "10.200.0.0/16",
      "size": 24
    }
  ],
  "storage-driver": "overlay2",
  "bip": "172.26.0.1/16",
  "mtu": 1400,
  "live-restore": true,
  "debug": false
}
"#;
        assert_eq!(section.daemon_json().unwrap(), expected);
    }

    #[test]
    fn only_the_keys_given_are_written() {
        assert_eq!(parse("").unwrap().daemon_json().unwrap(), "{}\n");
        assert_eq!(
            parse("dns = [\"1.1.1.1\"]").unwrap().daemon_json().unwrap(),
            "{\n  \"dns\": [\n    \"1.1.1.1\"\n  ]\n}\n"
        );
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let err = parse("registry-mirror = [\"https://m.example\"]").unwrap_err();
        assert!(
            err.starts_with("unknown field `registry-mirror`, expected one of"),
            "{err}"
        );
        assert!(err.contains("`registry-mirrors`"), "{err}");
        let err = parse("log-opts = { max-size = \"1m\" }\nlogdriver = \"local\"").unwrap_err();
        assert!(err.starts_with("unknown field `logdriver`"), "{err}");
        let err = parse("default-address-pools = [{ base = \"10.0.0.0/8\", size = 24, name = \"x\" }]").unwrap_err();
        assert!(
            err.starts_with("unknown field `name`, expected `base` or `size`"),
            "{err}"
        );
    }

    #[test]
    fn keys_of_the_command_line_are_refused_with_the_reason() {
        let err = parse("hosts = [\"tcp://0.0.0.0:2375\"]").unwrap_err();
        assert_eq!(
            err,
            "[docker] hosts: set by the image's dockerd command line (the unix socket and tcp://0.0.0.0:2376); \
             dockerd refuses to start when a setting is given both as a flag and in daemon.json, so change the \
             dockerd [[services]] command instead"
        );
        assert!(parse("data-root = \"/srv\"")
            .unwrap_err()
            .starts_with("[docker] data-root: set by"));
        assert!(parse("tlsverify = false")
            .unwrap_err()
            .starts_with("[docker] tlsverify: set by"));
    }

    #[test]
    fn values_dockerd_would_refuse_are_named() {
        for (text, message) in [
            (
                "dns = [\"dns.example\"]",
                "[docker] dns: \"dns.example\" is not an IP address (dockerd takes addresses, e.g. \"192.168.1.1\")",
            ),
            ("registry-mirrors = [\"mirror.example\"]", "[docker] registry-mirrors: \"mirror.example\" is not an http:// or https:// URL"),
            (
                "registry-mirrors = [\"https://u:p@mirror.example\"]",
                "[docker] registry-mirrors: \"https://u:p@mirror.example\" holds a user name or password, which dockerd refuses; log in with `docker login` instead",
            ),
            (
                "insecure-registries = [\"http://registry.lan:5000\"]",
                "[docker] insecure-registries: \"http://registry.lan:5000\" names a scheme; give host[:port] or a CIDR block (e.g. \"registry.lan:5000\")",
            ),
            ("insecure-registries = [\"registry.lan:http\"]", "[docker] insecure-registries: \"registry.lan:http\" has a port that is not a number up to 65535"),
            ("log-driver = \"journald\"", "[docker] log-driver: \"journald\" needs a systemd journal, which the image does not run"),
            (
                "log-opts = { max-size = \"10 MB\" }",
                "[docker] log-opts.max-size: \"10 MB\" is not a size such as \"10m\", \"512k\" or \"1g\"",
            ),
            ("log-opts = { max-file = 0 }", "[docker] log-opts.max-file: \"0\" is not a number of files, 1 or more"),
            (
                "log-driver = \"local\"\nlog-opts = { tag = \"x\" }",
                "[docker] log-opts.tag: \"x\" is not an option of the local log driver, which takes max-size, max-file, compress, mode, max-buffer-size",
            ),
            (
                "default-address-pools = [{ base = \"10.200.0.0/16\", size = 8 }]",
                "[docker] default-address-pools.size: \"8\" must be between the pool's own prefix /16 and /32: networks are carved out of 10.200.0.0/16",
            ),
            (
                "default-address-pools = [{ base = \"10.200.1.0/16\", size = 24 }]",
                "[docker] default-address-pools.base: \"10.200.1.0/16\" has host bits set; give the network address of the block",
            ),
            (
                "default-address-pools = [{ base = \"10.200.0.0\", size = 24 }]",
                "[docker] default-address-pools.base: \"10.200.0.0\" is not in CIDR notation (ADDRESS/PREFIX, e.g. \"10.200.0.0/16\")",
            ),
            (
                "storage-driver = \"btrfs\"",
                "[docker] storage-driver: \"btrfs\" does not work in this image: its data disk is ext4 with overlay in the kernel; use one of overlay2, vfs",
            ),
            (
                "bip = \"172.26.0.0/16\"",
                "[docker] bip: \"172.26.0.0/16\" is not the bridge's own IPv4 address with a prefix of at most /30 (e.g. \"172.26.0.1/16\")",
            ),
            ("mtu = 9", "[docker] mtu: \"9\" is outside 68..=65535"),
        ] {
            assert_eq!(parse(text).unwrap_err(), message, "for {text}");
        }
    }

    #[test]
    fn a_section_built_in_code_is_checked_before_it_is_written() {
        let section = DockerSection {
            dns: vec!["not-an-address".into()],
            ..DockerSection::default()
        };
        assert!(matches!(
            section.daemon_json(),
            Err(DockerConfigError::Invalid { key, .. }) if key == "dns"
        ));
    }

    #[test]
    fn the_json_reads_back_as_the_same_section() {
        let section =
            parse("dns = [\"10.0.2.3\"]\nlog-driver = \"local\"\nlog-opts = { max-size = \"20m\" }\nmtu = 1450\n")
                .unwrap();
        let json = section.daemon_json().unwrap();
        let back: DockerSection = serde_json::from_str(&json).unwrap();
        assert_eq!(back, section);
    }

    #[test]
    fn instance_keys_replace_the_image_keys_and_the_rest_stays() {
        let image = parse("dns = [\"10.0.2.3\"]\nlog-driver = \"json-file\"\nlog-opts = { max-size = \"10m\" }\n")
            .unwrap()
            .daemon_json()
            .unwrap();
        let instance = parse(
            "dns = [\"192.168.1.1\"]\nregistry-mirrors = [\"http://10.0.2.2:5000\"]\nlog-driver = \"json-file\"\n",
        )
        .unwrap();
        let merged = merge_daemon_json(Some(&image), &instance).unwrap();
        let expected = parse(
            "dns = [\"192.168.1.1\"]\nregistry-mirrors = [\"http://10.0.2.2:5000\"]\nlog-driver = \"json-file\"\n\
             log-opts = { max-size = \"10m\" }\n",
        )
        .unwrap()
        .daemon_json()
        .unwrap();
        assert_eq!(merged.text, expected);
        // log-driver was given the value it had: not a change.
        assert_eq!(
            merged.changes,
            vec![
                KeyChange {
                    key: "dns".into(),
                    before: Some("[\"10.0.2.3\"]".into()),
                    after: "[\"192.168.1.1\"]".into(),
                },
                KeyChange {
                    key: "registry-mirrors".into(),
                    before: None,
                    after: "[\"http://10.0.2.2:5000\"]".into(),
                },
            ]
        );
        // No image file: the instance's keys alone.
        let alone = merge_daemon_json(None, &instance).unwrap();
        assert_eq!(alone.text, instance.daemon_json().unwrap());
        assert_eq!(alone.changes.len(), 3);
    }

    #[test]
    fn a_merge_is_checked_as_one_section_and_keeps_unknown_image_keys() {
        let image = "{\"log-driver\": \"json-file\", \"log-opts\": {\"labels\": \"a\"}}";
        let instance = parse("log-driver = \"local\"\n").unwrap();
        let err = merge_daemon_json(Some(image), &instance).unwrap_err().to_string();
        assert!(err.contains("log-opts.labels") && err.contains("local"), "{err}");
        let image = "{\"features\": {\"buildkit\": true}}";
        let merged = merge_daemon_json(Some(image), &parse("debug = true\n").unwrap()).unwrap();
        assert_eq!(
            merged.text,
            "{\n  \"debug\": true,\n  \"features\": {\n    \"buildkit\": true\n  }\n}\n"
        );
        let err = merge_daemon_json(Some("[1]"), &instance).unwrap_err().to_string();
        assert!(err.contains("not a JSON object"), "{err}");
    }
}
