//! OpenSSH host keys: generation in the formats sshd and ssh-keygen use, and fingerprints.
//!
//! Private keys are written in the `openssh-key-v1` format (OpenSSH `PROTOCOL.key`), unencrypted,
//! which is what `ssh-keygen -t ed25519 -N ''` produces; public keys are single
//! `ALGORITHM BASE64 COMMENT` lines (RFC 4253 §6.6 key blobs, RFC 8709 for ed25519, RFC 5656
//! for ECDSA).

use rand_core::CryptoRngCore;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, LineEnding, PrivateKey, PublicKey};

use crate::IdentityError;

/// The two SSH host key pairs of a VM, as file contents.
#[derive(Clone, PartialEq, Eq)]
pub struct HostKeys {
    /// ed25519 private key, OpenSSH PEM (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    pub ed25519_private: String,
    /// ed25519 public key line, `ssh-ed25519 AAAA... COMMENT`.
    pub ed25519_public: String,
    /// ECDSA P-256 private key, OpenSSH PEM.
    pub ecdsa_private: String,
    /// ECDSA P-256 public key line, `ecdsa-sha2-nistp256 AAAA... COMMENT`.
    pub ecdsa_public: String,
}

impl std::fmt::Debug for HostKeys {
    // Private keys must never reach a boot log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKeys")
            .field("ed25519_public", &self.ed25519_public)
            .field("ecdsa_public", &self.ecdsa_public)
            .finish_non_exhaustive()
    }
}

/// A host key algorithm uvmkit generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKeyKind {
    /// ed25519 (RFC 8709).
    Ed25519,
    /// ECDSA over NIST P-256 (RFC 5656).
    EcdsaP256,
}

impl HostKeyKind {
    /// Short name for messages and logs.
    pub fn name(self) -> &'static str {
        match self {
            HostKeyKind::Ed25519 => "ed25519",
            HostKeyKind::EcdsaP256 => "ecdsa",
        }
    }

    fn algorithm(self) -> Algorithm {
        match self {
            HostKeyKind::Ed25519 => Algorithm::Ed25519,
            HostKeyKind::EcdsaP256 => Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
        }
    }
}

/// One generated key pair: OpenSSH private PEM and public line.
#[derive(Clone, PartialEq, Eq)]
pub struct HostKeyPair {
    /// OpenSSH private key PEM, ending in a newline.
    pub private: String,
    /// Public key line without a trailing newline.
    pub public: String,
}

/// Generates ed25519 and ECDSA P-256 host keys whose public lines end in `comment`
/// (conventionally `root@HOSTNAME`).
pub fn generate_host_keys(rng: &mut impl CryptoRngCore, comment: &str) -> Result<HostKeys, IdentityError> {
    let ed25519 = generate_host_key(rng, HostKeyKind::Ed25519, comment)?;
    let ecdsa = generate_host_key(rng, HostKeyKind::EcdsaP256, comment)?;
    Ok(HostKeys {
        ed25519_private: ed25519.private,
        ed25519_public: ed25519.public,
        ecdsa_private: ecdsa.private,
        ecdsa_public: ecdsa.public,
    })
}

/// Generates one host key pair of the given kind.
pub fn generate_host_key(
    rng: &mut impl CryptoRngCore,
    kind: HostKeyKind,
    comment: &str,
) -> Result<HostKeyPair, IdentityError> {
    let err = |source| IdentityError::SshKey {
        algorithm: kind.name(),
        source,
    };
    let mut key = PrivateKey::random(rng, kind.algorithm()).map_err(err)?;
    key.set_comment(comment);
    let private = key.to_openssh(LineEnding::LF).map_err(err)?.to_string();
    let public = key.public_key().to_openssh().map_err(err)?;
    Ok(HostKeyPair { private, public })
}

/// The public key line (with the key's comment) of an OpenSSH private key PEM.
pub fn public_line_of_private(private_pem: &str) -> Result<String, ssh_key::Error> {
    PrivateKey::from_openssh(private_pem)?.public_key().to_openssh()
}

/// Whether two public key lines carry the same key, whatever their comments.
pub fn same_public_key(a: &str, b: &str) -> bool {
    match (PublicKey::from_openssh(a.trim()), PublicKey::from_openssh(b.trim())) {
        (Ok(a), Ok(b)) => a.key_data() == b.key_data(),
        _ => false,
    }
}

/// The SHA-256 fingerprint of a public key line, `SHA256:` and unpadded base64, exactly as
/// `ssh-keygen -l` prints it.
pub fn fingerprint_sha256(public_line: &str) -> Result<String, IdentityError> {
    let key = PublicKey::from_openssh(public_line.trim()).map_err(|source| IdentityError::SshPublicKey { source })?;
    Ok(key.fingerprint(HashAlg::Sha256).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn keys_round_trip_through_the_openssh_formats() {
        let keys = generate_host_keys(&mut OsRng, "root@uvm").unwrap();
        assert!(keys.ed25519_public.starts_with("ssh-ed25519 AAAA"));
        assert!(keys.ed25519_public.ends_with(" root@uvm"));
        assert!(keys.ecdsa_public.starts_with("ecdsa-sha2-nistp256 AAAA"));
        assert!(keys
            .ed25519_private
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        assert!(keys.ecdsa_private.ends_with("-----END OPENSSH PRIVATE KEY-----\n"));
        assert_eq!(
            public_line_of_private(&keys.ed25519_private).unwrap(),
            keys.ed25519_public
        );
        assert_eq!(public_line_of_private(&keys.ecdsa_private).unwrap(), keys.ecdsa_public);
        assert!(!format!("{keys:?}").contains("PRIVATE"));
    }

    #[test]
    fn fingerprint_ignores_comment_and_differs_between_keys() {
        let a = generate_host_key(&mut OsRng, HostKeyKind::Ed25519, "a").unwrap();
        let b = generate_host_key(&mut OsRng, HostKeyKind::Ed25519, "b").unwrap();
        let fa = fingerprint_sha256(&a.public).unwrap();
        assert!(fa.starts_with("SHA256:") && fa.len() == 7 + 43, "{fa}");
        let recommented = a.public.replace(" a", " other");
        assert_eq!(fingerprint_sha256(&recommented).unwrap(), fa);
        assert!(same_public_key(&a.public, &recommented));
        assert_ne!(fingerprint_sha256(&b.public).unwrap(), fa);
        assert!(!same_public_key(&a.public, &b.public));
    }

    #[test]
    fn garbage_public_line_is_an_error() {
        let err = fingerprint_sha256("ssh-ed25519 not-base64").unwrap_err();
        assert!(err.to_string().contains("OpenSSH public key"), "{err}");
    }
}
