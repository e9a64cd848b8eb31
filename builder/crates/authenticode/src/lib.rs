//! Authenticode signatures for PE images, the form UEFI Secure Boot checks against `db`
//! (UEFI 2.10 section 32.5.3.3, "Authenticode" image verification).
//!
//! [`sign`] follows "Windows Authenticode Portable Executable Signature Format" (Microsoft,
//! version 1.0) and the PE format's "The Attribute Certificate Table (Image Only)":
//! - the Authenticode hash ([`image_digest`]) covers the headers except `CheckSum` and the
//!   Certificate Table's data directory entry, each section's raw data in file order, and
//!   the data after them up to the certificate table;
//! - the signature is a PKCS #7 SignedData (RFC 2315, as RFC 5652 section 5 describes it)
//!   whose content is `SpcIndirectDataContent` (`SPC_PE_IMAGE_DATAOBJ` and a SHA-256
//!   `DigestInfo`), with the signer's certificate chain, and one SignerInfo whose signed
//!   attributes are contentType, messageDigest and an empty SpcSpOpusInfo. There is no
//!   signing time, and RSASSA-PKCS1-v1_5 (RFC 8017 section 8.2) has no randomness, so the
//!   same image and key always give the same bytes;
//! - it is stored as a `WIN_CERTIFICATE` (revision 0x0200, `WIN_CERT_TYPE_PKCS_SIGNED_DATA`)
//!   zero-padded to 8 bytes and appended to the image, which is first padded to 8 bytes; data
//!   directory 4 points at it and `CheckSum` is recomputed.

#![deny(missing_docs)]

mod keys;
mod pe;
mod pkcs7;

pub use keys::{Certificate, KeyError, SigningKey};
pub use pe::PeError;

use der::asn1::{Any, OctetString, SetOfVec};
use der::{Decode, Encode};
use pe::{pe_checksum, PeLayout};
use rsa::signature::{SignatureEncoding, Signer};
use sha2::{Digest, Sha256};

/// `WIN_CERTIFICATE.wRevision`: `WIN_CERT_REVISION_2_0`.
pub const WIN_CERT_REVISION_2_0: u16 = 0x0200;
/// `WIN_CERTIFICATE.wCertificateType`: `WIN_CERT_TYPE_PKCS_SIGNED_DATA`.
pub const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;

/// The largest SignedData firmware reads: EDK II's image verification finds the digest
/// algorithm at a fixed offset that assumes two-byte DER lengths (X.690 8.1.3.5), so the
/// outer structures must be shorter than 64 KiB.
pub const MAX_SIGNATURE_LEN: usize = 0xffff;

