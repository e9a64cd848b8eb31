//! `images/minimal.toml` end to end: one build of every format, read back by independent
//! tools, booted in QEMU every way a user would boot it, and rebuilt to prove the bytes repeat.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

const READY: &str = "uvmkit-init: ready";
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// The output directory of the one build all tests share.
fn built() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let out = test_dir("minimal-build");
        let image = repo_root().join("images/minimal.toml");
        let log = uvmkit_ok(&["build", image.to_str().unwrap(), "-o", out.to_str().unwrap(), "--quiet"]);
        eprintln!("{log}");
        out
    })
}

fn artifact(name: &str) -> PathBuf {
    let p = built().join(name);
    assert!(p.exists(), "{} was not written", p.display());
    p
}

#[test]
fn build_writes_every_artifact_with_checksums_and_manifest() {
    let out = built();
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    for name in [
        "minimal.efi",
        "minimal-kernel",
        "minimal-initrd.img",
        "minimal.iso",
        "minimal.raw",
        "minimal.vhdx",
        "minimal.vmdk",
        "minimal-stream.vmdk",
    ] {
        assert!(
            sums.contains(&format!("  {name}\n")),
            "{name} missing from SHA256SUMS:\n{sums}"
        );
    }
    let (ok, text) = run(
        "sh",
        &["-c", &format!("cd {} && sha256sum -c SHA256SUMS", out.display())],
    );
    assert!(ok, "sha256sum -c: {text}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["image"], "minimal");
    let inputs = manifest["inputs"].as_array().unwrap();
    assert!(
        inputs
            .iter()
            .any(|i| i["role"] == "kernel" && i["sha256"].as_str().unwrap().len() == 64),
        "{manifest}"
    );
    assert_eq!(manifest["artifacts"].as_array().unwrap().len(), 8);
    // Nothing half-written is left behind.
    for entry in std::fs::read_dir(out).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(!name.starts_with('.'), "leftover {name}");
    }
}

