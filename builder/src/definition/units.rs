//! Sizes and permission bits as a definition or the command line writes them (`"8GiB"`, `4096`,
//! `"0644"`).

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
