//! The TLS material of `dockerd --tlsverify`: a private CA, a server certificate naming the VM
//! and a client certificate for the user, all ECDSA P-256 with SHA-256 signatures.
//!
//! Certificates follow the RFC 5280 profile: X.509 v3 (§4.1.2.1), a positive random 16-byte
//! serial (§4.1.2.2), UTCTime through 2049 and GeneralizedTime after (§4.1.2.5), subject and
//! authority key identifiers (§4.2.1.1, §4.2.1.2, method 1: SHA-1 of the subjectPublicKey),
//! keyUsage (§4.2.1.3), subjectAltName (§4.2.1.6), basicConstraints (§4.2.1.9) and
//! extendedKeyUsage (§4.2.1.12). Private keys are PKCS#8 (RFC 5208) PEM (RFC 7468 §10).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use const_oid::db::rfc4519::CN;
use const_oid::db::rfc5280::{ID_CE_SUBJECT_ALT_NAME, ID_KP_CLIENT_AUTH, ID_KP_SERVER_AUTH};
use der::asn1::{Any, Ia5String, SetOfVec};
use der::pem::LineEnding;
use der::referenced::OwnedToRef as _;
use der::{Decode as _, DecodePem as _, Encode as _, EncodePem as _, Tag};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _};
use p256::SecretKey;
use rand_core::CryptoRngCore;
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::builder::{Builder as _, CertificateBuilder, Profile};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

use crate::IdentityError;

/// Validity starts this long before the caller's `not_before`, so a client whose clock is a
/// little behind the VM's (or a VM that booted with a stale clock) still accepts the certificate.
const CLOCK_SKEW: Duration = Duration::from_secs(24 * 60 * 60);

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// A certificate authority: its self-signed certificate and its private key.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateAuthority {
    /// The CA certificate, PEM (`-----BEGIN CERTIFICATE-----`).
    pub cert_pem: String,
    /// The CA private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
}

/// A certificate issued by the CA together with its freshly generated private key.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PKCS#8 PEM.
    pub key_pem: String,
}

// Private keys must never reach a boot log through `{:?}`.
impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// The names a server certificate is valid for (its subjectAltName entries).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerNames {
    /// DNS names: the hostname and `localhost`.
    pub dns: Vec<String>,
    /// IP addresses: `127.0.0.1` and every IPv4 address of the VM.
    pub ips: Vec<IpAddr>,
}

impl ServerNames {
    /// The usual names of a VM: `hostname`, `localhost`, `127.0.0.1` and the given addresses.
    pub fn for_host(hostname: &str, ips: impl IntoIterator<Item = IpAddr>) -> ServerNames {
        let mut names = ServerNames {
            dns: vec![hostname.to_owned(), "localhost".to_owned()],
            ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        };
        names.ips.extend(ips);
        names.normalized()
    }

    /// The same names sorted and without duplicates (DNS names lower-cased, as they compare
    /// case-insensitively), so two lists can be compared as sets.
    pub fn normalized(&self) -> ServerNames {
        let mut dns: Vec<String> = self.dns.iter().map(|d| d.to_ascii_lowercase()).collect();
        dns.sort();
        dns.dedup();
        let mut ips = self.ips.clone();
        ips.sort();
        ips.dedup();
        ServerNames { dns, ips }
    }

    /// Whether both name the same set of DNS names and addresses, whatever the order.
    pub fn same_as(&self, other: &ServerNames) -> bool {
        self.normalized() == other.normalized()
    }
}

