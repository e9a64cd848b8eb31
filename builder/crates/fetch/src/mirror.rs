//! Where the Debian mirror and the Debian security archive come from.
//!
//! The release mirror (which also serves `SUITE-updates` and `SUITE-backports`), in order:
//! the image definition's `mirror`, the environment variable `UVMKIT_DEBIAN_MIRROR`, then the
//! host's apt sources: deb822 files (`/etc/apt/sources.list.d/*.sources`, sources.list(5)
//! "DEB822-STYLE FORMAT"), then one-line entries in `/etc/apt/sources.list` and
//! `/etc/apt/sources.list.d/*.list` ("ONE-LINE-STYLE FORMAT"). From apt sources only a `deb`
//! entry for a plain release suite counts (`bookworm`, `stable`, not `bookworm-security` or
//! `bookworm-updates`), with a URI uvmkit can fetch.
//!
//! The security archive (`SUITE-security`, published apart from the release mirror), in the
//! same order: `security_mirror`, `UVMKIT_DEBIAN_SECURITY_MIRROR`, then the first apt entry
//! whose suites include a `*-security` suite.
//!
//! There is no built-in fallback: with nothing found, the error says how to set one.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use reqwest::Url;

use crate::{FetchError, Result, MIRROR_ENV, SECURITY_MIRROR_ENV};

/// A Debian mirror and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSource {
    /// The mirror's base URL, without a trailing `/` (`…/debian`, holding `dists/` and `pool/`).
    pub url: String,
    /// Where the URL came from, for messages ("mirror from …").
    pub origin: MirrorOrigin,
    /// The suite the apt entry was for, when it came from apt sources.
    pub suite: Option<String>,
}

/// Where a mirror URL came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorOrigin {
    /// The image definition's `[debian] mirror` or `security_mirror`.
    ImageDefinition,
    /// The `UVMKIT_DEBIAN_MIRROR` environment variable.
    Environment,
    /// The `UVMKIT_DEBIAN_SECURITY_MIRROR` environment variable.
    SecurityEnvironment,
    /// An apt source file of the host.
    AptSources(PathBuf),
}

impl fmt::Display for MirrorOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MirrorOrigin::ImageDefinition => f.write_str("the image definition"),
            MirrorOrigin::Environment => write!(f, "{MIRROR_ENV}"),
            MirrorOrigin::SecurityEnvironment => write!(f, "{SECURITY_MIRROR_ENV}"),
            MirrorOrigin::AptSources(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Which archive a mirror is looked up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArchiveHost {
    /// The release mirror: `SUITE`, `SUITE-updates`, `SUITE-backports`.
    Release,
    /// The security archive: `SUITE-security`.
    Security,
}

impl ArchiveHost {
    /// The environment variable naming this archive's mirror.
    pub fn env_var(self) -> &'static str {
        match self {
            ArchiveHost::Release => MIRROR_ENV,
            ArchiveHost::Security => SECURITY_MIRROR_ENV,
        }
    }

    /// Whether an apt entry for `suite` serves this archive.
    fn serves(self, suite: &str) -> bool {
        match self {
            ArchiveHost::Release => is_plain_release(suite),
            ArchiveHost::Security => is_security_suite(suite),
        }
    }
}

/// The Debian mirror to use: `explicit` (from the image definition), else
/// `$UVMKIT_DEBIAN_MIRROR`, else the host's apt sources.
pub fn discover_debian_mirror(explicit: Option<&str>) -> Result<MirrorSource> {
    discover_in(Path::new("/"), std::env::var(MIRROR_ENV).ok(), explicit)
}

/// The mirror of `host`'s archive: `explicit` (from the image definition), else its
/// environment variable ([`ArchiveHost::env_var`]), else the host's apt sources.
pub fn discover_archive_mirror(host: ArchiveHost, explicit: Option<&str>) -> Result<MirrorSource> {
    discover_archive_in(Path::new("/"), host, std::env::var(host.env_var()).ok(), explicit)
}

/// [`discover_debian_mirror`] with the file system root and the environment value given, for
/// tests and chroots.
pub fn discover_in(root: &Path, env: Option<String>, explicit: Option<&str>) -> Result<MirrorSource> {
    discover_archive_in(root, ArchiveHost::Release, env, explicit)
}

