//! The first boot's data disk, cut short and resumed: `images/minimal.toml` with a
//! `[data_disk] format_blank = true` section, booted directly (kernel and initrd) under QEMU
//! with a disk whose GPT already names a `uvmkit-data` partition that holds only zeros, as a
//! power loss between the partition table and the file system used to leave it. The init
//! formats that partition and mounts it; a second boot mounts the same file system (same UUID,
//! read from the disk by the test) without formatting again, and `e2fsck` accepts it. A
//! `uvmkit-data` partition holding another file system's signature is left byte for byte alone.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use sha2::{Digest, Sha256};

const READY: &str = "uvmkit-init: ready";
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// The test disks' size and the partition's first sector (sgdisk's default 1 MiB alignment).
const DISK_BYTES: u64 = 256 << 20;
const PARTITION_START: u64 = 2048 * 512;
const FORMATTED: &str = "named uvmkit-data but blank (a first boot cut short); formatted it as ext4";

/// Kernel and initrd of the minimal image with a data disk that may be formatted.
fn built() -> &'static (PathBuf, PathBuf) {
    static OUT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    OUT.get_or_init(|| {
        let dir = test_dir("first-boot-build");
        let mut text = std::fs::read_to_string(repo_root().join("images/minimal.toml")).unwrap();
        text.push_str("\n[data_disk]\nformat_blank = true\n");
        let definition = dir.join("minimal.toml");
        std::fs::write(&definition, text).unwrap();
        let out = dir.join("out");
        uvmkit_ok(&[
            "build",
            definition.to_str().unwrap(),
            "--format",
            "efi",
            "--quiet",
            "-o",
            out.to_str().unwrap(),
        ]);
        (out.join("minimal-kernel"), out.join("minimal-initrd.img"))
    })
}

/// A sparse disk with a GPT holding one partition named `uvmkit-data` from 1 MiB to the end,
/// all zeros.
fn disk_with_named_blank_partition(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(DISK_BYTES).unwrap();
    drop(file);
    let (ok, text) = run(
        "sgdisk",
        &[
            "-n",
            "1:2048:0",
            "-t",
            "1:8300",
            "-c",
            "1:uvmkit-data",
            path.to_str().unwrap(),
        ],
    );
    assert!(ok, "sgdisk: {text}");
}

/// Boots the image with `disk`, waits for ready, powers off; gives the serial log.
fn boot(name: &str, disk: &Path) -> String {
    let (kernel, initrd) = built();
    let dir = test_dir(name);
    let args: Vec<String> = [
        "-kernel",
        kernel.to_str().unwrap(),
        "-initrd",
        initrd.to_str().unwrap(),
        "-append",
        "console=ttyS0",
        "-drive",
        &format!("if=virtio,format=raw,file={}", disk.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut guest = Guest::start(&dir, &args);
    let t = guest.wait_for(READY, BOOT_TIMEOUT);
    eprintln!("{name}: ready after {t:.1}s");
    guest.monitor("system_powerdown");
    guest.wait_exit(Duration::from_secs(90));
    guest.log()
}

/// The ext4 superblock's magic, UUID and volume name at `offset` of `disk`.
fn superblock(disk: &Path, offset: u64) -> (u16, [u8; 16], String) {
    let mut sb = [0u8; 1024];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(disk).unwrap(), &mut sb, offset + 1024).unwrap();
    let name = &sb[0x78..0x88];
    let end = name.iter().position(|&b| b == 0).unwrap_or(16);
    (
        u16::from_le_bytes([sb[0x38], sb[0x39]]),
        sb[0x68..0x78].try_into().unwrap(),
        String::from_utf8_lossy(&name[..end]).into_owned(),
    )
}

fn sha256_file(path: &Path) -> String {
    hex(&Sha256::digest(std::fs::read(path).unwrap()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_named_partition_left_without_a_file_system_is_formatted_and_kept() {
    let dir = test_dir("first-boot-resumed");
    let disk = dir.join("disk.raw");
    disk_with_named_blank_partition(&disk);
    assert_eq!(superblock(&disk, PARTITION_START).0, 0, "the partition starts as zeros");

    let first = boot("first-boot-resumed-1", &disk);
    assert!(
        first.contains(FORMATTED),
        "the blank partition was not formatted:\n{first}"
    );
    assert!(
        first.contains("data partition /dev/vda1 mounted on /var/lib/uvmkit-data"),
        "not mounted:\n{first}"
    );
    let (magic, uuid, label) = superblock(&disk, PARTITION_START);
    assert_eq!(
        (magic, label.as_str()),
        (0xEF53, "uvmkit-data"),
        "the partition after the first boot"
    );
    assert_ne!(uuid, [0; 16]);
    // The table around it is as the test wrote it: one partition, still named uvmkit-data.
    let (ok, text) = run("sgdisk", &["-i", "1", disk.to_str().unwrap()]);
    assert!(
        ok && text.contains("Partition name: 'uvmkit-data'"),
        "sgdisk -i 1: {text}"
    );

    let second = boot("first-boot-resumed-2", &disk);
    assert!(
        !second.contains(FORMATTED),
        "the second boot formatted again:\n{second}"
    );
    assert!(
        second.contains("data partition /dev/vda1 mounted on /var/lib/uvmkit-data"),
        "second boot did not mount it:\n{second}"
    );
    assert_eq!(
        hex(&superblock(&disk, PARTITION_START).1),
        hex(&uuid),
        "the second boot found another file system"
    );
    // An independent reader accepts the file system the init wrote and then mounted twice.
    let part = dir.join("part.img");
    let (ok, text) = run(
        "dd",
        &[
            &format!("if={}", disk.display()),
            &format!("of={}", part.display()),
            "bs=1M",
            "skip=1",
            "conv=sparse",
            "status=none",
        ],
    );
    assert!(ok, "dd: {text}");
    let (ok, text) = run("e2fsck", &["-fn", part.to_str().unwrap()]);
    assert!(ok, "e2fsck -fn on the partition: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_named_partition_holding_another_file_system_is_left_alone() {
    let dir = test_dir("first-boot-foreign");
    let disk = dir.join("disk.raw");
    disk_with_named_blank_partition(&disk);
    // An XFS superblock's magic at the partition's start: something is there.
    let file = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"XFSB", PARTITION_START).unwrap();
    drop(file);
    let before = sha256_file(&disk);
    let log = boot("first-boot-foreign-1", &disk);
    assert!(
        !log.contains(FORMATTED),
        "a partition holding XFS's magic was formatted:\n{log}"
    );
    assert!(
        log.contains("data partition /dev/vda1 holds something that is not ext4; left alone"),
        "no log line for the foreign partition:\n{log}"
    );
    assert_eq!(sha256_file(&disk), before, "the disk changed");
    let _ = std::fs::remove_dir_all(&dir);
}
