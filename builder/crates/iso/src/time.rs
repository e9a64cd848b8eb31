//! Dates as ISO 9660 records them, from a Unix epoch (UTC, offset 0).

use uvmkit_timestamp::CivilTime;

/// The 7-byte date of a directory record and of Rock Ridge `TF` (ECMA-119 9.1.5): years since
/// 1900, month, day, hour, minute, second, offset from GMT in 15-minute units (0). Dates
/// outside 1900–2155 are clamped to the representable range.
pub(crate) fn record_date(epoch: i64) -> [u8; 7] {
    const MIN: i64 = -2_208_988_800; // 1900-01-01T00:00:00Z
    const MAX: i64 = 5_992_220_159; // 2159-12-31T23:59:59Z, above 2155 is clamped below
    let c = CivilTime::from_unix(epoch.clamp(MIN, MAX));
    if c.year > 2155 {
        return [255, 12, 31, 23, 59, 59, 0];
    }
    [(c.year - 1900) as u8, c.month, c.day, c.hour, c.minute, c.second, 0]
}

/// The 17-byte date of a volume descriptor (ECMA-119 8.4.26.1): `YYYYMMDDHHMMSScc` as digits
/// followed by the offset from GMT (0). Years are clamped to 1..=9999.
pub(crate) fn volume_date(epoch: i64) -> [u8; 17] {
    const MIN: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
    const MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let c = CivilTime::from_unix(epoch.clamp(MIN, MAX));
    let text = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}00",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    );
    let mut out = [0u8; 17];
    out[..16].copy_from_slice(text.as_bytes());
    out
}

/// The "not specified" volume date of ECMA-119 8.4.26.1: sixteen `'0'` digits and offset 0.
pub(crate) fn unspecified_volume_date() -> [u8; 17] {
    let mut out = [b'0'; 17];
    out[16] = 0;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        // 2024-02-29T12:34:56Z, a leap day.
        assert_eq!(record_date(1_709_210_096), [124, 2, 29, 12, 34, 56, 0]);
        assert_eq!(&volume_date(1_709_210_096)[..16], b"2024022912345600");
        // 1969-12-31T23:59:59Z, and the first second past the signed 32-bit time_t.
        assert_eq!(record_date(-1), [69, 12, 31, 23, 59, 59, 0]);
        assert_eq!(&volume_date(2_147_483_648)[..16], b"2038011903140800");
        assert_eq!(record_date(i64::MIN), [0, 1, 1, 0, 0, 0, 0]);
        assert_eq!(record_date(i64::MAX), [255, 12, 31, 23, 59, 59, 0]);
        assert_eq!(&volume_date(i64::MAX)[..4], b"9999");
    }
}
