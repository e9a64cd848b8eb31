//! The Authenticode signature: a PKCS #7 SignedData (RFC 2315; its CMS successor RFC 5652
//! section 5) whose content is an `SpcIndirectDataContent` holding the image's hash
//! (Windows Authenticode Portable Executable Signature Format, "Authenticode-Specific
//! Structures" and "SignerInfo").

use der::asn1::{Any, BitString, ObjectIdentifier, OctetString, SetOfVec};
use der::{Decode, Encode, Header, Reader, Sequence, SliceReader, Tag};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;

/// `signedData` (RFC 2315 section 14).
pub const OID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
/// `SPC_INDIRECT_DATA_OBJID`.
pub const OID_SPC_INDIRECT_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.4");
/// `SPC_PE_IMAGE_DATAOBJ`.
pub const OID_SPC_PE_IMAGE_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.15");
/// `SPC_SP_OPUS_INFO_OBJID`.
pub const OID_SPC_SP_OPUS_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.12");
/// `contentType` attribute (RFC 5652 section 11.1).
pub const OID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
/// `messageDigest` attribute (RFC 5652 section 11.2).
pub const OID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
/// `id-sha256` (RFC 5754 section 2.2).
pub const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// `rsaEncryption` (RFC 8017 appendix A.1), the signature algorithm Authenticode signers name.
pub const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// `ContentInfo` carrying the SignedData.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct ContentInfo {
    /// `signedData`.
    pub content_type: ObjectIdentifier,
    /// The SignedData.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    pub content: SignedData,
}

/// PKCS #7 `SignedData`, version 1.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SignedData {
    /// 1.
    pub version: u8,
    /// SHA-256 only.
    pub digest_algorithms: SetOfVec<AlgorithmIdentifierOwned>,
    /// The signed content: the image's hash.
    pub content_info: SpcContentInfo,
    /// The signer's certificate and its chain.
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    pub certificates: Option<SetOfVec<Any>>,
    /// Exactly one signer (Authenticode).
    pub signer_infos: SetOfVec<SignerInfo>,
}

/// The `ContentInfo` inside SignedData: `SPC_INDIRECT_DATA_OBJID` and its value.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SpcContentInfo {
    /// `SPC_INDIRECT_DATA_OBJID`.
    pub content_type: ObjectIdentifier,
    /// The hash of the image.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    pub content: SpcIndirectDataContent,
}

/// `SpcIndirectDataContent`: what is signed and its hash.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SpcIndirectDataContent {
    /// `SPC_PE_IMAGE_DATAOBJ` with its `SpcPeImageData`.
    pub data: SpcAttributeTypeAndOptionalValue,
    /// The Authenticode hash of the image.
    pub message_digest: DigestInfo,
}

/// `SpcAttributeTypeAndOptionalValue` for a PE image.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SpcAttributeTypeAndOptionalValue {
    /// `SPC_PE_IMAGE_DATAOBJ`.
    pub value_type: ObjectIdentifier,
    /// The PE image data.
    pub value: SpcPeImageData,
}

/// `SpcPeImageData`: empty flags and the obsolete file link every signer writes.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SpcPeImageData {
    /// `SpcPeImageFlags`, no bits set.
    pub flags: BitString,
    /// `SpcLink`, here `file [2] SpcString` holding `unicode [0] "<<<Obsolete>>>"`.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    pub file: Any,
}

/// `DigestInfo` (RFC 8017 section 9.2).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct DigestInfo {
    /// SHA-256.
    pub digest_algorithm: AlgorithmIdentifierOwned,
    /// The hash.
    pub digest: OctetString,
}

/// `IssuerAndSerialNumber` naming the signer's certificate.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct IssuerAndSerialNumber {
    /// The certificate's issuer.
    pub issuer: Name,
    /// The certificate's serial number.
    pub serial_number: SerialNumber,
}

