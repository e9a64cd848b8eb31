//! `InRelease` signature checks: a seeded test key (cross-checked with `gpgv`), and the real
//! Debian bookworm `InRelease` against the embedded archive keyring.

use std::path::{Path, PathBuf};
use std::process::Command;

use uvmkit_debian::signature::{verify_inrelease, Keyring, SignatureError};
use uvmkit_debian::testing::TestSigner;
use uvmkit_debian::Release;

const RELEASE: &str =
    "Origin: uvmkit-test\nSuite: stable\nCodename: testing-suite\nDate: Sun, 13 Sep 2020 12:26:40 UTC\n\
Architectures: amd64\nComponents: main\nSHA256:\n \
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 0 main/binary-amd64/Packages\n";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("uvmkit-debian-sig-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn test_signer_round_trip() {
    let signer = TestSigner::generate(7);
    let keyring = Keyring::from_bytes(&signer.public_keyring_bytes()).unwrap();
    let signed = signer.clearsign(RELEASE);
    assert!(
        signed.starts_with("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n"),
        "{signed}"
    );
    let text = verify_inrelease(signed.as_bytes(), &keyring).unwrap();
    assert_eq!(text, RELEASE);
    let release = Release::parse(&text).unwrap();
    assert_eq!(release.codename.as_deref(), Some("testing-suite"));

    // Lines starting with '-' are dash-escaped in the message and restored when verified.
    let dashed = "first\n- a line starting with a dash\n-----BEGIN fake\nlast\n";
    let signed = signer.clearsign(dashed);
    assert!(signed.contains("\n- - a line starting"), "dash-escaped:\n{signed}");
    assert_eq!(verify_inrelease(signed.as_bytes(), &keyring).unwrap(), dashed);
}

#[test]
fn test_signer_is_deterministic() {
    let (a, b) = (TestSigner::generate(42), TestSigner::generate(42));
    assert_eq!(a.public_keyring_bytes(), b.public_keyring_bytes());
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.clearsign(RELEASE), b.clearsign(RELEASE));
    assert_ne!(a.fingerprint(), TestSigner::generate(43).fingerprint());
}

#[test]
fn rejects_tampering_unknown_keys_and_missing_signatures() {
    let signer = TestSigner::generate(1);
    let keyring = Keyring::from_bytes(&signer.public_keyring_bytes()).unwrap();
    let signed = signer.clearsign(RELEASE);

    let tampered = signed.replace("Codename: testing-suite", "Codename: evil-suite");
    assert_ne!(tampered, signed);
    let e = verify_inrelease(tampered.as_bytes(), &keyring).unwrap_err();
    assert!(matches!(e, SignatureError::BadSignature { .. }), "{e}");

    let other = Keyring::from_bytes(&TestSigner::generate(2).public_keyring_bytes()).unwrap();
    let e = verify_inrelease(signed.as_bytes(), &other).unwrap_err();
    assert!(matches!(e, SignatureError::UnknownKey { .. }), "{e}");
    assert!(e.to_string().contains(&signer.fingerprint()), "{e}");
    let e = verify_inrelease(signed.as_bytes(), &Keyring::debian_archive()).unwrap_err();
    assert!(matches!(e, SignatureError::UnknownKey { .. }), "{e}");

    // The bare Release text, and a signed header with the signature block removed.
    assert!(matches!(
        verify_inrelease(RELEASE.as_bytes(), &keyring),
        Err(SignatureError::NotSigned(_))
    ));
    let cut = &signed[..signed.find("-----BEGIN PGP SIGNATURE-----").unwrap()];
    assert!(verify_inrelease(cut.as_bytes(), &keyring).is_err());
    // Text appended after the signature is refused rather than ignored.
    let trailing = format!("{signed}\nCodename: evil\n");
    assert!(verify_inrelease(trailing.as_bytes(), &keyring).is_err());
}

