//! GUIDs as GPT stores them.
//!
//! UEFI 2.10 Appendix A ("EFI_GUID") stores a GUID as a 32-bit, two 16-bit and eight 8-bit
//! fields, the first three little-endian. The canonical text form
//! (`C12A7328-F81F-11D2-BA4B-00A0C93EC93B`, RFC 9562 §4) prints those fields big-endian, so the
//! first 8 bytes are byte-swapped between text and disk ("mixed-endian").

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// A GUID in GPT's on-disk byte order (first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Guid(pub [u8; 16]);

/// Text that is not a GUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not a GUID; write it as 36 characters of hex digits in 8-4-4-4-12 groups, \
     e.g. C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
)]
pub struct GuidError {
    /// The text that failed to parse.
    pub text: String,
}

impl Guid {
    /// The all-zero GUID, which GPT uses to mark an unused partition entry.
    pub const NIL: Guid = Guid([0; 16]);

    /// EFI System Partition (UEFI 2.10 §5.3.3, Table 5.8).
    pub const EFI_SYSTEM: Guid = Guid::from_fields(
        0xC12A7328,
        0xF81F,
        0x11D2,
        [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
    );

    /// Linux filesystem data (`0FC63DAF-8483-4772-8E79-3D69D8477DE4`).
    pub const LINUX_FILESYSTEM: Guid = Guid::from_fields(
        0x0FC63DAF,
        0x8483,
        0x4772,
        [0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4],
    );

    /// Linux root (x86-64) of the Discoverable Partitions Specification
    /// (`4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709`).
    pub const LINUX_ROOT_X86_64: Guid = Guid::from_fields(
        0x4F68BCE3,
        0xE8CD,
        0x4DB1,
        [0x96, 0xE7, 0xFB, 0xCA, 0xF9, 0x84, 0xB7, 0x09],
    );

    /// Microsoft basic data (`EBD0A0A2-B9E5-4433-87C0-68B6B72699C7`), also used by hybrid ISOs.
    pub const BASIC_DATA: Guid = Guid::from_fields(
        0xEBD0A0A2,
        0xB9E5,
        0x4433,
        [0x87, 0xC0, 0x68, 0xB6, 0xB7, 0x26, 0x99, 0xC7],
    );

    /// Builds a GUID from its text-order fields (`d1-d2-d3-d4[0..2]-d4[2..8]`).
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5], d4[6], d4[7],
        ])
    }

    /// Converts the 16 bytes of the text form (big-endian fields, as RFC 9562 writes a UUID)
    /// to on-disk order.
    pub const fn from_text_order(b: [u8; 16]) -> Guid {
        Guid([
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15],
        ])
    }

    /// The 16 bytes in text order (big-endian fields).
    pub const fn to_text_order(&self) -> [u8; 16] {
        // The swap is its own inverse.
        Guid::from_text_order(self.0).0
    }

    /// Parses the canonical text form, upper or lower case, with or without surrounding braces.
    pub fn parse(s: &str) -> Result<Guid, GuidError> {
        let err = || GuidError { text: s.to_string() };
        let t = s.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or(s);
        let bytes = t.as_bytes();
        if bytes.len() != 36 {
            return Err(err());
        }
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < 36 {
            if matches!(i, 8 | 13 | 18 | 23) {
                if bytes[i] != b'-' {
                    return Err(err());
                }
                i += 1;
                continue;
            }
            let hi = hex_value(bytes[i]).ok_or_else(err)?;
            let lo = hex_value(bytes[i + 1]).ok_or_else(err)?;
            out[n] = (hi << 4) | lo;
            n += 1;
            i += 2;
        }
        Ok(Guid::from_text_order(out))
    }

    /// A GUID derived from `seed` and `purpose`: the first 16 bytes of
    /// `SHA-256(seed || purpose)` with the version (8, "custom") and variant (`10`) bits of
    /// RFC 9562 §5.8 set. The same inputs always give the same GUID; `seed` should have a
    /// fixed length so that different (seed, purpose) pairs cannot hash the same bytes.
    pub fn derive(seed: &[u8], purpose: &str) -> Guid {
        let mut hasher = Sha256::new();
        hasher.update(seed);
        hasher.update(purpose.as_bytes());
        let digest = hasher.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        // RFC 9562 §4.1/§4.2: octet 6's high nibble is the version, octet 8's top bits the variant.
        b[6] = (b[6] & 0x0F) | 0x80;
        b[8] = (b[8] & 0x3F) | 0x80;
        Guid::from_text_order(b)
    }

    /// True for the all-zero GUID.
    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl FromStr for Guid {
    type Err = GuidError;

    fn from_str(s: &str) -> Result<Guid, GuidError> {
        Guid::parse(s)
    }
}

