//! UTC calendar time from a count of seconds since the Unix epoch.
//!
//! Every timestamp uvmkit writes (ISO 9660 dates, FAT directory entries, the SBOM's creation
//! time) comes from one `SOURCE_DATE_EPOCH`-style value, so builds are reproducible. The
//! formats differ only in how they encode the calendar fields; this crate computes those fields
//! once, in the proleptic Gregorian calendar with no leap seconds (POSIX time, as
//! `SOURCE_DATE_EPOCH` is defined), for any `i64` of seconds.

#![deny(missing_docs)]

use std::fmt;

/// Seconds in a POSIX day: POSIX time counts no leap seconds.
const SECONDS_PER_DAY: i64 = 86_400;

/// A UTC date and time of day, broken into calendar fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CivilTime {
    /// The year, proleptic Gregorian (0 is 1 BC, negative years before that).
    pub year: i64,
    /// The month, 1 to 12.
    pub month: u8,
    /// The day of the month, 1 to 31.
    pub day: u8,
    /// The hour, 0 to 23.
    pub hour: u8,
    /// The minute, 0 to 59.
    pub minute: u8,
    /// The second, 0 to 59.
    pub second: u8,
}

impl CivilTime {
    /// The calendar time `seconds` after 1970-01-01T00:00:00Z (before it, when negative).
    pub fn from_unix(seconds: i64) -> CivilTime {
        Self::from_day_and_second(seconds.div_euclid(SECONDS_PER_DAY), seconds.rem_euclid(SECONDS_PER_DAY))
    }

    /// The calendar time of an unsigned count of seconds, as `SOURCE_DATE_EPOCH` is given;
    /// exact over the whole `u64` range.
    pub fn from_unix_unsigned(seconds: u64) -> CivilTime {
        let per_day = SECONDS_PER_DAY as u64;
        // Both quotient and remainder fit in an i64 for every u64.
        Self::from_day_and_second((seconds / per_day) as i64, (seconds % per_day) as i64)
    }

    /// Day `days` since 1970-01-01 at `second_of_day` (0..86400) seconds past midnight.
    fn from_day_and_second(days: i64, second_of_day: i64) -> CivilTime {
        let (year, month, day) = date_from_days(days);
        CivilTime {
            year,
            month,
            day,
            hour: (second_of_day / 3600) as u8,
            minute: (second_of_day / 60 % 60) as u8,
            second: (second_of_day % 60) as u8,
        }
    }

    /// RFC 3339 in UTC with a four-digit year, e.g. `2023-11-14T22:13:20Z`: the same text as
    /// the [`Display`](fmt::Display) implementation.
    pub fn rfc3339(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for CivilTime {
    /// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339 section 5.6, UTC).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Year, month (1–12) and day (1–31) of the proleptic Gregorian calendar for a count of days
/// since 1970-01-01.
///
/// Days are counted from 0000-03-01 so that the leap day is the last day of a year; then every
/// 400-year era has exactly 146097 days, and within an era the year, and the month counted from
/// March, follow from integer division alone (H. Hinnant's `civil_from_days`).
fn date_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn civil(year: i64, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> CivilTime {
        CivilTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(CivilTime::from_unix(0), civil(1970, 1, 1, 0, 0, 0));
        assert_eq!(CivilTime::from_unix(315_532_800), civil(1980, 1, 1, 0, 0, 0));
        assert_eq!(CivilTime::from_unix(1_700_000_000), civil(2023, 11, 14, 22, 13, 20));
        // One second before the signed 32-bit time_t runs out, and the second after.
        assert_eq!(CivilTime::from_unix(2_147_483_647), civil(2038, 1, 19, 3, 14, 7));
        assert_eq!(CivilTime::from_unix(2_147_483_648), civil(2038, 1, 19, 3, 14, 8));
        // The unsigned 32-bit limit, and FAT's last representable second.
        assert_eq!(CivilTime::from_unix(4_294_967_295), civil(2106, 2, 7, 6, 28, 15));
        assert_eq!(CivilTime::from_unix(4_354_819_199), civil(2107, 12, 31, 23, 59, 59));
        assert_eq!(CivilTime::from_unix(253_402_300_799), civil(9999, 12, 31, 23, 59, 59));
        // Before the epoch.
        assert_eq!(CivilTime::from_unix(-1), civil(1969, 12, 31, 23, 59, 59));
        assert_eq!(CivilTime::from_unix(-2_208_988_800), civil(1900, 1, 1, 0, 0, 0));
        assert_eq!(CivilTime::from_unix(-62_135_596_800), civil(1, 1, 1, 0, 0, 0));
    }

    #[test]
    fn leap_years() {
        // 2000 is a leap year (divisible by 400), 1900 and 2100 are not (divisible by 100).
        assert_eq!(CivilTime::from_unix(951_782_400), civil(2000, 2, 29, 0, 0, 0));
        assert_eq!(CivilTime::from_unix(1_709_210_096), civil(2024, 2, 29, 12, 34, 56));
        assert_eq!(date_from_days(11_016), (2000, 2, 29));
        assert_eq!(date_from_days(11_017), (2000, 3, 1));
        assert_eq!(date_from_days(-25_509), (1900, 2, 28));
        assert_eq!(date_from_days(-25_508), (1900, 3, 1));
        assert_eq!(date_from_days(47_540), (2100, 2, 28));
        assert_eq!(date_from_days(47_541), (2100, 3, 1));
        assert_eq!(date_from_days(24_165), (2036, 2, 29));
    }

    #[test]
    fn days_follow_each_other() {
        // From 1600 to 2400, every day is the day after the one before, by the calendar rules.
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_len = |y: i64, m: u8| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut prev = date_from_days(-135_140);
        assert_eq!(prev, (1600, 1, 1));
        for days in -135_139..=157_054 {
            let (y, m, d) = date_from_days(days);
            let expected = if prev.2 < month_len(prev.0, prev.1) {
                (prev.0, prev.1, prev.2 + 1)
            } else if prev.1 < 12 {
                (prev.0, prev.1 + 1, 1)
            } else {
                (prev.0 + 1, 1, 1)
            };
            assert_eq!((y, m, d), expected, "day {days}");
            prev = (y, m, d);
        }
        assert_eq!(prev, (2400, 1, 1));
    }

    #[test]
    fn unsigned_seconds_and_rfc3339() {
        assert_eq!(
            CivilTime::from_unix_unsigned(1_700_000_000),
            CivilTime::from_unix(1_700_000_000)
        );
        assert_eq!(
            CivilTime::from_unix_unsigned(1_700_000_000).rfc3339(),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(CivilTime::from_unix(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(CivilTime::from_unix(951_782_400).to_string(), "2000-02-29T00:00:00Z");
        // Past i64::MAX seconds the year is still exact: 2^64 - 1 seconds is in year 584554051223.
        let last = CivilTime::from_unix_unsigned(u64::MAX);
        assert_eq!(last.year, 584_554_051_223);
        assert_eq!((last.hour, last.minute, last.second), (7, 0, 15));
        let signed_max = CivilTime::from_unix(i64::MAX);
        assert_eq!(signed_max, CivilTime::from_unix_unsigned(i64::MAX as u64));
        assert_eq!(signed_max.year, 292_277_026_596);
        assert_eq!(CivilTime::from_unix(i64::MIN).year, -292_277_022_657);
    }
}
