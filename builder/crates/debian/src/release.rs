//! The `Release` file of a suite (the text inside `InRelease` once its signature is checked):
//! what the suite is and the size and SHA-256 of every index it lists. Format:
//! Debian's "Debian Repository Format", section "Release files".

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::control::{ControlError, RawParagraphs};

/// Errors from reading a Release file or checking an index against it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// The text is not deb822.
    #[error("Release file: {0}")]
    Syntax(#[from] ControlError),
    /// The text holds no paragraph, or more than one.
    #[error("Release file: expected one paragraph of fields, found {0}")]
    ParagraphCount(usize),
    /// There is no `SHA256` list: indices could not be checked.
    #[error("Release file has no SHA256 list; the repository offers no trustworthy hashes for its indices")]
    NoSha256,
    /// A line of the `SHA256` list is not `hash size path`.
    #[error("Release file: malformed SHA256 line {0:?}; expected \"<64 hex digits> <size> <path>\"")]
    BadHashLine(String),
    /// The file asked for is not listed.
    #[error("{0} is not listed in the Release file's SHA256 list; check the suite, component and architecture")]
    NotListed(String),
    /// The file's size differs from the listed one.
    #[error("{path}: size {actual} does not match the {expected} bytes the Release file lists; the download is truncated or the mirror is inconsistent")]
    SizeMismatch {
        /// The index path.
        path: String,
        /// Listed size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// The file's SHA-256 differs from the listed one.
    #[error("{path}: SHA-256 {actual} does not match {expected} from the Release file; the file is corrupt or was tampered with")]
    HashMismatch {
        /// The index path.
        path: String,
        /// Listed hash.
        expected: String,
        /// Actual hash.
        actual: String,
    },
}

/// Size and SHA-256 of one file listed in a Release file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// A parsed Release file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// `Origin` (`Debian`).
    pub origin: Option<String>,
    /// `Label`.
    pub label: Option<String>,
    /// `Suite` (`stable`, `oldstable`...).
    pub suite: Option<String>,
    /// `Codename` (`bookworm`).
    pub codename: Option<String>,
    /// `Version` (`12.11`).
    pub version: Option<String>,
    /// `Date`, as written (RFC 2822).
    pub date: Option<String>,
    /// `Valid-Until`, as written, when present.
    pub valid_until: Option<String>,
    /// `Architectures`.
    pub architectures: Vec<String>,
    /// `Components`.
    pub components: Vec<String>,
    /// `Acquire-By-Hash: yes`: indices can be fetched under `by-hash/SHA256/<hash>`.
    pub acquire_by_hash: bool,
    /// The `SHA256` list: path relative to the suite directory → size and hash.
    pub files: BTreeMap<String, IndexFile>,
}

