//! Checking the OpenPGP signature of an `InRelease` file: a cleartext-signed message
//! (RFC 9580 section 7, "Cleartext Signature Framework") wrapping the suite's Release text.
//!
//! The rule is apt's: the file must be one cleartext-signed message with nothing around it;
//! at least one signature must verify with a key from the keyring; and a signature made by a
//! key from the keyring that does *not* verify rejects the file (the text was changed).
//! Signatures by other keys are ignored, as are signatures over MD5, SHA-1 or RIPEMD-160
//! digests. Key expiry and revocation are not evaluated: they depend on the current time, and
//! the keyring is chosen by the image author.

use std::fmt;

use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{PublicKey, PublicSubkey, Signature};
use pgp::types::KeyDetails;

/// The Debian archive keyring (`debian-archive-keyring`), embedded at build time.
const DEBIAN_ARCHIVE_KEYRING: &[u8] = include_bytes!("../keys/debian-archive-keyring.gpg");

/// Errors from loading keys or checking a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The keyring bytes are not OpenPGP public keys.
    #[error("cannot read the keyring: {0}; expected binary (.gpg) or ASCII-armored (.asc) OpenPGP public keys")]
    BadKeyring(String),
    /// The keyring holds no usable key.
    #[error("the keyring holds no usable public key")]
    EmptyKeyring,
    /// The data is not a cleartext-signed message.
    #[error("InRelease is not a cleartext-signed OpenPGP message ({0}); the mirror may have served an error page or an unsigned Release")]
    NotSigned(String),
    /// The message carries no signature at all.
    #[error("InRelease carries no signature")]
    NoSignature,
    /// No signature was made by a key in the keyring.
    #[error("InRelease is signed only by keys not in the keyring ({}); add the suite's signing key to the image's keyring", key_ids.join(", "))]
    UnknownKey {
        /// The issuers of the signatures, as hex fingerprints or key ids.
        key_ids: Vec<String>,
    },
    /// A signature by a key in the keyring does not match the text.
    #[error(
        "InRelease signature by {key} does not verify: the file was modified after signing or is corrupt ({reason})"
    )]
    BadSignature {
        /// The signing key's fingerprint and user id.
        key: String,
        /// What the OpenPGP library reported.
        reason: String,
    },
}

/// A key that may make signatures: a primary key or a signing subkey whose binding verified.
#[derive(Clone)]
enum VerifyingKey {
    Primary(PublicKey),
    Subkey(PublicSubkey),
}

impl VerifyingKey {
    fn verify(&self, sig: &Signature, data: &[u8]) -> pgp::errors::Result<()> {
        match self {
            VerifyingKey::Primary(k) => sig.verify(k, data),
            VerifyingKey::Subkey(k) => sig.verify(k, data),
        }
    }

    fn fingerprint(&self) -> pgp::types::Fingerprint {
        match self {
            VerifyingKey::Primary(k) => k.fingerprint(),
            VerifyingKey::Subkey(k) => k.fingerprint(),
        }
    }

    fn key_id(&self) -> pgp::types::KeyId {
        match self {
            VerifyingKey::Primary(k) => k.legacy_key_id(),
            VerifyingKey::Subkey(k) => k.legacy_key_id(),
        }
    }
}

/// One signing-capable key and the certificate it belongs to.
#[derive(Clone)]
struct KeyEntry {
    key: VerifyingKey,
    /// `FINGERPRINT (user id)` of the certificate, for messages.
    owner: String,
}

/// A set of OpenPGP public keys trusted to sign Release files.
#[derive(Clone, Default)]
pub struct Keyring {
    entries: Vec<KeyEntry>,
    certificates: Vec<String>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("certificates", &self.certificates)
            .finish()
    }
}

impl Keyring {
    /// Reads public keys from binary OpenPGP data (a `.gpg` keyring) or from one or more
    /// ASCII-armored blocks (`.asc`). Certificates whose self-signatures do not verify are
    /// skipped, and so are subkeys without a valid binding; no usable key at all is an error.
    pub fn from_bytes(data: &[u8]) -> Result<Keyring, SignatureError> {
        let mut certs = Vec::new();
        let bad = |e: pgp::errors::Error| SignatureError::BadKeyring(e.to_string());
        let text = std::str::from_utf8(data).ok();
        match text.filter(|t| t.trim_start().starts_with("-----BEGIN PGP")) {
            Some(text) => {
                const BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
                let mut blocks: Vec<&str> = text.match_indices(BEGIN).map(|(i, _)| &text[i..]).collect();
                if blocks.is_empty() {
                    return Err(SignatureError::BadKeyring(
                        "no PUBLIC KEY BLOCK in the armored data".into(),
                    ));
                }
                for block in blocks.iter_mut() {
                    let end = block[BEGIN.len()..]
                        .find(BEGIN)
                        .map(|i| i + BEGIN.len())
                        .unwrap_or(block.len());
                    let (keys, _) = SignedPublicKey::from_string_many(&block[..end]).map_err(bad)?;
                    for key in keys {
                        certs.push(key.map_err(bad)?);
                    }
                }
            }
            None => {
                for key in SignedPublicKey::from_bytes_many(data).map_err(bad)? {
                    certs.push(key.map_err(bad)?);
                }
            }
        }
        let mut ring = Keyring::default();
        for cert in certs {
            ring.add_certificate(cert);
        }
        if ring.entries.is_empty() {
            return Err(SignatureError::EmptyKeyring);
        }
        Ok(ring)
    }

