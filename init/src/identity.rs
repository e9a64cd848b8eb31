//! The VM's identity on first boot (`[data_disk] identity = true`): SSH host keys and the TLS
//! material for `dockerd --tlsverify`, kept on the data disk by `uvmkit_identity`, with the SSH
//! host keys installed where sshd reads them.
//!
//! The client bundle users copy to `~/.docker` (`ca.pem`, `cert.pem`, `key.pem`) is
//! [`CLIENT_BUNDLE_DIR`]; the server side is in `IDENTITY_DIR/tls/` (`ca.pem`, `server-cert.pem`,
//! `server-key.pem`).

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::time::{Instant, SystemTime};

use uvmkit_identity::{ensure_ssh_host_keys, ensure_tls, ServerNames};
use uvmkit_init_config::{CLIENT_BUNDLE_DIR, IDENTITY_DIR};

use crate::log;

/// Where sshd reads its host keys.
pub const SSH_DIR: &str = "/etc/ssh";

/// The host key files, private then public.
const HOST_KEYS: [(&str, u32); 4] = [
    ("ssh_host_ed25519_key", 0o600),
    ("ssh_host_ed25519_key.pub", 0o644),
    ("ssh_host_ecdsa_key", 0o600),
    ("ssh_host_ecdsa_key.pub", 0o644),
];

/// Creates or refreshes the identity for `hostname` and `addresses`, installs the SSH host keys
/// and logs fingerprints and timing. Failures are logged; boot goes on.
pub fn ensure(hostname: &str, addresses: &[Ipv4Addr]) {
    let started = Instant::now();
    let names = ServerNames::for_host(hostname, addresses.iter().copied().map(IpAddr::V4));
    let dir = Path::new(IDENTITY_DIR);
    if let Err(err) = fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        log!("identity: cannot create {IDENTITY_DIR}: {err}");
        return;
    }
    let done = ensure_in(dir, Path::new(SSH_DIR), hostname, &names, SystemTime::now());
    for line in &done.lines {
        log!("identity: {line}");
    }
    let ms = started.elapsed().as_millis();
    match (done.ssh, done.tls) {
        (true, true) => log!("identity ready in {ms} ms; Docker client bundle in {CLIENT_BUNDLE_DIR}"),
        (true, false) => log!("identity incomplete after {ms} ms: SSH host keys ready, no TLS material for dockerd (see the lines above)"),
        (false, true) => log!("identity incomplete after {ms} ms: no SSH host keys (see the lines above); Docker client bundle in {CLIENT_BUNDLE_DIR}"),
        (false, false) => log!("identity failed after {ms} ms: no SSH host keys and no TLS material (see the lines above)"),
    }
}

/// What [`ensure_in`] did: whether sshd has its host keys and dockerd its TLS material, and
/// the lines for the log.
#[derive(Debug)]
pub struct Ensured {
    /// The host keys are in the SSH directory.
    pub ssh: bool,
    /// The TLS material is in place.
    pub tls: bool,
    /// What was done or went wrong, one line each.
    pub lines: Vec<String>,
}

/// The SSH host keys (made in `dir/ssh` and installed in `ssh_dir`) and the TLS material
/// (`dir/tls`), each on its own: an error in one never stops the other, so a VM whose CA
/// cannot be read can still be logged in to, and one whose host key is damaged still serves
/// Docker over TLS.
pub fn ensure_in(dir: &Path, ssh_dir: &Path, hostname: &str, names: &ServerNames, now: SystemTime) -> Ensured {
    let mut lines = Vec::new();
    let ssh = match ensure_ssh_host_keys(dir, hostname) {
        Ok(report) => {
            lines.push(format!(
                "ssh ed25519 host key {} ({})",
                report.ed25519, report.ed25519_fingerprint
            ));
            lines.push(format!(
                "ssh ecdsa host key {} ({})",
                report.ecdsa, report.ecdsa_fingerprint
            ));
            match install_host_keys(&dir.join("ssh"), ssh_dir) {
                Ok(()) => {
                    lines.push(format!("SSH host keys installed in {}", ssh_dir.display()));
                    true
                }
                Err(err) => {
                    lines.push(format!(
                        "cannot install the SSH host keys in {}: {err}",
                        ssh_dir.display()
                    ));
                    false
                }
            }
        }
        Err(err) => {
            lines.push(format!("SSH host keys: {err}; sshd will not start without them"));
            false
        }
    };
    let tls = match ensure_tls(dir, hostname, names, now) {
        Ok(report) => {
            lines.push(format!(
                "tls CA {} (SHA256 Fingerprint={})",
                report.ca, report.ca_fingerprint
            ));
            lines.push(format!("tls server certificate {}", report.server_cert));
            lines.push(format!("tls client bundle {}", report.client_cert));
            true
        }
        Err(err) => {
            lines.push(format!("TLS material: {err}; dockerd cannot serve TLS"));
            false
        }
    };
    Ensured { ssh, tls, lines }
}