impl Release {
    /// Parses the (signature-stripped) Release text.
    pub fn parse(text: &str) -> Result<Release, ReleaseError> {
        let paragraphs: Vec<_> = RawParagraphs::new(text).collect::<Result<_, _>>()?;
        if paragraphs.len() != 1 {
            return Err(ReleaseError::ParagraphCount(paragraphs.len()));
        }
        let p = &paragraphs[0];
        let single = |f: &str| p.get(f).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let words = |f: &str| {
            p.get(f)
                .map(|v| v.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        let list = p.get("SHA256").ok_or(ReleaseError::NoSha256)?;
        let mut files = BTreeMap::new();
        for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let bad = || ReleaseError::BadHashLine(line.to_string());
            let mut parts = line.split_whitespace();
            let (Some(hash), Some(size), Some(path), None) = (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            let size = size.parse::<u64>().map_err(|_| bad())?;
            files.insert(
                path.to_string(),
                IndexFile {
                    size,
                    sha256: hash.to_ascii_lowercase(),
                },
            );
        }
        if files.is_empty() {
            return Err(ReleaseError::NoSha256);
        }
        Ok(Release {
            origin: single("Origin"),
            label: single("Label"),
            suite: single("Suite"),
            codename: single("Codename"),
            version: single("Version"),
            date: single("Date"),
            valid_until: single("Valid-Until"),
            architectures: words("Architectures"),
            components: words("Components"),
            acquire_by_hash: single("Acquire-By-Hash").is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            files,
        })
    }

    /// Size and SHA-256 of `path` (`main/binary-amd64/Packages.xz`), when listed.
    pub fn sha256_of(&self, path: &str) -> Option<&IndexFile> {
        self.files.get(path)
    }

    /// Where to fetch `path` relative to the suite directory: under
    /// `<dir>/by-hash/SHA256/<hash>` when the suite offers it (so a mirror update between
    /// fetching `InRelease` and the index cannot mix generations), else `path` itself.
    pub fn fetch_path(&self, path: &str) -> Result<String, ReleaseError> {
        let entry = self
            .sha256_of(path)
            .ok_or_else(|| ReleaseError::NotListed(path.to_string()))?;
        if !self.acquire_by_hash {
            return Ok(path.to_string());
        }
        Ok(match path.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/by-hash/SHA256/{}", entry.sha256),
            None => format!("by-hash/SHA256/{}", entry.sha256),
        })
    }

    /// Checks downloaded bytes of `path` against the listed size and SHA-256.
    pub fn verify_file(&self, path: &str, data: &[u8]) -> Result<(), ReleaseError> {
        let entry = self
            .sha256_of(path)
            .ok_or_else(|| ReleaseError::NotListed(path.to_string()))?;
        if data.len() as u64 != entry.size {
            return Err(ReleaseError::SizeMismatch {
                path: path.to_string(),
                expected: entry.size,
                actual: data.len() as u64,
            });
        }
        let actual = hex(&Sha256::digest(data));
        if actual != entry.sha256 {
            return Err(ReleaseError::HashMismatch {
                path: path.to_string(),
                expected: entry.sha256.clone(),
                actual,
            });
        }
        Ok(())
    }
}

/// Seconds since the Unix epoch of a Release file's `Date` or `Valid-Until`: RFC 2822 section
/// 3.3 as Debian writes it (`Sat, 17 May 2025 09:18:25 UTC`; the weekday is optional, the zone
/// `UTC`, `GMT`, `Z` or a numeric offset such as `+0000`). `None` when it is not such a date.
pub fn parse_date(text: &str) -> Option<i64> {
    let text = text.trim();
    let text = text.split_once(',').map_or(text, |(_, rest)| rest).trim();
    let mut parts = text.split_ascii_whitespace();
    let day: i64 = parts.next()?.parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = parts.next()?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as i64 + 1;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let (h, m): (i64, i64) = (hms.next()?.parse().ok()?, hms.next()?.parse().ok()?);
    let s: i64 = hms.next().map_or(Some(0), |s| s.parse().ok())?;
    let offset = match parts.next() {
        None | Some("UTC" | "GMT" | "UT" | "Z") => 0,
        Some(z) if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let n: i64 = z[1..].parse().ok()?;
            let secs = (n / 100) * 3600 + (n % 100) * 60;
            if z.starts_with('-') {
                -secs
            } else {
                secs
            }
        }
        Some(_) => return None,
    };
    if parts.next().is_some() || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_dates_parse_as_debian_writes_them() {
        assert_eq!(parse_date("Sat, 17 May 2025 09:18:25 UTC"), Some(1_747_473_505));
        assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(parse_date("Sat, 01 Jan 2000 00:00:00 +0100"), Some(946_681_200));
        assert_eq!(parse_date("29 Feb 2024 12:00:00 GMT"), Some(1_709_208_000));
        for bad in [
            "",
            "yesterday",
            "Sat, 17 Foo 2025 09:18:25 UTC",
            "Sat, 17 May 2025 09:18:25 CEST",
        ] {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
    }

    fn sample(body: &[u8]) -> String {
        format!(
            "Origin: Debian\nLabel: Debian\nSuite: stable\nVersion: 12.11\nCodename: bookworm\n\
             Date: Sat, 17 May 2025 09:18:25 UTC\nAcquire-By-Hash: yes\n\
             Architectures: all amd64 arm64\nComponents: main contrib\nDescription: Debian 12.11\n\
             MD5Sum:\n 0123456789abcdef0123456789abcdef 5 main/binary-amd64/Packages.xz\n\
             SHA256:\n {} {:>9} main/binary-amd64/Packages.xz\n \
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855        0 main/i18n/Index\n",
            hex(&Sha256::digest(body)),
            body.len()
        )
    }

    #[test]
    fn parses_fields_and_hash_list() {
        let body = b"pretend xz";
        let r = Release::parse(&sample(body)).unwrap();
        assert_eq!(r.codename.as_deref(), Some("bookworm"));
        assert_eq!(r.suite.as_deref(), Some("stable"));
        assert_eq!(r.date.as_deref(), Some("Sat, 17 May 2025 09:18:25 UTC"));
        assert_eq!(r.architectures, ["all", "amd64", "arm64"]);
        assert_eq!(r.components, ["main", "contrib"]);
        assert_eq!(r.files.len(), 2);
        let e = r.sha256_of("main/binary-amd64/Packages.xz").unwrap();
        assert_eq!(e.size, body.len() as u64);
        assert_eq!(r.sha256_of("main/i18n/Index").unwrap().size, 0);
        assert!(r.sha256_of("main/binary-i386/Packages.xz").is_none());
        assert_eq!(
            r.fetch_path("main/binary-amd64/Packages.xz").unwrap(),
            format!("main/binary-amd64/by-hash/SHA256/{}", e.sha256)
        );
    }

    #[test]
    fn verifies_files() {
        let body = b"pretend xz";
        let r = Release::parse(&sample(body)).unwrap();
        r.verify_file("main/binary-amd64/Packages.xz", body).unwrap();
        assert!(matches!(
            r.verify_file("main/binary-amd64/Packages.xz", b"pretend xy"),
            Err(ReleaseError::HashMismatch { .. })
        ));
        assert!(matches!(
            r.verify_file("main/binary-amd64/Packages.xz", b"short"),
            Err(ReleaseError::SizeMismatch { .. })
        ));
        assert!(matches!(r.verify_file("nope", body), Err(ReleaseError::NotListed(_))));
    }

    #[test]
    fn rejects_md5_only_and_malformed_lines() {
        let md5_only = "Codename: x\nMD5Sum:\n 0123456789abcdef0123456789abcdef 5 main/Packages\n";
        assert_eq!(Release::parse(md5_only), Err(ReleaseError::NoSha256));
        assert!(matches!(
            Release::parse("Codename: x\nSHA256:\n abc 5 main/Packages\n"),
            Err(ReleaseError::BadHashLine(_))
        ));
        assert!(matches!(
            Release::parse("A: 1\n\nB: 2\n"),
            Err(ReleaseError::ParagraphCount(2))
        ));
    }
}
