//! Keeping the wall clock right when the host sleeps or pauses the VM.
//!
//! While a VM is paused (QEMU `stop`, a host suspend, a saved state), its clocks stop with it:
//! `CLOCK_MONOTONIC`, `CLOCK_BOOTTIME` and `CLOCK_REALTIME` all resume where they were, so the
//! guest cannot see the gap by comparing its own clocks. A clock the hypervisor keeps running
//! can: a hypervisor PTP clock (`ptp_kvm`, Hyper-V's `hv_utils`, `ptp_vmw`; host UTC with
//! nanosecond resolution) where one exists, else the RTC (`/dev/rtc0`, which QEMU, VirtualBox
//! and VMware drive from the host clock). A thread compares the wall clock with that reference
//! every few seconds and steps it with `clock_settime(2)` when they drift apart by more than
//! [`STEP_THRESHOLD`], logging the step and the new time.
//!
//! The RTC may keep local time rather than UTC (hosts that dual-boot Windows): its offset from
//! the wall clock at boot is taken as the norm, and only a change of that offset is a jump.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::thread;
use std::time::Duration;

use crate::log;

/// How often the clocks are compared.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(3);

/// A drift larger than this is corrected by a step. The RTC counts whole seconds, so a routine
/// reading is up to one second off; two seconds keeps that noise from causing steps.
pub const STEP_THRESHOLD_NS: i64 = 2_000_000_000;

/// The names hypervisor PTP clocks register (`/sys/class/ptp/ptpN/clock_name`): they count
/// host UTC. A NIC's PTP clock (e1000e, ...) counts its own network's time and is not used.
const HYPERVISOR_PTP_CLOCKS: [&str; 3] = ["KVM virtual PTP", "hyperv", "ptp_vmw"];

const NS_PER_SEC: i64 = 1_000_000_000;

/// `struct rtc_time` from `include/uapi/linux/rtc.h` (the fields of `struct tm`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct RtcTime {
    tm_sec: libc::c_int,
    tm_min: libc::c_int,
    tm_hour: libc::c_int,
    tm_mday: libc::c_int,
    tm_mon: libc::c_int,
    tm_year: libc::c_int,
    tm_wday: libc::c_int,
    tm_yday: libc::c_int,
    tm_isdst: libc::c_int,
}

/// `RTC_RD_TIME` = `_IOR('p', 0x09, struct rtc_time)` (include/uapi/linux/rtc.h).
const RTC_RD_TIME: libc::c_ulong = 0x8024_7009;

/// Days from 1970-01-01 to the civil date `y-m-d` (proleptic Gregorian), after Howard
/// Hinnant's `days_from_civil`.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count from 1970-01-01 (the inverse of [`days_from_civil`]).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Nanoseconds since the epoch as `2026-12-02T01:23:45.678Z`.
pub fn format_utc(ns: i64) -> String {
    let secs = ns.div_euclid(NS_PER_SEC);
    let millis = ns.rem_euclid(NS_PER_SEC) / 1_000_000;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Seconds since the epoch of an RTC reading taken as UTC.
fn rtc_seconds(t: &RtcTime) -> i64 {
    let days = days_from_civil(i64::from(t.tm_year) + 1900, (t.tm_mon + 1) as u32, t.tm_mday as u32);
    days * 86_400 + i64::from(t.tm_hour) * 3600 + i64::from(t.tm_min) * 60 + i64::from(t.tm_sec)
}

/// `clockid_t` for a dynamic POSIX clock opened as `fd`: `FD_TO_CLOCKID` in
/// Documentation/driver-api/ptp.rst (`((~fd) << 3) | CLOCKFD`, CLOCKFD = 3).
pub fn fd_to_clockid(fd: libc::c_int) -> libc::clockid_t {
    ((!fd) << 3) | 3
}

fn clock_ns(clock: libc::clockid_t) -> io::Result<i64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ts.tv_sec as i64 * NS_PER_SEC + ts.tv_nsec as i64)
}