#[test]
fn armored_keyrings_load() {
    let signer = TestSigner::generate(9);
    let dir = scratch("armor");
    let bin = dir.join("k.gpg");
    std::fs::write(&bin, signer.public_keyring_bytes()).unwrap();
    let Ok(out) = Command::new("gpg")
        .args(["--batch", "--no-default-keyring", "--homedir"])
        .arg(&dir)
        .arg("--keyring")
        .arg(&bin)
        .args(["--armor", "--export"])
        .output()
    else {
        println!("note: gpg is not installed; skipping the armored-keyring test");
        return;
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let armored = String::from_utf8(out.stdout).unwrap();
    assert!(armored.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    let keyring = Keyring::from_bytes(armored.as_bytes()).unwrap();
    verify_inrelease(signer.clearsign(RELEASE).as_bytes(), &keyring).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// gpgv, the verifier apt itself runs, accepts what the test signer produces.
#[test]
fn gpgv_accepts_test_signatures() {
    if Command::new("gpgv").arg("--version").output().is_err() {
        println!("note: gpgv is not installed; skipping the independent signature check");
        return;
    }
    let signer = TestSigner::generate(5);
    let dir = scratch("gpgv");
    let keyring = dir.join("keyring.gpg");
    std::fs::write(&keyring, signer.public_keyring_bytes()).unwrap();
    let inrelease = dir.join("InRelease");
    std::fs::write(&inrelease, signer.clearsign(RELEASE)).unwrap();
    let gpgv = |file: &Path| {
        Command::new("gpgv")
            .arg("--keyring")
            .arg(&keyring)
            .arg(file)
            .output()
            .unwrap()
    };
    let out = gpgv(&inrelease);
    assert!(
        out.status.success(),
        "gpgv refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tampered = dir.join("Tampered");
    std::fs::write(
        &tampered,
        signer.clearsign(RELEASE).replace("main/binary", "evil/binary"),
    )
    .unwrap();
    assert!(
        !gpgv(&tampered).status.success(),
        "gpgv must refuse the tampered copy too"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The first URI of the host's apt sources (deb822 `.sources` or one-line `sources.list`).
pub fn host_mirror() -> Option<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    files.sort();
    files.push(PathBuf::from("/etc/apt/sources.list"));
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for line in text.lines().map(str::trim) {
            if let Some(uri) = line.strip_prefix("URIs:") {
                if let Some(u) = uri.split_whitespace().next() {
                    return Some(u.trim_end_matches('/').to_string());
                }
            }
            if let Some(rest) = line.strip_prefix("deb ") {
                if let Some(u) = rest.split_whitespace().find(|w| w.starts_with("http")) {
                    return Some(u.trim_end_matches('/').to_string());
                }
            }
        }
    }
    None
}

/// The bookworm `InRelease`: the fixture in `$UVMKIT_TEST_DEBIAN_FIXTURES` when set, else
/// fetched from the host's mirror with curl.
fn real_inrelease() -> Option<Vec<u8>> {
    let fixture = Path::new(&std::env::var_os("UVMKIT_TEST_DEBIAN_FIXTURES").unwrap_or_default()).join("InRelease");
    if let Ok(data) = std::fs::read(&fixture) {
        return Some(data);
    }
    let mirror = host_mirror()?;
    let out = Command::new("curl")
        .args(["-sSf", "--max-time", "60"])
        .arg(format!("{mirror}/dists/bookworm/InRelease"))
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

#[test]
fn real_bookworm_inrelease() {
    let Some(data) = real_inrelease() else {
        println!("note: no bookworm InRelease fixture and the mirror is unreachable; skipping");
        return;
    };
    let keyring = Keyring::debian_archive();
    let started = std::time::Instant::now();
    let text = verify_inrelease(&data, &keyring).unwrap();
    let verify_time = started.elapsed();
    let release = Release::parse(&text).unwrap();
    assert_eq!(release.codename.as_deref(), Some("bookworm"));
    assert!(release.components.iter().any(|c| c == "main"));
    let packages = release
        .sha256_of("main/binary-amd64/Packages.xz")
        .expect("Packages.xz listed");
    println!(
        "bookworm InRelease verified in {verify_time:.2?}: {} {} dated {}, {} files listed, main/binary-amd64/Packages.xz is {} bytes",
        release.suite.as_deref().unwrap_or("?"),
        release.version.as_deref().unwrap_or("?"),
        release.date.as_deref().unwrap_or("?"),
        release.files.len(),
        packages.size
    );

    // One changed byte in the signed body must be refused.
    let text_str = std::str::from_utf8(&data).unwrap();
    let pos = text_str.find(&packages.sha256).unwrap();
    let mut tampered = data.clone();
    tampered[pos] = if tampered[pos] == b'0' { b'1' } else { b'0' };
    let e = verify_inrelease(&tampered, &keyring).unwrap_err();
    assert!(matches!(e, SignatureError::BadSignature { .. }), "{e}");

    // A keyring without Debian's keys knows none of the signers.
    let stranger = Keyring::from_bytes(&TestSigner::generate(3).public_keyring_bytes()).unwrap();
    let e = verify_inrelease(&data, &stranger).unwrap_err();
    assert!(matches!(e, SignatureError::UnknownKey { .. }), "{e}");
    println!("{e}");
}