/// Creates a self-signed CA (basicConstraints CA:TRUE, pathlen 0, critical; keyUsage
/// keyCertSign and cRLSign) valid from a day before `not_before` for `validity_days`.
pub fn create_ca(
    rng: &mut impl CryptoRngCore,
    common_name: &str,
    not_before: SystemTime,
    validity_days: u32,
) -> Result<CertificateAuthority, IdentityError> {
    const WHAT: &str = "CA";
    let key = SecretKey::random(rng);
    let signer = SigningKey::from(&key);
    let subject = common_name_only(common_name)?;
    let spki = public_key_info(&key, WHAT)?;
    let mut builder = CertificateBuilder::new(
        Profile::Manual { issuer: None },
        random_serial(rng, WHAT)?,
        validity(not_before, validity_days)?,
        subject,
        spki.clone(),
        &signer,
    )
    .map_err(|source| IdentityError::Certificate { what: WHAT, source })?;
    let ski = SubjectKeyIdentifier::try_from(spki.owned_to_ref()).map_err(|source| encode(WHAT, source))?;
    let aki = AuthorityKeyIdentifier::try_from(spki.owned_to_ref()).map_err(|source| encode(WHAT, source))?;
    let extend = |builder: &mut CertificateBuilder<'_, SigningKey>| {
        builder.add_extension(&BasicConstraints {
            ca: true,
            path_len_constraint: Some(0),
        })?;
        builder.add_extension(&KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign))?;
        builder.add_extension(&ski)?;
        builder.add_extension(&aki)
    };
    extend(&mut builder).map_err(|source| IdentityError::Certificate { what: WHAT, source })?;
    let cert = builder
        .build::<DerSignature>()
        .map_err(|source| IdentityError::Certificate { what: WHAT, source })?;
    Ok(CertificateAuthority {
        cert_pem: cert_to_pem(&cert, WHAT)?,
        key_pem: key_to_pem(&key, WHAT)?,
    })
}

/// Issues a server certificate (extendedKeyUsage serverAuth) for `names`, with a new key.
pub fn issue_server_cert(
    rng: &mut impl CryptoRngCore,
    ca: &CertificateAuthority,
    names: &ServerNames,
    not_before: SystemTime,
    validity_days: u32,
) -> Result<IssuedCert, IdentityError> {
    let mut general_names = Vec::with_capacity(names.dns.len() + names.ips.len());
    for dns in &names.dns {
        let ia5 = Ia5String::new(dns).map_err(|source| IdentityError::Name {
            kind: "DNS name",
            name: dns.clone(),
            source,
        })?;
        general_names.push(GeneralName::DnsName(ia5));
    }
    general_names.extend(names.ips.iter().map(|ip| GeneralName::from(*ip)));
    // The subject CN repeats the first DNS name for people reading the certificate; clients
    // match against the subjectAltName only (RFC 6125 §6.4.4).
    let cn = names.dns.first().map(String::as_str).unwrap_or("server");
    let leaf = Leaf {
        what: "server",
        common_name: cn,
        usage: ID_KP_SERVER_AUTH,
        san: Some(SubjectAltName(general_names)),
    };
    issue_leaf(rng, ca, leaf, not_before, validity_days)
}

/// Issues a client certificate (extendedKeyUsage clientAuth) named `common_name`, with a new key.
pub fn issue_client_cert(
    rng: &mut impl CryptoRngCore,
    ca: &CertificateAuthority,
    common_name: &str,
    not_before: SystemTime,
    validity_days: u32,
) -> Result<IssuedCert, IdentityError> {
    let leaf = Leaf {
        what: "client",
        common_name,
        usage: ID_KP_CLIENT_AUTH,
        san: None,
    };
    issue_leaf(rng, ca, leaf, not_before, validity_days)
}

