//! Checking the OpenPGP signature of an `InRelease` file: a cleartext-signed message
//! (RFC 9580 section 7, "Cleartext Signature Framework") wrapping the suite's Release text.
//!
//! The verdicts are the ones apt draws from `gpgv` (apt's `methods/gpgv.cc` reading gpgv's
//! status lines), so an archive apt accepts is accepted here and one it refuses is refused:
//!
//! - The file must be one cleartext-signed message with nothing around it.
//! - Each signature gets one [`Verdict`], in the order of gpgv's status keywords:
//!   - no key in the keyring has the issuer's fingerprint or key id: [`Verdict::UnknownKey`]
//!     (`NO_PUBKEY`);
//!   - the key is not usable at all: a primary key without a valid self-signature, a subkey
//!     without a valid binding signature by its primary key (RFC 9580 section 5.2.1, type
//!     0x18), a key created after the signature or in the future, a signature that is not
//!     of type 0x00/0x01, or of a version or algorithm the library cannot check:
//!     [`Verdict::Unusable`] (`ERRSIG`);
//!   - the signature does not match the text: [`Verdict::Bad`] (`BADSIG`), whatever the state
//!     of the key;
//!   - it matches, but the signing subkey is not marked for signing or carries no valid
//!     primary key binding ("back") signature (type 0x19), which gpg requires by default
//!     (`--require-cross-certification`): [`Verdict::Unusable`];
//!   - it matches, but the signature's own expiration time (subpacket 3) has passed:
//!     [`Verdict::ExpiredSignature`] (`EXPSIG`); the key's expiration time (subpacket 9 of the
//!     latest valid self-signature: the primary user id's, else the latest direct-key
//!     signature's for a primary key; the latest binding signature's for a subkey, which also
//!     expires with its primary key) has passed: [`Verdict::ExpiredKey`] (`EXPKEYSIG`); a
//!     valid revocation signature by the primary key exists for the key (type 0x20 for the
//!     certificate, which revokes its subkeys too, or 0x28 for the subkey), whatever its
//!     date or reason: [`Verdict::RevokedKey`] (`REVKEYSIG`). Expiry is judged against the
//!     current time, as gpgv does, not against the signature's creation time;
//!   - it matches over an MD5, SHA-1 or RIPEMD-160 digest, which apt marks "untrusted digest
//!     algorithm": [`Verdict::WeakDigest`]. An EdDSA or ECDSA signature over such a digest
//!     is not computed at all (RFC 9580 sections 5.2.3.3-4 forbid them and the library
//!     refuses them) and is weak whether it matches or not, where gpgv would call a
//!     non-matching one bad;
//!   - otherwise it is [`Verdict::Good`] (`GOODSIG`).
//! - The file is accepted when at least one signature is good and none is bad. Signatures by
//!   unknown, unusable, expired or revoked keys and weak ones neither count nor refuse the
//!   file: archives are signed by several keys so that a keyring lacking the newest (or
//!   holding only a newer) key still verifies them.
//!
//! Not checked, as gpgv 2.2 and apt 2.6 do not check them either: designated revokers
//! (subpacket 12; a revocation made by another key is not honoured), the cleartext `Hash:`
//! header against the signatures' digests, and minimum public-key sizes (apt 2.9 and later can
//! be configured with `APT::Key::Assert-Pubkey-Algo`). Every key in the keyring is trusted:
//! user id certifications by third parties are ignored.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::packet::{PublicKey, PublicSubkey, Signature, SignatureType, SubpacketData};
use pgp::types::{KeyDetails, Tag};

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
    /// Some signatures are by keys in the keyring, but none of them counts.
    #[error("InRelease has no valid signature: {}; update the keyring (a newer debian-archive-keyring) or set the image's `keyring`", signatures.join("; "))]
    NoValidSignature {
        /// Every signature's verdict, in file order.
        signatures: Vec<String>,
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

/// The key that made a signature, as found in the keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// Fingerprint of the key that made the signature (a subkey or the primary key), hex.
    pub key: String,
    /// Fingerprint of its certificate's primary key, hex.
    pub primary: String,
    /// The certificate's primary user id.
    pub user_id: String,
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.key, self.user_id)
    }
}