    /// The Debian archive signing keys as shipped in Debian's `debian-archive-keyring`
    /// package (bullseye, bookworm and trixie archive, security and release keys).
    pub fn debian_archive() -> Keyring {
        // The embedded file is tested below; failing here would be a build defect.
        Keyring::from_bytes(DEBIAN_ARCHIVE_KEYRING).unwrap_or_default()
    }

    /// Adds the keys of `other`.
    pub fn extend(&mut self, other: Keyring) {
        self.entries.extend(other.entries);
        self.certificates.extend(other.certificates);
    }

    /// The certificates held, as `FINGERPRINT (user id)`.
    pub fn certificates(&self) -> &[String] {
        &self.certificates
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn add_certificate(&mut self, cert: SignedPublicKey) {
        if cert.details.verify_bindings(&cert.primary_key).is_err() {
            return;
        }
        let user = cert
            .details
            .users
            .first()
            .and_then(|u| u.id.as_str().map(str::to_string))
            .unwrap_or_default();
        let owner = format!("{:X} ({user})", cert.primary_key.fingerprint());
        self.entries.push(KeyEntry {
            key: VerifyingKey::Primary(cert.primary_key.clone()),
            owner: owner.clone(),
        });
        for sub in &cert.public_subkeys {
            let signs = sub.signatures.iter().any(|s| s.key_flags().sign());
            if signs && sub.verify_bindings(&cert.primary_key).is_ok() {
                self.entries.push(KeyEntry {
                    key: VerifyingKey::Subkey(sub.key.clone()),
                    owner: owner.clone(),
                });
            }
        }
        self.certificates.push(owner);
    }

    /// Keys that the signature names as its issuer.
    fn issuers_of<'a>(&'a self, sig: &'a Signature) -> impl Iterator<Item = &'a KeyEntry> + 'a {
        let fps = sig.issuer_fingerprint();
        let ids = sig.issuer_key_id();
        self.entries.iter().filter(move |e| {
            fps.iter().any(|fp| **fp == e.key.fingerprint()) || ids.iter().any(|id| **id == e.key.key_id())
        })
    }
}

/// Describes a signature's issuer for messages.
fn issuer_label(sig: &Signature) -> String {
    if let Some(fp) = sig.issuer_fingerprint().first() {
        return format!("{fp:X}");
    }
    match sig.issuer_key_id().first() {
        Some(id) => id.as_ref().iter().map(|b| format!("{b:02X}")).collect(),
        None => "an unnamed key".to_string(),
    }
}

/// Checks the signatures of an `InRelease` file against `keyring` and returns the signed
/// text (dash-escaping undone, `\n` line ends, ending with a newline), ready for
/// [`crate::Release::parse`].
pub fn verify_inrelease(data: &[u8], keyring: &Keyring) -> Result<String, SignatureError> {
    let text = std::str::from_utf8(data).map_err(|_| SignatureError::NotSigned("it is not UTF-8 text".into()))?;
    if !text.starts_with("-----BEGIN PGP SIGNED MESSAGE-----") {
        return Err(SignatureError::NotSigned(
            "it does not start with \"-----BEGIN PGP SIGNED MESSAGE-----\"".into(),
        ));
    }
    let (message, _) =
        CleartextSignedMessage::from_string(text).map_err(|e| SignatureError::NotSigned(e.to_string()))?;
    if message.signatures().is_empty() {
        return Err(SignatureError::NoSignature);
    }
    let signed = message.signed_text();
    let mut good = 0;
    let mut unknown = Vec::new();
    for sig in message.signatures() {
        let weak = matches!(
            sig.hash_alg(),
            Some(HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160) | None
        );
        let mut candidates = keyring.issuers_of(sig).peekable();
        if candidates.peek().is_none() {
            unknown.push(issuer_label(sig));
            continue;
        }
        let mut failure = None;
        let mut verified = false;
        for entry in candidates {
            match entry.key.verify(sig, signed.as_bytes()) {
                Ok(()) => {
                    verified = true;
                    break;
                }
                Err(e) => failure = Some((entry.owner.clone(), e.to_string())),
            }
        }
        match (verified, failure) {
            (true, _) if !weak => good += 1,
            (true, _) => unknown.push(format!("{} (weak digest, ignored)", issuer_label(sig))),
            (false, Some((key, reason))) => return Err(SignatureError::BadSignature { key, reason }),
            (false, None) => unknown.push(issuer_label(sig)),
        }
    }
    if good == 0 {
        return Err(SignatureError::UnknownKey { key_ids: unknown });
    }
    let mut out = signed.replace("\r\n", "\n");
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_debian_keyring_loads() {
        let ring = Keyring::debian_archive();
        assert!(!ring.is_empty());
        let certs = ring.certificates().join("\n");
        // Debian Stable Release Key (12/bookworm) and the bookworm archive key.
        assert!(certs.contains("4D64FEC119C2029067D6E791F8D2585B8783D481"), "{certs}");
        assert!(certs.contains("bookworm"), "{certs}");
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            Keyring::from_bytes(b"not a key"),
            Err(SignatureError::BadKeyring(_) | SignatureError::EmptyKeyring)
        ));
        let ring = Keyring::debian_archive();
        assert!(matches!(
            verify_inrelease(b"Origin: Debian\n", &ring),
            Err(SignatureError::NotSigned(_))
        ));
        assert!(matches!(
            verify_inrelease(
                b"junk\n-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nA: 1\n",
                &ring
            ),
            Err(SignatureError::NotSigned(_))
        ));
    }
}
