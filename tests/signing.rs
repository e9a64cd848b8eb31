//! Secure Boot with the user's own key: `images/minimal.toml` built with `--sign-key` and
//! `--sign-cert` (the test key Debian's OVMF enrols in the snakeoil variable store's `db`),
//! checked by `sbverify` and `osslsigncode` (which hash the image in two ways: by sections,
//! and flat), booted under OVMF with Secure Boot enforced, refused when unsigned or changed,
//! and rebuilt to the same bytes.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

const READY: &str = "uvmkit-init: ready";
/// OVMF's boot manager when the image verification refuses a boot option.
const DENIED: &str = "Access Denied";
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

const SNAKEOIL_KEY: &str = "/usr/share/ovmf/PkKek-1-snakeoil.key";
const SNAKEOIL_CERT: &str = "/usr/share/ovmf/PkKek-1-snakeoil.pem";
const SECBOOT_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const SNAKEOIL_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";

/// The test key, decrypted (its passphrase is `snakeoil`, as Debian's edk2 documents), or
/// `None` when OVMF or openssl is missing.
fn test_key() -> Option<&'static Path> {
    static KEY: OnceLock<Option<PathBuf>> = OnceLock::new();
    KEY.get_or_init(|| {
        for f in [SNAKEOIL_KEY, SNAKEOIL_CERT, SECBOOT_CODE, SNAKEOIL_VARS] {
            if !Path::new(f).exists() {
                eprintln!("note: {f} is missing (ovmf, tests/install-deps.sh); skipping");
                return None;
            }
        }
        if !have("openssl") {
            return None;
        }
        let dir = test_dir("signing-key");
        let key = dir.join("key.pem");
        let (ok, out) = run(
            "openssl",
            &[
                "pkey",
                "-in",
                SNAKEOIL_KEY,
                "-passin",
                "pass:snakeoil",
                "-out",
                key.to_str().unwrap(),
            ],
        );
        assert!(ok, "openssl pkey: {out}");
        Some(key)
    })
    .as_deref()
}

