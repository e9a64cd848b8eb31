//! The final proof: the hybrid ISO boots a real kernel and initrd four ways under QEMU
//! (SeaBIOS and OVMF, as a CD-ROM and as a hard disk) and the initrd's `/init` prints a marker.
//!
//! Inputs, each skipped with a note when missing: a Debian kernel (`UVMKIT_TEST_KERNEL`, or the
//! newest `vmlinuz-*` in `UVMKIT_TEST_KERNEL_DIR`), a static busybox (`UVMKIT_TEST_BUSYBOX`, or
//! extracted from the `busybox-static` .deb in `UVMKIT_TEST_DEB_DIR`), systemd-boot's
//! `linuxx64.efi.stub` (`UVMKIT_TEST_EFI_STUB`) for the UKI the UEFI entry boots, and the tools
//! qemu-system-x86_64, cpio, bsdtar and objcopy. Set `UVMKIT_TEST_KEEP=DIR` to keep the image.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{bios_boot, have, run, scratch, LDLINUX_C32};
use uvmkit_disk::{build_esp, EspFile, EspOptions};
use uvmkit_filetree::FileData;
use uvmkit_iso::{write_iso, write_iso_with_aliases, BootImage, EfiAlias, EfiBoot, IsoFile, IsoOptions};

const MARKER: &str = "UVMKIT-ISO-BOOT-OK";
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn env_or(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

/// The newest file in `dir` whose name starts with `prefix`.
fn newest(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort();
    found.pop()
}

fn kernel() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("UVMKIT_TEST_KERNEL") {
        return Some(PathBuf::from(k));
    }
    newest(&env_or("UVMKIT_TEST_KERNEL_DIR", ""), "vmlinuz-")
}

fn busybox(work: &Path) -> Option<PathBuf> {
    if let Some(b) = std::env::var_os("UVMKIT_TEST_BUSYBOX") {
        return Some(PathBuf::from(b));
    }
    let deb = newest(&env_or("UVMKIT_TEST_DEB_DIR", ""), "busybox-static")?;
    let unpack = work.join("busybox-deb");
    std::fs::create_dir_all(&unpack).unwrap();
    let (ok, text) = run("bsdtar", &["-xf", deb.to_str()?, "-C", unpack.to_str()?]);
    assert!(ok, "{text}");
    let data = newest(&unpack, "data.tar")?;
    let (ok, text) = run(
        "bsdtar",
        &["-xf", data.to_str()?, "-C", unpack.to_str()?, "./bin/busybox"],
    );
    assert!(ok, "{text}");
    Some(unpack.join("bin/busybox"))
}

