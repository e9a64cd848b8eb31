//! Every storage controller and NIC QEMU can model from the hypervisors' default hardware, and
//! the clock after the host pauses the VM, booted from `images/minimal.toml` with a data disk
//! and DHCP.
//!
//! Each VM carries one controller with a blank data disk and one NIC: the serial log must show
//! the disk found and formatted on that controller (the init names the drivers from the disk
//! up to its PCI function) and a DHCP lease, which only that NIC can have brought.
//!
//! What QEMU cannot model is not booted: VMware's LSI Logic parallel controller is the 53C1030
//! (mptspi), which QEMU lacks (it has the 53C895A, sym53c8xx, tested here); Hyper-V's VMBus
//! devices (storvsc, netvsc) cannot be emulated at all, so only their modules' presence in the
//! image is checked.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const READY: &str = "uvmkit-init: ready";
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// The minimal image with DHCP and a data disk that is formatted when blank.
fn built() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let dir = test_dir("devices-build");
        let stock = std::fs::read_to_string(repo_root().join("images/minimal.toml")).unwrap();
        let text = format!("{stock}\n[network]\ndhcp = true\ntimeout = 30\n\n[data_disk]\nformat_blank = true\n");
        let definition = dir.join("minimal.toml");
        std::fs::write(&definition, text).unwrap();
        let out = dir.join("out");
        let started = Instant::now();
        uvmkit_ok(&[
            "build",
            definition.to_str().unwrap(),
            "--format",
            "efi",
            "--quiet",
            "-o",
            out.to_str().unwrap(),
        ]);
        eprintln!(
            "minimal with data disk and DHCP built in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        out
    })
}

/// Kernel, initrd and a command line whose last console is the serial port.
fn direct_boot_args() -> Vec<String> {
    let out = built();
    vec![
        "-kernel".into(),
        out.join("minimal-kernel").display().to_string(),
        "-initrd".into(),
        out.join("minimal-initrd.img").display().to_string(),
        "-append".into(),
        "console=ttyS0 quiet".into(),
    ]
}

/// One VM: a controller with the data disk, a NIC.
struct Case {
    name: &'static str,
    /// QEMU arguments attaching `drive=data` to the controller under test.
    controller: &'static [&'static str],
    /// `-nic user,model=MODEL`.
    nic: &'static str,
    /// A driver the init must name between the disk and its PCI function.
    driver: &'static str,
}

/// Boots `case` with a blank 1 GiB disk and checks the disk and the lease from the serial log.
fn boot_case(case: &Case) {
    let dir = test_dir(&format!("devices-{}", case.name));
    let disk = dir.join("data.raw");
    std::fs::File::create(&disk).unwrap().set_len(1 << 30).unwrap();
    let mut args = direct_boot_args();
    args.extend([
        "-drive".to_string(),
        format!("if=none,id=data,format=raw,file={}", disk.display()),
    ]);
    args.extend(case.controller.iter().map(|a| a.to_string()));
    args.extend(["-nic".to_string(), format!("user,model={}", case.nic)]);
    let mut guest = Guest::start(&dir, &args);
    let ready = guest.wait_for(READY, BOOT_TIMEOUT);
    let log = guest.log();
    let formatted = log
        .lines()
        .find(|l| l.contains(": blank; wrote a GPT and an ext4 uvmkit-data partition"))
        .unwrap_or_else(|| guest.fail(&format!("{}: the blank disk was not formatted", case.name)))
        .to_string();
    let mounted = log
        .lines()
        .find(|l| l.contains("mounted on /var/lib/uvmkit-data (controller: "))
        .unwrap_or_else(|| guest.fail(&format!("{}: no data partition mounted", case.name)))
        .to_string();
    for line in [&formatted, &mounted] {
        let controller = line.split("controller: ").nth(1).unwrap_or_default();
        if !controller.split([',', ' ', '(']).any(|word| word == case.driver) || !controller.contains("(PCI ") {
            guest.fail(&format!(
                "{}: the disk's controller chain does not name {} and a PCI function: {line}",
                case.name, case.driver
            ));
        }
    }
    let lease = log
        .lines()
        .find(|l| l.contains("network: eth0: leased 10.0.2.15/24"))
        .unwrap_or_else(|| guest.fail(&format!("{}: no DHCP lease on the {} NIC", case.name, case.nic)))
        .to_string();
    let settled = log.lines().find(|l| l.contains("storage settled after")).unwrap_or("");
    eprintln!(
        "{}: ready {ready:.1}s\n  {}\n  {}\n  {}\n  {}",
        case.name,
        settled.trim(),
        formatted.trim(),
        mounted.trim(),
        lease.trim()
    );
    guest.kill();
    std::fs::remove_file(&disk).unwrap();
}

#[test]
fn virtualbox_ahci_with_e1000() {
    boot_case(&Case {
        name: "ahci-e1000",
        controller: &["-device", "ahci,id=ahci", "-device", "ide-hd,drive=data,bus=ahci.0"],
        nic: "e1000",
        driver: "ahci",
    });
}

#[test]
fn virtualbox_piix_ide_with_pcnet() {
    // The i440FX machine's own PIIX3 IDE controller, primary master.
    boot_case(&Case {
        name: "piix-pcnet",
        controller: &["-device", "ide-hd,drive=data,bus=ide.0"],
        nic: "pcnet",
        driver: "ata_piix",
    });
}