fn realtime_ns() -> io::Result<i64> {
    clock_ns(libc::CLOCK_REALTIME)
}

fn set_realtime_ns(ns: i64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: ns.div_euclid(NS_PER_SEC) as libc::time_t,
        tv_nsec: ns.rem_euclid(NS_PER_SEC) as libc::c_long,
    };
    // SAFETY: clock_settime reads the timespec it is given.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A clock that keeps running while the VM is paused.
enum Reference {
    /// A hypervisor PTP clock: host UTC.
    Ptp { file: File, name: String },
    /// The real-time clock, in whole seconds, in UTC or local time.
    Rtc { file: File },
}

impl Reference {
    /// The hypervisor PTP clock if there is one, else `/dev/rtc0`.
    fn find() -> Option<Reference> {
        let mut clocks: Vec<_> = fs::read_dir("/sys/class/ptp")
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        clocks.sort();
        for clock in clocks {
            let clock = clock.to_string_lossy().into_owned();
            let name = fs::read_to_string(Path::new("/sys/class/ptp").join(&clock).join("clock_name"))
                .unwrap_or_default()
                .trim()
                .to_string();
            if HYPERVISOR_PTP_CLOCKS.contains(&name.as_str()) {
                if let Ok(file) = File::open(Path::new("/dev").join(&clock)) {
                    return Some(Reference::Ptp { file, name });
                }
            }
        }
        File::open("/dev/rtc0").ok().map(|file| Reference::Rtc { file })
    }

    fn describe(&self) -> String {
        match self {
            Reference::Ptp { name, .. } => format!("the hypervisor clock ({name})"),
            Reference::Rtc { .. } => "the RTC".to_string(),
        }
    }

    /// Whether readings are host UTC (a PTP clock) rather than an RTC of unknown zone.
    fn is_utc(&self) -> bool {
        matches!(self, Reference::Ptp { .. })
    }

