//! One Debian release drawn from several archives: the release suite itself, `SUITE-updates`
//! (stable updates), `SUITE-security` (the security archive) and `SUITE-backports`, merged into
//! one package index whose best versions are the ones apt would install on an empty system.
//!
//! apt gives every archive the same priority, 500, except one whose Release file says
//! `NotAutomatic: yes` (backports: 100 with `ButAutomaticUpgrades: yes`), and among versions
//! of equal priority the highest is the candidate (apt_preferences(5), "APT's Default
//! Priority Assignments"). So a package in both the release and its security archive is
//! installed from whichever has the higher version (Debian Policy 5.6.12 ordering), and a
//! backports package only when it is asked for by name (`apt install -t SUITE-backports`, or
//! a pin): here the packages named for backports come from backports alone, and no other
//! package ever does.

use std::collections::BTreeSet;
use std::fmt;

use crate::control::PackageIndex;

/// The archives a Debian release is published in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArchiveKind {
    /// The release itself (`bookworm`).
    Release,
    /// Stable updates between point releases (`bookworm-updates`), on the release mirror.
    Updates,
    /// Security fixes (`bookworm-security`), published in the separate security archive.
    Security,
    /// Newer versions rebuilt for the release (`bookworm-backports`), on the release mirror.
    Backports,
}

impl ArchiveKind {
    /// The suite name of this archive of `release` (`bookworm` → `bookworm-security`).
    pub fn suite(self, release: &str) -> String {
        match self {
            ArchiveKind::Release => release.to_string(),
            ArchiveKind::Updates => format!("{release}-updates"),
            ArchiveKind::Security => format!("{release}-security"),
            ArchiveKind::Backports => format!("{release}-backports"),
        }
    }
}

impl fmt::Display for ArchiveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArchiveKind::Release => "release",
            ArchiveKind::Updates => "updates",
            ArchiveKind::Security => "security",
            ArchiveKind::Backports => "backports",
        })
    }
}

/// Whether `suite` is a security archive's suite (`bookworm-security`).
pub fn is_security_suite(suite: &str) -> bool {
    suite.strip_suffix("-security").is_some_and(|r| !r.is_empty())
}

/// Which packages of an archive may be installed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Any package, at its highest version across the archives.
    Every,
    /// Only these packages, and these only from this archive (backports' explicit pins).
    Only(BTreeSet<String>),
}

/// The package index of one archive (all its components merged) and what may come from it.
#[derive(Debug, Clone)]
pub struct ArchivePackages {
    /// The archive's suite (`bookworm-security`); recorded in every stanza's
    /// [`Package::archive`](crate::control::Package::archive).
    pub suite: String,
    /// Which of its packages may be installed.
    pub selection: Selection,
    /// Its packages.
    pub index: PackageIndex,
}

/// Why the archives cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchivesError {
    /// A package pinned to an archive is not in it.
    #[error("{package} is to be taken from {suite} only, but {suite} has no package {package}; remove it from [debian] backports or check its name")]
    NotInArchive {
        /// The package.
        package: String,
        /// The archive it is pinned to.
        suite: String,
    },
}