/// Canonical upper-case text (`C12A7328-F81F-11D2-BA4B-00A0C93EC93B`), as sgdisk prints it.
/// Use `{:x}` for the lower-case form that `blkid` and the kernel's `PARTUUID=` show.
impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_text(f, &self.to_text_order(), true)
    }
}

/// Canonical lower-case text (`c12a7328-f81f-11d2-ba4b-00a0c93ec93b`).
impl fmt::LowerHex for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_text(f, &self.to_text_order(), false)
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

fn write_text(f: &mut fmt::Formatter<'_>, b: &[u8; 16], upper: bool) -> fmt::Result {
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            f.write_str("-")?;
        }
        if upper {
            write!(f, "{byte:02X}")?;
        } else {
            write!(f, "{byte:02x}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esp_type_has_the_spec_byte_order() {
        // UEFI 2.10 §5.3.3: the ESP type GUID as it appears on disk.
        let on_disk = [
            0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B,
        ];
        assert_eq!(Guid::EFI_SYSTEM.0, on_disk);
        assert_eq!(
            Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap(),
            Guid::EFI_SYSTEM
        );
        assert_eq!(Guid::EFI_SYSTEM.to_string(), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(
            format!("{:x}", Guid::EFI_SYSTEM),
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
        );
    }

    #[test]
    fn constants_round_trip_through_text() {
        for (g, text) in [
            (Guid::LINUX_FILESYSTEM, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
            (Guid::BASIC_DATA, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"),
        ] {
            assert_eq!(g.to_string(), text);
            assert_eq!(Guid::parse(text).unwrap(), g);
            assert_eq!(Guid::parse(&text.to_lowercase()).unwrap(), g);
            assert_eq!(Guid::parse(&format!("{{{text}}}")).unwrap(), g);
        }
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "C12A7328F81F11D2BA4B00A0C93EC93B",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93BX",
            "G12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "C12A7328_F81F-11D2-BA4B-00A0C93EC93B",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC9\u{e9}",
        ] {
            assert!(Guid::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn derived_guids_are_stable_versioned_and_distinct() {
        let seed = [7u8; 32];
        let a = Guid::derive(&seed, "gpt-disk");
        assert_eq!(a, Guid::derive(&seed, "gpt-disk"));
        // Pinned: SHA-256 of 32 bytes of 7 and "gpt-disk", computed independently (Python's
        // hashlib and uuid), so the derivation cannot drift between releases unnoticed.
        assert_eq!(a.to_string(), "C2B15AF2-3CD3-81BA-9089-3F9AC1DCADCA");
        assert_ne!(a, Guid::derive(&seed, "gpt-partition:esp"));
        assert_ne!(a, Guid::derive(&[8u8; 32], "gpt-disk"));
        let text = a.to_string();
        // Version nibble is the first character of the third group; variant 10xx starts the fourth.
        assert_eq!(&text[14..15], "8");
        assert!(matches!(&text[19..20], "8" | "9" | "A" | "B"), "{text}");
        assert_eq!(Guid::parse(&text).unwrap(), a);
    }
}