#[test]
fn vmware_lsi_logic_parallel_model_with_vmxnet3() {
    boot_case(&Case {
        name: "lsi53c895a-vmxnet3",
        controller: &[
            "-device",
            "lsi53c895a,id=scsi",
            "-device",
            "scsi-hd,drive=data,bus=scsi.0",
        ],
        nic: "vmxnet3",
        driver: "sym53c8xx",
    });
}

#[test]
fn vmware_lsi_logic_sas_with_e1000e() {
    // A SAS disk needs a SAS address: QEMU's scsi-hd has none unless `wwn` is set, and Linux's
    // mptsas skips a device whose address is 0 (VMware gives every disk one).
    boot_case(&Case {
        name: "mptsas-e1000e",
        controller: &[
            "-device",
            "mptsas1068,id=sas",
            "-device",
            "scsi-hd,drive=data,bus=sas.0,wwn=0x5000c2900000a001",
        ],
        nic: "e1000e",
        driver: "mptsas",
    });
}

#[test]
fn vmware_pvscsi_with_virtio_net() {
    boot_case(&Case {
        name: "pvscsi-virtio",
        controller: &[
            "-device",
            "pvscsi,id=pvscsi",
            "-device",
            "scsi-hd,drive=data,bus=pvscsi.0",
        ],
        nic: "virtio-net-pci",
        driver: "vmw_pvscsi",
    });
}

#[test]
fn nvme_with_e1000() {
    boot_case(&Case {
        name: "nvme-e1000",
        controller: &["-device", "nvme,serial=uvmkit-data,drive=data"],
        nic: "e1000",
        driver: "nvme",
    });
}

#[test]
fn virtio_blk_with_vmxnet3() {
    boot_case(&Case {
        name: "virtio-blk-vmxnet3",
        controller: &["-device", "virtio-blk-pci,drive=data"],
        nic: "vmxnet3",
        driver: "virtio_blk",
    });
}

#[test]
fn virtio_scsi_with_pcnet() {
    boot_case(&Case {
        name: "virtio-scsi-pcnet",
        controller: &[
            "-device",
            "virtio-scsi-pci,id=vscsi",
            "-device",
            "scsi-hd,drive=data,bus=vscsi.0",
        ],
        nic: "pcnet",
        driver: "virtio_scsi",
    });
}

#[test]
fn hyperv_vmbus_drivers_are_in_the_image() {
    // VMBus cannot be emulated: the drivers must at least be there for Hyper-V to find.
    let initrd = built().join("minimal-initrd.img");
    let list = system_image_listing(&write_system_image(&initrd, &initrd.with_extension("squashfs")));
    for module in [
        "hv_vmbus.ko",
        "hv_storvsc.ko",
        "hv_netvsc.ko",
        "hv_utils.ko",
        "mptspi.ko",
    ] {
        assert!(list.lines().any(|l| l.contains(module)), "initrd lacks {module}");
    }
    let config = std::fs::read_to_string(repo_root().join("kernel-config/hyperv.toml")).unwrap();
    assert!(config.contains("\"hv_storvsc\"") && config.contains("\"hv_netvsc\""));
}

/// Days from 1970-01-01 to a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

/// Seconds since the epoch of `2026-12-02T01:23:45.678Z`.
fn parse_utc(text: &str) -> f64 {
    let num = |range: std::ops::Range<usize>| -> i64 { text[range].parse().unwrap() };
    let days = days_from_civil(num(0..4), num(5..7), num(8..10));
    let seconds: f64 = text[17..text.len() - 1].parse().unwrap();
    (days * 86_400 + num(11..13) * 3600 + num(14..16) * 60) as f64 + seconds
}

#[test]
fn the_clock_is_stepped_after_the_vm_is_paused_for_a_minute() {
    let dir = test_dir("devices-clock");
    let mut args = direct_boot_args();
    args.extend(["-nic".to_string(), "user,model=virtio-net-pci".to_string()]);
    let mut guest = Guest::start(&dir, &args);
    guest.wait_for(READY, BOOT_TIMEOUT);
    guest.wait_for(
        "clock: checking the wall clock against the RTC",
        Duration::from_secs(30),
    );
    // A minute of host sleep: the guest's clocks stop, the host's and the RTC's do not.
    guest.monitor("stop");
    std::thread::sleep(Duration::from_secs(60));
    guest.monitor("cont");
    let resumed = Instant::now();
    let marker = "clock: the wall clock was ";
    guest.wait_for(marker, Duration::from_secs(20));
    let host_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let waited = resumed.elapsed().as_secs_f64();
    let log = guest.log();
    let line = log.lines().find(|l| l.contains(marker)).unwrap().to_string();
    let amount: f64 = line
        .split(marker)
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| guest.fail(&format!("no step amount in {line:?}")));
    let stepped_to = line
        .rsplit("stepped to ")
        .next()
        .map(str::trim)
        .unwrap_or_else(|| guest.fail(&format!("no new time in {line:?}")));
    let guest_time = parse_utc(stepped_to);
    eprintln!(
        "clock: {line}\n  seen {waited:.1}s after cont; guest's new time is {:.2}s from the host's",
        guest_time - host_now
    );
    assert!(line.contains("behind the RTC"), "{line}");
    assert!(
        (50.0..75.0).contains(&amount),
        "a 60 s pause stepped the clock by {amount} s: {line}"
    );
    // The step is logged as it happens; the log is polled every 0.2 s.
    assert!(
        (guest_time - host_now).abs() < 3.0,
        "the guest's clock ({stepped_to}) is {:.2}s from the host's after the step",
        guest_time - host_now
    );
    guest.kill();
}
