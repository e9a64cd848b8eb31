//! The first-boot flow over the identity directory on the persistent data disk.
//!
//! Layout (private keys 0600, public files 0644, every directory 0700):
//!
//! ```text
//! DIR/ssh/ssh_host_ed25519_key{,.pub}   DIR/ssh/ssh_host_ecdsa_key{,.pub}
//! DIR/tls/ca.pem  ca-key.pem  server-cert.pem  server-key.pem
//! DIR/tls/client/ca.pem  cert.pem  key.pem      (the bundle users copy to ~/.docker)
//! ```
//!
//! The flow keeps what exists and creates what is missing. Material users depend on (SSH host
//! keys, the CA) is never replaced silently: if it cannot be read the flow stops with an error
//! that says what to do. Material derived from it (public key lines, the server and client
//! certificates) is rewritten whenever it is missing, unreadable or stale. Every file is written
//! atomically: a temporary file in the same directory, fsync, rename, fsync of the directory.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rand_core::{CryptoRngCore, OsRng};

use crate::ssh::{self, HostKeyKind};
use crate::tls::{self, CertificateAuthority, ServerNames};
use crate::{fingerprint_sha256, IdentityError};

/// How long a new CA is valid, in days (ten years).
pub const CA_VALIDITY_DAYS: u32 = 3650;
/// How long a new server or client certificate is valid, in days (two years).
pub const LEAF_VALIDITY_DAYS: u32 = 730;
/// A certificate whose notAfter is this close is renewed before it runs out, in days.
pub const RENEWAL_MARGIN_DAYS: u32 = 30;
/// The common name of the client certificate.
pub const CLIENT_COMMON_NAME: &str = "client";

const PRIVATE: u32 = 0o600;
const PUBLIC: u32 = 0o644;
const PRIVATE_DIR: u32 = 0o700;

/// What the flow did with one piece of the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It existed and was kept unchanged.
    Kept,
    /// It did not exist and was created.
    Created,
    /// It existed and was replaced, for the given reason.
    Reissued(ReissueReason),
    /// The private key was kept; a derived file (public key line, the bundle's CA copy, a file
    /// mode) was missing or stale and was rewritten.
    Repaired,
}

/// Why a certificate was replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReissueReason {
    /// The VM's names or addresses differ from the certificate's subjectAltName.
    NamesChanged,
    /// A new CA was created, so certificates of the old one no longer verify.
    CaChanged,
    /// The certificate's notAfter has passed.
    Expired {
        /// Its notAfter.
        not_after: SystemTime,
    },
    /// The certificate's notAfter is within [`RENEWAL_MARGIN_DAYS`].
    ExpiresSoon {
        /// Its notAfter.
        not_after: SystemTime,
    },
    /// The certificate's notBefore is still to come: it was made while the clock was wrong
    /// (ahead), and clients would refuse it.
    NotYetValid {
        /// Its notBefore.
        not_before: SystemTime,
    },
    /// The certificate or its key could not be parsed.
    Unreadable,
    /// The private key does not belong to the certificate.
    KeyMismatch,
    /// The certificate was not signed by the current CA.
    NotIssuedByCa,
}

/// What [`ensure_identity`] did, for the boot log (`Display` prints one line per item).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityReport {
    /// The ed25519 SSH host key.
    pub ssh_ed25519: Outcome,
    /// Its fingerprint, `SHA256:...`.
    pub ssh_ed25519_fingerprint: String,
    /// The ECDSA P-256 SSH host key.
    pub ssh_ecdsa: Outcome,
    /// Its fingerprint, `SHA256:...`.
    pub ssh_ecdsa_fingerprint: String,
    /// The TLS CA.
    pub ca: Outcome,
    /// The CA certificate's SHA-256 fingerprint, as `openssl x509 -fingerprint -sha256` prints it.
    pub ca_fingerprint: String,
    /// The TLS server certificate and key.
    pub server_cert: Outcome,
    /// The TLS client bundle.
    pub client_cert: Outcome,
}

impl IdentityReport {
    /// Whether anything was written.
    pub fn changed(&self) -> bool {
        [
            self.ssh_ed25519,
            self.ssh_ecdsa,
            self.ca,
            self.server_cert,
            self.client_cert,
        ]
        .iter()
        .any(|o| *o != Outcome::Kept)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Kept => f.write_str("kept"),
            Outcome::Created => f.write_str("created"),
            Outcome::Repaired => f.write_str("kept (derived files rewritten)"),
            Outcome::Reissued(reason) => write!(f, "reissued ({reason})"),
        }
    }
}

/// `2026-12-02T00:00:00Z`, or the seconds since 1970 when X.509 cannot express the time.
fn date(time: SystemTime) -> String {
    der::DateTime::from_system_time(time).map_or_else(
        |_| {
            let secs = time.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            format!("{secs} s after 1970")
        },
        |t| t.to_string(),
    )
}