/// [`discover_archive_mirror`] with the file system root and the environment value given.
pub fn discover_archive_in(
    root: &Path,
    host: ArchiveHost,
    env: Option<String>,
    explicit: Option<&str>,
) -> Result<MirrorSource> {
    let env_origin = match host {
        ArchiveHost::Release => MirrorOrigin::Environment,
        ArchiveHost::Security => MirrorOrigin::SecurityEnvironment,
    };
    let given = [
        (explicit.map(str::to_string), MirrorOrigin::ImageDefinition),
        (env, env_origin),
    ];
    for (value, origin) in given {
        let Some(value) = value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) else {
            continue;
        };
        let url = check_url(&value).map_err(|reason| FetchError::BadMirror {
            url: value.clone(),
            origin: origin.clone(),
            reason,
        })?;
        return Ok(MirrorSource {
            url,
            origin,
            suite: None,
        });
    }

    let apt = root.join("etc/apt");
    let list_d = apt.join("sources.list.d");
    let deb822_files = files_with_extension(&list_d, "sources");
    let one_line_files: Vec<PathBuf> = std::iter::once(apt.join("sources.list"))
        .chain(files_with_extension(&list_d, "list"))
        .collect();
    let candidates = deb822_files
        .iter()
        .map(|p| (p, parse_deb822 as fn(&str) -> Vec<AptEntry>))
        .chain(
            one_line_files
                .iter()
                .map(|p| (p, parse_one_line as fn(&str) -> Vec<AptEntry>)),
        );
    for (path, parse) in candidates {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                log::warn!("cannot read apt sources {}: {e}; skipping it", path.display());
                continue;
            }
        };
        if let Some(found) = pick(parse(&text), host) {
            let (url, suite) = found;
            return Ok(MirrorSource {
                url,
                origin: MirrorOrigin::AptSources(path.clone()),
                suite: Some(suite),
            });
        }
    }
    let searched = vec![
        list_d.join("*.sources"),
        apt.join("sources.list"),
        list_d.join("*.list"),
    ];
    Err(match host {
        ArchiveHost::Release => FetchError::NoMirror { searched },
        ArchiveHost::Security => FetchError::NoSecurityMirror { searched },
    })
}

/// One `deb` entry of an apt source: its URIs and suites.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AptEntry {
    uris: Vec<String>,
    suites: Vec<String>,
}

/// The first fetchable URI of the first entry with a suite of `host`'s archive, and that suite.
fn pick(entries: Vec<AptEntry>, host: ArchiveHost) -> Option<(String, String)> {
    entries.into_iter().find_map(|entry| {
        let suite = entry.suites.iter().find(|s| host.serves(s))?.clone();
        let url = entry.uris.iter().find_map(|u| check_url(u).ok())?;
        Some((url, suite))
    })
}

/// `bookworm`, `stable`, `sid`: not `bookworm-security`, `bookworm-updates`,
/// `bookworm-backports`, the old `bookworm/updates`, nor a flat repository's `./`.
fn is_plain_release(suite: &str) -> bool {
    !suite.is_empty() && !suite.contains(['-', '/', '$']) && suite != "."
}

/// `bookworm-security`, `trixie-security`: the security archive's suites (the old
/// `bookworm/updates` layout ended with Debian 10 and is not looked for).
fn is_security_suite(suite: &str) -> bool {
    suite
        .strip_suffix("-security")
        .is_some_and(|release| is_plain_release(release))
}

/// The URL without a trailing `/`, or why it cannot serve as a mirror.
fn check_url(value: &str) -> std::result::Result<String, String> {
    let url = Url::parse(value).map_err(|e| e.to_string())?;
    match url.scheme() {
        "http" | "https" | "file" => Ok(value.trim_end_matches('/').to_string()),
        other => Err(format!("the scheme {other}: is not supported")),
    }
}

/// Files in `dir` named `*.ext`, sorted by name (apt reads them in that order too).
fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext) && p.is_file())
        .collect();
    files.sort();
    files
}

/// Entries of a deb822 `.sources` file: paragraphs separated by blank lines, `#` comment
/// lines, `Field: value` with continuation lines starting with white space. Only paragraphs
/// with `Types` including `deb` and not `Enabled: no` count.
fn parse_deb822(text: &str) -> Vec<AptEntry> {
    let mut entries = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut flush = |fields: &mut Vec<(String, String)>| {
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let words = |name: &str| {
            get(name)
                .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let is_deb = words("Types").iter().any(|t| t == "deb");
        let enabled = get("Enabled").is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"));
        if is_deb && enabled {
            entries.push(AptEntry {
                uris: words("URIs"),
                suites: words("Suites"),
            });
        }
        fields.clear();
    };
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut fields);
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    flush(&mut fields);
    entries
}