#[test]
fn initrd_is_a_small_zstd_cpio_followed_by_the_system_image() {
    if !(have("bsdtar") && have("unsquashfs")) {
        return;
    }
    let initrd = std::fs::read(artifact("minimal-initrd.img")).unwrap();
    let (boot, member) = split_initrd(&initrd);
    let dir = test_dir("minimal-initrd-split");
    let boot_path = dir.join("boot.cpio.zst");
    // Up to three zero bytes pad the compressed part to the member's 4-byte boundary; the
    // zstd frame ends before them (bsdtar refuses bytes after the last frame).
    let (ok, list) = (0..=3usize)
        .rev()
        .filter(|&pad| boot[boot.len() - pad..].iter().all(|&b| b == 0))
        .map(|pad| {
            std::fs::write(&boot_path, &boot[..boot.len() - pad]).unwrap();
            run("bsdtar", &["-tvf", boot_path.to_str().unwrap()])
        })
        .find(|(ok, _)| *ok)
        .unwrap_or((false, "no split of the boot part reads as zstd cpio".into()));
    assert!(ok, "bsdtar: {list}");
    // bsdtar lists the first archive (the base: init.toml, the device nodes); the kernel
    // modules and /init follow as archives of their own, each its own zstd frame.
    assert!(list.contains("etc/uvmkit/init.toml"), "{list}");
    let stream = std::process::Command::new("zstd")
        .args(["-dcq"])
        .arg(&boot_path)
        .output()
        .unwrap();
    assert!(stream.status.success(), "zstd -dc {}", boot_path.display());
    let list = newc_names(&stream.stdout).join("\n");
    assert!(list.lines().any(|l| l == "init"), "boot initrd lacks /init:\n{list}");
    for needle in [
        "etc/uvmkit/init.toml",
        "dev/console",
        "lib/modules/",
        "virtio_blk.ko",
        "hv_storvsc.ko",
    ] {
        assert!(list.contains(needle), "boot initrd lacks {needle}:\n{list}");
    }
    // Network drivers and the rest of the tree live in the system image only.
    assert!(
        !list.contains("vmxnet3.ko"),
        "the boot initrd carries a network driver:\n{list}"
    );
    assert!(list.lines().count() < 200, "the boot initrd is not small:\n{list}");

    let image = system_image_of(member);
    let image_path = dir.join("system.squashfs");
    std::fs::write(&image_path, image).unwrap();
    let (ok, listing) = run("unsquashfs", &["-lln", "-d", "", image_path.to_str().unwrap()]);
    assert!(ok, "unsquashfs: {listing}");
    for needle in ["/init", "/etc/uvmkit/init.toml", "vmxnet3.ko", "virtio_blk.ko"] {
        assert!(listing.contains(needle), "system image lacks {needle}");
    }
    // The boot configuration records the image's hash and size.
    let config = std::process::Command::new("bsdtar")
        .args(["-xOf", boot_path.to_str().unwrap(), "etc/uvmkit/init.toml"])
        .output()
        .unwrap();
    let config = String::from_utf8(config.stdout).unwrap();
    let sha = sha256_hex(image);
    assert!(config.contains("root = \"system\""), "{config}");
    assert!(config.contains(&format!("sha256 = \"{sha}\"")), "{config}");
    assert!(config.contains(&format!("size = {}", image.len())), "{config}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn uki_sections_are_read_by_objdump() {
    if !have("objdump") {
        return;
    }
    let (ok, text) = run("objdump", &["-h", artifact("minimal.efi").to_str().unwrap()]);
    assert!(ok, "objdump: {text}");
    for section in [".osrel", ".cmdline", ".initrd", ".linux"] {
        assert!(text.contains(section), "UKI lacks {section}:\n{text}");
    }
}

#[test]
fn disk_images_pass_qemu_img_and_match_raw() {
    if !have("qemu-img") {
        return;
    }
    let raw = artifact("minimal.raw");
    for (file, format) in [
        ("minimal.vhdx", "vhdx"),
        ("minimal.vmdk", "vmdk"),
        ("minimal-stream.vmdk", "vmdk"),
    ] {
        let path = artifact(file);
        let (ok, text) = run("qemu-img", &["check", "-f", format, path.to_str().unwrap()]);
        assert!(ok && text.contains("No errors"), "qemu-img check {file}: {text}");
        let (ok, text) = run(
            "qemu-img",
            &[
                "compare",
                "-f",
                format,
                "-F",
                "raw",
                path.to_str().unwrap(),
                raw.to_str().unwrap(),
            ],
        );
        assert!(ok && text.contains("identical"), "qemu-img compare {file} raw: {text}");
        // The file holds content, not the virtual size.
        assert!(
            std::fs::metadata(&path).unwrap().len() < 512 << 20,
            "{file} is not sparse"
        );
    }
}

#[test]
fn raw_disk_partitions_pass_sgdisk_fsck_fat_and_e2fsck() {
    if !(have("sgdisk") && have("fsck.fat") && have("e2fsck") && have("unsquashfs")) {
        return;
    }
    let raw = artifact("minimal.raw");
    let (ok, text) = run("sgdisk", &["-v", raw.to_str().unwrap()]);
    assert!(ok && text.contains("No problems found"), "sgdisk -v: {text}");
    let (_, table) = run("sgdisk", &["-p", raw.to_str().unwrap()]);
    // Extract each partition and check it with its filesystem's own checker.
    let dir = test_dir("minimal-partitions");
    let mut checked = 0;
    for line in table
        .lines()
        .filter(|l| l.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit()))
    {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (start, end): (u64, u64) = (cols[1].parse().unwrap(), cols[2].parse().unwrap());
        let part = dir.join(format!("p{}", cols[0]));
        let (ok, text) = run(
            "dd",
            &[
                &format!("if={}", raw.display()),
                &format!("of={}", part.display()),
                "bs=512",
                &format!("skip={start}"),
                &format!("count={}", end - start + 1),
                "conv=sparse",
                "status=none",
            ],
        );
        assert!(ok, "dd: {text}");
        if line.contains("8304") {
            // The system image: squashfs, typed "Linux root (x86-64)", named uvmkit-system.
            assert!(line.contains("uvmkit-system"), "{line}");
            let (ok, text) = run("unsquashfs", &["-s", part.to_str().unwrap()]);
            assert!(ok && text.contains("Compression zstd"), "unsquashfs -s: {text}");
            let (ok, text) = run("unsquashfs", &["-lln", "-d", "", part.to_str().unwrap()]);
            assert!(
                ok && text.contains("/etc/uvmkit/init.toml") && text.contains("/init"),
                "unsquashfs -lln: {text}"
            );
            checked += 1;
        } else if line.contains("EF00") {
            let (ok, text) = run("fsck.fat", &["-n", part.to_str().unwrap()]);
            assert!(ok, "fsck.fat -n on the ESP: {text}");
            let (ok, text) = run("mdir", &["-i", part.to_str().unwrap(), "::/EFI/BOOT"]);
            assert!(ok && text.contains("BOOTX64"), "ESP lacks BOOTX64.EFI: {text}");
            checked += 1;
        } else {
            let (ok, text) = run("e2fsck", &["-fn", part.to_str().unwrap()]);
            assert!(ok, "e2fsck -fn on the data partition: {text}");
            let (_, text) = run("dumpe2fs", &["-h", part.to_str().unwrap()]);
            assert!(text.contains("uvmkit-data"), "data partition label: {text}");
            checked += 1;
        }
    }
    assert_eq!(
        checked, 3,
        "expected an ESP, the system image and a data partition:\n{table}"
    );
}

