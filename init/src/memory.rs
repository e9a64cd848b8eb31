//! Memory the guest gives back or stretches: the balloon drivers the hypervisor talks to, and an
//! optional zram swap device.
//!
//! - Balloons: the image's modules (`kernel-config/*.toml`) load `virtio_balloon` (QEMU,
//!   cloud-hypervisor), `hv_balloon` (Hyper-V) and `vmw_balloon` (VMware); each binds only where
//!   its device exists. With virtio, *free page reporting* (VIRTIO_BALLOON_F_REPORTING, QEMU
//!   `-device virtio-balloon,free-page-reporting=on`) hands the pages the guest frees back to the
//!   host as they are freed, so a VM that was busy shrinks again without anyone inflating the
//!   balloon. This module logs which driver bound and whether reporting is on, since that is
//!   what decides whether the host ever sees memory again.
//! - zram (`[memory] zram`): a compressed block device in RAM used as swap ahead of the OOM
//!   killer. The init sizes it (`disksize`), writes the swap header itself (no `mkswap` in the
//!   image) and enables it with `swapon(2)`, with discard so that freed swap slots free their
//!   compressed memory at once.
//! - Watermarks: with transparent huge pages set to `always` (the Debian kernel's default),
//!   khugepaged raises `vm.min_free_kbytes` to keep huge pages allocatable
//!   (mm/khugepaged.c, `set_recommended_min_free_kbytes`): 44 MiB on a 2 GiB guest instead of
//!   the kernel's own 5.5 MiB, and the zone watermarks derived from it (the high one about
//!   1.5 times as much) are memory no process may use and that `MemAvailable` leaves out.
//!   A utility VM gains little from huge pages it never asked for, so the init sets them to
//!   `madvise` (a program that wants them still gets them) and puts `min_free_kbytes` back to
//!   the kernel's formula (mm/page_alloc.c, `calculate_min_free_kbytes`:
//!   `int_sqrt(lowmem_kbytes * 16)`, at least 128 and at most 262144). A kernel command line
//!   that sets `transparent_hugepage=` or `sysctl.vm.min_free_kbytes=` is left as it says.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use uvmkit_init_config::{MemorySection, ZramSize};

use crate::log;

/// Feature bit numbers of the virtio balloon (include/uapi/linux/virtio_balloon.h).
const VIRTIO_BALLOON_F_STATS_VQ: usize = 1;
const VIRTIO_BALLOON_F_FREE_PAGE_HINT: usize = 3;
const VIRTIO_BALLOON_F_REPORTING: usize = 5;

/// `swapon(2)` flags (include/linux/swap.h): use the priority in the low bits, and discard
/// freed swap pages (for zram that frees their compressed copy).
const SWAP_FLAG_PREFER: libc::c_int = 0x8000;
const SWAP_FLAG_DISCARD: libc::c_int = 0x10000;
/// Above any disk swap a user adds later, so the fast in-memory device is used first.
const ZRAM_SWAP_PRIORITY: libc::c_int = 100;

/// The zram device the init sets up (the module makes one, `zram0`, when it loads).
const ZRAM_DEVICE: &str = "zram0";

/// The label written into the zram swap header.
const ZRAM_SWAP_LABEL: &str = "uvmkit-zram";

/// A balloon driver bound to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balloon {
    /// The driver: `virtio_balloon`, `hv_balloon` or `vmw_balloon`.
    pub driver: &'static str,
    /// The device it drives (`virtio2`), when it sits on a bus.
    pub device: Option<String>,
    /// The virtio features the driver and the host agreed on, by name.
    pub features: Vec<&'static str>,
}

impl Balloon {
    /// Whether freed pages go back to the host as they are freed.
    pub fn reports_free_pages(&self) -> bool {
        self.features.contains(&"free page reporting")
    }
}