/// A newc initrd whose `/init` prints the marker and powers the machine off.
fn initrd(work: &Path, busybox: &Path) -> PathBuf {
    let root = work.join("initrd-root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    let init = format!("#!/bin/busybox sh\n/bin/busybox echo {MARKER}\n/bin/busybox poweroff -f\n");
    std::fs::write(root.join("init"), init).unwrap();
    let (ok, text) = run(
        "chmod",
        &[
            "755",
            root.join("init").to_str().unwrap(),
            root.join("bin/busybox").to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    let out = work.join("initrd.img");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . | sort | cpio -o -H newc --quiet > '{}'",
            root.display(),
            out.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    out
}

/// A unified kernel image: systemd's stub with the kernel, initrd and command line as sections.
fn uki(work: &Path, stub: &Path, kernel: &Path, initrd: &Path) -> PathBuf {
    let cmdline = work.join("cmdline");
    std::fs::write(&cmdline, "console=ttyS0").unwrap();
    let osrel = work.join("os-release");
    std::fs::write(&osrel, "ID=uvmkit\nPRETTY_NAME=\"uvmkit test\"\n").unwrap();
    let out = work.join("uki.efi");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let args = [
        "--add-section".to_string(),
        format!(".osrel={}", s(&osrel)),
        "--change-section-vma".into(),
        ".osrel=0x20000".into(),
        "--add-section".into(),
        format!(".cmdline={}", s(&cmdline)),
        "--change-section-vma".into(),
        ".cmdline=0x30000".into(),
        "--add-section".into(),
        format!(".linux={}", s(kernel)),
        "--change-section-vma".into(),
        ".linux=0x2000000".into(),
        "--add-section".into(),
        format!(".initrd={}", s(initrd)),
        "--change-section-vma".into(),
        ".initrd=0x3000000".into(),
        s(stub),
        s(&out),
    ];
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, text) = run("objcopy", &arg_refs);
    assert!(ok, "objcopy: {text}");
    out
}

/// The file offset of section `name` in the PE file `pe`, from `objdump -h`.
fn section_offset(pe: &Path, name: &str) -> u64 {
    let (ok, text) = run("objdump", &["-h", pe.to_str().unwrap()]);
    assert!(ok, "{text}");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no {name} in {}:\n{text}", pe.display()));
    u64::from_str_radix(line.split_whitespace().nth(5).unwrap(), 16).unwrap()
}

/// An EFI image whose UKI keeps its `.linux` and `.initrd` sections on 2048-byte boundaries
/// of the image, and the aliases that list those sections as the BIOS entry's kernel and
/// initrd. The UKI's sections are aligned by padding the command line and a `.pad` section;
/// the FAT16 filesystem (mkfs.fat, 2 KiB clusters, aligned data area) keeps clusters aligned.
/// `None` when mkfs.fat or mtools are missing.
fn shared_media(work: &Path, stub: &Path, kernel: &Path, initrd: &Path) -> Option<(FileData, Vec<EfiAlias>)> {
    if !have("mkfs.fat") || !have("mmd") || !have("mcopy") {
        return None;
    }
    let kernel_len = std::fs::metadata(kernel).unwrap().len();
    let initrd_len = std::fs::metadata(initrd).unwrap().len();
    let build = |cmdline_pad: usize, pad: usize| -> PathBuf {
        let dir = work.join(format!("shared-{cmdline_pad}-{pad}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmdline = b"console=ttyS0".to_vec();
        cmdline.resize(cmdline.len() + cmdline_pad, 0);
        std::fs::write(dir.join("cmdline"), cmdline).unwrap();
        std::fs::write(dir.join("pad"), vec![0u8; pad.max(1)]).unwrap();
        let out = dir.join("uki.efi");
        let arg = |name: &str, file: &Path, vma: &str| {
            vec![
                "--add-section".to_string(),
                format!("{name}={}", file.display()),
                "--change-section-vma".to_string(),
                format!("{name}={vma}"),
            ]
        };
        let mut args = Vec::new();
        args.extend(arg(".cmdline", &dir.join("cmdline"), "0x30000"));
        args.extend(arg(".linux", kernel, "0x2000000"));
        args.extend(arg(".pad", &dir.join("pad"), "0x2F00000"));
        args.extend(arg(".initrd", initrd, "0x3000000"));
        args.push(stub.display().to_string());
        args.push(out.display().to_string());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, text) = run("objcopy", &refs);
        assert!(ok, "objcopy: {text}");
        out
    };
    // Sections are laid out in order on 512-byte boundaries: measure, then pad.
    let first = build(0, 0);
    let cmdline_pad = (2048 - section_offset(&first, ".linux") % 2048) % 2048;
    let second = build(cmdline_pad as usize, 0);
    let pad_now = section_offset(&second, ".initrd") - section_offset(&second, ".pad");
    let misalign = section_offset(&second, ".initrd") % 2048;
    let pad = if misalign == 0 {
        1
    } else {
        (pad_now + 2048 - misalign) as usize
    };
    let uki = build(cmdline_pad as usize, pad);
    let linux_at = section_offset(&uki, ".linux");
    let initrd_at = section_offset(&uki, ".initrd");
    assert_eq!(
        (linux_at % 2048, initrd_at % 2048),
        (0, 0),
        "UKI sections did not align"
    );

    let esp = work.join("shared-esp.img");
    let _ = std::fs::remove_file(&esp);
    let image = esp.to_str().unwrap();
    let (ok, text) = run(
        "mkfs.fat",
        &["-F", "16", "-s", "4", "-i", "12345678", "-C", image, "65536"],
    );
    assert!(ok, "{text}");
    let (ok, text) = run("mmd", &["-i", image, "::EFI", "::EFI/BOOT"]);
    assert!(ok, "{text}");
    let (ok, text) = run("mcopy", &["-i", image, uki.to_str().unwrap(), "::EFI/BOOT/BOOTX64.EFI"]);
    assert!(ok, "{text}");
    // Find the UKI's first cluster in the image.
    let bytes = std::fs::read(&esp).unwrap();
    let head = &std::fs::read(&uki).unwrap()[..4096];
    let uki_at = (0..bytes.len() - head.len())
        .step_by(2048)
        .find(|&o| &bytes[o..o + head.len()] == head)? as u64;
    let aliases = vec![
        EfiAlias {
            path: "boot/vmlinuz".into(),
            offset: uki_at + linux_at,
            len: kernel_len,
            mode: 0o644,
        },
        EfiAlias {
            path: "boot/initrd.img".into(),
            offset: uki_at + initrd_at,
            len: initrd_len,
            mode: 0o644,
        },
    ];
    Some((FileData::host_file(&esp).unwrap(), aliases))
}

/// Boots `args` under QEMU until the marker appears, QEMU exits, or the timeout passes.
/// Returns (reached the marker, seconds, serial output).
fn boot(args: &[String]) -> (bool, f64, String) {
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "1024",
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let mut reached = false;
    while start.elapsed() < BOOT_TIMEOUT {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(bytes) => {
                log.extend_from_slice(&bytes);
                if String::from_utf8_lossy(&log).contains(MARKER) {
                    reached = true;
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    (reached, secs, String::from_utf8_lossy(&log).into_owned())
}

#[test]
fn hybrid_iso_boots_bios_and_uefi_from_cdrom_and_disk() {
    for tool in ["qemu-system-x86_64", "cpio", "bsdtar", "objcopy"] {
        if !have(tool) {
            return;
        }
    }
    let stub = env_or("UVMKIT_TEST_EFI_STUB", "");
    let Some(bios) = bios_boot() else { return };
    let dir = scratch("boot");
    let work = dir.path();
    let (Some(kernel), Some(busybox)) = (kernel(), busybox(work)) else {
        eprintln!("note: no test kernel or busybox (see this file's header); skipping the boot test");
        return;
    };
    if !stub.is_file() || !Path::new(OVMF_CODE).is_file() {
        eprintln!(
            "note: no EFI stub at {} or no OVMF; skipping the boot test",
            stub.display()
        );
        return;
    }
    let initrd = initrd(work, &busybox);
    let uki = uki(work, &stub, &kernel, &initrd);
    let esp = build_esp(
        &[EspFile {
            path: "EFI/BOOT/BOOTX64.EFI".into(),
            source: FileData::host_file(&uki).unwrap(),
        }],
        &EspOptions {
            volume_id: 0x0BAD_CAFE,
            mtime: 1_700_000_000,
            ..EspOptions::default()
        },
    )
    .unwrap();
    let files =
        vec![
        IsoFile { path: "boot/vmlinuz".into(), data: FileData::host_file(&kernel).unwrap(), mode: 0o644 },
        IsoFile { path: "boot/initrd.img".into(), data: FileData::host_file(&initrd).unwrap(), mode: 0o644 },
        IsoFile {
            path: "isolinux/isolinux.cfg".into(),
            data: FileData::inline(
                b"DEFAULT linux\nLABEL linux\n  KERNEL /boot/vmlinuz\n  APPEND initrd=/boot/initrd.img console=ttyS0\n"
                    .to_vec(),
            ),
            mode: 0o644,
        },
        IsoFile { path: "isolinux/ldlinux.c32".into(), data: FileData::host_file(LDLINUX_C32).unwrap(), mode: 0o644 },
    ];
    let efi = EfiBoot {
        image: BootImage::Sparse(esp),
        path: "boot/efi.img".into(),
    };
    let opts = IsoOptions {
        volume_id: "UVMKIT_BOOT".into(),
        epoch: 1_700_000_000,
        seed: [3; 32],
        hybrid: true,
    };
    let iso = work.join("boot.iso");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&iso).unwrap());
    let started = Instant::now();
    let stats = write_iso(&files, Some(&bios), Some(&efi), &opts, &mut out).unwrap();
    drop(out);
    eprintln!(
        "image: {} bytes, {} sectors, written in {:.2} s",
        stats.bytes,
        stats.sectors,
        started.elapsed().as_secs_f64()
    );
    if let Some(keep) = std::env::var_os("UVMKIT_TEST_KEEP") {
        std::fs::copy(&iso, PathBuf::from(keep).join("boot.iso")).unwrap();
    }

    let vars = work.join("OVMF_VARS.fd");
    let iso_s = iso.to_str().unwrap().to_string();
    let ovmf = vec![
        "-drive".to_string(),
        format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
        "-drive".to_string(),
        format!("if=pflash,format=raw,file={}", vars.display()),
    ];
    let cdrom = vec!["-cdrom".to_string(), iso_s.clone()];
    let disk = vec!["-drive".to_string(), format!("file={iso_s},format=raw,if=ide")];
    let ways: Vec<(&str, Vec<String>)> = vec![
        ("SeaBIOS cdrom", cdrom.clone()),
        ("SeaBIOS disk", disk.clone()),
        ("OVMF cdrom", [ovmf.clone(), cdrom].concat()),
        ("OVMF disk", [ovmf.clone(), disk].concat()),
    ];
    let mut failures = Vec::new();
    for (name, args) in ways {
        std::fs::copy(OVMF_VARS, &vars).unwrap();
        let (ok, secs, log) = boot(&args);
        eprintln!(
            "{name}: {} in {secs:.1} s",
            if ok { "reached the marker" } else { "FAILED" }
        );
        if !ok {
            let tail: String = log
                .chars()
                .rev()
                .take(3000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            failures.push(format!(
                "{name} did not reach {MARKER} in {secs:.0} s; serial log ends:\n{tail}"
            ));
        }
    }

    // A BIOS-only hybrid image (isohybrid MBR, no GPT) from a disk.
    let bios_only = work.join("bios-only.iso");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&bios_only).unwrap());
    write_iso(&files, Some(&bios), None, &opts, &mut out).unwrap();
    drop(out);
    let name = "SeaBIOS disk, BIOS-only image";
    let (ok, secs, log) = boot(&[
        "-drive".to_string(),
        format!("file={},format=raw,if=ide", bios_only.display()),
    ]);
    eprintln!(
        "{name}: {} in {secs:.1} s",
        if ok { "reached the marker" } else { "FAILED" }
    );
    if !ok {
        let tail: String = log
            .chars()
            .rev()
            .take(3000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        failures.push(format!(
            "{name} did not reach {MARKER} in {secs:.0} s; serial log ends:\n{tail}"
        ));
    }

    // The same media with the kernel and initrd stored once: the BIOS entry's files point at
    // the UKI's sections inside the EFI image.
    match shared_media(work, &stub, &kernel, &initrd) {
        Some((esp, aliases)) => {
            let efi = EfiBoot {
                image: BootImage::Data(esp),
                path: "boot/efi.img".into(),
            };
            let shared = work.join("shared.iso");
            let mut out = std::io::BufWriter::new(std::fs::File::create(&shared).unwrap());
            let small =
                write_iso_with_aliases(&files[2..], Some(&bios), Some(&efi), &aliases, &opts, &mut out).unwrap();
            drop(out);
            eprintln!("shared image: {} bytes (instead of {})", small.bytes, stats.bytes);
            if let Some(keep) = std::env::var_os("UVMKIT_TEST_KEEP") {
                std::fs::copy(&shared, PathBuf::from(keep).join("shared.iso")).unwrap();
            }
            let shared_s = shared.to_str().unwrap().to_string();
            let cdrom = vec!["-cdrom".to_string(), shared_s.clone()];
            let disk = vec!["-drive".to_string(), format!("file={shared_s},format=raw,if=ide")];
            for (name, args) in [
                ("SeaBIOS cdrom, shared kernel", cdrom.clone()),
                ("SeaBIOS disk, shared kernel", disk.clone()),
                ("OVMF cdrom, shared kernel", [ovmf.clone(), cdrom].concat()),
                ("OVMF disk, shared kernel", [ovmf.clone(), disk].concat()),
            ] {
                std::fs::copy(OVMF_VARS, &vars).unwrap();
                let (ok, secs, log) = boot(&args);
                eprintln!(
                    "{name}: {} in {secs:.1} s",
                    if ok { "reached the marker" } else { "FAILED" }
                );
                if !ok {
                    let tail: String = log
                        .chars()
                        .rev()
                        .take(3000)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    failures.push(format!(
                        "{name} did not reach {MARKER} in {secs:.0} s; serial log ends:\n{tail}"
                    ));
                }
            }
        }
        None => eprintln!("note: skipping the shared-kernel boots"),
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
