//! `uvmkit connect HOST` and `uvmkit env NAME`: the host's Docker CLI pointed at a VM's engine.
//!
//! `connect` checks the VM's SSH host key ([`ssh`]: against `--fingerprint`, else the key
//! pinned for the context, else trust on first use, said loudly), fetches the client bundle
//! the VM made on first boot (`/var/lib/uvmkit/identity/tls/client/{ca,cert,key}.pem`) over
//! SSH, writes it as a Docker context in the CLI's own store ([`context`]) and prints the
//! environment lines for the user's shell ([`shell`]). A refused host key writes nothing;
//! running it again after the VM's address or certificates changed replaces the context.
//! `env` prints the lines again from the stored context, without SSH.
//!
//! Everything here uses portable std APIs and the system OpenSSH client, so it works the
//! same on Linux, macOS and Windows hosts.

pub mod context;
pub mod shell;
pub mod ssh;

use std::path::{Path, PathBuf};

use context::{ContextError, DockerContext, TlsMaterial};
use shell::Shell;
use ssh::{HostKey, SshError, SshTarget};

/// Where the VM keeps the client bundle (made by the init's identity step).
pub const CLIENT_BUNDLE_DIR: &str = "/var/lib/uvmkit/identity/tls/client";
/// The files of the bundle, in the order they are fetched.
const BUNDLE_FILES: [&str; 3] = ["ca.pem", "cert.pem", "key.pem"];
/// The line that starts each file in the fetch command's output; PEM text never holds it.
const FILE_MARKER: &str = "uvmkit-bundle-file ";
/// dockerd's TLS port in the image.
pub const DOCKER_TLS_PORT: u16 = 2376;

/// What `uvmkit connect` was asked to do.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The VM's address or name, as this host reaches it.
    pub host: String,
    /// Its SSH port.
    pub ssh_port: u16,
    /// The login name.
    pub user: String,
    /// The SSH private key to log in with; else the ssh client's defaults (agent, ~/.ssh).
    pub identity: Option<PathBuf>,
    /// The context's name; else [`default_name`].
    pub name: Option<String>,
    /// The host key fingerprint the user verified (`SHA256:...`).
    pub fingerprint: Option<String>,
    /// The engine's TLS port as this host reaches it (a forwarded port, or 2376).
    pub docker_port: u16,
    /// The Docker CLI's config directory.
    pub docker_config: PathBuf,
    /// uvmkit's own config directory (the pinned host keys).
    pub uvmkit_config: PathBuf,
    /// The `ssh` program.
    pub ssh: String,
    /// The `ssh-keyscan` program.
    pub keyscan: String,
}

/// What `connect` did.
#[derive(Clone, Debug)]
pub struct Connected {
    /// The context's name.
    pub name: String,
    /// The engine's address, `tcp://HOST:PORT`.
    pub docker_host: String,
    /// The directory of the TLS files (`DOCKER_CERT_PATH`).
    pub cert_path: PathBuf,
    /// The host key that was trusted.
    pub host_key: HostKey,
    /// How it came to be trusted.
    pub trust: Trust,
    /// The pin file.
    pub pin_file: PathBuf,
}

/// Why the host key was trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// It has the fingerprint given with `--fingerprint`.
    Fingerprint,
    /// It is the key pinned for the context by an earlier run.
    Pinned,
    /// Nothing was known: trusted on first use, and now pinned.
    FirstUse,
}

/// Why `connect` or `env` failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A flag's value is unusable.
    #[error("{0}")]
    Usage(String),
    /// The VM offers no key with the fingerprint given.
    #[error(
        "refusing {target}: its SSH host keys ({offered}) do not include --fingerprint {wanted}. \
         Nothing was written. Check the address and the fingerprint the VM prints on its console"
    )]
    FingerprintMismatch {
        /// `HOST:PORT`.
        target: String,
        /// The keys offered.
        offered: String,
        /// The fingerprint asked for.
        wanted: String,
    },
    /// The VM's key is not the one pinned for the context.
    #[error(
        "refusing {target}: its SSH host keys ({offered}) do not include the key pinned for \
         context {name} in {} ({pinned}). Nothing was written. If the VM was recreated, read \
         its new fingerprint on its console and run again with --fingerprint SHA256:...",
        pin_file.display()
    )]
    PinMismatch {
        /// `HOST:PORT`.
        target: String,
        /// The context.
        name: String,
        /// The keys offered.
        offered: String,
        /// The pinned key.
        pinned: String,
        /// Where it is pinned.
        pin_file: PathBuf,
    },
    /// SSH failed.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The bundle's output is not three PEM files.
    #[error("the VM's client bundle ({CLIENT_BUNDLE_DIR}) is not usable: {0}; has the VM finished its first boot (`uvmkit-init: ready` on the console)?")]
    Bundle(String),
    /// Writing or reading the context failed.
    #[error(transparent)]
    Context(#[from] ContextError),
}