/// Entries of a one-line `sources.list`: `deb [ options ] URI suite [component...]`, `#` to
/// the end of a line being a comment.
fn parse_one_line(text: &str) -> Vec<AptEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("").trim();
            let rest = line.strip_prefix("deb")?;
            if !rest.starts_with([' ', '\t']) {
                // `deb-src`, or not an entry at all.
                return None;
            }
            let mut rest = rest.trim_start();
            if let Some(options) = rest.strip_prefix('[') {
                rest = options.split_once(']')?.1.trim_start();
            }
            let mut words = rest.split_whitespace();
            let uri = words.next()?.to_string();
            let suite = words.next()?.to_string();
            Some(AptEntry {
                uris: vec![uri],
                suites: vec![suite],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::TestDir;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    const DEB822: &str = "\
# A comment about the first entry.
Types: deb-src
URIs: http://example.org/source-only
Suites: bookworm
Components: main

Types: deb
URIs: http://example.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://example.org/disabled
Suites: bookworm
Enabled: no

Types: deb deb-src
# The next URI is on a continuation line.
URIs:
 cdrom:/media/cdrom/
 http://127.0.0.1:8080/debian/
Suites: bookworm-updates bookworm
Components: main contrib
";

    #[test]
    fn explicit_beats_environment_beats_apt_sources() {
        let t = TestDir::new("mirror-order");
        write(&t.0, "etc/apt/sources.list.d/debian.sources", DEB822);
        let env = Some("http://127.0.0.2/env-debian/".to_string());
        let m = discover_in(&t.0, env.clone(), Some(" http://example.org/def ")).unwrap();
        assert_eq!(
            (m.url.as_str(), &m.origin),
            ("http://example.org/def", &MirrorOrigin::ImageDefinition)
        );
        let m = discover_in(&t.0, env, None).unwrap();
        assert_eq!(
            (m.url.as_str(), &m.origin),
            ("http://127.0.0.2/env-debian", &MirrorOrigin::Environment)
        );
        assert_eq!(m.origin.to_string(), "UVMKIT_DEBIAN_MIRROR");
        // An empty variable counts as unset.
        let m = discover_in(&t.0, Some(String::new()), Some("")).unwrap();
        assert_eq!(m.url, "http://127.0.0.1:8080/debian");
    }

    #[test]
    fn deb822_picks_a_release_entry_and_skips_security_disabled_and_source_entries() {
        let t = TestDir::new("mirror-deb822");
        write(&t.0, "etc/apt/sources.list.d/debian.sources", DEB822);
        // Files with other extensions are ignored.
        write(
            &t.0,
            "etc/apt/sources.list.d/aaa.sources.disabled",
            "Types: deb\nURIs: http://example.org/no\nSuites: bookworm\n",
        );
        let m = discover_in(&t.0, None, None).unwrap();
        assert_eq!(m.url, "http://127.0.0.1:8080/debian");
        assert_eq!(m.suite.as_deref(), Some("bookworm"));
        let path = t.0.join("etc/apt/sources.list.d/debian.sources");
        assert_eq!(m.origin, MirrorOrigin::AptSources(path.clone()));
        assert_eq!(
            format!("mirror from {}", m.origin),
            format!("mirror from {}", path.display())
        );
    }

    #[test]
    fn deb822_files_come_before_one_line_files_and_are_read_in_name_order() {
        let t = TestDir::new("mirror-precedence");
        write(
            &t.0,
            "etc/apt/sources.list",
            "deb http://example.org/one-line bookworm main\n",
        );
        write(
            &t.0,
            "etc/apt/sources.list.d/b.sources",
            "Types: deb\nURIs: http://example.org/b\nSuites: stable\n",
        );
        write(
            &t.0,
            "etc/apt/sources.list.d/a.sources",
            "Types: deb\nURIs: http://example.org/a\nSuites: stable-backports\n",
        );
        let m = discover_in(&t.0, None, None).unwrap();
        assert_eq!(m.url, "http://example.org/b");
        fs::remove_file(t.0.join("etc/apt/sources.list.d/b.sources")).unwrap();
        let m = discover_in(&t.0, None, None).unwrap();
        assert_eq!(m.url, "http://example.org/one-line");
        assert_eq!(m.origin, MirrorOrigin::AptSources(t.0.join("etc/apt/sources.list")));
    }

    #[test]
    fn one_line_entries_with_options_and_comments() {
        let t = TestDir::new("mirror-one-line");
        write(
            &t.0,
            "etc/apt/sources.list",
            "# deb http://example.org/commented bookworm main\n\
             deb-src http://example.org/src bookworm main\n\
             deb http://example.org/security bookworm-security main\n\
             deb http://example.org/old-security bookworm/updates main\n\
             deb cdrom:[Debian 12]/ bookworm main\n\n",
        );
        write(
            &t.0,
            "etc/apt/sources.list.d/extra.list",
            "deb [ arch=amd64 signed-by=/usr/share/keyrings/x.gpg ] https://example.org/debian/ trixie main # trailing\n",
        );
        let m = discover_in(&t.0, None, None).unwrap();
        assert_eq!(m.url, "https://example.org/debian");
        assert_eq!(m.suite.as_deref(), Some("trixie"));
        assert_eq!(
            m.origin,
            MirrorOrigin::AptSources(t.0.join("etc/apt/sources.list.d/extra.list"))
        );
    }

    #[test]
    fn nothing_found_says_how_to_set_a_mirror() {
        let t = TestDir::new("mirror-none");
        write(
            &t.0,
            "etc/apt/sources.list.d/security.sources",
            "Types: deb\nURIs: http://example.org/s\nSuites: bookworm-security\n",
        );
        let e = discover_in(&t.0, None, None).unwrap_err();
        assert!(matches!(e, FetchError::NoMirror { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("[debian]")
                && msg.contains("UVMKIT_DEBIAN_MIRROR")
                && msg.contains("sources.list.d/*.sources"),
            "{msg}"
        );
        // Not even an /etc/apt at all.
        let empty = TestDir::new("mirror-empty");
        assert!(matches!(
            discover_in(&empty.0, None, None),
            Err(FetchError::NoMirror { .. })
        ));
    }

    #[test]
    fn an_unusable_explicit_mirror_is_an_error_naming_its_origin() {
        let t = TestDir::new("mirror-bad");
        let e = discover_in(&t.0, None, Some("ftp://example.org/debian")).unwrap_err();
        assert!(
            matches!(
                &e,
                FetchError::BadMirror {
                    origin: MirrorOrigin::ImageDefinition,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("ftp://example.org/debian") && e.to_string().contains("the image definition"),
            "{e}"
        );
        let e = discover_in(&t.0, Some("not a url".into()), None).unwrap_err();
        assert!(
            matches!(
                &e,
                FetchError::BadMirror {
                    origin: MirrorOrigin::Environment,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn the_security_archive_comes_from_its_own_key_variable_or_a_security_entry() {
        let t = TestDir::new("mirror-security");
        write(&t.0, "etc/apt/sources.list.d/debian.sources", DEB822);
        let m = discover_archive_in(&t.0, ArchiveHost::Security, None, None).unwrap();
        assert_eq!(m.url, "http://example.org/debian-security");
        assert_eq!(m.suite.as_deref(), Some("bookworm-security"));
        let m = discover_archive_in(&t.0, ArchiveHost::Security, Some("http://127.0.0.3/s/".into()), None).unwrap();
        assert_eq!(
            (m.url.as_str(), &m.origin),
            ("http://127.0.0.3/s", &MirrorOrigin::SecurityEnvironment)
        );
        assert_eq!(m.origin.to_string(), "UVMKIT_DEBIAN_SECURITY_MIRROR");
        let m = discover_archive_in(
            &t.0,
            ArchiveHost::Security,
            Some("http://127.0.0.3/s".into()),
            Some("http://example.org/def-security"),
        )
        .unwrap();
        assert_eq!(m.origin, MirrorOrigin::ImageDefinition);
        // Release entries do not serve the security archive.
        let plain = TestDir::new("mirror-security-none");
        write(
            &plain.0,
            "etc/apt/sources.list",
            "deb http://example.org/debian bookworm main\ndeb http://example.org/debian bookworm-updates main\n",
        );
        let e = discover_archive_in(&plain.0, ArchiveHost::Security, None, None).unwrap_err();
        assert!(matches!(e, FetchError::NoSecurityMirror { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("security_mirror") && msg.contains("UVMKIT_DEBIAN_SECURITY_MIRROR"),
            "{msg}"
        );
    }

    #[test]
    fn security_suites() {
        for s in ["bookworm-security", "trixie-security", "stable-security"] {
            assert!(is_security_suite(s), "{s}");
        }
        for s in [
            "bookworm",
            "bookworm-updates",
            "bookworm/updates",
            "-security",
            "a-b-security",
        ] {
            assert!(!is_security_suite(s), "{s}");
        }
    }

    #[test]
    fn plain_release_suites() {
        for s in ["bookworm", "stable", "sid", "trixie"] {
            assert!(is_plain_release(s), "{s}");
        }
        for s in [
            "bookworm-security",
            "bookworm-updates",
            "bookworm-backports",
            "bookworm/updates",
            "./",
            "",
            "$(ARCH)",
        ] {
            assert!(!is_plain_release(s), "{s}");
        }
    }
}