/// Why an image could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The input is not a PE image this crate can sign.
    #[error(transparent)]
    Pe(#[from] PeError),
    /// The input already carries a signature.
    #[error("the PE image is already signed (it has an Attribute Certificate Table); sign the unsigned image")]
    AlreadySigned,
    /// No certificate was given.
    #[error("no signing certificate given")]
    NoCertificate,
    /// The first certificate does not certify the key.
    #[error("the certificate ({subject}) does not match the private key: its public key is another one")]
    KeyMismatch {
        /// The certificate's subject.
        subject: String,
    },
    /// The image is too large for the 32-bit certificate table offset.
    #[error("the PE image is too large to sign ({0} bytes; the certificate table's offset is 32-bit)")]
    TooLarge(usize),
    /// The SignedData is larger than firmware reads.
    #[error(
        "the signature is {0} bytes; UEFI firmware reads at most {MAX_SIGNATURE_LEN} (send fewer chain certificates)"
    )]
    SignatureTooLarge(usize),
    /// A DER structure could not be encoded.
    #[error("encoding the signature: {0}")]
    Der(#[from] der::Error),
    /// The RSA signature could not be made.
    #[error("RSA signature: {0}")]
    Rsa(#[from] rsa::signature::Error),
}

/// The Authenticode SHA-256 hash of `pe`, signed or not (its certificate table is excluded).
pub fn image_digest(pe: &[u8]) -> Result<[u8; 32], PeError> {
    Ok(PeLayout::parse(pe)?.digest(pe))
}

/// Signs `pe` with `key`: returns the image with its Authenticode signature appended.
/// `cert_chain[0]` must certify `key`; the rest are embedded for verifiers that trust an
/// issuer of it rather than the certificate itself.
pub fn sign(pe: &[u8], key: &SigningKey, cert_chain: &[Certificate]) -> Result<Vec<u8>, SignError> {
    let layout = PeLayout::parse(pe)?;
    if layout.is_signed() {
        return Err(SignError::AlreadySigned);
    }
    let signer = cert_chain.first().ok_or(SignError::NoCertificate)?;
    if !key.matches(signer) {
        return Err(SignError::KeyMismatch {
            subject: signer.subject(),
        });
    }
    // The certificate table must start quadword-aligned; the padding is image data, so it is
    // added before hashing (and hashed, as trailing data).
    let mut out = Vec::with_capacity(pe.len() + 8 + 4096);
    out.extend_from_slice(pe);
    out.resize(pe.len().next_multiple_of(8), 0);
    let digest = layout.digest(&out);
    let signed_data = signed_data(&digest, key, cert_chain)?;
    if signed_data.len() > MAX_SIGNATURE_LEN {
        return Err(SignError::SignatureTooLarge(signed_data.len()));
    }
    let table_offset = out.len();
    let entry_len = (8 + signed_data.len()).next_multiple_of(8);
    let end = table_offset + entry_len;
    if u32::try_from(end).is_err() {
        return Err(SignError::TooLarge(pe.len()));
    }
    // WIN_CERTIFICATE: dwLength (the padded entry), wRevision, wCertificateType, bCertificate.
    out.extend_from_slice(&(entry_len as u32).to_le_bytes());
    out.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
    out.extend_from_slice(&signed_data);
    out.resize(end, 0);
    let dir = layout.cert_directory;
    out[dir..dir + 4].copy_from_slice(&(table_offset as u32).to_le_bytes());
    out[dir + 4..dir + 8].copy_from_slice(&(entry_len as u32).to_le_bytes());
    let checksum = pe_checksum(&out, layout.checksum);
    out[layout.checksum..layout.checksum + 4].copy_from_slice(&checksum.to_le_bytes());
    Ok(out)
}

/// The DER ContentInfo of the signature over `digest`.
fn signed_data(digest: &[u8; 32], key: &SigningKey, chain: &[Certificate]) -> Result<Vec<u8>, SignError> {
    let content = pkcs7::indirect_data(digest)?;
    let content_digest = Sha256::digest(pkcs7::content_octets(&content)?);
    let attributes = pkcs7::signed_attributes(&content_digest)?;
    // The signature covers the attributes' DER with the SET OF tag, not the [0] IMPLICIT one
    // they are stored under (RFC 5652 section 5.4).
    let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key.key.clone());
    let signature = signer.try_sign(&attributes.to_der()?)?.to_vec();
    let cert = &chain[0].cert.tbs_certificate;
    let signer_info = pkcs7::SignerInfo {
        version: 1,
        issuer_and_serial_number: pkcs7::IssuerAndSerialNumber {
            issuer: cert.issuer.clone(),
            serial_number: cert.serial_number.clone(),
        },
        digest_algorithm: pkcs7::algorithm(pkcs7::OID_SHA256),
        authenticated_attributes: Some(attributes),
        digest_encryption_algorithm: pkcs7::algorithm(pkcs7::OID_RSA_ENCRYPTION),
        encrypted_digest: OctetString::new(signature)?,
    };
    let certificates = chain
        .iter()
        .map(|c| Any::from_der(c.der()))
        .collect::<Result<Vec<_>, _>>()?;
    let info = pkcs7::ContentInfo {
        content_type: pkcs7::OID_SIGNED_DATA,
        content: pkcs7::SignedData {
            version: 1,
            digest_algorithms: SetOfVec::try_from(vec![pkcs7::algorithm(pkcs7::OID_SHA256)])?,
            content_info: pkcs7::SpcContentInfo {
                content_type: pkcs7::OID_SPC_INDIRECT_DATA,
                content,
            },
            certificates: Some(SetOfVec::try_from(certificates)?),
            signer_infos: SetOfVec::try_from(vec![signer_info])?,
        },
    };
    Ok(info.to_der()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::asn1::ObjectIdentifier;
    use rsa::signature::Verifier;

    /// The smallest PE32+ image [`sign`] takes: headers and one section.
    fn image() -> Vec<u8> {
        let mut pe = vec![0u8; 0x400];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c] = 0x40;
        pe[0x40..0x44].copy_from_slice(b"PE\0\0");
        pe[0x46] = 1; // one section
        pe[0x54] = 240; // SizeOfOptionalHeader
        let opt = 0x58;
        pe[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        pe[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes());
        pe[opt + 108] = 16;
        let h = opt + 240;
        pe[h + 16..h + 20].copy_from_slice(&0x200u32.to_le_bytes());
        pe[h + 20..h + 24].copy_from_slice(&0x200u32.to_le_bytes());
        pe[0x200..].fill(0x5a);
        pe
    }

    fn key() -> (SigningKey, Vec<Certificate>) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}{f}")).unwrap();
        (
            SigningKey::from_pem(&read("key.pem")).unwrap(),
            Certificate::chain_from_pem(&read("cert.pem")).unwrap(),
        )
    }

    #[test]
    fn signature_parses_back_and_verifies() {
        let (key, chain) = key();
        let pe = image();
        let signed = sign(&pe, &key, &chain).unwrap();
        let len = u32::from_le_bytes(signed[0x400..0x404].try_into().unwrap()) as usize;
        let der_bytes = &signed[0x408..0x400 + len];
        // EDK II reads the digest algorithm at offset 32 of the SignedData's ContentInfo.
        assert_eq!(der_bytes[1], 0x82);
        assert_eq!(&der_bytes[32..41], OID_SHA256_BYTES);
        let end = 4 + u16::from_be_bytes([der_bytes[2], der_bytes[3]]) as usize;
        assert!(der_bytes[end..].iter().all(|&b| b == 0), "only padding follows");
        let info = pkcs7::decode(&der_bytes[..end]).unwrap();
        assert_eq!(info.content_type, pkcs7::OID_SIGNED_DATA);
        let sd = info.content;
        assert_eq!(sd.version, 1);
        assert_eq!(sd.content_info.content_type, pkcs7::OID_SPC_INDIRECT_DATA);
        let idc = &sd.content_info.content;
        assert_eq!(idc.data.value_type, pkcs7::OID_SPC_PE_IMAGE_DATA);
        assert_eq!(idc.message_digest.digest_algorithm.oid, pkcs7::OID_SHA256);
        assert_eq!(idc.message_digest.digest.as_bytes(), image_digest(&pe).unwrap());
        let certs: Vec<_> = sd.certificates.unwrap().into_vec();
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].to_der().unwrap(), chain[0].der());
        let signers = sd.signer_infos.into_vec();
        assert_eq!(signers.len(), 1);
        let si = &signers[0];
        let tbs = &chain[0].cert.tbs_certificate;
        assert_eq!(si.issuer_and_serial_number.serial_number, tbs.serial_number);
        assert_eq!(si.issuer_and_serial_number.issuer, tbs.issuer);
        let attributes = si.authenticated_attributes.clone().unwrap();
        let value = |oid: ObjectIdentifier| {
            attributes
                .iter()
                .find(|a| a.oid == oid)
                .map(|a| a.values.get(0).unwrap().clone())
        };
        assert_eq!(
            value(pkcs7::OID_CONTENT_TYPE)
                .unwrap()
                .decode_as::<ObjectIdentifier>()
                .unwrap(),
            pkcs7::OID_SPC_INDIRECT_DATA
        );
        let md = value(pkcs7::OID_MESSAGE_DIGEST)
            .unwrap()
            .decode_as::<OctetString>()
            .unwrap();
        assert_eq!(md.as_bytes(), &Sha256::digest(pkcs7::content_octets(idc).unwrap())[..]);
        // No signing time (1.2.840.113549.1.9.5): the output depends on nothing but the inputs.
        assert_eq!(attributes.len(), 3);
        assert!(value(ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5")).is_none());
        let verifier = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(chain[0].public_key().unwrap());
        let signature = rsa::pkcs1v15::Signature::try_from(si.encrypted_digest.as_bytes()).unwrap();
        verifier.verify(&attributes.to_der().unwrap(), &signature).unwrap();
    }

    /// `id-sha256`'s DER contents.
    const OID_SHA256_BYTES: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];

    #[test]
    fn checksum_matches_a_worked_example() {
        // Words 0x0201 and 0x0403 (the CheckSum field at 4..8 counts as zero), plus the
        // length: 0x0201 + 0x0403 + 10.
        let bytes = [1, 2, 3, 4, 0xff, 0xff, 0xff, 0xff, 0, 0];
        assert_eq!(pe::pe_checksum(&bytes, 4), 0x0201 + 0x0403 + 10);
        // End-around carry: 0xffff + 0x0002 folds to 0x0002.
        assert_eq!(pe::pe_checksum(&[0xff, 0xff, 2, 0], 8), 0x0002 + 4);
    }
}
