//! The VM's SSH host key, checked before anything is fetched: `ssh-keyscan` reads the keys the
//! server offers, their SHA256 fingerprints (as `ssh-keygen -l` prints them: the base64 of the
//! sha256 of the key blob, RFC 4253 section 6.6, without padding) are compared with
//! `--fingerprint` or the key pinned for the context, and `ssh` then runs with only that key
//! trusted (`StrictHostKeyChecking=yes` against a known_hosts file holding it alone, under the
//! context's name as `HostKeyAlias`, so a new address of the same VM still matches).
//!
//! The system's OpenSSH client does the work (`ssh`, `ssh-keyscan`: Linux, macOS, and
//! Windows 10 and later ship them).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};

/// One SSH host key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostKey {
    /// The key type, `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`.
    pub kind: String,
    /// The key blob, base64 as known_hosts holds it.
    pub blob: String,
}

impl HostKey {
    /// `SHA256:...`, as `ssh-keygen -lf` and the VM's console print it.
    pub fn fingerprint(&self) -> String {
        let bytes = STANDARD.decode(self.blob.as_bytes()).unwrap_or_default();
        format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(&bytes)))
    }

    /// `ED25519 SHA256:...`, for messages.
    pub fn describe(&self) -> String {
        let kind = match self.kind.as_str() {
            "ssh-ed25519" => "ED25519".to_string(),
            "ssh-rsa" => "RSA".to_string(),
            k if k.starts_with("ecdsa-") => "ECDSA".to_string(),
            k => k.to_string(),
        };
        format!("{kind} {}", self.fingerprint())
    }

    /// The `HostKeyAlgorithms` that verify this key (RSA keys sign with SHA-2, RFC 8332).
    pub fn algorithms(&self) -> String {
        match self.kind.as_str() {
            "ssh-rsa" => "rsa-sha2-512,rsa-sha2-256,ssh-rsa".into(),
            k => k.to_string(),
        }
    }

    /// A known_hosts line naming this key for `alias`.
    pub fn known_hosts_line(&self, alias: &str) -> String {
        format!("{alias} {} {}\n", self.kind, self.blob)
    }
}

/// Normalises a `--fingerprint`: `SHA256:` prefix added when missing, trailing `=` padding
/// dropped (some tools print it).
pub fn normalise_fingerprint(text: &str) -> String {
    let text = text.trim();
    let bare = text.strip_prefix("SHA256:").unwrap_or(text);
    format!("SHA256:{}", bare.trim_end_matches('='))
}

/// The keys in `ssh-keyscan` or known_hosts text (`HOST TYPE BLOB` lines; comments skipped).
pub fn parse_keys(text: &str) -> Vec<HostKey> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split_ascii_whitespace();
            let (_host, kind, blob) = (fields.next()?, fields.next()?, fields.next()?);
            STANDARD.decode(blob.as_bytes()).ok()?;
            Some(HostKey {
                kind: kind.to_string(),
                blob: blob.to_string(),
            })
        })
        .collect()
}