/// Builds minimal.toml into a fresh `name` directory (a small disk: the ESP is what matters).
fn build(name: &str, signed: bool) -> PathBuf {
    let out = test_dir(name);
    let image = repo_root().join("images/minimal.toml");
    let mut args = vec![
        "build".to_string(),
        image.to_str().unwrap().into(),
        "-o".into(),
        out.to_str().unwrap().into(),
        "--format".into(),
        "efi,raw,iso".into(),
        "--disk-size".into(),
        "128MiB".into(),
        "--quiet".into(),
    ];
    if signed {
        let key = test_key().unwrap();
        args.extend(["--sign-key".into(), key.to_str().unwrap().into()]);
        args.extend(["--sign-cert".into(), SNAKEOIL_CERT.into()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    eprintln!("{}", uvmkit_ok(&args));
    out
}

/// The signed build every test shares.
fn signed() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| build("signing-signed", true))
}

/// The ESP's first byte in a raw disk: partition entry 1 of the GPT (UEFI 2.10 section
/// 5.3.3: the entries start at LBA 2; StartingLBA at byte 32 of an entry).
fn esp_offset(raw: &[u8]) -> usize {
    assert_eq!(&raw[512..520], b"EFI PART", "no GPT header");
    let first_lba = u64::from_le_bytes(raw[1024 + 32..1024 + 40].try_into().unwrap());
    first_lba as usize * 512
}

/// The `\EFI\BOOT\BOOTX64.EFI` of the FAT file system at `offset` in `image`, read by mtools.
fn esp_boot_file(image: &Path, offset: usize, dir: &Path) -> Vec<u8> {
    let out = dir.join("BOOTX64.EFI");
    let _ = std::fs::remove_file(&out);
    let (ok, text) = run(
        "mcopy",
        &[
            "-n",
            "-i",
            &format!("{}@@{offset}", image.display()),
            "::EFI/BOOT/BOOTX64.EFI",
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "mcopy: {text}");
    std::fs::read(out).unwrap()
}

/// Boots `disk` under OVMF with Secure Boot enforced and the snakeoil certificate in `db`.
fn secure_boot(dir: &Path, disk: &Path) -> Guest {
    let vars = dir.join("OVMF_VARS.snakeoil.fd");
    std::fs::copy(SNAKEOIL_VARS, &vars).unwrap();
    let args: Vec<String> = [
        "-machine",
        "q35,smm=on",
        "-global",
        "driver=cfi.pflash01,property=secure,value=on",
        "-drive",
        &format!("if=pflash,format=raw,readonly=on,file={SECBOOT_CODE}"),
        "-drive",
        &format!("if=pflash,format=raw,file={}", vars.display()),
        "-drive",
        &format!("file={},format=raw,if=virtio,snapshot=on", disk.display()),
    ]
    .map(String::from)
    .to_vec();
    Guest::start(dir, &args)
}

/// Expects the firmware to refuse `disk`: its boot manager says Access Denied and no kernel
/// output follows.
fn expect_refused(name: &str, disk: &Path) {
    let dir = test_dir(name);
    let mut guest = secure_boot(&dir, disk);
    let t = guest.wait_for(DENIED, BOOT_TIMEOUT);
    // The boot manager goes on to its other options (the shell, also refused) and stops.
    std::thread::sleep(Duration::from_secs(5));
    let log = guest.log();
    guest.kill();
    assert!(
        !log.contains("Linux version") && !log.contains("uvmkit-init"),
        "the firmware started the kernel:\n{log}"
    );
    assert!(log.contains("UEFI Misc Device") || log.contains("Boot0001"), "{log}");
    eprintln!("{name}: refused after {t:.1}s");
}

#[test]
fn secure_boot_starts_the_signed_disk_and_refuses_changed_or_unsigned_ones() {
    if test_key().is_none() || !have("qemu-system-x86_64") || !have("mcopy") {
        return;
    }
    let out = signed();
    let raw = out.join("minimal.raw");
    // A copy whose UKI on the ESP has one byte of its kernel changed.
    let tampered = test_dir("signing-tampered-disk").join("minimal.raw");
    let mut bytes = std::fs::read(&raw).unwrap();
    let esp = esp_offset(&bytes);
    // The disk's ESP holds the small UKI (its initrd finds the system image on the disk), not
    // the published minimal.efi, which carries the image in its initrd.
    let uki = esp_boot_file(&raw, esp, &test_dir("signing-tampered-esp"));
    let at = esp
        + bytes[esp..]
            .windows(4096)
            .position(|w| w == &uki[..4096])
            .expect("the UKI is stored contiguously on the ESP");
    let linux = find_section(&uki, b".linux\0\0");
    bytes[at + linux + 0x2000] ^= 0x01;
    std::fs::write(&tampered, &bytes).unwrap();
    drop(bytes);
    let unsigned = build("signing-unsigned", false);

    let signed_boot = std::thread::spawn(move || {
        let dir = test_dir("signing-boot");
        let mut guest = secure_boot(&dir, &raw);
        let t = guest.wait_for(READY, BOOT_TIMEOUT);
        let log = guest.log();
        guest.kill();
        assert!(!log.contains(DENIED), "{log}");
        eprintln!("signed disk: ready after {t:.1}s under Secure Boot");
    });
    let refused = std::thread::spawn(move || {
        expect_refused("signing-boot-tampered", &tampered);
        expect_refused("signing-boot-unsigned", &unsigned.join("minimal.raw"));
    });
    signed_boot.join().unwrap();
    refused.join().unwrap();
}

/// The file offset of the section named `name` in the PE image `pe`.
fn find_section(pe: &[u8], name: &[u8; 8]) -> usize {
    let pe_at = u32::from_le_bytes(pe[0x3c..0x40].try_into().unwrap()) as usize;
    let sections = u16::from_le_bytes(pe[pe_at + 6..pe_at + 8].try_into().unwrap()) as usize;
    let opt_len = u16::from_le_bytes(pe[pe_at + 20..pe_at + 22].try_into().unwrap()) as usize;
    let table = pe_at + 24 + opt_len;
    (0..sections)
        .map(|i| &pe[table + i * 40..table + i * 40 + 40])
        .find(|h| &h[..8] == name)
        .map(|h| u32::from_le_bytes(h[20..24].try_into().unwrap()) as usize)
        .unwrap_or_else(|| panic!("no {} section", String::from_utf8_lossy(name)))
}

#[test]
fn every_copy_of_the_uki_is_the_signed_one_and_sbverify_and_osslsigncode_accept_it() {
    if test_key().is_none() || !have("mcopy") {
        return;
    }
    let out = signed();
    let efi = std::fs::read(out.join("minimal.efi")).unwrap();
    let dir = test_dir("signing-copies");
    // The disk's ESP holds the small UKI (kernel and boot initrd; the system image is a
    // partition of its own): signed with the same key, with the same kernel as minimal.efi.
    let raw = out.join("minimal.raw");
    let esp = esp_offset(&std::fs::read(&raw).unwrap()[..64 << 10]);
    let esp_uki = esp_boot_file(&raw, esp, &dir);
    assert!(esp_uki.len() < efi.len(), "the ESP's UKI is not the small one");
    let linux = |pe: &[u8]| {
        let at = find_section(pe, b".linux\0\0");
        pe[at..at + 4096].to_vec()
    };
    assert_eq!(linux(&esp_uki), linux(&efi), "the ESP's UKI boots another kernel");
    let esp_uki_path = dir.join("esp-BOOTX64.EFI");
    std::fs::write(&esp_uki_path, &esp_uki).unwrap();
    if have("sbverify") {
        let (ok, text) = run("sbverify", &["--cert", SNAKEOIL_CERT, esp_uki_path.to_str().unwrap()]);
        assert!(
            ok && text.contains("Signature verification OK"),
            "sbverify of the ESP's UKI: {text}"
        );
    }
    // The ISO's El Torito EFI image holds its own small UKI (kernel and the boot initrd that
    // finds the system image on the medium): signed with the same key, the same kernel.
    if have("xorriso") {
        let img = dir.join("efi.img");
        let (ok, text) = run(
            "xorriso",
            &[
                "-osirrox",
                "on",
                "-indev",
                out.join("minimal.iso").to_str().unwrap(),
                "-extract",
                "/boot/efi.img",
                img.to_str().unwrap(),
            ],
        );
        assert!(ok, "xorriso: {text}");
        let iso_uki = esp_boot_file(&img, 0, &dir);
        assert!(iso_uki.len() < efi.len(), "the ISO's UKI is not a small one");
        assert_eq!(linux(&iso_uki), linux(&efi), "the ISO's UKI boots another kernel");
        if have("sbverify") {
            let iso_uki_path = dir.join("iso-BOOTX64.EFI");
            std::fs::write(&iso_uki_path, &iso_uki).unwrap();
            let (ok, text) = run("sbverify", &["--cert", SNAKEOIL_CERT, iso_uki_path.to_str().unwrap()]);
            assert!(
                ok && text.contains("Signature verification OK"),
                "sbverify of the ISO's UKI: {text}"
            );
        }
    }
    // A WIN_CERTIFICATE at the end, where data directory 4 says.
    let pe_at = u32::from_le_bytes(efi[0x3c..0x40].try_into().unwrap()) as usize;
    let dir4 = pe_at + 24 + 112 + 4 * 8;
    let offset = u32::from_le_bytes(efi[dir4..dir4 + 4].try_into().unwrap()) as usize;
    let size = u32::from_le_bytes(efi[dir4 + 4..dir4 + 8].try_into().unwrap()) as usize;
    assert_eq!(offset + size, efi.len());
    assert_eq!(&efi[offset + 4..offset + 8], &[0x00, 0x02, 0x02, 0x00]);
    if have("sbverify") {
        let (ok, text) = run(
            "sbverify",
            &["--cert", SNAKEOIL_CERT, out.join("minimal.efi").to_str().unwrap()],
        );
        assert!(ok && text.contains("Signature verification OK"), "sbverify: {text}");
        // Another certificate does not verify it.
        let other = repo_root().join("builder/crates/authenticode/tests/data/cert.pem");
        let (ok, text) = run(
            "sbverify",
            &[
                "--cert",
                other.to_str().unwrap(),
                out.join("minimal.efi").to_str().unwrap(),
            ],
        );
        assert!(!ok, "sbverify accepted the UKI with another certificate: {text}");
    }
    if have("osslsigncode") {
        // osslsigncode hashes every byte of the file but the checksum, the certificate table
        // entry and the table itself; it agrees with the section-wise Authenticode hash only
        // when no byte lies outside the headers and sections.
        let efi_path = out.join("minimal.efi");
        let verify = |cert: &str| {
            run(
                "osslsigncode",
                &["verify", "-CAfile", cert, "-in", efi_path.to_str().unwrap()],
            )
        };
        let (ok, text) = verify(SNAKEOIL_CERT);
        let digest = |label: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(label))
                .map(|v| v.trim_start_matches([' ', ':']).trim().to_string())
                .unwrap_or_else(|| panic!("no {label:?} in osslsigncode's output:\n{text}"))
        };
        assert_eq!(
            digest("Current message digest"),
            digest("Calculated message digest"),
            "osslsigncode computes another digest than the signed one:\n{text}"
        );
        assert!(
            ok && text.contains("Signature verification: ok") && text.contains("Succeeded"),
            "osslsigncode verify: {text}"
        );
        let other = repo_root().join("builder/crates/authenticode/tests/data/cert.pem");
        let (ok, text) = verify(other.to_str().unwrap());
        assert!(!ok, "osslsigncode accepted the UKI with another CA: {text}");
    }
    // The manifest names the certificate, as openssl fingerprints it, and nothing secret.
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let (ok, fp) = run(
        "openssl",
        &["x509", "-in", SNAKEOIL_CERT, "-noout", "-fingerprint", "-sha256"],
    );
    assert!(ok, "{fp}");
    let fp = fp.trim().rsplit('=').next().unwrap().replace(':', "").to_lowercase();
    assert_eq!(m["uki_signature"]["certificate_sha256"], fp.as_str(), "{manifest}");
    assert_eq!(m["uki_signature"]["format"], "authenticode");
    assert_eq!(
        m["uki_signature"]["subject"],
        "O=SnakeOil,L=Fort Collins,ST=Colorado,C=US"
    );
    assert!(!manifest.contains("PRIVATE"), "{manifest}");
}