/// The names of the agreed virtio balloon features in a device's sysfs `features` text: one
/// `0`/`1` character per feature bit, bit 0 first (drivers/virtio/virtio.c, `features_show`).
pub fn virtio_balloon_features(text: &str) -> Vec<&'static str> {
    let bits = text.trim().as_bytes();
    let on = |bit: usize| bits.get(bit) == Some(&b'1');
    [
        (VIRTIO_BALLOON_F_STATS_VQ, "statistics"),
        (VIRTIO_BALLOON_F_FREE_PAGE_HINT, "free page hinting"),
        (VIRTIO_BALLOON_F_REPORTING, "free page reporting"),
    ]
    .into_iter()
    .filter(|(bit, _)| on(*bit))
    .map(|(_, name)| name)
    .collect()
}

/// The devices bound to the driver directory `dir` (`/sys/bus/virtio/drivers/virtio_balloon`):
/// its entries that are links to devices, sorted.
fn bound_devices(dir: &Path) -> Vec<String> {
    let mut devices: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| !matches!(name.as_str(), "module" | "bind" | "unbind" | "uevent"))
                .collect()
        })
        .unwrap_or_default();
    devices.sort();
    devices
}

/// The balloon drivers bound under the sysfs tree at `sys`.
pub fn balloons(sys: &Path) -> Vec<Balloon> {
    let mut found = Vec::new();
    for device in bound_devices(&sys.join("bus/virtio/drivers/virtio_balloon")) {
        let features = fs::read_to_string(sys.join("bus/virtio/devices").join(&device).join("features"))
            .map(|text| virtio_balloon_features(&text))
            .unwrap_or_default();
        found.push(Balloon {
            driver: "virtio_balloon",
            device: Some(device),
            features,
        });
    }
    for device in bound_devices(&sys.join("bus/vmbus/drivers/hv_balloon")) {
        found.push(Balloon {
            driver: "hv_balloon",
            device: Some(device),
            features: Vec::new(),
        });
    }
    // vmw_balloon is a platform driver without a bus device: its module refuses to load
    // anywhere but VMware, so a loaded module means the balloon is in use.
    if sys.join("module/vmw_balloon").is_dir() {
        found.push(Balloon {
            driver: "vmw_balloon",
            device: None,
            features: Vec::new(),
        });
    }
    found
}

/// Logs the balloon drivers in use, lowers the watermarks huge pages raised, and sets up zram
/// swap when `section` asks for it.
pub fn start(section: Option<&MemorySection>) {
    log_balloons(&balloons(Path::new("/sys")));
    let command_line = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    match tune_watermarks(&command_line) {
        Ok(Some(line)) => log!("{line}"),
        Ok(None) => {}
        Err(err) => log!("memory: {err}; the watermarks stay as the kernel set them"),
    }
    if let Some(size) = section.and_then(|s| s.zram) {
        match start_zram(size) {
            Ok(line) => log!("{line}"),
            Err(err) => log!("zram swap: {err}; running without swap"),
        }
    }
}

fn log_balloons(found: &[Balloon]) {
    if found.is_empty() {
        log!("memory: no balloon device; freed memory stays with the VM (QEMU: -device virtio-balloon,free-page-reporting=on)");
    }
    for balloon in found {
        let on = balloon
            .device
            .as_deref()
            .map(|d| format!(" on {d}"))
            .unwrap_or_default();
        let reporting = if balloon.driver != "virtio_balloon" {
            String::new()
        } else if balloon.reports_free_pages() {
            "; free page reporting on: freed memory goes back to the host".to_string()
        } else {
            "; free page reporting off (the host did not offer it: QEMU free-page-reporting=on)".to_string()
        };
        let features = if balloon.features.is_empty() {
            String::new()
        } else {
            format!(" ({})", balloon.features.join(", "))
        };
        log!("memory: balloon {}{on}{features}{reporting}", balloon.driver);
    }
}