/// What one signature of a message is worth (see the module documentation for the rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Made by a valid key in the keyring over the text: it counts.
    Good(Signer),
    /// Made by a key in the keyring, but it does not match the text: the file is refused.
    Bad {
        /// The key the signature names.
        signer: Signer,
        /// What the OpenPGP library reported.
        reason: String,
    },
    /// No key in the keyring has the issuer's fingerprint or key id.
    UnknownKey {
        /// The issuer named by the signature, as a hex fingerprint or key id.
        issuer: String,
    },
    /// The key cannot make a good signature (see the module documentation).
    Unusable {
        /// The key the signature names.
        signer: Signer,
        /// Why it cannot.
        reason: String,
    },
    /// The signature's own expiration time has passed.
    ExpiredSignature {
        /// The key that made it.
        signer: Signer,
        /// When it expired, seconds since the Unix epoch.
        expired: u64,
    },
    /// The signing key (or its primary key) has expired.
    ExpiredKey {
        /// The key that made it.
        signer: Signer,
        /// When the key expired, seconds since the Unix epoch.
        expired: u64,
    },
    /// The signing key (or its primary key) has been revoked.
    RevokedKey(Signer),
    /// The signature uses a digest apt no longer trusts (MD5, SHA-1, RIPEMD-160).
    WeakDigest {
        /// The key that made it.
        signer: Signer,
        /// The digest algorithm.
        digest: String,
    },
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Good(s) => write!(f, "good signature by {s}"),
            Verdict::Bad { signer, reason } => write!(f, "bad signature by {signer} ({reason})"),
            Verdict::UnknownKey { issuer } => write!(f, "{issuer} is not in the keyring"),
            Verdict::Unusable { signer, reason } => write!(f, "{signer} cannot sign: {reason}"),
            Verdict::ExpiredSignature { signer, expired } => {
                write!(f, "signature by {signer} expired at {expired} (Unix time)")
            }
            Verdict::ExpiredKey { signer, expired } => write!(f, "key {signer} expired at {expired} (Unix time)"),
            Verdict::RevokedKey(s) => write!(f, "key {s} is revoked"),
            Verdict::WeakDigest { signer, digest } => {
                write!(f, "signature by {signer} uses the untrusted digest {digest}")
            }
        }
    }
}

/// A key of a certificate, with what its self-signatures say about it.
#[derive(Clone)]
struct KeyEntry {
    key: AnyKey,
    signer: Signer,
    created: u64,
    /// Absolute expiry time, seconds since the epoch.
    expires: Option<u64>,
    revoked: bool,
    /// Why the key cannot verify anything at all (gpg: "invalid key").
    invalid: Option<String>,
    /// Why a signature that verifies still does not count (gpg checks this after the
    /// cryptographic check: usage and cross-certification of signing subkeys).
    unusable: Option<String>,
}

/// A primary key or a subkey.
#[derive(Clone)]
enum AnyKey {
    Primary(PublicKey),
    Subkey(PublicSubkey),
}

impl AnyKey {
    fn verify(&self, sig: &Signature, data: &[u8]) -> pgp::errors::Result<()> {
        match self {
            AnyKey::Primary(k) => sig.verify(k, data),
            AnyKey::Subkey(k) => sig.verify(k, data),
        }
    }

    fn fingerprint(&self) -> pgp::types::Fingerprint {
        match self {
            AnyKey::Primary(k) => k.fingerprint(),
            AnyKey::Subkey(k) => k.fingerprint(),
        }
    }

    fn key_id(&self) -> pgp::types::KeyId {
        match self {
            AnyKey::Primary(k) => k.legacy_key_id(),
            AnyKey::Subkey(k) => k.legacy_key_id(),
        }
    }

    fn algorithm(&self) -> PublicKeyAlgorithm {
        match self {
            AnyKey::Primary(k) => k.algorithm(),
            AnyKey::Subkey(k) => k.algorithm(),
        }
    }
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

/// Creation time of a signature in seconds, 0 when it has none.
fn sig_created(sig: &Signature) -> u64 {
    sig.created().map(|t| u64::from(t.as_secs())).unwrap_or(0)
}

/// The latest of `sigs` by creation time (the last one listed among equals).
fn latest<'a>(sigs: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    sigs.fold(None, |best: Option<&Signature>, s| match best {
        Some(b) if sig_created(b) > sig_created(s) => Some(b),
        _ => Some(s),
    })
}