/// The DNS names and IP addresses in a certificate's subjectAltName (empty when it has none).
pub fn cert_sans(cert_pem: &str) -> Result<ServerNames, IdentityError> {
    let cert = parse_cert(cert_pem, "given")?;
    let mut names = ServerNames::default();
    let extensions = cert.tbs_certificate.extensions.iter().flatten();
    for ext in extensions.filter(|e| e.extn_id == ID_CE_SUBJECT_ALT_NAME) {
        let san =
            SubjectAltName::from_der(ext.extn_value.as_bytes()).map_err(|source| IdentityError::CertificateParse {
                what: "subjectAltName of the".into(),
                source,
            })?;
        for name in san.0 {
            match name {
                GeneralName::DnsName(dns) => names.dns.push(dns.to_string()),
                GeneralName::IpAddress(octets) => {
                    let bytes = octets.as_bytes();
                    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
                        names.ips.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
                        names.ips.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(names)
}

/// Checks that `key_pem` is the private key of `cert_pem`.
pub fn key_matches_cert(cert_pem: &str, key_pem: &str) -> Result<bool, IdentityError> {
    let cert = parse_cert(cert_pem, "given")?;
    let key = parse_key(key_pem, "given")?;
    let spki = public_key_info(&key, "given")?;
    Ok(spki == cert.tbs_certificate.subject_public_key_info)
}

/// Whether `cert_pem` carries a valid ECDSA signature by the key of `ca_cert_pem` and names it
/// as issuer.
pub fn is_issued_by(cert_pem: &str, ca_cert_pem: &str) -> Result<bool, IdentityError> {
    let cert = parse_cert(cert_pem, "given")?;
    let ca = parse_cert(ca_cert_pem, "CA")?;
    if cert.tbs_certificate.issuer != ca.tbs_certificate.subject {
        return Ok(false);
    }
    let ca_spki = ca
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|source| encode("CA", source))?;
    let Ok(ca_key) = VerifyingKey::from_public_key_der(&ca_spki) else {
        return Ok(false);
    };
    let Some(signature) = cert.signature.as_bytes() else {
        return Ok(false);
    };
    let Ok(signature) = DerSignature::from_bytes(signature) else {
        return Ok(false);
    };
    let tbs = cert
        .tbs_certificate
        .to_der()
        .map_err(|source| encode("certificate", source))?;
    Ok(ca_key.verify(&tbs, &signature).is_ok())
}

/// The end of a certificate's validity period (notAfter).
pub fn not_after(cert_pem: &str) -> Result<SystemTime, IdentityError> {
    Ok(parse_cert(cert_pem, "given")?
        .tbs_certificate
        .validity
        .not_after
        .to_system_time())
}

/// A certificate's validity period (RFC 5280 section 4.1.2.5): notBefore and notAfter.
pub fn validity_period(cert_pem: &str) -> Result<(SystemTime, SystemTime), IdentityError> {
    let validity = parse_cert(cert_pem, "given")?.tbs_certificate.validity;
    Ok((
        validity.not_before.to_system_time(),
        validity.not_after.to_system_time(),
    ))
}

/// The SHA-256 fingerprint of a certificate: the hash of its DER encoding, as upper-case hex
/// pairs joined by colons, which is how `openssl x509 -fingerprint -sha256` prints it.
pub fn cert_fingerprint_sha256(cert_pem: &str) -> Result<String, IdentityError> {
    use sha2::{Digest as _, Sha256};
    let der = parse_cert(cert_pem, "given")?
        .to_der()
        .map_err(|source| encode("certificate", source))?;
    let hex: Vec<String> = Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect();
    Ok(hex.join(":"))
}

/// One certificate of a PEM file read by [`read_certificates`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PemCertificate {
    /// The certificate alone, re-encoded as PEM with LF line ends.
    pub pem: String,
    /// Its subject, RFC 4514 text (`CN=corp root,O=Corp`).
    pub subject: String,
    /// Its SHA-256 fingerprint ([`cert_fingerprint_sha256`]).
    pub fingerprint: String,
}

/// Every certificate of a PEM file (RFC 7468 §5: `CERTIFICATE` blocks, text between them is
/// ignored), each parsed as X.509; `what` names the file in errors. A file without any
/// certificate is an error: it would add no trust and is surely the wrong file.
pub fn read_certificates(pem_text: &str, what: &str) -> Result<Vec<PemCertificate>, IdentityError> {
    let parse_error = |source| IdentityError::CertificateParse {
        what: what.to_owned(),
        source,
    };
    let certs = Certificate::load_pem_chain(pem_text.as_bytes()).map_err(parse_error)?;
    if certs.is_empty() {
        return Err(parse_error(der::Error::from(der::ErrorKind::Failed)));
    }
    certs
        .into_iter()
        .map(|cert| {
            let pem = cert
                .to_pem(LineEnding::LF)
                .map_err(|source| encode("certificate", source))?;
            Ok(PemCertificate {
                subject: cert.tbs_certificate.subject.to_string(),
                fingerprint: cert_fingerprint_sha256(&pem)?,
                pem,
            })
        })
        .collect()
}

/// What distinguishes the server and the client leaf.
struct Leaf<'a> {
    what: &'static str,
    common_name: &'a str,
    usage: const_oid::ObjectIdentifier,
    san: Option<SubjectAltName>,
}

fn issue_leaf(
    rng: &mut impl CryptoRngCore,
    ca: &CertificateAuthority,
    leaf: Leaf<'_>,
    not_before: SystemTime,
    validity_days: u32,
) -> Result<IssuedCert, IdentityError> {
    let what = leaf.what;
    let ca_cert = parse_cert(&ca.cert_pem, "CA")?;
    let ca_key = parse_key(&ca.key_pem, "CA")?;
    let ca_spki = public_key_info(&ca_key, "CA")?;
    if ca_spki != ca_cert.tbs_certificate.subject_public_key_info {
        return Err(IdentityError::CaKeyMismatch {
            cert: "CA".into(),
            key: "CA".into(),
        });
    }
    let ca_signer = SigningKey::from(&ca_key);

    let key = SecretKey::random(rng);
    let spki = public_key_info(&key, what)?;
    let mut builder = CertificateBuilder::new(
        Profile::Manual {
            issuer: Some(ca_cert.tbs_certificate.subject.clone()),
        },
        random_serial(rng, what)?,
        validity(not_before, validity_days)?,
        common_name_only(leaf.common_name)?,
        spki.clone(),
        &ca_signer,
    )
    .map_err(|source| IdentityError::Certificate { what, source })?;
    let ski = SubjectKeyIdentifier::try_from(spki.owned_to_ref()).map_err(|source| encode(what, source))?;
    let aki = AuthorityKeyIdentifier::try_from(ca_spki.owned_to_ref()).map_err(|source| encode(what, source))?;
    let extend = |builder: &mut CertificateBuilder<'_, SigningKey>| {
        builder.add_extension(&BasicConstraints {
            ca: false,
            path_len_constraint: None,
        })?;
        // ECDSA keys only sign (the TLS 1.2 ECDHE and TLS 1.3 handshakes), so digitalSignature
        // alone; keyEncipherment is for RSA key transport.
        builder.add_extension(&KeyUsage(KeyUsages::DigitalSignature.into()))?;
        builder.add_extension(&ExtendedKeyUsage(vec![leaf.usage]))?;
        builder.add_extension(&ski)?;
        builder.add_extension(&aki)?;
        if let Some(san) = &leaf.san {
            builder.add_extension(san)?;
        }
        Ok(())
    };
    extend(&mut builder).map_err(|source| IdentityError::Certificate { what, source })?;
    let cert = builder
        .build::<DerSignature>()
        .map_err(|source| IdentityError::Certificate { what, source })?;
    Ok(IssuedCert {
        cert_pem: cert_to_pem(&cert, what)?,
        key_pem: key_to_pem(&key, what)?,
    })
}

