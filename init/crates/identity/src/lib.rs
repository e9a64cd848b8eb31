//! First-boot identity of a uvmkit Docker host: SSH host keys and the TLS material `dockerd
//! --tlsverify` needs (a private CA, a server certificate naming the VM, and a client bundle).
//!
//! Everything is pure Rust (RustCrypto) so the static musl init can link it without a C
//! toolchain. Keys are ed25519 and ECDSA P-256 for SSH and ECDSA P-256 for every TLS key: a
//! P-256 key takes microseconds to generate, where the RSA 4096 keys of older Docker VMs took
//! seconds of first-boot time.
//!
//! - [`ssh`]: OpenSSH host key pairs and their `SHA256:` fingerprints.
//! - [`tls`]: the CA, server and client certificates (X.509 v3, RFC 5280 profile).
//! - [`store`]: [`ensure_identity`], the idempotent flow over a directory on the data disk.

#![deny(missing_docs)]

pub mod ssh;
pub mod store;
pub mod tls;

use std::path::PathBuf;

pub use rand_core::CryptoRngCore;
pub use ssh::{fingerprint_sha256, generate_host_keys, HostKeys};
pub use store::{
    ensure_identity, ensure_ssh_host_keys, ensure_tls, IdentityReport, Outcome, ReissueReason, SshReport, TlsReport,
};
pub use tls::{
    cert_fingerprint_sha256, cert_sans, create_ca, issue_client_cert, issue_server_cert, read_certificates,
    CertificateAuthority, IssuedCert, PemCertificate, ServerNames,
};

/// What went wrong while creating, reading or storing the identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// ssh-key could not generate or encode a host key.
    #[error("cannot generate the {algorithm} SSH host key: {source}")]
    SshKey {
        /// The key algorithm, for example `ed25519`.
        algorithm: &'static str,
        /// The underlying ssh-key error.
        source: ssh_key::Error,
    },
    /// A line given as an OpenSSH public key could not be parsed.
    #[error("not an OpenSSH public key line ({source}); expected \"ssh-ed25519 AAAA... comment\"")]
    SshPublicKey {
        /// The underlying ssh-key error.
        source: ssh_key::Error,
    },
    /// An existing SSH host private key on the data disk cannot be read as an OpenSSH key.
    #[error(
        "{} is not a readable OpenSSH private key ({source}); restore it from a backup, or delete it \
         to have a new host key generated (SSH clients will then warn about the changed key)",
        path.display()
    )]
    SshPrivateKey {
        /// The key file.
        path: PathBuf,
        /// The underlying ssh-key error.
        source: ssh_key::Error,
    },
    /// The X.509 builder failed (encoding or signing).
    #[error("cannot build the {what} certificate: {source}")]
    Certificate {
        /// Which certificate: `CA`, `server` or `client`.
        what: &'static str,
        /// The underlying x509-cert error.
        source: x509_cert::builder::Error,
    },
    /// A PEM certificate could not be parsed.
    #[error("cannot parse the {what} certificate as a PEM X.509 certificate: {source}")]
    CertificateParse {
        /// Which certificate, or the file it came from.
        what: String,
        /// The underlying DER/PEM error.
        source: der::Error,
    },
    /// A PEM private key could not be parsed as a P-256 PKCS#8 key.
    #[error("cannot parse the {what} private key (expected an ECDSA P-256 key in PKCS#8 PEM): {source}")]
    PrivateKey {
        /// Which key, or the file it came from.
        what: String,
        /// The underlying PKCS#8 error.
        source: p256::pkcs8::Error,
    },
    /// A private key could not be encoded as PKCS#8 PEM.
    #[error("cannot encode the {what} private key as PKCS#8 PEM: {source}")]
    PrivateKeyEncode {
        /// Which key.
        what: &'static str,
        /// The underlying PKCS#8 error.
        source: p256::pkcs8::Error,
    },
    /// The CA private key does not belong to the CA certificate.
    #[error(
        "the CA private key {key} does not belong to the CA certificate {cert}; restore the matching \
         pair, or delete both to create a new CA (clients must then fetch the new client bundle)"
    )]
    CaKeyMismatch {
        /// The CA certificate file (or `CA` when not read from a file).
        cert: String,
        /// The CA key file (or `CA` when not read from a file).
        key: String,
    },
    /// A name cannot go into a certificate (DNS names must be ASCII, IA5String).
    #[error("{name:?} cannot be put in a certificate as a {kind}: {source}")]
    Name {
        /// `DNS name` or `common name`.
        kind: &'static str,
        /// The offending name.
        name: String,
        /// The underlying DER error.
        source: der::Error,
    },
    /// A validity time is outside what X.509 can express (before 1970 or after 9999).
    #[error("the certificate validity time {what} cannot be encoded in X.509 ({source}); check the system clock")]
    Time {
        /// `notBefore` or `notAfter`.
        what: &'static str,
        /// The underlying DER error.
        source: der::Error,
    },
    /// A certificate or key could not be DER/PEM encoded.
    #[error("cannot encode the {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The underlying DER error.
        source: der::Error,
    },
    /// A file or directory on the data disk could not be read, written or created.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was attempted, for example `write`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
}