impl fmt::Display for ReissueReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReissueReason::NamesChanged => f.write_str("the VM's names or addresses changed"),
            ReissueReason::CaChanged => f.write_str("a new CA was created"),
            ReissueReason::Expired { not_after } => write!(f, "it expired at {}", date(*not_after)),
            ReissueReason::ExpiresSoon { not_after } => write!(
                f,
                "it expires at {}, within {RENEWAL_MARGIN_DAYS} days",
                date(*not_after)
            ),
            ReissueReason::NotYetValid { not_before } => write!(
                f,
                "it is valid only from {} (made while the clock was ahead)",
                date(*not_before)
            ),
            ReissueReason::Unreadable => f.write_str("the old one could not be read"),
            ReissueReason::KeyMismatch => f.write_str("its key did not match"),
            ReissueReason::NotIssuedByCa => f.write_str("it was not signed by the current CA"),
        }
    }
}

/// Whether a certificate valid from `not_before` to `not_after` must be replaced at `now`:
/// not valid yet, expired, or expiring within [`RENEWAL_MARGIN_DAYS`] (RFC 5280 section
/// 4.1.2.5: a certificate is valid from notBefore through notAfter inclusive).
pub fn validity_problem(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> Option<ReissueReason> {
    let margin = std::time::Duration::from_secs(86_400 * u64::from(RENEWAL_MARGIN_DAYS));
    if not_before > now {
        Some(ReissueReason::NotYetValid { not_before })
    } else if not_after < now {
        Some(ReissueReason::Expired { not_after })
    } else if not_after < now + margin {
        Some(ReissueReason::ExpiresSoon { not_after })
    } else {
        None
    }
}

impl fmt::Display for IdentityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ssh ed25519 host key {} ({})",
            self.ssh_ed25519, self.ssh_ed25519_fingerprint
        )?;
        writeln!(
            f,
            "ssh ecdsa host key {} ({})",
            self.ssh_ecdsa, self.ssh_ecdsa_fingerprint
        )?;
        writeln!(f, "tls CA {} (SHA256 Fingerprint={})", self.ca, self.ca_fingerprint)?;
        writeln!(f, "tls server certificate {}", self.server_cert)?;
        write!(f, "tls client bundle {}", self.client_cert)
    }
}

/// Creates or refreshes the VM's identity under `dir` (see the module documentation for the
/// layout), using the operating system's random source. Idempotent: existing keys are kept and
/// the server certificate is reissued only when `names` differ from its subjectAltName, it has
/// expired, or the CA changed.
pub fn ensure_identity(
    dir: &Path,
    hostname: &str,
    names: &ServerNames,
    now: SystemTime,
) -> Result<IdentityReport, IdentityError> {
    ensure_identity_with_rng(&mut OsRng, dir, hostname, names, now)
}

/// [`ensure_identity`] with a caller-supplied random source.
pub fn ensure_identity_with_rng(
    rng: &mut impl CryptoRngCore,
    dir: &Path,
    hostname: &str,
    names: &ServerNames,
    now: SystemTime,
) -> Result<IdentityReport, IdentityError> {
    let ssh = ensure_ssh_host_keys_with_rng(rng, dir, hostname)?;
    let tls = ensure_tls_with_rng(rng, dir, hostname, names, now)?;
    Ok(IdentityReport {
        ssh_ed25519: ssh.ed25519,
        ssh_ed25519_fingerprint: ssh.ed25519_fingerprint,
        ssh_ecdsa: ssh.ecdsa,
        ssh_ecdsa_fingerprint: ssh.ecdsa_fingerprint,
        ca: tls.ca,
        ca_fingerprint: tls.ca_fingerprint,
        server_cert: tls.server_cert,
        client_cert: tls.client_cert,
    })
}

/// What [`ensure_ssh_host_keys`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshReport {
    /// The ed25519 host key.
    pub ed25519: Outcome,
    /// Its fingerprint, `SHA256:...`.
    pub ed25519_fingerprint: String,
    /// The ECDSA P-256 host key.
    pub ecdsa: Outcome,
    /// Its fingerprint, `SHA256:...`.
    pub ecdsa_fingerprint: String,
}

/// What [`ensure_tls`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsReport {
    /// The CA.
    pub ca: Outcome,
    /// The CA certificate's SHA-256 fingerprint, as `openssl x509 -fingerprint -sha256` prints it.
    pub ca_fingerprint: String,
    /// The server certificate and key.
    pub server_cert: Outcome,
    /// The client bundle.
    pub client_cert: Outcome,
}

/// The SSH host keys alone, under `dir/ssh`: whatever happens to the TLS material, a VM whose
/// host keys are fine can be logged in to (and the other way round).
pub fn ensure_ssh_host_keys(dir: &Path, hostname: &str) -> Result<SshReport, IdentityError> {
    ensure_ssh_host_keys_with_rng(&mut OsRng, dir, hostname)
}