#[test]
fn iso_has_bios_and_uefi_el_torito_and_hybrid_tables() {
    if !(have("xorriso") && have("isoinfo") && have("sgdisk")) {
        return;
    }
    let iso = artifact("minimal.iso");
    let (ok, text) = run(
        "xorriso",
        &["-indev", iso.to_str().unwrap(), "-report_el_torito", "plain"],
    );
    assert!(ok, "xorriso: {text}");
    assert!(
        text.contains("BIOS") && text.contains("UEFI"),
        "El Torito entries:\n{text}"
    );
    let (ok, text) = run("isoinfo", &["-d", "-i", iso.to_str().unwrap()]);
    assert!(ok && text.contains("Volume id: MINIMAL"), "isoinfo -d: {text}");
    let (ok, text) = run("sgdisk", &["-v", iso.to_str().unwrap()]);
    assert!(ok && text.contains("No problems found"), "sgdisk -v on the ISO: {text}");
    if have("bsdtar") {
        let (ok, list) = run("bsdtar", &["-tf", iso.to_str().unwrap()]);
        assert!(ok && list.to_lowercase().contains("vmlinuz"), "bsdtar -tf: {list}");
        // The BIOS path's kernel and initrd are the UKI's sections inside the EFI image, read
        // through ISO 9660 records that point there: the same bytes, stored once.
        let extract = |member: &str| {
            let out = std::process::Command::new("bsdtar")
                .args(["-xOf", iso.to_str().unwrap(), member])
                .output()
                .unwrap();
            assert!(out.status.success(), "bsdtar -xOf {member}");
            out.stdout
        };
        let kernel = std::fs::read(artifact("minimal-kernel")).unwrap();
        assert!(
            extract("boot/vmlinuz") == kernel,
            "boot/vmlinuz differs from the kernel"
        );
        // The system image is a file of its own, the same bytes the EFI pair's initrd carries;
        // the boot initrd holds only what finds it on the medium, not the image.
        let published = std::fs::read(artifact("minimal-initrd.img")).unwrap();
        let (boot_part, member) = split_initrd(&published);
        let image = system_image_of(member);
        let on_medium = extract("uvmkit/system.squashfs");
        assert!(
            on_medium == image,
            "uvmkit/system.squashfs differs from the initrd's image"
        );
        let initrd = extract("boot/initrd.img");
        assert!(
            !initrd
                .windows(SYSTEM_IMAGE_MEMBER.len())
                .any(|w| w == SYSTEM_IMAGE_MEMBER.as_bytes()),
            "the ISO's initrd still carries the system image"
        );
        assert!(
            initrd.len() < published.len() - image.len() / 2 && initrd.len() < boot_part.len() + 4096,
            "the ISO's initrd ({} bytes) is not the small boot initrd (published {}, boot part {})",
            initrd.len(),
            published.len(),
            boot_part.len()
        );
        let config = boot_config(&initrd);
        let sha256: String = {
            use sha2::Digest;
            sha2::Sha256::digest(image).iter().map(|b| format!("{b:02x}")).collect()
        };
        assert!(
            config.contains("medium_file = \"/uvmkit/system.squashfs\"")
                && config.contains(&format!("sha256 = \"{sha256}\""))
                && config.contains(&format!("size = {}", image.len()))
                && !config.contains("partition ="),
            "the ISO's init.toml does not point at the medium's image:\n{config}"
        );
        eprintln!(
            "ISO: boot initrd {} bytes (the EFI pair's initrd with the image: {}), system image file {} bytes",
            initrd.len(),
            published.len(),
            image.len()
        );
        let efi_image = extract("boot/efi.img").len() as u64;
        let iso_len = std::fs::metadata(&iso).unwrap().len();
        assert!(
            iso_len - efi_image - (image.len() as u64) < kernel.len() as u64,
            "the ISO stores the kernel outside its EFI image: {iso_len} bytes, EFI image {efi_image}"
        );
    }
}

