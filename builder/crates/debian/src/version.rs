//! Debian version numbers: `[epoch:]upstream_version[-debian_revision]`.
//!
//! The syntax and the ordering are those of Debian Policy 5.6.12 ("Version"): epochs compare
//! numerically, then the upstream version and the revision compare by alternating runs of
//! non-digits (character by character, `~` before everything, letters before other
//! characters) and digits (numerically).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A parsed Debian version, ordered as dpkg orders them.
#[derive(Clone)]
pub struct DebVersion {
    epoch: u32,
    upstream: String,
    revision: String,
}

/// Why a string is not a Debian version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Debian version {version:?}: {reason}")]
pub struct VersionError {
    /// The text that failed to parse.
    pub version: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl DebVersion {
    /// Parses `[epoch:]upstream_version[-debian_revision]` (Policy 5.6.12).
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        let err = |reason| VersionError {
            version: text.to_string(),
            reason,
        };
        let text_trimmed = text.trim();
        if text_trimmed.is_empty() {
            return Err(err("it is empty"));
        }
        let (epoch, rest) = match text_trimmed.split_once(':') {
            Some((e, rest)) => {
                if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err("the epoch before ':' must be a number"));
                }
                let epoch = e.parse::<u32>().map_err(|_| err("the epoch is too large"))?;
                (epoch, rest)
            }
            None => (0, text_trimmed),
        };
        // The revision is everything after the last hyphen; without a hyphen there is none.
        let (upstream, revision) = match rest.rfind('-') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        if upstream.is_empty() {
            return Err(err("the upstream version is empty"));
        }
        if rest.contains('-') && revision.is_empty() {
            return Err(err("the revision after the last '-' is empty"));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | '-' | ':');
        if !upstream.chars().all(allowed) {
            return Err(err(
                "the upstream version may only contain letters, digits and . + ~ - :",
            ));
        }
        if !revision
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~'))
        {
            return Err(err("the revision may only contain letters, digits and . + ~"));
        }
        Ok(DebVersion {
            epoch,
            upstream: upstream.to_string(),
            revision: revision.to_string(),
        })
    }

    /// The epoch (0 when absent).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The upstream part.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The Debian revision (empty when absent, which orders like `0`).
    pub fn revision(&self) -> &str {
        &self.revision
    }
}

/// Sort weight of one character of a non-digit run (Policy 5.6.12): `~` sorts before
/// everything, even the end of the run; letters sort before non-letters.
fn char_order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

/// Compares two upstream versions or revisions by the Policy's alternating-run algorithm.
fn compare_part(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // Non-digit run, character by character.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ca = char_order(a.get(i).copied());
            let cb = char_order(b.get(j).copied());
            if ca != cb {
                return ca.cmp(&cb);
            }
            i += 1;
            j += 1;
        }
        // Digit run, numerically: skip leading zeros, then longer is larger, then lexical.
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let si = i;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        let sj = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let (da, db) = (&a[si..i], &b[sj..j]);
        let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

impl Ord for DebVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| compare_part(&self.upstream, &other.upstream))
            .then_with(|| compare_part(&self.revision, &other.revision))
    }
}

impl PartialOrd for DebVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Equality is dpkg's: `1.0` equals `0:1.0` and `1.0-0`... as far as ordering goes.
impl PartialEq for DebVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for DebVersion {}

impl FromStr for DebVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DebVersion::parse(s)
    }
}

impl fmt::Display for DebVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch != 0 {
            write!(f, "{}:", self.epoch)?;
        }
        f.write_str(&self.upstream)?;
        if !self.revision.is_empty() {
            write!(f, "-{}", self.revision)?;
        }
        Ok(())
    }
}

impl fmt::Debug for DebVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DebVersion({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> DebVersion {
        DebVersion::parse(s).unwrap()
    }

    #[test]
    fn parses_parts() {
        let x = v("1:2.36-9+deb12u4");
        assert_eq!((x.epoch(), x.upstream(), x.revision()), (1, "2.36", "9+deb12u4"));
        let y = v("20.10.24+dfsg1-1+deb12u1+b2");
        assert_eq!(y.upstream(), "20.10.24+dfsg1");
        assert_eq!(y.revision(), "1+deb12u1+b2");
        // Hyphens in the upstream part are allowed when there is a revision.
        let z = v("1.2-beta-3");
        assert_eq!((z.upstream(), z.revision()), ("1.2-beta", "3"));
        assert_eq!(v("2.0").revision(), "");
        assert_eq!(v("1:2.36-9+deb12u4").to_string(), "1:2.36-9+deb12u4");
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "a:1.0", ":1.0", "1.0-", "1:", "1.0 beta", "1.0_2", "1-2-"] {
            assert!(DebVersion::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn policy_ordering_examples() {
        // Policy 5.6.12: "~~ < ~~a < ~ < (empty) < a".
        let ordered = ["1.0~~", "1.0~~a", "1.0~", "1.0", "1.0a"];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert!(v("1.0~rc1") < v("1.0"));
        assert!(v("1.0~rc1-1") < v("1.0-1"));
        assert!(v("1.0~rc1") < v("1.0~rc2"));
        // Digits compare numerically, not lexically.
        assert!(v("1.9") < v("1.10"));
        assert!(v("2.36") > v("2.4"));
        assert!(v("1.001") == v("1.1"));
        // Epochs dominate.
        assert!(v("1:0.1") > v("9.9"));
        assert!(v("0:1.0") == v("1.0"));
        // Revisions compare when upstream is equal; absent revision equals "0".
        assert!(v("1.0-1") < v("1.0-2"));
        assert!(v("1.0-9") < v("1.0-10"));
        assert!(v("1.0") == v("1.0-0"));
        assert!(v("1.0") < v("1.0-1"));
        assert!(v("2.36-9+deb12u3") < v("2.36-9+deb12u4"));
        assert!(v("1.0-1") < v("1.0-1+b1"));
        // Letters sort before non-letters.
        assert!(v("1.0a") < v("1.0+"));
        assert!(v("1.0.") > v("1.0a"));
        // Huge digit runs do not overflow.
        assert!(v("1.20250101000000000000001") > v("1.20250101000000000000000"));
    }
}