/// Where the kernel exposes the huge page mode and the reserve.
const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
const MIN_FREE_KBYTES: &str = "/proc/sys/vm/min_free_kbytes";

/// The kernel's own `min_free_kbytes` for `lowmem_kib` of low memory
/// (mm/page_alloc.c, `calculate_min_free_kbytes`).
pub fn default_min_free_kbytes(lowmem_kib: u64) -> u64 {
    ((lowmem_kib * 16) as f64).sqrt().floor() as u64
}

/// Whether the kernel command line already decides `option` (`transparent_hugepage=`...).
fn command_line_sets(command_line: &str, option: &str) -> bool {
    command_line.split_whitespace().any(|arg| arg.starts_with(option))
}

/// Sets huge pages to `madvise` and `min_free_kbytes` back to the kernel's formula, unless the
/// command line chose either; returns the line to log when anything changed.
fn tune_watermarks(command_line: &str) -> Result<Option<String>, MemoryError> {
    let mut done = Vec::new();
    if !command_line_sets(command_line, "transparent_hugepage=") && Path::new(THP_ENABLED).exists() {
        let mode = fs::read_to_string(THP_ENABLED).unwrap_or_default();
        if bracketed_choice(&mode) == Some("always") {
            write(Path::new(THP_ENABLED), "madvise")?;
            done.push("transparent huge pages madvise (was always)".to_string());
        }
    }
    // After the mode: changing it makes khugepaged set its recommendation again.
    if !command_line_sets(command_line, "sysctl.vm.min_free_kbytes=") {
        let now: u64 = fs::read_to_string(MIN_FREE_KBYTES)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        // Free buffer pages are close to MemTotal at this point of the boot.
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let total_kib = mem_total(&meminfo).ok_or(MemoryError::NoMemTotal)? / 1024;
        let kernel_default = default_min_free_kbytes(total_kib).clamp(128, 262_144);
        if now > kernel_default {
            write(Path::new(MIN_FREE_KBYTES), &kernel_default.to_string())?;
            done.push(format!("min_free_kbytes {kernel_default} (was {now})"));
        }
    }
    Ok((!done.is_empty()).then(|| {
        format!(
            "memory: {}; the reserve huge pages kept is free for use",
            done.join(", ")
        )
    }))
}

/// Why a memory setting (zram swap, the watermarks) could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The zram module did not make its device (not in the image, or failed to load).
    #[error("/sys/block/{ZRAM_DEVICE} does not exist; is the zram module in the image (kernel-config/zram.toml)?")]
    NoDevice,
    /// `/proc/meminfo` had no readable `MemTotal`.
    #[error("cannot read MemTotal from /proc/meminfo")]
    NoMemTotal,
    /// A sysfs or device write failed.
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        /// What was written.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// `swapon(2)` refused the device.
    #[error("swapon /dev/{ZRAM_DEVICE}: {0}")]
    Swapon(#[source] io::Error),
}

/// `MemTotal` in bytes from `/proc/meminfo` text.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The choice in use from a sysfs list that brackets it: a zram `comp_algorithm`
/// (`lzo [lzo-rle] lz4 zstd`) or the huge page mode (`[always] madvise never`).
pub fn bracketed_choice(text: &str) -> Option<&str> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
}

/// The first page of a swap area of `bytes` in `page` byte pages: `union swap_header` of
/// include/linux/swap.h, version 1 (`info.version` at 1024, `last_page` at 1028,
/// `nr_badpages` at 1032, `sws_uuid` at 1036, `sws_volume` at 1052), and the magic
/// `SWAPSPACE2` in the last 10 bytes of the page. Little-endian, as x86 reads it.
pub fn swap_header(bytes: u64, page: usize, uuid: [u8; 16], label: &str) -> Vec<u8> {
    let mut header = vec![0u8; page];
    let last_page = (bytes / page as u64).saturating_sub(1).min(u64::from(u32::MAX)) as u32;
    header[1024..1028].copy_from_slice(&1u32.to_le_bytes());
    header[1028..1032].copy_from_slice(&last_page.to_le_bytes());
    header[1036..1052].copy_from_slice(&uuid);
    let label = &label.as_bytes()[..label.len().min(15)];
    header[1052..1052 + label.len()].copy_from_slice(label);
    header[page - 10..].copy_from_slice(b"SWAPSPACE2");
    header
}

