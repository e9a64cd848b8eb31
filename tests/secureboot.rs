//! Secure Boot with Microsoft's keys: the raw disk and the ISO of `images/minimal.toml` boot
//! through Debian's signed shim, GRUB and kernel under OVMF with Secure Boot enforced
//! (`OVMF_VARS_4M.ms.fd`: Microsoft's KEK and db enrolled), the guest's kernel reports Secure
//! Boot on and locks itself down, a kernel or GRUB with one flipped byte is refused, and the
//! same disk still boots with Secure Boot off.
//!
//! The definition is `images/minimal.toml` without `quiet`, so that the kernel's informational
//! lines (its Secure Boot state) reach the serial console.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

const READY: &str = "uvmkit-init: ready";
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// What the kernel logs when the firmware says Secure Boot is on (arch/x86/kernel/setup.c).
const SECURE_BOOT_ON: &str = "Secure boot enabled";
/// What it logs when it is off.
const SECURE_BOOT_OFF: &str = "Secure boot disabled";
/// What Debian's GRUB prints when shim's verifier rejects the kernel (grub-core/kern/efi/sb.c).
const GRUB_REFUSES: &str = "bad shim signature";
/// What shim prints when GRUB fails verification against its embedded Debian CA and db.
const SHIM_REFUSES: &str = "Verification failed";

/// The output directory of the one build all tests share: the raw disk, the ISO and the
/// `efi` artifacts (whose kernel is the one on the ESP).
fn built() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let dir = test_dir("secureboot-build");
        let text = std::fs::read_to_string(repo_root().join("images/minimal.toml")).unwrap();
        let loud = text.replace(
            "cmdline = \"console=tty0 console=ttyS0 quiet\"",
            "cmdline = \"console=tty0 console=ttyS0\"",
        );
        assert_ne!(loud, text, "images/minimal.toml's cmdline changed; update this test");
        let def = dir.join("minimal.toml");
        std::fs::write(&def, loud).unwrap();
        let out = dir.join("out");
        let log = uvmkit_ok(&[
            "build",
            def.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--format",
            "efi,iso,raw",
        ]);
        assert!(log.contains("ESP boots shim"), "{log}");
        out
    })
}