/// Copies the host keys from `from` to `to` with sshd's required modes (private keys 0600).
pub fn install_host_keys(from: &Path, to: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o755).create(to)?;
    for (name, mode) in HOST_KEYS {
        let target = to.join(name);
        let _ = fs::remove_file(&target);
        fs::copy(from.join(name), &target)?;
        fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use uvmkit_identity::ensure_identity;

    fn scratch(name: &str) -> std::path::PathBuf {
        let base = std::env::temp_dir().join(format!("uvmkit-init-identity-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        base
    }

    #[test]
    fn a_tls_failure_still_installs_the_ssh_host_keys() {
        let base = scratch("tls-broken");
        let store = base.join("identity");
        // A CA certificate with the key of another CA: the TLS side must stop with an error.
        let names = ServerNames::for_host("docker", [IpAddr::V4(Ipv4Addr::new(10, 0, 2, 15))]);
        ensure_tls(&store, "docker", &names, SystemTime::now()).unwrap();
        let other = base.join("other");
        ensure_tls(&other, "docker", &names, SystemTime::now()).unwrap();
        fs::copy(other.join("tls/ca-key.pem"), store.join("tls/ca-key.pem")).unwrap();
        let ssh = base.join("etc-ssh");
        let done = ensure_in(&store, &ssh, "docker", &names, SystemTime::now());
        assert!(done.ssh && !done.tls, "{:?}", done.lines);
        assert!(
            done.lines
                .iter()
                .any(|l| l.starts_with("TLS material: the CA private key")),
            "{:?}",
            done.lines
        );
        for (name, _) in HOST_KEYS {
            assert!(ssh.join(name).is_file(), "{name} not installed");
        }
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn an_ssh_failure_still_makes_the_tls_material() {
        let base = scratch("ssh-broken");
        let store = base.join("identity");
        fs::create_dir_all(store.join("ssh")).unwrap();
        fs::write(store.join("ssh/ssh_host_ed25519_key"), "not a key\n").unwrap();
        let names = ServerNames::for_host("docker", [IpAddr::V4(Ipv4Addr::new(10, 0, 2, 15))]);
        let ssh = base.join("etc-ssh");
        let done = ensure_in(&store, &ssh, "docker", &names, SystemTime::now());
        assert!(!done.ssh && done.tls, "{:?}", done.lines);
        assert!(
            done.lines
                .iter()
                .any(|l| l.starts_with("SSH host keys: ") && l.contains("ssh_host_ed25519_key")),
            "{:?}",
            done.lines
        );
        // The damaged key is kept for its owner to restore; nothing was installed from it.
        assert_eq!(
            fs::read_to_string(store.join("ssh/ssh_host_ed25519_key")).unwrap(),
            "not a key\n"
        );
        assert!(!ssh.join("ssh_host_ed25519_key").exists());
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            assert!(store.join("tls/client").join(file).is_file(), "{file}");
        }
        assert!(store.join("tls/server-cert.pem").is_file());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn host_keys_are_generated_and_installed_private() {
        let base = std::env::temp_dir().join(format!("uvmkit-init-identity-{}", std::process::id()));
        let store = base.join("identity");
        let names = ServerNames::for_host("docker", [IpAddr::V4(Ipv4Addr::new(10, 0, 2, 15))]);
        ensure_identity(&store, "docker", &names, SystemTime::now()).unwrap();
        let ssh = base.join("etc-ssh");
        install_host_keys(&store.join("ssh"), &ssh).unwrap();
        // Installing again (every boot) replaces the files.
        install_host_keys(&store.join("ssh"), &ssh).unwrap();
        for (name, mode) in HOST_KEYS {
            let meta = fs::metadata(ssh.join(name)).unwrap();
            assert_eq!(meta.mode() & 0o777, mode, "{name}");
            assert_eq!(
                fs::read(ssh.join(name)).unwrap(),
                fs::read(store.join("ssh").join(name)).unwrap()
            );
        }
        let private = fs::read_to_string(ssh.join("ssh_host_ed25519_key")).unwrap();
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"), "{private}");
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            assert!(store.join("tls/client").join(file).is_file(), "{file}");
        }
        if Path::new("/usr/bin/ssh-keygen").exists() {
            let out = std::process::Command::new("ssh-keygen")
                .arg("-lf")
                .arg(ssh.join("ssh_host_ed25519_key.pub"))
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        fs::remove_dir_all(&base).unwrap();
    }
}