    /// One reading, in nanoseconds since the epoch (an RTC's whole seconds).
    fn read(&self) -> io::Result<i64> {
        match self {
            Reference::Ptp { file, .. } => clock_ns(fd_to_clockid(file.as_raw_fd())),
            Reference::Rtc { file } => {
                let mut t = RtcTime::default();
                // SAFETY: RTC_RD_TIME fills a struct rtc_time, which RtcTime lays out.
                if unsafe { libc::ioctl(file.as_raw_fd(), RTC_RD_TIME as _, &mut t) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(rtc_seconds(&t) * NS_PER_SEC)
            }
        }
    }

    /// The reference minus the wall clock, as exactly as the reference allows: an RTC is read
    /// until its second turns over (at most about a second), which is when its whole-second
    /// count is exact.
    fn precise_offset(&self) -> io::Result<i64> {
        if self.is_utc() {
            return Ok(self.read()? - realtime_ns()?);
        }
        let first = self.read()?;
        for _ in 0..250 {
            thread::sleep(Duration::from_millis(5));
            let now = self.read()?;
            if now != first {
                return Ok(now - realtime_ns()?);
            }
        }
        // The RTC is not ticking; the coarse reading is the best there is.
        Ok(first - realtime_ns()?)
    }

    /// The reference minus the wall clock from one reading: an RTC's reading is up to a second
    /// behind, so half a second is added to centre the error.
    fn coarse_offset(&self) -> io::Result<i64> {
        let reading = self.read()?;
        let now = realtime_ns()?;
        Ok(if self.is_utc() {
            reading - now
        } else {
            reading + NS_PER_SEC / 2 - now
        })
    }
}

/// What a comparison calls for: the step to add to the wall clock, if any.
///
/// `offset` is reference minus wall clock now; `norm` is what it should be (zero for a UTC
/// reference, the boot-time offset for an RTC).
pub fn needed_step(offset: i64, norm: i64) -> Option<i64> {
    let drift = offset - norm;
    (drift.abs() > STEP_THRESHOLD_NS).then_some(drift)
}

/// Starts the watch on its own thread; returns at once. Without a reference clock it logs so
/// and does nothing.
pub fn start() {
    let Some(reference) = Reference::find() else {
        log!("clock: no RTC or hypervisor clock; the wall clock is not checked after host sleep");
        return;
    };
    let spawned = thread::Builder::new()
        .name("clock".into())
        .spawn(move || watch(reference));
    if let Err(err) = spawned {
        log!("clock: cannot start the clock watch: {err}");
    }
}

fn watch(reference: Reference) {
    let what = reference.describe();
    let norm = if reference.is_utc() {
        0
    } else {
        match reference.precise_offset() {
            Ok(offset) => offset,
            Err(err) => {
                log!("clock: cannot read {what}: {err}; the wall clock is not checked");
                return;
            }
        }
    };
    log!(
        "clock: checking the wall clock against {what} every {} s",
        CHECK_INTERVAL.as_secs()
    );
    let mut failing = false;
    loop {
        thread::sleep(CHECK_INTERVAL);
        let step = reference
            .coarse_offset()
            .and_then(|coarse| match needed_step(coarse, norm) {
                // Measure exactly only when a step looks due.
                Some(_) => reference.precise_offset().map(|exact| needed_step(exact, norm)),
                None => Ok(None),
            });
        match step {
            Ok(None) => failing = false,
            Ok(Some(step)) => apply(step, &what),
            Err(err) if !failing => {
                failing = true;
                log!("clock: cannot read {what}: {err}");
            }
            Err(_) => {}
        }
    }
}

fn apply(step: i64, what: &str) {
    let result = realtime_ns().and_then(|now| set_realtime_ns(now + step).map(|()| now + step));
    let amount = step.abs() as f64 / NS_PER_SEC as f64;
    let direction = if step > 0 { "behind" } else { "ahead of" };
    match result {
        Ok(new) => log!(
            "clock: the wall clock was {amount:.3} s {direction} {what} (the host slept or paused \
             the VM); stepped to {}",
            format_utc(new)
        ),
        Err(err) => log!("clock: the wall clock is {amount:.3} s {direction} {what}; cannot step it: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2023, 11, 14), 19_675);
        for days in [-800_000, -1, 0, 59, 60, 365, 11_016, 19_675, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn rtc_readings_become_epoch_seconds() {
        // 2023-11-14 22:13:20 UTC is 1700000000.
        let t = RtcTime {
            tm_sec: 20,
            tm_min: 13,
            tm_hour: 22,
            tm_mday: 14,
            tm_mon: 10,
            tm_year: 123,
            ..RtcTime::default()
        };
        assert_eq!(rtc_seconds(&t), 1_700_000_000);
        assert_eq!(std::mem::size_of::<RtcTime>(), 36, "RTC_RD_TIME's size field says 0x24");
    }

    #[test]
    fn utc_is_formatted_with_milliseconds() {
        assert_eq!(format_utc(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn only_a_drift_past_the_threshold_is_stepped() {
        let s = NS_PER_SEC;
        assert_eq!(needed_step(0, 0), None);
        assert_eq!(needed_step(2 * s, 0), None);
        // Paused for a minute: the reference ran on, the wall clock did not.
        assert_eq!(needed_step(60 * s, 0), Some(60 * s));
        assert_eq!(needed_step(-5 * s, 0), Some(-5 * s));
        // An RTC in local time (UTC+1) is an hour ahead from boot on: no step for that.
        assert_eq!(needed_step(3600 * s + s / 2, 3600 * s), None);
        assert_eq!(needed_step(3660 * s, 3600 * s), Some(60 * s));
    }

    #[test]
    fn dynamic_clock_ids_follow_the_ptp_documentation() {
        assert_eq!(fd_to_clockid(3), -29);
        assert_eq!(fd_to_clockid(0), -5);
    }
}