/// Why the host key could not be checked or the bundle fetched.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// An OpenSSH program could not be started.
    #[error("cannot run {program}: {source}; install the OpenSSH client (Windows: Settings > Optional features > OpenSSH Client)")]
    Spawn {
        /// The program.
        program: String,
        /// What starting it reported.
        source: io::Error,
    },
    /// `ssh-keyscan` got no key.
    #[error("ssh-keyscan got no SSH host key from {target}: is the VM up and its SSH port right (--port)? {stderr}")]
    NoKeys {
        /// `HOST:PORT`.
        target: String,
        /// What ssh-keyscan said.
        stderr: String,
    },
    /// `ssh` failed.
    #[error("ssh {target} failed ({status}): {stderr}")]
    Ssh {
        /// `USER@HOST:PORT`.
        target: String,
        /// Its exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// The pin file cannot be read or written.
    #[error("cannot {what} {}: {source}", path.display())]
    Pin {
        /// Reading or writing.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
}

/// The host keys `host:port` offers.
pub fn scan(keyscan: &str, host: &str, port: u16) -> Result<Vec<HostKey>, SshError> {
    let out = Command::new(keyscan)
        .args(["-T", "15", "-p", &port.to_string(), "-t", "ed25519,ecdsa,rsa", host])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SshError::Spawn {
            program: keyscan.to_string(),
            source,
        })?;
    let keys = parse_keys(&String::from_utf8_lossy(&out.stdout));
    if keys.is_empty() {
        return Err(SshError::NoKeys {
            target: format!("{host}:{port}"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(keys)
}

/// The key pinned in `path`, if there is one.
pub fn read_pin(path: &Path) -> Result<Option<HostKey>, SshError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(parse_keys(&text).into_iter().next()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SshError::Pin {
            what: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `key` as the one known host `alias` in `path` (a temporary file renamed over it).
pub fn write_pin(path: &Path, alias: &str, key: &HostKey) -> Result<(), SshError> {
    let err = |source| SshError::Pin {
        what: "write",
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let temp = path.with_extension(format!("new-{}", std::process::id()));
    fs::write(&temp, key.known_hosts_line(alias)).map_err(err)?;
    fs::rename(&temp, path).map_err(|e| {
        let _ = fs::remove_file(&temp);
        err(e)
    })
}

/// How to reach the VM's sshd.
#[derive(Clone, Debug)]
pub struct SshTarget {
    /// The `ssh` program.
    pub program: String,
    /// Host name or address.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// Login name.
    pub user: String,
    /// `-i KEY`, and only that key, when given.
    pub identity: Option<PathBuf>,
}

/// Quotes a path for an `ssh -o` value: OpenSSH splits option values at spaces unless
/// quoted.
fn option_path(path: &Path) -> String {
    let text = path.display().to_string();
    if text.contains(' ') {
        format!("\"{text}\"")
    } else {
        text
    }
}

/// Runs `command` on the VM with `known_hosts` (holding the key for `alias`) as the only
/// trusted host key; returns its standard output.
pub fn run(
    target: &SshTarget,
    known_hosts: &Path,
    alias: &str,
    key: &HostKey,
    command: &str,
) -> Result<Vec<u8>, SshError> {
    let known = option_path(known_hosts);
    let mut cmd = Command::new(&target.program);
    cmd.args(["-p", &target.port.to_string(), "-l", &target.user])
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR"])
        .args(["-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={known}"))
        .arg("-o")
        .arg(format!("GlobalKnownHostsFile={known}"))
        .arg("-o")
        .arg(format!("HostKeyAlias={alias}"))
        .arg("-o")
        .arg(format!("HostKeyAlgorithms={}", key.algorithms()));
    if let Some(identity) = &target.identity {
        cmd.arg("-i").arg(identity).args(["-o", "IdentitiesOnly=yes"]);
    }
    let out = cmd
        .arg(&target.host)
        .arg(command)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SshError::Spawn {
            program: target.program.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(SshError::Ssh {
            target: format!("{}@{}:{}", target.user, target.host, target.port),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_ssh_keygens() {
        // A key and the fingerprint `ssh-keygen -lf` prints for it.
        let key = parse_keys(
            "# 127.0.0.1:22 SSH-2.0-OpenSSH\n\
             [127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbP9bYgCVMo9iJoMy4GZXlw8UJoI0KHPzCM8E2lTxuM\n",
        );
        assert_eq!(key.len(), 1);
        assert_eq!(key[0].kind, "ssh-ed25519");
        assert_eq!(
            key[0].fingerprint(),
            "SHA256:ybHv9fuSmcbQwneaz/c336tD5DkKKcyKZxIucPu+5Uo"
        );
        assert_eq!(
            key[0].describe(),
            "ED25519 SHA256:ybHv9fuSmcbQwneaz/c336tD5DkKKcyKZxIucPu+5Uo"
        );
        assert_eq!(key[0].algorithms(), "ssh-ed25519");
        assert_eq!(
            normalise_fingerprint(" ybHv9fuSmcbQwneaz/c336tD5DkKKcyKZxIucPu+5Uo= "),
            "SHA256:ybHv9fuSmcbQwneaz/c336tD5DkKKcyKZxIucPu+5Uo"
        );
        assert!(parse_keys("host ssh-ed25519 not*base64\n").is_empty());
    }
}
