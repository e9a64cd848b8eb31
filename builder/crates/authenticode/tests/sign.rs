//! Signing real and hand-made PE images, checked against the specification's hash ranges and
//! by independent verifiers (`sbverify` from sbsigntool, `osslsigncode`) when installed.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use uvmkit_authenticode::{image_digest, sign, Certificate, KeyError, PeError, SignError, SigningKey};

fn data(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)).unwrap()
}

fn test_key() -> (SigningKey, Vec<Certificate>) {
    (
        SigningKey::from_pem(&data("key.pem")).unwrap(),
        Certificate::chain_from_pem(&data("cert.pem")).unwrap(),
    )
}

/// Offsets in [`tiny_pe`]: the optional header starts at 88.
const CHECKSUM_AT: usize = 88 + 64;
const CERT_DIR_AT: usize = 88 + 112 + 4 * 8;

/// A PE32+ image with two sections (a gap between them when `gap`) and data after the last
/// one, with a length that is not a multiple of 8, built field by field from the PE format.
fn tiny_pe_with(gap: bool) -> Vec<u8> {
    let data_at = if gap { 0x1000 } else { 0x400 };
    let mut pe = vec![0u8; 5220];
    pe[..2].copy_from_slice(b"MZ");
    pe[0x3c..0x40].copy_from_slice(&64u32.to_le_bytes());
    pe[64..68].copy_from_slice(b"PE\0\0");
    let put16 = |pe: &mut Vec<u8>, at: usize, v: u16| pe[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 = |pe: &mut Vec<u8>, at: usize, v: u32| pe[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put16(&mut pe, 68, 0x8664); // Machine: AMD64
    put16(&mut pe, 70, 2); // NumberOfSections
    put16(&mut pe, 84, 240); // SizeOfOptionalHeader
    put16(&mut pe, 86, 0x0022); // Characteristics: executable, large address aware
    let opt = 88;
    put16(&mut pe, opt, 0x20b);
    put32(&mut pe, opt + 16, 0x1000); // AddressOfEntryPoint
    put32(&mut pe, opt + 32, 0x1000); // SectionAlignment
    put32(&mut pe, opt + 36, 0x200); // FileAlignment
    put32(&mut pe, opt + 56, 0x3000); // SizeOfImage
    put32(&mut pe, opt + 60, 0x200); // SizeOfHeaders
    put32(&mut pe, CHECKSUM_AT, 0x1234_5678); // CheckSum: excluded from the hash
    put16(&mut pe, opt + 68, 10); // Subsystem: EFI application
    put32(&mut pe, opt + 108, 16); // NumberOfRvaAndSizes
    for (i, (name, va, size, pointer)) in [
        (b".text\0\0\0", 0x1000u32, 0x200u32, 0x200u32),
        (b".data\0\0\0", 0x2000, 0x400, data_at),
    ]
    .into_iter()
    .enumerate()
    {
        let h = opt + 240 + i * 40;
        pe[h..h + 8].copy_from_slice(name);
        put32(&mut pe, h + 8, size);
        put32(&mut pe, h + 12, va);
        put32(&mut pe, h + 16, size);
        put32(&mut pe, h + 20, pointer);
        put32(&mut pe, h + 36, 0x6000_0020);
    }
    for (i, b) in pe.iter_mut().enumerate().skip(0x200) {
        *b = (i % 251) as u8;
    }
    pe
}

/// [`tiny_pe_with`] a gap between the sections: the case where the specification's hash
/// differs from hashing the file end to end.
fn tiny_pe() -> Vec<u8> {
    tiny_pe_with(true)
}

#[test]
fn digest_covers_the_specified_ranges_only() {
    let pe = tiny_pe();
    // Headers without CheckSum and the certificate directory, the sections in file order,
    // then everything from SUM_OF_BYTES_HASHED (0x200 + 0x200 + 0x400) to the end.
    let mut expected = Sha256::new();
    expected.update(&pe[..CHECKSUM_AT]);
    expected.update(&pe[CHECKSUM_AT + 4..CERT_DIR_AT]);
    expected.update(&pe[CERT_DIR_AT + 8..0x200]);
    expected.update(&pe[0x200..0x400]);
    expected.update(&pe[0x1000..0x1400]);
    expected.update(&pe[0x800..]);
    let expected: [u8; 32] = expected.finalize().into();
    assert_eq!(image_digest(&pe).unwrap(), expected);
    // The excluded fields do not change it; a byte in a section or in the trailer does.
    let mut other = pe.clone();
    other[CHECKSUM_AT] ^= 0xff;
    other[CERT_DIR_AT + 9] = 0xaa; // the next directory entry: hashed
    assert_ne!(image_digest(&other).unwrap(), expected);
    let mut excluded = pe.clone();
    excluded[CHECKSUM_AT] ^= 0xff;
    assert_eq!(image_digest(&excluded).unwrap(), expected);
    for at in [0x300, 0x1100, 0x1450] {
        let mut changed = pe.clone();
        changed[at] ^= 1;
        assert_ne!(image_digest(&changed).unwrap(), expected, "byte {at:#x}");
    }
}

#[test]
fn signed_image_keeps_its_digest_and_layout() {
    let (key, chain) = test_key();
    let pe = tiny_pe();
    let signed = sign(&pe, &key, &chain).unwrap();
    // The image is padded to 8 bytes, then the WIN_CERTIFICATE follows.
    let table = pe.len().next_multiple_of(8);
    assert_eq!(
        &signed[..pe.len()],
        &pe[..CHECKSUM_AT]
            .iter()
            .chain(&signed[CHECKSUM_AT..CHECKSUM_AT + 4])
            .chain(&pe[CHECKSUM_AT + 4..CERT_DIR_AT])
            .chain(&signed[CERT_DIR_AT..CERT_DIR_AT + 8])
            .chain(&pe[CERT_DIR_AT + 8..])
            .copied()
            .collect::<Vec<u8>>()[..]
    );
    assert!(signed[pe.len()..table].iter().all(|&b| b == 0));
    let dir_offset = u32::from_le_bytes(signed[CERT_DIR_AT..CERT_DIR_AT + 4].try_into().unwrap()) as usize;
    let dir_size = u32::from_le_bytes(signed[CERT_DIR_AT + 4..CERT_DIR_AT + 8].try_into().unwrap()) as usize;
    assert_eq!(dir_offset, table);
    assert_eq!(dir_offset + dir_size, signed.len());
    assert_eq!(dir_size % 8, 0);
    let entry = &signed[table..];
    assert_eq!(u32::from_le_bytes(entry[..4].try_into().unwrap()) as usize, dir_size);
    assert_eq!(&entry[4..8], &[0x00, 0x02, 0x02, 0x00]); // revision 2.0, PKCS_SIGNED_DATA
    assert_eq!(entry[8], 0x30); // a DER SEQUENCE: the ContentInfo
    let mut padded = pe.clone();
    padded.resize(table, 0);
    assert_eq!(image_digest(&signed).unwrap(), image_digest(&padded).unwrap());
}

#[test]
fn signing_is_deterministic_and_independent_of_the_key_encoding() {
    let (key, chain) = test_key();
    let pkcs1 = SigningKey::from_pem(&data("key-pkcs1.pem")).unwrap();
    let pe = tiny_pe();
    let a = sign(&pe, &key, &chain).unwrap();
    assert_eq!(a, sign(&pe, &key, &chain).unwrap());
    assert_eq!(a, sign(&pe, &pkcs1, &chain).unwrap());
    let mut other = pe.clone();
    other[0x300] ^= 1;
    assert_ne!(a[pe.len()..], sign(&other, &key, &chain).unwrap()[pe.len()..]);
}

#[test]
fn refuses_signed_foreign_and_mismatched_inputs() {
    let (key, chain) = test_key();
    let signed = sign(&tiny_pe(), &key, &chain).unwrap();
    assert!(matches!(sign(&signed, &key, &chain), Err(SignError::AlreadySigned)));
    assert!(matches!(
        sign(
            b"#!/bin/sh\necho not a PE image, but long enough for an MS-DOS header........",
            &key,
            &chain
        ),
        Err(SignError::Pe(PeError::NoMzSignature))
    ));
    assert!(matches!(
        sign(b"MZ", &key, &chain),
        Err(SignError::Pe(PeError::Truncated(_)))
    ));
    let mut truncated = tiny_pe();
    truncated.truncate(0x1200);
    let err = sign(&truncated, &key, &chain).unwrap_err();
    assert!(err.to_string().contains("\".data\""), "{err}");
    let other = Certificate::chain_from_pem(&data("other-cert.pem")).unwrap();
    let err = sign(&tiny_pe(), &key, &other).unwrap_err();
    assert!(matches!(err, SignError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("CN=another key"), "{err}");
    assert!(matches!(sign(&tiny_pe(), &key, &[]), Err(SignError::NoCertificate)));
}

#[test]
fn reads_keys_and_certificates_from_pem() {
    let (key, chain) = test_key();
    assert_eq!(key.bits(), 2048);
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0].subject(), "CN=uvmkit Authenticode test key,O=uvmkit");
    assert!(key.matches(&chain[0]));
    // The fingerprint is of the certificate's DER, as openssl prints it.
    let pem = data("cert.pem");
    let der = der::pem::decode_vec(pem.as_bytes()).unwrap().1;
    assert_eq!(chain[0].sha256_fingerprint(), <[u8; 32]>::from(Sha256::digest(&der)));
    // A key and certificate in one file are both found; the certificate file's key is ignored.
    let both = data("key.pem") + &pem;
    assert!(SigningKey::from_pem(&both)
        .unwrap()
        .matches(&Certificate::chain_from_pem(&both).unwrap()[0]));
    assert!(matches!(SigningKey::from_pem(&pem), Err(KeyError::NoPemBlock(_))));
    assert!(matches!(
        Certificate::chain_from_pem(&data("key.pem")),
        Err(KeyError::NoPemBlock(_))
    ));
    let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n";
    assert!(matches!(SigningKey::from_pem(encrypted), Err(KeyError::Encrypted)));
    let ec = "-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----\n";
    assert!(matches!(SigningKey::from_pem(ec), Err(KeyError::NotRsa(_))));
}

/// Where the verifiers' inputs go.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("authenticode").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name} >/dev/null"))
        .status()
        .unwrap()
        .success();
    if !found {
        eprintln!("note: {name} is not installed (tests/install-deps.sh); skipping its check");
    }
    found
}

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `sbverify` (and `osslsigncode verify` when `linear`) accept `signed` against the test
/// certificate, and refuse it with one byte of a section changed. osslsigncode 2.9 hashes the
/// file end to end rather than section by section as the specification (and EDK II, and
/// sbverify) do: the two agree only for images without gaps between their sections.
fn verify_with_tools(name: &str, signed: &[u8], section_byte: usize, linear: bool) {
    let dir = scratch(name);
    let cert = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cert.pem");
    let cert = cert.to_str().unwrap();
    let good = dir.join("signed.efi");
    std::fs::write(&good, signed).unwrap();
    let mut tampered = signed.to_vec();
    tampered[section_byte] ^= 1;
    let bad = dir.join("tampered.efi");
    std::fs::write(&bad, &tampered).unwrap();
    let (good, bad) = (good.to_str().unwrap(), bad.to_str().unwrap());
    if tool("sbverify") {
        let (ok, out) = run("sbverify", &["--cert", cert, good]);
        assert!(ok && out.contains("Signature verification OK"), "sbverify: {out}");
        let (ok, out) = run("sbverify", &["--cert", cert, bad]);
        assert!(
            !ok && out.contains("Signature verification failed"),
            "sbverify accepted a changed image: {out}"
        );
    }
    if linear && tool("osslsigncode") {
        let (ok, out) = run("osslsigncode", &["verify", "-CAfile", cert, "-in", good]);
        assert!(ok && out.contains("Signature verification: ok"), "osslsigncode: {out}");
        // Its own hash and checksum agree with what the signature and header hold.
        let value = |label: &str| {
            out.lines()
                .find(|l| l.trim_start().starts_with(label))
                .map(|l| l.split(':').nth(1).unwrap().trim().to_lowercase())
                .unwrap_or_else(|| panic!("osslsigncode printed no {label:?}: {out}"))
        };
        assert_eq!(
            value("Current message digest"),
            value("Calculated message digest"),
            "{out}"
        );
        // It prints one "PE checksum" when the header's matches its own computation.
        assert!(!out.contains("invalid PE checksum"), "{out}");
        let at = {
            let pe = u32::from_le_bytes(signed[0x3c..0x40].try_into().unwrap()) as usize;
            pe + 24 + 64
        };
        let checksum = u32::from_le_bytes(signed[at..at + 4].try_into().unwrap());
        assert_eq!(value("PE checksum"), format!("{checksum:08x}"), "{out}");
        let (ok, out) = run("osslsigncode", &["verify", "-CAfile", cert, "-in", bad]);
        assert!(
            !ok && out.contains("MISMATCH"),
            "osslsigncode accepted a changed image: {out}"
        );
    }
}

#[test]
fn independent_verifiers_accept_hand_made_images() {
    let (key, chain) = test_key();
    verify_with_tools("tiny", &sign(&tiny_pe_with(false), &key, &chain).unwrap(), 0x500, true);
    verify_with_tools("tiny-gap", &sign(&tiny_pe(), &key, &chain).unwrap(), 0x1100, false);
}

#[test]
fn independent_verifiers_accept_the_systemd_stub() {
    let stub = Path::new("/usr/lib/systemd/boot/efi/linuxx64.efi.stub");
    let Ok(pe) = std::fs::read(stub) else {
        eprintln!("note: {} is not installed (systemd-boot-efi); skipping", stub.display());
        return;
    };
    let (key, chain) = test_key();
    let signed = sign(&pe, &key, &chain).unwrap();
    verify_with_tools("stub", &signed, 0x1000 + 16, true);
}