/// True when `sig` names `key` as its issuer, or names no issuer at all (RFC 9580 section
/// 5.2.3.12 makes the issuer subpackets optional; the check is then cryptographic only).
fn issued_by(sig: &Signature, key: &PublicKey) -> bool {
    let (fps, ids) = (sig.issuer_fingerprint(), sig.issuer_key_id());
    (fps.is_empty() && ids.is_empty())
        || fps.iter().any(|fp| **fp == key.fingerprint())
        || ids.iter().any(|id| **id == key.legacy_key_id())
}

/// The expiry time a self-signature gives a key created at `created` (RFC 9580 section
/// 5.2.3.13: seconds after the key's creation; 0 or absent means never).
fn expiry(sig: Option<&Signature>, created: u64) -> Option<u64> {
    let secs = sig?.key_expiration_time()?.as_secs();
    (secs != 0).then(|| created + u64::from(secs))
}

/// True when a binding signature lets the key sign: its key flags (RFC 9580 section
/// 5.2.3.29) say so, or, without a key flags subpacket, the algorithm can sign (gpg's rule).
fn may_sign(binding: &Signature, algorithm: PublicKeyAlgorithm) -> bool {
    let has_flags = binding.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    });
    if has_flags {
        return binding.key_flags().sign();
    }
    matches!(
        algorithm,
        PublicKeyAlgorithm::RSA
            | PublicKeyAlgorithm::RSASign
            | PublicKeyAlgorithm::DSA
            | PublicKeyAlgorithm::ECDSA
            | PublicKeyAlgorithm::EdDSALegacy
            | PublicKeyAlgorithm::Ed25519
            | PublicKeyAlgorithm::Ed448
    )
}