fn artifact(name: &str) -> PathBuf {
    let p = built().join(name);
    assert!(p.exists(), "{} was not written", p.display());
    p
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// OVMF with Secure Boot enforced and Microsoft's keys enrolled, with a private copy of the
/// variable store; SMM guards the variables as the secure-boot build requires.
fn secure_boot_firmware(dir: &Path) -> Vec<String> {
    let vars = dir.join("OVMF_VARS.ms.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.ms.fd", &vars).expect("OVMF installed (tests/install-deps.sh)");
    s(&[
        "-machine",
        "q35,smm=on",
        "-global",
        "driver=cfi.pflash01,property=secure,value=on",
        "-drive",
        "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
        "-drive",
        &format!("if=pflash,format=raw,file={}", vars.display()),
    ])
}

fn disk_args(path: &Path) -> Vec<String> {
    s(&[
        "-drive",
        &format!("if=virtio,format=raw,file={},snapshot=on", path.display()),
    ])
}

fn cdrom_args(path: &Path) -> Vec<String> {
    s(&[
        "-drive",
        &format!("if=ide,media=cdrom,format=raw,readonly=on,file={}", path.display()),
    ])
}

/// Boots `media` under `firmware` until the init is ready; returns the serial log.
fn boot_to_ready(name: &str, firmware: fn(&Path) -> Vec<String>, media: Vec<String>) -> String {
    let dir = test_dir(name);
    let mut args = firmware(&dir);
    args.extend(media);
    let mut guest = Guest::start(&dir, &args);
    let t = guest.wait_for(READY, BOOT_TIMEOUT);
    eprintln!("{name}: ready after {t:.1}s");
    guest.log()
}

#[test]
fn raw_disk_and_iso_boot_with_secure_boot_enforced() {
    let (raw, iso) = (artifact("minimal.raw"), artifact("minimal.iso"));
    let disk = std::thread::spawn(move || boot_to_ready("sb-raw", secure_boot_firmware, disk_args(&raw)));
    let cd = std::thread::spawn(move || boot_to_ready("sb-iso", secure_boot_firmware, cdrom_args(&iso)));
    let logs = [("raw disk", disk.join().unwrap()), ("ISO", cd.join().unwrap())];
    for (what, log) in &logs {
        assert!(
            log.contains(SECURE_BOOT_ON),
            "{what}: the kernel did not report Secure Boot on:\n{log}"
        );
        // Under Secure Boot Debian's kernel locks itself down, so only signed modules load:
        // every module the init loads must have kept its signature.
        assert!(
            log.contains("locked down"),
            "{what}: the kernel did not lock down:\n{log}"
        );
        let modules = log.lines().find(|l| l.contains("modules loaded")).unwrap_or_default();
        assert!(
            modules.contains(" 0 failed)"),
            "{what}: modules failed to load under lockdown: {modules}\n{log}"
        );
    }
    // The ISO's signed UKI carries only the boot initrd: the image comes from the CD.
    let log = &logs[1].1;
    assert!(
        log.contains("system image: /uvmkit/system.squashfs on the CD /dev/sr0") && log.contains("sha256 ok"),
        "ISO: the system image was not read from the CD:\n{log}"
    );
}

#[test]
fn raw_disk_boots_with_secure_boot_off() {
    let log = boot_to_ready("sb-off-raw", ovmf_args, disk_args(&artifact("minimal.raw")));
    assert!(
        log.contains(SECURE_BOOT_OFF),
        "the kernel did not report Secure Boot off:\n{log}"
    );
    assert!(log.contains("uvmkit-data"), "no data partition:\n{log}");
}

/// The byte offset and length of the file at `esp_path` on the raw disk's ESP (GPT partition
/// 1), found by its contents: `build_esp` stores every file contiguously and 4 KiB-aligned.
fn esp_file_extent(raw: &Path, esp_path: &str, scratch: &Path) -> (u64, usize) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(raw).unwrap();
    // GPT entry array at LBA 2 (UEFI 2.10, 5.3.3); the first entry's StartingLBA at byte 32.
    let mut entry = [0u8; 48];
    f.seek(SeekFrom::Start(2 * 512)).unwrap();
    f.read_exact(&mut entry).unwrap();
    let first = u64::from_le_bytes(entry[32..40].try_into().unwrap());
    let last = u64::from_le_bytes(entry[40..48].try_into().unwrap());
    let esp_start = first * 512;
    let copy = scratch.join(esp_path.rsplit('/').next().unwrap());
    let (ok, text) = run(
        "mcopy",
        &[
            "-n",
            "-i",
            &format!("{}@@{esp_start}", raw.display()),
            &format!("::/{esp_path}"),
            copy.to_str().unwrap(),
        ],
    );
    assert!(ok, "mcopy {esp_path}: {text}");
    let content = std::fs::read(&copy).unwrap();
    let mut esp = vec![0u8; ((last + 1 - first) * 512) as usize];
    f.seek(SeekFrom::Start(esp_start)).unwrap();
    f.read_exact(&mut esp).unwrap();
    let head = &content[..4096.min(content.len())];
    let at = (0..esp.len() - head.len())
        .step_by(4096)
        .find(|&o| &esp[o..o + head.len()] == head && esp[o..].starts_with(&content))
        .unwrap_or_else(|| panic!("{esp_path} not found contiguous on the ESP"));
    (esp_start + at as u64, content.len())
}