impl ConnectError {
    /// The exit code: 2 for bad input, 3 when the host could not be verified or reached, 4
    /// when writing failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            ConnectError::Usage(_) => 2,
            ConnectError::Context(ContextError::Write { .. }) | ConnectError::Ssh(SshError::Pin { .. }) => 4,
            ConnectError::Context(_) => 2,
            _ => 3,
        }
    }
}

/// The context name for a VM at `host` whose engine is on `docker_port`: `uvmkit-HOST`, with
/// `-PORT` when the port is not 2376 (two forwarded VMs on one address), and every character
/// the Docker CLI refuses in a name turned into `-`.
pub fn default_name(host: &str, docker_port: u16) -> String {
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.+-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if docker_port == DOCKER_TLS_PORT {
        format!("uvmkit-{host}")
    } else {
        format!("uvmkit-{host}-{docker_port}")
    }
}

/// `tcp://HOST:PORT`, with an IPv6 address in brackets.
pub fn docker_host(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("tcp://[{host}]:{port}")
    } else {
        format!("tcp://{host}:{port}")
    }
}

/// uvmkit's config directory: `UVMKIT_CONFIG`, else `%APPDATA%\uvmkit` on Windows, else
/// `$XDG_CONFIG_HOME/uvmkit`, else `~/.config/uvmkit`.
pub fn uvmkit_config_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("UVMKIT_CONFIG") {
        return Some(dir);
    }
    if cfg!(windows) {
        return var("APPDATA").map(|d| d.join("uvmkit"));
    }
    var("XDG_CONFIG_HOME")
        .map(|d| d.join("uvmkit"))
        .or_else(|| context::home_dir().map(|h| h.join(".config").join("uvmkit")))
}

/// The file pinning the SSH host key of context `name`.
pub fn pin_file(uvmkit_config: &Path, name: &str) -> PathBuf {
    uvmkit_config.join("known_hosts").join(name)
}

/// Picks the key to trust among `offered`, or says why none may be.
fn choose_key(
    offered: &[HostKey],
    fingerprint: Option<&str>,
    pinned: Option<&HostKey>,
    target: &str,
    name: &str,
    pin_file: &Path,
) -> Result<(HostKey, Trust), ConnectError> {
    let describe = || offered.iter().map(HostKey::describe).collect::<Vec<_>>().join(", ");
    if let Some(wanted) = fingerprint {
        let wanted = ssh::normalise_fingerprint(wanted);
        return offered
            .iter()
            .find(|k| k.fingerprint() == wanted)
            .map(|k| (k.clone(), Trust::Fingerprint))
            .ok_or_else(|| ConnectError::FingerprintMismatch {
                target: target.to_string(),
                offered: describe(),
                wanted,
            });
    }
    if let Some(pinned) = pinned {
        return offered
            .iter()
            .find(|k| *k == pinned)
            .map(|k| (k.clone(), Trust::Pinned))
            .ok_or_else(|| ConnectError::PinMismatch {
                target: target.to_string(),
                name: name.to_string(),
                offered: describe(),
                pinned: pinned.describe(),
                pin_file: pin_file.to_path_buf(),
            });
    }
    // Trust on first use: the strongest common type, ed25519, when offered.
    let key = offered
        .iter()
        .find(|k| k.kind == "ssh-ed25519")
        .or_else(|| offered.first())
        .expect("scan returns at least one key");
    Ok((key.clone(), Trust::FirstUse))
}