/// `/etc/uvmkit/init.toml` of a boot initrd (zstd-compressed newc cpio), read by `zstd` and
/// `cpio`.
fn boot_config(initrd: &[u8]) -> String {
    let dir = test_dir("iso-boot-initrd");
    let file = dir.join("initrd.img");
    std::fs::write(&file, initrd).unwrap();
    let script = format!(
        "zstd -dc {} | cpio -i --quiet --to-stdout etc/uvmkit/init.toml",
        file.display()
    );
    let (ok, text) = run("sh", &["-c", &script]);
    assert!(ok, "zstd | cpio: {text}");
    text
}

/// Where `uvmkit/system.squashfs` starts in `iso`, as xorriso reports its extent (ISO 9660
/// blocks of 2 KiB).
fn system_image_offset(iso: &Path) -> u64 {
    let (ok, text) = run(
        "xorriso",
        &[
            "-indev",
            iso.to_str().unwrap(),
            "-find",
            "/uvmkit/system.squashfs",
            "-exec",
            "report_lba",
        ],
    );
    assert!(ok, "xorriso -find: {text}");
    // "File data lba:  0 ,   LBA ,   BLOCKS ,   BYTES , '/uvmkit/system.squashfs'"
    let line = text
        .lines()
        .find(|l| l.starts_with("File data lba:") && l.contains("system.squashfs"))
        .unwrap_or_else(|| panic!("xorriso lists no uvmkit/system.squashfs:\n{text}"));
    let lba: u64 = line.split(',').nth(1).unwrap().trim().parse().unwrap();
    lba * 2048
}

fn boot(name: &str, args: Vec<String>) -> f64 {
    let dir = test_dir(name);
    let mut guest = Guest::start(&dir, &args);
    let t = guest.wait_for(READY, BOOT_TIMEOUT);
    eprintln!("{name}: {READY} after {t:.1}s");
    t
}

