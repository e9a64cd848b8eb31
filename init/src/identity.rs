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

use uvmkit_identity::{ensure_identity, ServerNames};
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
    match ensure_identity(dir, hostname, &names, SystemTime::now()) {
        Ok(report) => {
            for line in report.to_string().lines() {
                log!("identity: {line}");
            }
        }
        Err(err) => {
            log!("identity: {err}");
            return;
        }
    }
    match install_host_keys(&dir.join("ssh"), Path::new(SSH_DIR)) {
        Ok(()) => log!("identity: SSH host keys installed in {SSH_DIR}"),
        Err(err) => log!("identity: cannot install the SSH host keys in {SSH_DIR}: {err}"),
    }
    log!(
        "identity ready in {} ms; Docker client bundle in {CLIENT_BUNDLE_DIR}",
        started.elapsed().as_millis()
    );
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