/// Parses a PEM certificate; `what` names it in the error.
pub(crate) fn parse_cert(pem: &str, what: &str) -> Result<Certificate, IdentityError> {
    Certificate::from_pem(pem.as_bytes()).map_err(|source| IdentityError::CertificateParse {
        what: what.to_owned(),
        source,
    })
}

/// Parses a P-256 PKCS#8 PEM private key; `what` names it in the error.
pub(crate) fn parse_key(pem: &str, what: &str) -> Result<SecretKey, IdentityError> {
    SecretKey::from_pkcs8_pem(pem).map_err(|source| IdentityError::PrivateKey {
        what: what.to_owned(),
        source,
    })
}

/// A Name holding one RDN, `CN=common_name` as a UTF8String (RFC 5280 §4.1.2.4, §4.1.2.6).
/// Built directly rather than parsed from an RFC 4514 string, so commas or plus signs in a
/// hostname cannot change its structure.
fn common_name_only(common_name: &str) -> Result<Name, IdentityError> {
    let err = |source| IdentityError::Name {
        kind: "common name",
        name: common_name.to_owned(),
        source,
    };
    let value = Any::new(Tag::Utf8String, common_name.as_bytes()).map_err(err)?;
    let rdn = SetOfVec::try_from(vec![AttributeTypeAndValue { oid: CN, value }]).map_err(err)?;
    Ok(RdnSequence(vec![RelativeDistinguishedName(rdn)]))
}

fn public_key_info(key: &SecretKey, what: &'static str) -> Result<SubjectPublicKeyInfoOwned, IdentityError> {
    SubjectPublicKeyInfoOwned::from_key(key.public_key()).map_err(|source| IdentityError::Certificate {
        what,
        source: source.into(),
    })
}