/// PKCS #7 `SignerInfo`, version 1.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SignerInfo {
    /// 1.
    pub version: u8,
    /// The signer's certificate.
    pub issuer_and_serial_number: IssuerAndSerialNumber,
    /// SHA-256.
    pub digest_algorithm: AlgorithmIdentifierOwned,
    /// contentType, messageDigest and SpcSpOpusInfo; no signing time, so the signature is a
    /// pure function of the image and the key.
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    pub authenticated_attributes: Option<SetOfVec<Attribute>>,
    /// rsaEncryption.
    pub digest_encryption_algorithm: AlgorithmIdentifierOwned,
    /// The RSASSA-PKCS1-v1_5 signature of the DER `SET OF` the attributes.
    pub encrypted_digest: OctetString,
}

/// DER `SET OF` order (X.690 section 11.6): by the elements' encodings.
impl der::DerOrd for SignerInfo {
    fn der_cmp(&self, other: &Self) -> Result<std::cmp::Ordering, der::Error> {
        Ok(self.to_der()?.cmp(&other.to_der()?))
    }
}

/// An algorithm identifier with NULL parameters, as Authenticode signers write them.
pub fn algorithm(oid: ObjectIdentifier) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid,
        parameters: Some(Any::null()),
    }
}

/// `SpcLink` `file [2]` holding the BMPString "<<<Obsolete>>>" (`unicode [0] IMPLICIT`).
pub fn obsolete_file_link() -> Result<Any, der::Error> {
    let bmp: Vec<u8> = "<<<Obsolete>>>".encode_utf16().flat_map(u16::to_be_bytes).collect();
    let mut string = vec![0x80, bmp.len() as u8];
    string.extend_from_slice(&bmp);
    Any::new(
        Tag::ContextSpecific {
            constructed: true,
            number: der::TagNumber::N2,
        },
        string,
    )
}

/// The `SpcIndirectDataContent` for an image hash.
pub fn indirect_data(digest: &[u8; 32]) -> Result<SpcIndirectDataContent, der::Error> {
    Ok(SpcIndirectDataContent {
        data: SpcAttributeTypeAndOptionalValue {
            value_type: OID_SPC_PE_IMAGE_DATA,
            value: SpcPeImageData {
                flags: BitString::new(0, Vec::new())?,
                file: obsolete_file_link()?,
            },
        },
        message_digest: DigestInfo {
            digest_algorithm: algorithm(OID_SHA256),
            digest: OctetString::new(digest.to_vec())?,
        },
    })
}

/// The bytes the messageDigest attribute hashes: the content's DER without its own tag and
/// length (PKCS #7 section 9.3, which Authenticode follows for `SpcIndirectDataContent`).
pub fn content_octets(content: &SpcIndirectDataContent) -> Result<Vec<u8>, der::Error> {
    let der = content.to_der()?;
    let mut reader = SliceReader::new(&der)?;
    Header::decode(&mut reader)?;
    let start = u32::from(reader.position()) as usize;
    Ok(der[start..].to_vec())
}

/// The signed attributes: contentType, messageDigest and an empty SpcSpOpusInfo.
pub fn signed_attributes(content_digest: &[u8]) -> Result<SetOfVec<Attribute>, der::Error> {
    let attribute = |oid, value: Any| -> Result<Attribute, der::Error> {
        Ok(Attribute {
            oid,
            values: SetOfVec::try_from(vec![value])?,
        })
    };
    SetOfVec::try_from(vec![
        attribute(OID_CONTENT_TYPE, Any::encode_from(&OID_SPC_INDIRECT_DATA)?)?,
        attribute(OID_SPC_SP_OPUS_INFO, Any::new(Tag::Sequence, Vec::new())?)?,
        attribute(
            OID_MESSAGE_DIGEST,
            Any::encode_from(&OctetString::new(content_digest)?)?,
        )?,
    ])
}

#[cfg(test)]
/// Decodes a DER ContentInfo (the signature's bytes without the WIN_CERTIFICATE header and
/// its padding).
pub fn decode(der_bytes: &[u8]) -> Result<ContentInfo, der::Error> {
    let mut reader = SliceReader::new(der_bytes)?;
    let info = ContentInfo::decode(&mut reader)?;
    Ok(info)
}