impl Keyring {
    /// Reads public keys from binary OpenPGP data (a `.gpg` keyring) or from one or more
    /// ASCII-armored blocks (`.asc`). Certificates the library cannot parse are skipped like
    /// gpgv skips them; certificates and subkeys whose self-signatures do not verify are kept
    /// but can make no good signature. No usable key at all is an error.
    pub fn from_bytes(data: &[u8]) -> Result<Keyring, SignatureError> {
        let mut certs = Vec::new();
        let mut first_error = None;
        let mut keep = |key: pgp::errors::Result<SignedPublicKey>| match key {
            Ok(k) => certs.push(k),
            Err(e) => {
                first_error.get_or_insert(e.to_string());
            }
        };
        let bad = |e: pgp::errors::Error| SignatureError::BadKeyring(e.to_string());
        let text = std::str::from_utf8(data).ok();
        match text.filter(|t| t.trim_start().starts_with("-----BEGIN PGP")) {
            Some(text) => {
                const BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
                let blocks: Vec<&str> = text.match_indices(BEGIN).map(|(i, _)| &text[i..]).collect();
                if blocks.is_empty() {
                    return Err(SignatureError::BadKeyring(
                        "no PUBLIC KEY BLOCK in the armored data".into(),
                    ));
                }
                for block in blocks {
                    let end = block[BEGIN.len()..]
                        .find(BEGIN)
                        .map(|i| i + BEGIN.len())
                        .unwrap_or(block.len());
                    let (keys, _) = SignedPublicKey::from_string_many(&block[..end]).map_err(bad)?;
                    keys.for_each(&mut keep);
                }
            }
            None => SignedPublicKey::from_bytes_many(data).map_err(bad)?.for_each(&mut keep),
        }
        if certs.is_empty() {
            return Err(match first_error {
                Some(e) => SignatureError::BadKeyring(e),
                None => SignatureError::EmptyKeyring,
            });
        }
        let mut ring = Keyring::default();
        for cert in &certs {
            ring.add_certificate(cert);
        }
        if ring.is_empty() {
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

    /// True when no key could make a good signature.
    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(|e| e.invalid.is_some())
    }

    /// Evaluates a certificate's self-signatures the way gpg does (`merge_selfsigs`): only
    /// signatures by the primary key count, the latest valid one of each kind wins.
    fn add_certificate(&mut self, cert: &SignedPublicKey) {
        let primary = &cert.primary_key;
        let created = u64::from(primary.created_at().as_secs());
        let own = |sig: &&Signature| issued_by(sig, primary);

        // Per user id: its latest valid self-certification (0x10-0x13), unless a valid
        // certification revocation (0x30) is newer (RFC 9580 section 5.2.1.14).
        let mut uid_sigs = Vec::new();
        for user in &cert.details.users {
            let certs = user.signatures.iter().filter(own).filter(|s| {
                s.is_certification()
                    && s.typ() != Some(SignatureType::CertRevocation)
                    && s.verify_certification(primary, Tag::UserId, &user.id).is_ok()
            });
            let Some(best) = latest(certs) else { continue };
            let revoked = user.signatures.iter().filter(own).any(|s| {
                s.typ() == Some(SignatureType::CertRevocation)
                    && sig_created(s) >= sig_created(best)
                    && s.verify_certification(primary, Tag::UserId, &user.id).is_ok()
            });
            if !revoked {
                uid_sigs.push((user.id.as_str().unwrap_or_default().to_string(), best));
            }
        }
        // The primary user id: the latest self-signature flagged primary, else the latest.
        let chosen = latest(uid_sigs.iter().filter(|(_, s)| s.is_primary()).map(|(_, s)| *s))
            .or_else(|| latest(uid_sigs.iter().map(|(_, s)| *s)));
        let user_id = uid_sigs
            .iter()
            .find(|(_, s)| Some(*s) == chosen)
            .map(|(u, _)| u.clone())
            .or_else(|| {
                cert.details
                    .users
                    .first()
                    .map(|u| u.id.as_str().unwrap_or_default().to_string())
            })
            .unwrap_or_default();
        let direct = latest(
            cert.details
                .direct_signatures
                .iter()
                .filter(own)
                .filter(|s| s.typ() == Some(SignatureType::Key) && s.verify_key(primary).is_ok()),
        );
        let revoked = cert
            .details
            .revocation_signatures
            .iter()
            .filter(own)
            .any(|s| s.typ() == Some(SignatureType::KeyRevocation) && s.verify_key(primary).is_ok());
        let expires = expiry(chosen, created).or_else(|| expiry(direct, created));
        let primary_fp = format!("{:X}", primary.fingerprint());
        let invalid =
            (chosen.is_none() && direct.is_none()).then(|| "the certificate has no valid self-signature".to_string());
        let signer = |key: &str| Signer {
            key: key.to_string(),
            primary: primary_fp.clone(),
            user_id: user_id.clone(),
        };
        self.entries.push(KeyEntry {
            key: AnyKey::Primary(primary.clone()),
            signer: signer(&primary_fp),
            created,
            expires,
            revoked,
            invalid: invalid.clone(),
            unusable: None,
        });
        for sub in &cert.public_subkeys {
            let entry = Self::subkey_entry(primary, sub, signer(&format!("{:X}", sub.key.fingerprint())));
            self.entries.push(KeyEntry {
                // A subkey expires and is revoked with its certificate, and is no more
                // valid than it (gpg's merge_selfsigs).
                expires: match (entry.expires, expires) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
                revoked: entry.revoked || revoked,
                invalid: invalid.clone().or(entry.invalid),
                ..entry
            });
        }
        self.certificates.push(format!("{primary_fp} ({user_id})"));
    }

    fn subkey_entry(primary: &PublicKey, sub: &SignedPublicSubKey, signer: Signer) -> KeyEntry {
        let created = u64::from(sub.key.created_at().as_secs());
        let own = |sig: &&Signature| issued_by(sig, primary);
        let binding = latest(sub.signatures.iter().filter(own).filter(|s| {
            s.typ() == Some(SignatureType::SubkeyBinding) && s.verify_subkey_binding(primary, &sub.key).is_ok()
        }));
        let revoked = sub.signatures.iter().filter(own).any(|s| {
            s.typ() == Some(SignatureType::SubkeyRevocation) && s.verify_subkey_binding(primary, &sub.key).is_ok()
        });
        let invalid = binding
            .is_none()
            .then(|| "the subkey has no valid binding signature".to_string());
        let unusable = binding.and_then(|b| {
            if !may_sign(b, sub.key.algorithm()) {
                return Some("the subkey is not marked for signing".to_string());
            }
            // RFC 9580 section 5.2.1.9 (0x19): a signing subkey signs its primary key back,
            // so nobody can claim another's subkey.
            let backsig_ok = b
                .embedded_signature()
                .is_some_and(|back| back.verify_primary_key_binding(&sub.key, primary).is_ok());
            (!backsig_ok).then(|| "the signing subkey is not cross-certified (no valid back signature)".to_string())
        });
        KeyEntry {
            key: AnyKey::Subkey(sub.key.clone()),
            signer,
            created,
            expires: expiry(binding, created),
            revoked,
            invalid,
            unusable,
        }
    }

    /// Keys that the signature names as its issuer.
    fn issuers_of<'a>(&'a self, sig: &'a Signature) -> impl Iterator<Item = &'a KeyEntry> + 'a {
        let fps = sig.issuer_fingerprint();
        let ids = sig.issuer_key_id();
        self.entries.iter().filter(move |e| {
            fps.iter().any(|fp| **fp == e.key.fingerprint()) || ids.iter().any(|id| **id == e.key.key_id())
        })
    }