/// A sparse copy of the raw disk in `dir` with one byte in the middle of `esp_path` inverted.
fn tampered_disk(dir: &Path, esp_path: &str) -> PathBuf {
    use std::io::{Read, Seek, SeekFrom, Write};
    let copy = dir.join("tampered.raw");
    let (ok, text) = run(
        "cp",
        &[
            "--sparse=always",
            artifact("minimal.raw").to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    );
    assert!(ok, "cp: {text}");
    let (offset, len) = esp_file_extent(&copy, esp_path, dir);
    let at = offset + len as u64 / 2;
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&copy).unwrap();
    let mut byte = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut byte).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[!byte[0]]).unwrap();
    copy
}

/// Boots a disk whose `esp_path` has one flipped byte under Secure Boot: the refusal `refusal`
/// appears and the init never starts.
fn tampered_boot_is_refused(name: &str, esp_path: &str, refusal: &str) {
    let dir = test_dir(name);
    let disk = tampered_disk(&dir, esp_path);
    let mut args = secure_boot_firmware(&dir);
    args.extend(disk_args(&disk));
    let mut guest = Guest::start(&dir, &args);
    let t = guest.wait_for(refusal, BOOT_TIMEOUT);
    eprintln!("{name}: {refusal:?} after {t:.1}s");
    // Give a boot that went on anyway the time to show it.
    std::thread::sleep(Duration::from_secs(5));
    let log = guest.log();
    assert!(
        !log.contains("uvmkit-init") && !log.contains("Linux version"),
        "{name}: the tampered {esp_path} was started:\n{log}"
    );
    guest.kill();
    let _ = std::fs::remove_file(disk);
}

#[test]
fn a_kernel_or_grub_with_one_flipped_byte_is_refused() {
    let kernel = std::thread::spawn(|| tampered_boot_is_refused("sb-bad-kernel", "boot/vmlinuz", GRUB_REFUSES));
    let grub = std::thread::spawn(|| tampered_boot_is_refused("sb-bad-grub", "EFI/BOOT/grubx64.efi", SHIM_REFUSES));
    kernel.join().unwrap();
    grub.join().unwrap();
}

#[test]
fn the_esp_holds_microsofts_shim_and_debians_grub_and_kernel() {
    if !have("sbverify") {
        return;
    }
    let raw = artifact("minimal.raw");
    let dir = test_dir("sb-esp");
    for (path, signer) in [
        ("EFI/BOOT/BOOTX64.EFI", "Microsoft Corporation UEFI CA 2011"),
        ("EFI/BOOT/grubx64.efi", "Debian Secure Boot CA"),
        ("EFI/BOOT/mmx64.efi", "Debian Secure Boot CA"),
        ("boot/vmlinuz", "Debian Secure Boot CA"),
    ] {
        esp_file_extent(&raw, path, &dir);
        let file = dir.join(path.rsplit('/').next().unwrap());
        let (_, list) = run("sbverify", &["--list", file.to_str().unwrap()]);
        assert!(list.contains(signer), "{path} is not signed by {signer}:\n{list}");
    }
    // The kernel on the ESP is the image's kernel, and grub.cfg boots it with the initrd.
    assert_eq!(
        std::fs::read(dir.join("vmlinuz")).unwrap(),
        std::fs::read(artifact("minimal-kernel")).unwrap()
    );
    esp_file_extent(&raw, "EFI/debian/grub.cfg", &dir);
    let cfg = std::fs::read_to_string(dir.join("grub.cfg")).unwrap();
    assert!(
        cfg.contains("\nlinux /boot/vmlinuz 'console=tty0' 'console=ttyS0'\ninitrd /boot/initrd.img\nboot\n"),
        "{cfg}"
    );
    // The ISO's ISO 9660 tree lists the same grub.cfg (GRUB may read it there).
    if have("xorriso") {
        let out = dir.join("iso-grub.cfg");
        let (ok, text) = run(
            "xorriso",
            &[
                "-osirrox",
                "on",
                "-indev",
                artifact("minimal.iso").to_str().unwrap(),
                "-extract",
                "/EFI/debian/grub.cfg",
                out.to_str().unwrap(),
            ],
        );
        assert!(ok, "xorriso: {text}");
        assert_eq!(std::fs::read_to_string(out).unwrap(), cfg);
    }
}
