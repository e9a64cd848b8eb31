//! Waiting for storage enumeration to settle, and naming the controller behind a disk.
//!
//! Most storage drivers finish probing before `finit_module(2)` returns (the kernel waits for
//! the asynchronous work a module's init starts), but not all: NVMe scans its namespaces from a
//! workqueue after the controller goes live, `sd` attaches a disk some time after its SCSI
//! device appears, and Hyper-V's storvsc binds when the host offers the VMBus channel. Before deciding that there is no data disk, boot watches
//! sysfs until nothing has changed for a quiet period and no probe is visibly in progress, up
//! to a bound; [`SettleWatch`] makes that decision from snapshots, so it is tested without a
//! kernel.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the storage view must stay unchanged, with nothing probing, to count as settled.
pub const QUIET_PERIOD: Duration = Duration::from_millis(1000);

/// The longest boot waits for storage to settle before it goes on regardless.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// What sysfs shows of storage at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageSnapshot {
    /// Block devices (`sda`, `sda1`, `nvme0n1`, `vda`), sorted.
    pub block: Vec<String>,
    /// SCSI devices (`2:0:0:0`), sorted.
    pub scsi: Vec<String>,
    /// Probes visibly in progress, each described for the log (`scsi 2:0:0:0 has no disk
    /// yet`, `nvme0 is connecting`), sorted.
    pub probing: Vec<String>,
}

/// Where the wait stands after a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Something changed recently or a probe is in progress: look again.
    Waiting,
    /// Unchanged for the quiet period with nothing probing.
    Settled,
    /// The bound passed first; the probes still in progress, for the log.
    TimedOut(Vec<String>),
}

/// Decides, from successive snapshots, when storage enumeration has settled.
#[derive(Debug)]
pub struct SettleWatch {
    quiet: Duration,
    deadline: Instant,
    last_change: Instant,
    last: Option<StorageSnapshot>,
}

impl SettleWatch {
    /// A watch started at `now` that settles after `quiet` without change and gives up at
    /// `now + limit`.
    pub fn new(now: Instant, quiet: Duration, limit: Duration) -> SettleWatch {
        SettleWatch {
            quiet,
            deadline: now + limit,
            last_change: now,
            last: None,
        }
    }

    /// Takes the snapshot seen at `now` and says whether to keep waiting.
    pub fn observe(&mut self, now: Instant, snapshot: StorageSnapshot) -> Verdict {
        if self.last.as_ref() != Some(&snapshot) {
            // The first snapshot counts as a change: the quiet period starts from it.
            self.last_change = now;
            self.last = Some(snapshot);
        }
        let probing = self.last.as_ref().map(|s| s.probing.clone()).unwrap_or_default();
        if probing.is_empty() && now.saturating_duration_since(self.last_change) >= self.quiet {
            return Verdict::Settled;
        }
        if now >= self.deadline {
            return Verdict::TimedOut(probing);
        }
        Verdict::Waiting
    }
}

fn sorted_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|t| t.trim().to_string())
}

/// Reads the storage view from a sysfs tree mounted at `sys` (`/sys`).
///
/// In progress: a SCSI disk (`type` 0, SBC direct access; 14, reduced block commands) with no
/// block device yet (sd is attaching it), and an NVMe controller whose `state` is not yet
/// `live`; its namespaces follow within the quiet period. libata's link probing finishes
/// before its module's load returns, and its sysfs `class` of an empty port stays `unknown`,
/// so ATA devices are not looked at.
pub fn snapshot(sys: &Path) -> StorageSnapshot {
    let mut block = sorted_names(&sys.join("class/block"));
    block.retain(|n| !(n.starts_with("loop") || n.starts_with("ram") || n.starts_with("zram")));
    let scsi = sorted_names(&sys.join("class/scsi_device"));
    let mut probing = Vec::new();
    for name in &scsi {
        let device = sys.join("class/scsi_device").join(name).join("device");
        let kind = read_trimmed(&device.join("type"));
        if matches!(kind.as_deref(), Some("0" | "14")) && !device.join("block").exists() {
            probing.push(format!("scsi {name} has no disk yet"));
        }
    }
    for name in sorted_names(&sys.join("class/nvme")) {
        let state = read_trimmed(&sys.join("class/nvme").join(&name).join("state")).unwrap_or_default();
        if state != "live" && state != "dead" && state != "deleting" {
            probing.push(format!("{name} is {state}"));
        }
    }
    probing.sort();
    StorageSnapshot { block, scsi, probing }
}