/// Merges the archives, in the order given, into one index: every stanza tagged with its
/// archive; packages an archive pins ([`Selection::Only`]) only from that archive, and that
/// archive's other packages dropped. The [`Resolver`](crate::resolve::Resolver) then takes
/// the highest version of each name; among equal versions the one merged first, so list the
/// release before its updates.
pub fn merge_archives(archives: Vec<ArchivePackages>) -> Result<PackageIndex, ArchivesError> {
    let pinned: BTreeSet<String> = archives
        .iter()
        .filter_map(|a| match &a.selection {
            Selection::Only(names) => Some(names.iter().cloned()),
            Selection::Every => None,
        })
        .flatten()
        .collect();
    let mut merged = PackageIndex::default();
    for archive in archives {
        let mut index = archive.index.in_archive(&archive.suite);
        match &archive.selection {
            Selection::Every => index.retain(|p| !pinned.contains(&p.name)),
            Selection::Only(names) => {
                index.retain(|p| names.contains(&p.name));
                if let Some(missing) = names.iter().find(|n| index.by_name(n).next().is_none()) {
                    return Err(ArchivesError::NotInArchive {
                        package: missing.clone(),
                        suite: archive.suite.clone(),
                    });
                }
            }
        }
        merged.merge(index);
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::{Request, Resolver};

    /// An index of `name version` lines, each with a distinct sha256.
    fn index(lines: &str, salt: u8) -> PackageIndex {
        let mut text = String::new();
        for (i, line) in lines.lines().map(str::trim).filter(|l| !l.is_empty()).enumerate() {
            let (name, version) = line.split_once(' ').unwrap();
            text.push_str(&format!(
                "Package: {name}\nVersion: {version}\nArchitecture: amd64\nFilename: pool/{name}_{version}.deb\nSize: 1\nSHA256: {:02x}{:062x}\n\n",
                salt, i
            ));
        }
        PackageIndex::parse(&text).unwrap()
    }

    fn archive(suite: &str, selection: Selection, lines: &str, salt: u8) -> ArchivePackages {
        ArchivePackages {
            suite: suite.into(),
            selection,
            index: index(lines, salt),
        }
    }

    fn best(merged: &PackageIndex, name: &str) -> (String, String) {
        let p = Resolver::new(merged, "amd64").best(name, None).unwrap();
        (p.version.to_string(), p.archive.clone())
    }

    #[test]
    fn the_highest_version_wins_across_archives() {
        let merged = merge_archives(vec![
            archive(
                "bookworm",
                Selection::Every,
                "openssl 3.0.15-1~deb12u1\nzlib 1:1.2.13\ntzdata 2024a-0+deb12u1",
                1,
            ),
            archive("bookworm-updates", Selection::Every, "tzdata 2025b-0+deb12u1", 2),
            archive(
                "bookworm-security",
                Selection::Every,
                "openssl 3.0.16-1~deb12u1\ntzdata 2024a-0+deb12u1",
                3,
            ),
        ])
        .unwrap();
        assert_eq!(
            best(&merged, "openssl"),
            ("3.0.16-1~deb12u1".into(), "bookworm-security".into())
        );
        assert_eq!(best(&merged, "zlib"), ("1:1.2.13".into(), "bookworm".into()));
        // `2025b` > `2024a`: updates beats both the release and an older security upload.
        assert_eq!(
            best(&merged, "tzdata"),
            ("2025b-0+deb12u1".into(), "bookworm-updates".into())
        );
        // Versions compare as Debian orders them, not as strings: `~` sorts before anything.
        let merged = merge_archives(vec![
            archive("r", Selection::Every, "a 1.0", 1),
            archive("r-security", Selection::Every, "a 1.0~rc1", 2),
        ])
        .unwrap();
        assert_eq!(best(&merged, "a"), ("1.0".into(), "r".into()));
    }

    #[test]
    fn equal_versions_keep_the_archive_merged_first() {
        let merged = merge_archives(vec![
            archive("bookworm", Selection::Every, "a 1.0", 1),
            archive("bookworm-security", Selection::Every, "a 1.0", 2),
        ])
        .unwrap();
        assert_eq!(best(&merged, "a"), ("1.0".into(), "bookworm".into()));
    }

    #[test]
    fn backports_serve_only_the_packages_pinned_to_them() {
        let pins = Selection::Only(["linux-image-amd64".to_string()].into());
        let merged = merge_archives(vec![
            archive(
                "bookworm",
                Selection::Every,
                "linux-image-amd64 6.1.140-1\nsystemd 252.38-1",
                1,
            ),
            archive(
                "bookworm-backports",
                pins.clone(),
                "linux-image-amd64 6.12.30-1~bpo12+1\nsystemd 254.5-1~bpo12+1",
                2,
            ),
        ])
        .unwrap();
        assert_eq!(
            best(&merged, "linux-image-amd64"),
            ("6.12.30-1~bpo12+1".into(), "bookworm-backports".into())
        );
        assert_eq!(best(&merged, "systemd"), ("252.38-1".into(), "bookworm".into()));
        // A pinned package comes from its archive even where another has a higher version.
        let merged = merge_archives(vec![
            archive("bookworm", Selection::Every, "linux-image-amd64 7.0", 1),
            archive("bookworm-backports", pins.clone(), "linux-image-amd64 6.12", 2),
        ])
        .unwrap();
        assert_eq!(
            best(&merged, "linux-image-amd64"),
            ("6.12".into(), "bookworm-backports".into())
        );
        let r = Resolver::new(&merged, "amd64")
            .resolve(&[Request::new("linux-image-amd64")])
            .unwrap();
        assert_eq!(r.packages[0].package.archive, "bookworm-backports");
        // A pin the archive cannot serve is an error naming both.
        let e = merge_archives(vec![archive("bookworm-backports", pins, "other 1", 2)]).unwrap_err();
        assert_eq!(
            e,
            ArchivesError::NotInArchive {
                package: "linux-image-amd64".into(),
                suite: "bookworm-backports".into()
            }
        );
    }

    #[test]
    fn suite_names() {
        assert_eq!(ArchiveKind::Security.suite("trixie"), "trixie-security");
        assert_eq!(ArchiveKind::Updates.suite("trixie"), "trixie-updates");
        assert_eq!(ArchiveKind::Release.suite("trixie"), "trixie");
        assert!(is_security_suite("trixie-security"));
        assert!(!is_security_suite("trixie-updates") && !is_security_suite("-security"));
    }
}