/// Splits the fetch command's output into the bundle's files, each checked to be PEM.
fn split_bundle(output: &[u8]) -> Result<TlsMaterial, ConnectError> {
    let text = String::from_utf8_lossy(output);
    let mut files: Vec<(String, String)> = Vec::new();
    for line in text.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix(FILE_MARKER) {
            files.push((name.trim().to_string(), String::new()));
        } else if let Some((_, body)) = files.last_mut() {
            body.push_str(line);
        }
    }
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    if names != BUNDLE_FILES {
        return Err(ConnectError::Bundle(format!(
            "expected {} but got {}",
            BUNDLE_FILES.join(", "),
            if names.is_empty() {
                "nothing".to_string()
            } else {
                names.join(", ")
            }
        )));
    }
    for (name, body) in &files {
        let wanted = if name == "key.pem" {
            "PRIVATE KEY-----"
        } else {
            "-----BEGIN CERTIFICATE-----"
        };
        if !body.contains(wanted) {
            return Err(ConnectError::Bundle(format!(
                "{name} is not a PEM file holding {wanted}"
            )));
        }
    }
    let mut bodies = files.into_iter().map(|(_, b)| b.into_bytes());
    Ok(TlsMaterial {
        ca: bodies.next().unwrap(),
        cert: bodies.next().unwrap(),
        key: bodies.next().unwrap(),
    })
}

/// The shell command that prints the bundle, each file after a marker line; it needs only a
/// POSIX shell and `cat` (busybox's, in the image).
fn fetch_command() -> String {
    format!(
        "cd {CLIENT_BUNDLE_DIR} && for f in {}; do echo \"{FILE_MARKER}$f\"; cat \"$f\" || exit 1; done",
        BUNDLE_FILES.join(" ")
    )
}

/// Runs `uvmkit connect`; `report` receives the messages for people (stderr).
pub fn connect(options: &ConnectOptions, report: &mut dyn FnMut(&str)) -> Result<Connected, ConnectError> {
    if options.host.is_empty() || options.host.starts_with('-') {
        return Err(ConnectError::Usage(format!(
            "{:?} is not a host name or address",
            options.host
        )));
    }
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| default_name(&options.host, options.docker_port));
    if !context::is_valid_name(&name) {
        return Err(ContextError::Name(name).into());
    }
    let target = format!("{}:{}", options.host, options.ssh_port);
    let pin_file = pin_file(&options.uvmkit_config, &name);

    // 1. Which key to trust, before anything is written.
    let offered = ssh::scan(&options.keyscan, &options.host, options.ssh_port)?;
    let pinned = ssh::read_pin(&pin_file)?;
    let (key, trust) = choose_key(
        &offered,
        options.fingerprint.as_deref(),
        pinned.as_ref(),
        &target,
        &name,
        &pin_file,
    )?;

    // 2. The bundle, over SSH trusting that key alone (a temporary known_hosts file: the pin
    //    is recorded only once everything worked).
    let temp_known = std::env::temp_dir().join(format!("uvmkit-known-hosts-{}-{name}", std::process::id()));
    std::fs::write(&temp_known, key.known_hosts_line(&name)).map_err(|source| SshError::Pin {
        what: "write",
        path: temp_known.clone(),
        source,
    })?;
    let ssh_target = SshTarget {
        program: options.ssh.clone(),
        host: options.host.clone(),
        port: options.ssh_port,
        user: options.user.clone(),
        identity: options.identity.clone(),
    };
    let fetched = ssh::run(&ssh_target, &temp_known, &name, &key, &fetch_command());
    let _ = std::fs::remove_file(&temp_known);
    let tls = split_bundle(&fetched?)?;

    // 3. The context, then the pin.
    let docker_host = docker_host(&options.host, options.docker_port);
    let written = context::write(
        &options.docker_config,
        &DockerContext {
            name: name.clone(),
            description: format!("uvmkit VM at {target} (SSH)"),
            host: docker_host.clone(),
            tls,
        },
    )?;
    if pinned.as_ref() != Some(&key) {
        ssh::write_pin(&pin_file, &name, &key)?;
    }
    match trust {
        Trust::FirstUse => report(&format!(
            "warning: trusting the SSH host key of {target} on first use: {}. It is pinned in {}; \
             compare it with the fingerprint the VM prints on its console (next time, pass \
             --fingerprint to check it before connecting)",
            key.describe(),
            pin_file.display()
        )),
        Trust::Fingerprint if pinned.as_ref().is_some_and(|p| *p != key) => report(&format!(
            "note: the SSH host key pinned for {name} is replaced by {}, as --fingerprint says",
            key.describe()
        )),
        _ => {}
    }
    report(&format!(
        "context {name}: {docker_host}, TLS files in {}; use it with `docker --context {name} ...` \
         or `docker context use {name}`, or set the environment below",
        written.cert_path.display()
    ));
    Ok(Connected {
        name,
        docker_host,
        cert_path: written.cert_path,
        host_key: key,
        trust,
        pin_file,
    })
}