/// Whether a sysfs directory name is a PCI address, `DDDD:BB:DD.F`.
fn is_pci_address(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

/// The drivers between a block device and its controller, nearest first, ending at the PCI
/// function when there is one: `sd, mptsas (PCI 0000:00:04.0)`, `virtio_blk, virtio-pci (PCI
/// 0000:00:05.0)`, `sd, hv_storvsc`. Partitions are described by their disk. `None` when the
/// device is not in sysfs.
pub fn controller(sys: &Path, block_name: &str) -> Option<String> {
    let mut entry = sys.join("class/block").join(block_name);
    if entry.join("partition").exists() {
        entry = fs::canonicalize(&entry).ok()?.parent()?.to_path_buf();
    }
    let mut dir: PathBuf = fs::canonicalize(entry.join("device")).ok()?;
    let mut drivers: Vec<String> = Vec::new();
    loop {
        let name = dir.file_name()?.to_string_lossy().into_owned();
        if let Some(driver) = fs::read_link(dir.join("driver"))
            .ok()
            .and_then(|l| Some(l.file_name()?.to_string_lossy().into_owned()))
        {
            if drivers.last() != Some(&driver) {
                drivers.push(driver);
            }
            if is_pci_address(&name) {
                let last = drivers.pop().unwrap_or_default();
                drivers.push(format!("{last} (PCI {name})"));
                break;
            }
        }
        if !dir.pop() || dir.as_os_str().len() <= sys.as_os_str().len() {
            break;
        }
    }
    (!drivers.is_empty()).then(|| drivers.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn snap(block: &[&str], scsi: &[&str], probing: &[&str]) -> StorageSnapshot {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        StorageSnapshot {
            block: strings(block),
            scsi: strings(scsi),
            probing: strings(probing),
        }
    }

    const QUIET: Duration = Duration::from_millis(1000);
    const LIMIT: Duration = Duration::from_secs(10);
    const STEP: Duration = Duration::from_millis(100);

    #[test]
    fn an_unchanging_view_settles_after_the_quiet_period() {
        let t0 = Instant::now();
        let mut watch = SettleWatch::new(t0, QUIET, LIMIT);
        assert_eq!(watch.observe(t0, snap(&["vda"], &[], &[])), Verdict::Waiting);
        assert_eq!(
            watch.observe(t0 + QUIET - STEP, snap(&["vda"], &[], &[])),
            Verdict::Waiting
        );
        assert_eq!(watch.observe(t0 + QUIET, snap(&["vda"], &[], &[])), Verdict::Settled);
    }

    #[test]
    fn each_new_device_restarts_the_quiet_period() {
        let t0 = Instant::now();
        let mut watch = SettleWatch::new(t0, QUIET, LIMIT);
        watch.observe(t0, snap(&[], &[], &[]));
        // A SCSI device appears at 0.9 s, its disk at 1.5 s.
        assert_eq!(
            watch.observe(t0 + 9 * STEP, snap(&[], &["2:0:0:0"], &[])),
            Verdict::Waiting
        );
        assert_eq!(
            watch.observe(t0 + 15 * STEP, snap(&["sda"], &["2:0:0:0"], &[])),
            Verdict::Waiting
        );
        assert_eq!(
            watch.observe(t0 + 24 * STEP, snap(&["sda"], &["2:0:0:0"], &[])),
            Verdict::Waiting
        );
        assert_eq!(
            watch.observe(t0 + 25 * STEP, snap(&["sda"], &["2:0:0:0"], &[])),
            Verdict::Settled
        );
    }

    #[test]
    fn a_probe_in_progress_holds_the_wait_until_the_bound() {
        let t0 = Instant::now();
        let mut watch = SettleWatch::new(t0, QUIET, LIMIT);
        let probing = snap(&[], &["2:0:0:0"], &["scsi 2:0:0:0 has no disk yet"]);
        assert_eq!(watch.observe(t0, probing.clone()), Verdict::Waiting);
        assert_eq!(watch.observe(t0 + 5 * QUIET, probing.clone()), Verdict::Waiting);
        assert_eq!(
            watch.observe(t0 + LIMIT, probing),
            Verdict::TimedOut(vec!["scsi 2:0:0:0 has no disk yet".into()])
        );
    }

    #[test]
    fn a_view_that_keeps_changing_times_out_at_the_bound() {
        let t0 = Instant::now();
        let mut watch = SettleWatch::new(t0, QUIET, LIMIT);
        let mut t = t0;
        let mut i = 0;
        let verdict = loop {
            let name = format!("sd{i}");
            let verdict = watch.observe(t, snap(&[name.as_str()], &[], &[]));
            if verdict != Verdict::Waiting {
                break verdict;
            }
            t += 5 * STEP;
            i += 1;
        };
        assert_eq!(verdict, Verdict::TimedOut(vec![]));
        assert_eq!(t, t0 + LIMIT);
    }

    fn fake_sys(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("uvmkit-init-storage-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A disk behind `sd` on SCSI host 2 of the PCI function 0000:00:04.0, bound to `pci_driver`.
    fn add_scsi_disk(sys: &Path, pci_driver: &str, with_block: bool) {
        let pci = sys.join("devices/pci0000:00/0000:00:04.0");
        let target = pci.join("host2/port-2:0/end_device-2:0/target2:0:0/2:0:0:0");
        fs::create_dir_all(&target).unwrap();
        fs::create_dir_all(sys.join("bus/pci/drivers").join(pci_driver)).unwrap();
        fs::create_dir_all(sys.join("bus/scsi/drivers/sd")).unwrap();
        symlink(sys.join("bus/pci/drivers").join(pci_driver), pci.join("driver")).unwrap();
        symlink(sys.join("bus/scsi/drivers/sd"), target.join("driver")).unwrap();
        fs::write(target.join("type"), "0\n").unwrap();
        fs::create_dir_all(sys.join("class/scsi_device/2:0:0:0")).unwrap();
        symlink(&target, sys.join("class/scsi_device/2:0:0:0/device")).unwrap();
        fs::create_dir_all(sys.join("class/block")).unwrap();
        if with_block {
            let disk = target.join("block/sda");
            fs::create_dir_all(disk.join("sda1")).unwrap();
            fs::write(disk.join("sda1/partition"), "1\n").unwrap();
            symlink(&target, disk.join("device")).unwrap();
            symlink(&disk, sys.join("class/block/sda")).unwrap();
            symlink(disk.join("sda1"), sys.join("class/block/sda1")).unwrap();
        }
    }

    #[test]
    fn a_scsi_disk_without_its_block_device_is_probing() {
        let sys = fake_sys("probing");
        add_scsi_disk(&sys, "mptsas", false);
        let seen = snapshot(&sys);
        assert_eq!(seen.scsi, ["2:0:0:0"]);
        assert!(seen.block.is_empty());
        assert_eq!(seen.probing, ["scsi 2:0:0:0 has no disk yet"]);
        fs::remove_dir_all(&sys).unwrap();
    }

    #[test]
    fn unprobed_ata_devices_and_nvme_controllers_not_yet_live_are_probing() {
        let sys = fake_sys("ata-nvme");
        for (name, class) in [("dev1.0", "unknown"), ("dev2.0", "none"), ("dev3.0", "ata")] {
            fs::create_dir_all(sys.join("class/ata_device").join(name)).unwrap();
            fs::write(
                sys.join("class/ata_device").join(name).join("class"),
                format!("{class}\n"),
            )
            .unwrap();
        }
        for (name, state) in [("nvme0", "connecting"), ("nvme1", "live")] {
            fs::create_dir_all(sys.join("class/nvme").join(name)).unwrap();
            fs::write(sys.join("class/nvme").join(name).join("state"), format!("{state}\n")).unwrap();
        }
        assert_eq!(snapshot(&sys).probing, ["nvme0 is connecting"]);
        fs::remove_dir_all(&sys).unwrap();
    }

    #[test]
    fn the_controller_is_named_by_its_drivers_up_to_the_pci_function() {
        let sys = fake_sys("controller");
        add_scsi_disk(&sys, "mptsas", true);
        let seen = snapshot(&sys);
        assert_eq!(seen.block, ["sda", "sda1"]);
        assert!(seen.probing.is_empty(), "{:?}", seen.probing);
        let expected = "sd, mptsas (PCI 0000:00:04.0)";
        assert_eq!(controller(&sys, "sda").as_deref(), Some(expected));
        // A partition is described by its disk.
        assert_eq!(controller(&sys, "sda1").as_deref(), Some(expected));
        assert_eq!(controller(&sys, "vdz"), None);
        fs::remove_dir_all(&sys).unwrap();
    }

    #[test]
    fn pci_addresses_are_recognised() {
        assert!(is_pci_address("0000:00:1f.2"));
        assert!(!is_pci_address("pci0000:00"));
        assert!(!is_pci_address("host2"));
        assert!(!is_pci_address("0000:00:1f:2"));
    }
}