/// The TLS material alone, under `dir/tls`.
pub fn ensure_tls(
    dir: &Path,
    hostname: &str,
    names: &ServerNames,
    now: SystemTime,
) -> Result<TlsReport, IdentityError> {
    ensure_tls_with_rng(&mut OsRng, dir, hostname, names, now)
}

/// [`ensure_ssh_host_keys`] with a caller-supplied random source.
pub fn ensure_ssh_host_keys_with_rng(
    rng: &mut impl CryptoRngCore,
    dir: &Path,
    hostname: &str,
) -> Result<SshReport, IdentityError> {
    let ssh_dir = dir.join("ssh");
    for d in [dir, &ssh_dir] {
        private_dir(d)?;
    }
    let comment = format!("root@{hostname}");
    let (ed25519, ed25519_fingerprint) = ensure_host_key(
        rng,
        &ssh_dir.join("ssh_host_ed25519_key"),
        HostKeyKind::Ed25519,
        &comment,
    )?;
    let (ecdsa, ecdsa_fingerprint) = ensure_host_key(
        rng,
        &ssh_dir.join("ssh_host_ecdsa_key"),
        HostKeyKind::EcdsaP256,
        &comment,
    )?;
    Ok(SshReport {
        ed25519,
        ed25519_fingerprint,
        ecdsa,
        ecdsa_fingerprint,
    })
}

/// [`ensure_tls`] with a caller-supplied random source.
pub fn ensure_tls_with_rng(
    rng: &mut impl CryptoRngCore,
    dir: &Path,
    hostname: &str,
    names: &ServerNames,
    now: SystemTime,
) -> Result<TlsReport, IdentityError> {
    let tls_dir = dir.join("tls");
    let client_dir = tls_dir.join("client");
    for d in [dir, &tls_dir, &client_dir] {
        private_dir(d)?;
    }

    let (ca, ca_outcome) = ensure_ca(rng, &tls_dir, hostname, now)?;
    let ca_changed = ca_outcome != Outcome::Kept;

    let server_paths = (tls_dir.join("server-cert.pem"), tls_dir.join("server-key.pem"));
    let mut server_cert = leaf_outcome(&server_paths, &ca, ca_changed, now, |cert| {
        Ok(!tls::cert_sans(cert)?.same_as(names))
    })?;
    if server_cert != Outcome::Kept {
        let issued = tls::issue_server_cert(rng, &ca, names, now, LEAF_VALIDITY_DAYS)?;
        write_pair(&server_paths, &issued.cert_pem, &issued.key_pem)?;
    } else if fix_mode(&server_paths.1, PRIVATE)? {
        server_cert = Outcome::Repaired;
    }

    let client_paths = (client_dir.join("cert.pem"), client_dir.join("key.pem"));
    let mut client_cert = leaf_outcome(&client_paths, &ca, ca_changed, now, |_| Ok(false))?;
    if client_cert != Outcome::Kept {
        let issued = tls::issue_client_cert(rng, &ca, CLIENT_COMMON_NAME, now, LEAF_VALIDITY_DAYS)?;
        write_pair(&client_paths, &issued.cert_pem, &issued.key_pem)?;
    } else if fix_mode(&client_paths.1, PRIVATE)? {
        client_cert = Outcome::Repaired;
    }
    let bundle_ca = client_dir.join("ca.pem");
    if read_optional(&bundle_ca)?.as_deref() != Some(ca.cert_pem.as_str()) {
        write_atomic(&bundle_ca, ca.cert_pem.as_bytes(), PUBLIC)?;
        if client_cert == Outcome::Kept {
            client_cert = Outcome::Repaired;
        }
    }

    Ok(TlsReport {
        ca: ca_outcome,
        ca_fingerprint: tls::cert_fingerprint_sha256(&ca.cert_pem)?,
        server_cert,
        client_cert,
    })
}

/// Keeps or creates one SSH host key pair at `private` and `private.pub`; returns what was done
/// and the key's fingerprint.
fn ensure_host_key(
    rng: &mut impl CryptoRngCore,
    private: &Path,
    kind: HostKeyKind,
    comment: &str,
) -> Result<(Outcome, String), IdentityError> {
    let public = with_suffix(private, ".pub");
    let (outcome, line) = match read_optional(private)? {
        None => {
            let pair = ssh::generate_host_key(rng, kind, comment)?;
            write_atomic(private, pair.private.as_bytes(), PRIVATE)?;
            write_atomic(&public, format!("{}\n", pair.public).as_bytes(), PUBLIC)?;
            (Outcome::Created, pair.public)
        }
        Some(pem) => {
            let line = ssh::public_line_of_private(&pem).map_err(|source| IdentityError::SshPrivateKey {
                path: private.to_owned(),
                source,
            })?;
            // sshd refuses host keys other users can read.
            let mut outcome = if fix_mode(private, PRIVATE)? {
                Outcome::Repaired
            } else {
                Outcome::Kept
            };
            let existing = read_optional(&public)?;
            if !existing.is_some_and(|e| ssh::same_public_key(&e, &line)) {
                write_atomic(&public, format!("{line}\n").as_bytes(), PUBLIC)?;
                outcome = Outcome::Repaired;
            }
            (outcome, line)
        }
    };
    Ok((outcome, fingerprint_sha256(&line)?))
}