/// A positive serial of exactly 16 bytes: the top bit is cleared so the INTEGER stays positive
/// without a leading zero byte, the next bit set so no leading byte is ever stripped.
fn random_serial(rng: &mut impl CryptoRngCore, what: &'static str) -> Result<SerialNumber, IdentityError> {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::new(&bytes).map_err(|source| encode(what, source))
}

fn validity(not_before: SystemTime, days: u32) -> Result<Validity, IdentityError> {
    // A clock still at the epoch (no RTC) must not push notBefore below 1970.
    let start = not_before
        .checked_sub(CLOCK_SKEW)
        .filter(|t| *t >= UNIX_EPOCH)
        .unwrap_or(UNIX_EPOCH);
    let end = not_before.checked_add(DAY * days).unwrap_or(not_before);
    Ok(Validity {
        not_before: Time::try_from(start).map_err(|source| IdentityError::Time {
            what: "notBefore",
            source,
        })?,
        not_after: Time::try_from(end).map_err(|source| IdentityError::Time {
            what: "notAfter",
            source,
        })?,
    })
}

fn cert_to_pem(cert: &Certificate, what: &'static str) -> Result<String, IdentityError> {
    cert.to_pem(LineEnding::LF).map_err(|source| encode(what, source))
}

fn key_to_pem(key: &SecretKey, what: &'static str) -> Result<String, IdentityError> {
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|source| IdentityError::PrivateKeyEncode { what, source })?;
    Ok(pem.to_string())
}

