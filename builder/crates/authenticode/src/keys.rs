//! The signer: an RSA private key and its X.509 certificate chain, read from PEM (RFC 7468).

use der::{Decode, Encode};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};

/// Why a key or certificate file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text holds no PEM block of the kind asked for.
    #[error("no {0} PEM block found (expected -----BEGIN {0}-----)")]
    NoPemBlock(&'static str),
    /// A PEM block is malformed.
    #[error("malformed PEM: {0}")]
    Pem(der::pem::Error),
    /// The private key is encrypted.
    #[error("the private key is encrypted (ENCRYPTED PRIVATE KEY); decrypt it first, e.g. `openssl pkey -in KEY.pem -out PLAIN.pem`, and keep the result private")]
    Encrypted,
    /// The private key is not RSA.
    #[error("the private key ({0}) is not an RSA key; Authenticode for UEFI uses RSA (PKCS #1 v1.5 with SHA-256)")]
    NotRsa(String),
    /// The PKCS #8 or PKCS #1 structure could not be decoded.
    #[error("cannot decode the RSA private key: {0}")]
    Key(String),
    /// A certificate could not be decoded.
    #[error("certificate {index} cannot be decoded as X.509: {source}")]
    Certificate {
        /// Which certificate in the file (1-based).
        index: usize,
        /// What the decoder reported.
        source: der::Error,
    },
    /// The certificate's public key is not RSA.
    #[error("the certificate's public key is not an RSA key: {0}")]
    CertificateKey(String),
}

/// An RSA private key that signs with RSASSA-PKCS1-v1_5 and SHA-256 (RFC 8017 section 8.2),
/// which is deterministic: the same key and image give the same signature.
#[derive(Clone)]
pub struct SigningKey {
    pub(crate) key: RsaPrivateKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "SigningKey(RSA-{})", self.bits())
    }
}

/// The PEM blocks of `text`, as (label, DER), in order.
fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, KeyError> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let label_end = block[11..]
            .find("-----")
            .ok_or(KeyError::Pem(der::pem::Error::PreEncapsulationBoundary))?
            + 11;
        let label = &block[11..label_end];
        let end_line = format!("-----END {label}-----");
        let end = block
            .find(&end_line)
            .ok_or(KeyError::Pem(der::pem::Error::PostEncapsulationBoundary))?;
        let pem = &block[..end + end_line.len()];
        let (label, der) = der::pem::decode_vec(pem.as_bytes()).map_err(KeyError::Pem)?;
        blocks.push((label.to_string(), der));
        rest = &block[end + end_line.len()..];
    }
    Ok(blocks)
}

impl SigningKey {
    /// Reads the first private key in `pem`: PKCS #8 (`PRIVATE KEY`) or PKCS #1 (`RSA PRIVATE
    /// KEY`); an encrypted key is refused with [`KeyError::Encrypted`].
    pub fn from_pem(pem: &str) -> Result<SigningKey, KeyError> {
        let blocks = pem_blocks(pem)?;
        let (label, der) = blocks
            .iter()
            .find(|(label, _)| label.ends_with("PRIVATE KEY"))
            .ok_or(KeyError::NoPemBlock("PRIVATE KEY"))?;
        let key = match label.as_str() {
            "PRIVATE KEY" => RsaPrivateKey::from_pkcs8_der(der).map_err(|e| match e {
                rsa::pkcs8::Error::KeyMalformed | rsa::pkcs8::Error::Asn1(_) => KeyError::Key(e.to_string()),
                other => KeyError::NotRsa(other.to_string()),
            })?,
            "RSA PRIVATE KEY" => RsaPrivateKey::from_pkcs1_der(der).map_err(|e| KeyError::Key(e.to_string()))?,
            "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted),
            other => return Err(KeyError::NotRsa(other.to_string())),
        };
        key.validate().map_err(|e| KeyError::Key(e.to_string()))?;
        Ok(SigningKey { key })
    }

    /// The modulus size in bits.
    pub fn bits(&self) -> usize {
        use rsa::traits::PublicKeyParts;
        self.key.size() * 8
    }

    /// True when `cert` certifies this key's public half.
    pub fn matches(&self, cert: &Certificate) -> bool {
        cert.public_key()
            .map(|p| p == self.key.to_public_key())
            .unwrap_or(false)
    }
}

/// An X.509 certificate (RFC 5280), kept with its DER bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    pub(crate) cert: x509_cert::Certificate,
    der: Vec<u8>,
}

impl Certificate {
    /// Reads every `CERTIFICATE` block of `pem`, in order: the signer's first, then the
    /// certificates that chain it to what the firmware trusts.
    pub fn chain_from_pem(pem: &str) -> Result<Vec<Certificate>, KeyError> {
        let certs: Vec<Certificate> = pem_blocks(pem)?
            .into_iter()
            .filter(|(label, _)| label == "CERTIFICATE")
            .enumerate()
            .map(|(i, (_, der))| {
                Certificate::from_der(&der).map_err(|source| KeyError::Certificate { index: i + 1, source })
            })
            .collect::<Result<_, _>>()?;
        if certs.is_empty() {
            return Err(KeyError::NoPemBlock("CERTIFICATE"));
        }
        Ok(certs)
    }

    /// Decodes one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Certificate, der::Error> {
        let cert = x509_cert::Certificate::from_der(der)?;
        // The original bytes are what the issuer signed: embed and fingerprint those.
        Ok(Certificate {
            cert,
            der: der.to_vec(),
        })
    }

    /// The certificate's DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The subject as an RFC 4514 string (`CN=...,O=...`).
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// The issuer as an RFC 4514 string.
    pub fn issuer(&self) -> String {
        self.cert.tbs_certificate.issuer.to_string()
    }

    /// The SHA-256 of the DER encoding (the fingerprint `openssl x509 -fingerprint -sha256`
    /// prints).
    pub fn sha256_fingerprint(&self) -> [u8; 32] {
        Sha256::digest(&self.der).into()
    }

    /// The certified RSA public key.
    pub(crate) fn public_key(&self) -> Result<RsaPublicKey, KeyError> {
        let spki = self
            .cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| KeyError::CertificateKey(e.to_string()))?;
        RsaPublicKey::from_public_key_der(&spki).map_err(|e| KeyError::CertificateKey(e.to_string()))
    }
}
