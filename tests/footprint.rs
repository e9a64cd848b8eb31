//! The footprint benchmark (`bench/footprint.sh`, issue 15) as a smoke test: the script in its
//! quick mode builds `images/docker.toml` (the raw disk), boots the raw disk under OVMF to
//! "service dockerd ready" and reads the guest's memory and root file system over SSH. Its
//! report goes to the test's output and to `target/tmp/footprint-report.txt`, which `.ci/run`
//! prints, so CI logs carry the figures. Timings are printed, never
//! asserted; what is asserted is what does not depend on the machine: the sizes (each with a
//! margin) and that the root is an overlay on the mounted system image, not a tmpfs copy.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::process::Command;

const MIB: u64 = 1 << 20;

/// Issue 15's goal for the bytes the firmware loads before the kernel starts: the first loader
/// on the ESP must stay far below it.
const BOOTX64_MAX_BYTES: u64 = 15 * MIB;

/// What the firmware and the loaders read before the kernel starts (shim, GRUB, kernel, boot
/// initrd): 17.8 MiB measured on 2026-12-07 (Debian 13), plus about 10 % so a regression shows.
/// Issue 15's goal is 15 MiB.
const FIRMWARE_MAX_BYTES: u64 = 19_600_000;

/// The compressed system payload (boot initrd plus the squashfs system image): 72.4 MiB
/// measured on 2026-12-07 (Debian 13, zstd level 15, 128 KiB blocks), plus about 10 % so a
/// regression shows. Issue 15's goal is 40 MB.
const PAYLOAD_MAX_BYTES: u64 = 83_500_000;

/// Issue 15's goal for guest memory in use with dockerd ready and no containers (MemTotal -
/// MemAvailable): 107 MiB measured on 2026-12-07 (UEFI raw disk, 2 GiB). Not a timing, so it is
/// asserted.
const MEMORY_IN_USE_MAX_MIB: f64 = 150.0;

/// Runs the script in quick mode and returns its figures (`name=value`) and report.
fn run_footprint() -> (BTreeMap<String, String>, String) {
    let dir = test_dir("footprint");
    let figures = dir.join("figures.txt");
    let out = Command::new("bash")
        .arg(repo_root().join("bench/footprint.sh"))
        .args(["--quick", "--figures"])
        .arg(&figures)
        .env("UVMKIT_BIN", uvmkit_bin())
        .env("UVMKIT_CACHE", shared_cache())
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("TMPDIR", &dir)
        .output()
        .expect("run bench/footprint.sh");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // cargo test shows a passing test's output only with --nocapture, so the report is also
    // kept beside the tests' directories, where .ci/run prints it after the run.
    let kept = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("footprint-report.txt");
    std::fs::write(&kept, format!("{report}\n{stderr}")).unwrap();
    println!("{report}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "bench/footprint.sh --quick failed ({}):\n{stderr}",
        out.status
    );
    let text = std::fs::read_to_string(&figures)
        .unwrap_or_else(|e| panic!("the script wrote no figures to {}: {e}", figures.display()));
    let figures = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (figures, report)
}

fn number(figures: &BTreeMap<String, String>, name: &str) -> f64 {
    let value = figures
        .get(name)
        .unwrap_or_else(|| panic!("no figure {name} in {figures:?}"));
    value
        .parse()
        .unwrap_or_else(|e| panic!("figure {name}={value:?} is not a number: {e}"))
}

#[test]
fn docker_footprint_is_measured_and_within_its_ceilings() {
    let (figures, report) = run_footprint();

    let bootx64 = number(&figures, "bootx64_bytes") as u64;
    assert!(
        bootx64 > 0 && bootx64 <= BOOTX64_MAX_BYTES,
        "EFI/BOOT/BOOTX64.EFI is {bootx64} bytes; at most {BOOTX64_MAX_BYTES}"
    );
    let firmware = number(&figures, "firmware_bytes") as u64;
    assert!(
        firmware >= bootx64 && firmware <= FIRMWARE_MAX_BYTES,
        "the firmware and loaders read {firmware} bytes before the kernel; the ceiling is {FIRMWARE_MAX_BYTES}"
    );

    let system = number(&figures, "system_image_bytes") as u64;
    let boot_initrd = number(&figures, "boot_initrd_bytes") as u64;
    let payload = number(&figures, "payload_bytes") as u64;
    assert_eq!(
        payload,
        system + boot_initrd,
        "the payload is the boot initrd plus the system image"
    );
    assert!(
        boot_initrd > 0 && boot_initrd < 16 * MIB,
        "the boot initrd is {boot_initrd} bytes: it should hold only the init and the boot modules"
    );
    assert!(
        payload <= PAYLOAD_MAX_BYTES,
        "the system payload is {payload} bytes; the ceiling is {PAYLOAD_MAX_BYTES} (goal: 40 MB)"
    );

    // The root is the overlay on the mounted system image; a tmpfs or rootfs root would be a
    // copy of the payload in RAM.
    assert_eq!(
        figures.get("root_fs").map(String::as_str),
        Some("overlay"),
        "the root file system"
    );

    let in_use = number(&figures, "memory_in_use_mib");
    let total = number(&figures, "memory_total_mib");
    assert!(
        in_use > 0.0 && in_use < total,
        "memory in use {in_use} MiB of {total} MiB is no plausible MemTotal - MemAvailable"
    );
    assert!(
        in_use <= MEMORY_IN_USE_MAX_MIB,
        "{in_use} MiB in use with dockerd idle; the goal is at most {MEMORY_IN_USE_MAX_MIB} MiB"
    );
    assert!(number(&figures, "dockerd_ready_seconds") > 0.0);

    // The report carries the breakdowns the figures come from.
    for line in [
        "memory breakdown",
        "AnonPages",
        "SUnreclaim",
        "init timeline",
        "service dockerd ready",
    ] {
        assert!(report.contains(line), "the report has no '{line}':\n{report}");
    }
}
