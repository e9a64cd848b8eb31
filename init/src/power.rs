//! The power button: input devices that report `KEY_POWER`, watched through evdev.
//!
//! The kernel does not turn an ACPI power button press (QEMU's `system_powerdown`) into a
//! signal for PID 1; the ACPI `button` driver reports it as a key press on an input device,
//! which `evdev` exposes as `/dev/input/eventN`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::log;

/// `EV_KEY` from `include/uapi/linux/input-event-codes.h`.
pub const EV_KEY: u16 = 0x01;
/// `KEY_POWER` from `include/uapi/linux/input-event-codes.h`.
pub const KEY_POWER: u16 = 116;
/// Size of `struct input_event` on 64-bit Linux: `struct timeval` (16), type, code (2 each),
/// value (4).
pub const INPUT_EVENT_SIZE: usize = 24;
/// Bits per word of the sysfs capability bitmaps (`BITS_PER_LONG`).
const BITMAP_WORD_BITS: u32 = usize::BITS;

/// Whether a sysfs capability bitmap has bit `bit` set.
///
/// The format (`drivers/input/input.c`, `input_print_bitmap`) is hexadecimal words of
/// `BITS_PER_LONG` bits separated by spaces, most significant word first, leading zero
/// words omitted. `None` if the text is not such a bitmap.
pub fn bitmap_has_bit(text: &str, bit: u32, word_bits: u32) -> Option<bool> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut parsed = Vec::with_capacity(words.len());
    for word in &words {
        parsed.push(u128::from_str_radix(word, 16).ok()?);
    }
    let index = (bit / word_bits) as usize;
    if index >= parsed.len() {
        return Some(false);
    }
    let word = parsed[parsed.len() - 1 - index];
    Some(word >> (bit % word_bits) & 1 == 1)
}

/// Whether a buffer of `struct input_event`s holds a press of `KEY_POWER`.
pub fn power_key_pressed(events: &[u8]) -> bool {
    events.chunks_exact(INPUT_EVENT_SIZE).any(|event| {
        let kind = u16::from_ne_bytes([event[16], event[17]]);
        let code = u16::from_ne_bytes([event[18], event[19]]);
        let value = i32::from_ne_bytes([event[20], event[21], event[22], event[23]]);
        // value: 0 release, 1 press, 2 autorepeat.
        kind == EV_KEY && code == KEY_POWER && value == 1
    })
}

/// The open input devices that can report a power key press.
#[derive(Default)]
pub struct PowerButtons {
    devices: BTreeMap<String, File>,
}

impl PowerButtons {
    /// Opens every `eventN` device under `/sys/class/input` that reports `KEY_POWER` and is
    /// not open yet; returns how many were added.
    pub fn rescan(&mut self) -> usize {
        let Ok(entries) = fs::read_dir("/sys/class/input") else {
            return 0;
        };
        let mut added = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("event") || self.devices.contains_key(&name) {
                continue;
            }
            let caps = entry.path().join("device/capabilities/key");
            let Ok(text) = fs::read_to_string(&caps) else {
                continue;
            };
            if bitmap_has_bit(&text, u32::from(KEY_POWER), BITMAP_WORD_BITS) != Some(true) {
                continue;
            }
            let node = Path::new("/dev/input").join(&name);
            match OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&node) {
                Ok(file) => {
                    let device = fs::read_to_string(entry.path().join("device/name")).unwrap_or_default();
                    log!("watching {} ({}) for the power key", node.display(), device.trim());
                    self.devices.insert(name, file);
                    added += 1;
                }
                // devtmpfs may not have made the node yet; the next scan retries.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => log!("cannot open {}: {err}", node.display()),
            }
        }
        added
    }

    /// The descriptors to poll.
    pub fn fds(&self) -> Vec<RawFd> {
        self.devices.values().map(|f| f.as_raw_fd()).collect()
    }

    /// Reads what is pending on every device; true if the power key was pressed. Devices that
    /// went away are dropped.
    pub fn pressed(&mut self) -> bool {
        let mut pressed = false;
        let mut gone = Vec::new();
        let mut buf = [0u8; INPUT_EVENT_SIZE * 64];
        for (name, file) in &mut self.devices {
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => pressed |= power_key_pressed(&buf[..n]),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        gone.push(name.clone());
                        break;
                    }
                }
            }
        }
        for name in gone {
            self.devices.remove(&name);
        }
        pressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut bytes = vec![0u8; 16];
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&code.to_ne_bytes());
        bytes.extend_from_slice(&value.to_ne_bytes());
        bytes
    }

    #[test]
    fn acpi_power_button_bitmap_has_key_power() {
        // /sys/class/input/event0/device/capabilities/key of QEMU's "Power Button" (LNXPWRBN).
        assert_eq!(bitmap_has_bit("10000000000000 0\n", 116, 64), Some(true));
        assert_eq!(bitmap_has_bit("10000000000000 0\n", 115, 64), Some(false));
        // On a 32-bit kernel the same key is bit 20 of the fourth word from the right.
        assert_eq!(bitmap_has_bit("100000 0 0 0", 116, 32), Some(true));
    }

    #[test]
    fn keyboard_and_mouse_bitmaps() {
        // An AT keyboard: many words, KEY_POWER (116) among them.
        let keyboard = "402000000 3803078f800d001 feffffdfffefffff fffffffffffffffe";
        assert_eq!(bitmap_has_bit(keyboard, 116, 64), Some(true));
        assert_eq!(bitmap_has_bit(keyboard, 0, 64), Some(false));
        assert_eq!(bitmap_has_bit(keyboard, 1, 64), Some(true));
        // A mouse: buttons only, in the fifth word (BTN_MOUSE = 0x110 = 272).
        assert_eq!(bitmap_has_bit("70000 0 0 0 0", 116, 64), Some(false));
        assert_eq!(bitmap_has_bit("70000 0 0 0 0", 272, 64), Some(true));
        // No keys at all.
        assert_eq!(bitmap_has_bit("0\n", 116, 64), Some(false));
        assert_eq!(bitmap_has_bit("", 116, 64), Some(false));
    }

    #[test]
    fn garbage_bitmap_is_none() {
        assert_eq!(bitmap_has_bit("zz 0", 116, 64), None);
    }

    #[test]
    fn only_a_power_key_press_counts() {
        let mut events = event(0x04, 0x04, 0x5e); // EV_MSC scan code
        events.extend(event(EV_KEY, KEY_POWER, 1));
        events.extend(event(0, 0, 0)); // EV_SYN
        assert!(power_key_pressed(&events));
        assert!(!power_key_pressed(&event(EV_KEY, KEY_POWER, 0)));
        assert!(!power_key_pressed(&event(EV_KEY, KEY_POWER, 2)));
        assert!(!power_key_pressed(&event(EV_KEY, 115, 1)));
        assert!(!power_key_pressed(&event(0x02, KEY_POWER, 1)));
        // A truncated event is ignored, not misread.
        assert!(!power_key_pressed(&event(EV_KEY, KEY_POWER, 1)[..20]));
    }
}