/// The environment lines of a stored context (`uvmkit env NAME`).
pub fn env(docker_config: &Path, name: &str, shell: Shell) -> Result<String, ConnectError> {
    let stored = context::read(docker_config, name)?;
    Ok(shell::env_lines(
        shell,
        &stored.name,
        &stored.host,
        &stored.paths.cert_path,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: &str, blob: &str) -> HostKey {
        HostKey {
            kind: kind.into(),
            blob: blob.into(),
        }
    }

    #[test]
    fn names_and_hosts() {
        assert_eq!(default_name("192.168.56.10", 2376), "uvmkit-192.168.56.10");
        assert_eq!(default_name("127.0.0.1", 40123), "uvmkit-127.0.0.1-40123");
        assert_eq!(default_name("fe80::1%eth0", 2376), "uvmkit-fe80--1-eth0");
        assert!(context::is_valid_name(&default_name("fe80::1%eth0", 2376)));
        assert_eq!(docker_host("vm.lan", 2376), "tcp://vm.lan:2376");
        assert_eq!(docker_host("fd00::5", 2376), "tcp://[fd00::5]:2376");
    }

    #[test]
    fn the_key_is_chosen_or_refused() {
        let ed = key(
            "ssh-ed25519",
            "AAAAC3NzaC1lZDI1NTE5AAAAIBbP9bYgCVMo9iJoMy4GZXlw8UJoI0KHPzCM8E2lTxuM",
        );
        let ec = key("ecdsa-sha2-nistp256", "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY=");
        let offered = [ec.clone(), ed.clone()];
        let pin = Path::new("/pins/vm");
        let pick = |fp: Option<&str>, pinned: Option<&HostKey>| choose_key(&offered, fp, pinned, "h:22", "vm", pin);
        assert_eq!(pick(None, None).unwrap(), (ed.clone(), Trust::FirstUse));
        assert_eq!(pick(None, Some(&ec)).unwrap(), (ec.clone(), Trust::Pinned));
        assert_eq!(
            pick(Some(&ed.fingerprint()), Some(&ec)).unwrap(),
            (ed.clone(), Trust::Fingerprint)
        );
        let err = pick(Some("SHA256:nope"), None).unwrap_err().to_string();
        assert!(err.contains("do not include --fingerprint SHA256:nope"), "{err}");
        assert!(err.contains("Nothing was written"), "{err}");
        assert!(err.contains(&ed.fingerprint()), "{err}");
        let other = key("ssh-ed25519", "AAAA");
        let err = pick(None, Some(&other)).unwrap_err().to_string();
        assert!(err.contains("the key pinned for context vm in /pins/vm"), "{err}");
    }

    #[test]
    fn the_bundle_is_three_pem_files() {
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n";
        let out = format!("{FILE_MARKER}ca.pem\n{cert}{FILE_MARKER}cert.pem\n{cert}{FILE_MARKER}key.pem\n{key}");
        let tls = split_bundle(out.as_bytes()).unwrap();
        assert_eq!(tls.ca, cert.as_bytes());
        assert_eq!(tls.key, key.as_bytes());
        let err = split_bundle(format!("{FILE_MARKER}ca.pem\n{cert}").as_bytes()).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected ca.pem, cert.pem, key.pem but got ca.pem"),
            "{err}"
        );
        let bad = format!("{FILE_MARKER}ca.pem\n{cert}{FILE_MARKER}cert.pem\n{cert}{FILE_MARKER}key.pem\n{cert}");
        assert!(split_bundle(bad.as_bytes()).is_err());
        assert_eq!(
            fetch_command(),
            "cd /var/lib/uvmkit/identity/tls/client && for f in ca.pem cert.pem key.pem; do \
             echo \"uvmkit-bundle-file $f\"; cat \"$f\" || exit 1; done"
        );
    }
}