fn encode(what: &'static str, source: der::Error) -> IdentityError {
    IdentityError::Encode { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;
    use std::net::Ipv6Addr;
    use x509_cert::certificate::Version;

    const T0: Duration = Duration::from_secs(1_700_000_000); // 2023-11-14

    fn extension(cert: &Certificate, oid: const_oid::ObjectIdentifier) -> &x509_cert::ext::Extension {
        let exts = cert.tbs_certificate.extensions.as_ref().expect("extensions");
        exts.iter()
            .find(|e| e.extn_id == oid)
            .unwrap_or_else(|| panic!("no extension {oid}"))
    }

    fn names() -> ServerNames {
        ServerNames::for_host(
            "docker-vm",
            [IpAddr::V4(Ipv4Addr::new(10, 0, 2, 15)), IpAddr::V6(Ipv6Addr::LOCALHOST)],
        )
    }

    #[test]
    fn ca_is_a_v3_self_signed_critical_ca() {
        let ca = create_ca(&mut OsRng, "test CA", UNIX_EPOCH + T0, 3650).unwrap();
        let cert = parse_cert(&ca.cert_pem, "CA").unwrap();
        let tbs = &cert.tbs_certificate;
        assert_eq!(tbs.version, Version::V3);
        assert_eq!(tbs.issuer, tbs.subject);
        assert_eq!(tbs.serial_number.as_bytes().len(), 16);
        let bc = extension(&cert, const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS);
        assert!(bc.critical);
        let bc = BasicConstraints::from_der(bc.extn_value.as_bytes()).unwrap();
        assert!(bc.ca);
        let ku = extension(&cert, const_oid::db::rfc5280::ID_CE_KEY_USAGE);
        let ku = KeyUsage::from_der(ku.extn_value.as_bytes()).unwrap();
        assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
        assert!(is_issued_by(&ca.cert_pem, &ca.cert_pem).unwrap());
        assert!(key_matches_cert(&ca.cert_pem, &ca.key_pem).unwrap());
        assert!(ca.key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        // Validity starts a day early for clock skew and lasts the given days from `not_before`.
        assert_eq!(tbs.validity.not_before.to_unix_duration(), T0 - CLOCK_SKEW);
        assert_eq!(tbs.validity.not_after.to_unix_duration(), T0 + DAY * 3650);
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }

    #[test]
    fn server_cert_carries_names_usage_and_key_identifiers() {
        let ca = create_ca(&mut OsRng, "test CA", UNIX_EPOCH + T0, 3650).unwrap();
        let server = issue_server_cert(&mut OsRng, &ca, &names(), UNIX_EPOCH + T0, 730).unwrap();
        let cert = parse_cert(&server.cert_pem, "server").unwrap();
        assert!(is_issued_by(&server.cert_pem, &ca.cert_pem).unwrap());
        assert!(key_matches_cert(&server.cert_pem, &server.key_pem).unwrap());
        assert!(!key_matches_cert(&server.cert_pem, &ca.key_pem).unwrap());

        let sans = cert_sans(&server.cert_pem).unwrap();
        assert!(sans.same_as(&names()));
        assert_eq!(sans.dns, ["docker-vm", "localhost"]);
        assert!(sans.ips.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)));

        let eku = extension(&cert, const_oid::db::rfc5280::ID_CE_EXT_KEY_USAGE);
        assert_eq!(
            ExtendedKeyUsage::from_der(eku.extn_value.as_bytes()).unwrap().0,
            [ID_KP_SERVER_AUTH]
        );
        let ku = extension(&cert, const_oid::db::rfc5280::ID_CE_KEY_USAGE);
        let ku = KeyUsage::from_der(ku.extn_value.as_bytes()).unwrap();
        assert!(ku.digital_signature() && !ku.key_cert_sign());

        // The leaf's authorityKeyIdentifier is the CA's subjectKeyIdentifier.
        let ca_cert = parse_cert(&ca.cert_pem, "CA").unwrap();
        let ca_ski = extension(&ca_cert, const_oid::db::rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER);
        let ca_ski = SubjectKeyIdentifier::from_der(ca_ski.extn_value.as_bytes()).unwrap();
        let aki = extension(&cert, const_oid::db::rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER);
        let aki = AuthorityKeyIdentifier::from_der(aki.extn_value.as_bytes()).unwrap();
        assert_eq!(aki.key_identifier.as_ref(), Some(&ca_ski.0));
    }

    #[test]
    fn client_cert_is_for_client_auth_and_other_cas_do_not_verify_it() {
        let ca = create_ca(&mut OsRng, "test CA", UNIX_EPOCH + T0, 3650).unwrap();
        let other = create_ca(&mut OsRng, "test CA", UNIX_EPOCH + T0, 3650).unwrap();
        let client = issue_client_cert(&mut OsRng, &ca, "client", UNIX_EPOCH + T0, 730).unwrap();
        let cert = parse_cert(&client.cert_pem, "client").unwrap();
        let eku = extension(&cert, const_oid::db::rfc5280::ID_CE_EXT_KEY_USAGE);
        assert_eq!(
            ExtendedKeyUsage::from_der(eku.extn_value.as_bytes()).unwrap().0,
            [ID_KP_CLIENT_AUTH]
        );
        assert!(is_issued_by(&client.cert_pem, &ca.cert_pem).unwrap());
        // Same subject name, different key: the signature check must fail.
        assert!(!is_issued_by(&client.cert_pem, &other.cert_pem).unwrap());
        assert_eq!(cert_sans(&client.cert_pem).unwrap(), ServerNames::default());
    }

    #[test]
    fn serials_are_random_and_positive() {
        let ca = create_ca(&mut OsRng, "test CA", UNIX_EPOCH + T0, 3650).unwrap();
        let a = issue_client_cert(&mut OsRng, &ca, "c", UNIX_EPOCH + T0, 1).unwrap();
        let b = issue_client_cert(&mut OsRng, &ca, "c", UNIX_EPOCH + T0, 1).unwrap();
        let sa = parse_cert(&a.cert_pem, "a").unwrap().tbs_certificate.serial_number;
        let sb = parse_cert(&b.cert_pem, "b").unwrap().tbs_certificate.serial_number;
        assert_ne!(sa, sb);
        assert!(sa.as_bytes()[0] & 0x80 == 0 && sa.as_bytes().len() == 16);
    }

    #[test]
    fn a_clock_at_the_epoch_still_gives_valid_certificates() {
        let ca = create_ca(&mut OsRng, "test CA", UNIX_EPOCH, 3650).unwrap();
        let cert = parse_cert(&ca.cert_pem, "CA").unwrap();
        assert_eq!(
            cert.tbs_certificate.validity.not_before.to_unix_duration(),
            Duration::ZERO
        );
        // Certificates reaching past 2049 switch to GeneralizedTime (RFC 5280 §4.1.2.5).
        let late = UNIX_EPOCH + Duration::from_secs(2_500_000_000); // 2049-03
        let ca = create_ca(&mut OsRng, "test CA", late, 3650).unwrap();
        let cert = parse_cert(&ca.cert_pem, "CA").unwrap();
        assert!(matches!(cert.tbs_certificate.validity.not_before, Time::UtcTime(_)));
        assert!(matches!(cert.tbs_certificate.validity.not_after, Time::GeneralTime(_)));
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let ca = create_ca(&mut OsRng, "test CA", UNIX_EPOCH + T0, 3650).unwrap();
        let bad = ServerNames {
            dns: vec!["hôte".into()],
            ips: vec![],
        };
        let err = issue_server_cert(&mut OsRng, &ca, &bad, UNIX_EPOCH + T0, 1).unwrap_err();
        assert!(err.to_string().contains("DNS name"), "{err}");
        let other = create_ca(&mut OsRng, "x", UNIX_EPOCH + T0, 1).unwrap();
        let mixed = CertificateAuthority {
            cert_pem: ca.cert_pem.clone(),
            key_pem: other.key_pem,
        };
        assert!(matches!(
            issue_client_cert(&mut OsRng, &mixed, "c", UNIX_EPOCH + T0, 1),
            Err(IdentityError::CaKeyMismatch { .. })
        ));
        assert!(matches!(
            cert_sans("not a pem"),
            Err(IdentityError::CertificateParse { .. })
        ));
        let broken = CertificateAuthority {
            cert_pem: ca.cert_pem.clone(),
            key_pem: "junk".into(),
        };
        assert!(matches!(
            issue_client_cert(&mut OsRng, &broken, "c", UNIX_EPOCH + T0, 1),
            Err(IdentityError::PrivateKey { .. })
        ));
        // A comma in a name is data, not RDN syntax.
        let odd = create_ca(&mut OsRng, "a,b+c=d", UNIX_EPOCH + T0, 1).unwrap();
        let cert = parse_cert(&odd.cert_pem, "CA").unwrap();
        assert_eq!(cert.tbs_certificate.subject.0.len(), 1);
    }

    #[test]
    fn server_names_compare_as_sets() {
        let a = ServerNames {
            dns: vec!["Host".into(), "localhost".into()],
            ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        };
        let b = ServerNames {
            dns: vec!["localhost".into(), "host".into(), "host".into()],
            ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        };
        assert!(a.same_as(&b));
        let mut c = b.clone();
        c.ips.push(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2)));
        assert!(!a.same_as(&c));
    }

    #[test]
    fn fingerprints_and_pem_files_of_certificates() {
        let now = SystemTime::now();
        let a = create_ca(&mut OsRng, "a", now, 10).unwrap();
        let b = create_ca(&mut OsRng, "b", now, 10).unwrap();
        let fa = cert_fingerprint_sha256(&a.cert_pem).unwrap();
        assert_eq!(fa.len(), 32 * 3 - 1, "{fa}");
        assert!(
            fa.chars()
                .all(|c| c == ':' || c.is_ascii_digit() || c.is_ascii_uppercase()),
            "{fa}"
        );
        assert_ne!(fa, cert_fingerprint_sha256(&b.cert_pem).unwrap());
        // An independent reader computes the same fingerprint.
        if std::path::Path::new("/usr/bin/openssl").exists() {
            let mut child = std::process::Command::new("openssl")
                .args(["x509", "-noout", "-fingerprint", "-sha256"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(a.cert_pem.as_bytes()).unwrap();
            let out = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
            assert_eq!(out.trim().rsplit('=').next(), Some(fa.as_str()), "{out}");
        }
        let file = format!("comment\n{}\n{}", a.cert_pem, b.cert_pem);
        let certs = read_certificates(&file, "corp.pem").unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].fingerprint, fa);
        assert_eq!(certs[0].pem, a.cert_pem);
        assert!(certs[1].subject.contains("b"), "{}", certs[1].subject);
        for bad in [
            "",
            "not a certificate",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            let err = read_certificates(bad, "corp.pem").unwrap_err().to_string();
            assert!(err.contains("corp.pem"), "{err}");
        }
    }
}