    /// The verdict on one signature over `data` at time `now` (seconds since the epoch).
    fn judge(&self, sig: &Signature, data: &[u8], now: u64) -> Verdict {
        let mut first = None;
        for entry in self.issuers_of(sig) {
            let verdict = entry.judge(sig, data, now);
            if matches!(verdict, Verdict::Good(_)) {
                return verdict;
            }
            first.get_or_insert(verdict);
        }
        first.unwrap_or_else(|| Verdict::UnknownKey {
            issuer: issuer_label(sig),
        })
    }
}

impl KeyEntry {
    /// gpg's order: key validity and time conflicts first, then the cryptographic check, then
    /// what makes a matching signature worthless.
    fn judge(&self, sig: &Signature, data: &[u8], now: u64) -> Verdict {
        let signer = self.signer.clone();
        let unusable = |reason: String| Verdict::Unusable {
            signer: self.signer.clone(),
            reason,
        };
        if let Some(reason) = &self.invalid {
            return unusable(reason.clone());
        }
        let Some(hash) = sig.hash_alg() else {
            return unusable(format!("unsupported signature version {:?}", sig.version()));
        };
        // A cleartext message is signed as a text (0x01) or, by some tools, binary (0x00)
        // document (RFC 9580 section 5.2.1).
        if !matches!(sig.typ(), Some(SignatureType::Binary | SignatureType::Text)) {
            return unusable(format!("a signature of type {:?} cannot sign a message", sig.typ()));
        }
        let created = sig_created(sig);
        if self.created > created {
            return unusable(format!(
                "the key was created at {} (Unix time), after the signature ({created})",
                self.created
            ));
        }
        if self.created > now {
            return unusable(format!("the key was created in the future ({})", self.created));
        }
        let weak = matches!(
            hash,
            HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160
        );
        // RFC 9580 sections 5.2.3.3 and 5.2.3.4: EdDSA and ECDSA signatures need a digest of at
        // least 256 bits, and the library refuses to compute shorter ones. Such a signature
        // is worthless to apt whether it matches or not, so it is not computed.
        let computable = !weak
            || !matches!(
                self.key.algorithm(),
                PublicKeyAlgorithm::ECDSA
                    | PublicKeyAlgorithm::EdDSALegacy
                    | PublicKeyAlgorithm::Ed25519
                    | PublicKeyAlgorithm::Ed448
            );
        if computable {
            if let Err(e) = self.key.verify(sig, data) {
                return Verdict::Bad {
                    signer,
                    reason: e.to_string(),
                };
            }
        }
        if let Some(reason) = &self.unusable {
            return unusable(reason.clone());
        }
        if let Some(d) = sig.signature_expiration_time().filter(|d| d.as_secs() != 0) {
            let expired = created + u64::from(d.as_secs());
            if expired <= now {
                return Verdict::ExpiredSignature { signer, expired };
            }
        }
        if let Some(expired) = self.expires.filter(|&t| t < now) {
            return Verdict::ExpiredKey { signer, expired };
        }
        if self.revoked {
            return Verdict::RevokedKey(signer);
        }
        if weak {
            return Verdict::WeakDigest {
                signer,
                digest: format!("{hash:?}"),
            };
        }
        Verdict::Good(signer)
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

/// An `InRelease` file's signed text with the verdict on each of its signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedMessage {
    /// The signed text: dash-escaping undone, `\n` line ends, ending with a newline.
    pub text: String,
    /// One verdict per signature, in the order they appear in the file.
    pub verdicts: Vec<Verdict>,
}

impl CheckedMessage {
    /// apt's rule: the text when at least one signature is good and none is bad.
    pub fn accepted(self) -> Result<String, SignatureError> {
        if let Some(Verdict::Bad { signer, reason }) = self.verdicts.iter().find(|v| matches!(v, Verdict::Bad { .. })) {
            return Err(SignatureError::BadSignature {
                key: signer.to_string(),
                reason: reason.clone(),
            });
        }
        if self.verdicts.iter().any(|v| matches!(v, Verdict::Good(_))) {
            return Ok(self.text);
        }
        let unknown: Vec<String> = self
            .verdicts
            .iter()
            .filter_map(|v| match v {
                Verdict::UnknownKey { issuer } => Some(issuer.clone()),
                _ => None,
            })
            .collect();
        if unknown.len() == self.verdicts.len() {
            return Err(SignatureError::UnknownKey { key_ids: unknown });
        }
        Err(SignatureError::NoValidSignature {
            signatures: self.verdicts.iter().map(Verdict::to_string).collect(),
        })
    }
}

/// Seconds since the Unix epoch now.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses an `InRelease` file and judges each of its signatures against `keyring` at time
/// `now` (seconds since the Unix epoch). Errors only when the file is not one
/// cleartext-signed message with at least one signature.
pub fn check_inrelease(data: &[u8], keyring: &Keyring, now: u64) -> Result<CheckedMessage, SignatureError> {
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
    let verdicts = message
        .signatures()
        .iter()
        .map(|sig| keyring.judge(sig, signed.as_bytes(), now))
        .collect();
    let mut out = signed.replace("\r\n", "\n");
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(CheckedMessage { text: out, verdicts })
}

/// Checks the signatures of an `InRelease` file against `keyring` at the current time and
/// returns the signed text (dash-escaping undone, `\n` line ends, ending with a newline),
/// ready for [`crate::Release::parse`].
pub fn verify_inrelease(data: &[u8], keyring: &Keyring) -> Result<String, SignatureError> {
    check_inrelease(data, keyring, now_secs())?.accepted()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_debian_keyring_loads() {
        let ring = Keyring::debian_archive();
        assert!(!ring.is_empty());
        let certs = ring.certificates().join("\n");
        // Debian Stable Release Keys (12/bookworm, 13/trixie) and the archive keys.
        assert!(certs.contains("4D64FEC119C2029067D6E791F8D2585B8783D481"), "{certs}");
        assert!(certs.contains("41587F7DB8C774BCCF131416762F67A0B2C39DE4"), "{certs}");
        assert!(certs.contains("Automatic Signing Key (12/bookworm)"), "{certs}");
        assert!(certs.contains("Automatic Signing Key (13/trixie)"), "{certs}");
        // Every signing subkey of the archive keys is valid and cross-certified.
        for fp in [
            "4CB50190207B4758A3F73A796ED0E7B82643E131",
            "B8E5F13176D2A7A75220028078DBA3BC47EF2265",
        ] {
            let entry = ring.entries.iter().find(|e| e.signer.key == fp).expect(fp);
            assert_eq!(
                (&entry.invalid, &entry.unusable, entry.revoked),
                (&None, &None, false),
                "{fp}"
            );
        }
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
