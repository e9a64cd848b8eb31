//! Dates as ISO 9660 records them, from a Unix epoch (UTC, offset 0).

/// A broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Civil {
    pub year: i64,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl Civil {
    /// Splits `epoch` (seconds since 1970-01-01T00:00:00Z) into a proleptic Gregorian date.
    pub fn from_epoch(epoch: i64) -> Civil {
        let days = epoch.div_euclid(86_400);
        let secs = epoch.rem_euclid(86_400);
        // Count from 0000-03-01 so that the leap day is the last day of a year: eras of 400
        // years have exactly 146097 days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z.rem_euclid(146_097);
        let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let mp = (5 * day_of_year + 2) / 153; // month counted from March
        let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: (secs / 3600) as u8,
            minute: (secs / 60 % 60) as u8,
            second: (secs % 60) as u8,
        }
    }
}

/// The 7-byte date of a directory record and of Rock Ridge `TF` (ECMA-119 9.1.5): years since
/// 1900, month, day, hour, minute, second, offset from GMT in 15-minute units (0). Dates
/// outside 1900–2155 are clamped to the representable range.
pub(crate) fn record_date(epoch: i64) -> [u8; 7] {
    const MIN: i64 = -2_208_988_800; // 1900-01-01T00:00:00Z
    const MAX: i64 = 5_992_220_159; // 2159-12-31T23:59:59Z, above 2155 is clamped below
    let c = Civil::from_epoch(epoch.clamp(MIN, MAX));
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
    let c = Civil::from_epoch(epoch.clamp(MIN, MAX));
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
        assert_eq!(
            Civil::from_epoch(0),
            Civil {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0
            }
        );
        // 2024-02-29T12:34:56Z, a leap day.
        assert_eq!(
            Civil::from_epoch(1_709_210_096),
            Civil {
                year: 2024,
                month: 2,
                day: 29,
                hour: 12,
                minute: 34,
                second: 56
            }
        );
        // 1969-12-31T23:59:59Z
        assert_eq!(Civil::from_epoch(-1).year, 1969);
        assert_eq!(record_date(1_709_210_096), [124, 2, 29, 12, 34, 56, 0]);
        assert_eq!(&volume_date(1_709_210_096)[..16], b"2024022912345600");
        assert_eq!(record_date(i64::MIN), [0, 1, 1, 0, 0, 0, 0]);
        assert_eq!(record_date(i64::MAX), [255, 12, 31, 23, 59, 59, 0]);
        assert_eq!(&volume_date(i64::MAX)[..4], b"9999");
    }
}