/// Loads the CA from `tls_dir`, or creates a new one when its certificate or key is missing.
fn ensure_ca(
    rng: &mut impl CryptoRngCore,
    tls_dir: &Path,
    hostname: &str,
    now: SystemTime,
) -> Result<(CertificateAuthority, Outcome), IdentityError> {
    let cert_path = tls_dir.join("ca.pem");
    let key_path = tls_dir.join("ca-key.pem");
    match (read_optional(&cert_path)?, read_optional(&key_path)?) {
        (Some(cert_pem), Some(key_pem)) => {
            let cert = tls::parse_cert(&cert_pem, &cert_path.display().to_string())?;
            let key = tls::parse_key(&key_pem, &key_path.display().to_string())?;
            let key_spki = spki::SubjectPublicKeyInfoOwned::from_key(key.public_key()).map_err(|source| {
                IdentityError::Certificate {
                    what: "CA",
                    source: source.into(),
                }
            })?;
            if key_spki != cert.tbs_certificate.subject_public_key_info {
                return Err(IdentityError::CaKeyMismatch {
                    cert: cert_path.display().to_string(),
                    key: key_path.display().to_string(),
                });
            }
            let (not_before, not_after) = tls::validity_period(&cert_pem)?;
            // A CA clients would refuse (or soon will) is replaced; the leaves follow it.
            if let Some(reason) = validity_problem(not_before, not_after, now) {
                let ca = tls::create_ca(rng, &format!("uvmkit CA for {hostname}"), now, CA_VALIDITY_DAYS)?;
                write_pair(&(cert_path, key_path), &ca.cert_pem, &ca.key_pem)?;
                return Ok((ca, Outcome::Reissued(reason)));
            }
            let outcome = if fix_mode(&key_path, PRIVATE)? {
                Outcome::Repaired
            } else {
                Outcome::Kept
            };
            Ok((CertificateAuthority { cert_pem, key_pem }, outcome))
        }
        // Without both halves the old CA cannot sign anything: start a new one.
        _ => {
            let ca = tls::create_ca(rng, &format!("uvmkit CA for {hostname}"), now, CA_VALIDITY_DAYS)?;
            write_pair(&(cert_path, key_path), &ca.cert_pem, &ca.key_pem)?;
            Ok((ca, Outcome::Created))
        }
    }
}

/// Decides whether the leaf certificate at `paths` (certificate, key) can be kept.
/// `names_changed` is the caller's extra check on a readable certificate.
fn leaf_outcome(
    paths: &(PathBuf, PathBuf),
    ca: &CertificateAuthority,
    ca_changed: bool,
    now: SystemTime,
    names_changed: impl Fn(&str) -> Result<bool, IdentityError>,
) -> Result<Outcome, IdentityError> {
    let (Some(cert), Some(key)) = (read_optional(&paths.0)?, read_optional(&paths.1)?) else {
        return Ok(Outcome::Created);
    };
    if ca_changed {
        return Ok(Outcome::Reissued(ReissueReason::CaChanged));
    }
    let reason = match leaf_problem(&cert, &key, ca, now, names_changed) {
        Ok(reason) => reason,
        Err(IdentityError::CertificateParse { .. } | IdentityError::PrivateKey { .. }) => {
            Some(ReissueReason::Unreadable)
        }
        Err(e) => return Err(e),
    };
    Ok(reason.map_or(Outcome::Kept, Outcome::Reissued))
}

fn leaf_problem(
    cert: &str,
    key: &str,
    ca: &CertificateAuthority,
    now: SystemTime,
    names_changed: impl Fn(&str) -> Result<bool, IdentityError>,
) -> Result<Option<ReissueReason>, IdentityError> {
    Ok(if !tls::key_matches_cert(cert, key)? {
        Some(ReissueReason::KeyMismatch)
    } else if !tls::is_issued_by(cert, &ca.cert_pem)? {
        Some(ReissueReason::NotIssuedByCa)
    } else if let Some(reason) = {
        let (not_before, not_after) = tls::validity_period(cert)?;
        validity_problem(not_before, not_after, now)
    } {
        Some(reason)
    } else if names_changed(cert)? {
        Some(ReissueReason::NamesChanged)
    } else {
        None
    })
}

