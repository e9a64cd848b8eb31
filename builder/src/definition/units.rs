//! Sizes and permission bits as a definition or the command line writes them (`"8GiB"`, `4096`,
//! `"0644"`).

use super::target::Format;
use serde::Deserialize;

/// Why a size could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// The text does not start with digits.
    #[error("size {0:?} does not start with a number")]
    NoNumber(String),
    /// The unit after the number is not one of B, KiB, MiB, GiB or TiB.
    #[error("size {text:?} has unit {unit:?}; use B, KiB, MiB, GiB or TiB")]
    UnknownUnit {
        /// The whole size as written.
        text: String,
        /// The unit as written.
        unit: String,
    },
    /// The size does not fit in 64 bits.
    #[error("size {0:?} is too large")]
    TooLarge(String),
}

/// Parses sizes such as `"8GiB"`, `"512MiB"`, `"1G"`, `"4096"` (bytes).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| SizeError::NoNumber(text.to_string()))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        other => {
            return Err(SizeError::UnknownUnit {
                text: text.to_string(),
                unit: other.to_string(),
            });
        }
    };
    n.checked_mul(mult).ok_or_else(|| SizeError::TooLarge(text.to_string()))
}

/// Whether `bytes` can be the virtual size of a disk image: a whole number of MiB (the
/// partitions are MiB-aligned) and at least 64 MiB (room for the ESP and a data partition).
pub fn is_valid_disk_size(bytes: u64) -> bool {
    bytes >= (64 << 20) && bytes.is_multiple_of(1 << 20)
}

/// The largest virtual disk any build accepts. Every disk artifact's sha256 reads its whole
/// virtual size (holes hash as zeros at memory speed, about 2 GB/s), so a larger disk costs
/// more than half an hour per artifact before anything is published; a utility VM keeps its
/// state on a data disk of its own.
pub const MAX_DISK_SIZE: u64 = 4 << 40;

/// The format limits a disk size must stay within: (format, largest size, why).
const FORMAT_LIMITS: [(Format, u64, &str); 3] = [
    // VMware's Virtual Disk Format 1.1, "Hosted Sparse Extents": grain directory and table
    // entries are 32-bit sector numbers, so a sparse extent addresses at most 2 TiB.
    (
        Format::Vmdk,
        2 << 40,
        "a monolithicSparse extent's 32-bit sector offsets address at most 2TiB",
    ),
    (
        Format::VmdkStream,
        2 << 40,
        "a streamOptimized extent's 32-bit sector offsets address at most 2TiB",
    ),
    // MS-VHDX 2.6.2.2: VirtualDiskSize is at most 64 TiB.
    (Format::Vhdx, 64 << 40, "MS-VHDX 2.6.2.2 caps VirtualDiskSize at 64TiB"),
];

/// Why a virtual disk size cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskSizeError {
    /// Not a whole number of MiB, or smaller than 64 MiB.
    #[error("{0} bytes: a disk must be a whole number of MiB and at least 64MiB")]
    NotWhole(u64),
    /// Larger than a format (or any build) allows.
    #[error("{} is larger than {} allows ({why}); use at most {}", human(*size), format.map_or("any build".to_string(), |f| format!("the {} format", f.name())), human(*max))]
    TooLarge {
        /// The size asked for.
        size: u64,
        /// The format whose limit it passes; `None` for [`MAX_DISK_SIZE`].
        format: Option<Format>,
        /// The largest size allowed.
        max: u64,
        /// Where the limit comes from.
        why: &'static str,
    },
}

/// Checks a virtual disk size against the disk formats in `formats` and [`MAX_DISK_SIZE`].
pub fn check_disk_size(bytes: u64, formats: &[Format]) -> Result<(), DiskSizeError> {
    if !is_valid_disk_size(bytes) {
        return Err(DiskSizeError::NotWhole(bytes));
    }
    for (format, max, why) in FORMAT_LIMITS {
        if bytes > max && formats.contains(&format) {
            return Err(DiskSizeError::TooLarge {
                size: bytes,
                format: Some(format),
                max,
                why,
            });
        }
    }
    if bytes > MAX_DISK_SIZE {
        return Err(DiskSizeError::TooLarge {
            size: bytes,
            format: None,
            max: MAX_DISK_SIZE,
            why: "every disk artifact's sha256 reads its whole virtual size, which takes over half an hour beyond this; keep data on a separate data disk",
        });
    }
    Ok(())
}

/// A size for messages: whole TiB, GiB or MiB when it is one, else bytes.
fn human(bytes: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// Deserializes a size given as an integer (bytes) or as text with a unit.
pub(crate) fn deserialize_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Int(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Int(n) => Ok(n),
        Size::Text(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

/// Deserializes permission bits given as an integer (`0o755`) or as octal text (`"0644"`).
pub(crate) fn deserialize_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Int(u32),
        Text(String),
    }
    let mode = match Mode::deserialize(d)? {
        Mode::Int(m) => m,
        Mode::Text(s) => {
            let digits = s.strip_prefix("0o").unwrap_or(&s);
            u32::from_str_radix(digits, 8).map_err(|_| {
                serde::de::Error::custom(format!("mode {s:?} is not an octal number such as \"0644\" or 0o755"))
            })?
        }
    };
    if mode > 0o7777 {
        return Err(serde::de::Error::custom(format!(
            "mode {mode:#o} has bits beyond 0o7777; give permission bits only, such as 0o755"
        )));
    }
    Ok(Some(mode))
}
