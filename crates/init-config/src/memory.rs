//! `[memory]`: how the guest makes its memory go further. Today one setting: a compressed swap
//! device in RAM (zram), sized from the guest's memory (`"25%"`) or absolutely (`"512MiB"`).
//!
//! The definition and the init share [`ZramSize`]: the builder parses what the user wrote with
//! [`ZramSize::from_str`](std::str::FromStr) and writes it back in its canonical form
//! ([`fmt::Display`]: `25%` or a number of bytes), which the init reads with the same parser.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The page size swap is laid out in on x86-64 (`PAGE_SIZE`); a zram device is sized in pages.
pub const ZRAM_PAGE_BYTES: u64 = 4096;

/// The smallest zram device accepted: smaller ones hold too few pages to be worth a device.
pub const ZRAM_MIN_BYTES: u64 = 16 << 20;

/// The largest absolute zram size accepted (1 TiB): a guard against a unit typo.
pub const ZRAM_MAX_BYTES: u64 = 1 << 40;

/// `[memory]` in the definition and in `/etc/uvmkit/init.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySection {
    /// A zram swap device of this size, set up by the init at boot; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zram: Option<ZramSize>,
}

/// How large the zram swap device is (its uncompressed capacity, `disksize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ZramSize {
    /// This percentage of the guest's memory (`MemTotal`), 1 to 100.
    Percent(u8),
    /// This many bytes, a whole number of [`ZRAM_PAGE_BYTES`] pages.
    Bytes(u64),
}

/// Why a zram size is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ZramSizeError {
    /// Neither `N%` nor a size with a unit.
    #[error(
        "{0:?} is not a size: write a percentage of the guest's memory (\"25%\") or a size (\"512MiB\", \"1GiB\")"
    )]
    NotASize(String),
    /// A percentage outside 1 to 100.
    #[error("{0}% is not a share of memory: use 1% to 100%")]
    Percent(u64),
    /// Smaller than [`ZRAM_MIN_BYTES`] or larger than [`ZRAM_MAX_BYTES`].
    #[error("{0} bytes is out of range: use 16MiB to 1TiB")]
    OutOfRange(u64),
    /// Not a whole number of pages.
    #[error("{0} bytes is not a whole number of 4KiB pages")]
    NotPages(u64),
}

impl ZramSize {
    /// The device size in bytes for a guest with `mem_total` bytes of memory, rounded down to
    /// whole pages.
    pub fn bytes(self, mem_total: u64) -> u64 {
        let bytes = match self {
            ZramSize::Percent(p) => mem_total / 100 * u64::from(p),
            ZramSize::Bytes(b) => b,
        };
        bytes / ZRAM_PAGE_BYTES * ZRAM_PAGE_BYTES
    }
}

impl FromStr for ZramSize {
    type Err = ZramSizeError;

    /// `"25%"`, or a number with an optional unit: `B`, `K`/`KiB`, `M`/`MiB`, `G`/`GiB`,
    /// `T`/`TiB` (powers of 1024).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let not_a_size = || ZramSizeError::NotASize(text.to_string());
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits.parse().map_err(|_| not_a_size())?;
        if unit == "%" {
            return match u8::try_from(n) {
                Ok(p @ 1..=100) => Ok(ZramSize::Percent(p)),
                _ => Err(ZramSizeError::Percent(n)),
            };
        }
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KiB" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "T" | "TiB" => 1 << 40,
            _ => return Err(not_a_size()),
        };
        let bytes = n.checked_mul(scale).ok_or_else(not_a_size)?;
        if !(ZRAM_MIN_BYTES..=ZRAM_MAX_BYTES).contains(&bytes) {
            return Err(ZramSizeError::OutOfRange(bytes));
        }
        if bytes % ZRAM_PAGE_BYTES != 0 {
            return Err(ZramSizeError::NotPages(bytes));
        }
        Ok(ZramSize::Bytes(bytes))
    }
}

impl fmt::Display for ZramSize {
    /// The canonical form: `25%`, or the byte count.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZramSize::Percent(p) => write!(f, "{p}%"),
            ZramSize::Bytes(b) => write!(f, "{b}"),
        }
    }
}

impl TryFrom<String> for ZramSize {
    type Error = ZramSizeError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<ZramSize> for String {
    fn from(size: ZramSize) -> String {
        size.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_and_sizes_parse_and_print_canonically() {
        assert_eq!("25%".parse(), Ok(ZramSize::Percent(25)));
        assert_eq!("100%".parse(), Ok(ZramSize::Percent(100)));
        assert_eq!("512MiB".parse(), Ok(ZramSize::Bytes(512 << 20)));
        assert_eq!("1G".parse(), Ok(ZramSize::Bytes(1 << 30)));
        assert_eq!("16777216".parse(), Ok(ZramSize::Bytes(16 << 20)));
        assert_eq!(ZramSize::Percent(25).to_string(), "25%");
        assert_eq!(ZramSize::Bytes(512 << 20).to_string(), "536870912");
        for text in ["25%", "536870912"] {
            assert_eq!(text.parse::<ZramSize>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn bad_sizes_are_refused_saying_what_to_write() {
        let err = |t: &str| t.parse::<ZramSize>().unwrap_err().to_string();
        assert_eq!(err("0%"), "0% is not a share of memory: use 1% to 100%");
        assert_eq!(err("150%"), "150% is not a share of memory: use 1% to 100%");
        assert!(err("lots").contains("\"lots\" is not a size"), "{}", err("lots"));
        assert!(err("2 MB").contains("is not a size"));
        assert_eq!(err("1MiB"), "1048576 bytes is out of range: use 16MiB to 1TiB");
        assert_eq!(err("2TiB"), "2199023255552 bytes is out of range: use 16MiB to 1TiB");
        assert_eq!(err("16777217"), "16777217 bytes is not a whole number of 4KiB pages");
        assert!(err("99999999999999999999G").contains("is not a size"));
    }

    #[test]
    fn the_device_size_follows_the_guest_memory_in_whole_pages() {
        let mem_total = 2_035_000 * 1024; // what /proc/meminfo says for `-m 2048`
        assert_eq!(ZramSize::Percent(25).bytes(mem_total), 520_957_952);
        assert_eq!(ZramSize::Percent(25).bytes(mem_total) % ZRAM_PAGE_BYTES, 0);
        assert_eq!(ZramSize::Bytes(512 << 20).bytes(mem_total), 512 << 20);
    }

    #[test]
    fn the_section_refuses_unknown_keys_and_reads_the_canonical_form() {
        let section: MemorySection = toml::from_str("zram = \"25%\"\n").unwrap();
        assert_eq!(section.zram, Some(ZramSize::Percent(25)));
        assert!(toml::from_str::<MemorySection>("zram = \"0%\"\n").is_err());
        let err = toml::from_str::<MemorySection>("swap = \"1G\"\n").unwrap_err();
        assert!(err.to_string().contains("swap"), "{err}");
    }
}