/// Writes a certificate and its key. The key goes first: after a crash between the two the
/// next boot finds a key that does not match the certificate and reissues both.
fn write_pair(paths: &(PathBuf, PathBuf), cert_pem: &str, key_pem: &str) -> Result<(), IdentityError> {
    write_atomic(&paths.1, key_pem.as_bytes(), PRIVATE)?;
    write_atomic(&paths.0, cert_pem.as_bytes(), PUBLIC)
}

/// Replaces `path` with `contents` atomically: a temporary file in the same directory created
/// with `mode` (so a private key is never readable by others, even briefly), fsync, rename over
/// `path`, fsync of the directory so the rename survives a power cut.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), IdentityError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = with_suffix(&dir.join(format!(".{}", file_name(path))), ".tmp");
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("remove the stale", &tmp)(e)),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    // The umask may have removed bits from `mode`; public files must stay readable.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(io_err("set the mode of", &tmp))?;
    file.write_all(contents).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync the directory", dir))
}

/// Creates `dir` with mode 0700 if missing, or tightens an existing one to 0700.
fn private_dir(dir: &Path) -> Result<(), IdentityError> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
        .map_err(|source| IdentityError::Io {
            action: "create the directory",
            path: dir.to_owned(),
            source,
        })?;
    fix_mode(dir, PRIVATE_DIR)?;
    Ok(())
}