fn ovmf(name: &str, mut rest: Vec<String>) -> Vec<String> {
    let mut args = ovmf_args(&test_dir(&format!("{name}-fw")));
    args.append(&mut rest);
    args
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn boots_kernel_and_initrd_directly_then_powers_off_on_acpi_button() {
    let dir = test_dir("boot-direct");
    let kernel = artifact("minimal-kernel");
    let initrd = artifact("minimal-initrd.img");
    let args = s(&[
        "-kernel",
        kernel.to_str().unwrap(),
        "-initrd",
        initrd.to_str().unwrap(),
        "-append",
        "console=ttyS0",
    ]);
    let mut guest = Guest::start(&dir, &args);
    let t = guest.wait_for(READY, BOOT_TIMEOUT);
    eprintln!("direct kernel boot: ready after {t:.1}s");
    let log = guest.log();
    assert!(
        log.contains("system image /uvmkit-system.squashfs (") && log.contains("root is overlay"),
        "the init did not mount the system image from the initramfs:\n{log}"
    );
    guest.monitor("system_powerdown");
    let secs = guest.wait_exit(Duration::from_secs(90));
    eprintln!("power off took {secs:.1}s");
    assert!(guest.log().contains("power"), "no shutdown log:\n{}", guest.log());
}

#[test]
fn boots_the_uki_from_an_esp_under_ovmf() {
    let esp = test_dir("uki-esp");
    std::fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    std::fs::copy(artifact("minimal.efi"), esp.join("EFI/BOOT/BOOTX64.EFI")).unwrap();
    boot(
        "boot-uki",
        ovmf(
            "boot-uki",
            s(&["-drive", &format!("if=virtio,format=raw,file=fat:rw:{}", esp.display())]),
        ),
    );
}

fn boot_disk(file: &str, format: &str) {
    let path = artifact(file);
    let name = format!("boot-{}", file.replace('.', "-"));
    let dir = test_dir(&name);
    let mut args = ovmf_args(&dir);
    args.extend(s(&[
        "-drive",
        &format!("if=virtio,format={format},file={},snapshot=on", path.display()),
    ]));
    let mut guest = Guest::start(&dir, &args);
    let t = guest.wait_for(READY, BOOT_TIMEOUT);
    eprintln!("{file}: ready after {t:.1}s");
    let log = guest.log();
    assert!(
        log.contains("uvmkit-data"),
        "{file}: the init did not report the data partition:\n{log}"
    );
    assert!(
        log.contains("system image /dev/vda2 (") && log.contains("sha256 ok") && log.contains("root is overlay"),
        "{file}: the init did not mount the system partition:\n{log}"
    );
}

#[test]
fn a_flipped_byte_in_the_system_partition_stops_the_boot() {
    if !have("sgdisk") {
        return;
    }
    let dir = test_dir("boot-tampered");
    let raw = dir.join("tampered.raw");
    let (ok, text) = run(
        "cp",
        &[
            "--sparse=always",
            artifact("minimal.raw").to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    assert!(ok, "cp: {text}");
    let (_, table) = run("sgdisk", &["-p", raw.to_str().unwrap()]);
    let line = table
        .lines()
        .find(|l| l.contains("uvmkit-system"))
        .expect("a system partition");
    let start: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    // A byte of file data just after the superblock.
    flip_byte(&raw, start * 512 + 4096);

    let mut args = ovmf_args(&dir);
    args.extend(s(&[
        "-drive",
        &format!("if=virtio,format=raw,file={},snapshot=on", raw.display()),
    ]));
    let log = refused_boot(&dir, &args, "tampered disk");
    assert!(log.contains("system image /dev/vda2 does not match"), "{log}");
}

/// Inverts the byte at `offset` of the file at `path`.
fn flip_byte(path: &Path, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.read_exact(&mut byte).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&[byte[0] ^ 0xff]).unwrap();
}

/// Boots QEMU with `args` and expects the init to refuse the system image and stop the boot;
/// returns the serial log.
fn refused_boot(dir: &Path, args: &[String], what: &str) -> String {
    let mut guest = Guest::start(dir, args);
    let t = guest.wait_for("does not match the boot configuration", BOOT_TIMEOUT);
    eprintln!("{what} refused after {t:.1}s");
    guest.wait_for("boot stopped", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    let log = guest.log();
    guest.kill();
    assert!(!log.contains(READY), "the {what} booted on:\n{log}");
    assert!(!log.contains("root is overlay"), "{log}");
    log
}

#[test]
fn boots_raw_disk_under_ovmf() {
    boot_disk("minimal.raw", "raw");
}

#[test]
fn boots_vhdx_under_ovmf() {
    boot_disk("minimal.vhdx", "vhdx");
}

#[test]
fn boots_vmdk_under_ovmf() {
    boot_disk("minimal.vmdk", "vmdk");
}

#[test]
fn boots_stream_optimized_vmdk_under_ovmf() {
    boot_disk("minimal-stream.vmdk", "vmdk");
}

fn boot_iso(name: &str, uefi: bool, as_disk: bool) {
    let iso = artifact("minimal.iso");
    let dir = test_dir(name);
    let mut args = if uefi { ovmf_args(&dir) } else { vec![] };
    if as_disk {
        args.extend(s(&[
            "-drive",
            &format!("if=ide,format=raw,file={},snapshot=on", iso.display()),
        ]));
    } else {
        args.extend(s(&[
            "-drive",
            &format!("if=ide,media=cdrom,format=raw,readonly=on,file={}", iso.display()),
        ]));
    }
    let mut guest = Guest::start(&dir, &args);
    let t = guest.wait_for(READY, BOOT_TIMEOUT);
    eprintln!("{name}: ready after {t:.1}s");
    // The image is read from the medium, not from the initramfs.
    let medium = if as_disk {
        "the disk /dev/sda"
    } else {
        "the CD /dev/sr0"
    };
    let log = guest.log();
    assert!(
        log.contains(&format!("system image: /uvmkit/system.squashfs on {medium} (ISO 9660"))
            && log.contains("sha256 ok")
            && log.contains("root is overlay"),
        "{name}: the init did not mount the system image from {medium}:\n{log}"
    );
}

#[test]
fn a_flipped_byte_in_the_isos_system_image_stops_the_boot() {
    if !have("xorriso") {
        return;
    }
    let dir = test_dir("boot-iso-tampered");
    let iso = dir.join("tampered.iso");
    std::fs::copy(artifact("minimal.iso"), &iso).unwrap();
    let start = system_image_offset(&iso);
    // xorriso's extent holds the squashfs: its magic "hsqs" (squashfs-tools' squashfs_fs.h).
    let mut magic = [0u8; 4];
    use std::os::unix::fs::FileExt;
    std::fs::File::open(&iso)
        .unwrap()
        .read_exact_at(&mut magic, start)
        .unwrap();
    assert_eq!(&magic, b"hsqs", "no squashfs at the file's extent ({start})");
    // A byte of file data just after the superblock: same size, different sha256.
    flip_byte(&iso, start + 4096);

    let args = s(&[
        "-drive",
        &format!("if=ide,media=cdrom,format=raw,readonly=on,file={}", iso.display()),
    ]);
    let log = refused_boot(&dir, &args, "tampered ISO");
    assert!(log.contains("/uvmkit/system.squashfs on the CD /dev/sr0"), "{log}");
    assert!(
        log.contains("system image /.uvmkit-medium/uvmkit/system.squashfs does not match"),
        "{log}"
    );
}

#[test]
fn iso_boots_from_cd_under_seabios() {
    boot_iso("iso-cd-bios", false, false);
}

#[test]
fn iso_boots_from_cd_under_ovmf() {
    boot_iso("iso-cd-uefi", true, false);
}

#[test]
fn iso_boots_as_a_disk_under_seabios() {
    boot_iso("iso-disk-bios", false, true);
}

#[test]
fn iso_boots_as_a_disk_under_ovmf() {
    boot_iso("iso-disk-uefi", true, true);
}

#[test]
fn a_second_build_gives_identical_bytes() {
    let first = std::fs::read_to_string(built().join("SHA256SUMS")).unwrap();
    let out = test_dir("minimal-rebuild");
    let image = repo_root().join("images/minimal.toml");
    uvmkit_ok(&["build", image.to_str().unwrap(), "-o", out.to_str().unwrap(), "--quiet"]);
    let second = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    assert_eq!(first, second, "artifacts differ between two builds");
    let m1 = std::fs::read(built().join("manifest.json")).unwrap();
    let m2 = std::fs::read(out.join("manifest.json")).unwrap();
    assert!(m1 == m2, "manifest.json differs between two builds");
}

/// `[init] system_compression = "xz"`: the kernel decompresses the xz (LZMA2, x86 BCJ) system
/// image; the minimal definition with that one key, built as the EFI pair and booted directly.
#[test]
fn boots_an_xz_system_image() {
    let dir = test_dir("minimal-xz");
    let text = std::fs::read_to_string(repo_root().join("images/minimal.toml")).unwrap();
    assert!(!text.contains("[init]"), "images/minimal.toml gained an [init] section");
    let definition = dir.join("minimal.toml");
    std::fs::write(&definition, format!("{text}\n[init]\nsystem_compression = \"xz\"\n")).unwrap();
    let out = dir.join("out");
    let log = uvmkit_ok(&[
        "build",
        definition.to_str().unwrap(),
        "--format",
        "efi",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(log.contains("system image: squashfs xz,"), "{log}");
    let initrd = out.join("minimal-initrd.img");
    if have("unsquashfs") {
        let image = write_system_image(&initrd, &dir.join("system.squashfs"));
        let (ok, superblock) = run("unsquashfs", &["-s", image.to_str().unwrap()]);
        assert!(ok, "{superblock}");
        assert!(
            superblock.contains("Compression xz") && superblock.contains("Block size 1048576"),
            "{superblock}"
        );
    }
    let args = s(&[
        "-kernel",
        out.join("minimal-kernel").to_str().unwrap(),
        "-initrd",
        initrd.to_str().unwrap(),
        "-append",
        "console=ttyS0",
    ]);
    let mut guest = Guest::start(&test_dir("boot-xz"), &args);
    let t = guest.wait_for(READY, BOOT_TIMEOUT);
    eprintln!("xz system image, direct kernel boot: ready after {t:.1}s");
    let log = guest.log();
    assert!(
        log.contains("system image /uvmkit-system.squashfs (") && log.contains("root is overlay"),
        "the init did not mount the xz system image:\n{log}"
    );
    assert!(!log.contains("SQUASHFS error"), "{log}");
}