#[test]
fn signed_builds_repeat_byte_for_byte() {
    if test_key().is_none() {
        return;
    }
    let first = std::fs::read_to_string(signed().join("SHA256SUMS")).unwrap();
    let again = build("signing-signed-again", true);
    let second = std::fs::read_to_string(again.join("SHA256SUMS")).unwrap();
    assert_eq!(first, second, "two signed builds differ");
    assert!(first.contains("  minimal.efi\n"), "{first}");
    let _ = std::fs::remove_dir_all(again);
}

#[test]
fn sign_options_are_checked_before_building() {
    let Some(key) = test_key() else {
        return;
    };
    let image = repo_root().join("images/minimal.toml");
    let out = test_dir("signing-refused");
    let image = image.to_str().unwrap();
    let o = out.to_str().unwrap();
    let key = key.to_str().unwrap();
    let refused = |args: &[&str], needles: &[&str]| {
        let r = uvmkit(args);
        let stderr = String::from_utf8_lossy(&r.stderr).into_owned();
        assert_eq!(r.status.code(), Some(2), "uvmkit {args:?}: {stderr}");
        for n in needles {
            assert!(stderr.contains(n), "uvmkit {args:?}: no {n:?} in: {stderr}");
        }
        assert!(
            std::fs::read_dir(&out).map(|d| d.count() == 0).unwrap_or(true),
            "wrote artifacts"
        );
    };
    refused(&["build", image, "-o", o, "--sign-key", key], &["--sign-cert"]);
    refused(
        &["build", image, "-o", o, "--sign-cert", SNAKEOIL_CERT],
        &["--sign-key"],
    );
    let other = repo_root().join("builder/crates/authenticode/tests/data/other-cert.pem");
    let other = other.to_str().unwrap();
    refused(
        &["build", image, "-o", o, "--sign-key", key, "--sign-cert", other],
        &[other, "does not certify the key", key],
    );
    refused(
        &[
            "build",
            image,
            "-o",
            o,
            "--sign-key",
            SNAKEOIL_KEY,
            "--sign-cert",
            SNAKEOIL_CERT,
        ],
        &[SNAKEOIL_KEY, "encrypted"],
    );
    refused(
        &[
            "build",
            image,
            "-o",
            o,
            "--sign-key",
            SNAKEOIL_CERT,
            "--sign-cert",
            SNAKEOIL_CERT,
        ],
        &[SNAKEOIL_CERT, "PRIVATE KEY"],
    );
    refused(
        &[
            "build",
            image,
            "-o",
            o,
            "--sign-key",
            "/nonexistent/key.pem",
            "--sign-cert",
            SNAKEOIL_CERT,
        ],
        &["/nonexistent/key.pem"],
    );
}