/// Sets the permission bits of `path` to `mode` if they differ; returns whether they did.
fn fix_mode(path: &Path, mode: u32) -> Result<bool, IdentityError> {
    let io_err = |action| {
        move |source| IdentityError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    };
    let current = fs::metadata(path)
        .map_err(io_err("read the mode of"))?
        .permissions()
        .mode()
        & 0o7777;
    if current == mode {
        return Ok(false);
    }
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(io_err("set the mode of"))?;
    Ok(true)
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> IdentityError {
    let path = path.to_owned();
    move |source| IdentityError::Io { action, path, source }
}

/// The file's contents, or `None` when it does not exist. Invalid UTF-8 is kept lossily so the
/// parsers report it as unreadable.
fn read_optional(path: &Path) -> Result<Option<String>, IdentityError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, UNIX_EPOCH};

    const NOW: Duration = Duration::from_secs(1_700_000_000);

    /// A scratch directory removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("uvmkit-identity-store-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            Scratch(dir.join("identity"))
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    const FILES: [&str; 13] = [
        "ssh/ssh_host_ed25519_key",
        "ssh/ssh_host_ed25519_key.pub",
        "ssh/ssh_host_ecdsa_key",
        "ssh/ssh_host_ecdsa_key.pub",
        "tls/ca.pem",
        "tls/ca-key.pem",
        "tls/server-cert.pem",
        "tls/server-key.pem",
        "tls/client/ca.pem",
        "tls/client/cert.pem",
        "tls/client/key.pem",
        "ssh",
        "tls/client",
    ];

    fn snapshot(dir: &Path) -> BTreeMap<&'static str, (Vec<u8>, u32)> {
        FILES
            .iter()
            .filter(|f| dir.join(f).is_file())
            .map(|f| {
                let p = dir.join(f);
                (
                    *f,
                    (
                        fs::read(&p).unwrap(),
                        fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
                    ),
                )
            })
            .collect()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn names(ip: [u8; 4]) -> ServerNames {
        ServerNames::for_host("vm", [IpAddr::V4(Ipv4Addr::from(ip))])
    }

    fn changed(
        a: &BTreeMap<&'static str, (Vec<u8>, u32)>,
        b: &BTreeMap<&'static str, (Vec<u8>, u32)>,
    ) -> Vec<&'static str> {
        FILES.iter().copied().filter(|f| a.get(f) != b.get(f)).collect()
    }

    #[test]
    fn first_boot_creates_everything_with_private_modes() {
        let scratch = Scratch::new();
        let dir = &scratch.0;
        let report = ensure_identity(dir, "vm", &names([10, 0, 2, 15]), UNIX_EPOCH + NOW).unwrap();
        assert_eq!(report.ssh_ed25519, Outcome::Created);
        assert_eq!(report.ssh_ecdsa, Outcome::Created);
        assert_eq!(report.ca, Outcome::Created);
        assert_eq!(report.server_cert, Outcome::Created);
        assert_eq!(report.client_cert, Outcome::Created);
        assert!(report.changed());
        assert!(
            report.to_string().contains("ssh ed25519 host key created (SHA256:"),
            "{report}"
        );
        for private in [
            "ssh/ssh_host_ed25519_key",
            "ssh/ssh_host_ecdsa_key",
            "tls/ca-key.pem",
            "tls/server-key.pem",
        ] {
            assert_eq!(mode(&dir.join(private)), 0o600, "{private}");
        }
        assert_eq!(mode(&dir.join("tls/client/key.pem")), 0o600);
        assert_eq!(mode(&dir.join("tls/ca.pem")), 0o644);
        assert_eq!(mode(&dir.join("ssh/ssh_host_ed25519_key.pub")), 0o644);
        for d in ["", "ssh", "tls", "tls/client"] {
            assert_eq!(mode(&dir.join(d)), 0o700, "{d}");
        }
        let pubkey = fs::read_to_string(dir.join("ssh/ssh_host_ed25519_key.pub")).unwrap();
        assert!(pubkey.starts_with("ssh-ed25519 ") && pubkey.ends_with(" root@vm\n"));
        assert_eq!(fingerprint_sha256(&pubkey).unwrap(), report.ssh_ed25519_fingerprint);
        assert_eq!(
            fs::read(dir.join("tls/ca.pem")).unwrap(),
            fs::read(dir.join("tls/client/ca.pem")).unwrap()
        );
        // No temporary files are left behind.
        for d in ["ssh", "tls", "tls/client"] {
            let leftovers: Vec<_> = fs::read_dir(dir.join(d))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tmp"))
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
        }
    }

    #[test]
    fn second_boot_keeps_every_file() {
        let scratch = Scratch::new();
        let dir = &scratch.0;
        let first = ensure_identity(dir, "vm", &names([10, 0, 2, 15]), UNIX_EPOCH + NOW).unwrap();
        let before = snapshot(dir);
        let later = UNIX_EPOCH + NOW + Duration::from_secs(86_400 * 30);
        let second = ensure_identity(dir, "vm", &names([10, 0, 2, 15]), later).unwrap();
        assert!(!second.changed(), "{second}");
        assert_eq!(second.ssh_ed25519_fingerprint, first.ssh_ed25519_fingerprint);
        assert_eq!(second.ssh_ecdsa_fingerprint, first.ssh_ecdsa_fingerprint);
        assert_eq!(snapshot(dir), before);
    }

    #[test]
    fn a_new_address_reissues_only_the_server_certificate() {
        let scratch = Scratch::new();
        let dir = &scratch.0;
        ensure_identity(dir, "vm", &names([10, 0, 2, 15]), UNIX_EPOCH + NOW).unwrap();
        let before = snapshot(dir);
        let report = ensure_identity(dir, "vm", &names([192, 168, 1, 7]), UNIX_EPOCH + NOW).unwrap();
        assert_eq!(report.server_cert, Outcome::Reissued(ReissueReason::NamesChanged));
        assert_eq!(
            [report.ssh_ed25519, report.ssh_ecdsa, report.ca, report.client_cert],
            [Outcome::Kept; 4]
        );
        assert_eq!(
            changed(&before, &snapshot(dir)),
            ["tls/server-cert.pem", "tls/server-key.pem"]
        );
        let sans = tls::cert_sans(&fs::read_to_string(dir.join("tls/server-cert.pem")).unwrap()).unwrap();
        assert!(sans.ips.contains(&IpAddr::V4(Ipv4Addr::new(192, 168, 1, 7))));
        assert!(!sans.ips.contains(&IpAddr::V4(Ipv4Addr::new(10, 0, 2, 15))));
    }

    #[test]
    fn an_expired_server_certificate_is_reissued() {
        let scratch = Scratch::new();
        let dir = &scratch.0;
        ensure_identity(dir, "vm", &names([10, 0, 2, 15]), UNIX_EPOCH + NOW).unwrap();
        let later = UNIX_EPOCH + NOW + Duration::from_secs(86_400 * (LEAF_VALIDITY_DAYS as u64 + 1));
        let report = ensure_identity(dir, "vm", &names([10, 0, 2, 15]), later).unwrap();
        let expired = Outcome::Reissued(ReissueReason::Expired {
            not_after: UNIX_EPOCH + NOW + Duration::from_secs(86_400 * LEAF_VALIDITY_DAYS as u64),
        });
        assert_eq!(report.server_cert, expired, "{report}");
        assert_eq!(report.client_cert, expired, "{report}");
        assert_eq!(report.ca, Outcome::Kept);
    }

    #[test]
    fn validity_is_checked_both_ways_with_a_renewal_margin() {
        let day = Duration::from_secs(86_400);
        let now = UNIX_EPOCH + NOW;
        let (from, to) = (now - day, now + 365 * day);
        assert_eq!(validity_problem(from, to, now), None);
        assert_eq!(
            validity_problem(now + day, to, now),
            Some(ReissueReason::NotYetValid { not_before: now + day })
        );
        assert_eq!(
            validity_problem(from, now - day, now),
            Some(ReissueReason::Expired { not_after: now - day })
        );
        assert_eq!(
            validity_problem(from, now + 10 * day, now),
            Some(ReissueReason::ExpiresSoon {
                not_after: now + 10 * day
            })
        );
        assert_eq!(validity_problem(from, now + (RENEWAL_MARGIN_DAYS + 1) * day, now), None);
        // The log line names the dates.
        let text = ReissueReason::NotYetValid { not_before: now + day }.to_string();
        let expected = der::DateTime::from_system_time(now + day).unwrap().to_string();
        assert!(text.contains(&expected) && text.contains("clock was ahead"), "{text}");
    }

    #[test]
    fn a_ca_made_under_a_clock_that_was_ahead_is_renewed_with_its_leaves() {
        let scratch = Scratch::new();
        let dir = &scratch.0;
        let ahead = UNIX_EPOCH + NOW + Duration::from_secs(86_400 * 400);
        ensure_identity(dir, "vm", &names([10, 0, 2, 15]), ahead).unwrap();
        let before = snapshot(dir);
        let now = UNIX_EPOCH + NOW;
        // notBefore is the creation time less the allowance for clock skew: still ahead of now.
        let made_ahead = tls::validity_period(&fs::read_to_string(dir.join("tls/ca.pem")).unwrap())
            .unwrap()
            .0;
        assert!(made_ahead > now);
        let report = ensure_identity(dir, "vm", &names([10, 0, 2, 15]), now).unwrap();
        assert_eq!(
            report.ca,
            Outcome::Reissued(ReissueReason::NotYetValid { not_before: made_ahead })
        );
        assert_eq!(report.server_cert, Outcome::Reissued(ReissueReason::CaChanged));
        assert_eq!(report.client_cert, Outcome::Reissued(ReissueReason::CaChanged));
        assert_eq!([report.ssh_ed25519, report.ssh_ecdsa], [Outcome::Kept; 2]);
        let ca = fs::read_to_string(dir.join("tls/ca.pem")).unwrap();
        let (from, to) = tls::validity_period(&ca).unwrap();
        assert!(from <= now && validity_problem(from, to, now).is_none());
        assert_ne!(snapshot(dir).get("tls/ca.pem"), before.get("tls/ca.pem"));
        for leaf in ["tls/server-cert.pem", "tls/client/cert.pem"] {
            let pem = fs::read_to_string(dir.join(leaf)).unwrap();
            assert!(tls::is_issued_by(&pem, &ca).unwrap(), "{leaf}");
            let (from, to) = tls::validity_period(&pem).unwrap();
            assert!(validity_problem(from, to, now).is_none(), "{leaf}");
        }
        // Kept from then on.
        assert!(!ensure_identity(dir, "vm", &names([10, 0, 2, 15]), now)
            .unwrap()
            .changed());
    }

    #[test]
    fn a_ca_near_its_end_is_renewed_and_a_leaf_made_ahead_is_reissued() {
        let scratch = Scratch::new();
        let dir = &scratch.0;
        let day = Duration::from_secs(86_400);
        let made = UNIX_EPOCH + NOW;
        ensure_identity(dir, "vm", &names([10, 0, 2, 15]), made).unwrap();
        // Ten days before the CA runs out (the leaves expired long before and were reissued).
        let late = made + (CA_VALIDITY_DAYS - 10) * day;
        let report = ensure_identity(dir, "vm", &names([10, 0, 2, 15]), late).unwrap();
        assert_eq!(
            report.ca,
            Outcome::Reissued(ReissueReason::ExpiresSoon {
                not_after: made + CA_VALIDITY_DAYS * day
            }),
            "{report}"
        );
        assert_eq!(report.server_cert, Outcome::Reissued(ReissueReason::CaChanged));
        // A client certificate issued while the clock was ahead (the CA itself is fine).
        let dir = &dir.join("second");
        ensure_identity(dir, "vm", &names([10, 0, 2, 15]), made).unwrap();
        fs::remove_file(dir.join("tls/client/cert.pem")).unwrap();
        ensure_identity(dir, "vm", &names([10, 0, 2, 15]), made + 5 * day).unwrap();
        let client = fs::read_to_string(dir.join("tls/client/cert.pem")).unwrap();
        let made_ahead = tls::validity_period(&client).unwrap().0;
        assert!(made_ahead > made + day);
        let report = ensure_identity(dir, "vm", &names([10, 0, 2, 15]), made + day).unwrap();
        assert_eq!(report.ca, Outcome::Kept);
        assert_eq!(report.server_cert, Outcome::Kept);
        assert_eq!(
            report.client_cert,
            Outcome::Reissued(ReissueReason::NotYetValid { not_before: made_ahead })
        );
    }

    #[test]
    fn missing_and_damaged_derived_files_are_repaired() {
        let scratch = Scratch::new();
        let dir = &scratch.0;
        ensure_identity(dir, "vm", &names([10, 0, 2, 15]), UNIX_EPOCH + NOW).unwrap();
        let before = snapshot(dir);
        fs::remove_file(dir.join("ssh/ssh_host_ecdsa_key.pub")).unwrap();
        fs::set_permissions(dir.join("ssh/ssh_host_ed25519_key"), Permissions::from_mode(0o644)).unwrap();
        fs::remove_file(dir.join("tls/client/ca.pem")).unwrap();
        fs::write(dir.join("tls/server-cert.pem"), "garbage").unwrap();
        let report = ensure_identity(dir, "vm", &names([10, 0, 2, 15]), UNIX_EPOCH + NOW).unwrap();
        assert_eq!(report.ssh_ecdsa, Outcome::Repaired);
        assert_eq!(report.ssh_ed25519, Outcome::Repaired);
        assert_eq!(report.client_cert, Outcome::Repaired);
        assert_eq!(report.server_cert, Outcome::Reissued(ReissueReason::Unreadable));
        assert_eq!(report.ca, Outcome::Kept);
        let after = snapshot(dir);
        assert_eq!(changed(&before, &after), ["tls/server-cert.pem", "tls/server-key.pem"]);
    }

    #[test]
    fn a_lost_ca_key_means_a_new_ca_and_new_leaves_but_the_same_ssh_keys() {
        let scratch = Scratch::new();
        let dir = &scratch.0;
        ensure_identity(dir, "vm", &names([10, 0, 2, 15]), UNIX_EPOCH + NOW).unwrap();
        let before = snapshot(dir);
        fs::remove_file(dir.join("tls/ca-key.pem")).unwrap();
        let report = ensure_identity(dir, "vm", &names([10, 0, 2, 15]), UNIX_EPOCH + NOW).unwrap();
        assert_eq!(report.ca, Outcome::Created);
        assert_eq!(report.server_cert, Outcome::Reissued(ReissueReason::CaChanged));
        assert_eq!(report.client_cert, Outcome::Reissued(ReissueReason::CaChanged));
        let after = snapshot(dir);
        let changed = changed(&before, &after);
        assert!(changed.iter().all(|f| f.starts_with("tls/")), "{changed:?}");
        assert_eq!(changed.len(), 7);
    }

    #[test]
    fn a_leaf_signed_by_another_ca_is_reissued() {
        let scratch = Scratch::new();
        let dir = &scratch.0;
        ensure_identity(dir, "vm", &names([10, 0, 2, 15]), UNIX_EPOCH + NOW).unwrap();
        let stranger = tls::create_ca(&mut OsRng, "uvmkit CA for vm", UNIX_EPOCH + NOW, 10).unwrap();
        let foreign = tls::issue_client_cert(&mut OsRng, &stranger, "client", UNIX_EPOCH + NOW, 10).unwrap();
        fs::write(dir.join("tls/client/cert.pem"), foreign.cert_pem).unwrap();
        fs::write(dir.join("tls/client/key.pem"), foreign.key_pem).unwrap();
        let report = ensure_identity(dir, "vm", &names([10, 0, 2, 15]), UNIX_EPOCH + NOW).unwrap();
        assert_eq!(report.client_cert, Outcome::Reissued(ReissueReason::NotIssuedByCa));
    }

    #[test]
    fn damaged_keys_users_depend_on_are_errors_not_silent_replacements() {
        let scratch = Scratch::new();
        let dir = &scratch.0;
        ensure_identity(dir, "vm", &names([10, 0, 2, 15]), UNIX_EPOCH + NOW).unwrap();
        fs::write(dir.join("ssh/ssh_host_ed25519_key"), "not a key").unwrap();
        let err = ensure_identity(dir, "vm", &names([10, 0, 2, 15]), UNIX_EPOCH + NOW).unwrap_err();
        assert!(matches!(err, IdentityError::SshPrivateKey { .. }));
        assert!(
            err.to_string().contains("ssh_host_ed25519_key") && err.to_string().contains("delete it"),
            "{err}"
        );
        assert_eq!(
            fs::read_to_string(dir.join("ssh/ssh_host_ed25519_key")).unwrap(),
            "not a key"
        );

        fs::remove_file(dir.join("ssh/ssh_host_ed25519_key")).unwrap();
        let other = tls::create_ca(&mut OsRng, "x", UNIX_EPOCH + NOW, 10).unwrap();
        fs::write(dir.join("tls/ca-key.pem"), other.key_pem).unwrap();
        let err = ensure_identity(dir, "vm", &names([10, 0, 2, 15]), UNIX_EPOCH + NOW).unwrap_err();
        assert!(matches!(err, IdentityError::CaKeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("ca-key.pem"), "{err}");
    }

    #[test]
    fn write_atomic_replaces_contents_and_mode() {
        let scratch = Scratch::new();
        fs::create_dir_all(&scratch.0).unwrap();
        let path = scratch.0.join("f");
        write_atomic(&path, b"one", PUBLIC).unwrap();
        write_atomic(&path, b"two", PRIVATE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(mode(&path), PRIVATE);
        let err = write_atomic(&scratch.0.join("missing/f"), b"x", PUBLIC).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
