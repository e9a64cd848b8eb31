//! The init's log: one line per event, to the console and to the kernel log.
//!
//! Lines read `uvmkit-init: [SECS.mmm] MESSAGE`, where the time is `CLOCK_BOOTTIME`, so the
//! number is the time since the kernel started.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::sys;

/// The prefix of every line; also what `dmesg` readers grep for.
pub const PREFIX: &str = "uvmkit-init:";

/// `/dev/kmsg`, once devtmpfs is mounted.
static KMSG: Mutex<Option<File>> = Mutex::new(None);

/// Logs a formatted message; see [`line`].
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::line(&format!($($arg)*))
    };
}

/// Formats one log line (without the newline) for a message logged `elapsed` after boot.
pub fn format_line(elapsed: Duration, message: &str) -> String {
    format!(
        "{PREFIX} [{}.{:03}] {message}",
        elapsed.as_secs(),
        elapsed.subsec_millis()
    )
}

/// Formats the line that says boot is complete. It holds exactly `uvmkit-init: ready`, which
/// tests and tools wait for, with the time since boot after it.
pub fn format_ready_line(elapsed: Duration) -> String {
    format!(
        "{PREFIX} ready ({}.{:03} s since the kernel started)",
        elapsed.as_secs(),
        elapsed.subsec_millis()
    )
}

/// Logs that boot is complete; see [`format_ready_line`].
pub fn ready() {
    write_line(&format_ready_line(sys::boottime()));
}

/// Opens (or reopens) `/dev/kmsg` so later lines also reach the kernel log.
pub fn open_kmsg() {
    let file = OpenOptions::new().write(true).open("/dev/kmsg").ok();
    let mut kmsg = KMSG.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    *kmsg = file;
}

/// Writes one line to stderr (the console) and to the kernel log. Never fails: a log that
/// cannot be written is dropped.
pub fn line(message: &str) {
    write_line(&format_line(sys::boottime(), message));
}

fn write_line(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
    drop(stderr);
    // try_lock: a panic hook that logs while this thread holds the lock must not deadlock.
    if let Ok(mut kmsg) = KMSG.try_lock() {
        if let Some(file) = kmsg.as_mut() {
            // Priority 7 (debug): the kernel prints lines of a priority below the console log
            // level on the console, where this line has already gone directly; at debug level
            // it is kept in the kernel log (`dmesg`) without appearing twice on the console.
            let _ = file.write_all(format!("<7>{text}\n").as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format_has_prefix_and_millisecond_timestamp() {
        assert_eq!(
            format_line(Duration::from_millis(412), "modules loaded (23)"),
            "uvmkit-init: [0.412] modules loaded (23)"
        );
        assert_eq!(
            format_line(Duration::new(12, 3_999_999), "ready"),
            "uvmkit-init: [12.003] ready"
        );
        assert_eq!(format_line(Duration::ZERO, "x"), "uvmkit-init: [0.000] x");
    }

    #[test]
    fn ready_line_holds_the_exact_marker() {
        let line = format_ready_line(Duration::from_millis(3874));
        assert!(line.starts_with("uvmkit-init: ready"), "{line}");
        assert_eq!(line, "uvmkit-init: ready (3.874 s since the kernel started)");
    }
}