fn write(path: &Path, text: &str) -> Result<(), MemoryError> {
    fs::write(path, text).map_err(|source| MemoryError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Sizes `/dev/zram0`, writes a swap header on it and turns it on; returns the log line.
fn start_zram(size: ZramSize) -> Result<String, MemoryError> {
    let started = Instant::now();
    let sys = Path::new("/sys/block").join(ZRAM_DEVICE);
    // The module makes the device while it loads; a short bound covers a slow udev-less boot.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !sys.is_dir() {
        if Instant::now() >= deadline {
            return Err(MemoryError::NoDevice);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let total = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text))
        .ok_or(MemoryError::NoMemTotal)?;
    let bytes = size.bytes(total);
    // Documentation/admin-guide/blockdev/zram.rst: set the size (the compressor keeps the
    // kernel's default), then use the device.
    write(&sys.join("disksize"), &bytes.to_string())?;
    let compressor = fs::read_to_string(sys.join("comp_algorithm")).unwrap_or_default();
    let compressor = bracketed_choice(&compressor).unwrap_or("default").to_string();

    let device = Path::new("/dev").join(ZRAM_DEVICE);
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let mut uuid = [0u8; 16];
    let _ = fs::File::open("/dev/urandom").and_then(|mut f| io::Read::read_exact(&mut f, &mut uuid));
    // RFC 4122 version 4 (random) UUID, as mkswap writes one.
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    OpenOptions::new()
        .write(true)
        .open(&device)
        .and_then(|mut dev| {
            dev.write_all(&swap_header(bytes, page, uuid, ZRAM_SWAP_LABEL))?;
            dev.sync_all()
        })
        .map_err(|source| MemoryError::Write {
            path: device.clone(),
            source,
        })?;
    let path = std::ffi::CString::new(device.as_os_str().as_bytes()).expect("no NUL in a device path");
    let flags = SWAP_FLAG_PREFER | ZRAM_SWAP_PRIORITY | SWAP_FLAG_DISCARD;
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    if unsafe { libc::swapon(path.as_ptr(), flags) } != 0 {
        return Err(MemoryError::Swapon(io::Error::last_os_error()));
    }
    // Swap-in readahead reads neighbouring pages from a disk in one go; from zram each page is
    // decompressed on its own, so readahead only costs (zram.rst, "page-cluster").
    let _ = fs::write("/proc/sys/vm/page-cluster", "0\n");
    let share = match size {
        ZramSize::Percent(p) => format!("{p}% of {} MiB", total >> 20),
        ZramSize::Bytes(_) => "as configured".to_string(),
    };
    Ok(format!(
        "memory: zram swap /dev/{ZRAM_DEVICE} of {} MiB ({share}), compressor {compressor}, priority {ZRAM_SWAP_PRIORITY}, discard on, in {} ms",
        bytes >> 20,
        started.elapsed().as_millis()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::process::Command;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("uvmkit-init-memory-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_the_agreed_virtio_balloon_features() {
        // What QEMU 7.2 with free-page-reporting=on shows: bits 1 (stats), 5 (reporting), 32...
        let text = "0100010000000000000000000000000010000000000000000000000000000000\n";
        assert_eq!(virtio_balloon_features(text), ["statistics", "free page reporting"]);
        assert_eq!(virtio_balloon_features("01\n"), ["statistics"]);
        assert!(virtio_balloon_features("").is_empty());
    }

    #[test]
    fn finds_the_bound_balloons_in_sysfs() {
        let sys = scratch("sysfs");
        let device = sys.join("devices/pci0000:00/0000:00:05.0/virtio3");
        fs::create_dir_all(&device).unwrap();
        fs::write(device.join("features"), "0100010\n").unwrap();
        fs::create_dir_all(sys.join("bus/virtio/devices")).unwrap();
        symlink(&device, sys.join("bus/virtio/devices/virtio3")).unwrap();
        let driver = sys.join("bus/virtio/drivers/virtio_balloon");
        fs::create_dir_all(&driver).unwrap();
        symlink(&device, driver.join("virtio3")).unwrap();
        symlink(sys.join("module"), driver.join("module")).unwrap();
        fs::write(driver.join("bind"), "").unwrap();
        assert_eq!(
            balloons(&sys),
            [Balloon {
                driver: "virtio_balloon",
                device: Some("virtio3".into()),
                features: vec!["statistics", "free page reporting"],
            }]
        );
        assert!(balloons(&sys)[0].reports_free_pages());
        fs::create_dir_all(sys.join("module/vmw_balloon")).unwrap();
        assert_eq!(balloons(&sys).len(), 2);
        assert!(balloons(&scratch("empty")).is_empty());
        fs::remove_dir_all(&sys).unwrap();
    }

    #[test]
    fn reads_mem_total_and_the_compressor() {
        assert_eq!(
            mem_total("MemTotal:        2035000 kB\nMemFree:  1 kB\n"),
            Some(2_035_000 * 1024)
        );
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(bracketed_choice("lzo [lzo-rle] lz4 zstd\n"), Some("lzo-rle"));
        assert_eq!(bracketed_choice("lzo lz4\n"), None);
        assert_eq!(bracketed_choice("[always] madvise never\n"), Some("always"));
    }

    /// The kernel's formula: a 2 GiB guest keeps about 5.5 MiB, not khugepaged's 44 MiB; the
    /// command line's own choices are found and left alone.
    #[test]
    fn the_reserve_is_the_kernels_formula_unless_the_command_line_chose() {
        assert_eq!(default_min_free_kbytes(2_014_896), 5677);
        assert_eq!(default_min_free_kbytes(16 * 1024 * 1024), 16384);
        let line = "console=ttyS0 transparent_hugepage=always quiet";
        assert!(command_line_sets(line, "transparent_hugepage="));
        assert!(!command_line_sets(line, "sysctl.vm.min_free_kbytes="));
        assert!(command_line_sets(
            "sysctl.vm.min_free_kbytes=65536",
            "sysctl.vm.min_free_kbytes="
        ));
    }

    /// The header the init writes is byte for byte the one util-linux's mkswap writes.
    #[test]
    fn the_swap_header_is_the_one_mkswap_writes() {
        let Ok(probe) = Command::new("mkswap").arg("--version").output() else {
            eprintln!("note: mkswap is not installed; test skipped");
            return;
        };
        assert!(probe.status.success());
        let dir = scratch("mkswap");
        let path = dir.join("swap");
        let bytes: u64 = 16 << 20;
        fs::File::create(&path).unwrap().set_len(bytes).unwrap();
        let uuid = "8d4f3a6c-1b2e-4c3d-9e8f-0a1b2c3d4e5f";
        let out = Command::new("mkswap")
            .args(["-U", uuid, "-L", ZRAM_SWAP_LABEL, "-p", "4096"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "mkswap: {}", String::from_utf8_lossy(&out.stderr));
        let theirs = fs::read(&path).unwrap();
        let uuid_bytes: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&uuid.replace('-', "")[i * 2..i * 2 + 2], 16).unwrap())
            .collect();
        let ours = swap_header(bytes, 4096, uuid_bytes.try_into().unwrap(), ZRAM_SWAP_LABEL);
        assert_eq!(&theirs[..4096], &ours[..], "first page differs from mkswap's");
        fs::remove_dir_all(&dir).unwrap();
    }
}
