//! deb822 control data: paragraphs of `Field: value` lines (Debian Policy 5.1), the binary
//! `Packages` index built from them, and dependency relations (Policy 7.1).

use std::collections::BTreeSet;
use std::fmt;

use crate::version::{DebVersion, VersionError};

/// Errors from parsing control data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A line is neither a field, a continuation nor a paragraph break.
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line number in the input.
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// A `Packages` stanza lacks a field apt needs to download and check the package.
    #[error("package {package:?} (stanza at line {line}) has no {field} field; the index is incomplete or not a binary Packages file")]
    MissingField {
        /// The `Package:` name, or empty when that is what is missing.
        package: String,
        /// 1-based line of the stanza's first field.
        line: usize,
        /// The missing field.
        field: &'static str,
    },
    /// A field's value is malformed.
    #[error("package {package:?}: field {field}: {message}")]
    BadField {
        /// The `Package:` name.
        package: String,
        /// The field name.
        field: String,
        /// What was wrong.
        message: String,
    },
    /// A relation field (`Depends`...) does not follow Policy 7.1.
    #[error("invalid relation {text:?}: {message}")]
    BadRelation {
        /// The relation text.
        text: String,
        /// What was wrong.
        message: String,
    },
    /// A version inside a relation or field is malformed.
    #[error(transparent)]
    Version(#[from] VersionError),
}

/// One deb822 paragraph: fields in file order, looked up case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paragraph {
    fields: Vec<(String, String)>,
}

impl Paragraph {
    /// The value of `name` (case-insensitive). Multi-line values keep one line per
    /// continuation line, each trimmed, joined by `\n`; the first line is what followed the
    /// colon.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All fields in file order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when the paragraph has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Parses exactly one paragraph (a `DEBIAN/control` file); more than one is an error.
    pub fn parse_single(text: &str) -> Result<Paragraph, ControlError> {
        let mut all = parse_paragraphs(text)?;
        match all.len() {
            1 => Ok(all.remove(0)),
            0 => Err(ControlError::Syntax {
                line: 1,
                message: "no fields found".into(),
            }),
            n => Err(ControlError::Syntax {
                line: 1,
                message: format!("expected one paragraph, found {n}"),
            }),
        }
    }
}

/// A paragraph as slices of the input: field names and raw values (first line plus its
/// continuation lines, untrimmed).
pub(crate) struct RawParagraph<'a> {
    /// 1-based line of the first field.
    pub line: usize,
    pub fields: Vec<(&'a str, &'a str)>,
}

impl<'a> RawParagraph<'a> {
    pub(crate) fn get(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The value with its first line trimmed and each continuation line trimmed.
    fn normalised(raw: &str) -> String {
        let mut out = String::with_capacity(raw.len());
        for (i, line) in raw.split('\n').enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(line.trim());
        }
        out
    }

    fn into_owned(self) -> Paragraph {
        Paragraph {
            fields: self
                .fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), Self::normalised(v)))
                .collect(),
        }
    }
}

/// Iterates over the paragraphs of deb822 text without copying it.
pub(crate) struct RawParagraphs<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> RawParagraphs<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        RawParagraphs { text, pos: 0, line: 0 }
    }

    /// Next line (without `\n` / `\r\n`) and its start offset.
    fn next_line(&mut self) -> Option<(usize, &'a str)> {
        if self.pos >= self.text.len() {
            return None;
        }
        let start = self.pos;
        let rest = &self.text[start..];
        let (line, advance) = match rest.find('\n') {
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        self.pos += advance;
        self.line += 1;
        Some((start, line.strip_suffix('\r').unwrap_or(line)))
    }
}

impl<'a> Iterator for RawParagraphs<'a> {
    type Item = Result<RawParagraph<'a>, ControlError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut para = RawParagraph {
            line: 0,
            fields: Vec::new(),
        };
        // Index into `fields` of the field that continuation lines extend.
        let mut current: Option<usize> = None;
        let mut value_start = 0;
        while let Some((start, line)) = self.next_line() {
            if line.trim().is_empty() {
                if para.fields.is_empty() {
                    continue;
                }
                break;
            }
            if line.starts_with('#') {
                continue;
            }
            if line.starts_with(' ') || line.starts_with('\t') {
                let Some(idx) = current else {
                    return Some(Err(ControlError::Syntax {
                        line: self.line,
                        message: "continuation line before any field".into(),
                    }));
                };
                let end = start + line.len();
                para.fields[idx].1 = &self.text[value_start..end];
                continue;
            }
            let Some(colon) = line.find(':') else {
                return Some(Err(ControlError::Syntax {
                    line: self.line,
                    message: format!("expected \"Field: value\", found {:?}", truncate(line)),
                }));
            };
            let name = &line[..colon];
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Some(Err(ControlError::Syntax {
                    line: self.line,
                    message: format!("invalid field name {:?}", truncate(name)),
                }));
            }
            if para.get(name).is_some() {
                return Some(Err(ControlError::Syntax {
                    line: self.line,
                    message: format!("field {name} appears twice in one paragraph"),
                }));
            }
            if para.fields.is_empty() {
                para.line = self.line;
            }
            value_start = start + colon + 1;
            let end = start + line.len();
            para.fields.push((name, &self.text[value_start..end]));
            current = Some(para.fields.len() - 1);
        }
        if para.fields.is_empty() {
            None
        } else {
            Some(Ok(para))
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

/// Parses deb822 text into its paragraphs (blank lines separate them; `#` lines are comments).
pub fn parse_paragraphs(text: &str) -> Result<Vec<Paragraph>, ControlError> {
    RawParagraphs::new(text)
        .map(|p| p.map(RawParagraph::into_owned))
        .collect()
}

/// A version comparison in a relation (Policy 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// `<<`: strictly earlier.
    Lt,
    /// `<=`: earlier or equal.
    Le,
    /// `=`: exactly equal.
    Eq,
    /// `>=`: later or equal.
    Ge,
    /// `>>`: strictly later.
    Gt,
}

impl Op {
    /// Parses `<<`, `<=`, `=`, `>=`, `>>`, and the obsolete `<` (meaning `<=`) and `>`
    /// (meaning `>=`).
    pub fn parse(text: &str) -> Option<Op> {
        Some(match text {
            "<<" => Op::Lt,
            "<=" | "<" => Op::Le,
            "=" => Op::Eq,
            ">=" | ">" => Op::Ge,
            ">>" => Op::Gt,
            _ => return None,
        })
    }

    /// True when `candidate OP reference` holds.
    pub fn holds(self, candidate: &DebVersion, reference: &DebVersion) -> bool {
        let ord = candidate.cmp(reference);
        match self {
            Op::Lt => ord.is_lt(),
            Op::Le => ord.is_le(),
            Op::Eq => ord.is_eq(),
            Op::Ge => ord.is_ge(),
            Op::Gt => ord.is_gt(),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        })
    }
}

/// One package relation: `name[:arch] [(op version)]`, with architecture restrictions and
/// build profiles already evaluated away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The package (or virtual package) name.
    pub name: String,
    /// `any`, `native` or an architecture name after `:`, when present.
    pub arch_qualifier: Option<String>,
    /// The version constraint, when present.
    pub constraint: Option<(Op, DebVersion)>,
}

impl Relation {
    /// True when a package of `version` satisfies the constraint (or there is none).
    pub fn accepts(&self, version: &DebVersion) -> bool {
        match &self.constraint {
            None => true,
            Some((op, reference)) => op.holds(version, reference),
        }
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(q) = &self.arch_qualifier {
            write!(f, ":{q}")?;
        }
        if let Some((op, v)) = &self.constraint {
            write!(f, " ({op} {v})")?;
        }
        Ok(())
    }
}

/// Formats an OR-group as Debian writes it: `a | b (>= 1)`.
pub fn format_alternatives(group: &[Relation]) -> String {
    group.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(" | ")
}

/// Parses a relation field (`Depends`, `Pre-Depends`, `Recommends`...) into an AND of
/// OR-groups (Policy 7.1).
///
/// Alternatives restricted to other architectures (`[!amd64]`, `[i386]`) are dropped when
/// `arch` is given and kept otherwise; build-profile restrictions (`<!nocheck>`, Policy 7.1
/// and the BuildProfileSpec) are evaluated with no profile active. A group left without
/// alternatives is dropped.
pub fn parse_relations(text: &str, arch: Option<&str>) -> Result<Vec<Vec<Relation>>, ControlError> {
    let mut groups = Vec::new();
    for group_text in text.split(',') {
        if group_text.trim().is_empty() {
            continue;
        }
        let mut group = Vec::new();
        for alt in group_text.split('|') {
            if let Some(rel) = parse_one_relation(alt, arch)? {
                group.push(rel);
            }
        }
        if !group.is_empty() {
            groups.push(group);
        }
    }
    Ok(groups)
}

/// Parses a comma-separated list without alternatives (`Provides`).
pub fn parse_relation_list(text: &str, arch: Option<&str>) -> Result<Vec<Relation>, ControlError> {
    let mut out = Vec::new();
    for item in text.split(',') {
        if item.trim().is_empty() {
            continue;
        }
        if item.contains('|') {
            return Err(ControlError::BadRelation {
                text: text.to_string(),
                message: "alternatives (|) are not allowed here".into(),
            });
        }
        if let Some(rel) = parse_one_relation(item, arch)? {
            out.push(rel);
        }
    }
    Ok(out)
}

/// Parses `name[:qual] [(op ver)] [[archs]] [<profiles>...]`; `None` when restrictions
/// exclude it.
fn parse_one_relation(text: &str, arch: Option<&str>) -> Result<Option<Relation>, ControlError> {
    let bad = |message: &str| ControlError::BadRelation {
        text: text.trim().to_string(),
        message: message.into(),
    };
    let s = text.trim();
    let name_end = s
        .find(|c: char| c.is_whitespace() || matches!(c, '(' | '[' | '<'))
        .unwrap_or(s.len());
    let (full_name, mut rest) = (&s[..name_end], s[name_end..].trim_start());
    if full_name.is_empty() {
        return Err(bad("missing package name"));
    }
    let (name, arch_qualifier) = match full_name.split_once(':') {
        Some((n, q)) if !q.is_empty() => (n, Some(q.to_string())),
        Some(_) => return Err(bad("empty architecture qualifier after ':'")),
        None => (full_name, None),
    };
    if !valid_package_name(name) {
        return Err(bad("package names consist of lowercase letters, digits and + - ."));
    }
    let mut constraint = None;
    if let Some(after) = rest.strip_prefix('(') {
        let close = after.find(')').ok_or_else(|| bad("unclosed '('"))?;
        let inner = after[..close].trim();
        let op_len = inner
            .find(|c: char| !matches!(c, '<' | '>' | '='))
            .unwrap_or(inner.len());
        let op = Op::parse(&inner[..op_len]).ok_or_else(|| bad("unknown version operator"))?;
        let version = DebVersion::parse(inner[op_len..].trim())?;
        constraint = Some((op, version));
        rest = after[close + 1..].trim_start();
    }
    let mut keep = true;
    if let Some(after) = rest.strip_prefix('[') {
        let close = after.find(']').ok_or_else(|| bad("unclosed '['"))?;
        let list: Vec<&str> = after[..close].split_whitespace().collect();
        if list.is_empty() {
            return Err(bad("empty architecture list"));
        }
        let negated = list[0].starts_with('!');
        if list.iter().any(|a| a.starts_with('!') != negated) {
            return Err(bad("architecture lists may not mix negated and plain entries"));
        }
        if let Some(arch) = arch {
            let listed = list.iter().any(|a| arch_matches(a.trim_start_matches('!'), arch));
            keep &= if negated { !listed } else { listed };
        }
        rest = after[close + 1..].trim_start();
    }
    // Build profiles: `<a !b> <c>` is an OR of ANDs; with no profile active a term `x` is
    // false and `!x` is true.
    let mut any_profile_list = false;
    let mut profiles_ok = false;
    while let Some(after) = rest.strip_prefix('<') {
        let close = after.find('>').ok_or_else(|| bad("unclosed '<'"))?;
        let terms: Vec<&str> = after[..close].split_whitespace().collect();
        if terms.is_empty() {
            return Err(bad("empty build-profile list"));
        }
        any_profile_list = true;
        profiles_ok |= terms.iter().all(|t| t.starts_with('!'));
        rest = after[close + 1..].trim_start();
    }
    if any_profile_list {
        keep &= profiles_ok;
    }
    if !rest.is_empty() {
        return Err(bad("unexpected text after the relation"));
    }
    Ok(keep.then(|| Relation {
        name: name.to_string(),
        arch_qualifier,
        constraint,
    }))
}

/// Matches an architecture or a wildcard (`any`, `linux-any`, `any-amd64`) against `arch`.
fn arch_matches(pattern: &str, arch: &str) -> bool {
    match pattern {
        "any" => true,
        p if p == arch => true,
        // Debian architectures without an OS part are Linux ones.
        p => match p.split_once('-') {
            Some(("linux", "any")) => !arch.contains('-'),
            Some(("any", cpu)) => arch == cpu || arch.ends_with(&format!("-{cpu}")),
            _ => false,
        },
    }
}

/// Policy 5.6.7: at least two characters, lowercase letters, digits, `+`, `-`, `.`, starting
/// with an alphanumeric.
pub fn valid_package_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'.'))
}

/// One binary package stanza of a `Packages` index, with the fields apt and an SBOM need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// `Package`.
    pub name: String,
    /// `Version`.
    pub version: DebVersion,
    /// `Architecture` (`amd64`, `all`...).
    pub architecture: String,
    /// `Multi-Arch` (`same`, `foreign`, `allowed`), when present.
    pub multi_arch: Option<String>,
    /// `Filename`: the pool path relative to the archive root.
    pub filename: String,
    /// `Size` of the `.deb` in bytes.
    pub size: u64,
    /// `SHA256` of the `.deb`, lowercase hex.
    pub sha256: String,
    /// `Installed-Size` in KiB, when present.
    pub installed_size: Option<u64>,
    /// `Pre-Depends`: AND of OR-groups.
    pub pre_depends: Vec<Vec<Relation>>,
    /// `Depends`: AND of OR-groups.
    pub depends: Vec<Vec<Relation>>,
    /// `Recommends` (not followed by the resolver, kept for reports).
    pub recommends: Vec<Vec<Relation>>,
    /// `Provides`: virtual packages, possibly versioned with `=`.
    pub provides: Vec<Relation>,
    /// `Section`, when present.
    pub section: Option<String>,
    /// `Priority`, when present.
    pub priority: Option<String>,
    /// `Essential: yes`.
    pub essential: bool,
    /// First line of `Description` (the synopsis).
    pub description: String,
    /// Source package name (`Source`, or the binary name when absent).
    pub source: String,
    /// Source version when `Source: name (version)` gives one, else the binary version.
    pub source_version: DebVersion,
    /// `Maintainer`, when present.
    pub maintainer: Option<String>,
    /// `Homepage`, when present.
    pub homepage: Option<String>,
    /// The archive (suite) whose index listed the stanza (`bookworm-security`), once the
    /// caller named it with [`PackageIndex::in_archive`]; empty until then.
    pub archive: String,
}

impl Package {
    /// Builds a package from one stanza of a `Packages` file.
    pub(crate) fn from_raw(raw: &RawParagraph<'_>) -> Result<Package, ControlError> {
        let name = raw.get("Package").map(str::trim).unwrap_or("");
        let missing = |field| ControlError::MissingField {
            package: name.to_string(),
            line: raw.line,
            field,
        };
        if name.is_empty() {
            return Err(missing("Package"));
        }
        let bad = |field: &str, message: String| ControlError::BadField {
            package: name.to_string(),
            field: field.to_string(),
            message,
        };
        let single = |field: &'static str| raw.get(field).map(|v| v.trim()).filter(|v| !v.is_empty());
        let version = DebVersion::parse(single("Version").ok_or_else(|| missing("Version"))?)?;
        let architecture = single("Architecture")
            .ok_or_else(|| missing("Architecture"))?
            .to_string();
        let filename = single("Filename").ok_or_else(|| missing("Filename"))?.to_string();
        let size_text = single("Size").ok_or_else(|| missing("Size"))?;
        let size = size_text
            .parse::<u64>()
            .map_err(|_| bad("Size", format!("{size_text:?} is not a number")))?;
        let sha256 = single("SHA256").ok_or_else(|| missing("SHA256"))?.to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("SHA256", format!("{sha256:?} is not 64 hex digits")));
        }
        let installed_size = match single("Installed-Size") {
            Some(t) => Some(
                t.parse::<u64>()
                    .map_err(|_| bad("Installed-Size", format!("{t:?} is not a number")))?,
            ),
            None => None,
        };
        // Restrictions in binary stanzas are rare; evaluate them for the package's own
        // architecture, keeping everything for `all`.
        let rel_arch = (architecture != "all").then_some(architecture.as_str());
        let relations = |field: &str| -> Result<Vec<Vec<Relation>>, ControlError> {
            match raw.get(field) {
                Some(v) => parse_relations(v, rel_arch).map_err(|e| bad(field, e.to_string())),
                None => Ok(Vec::new()),
            }
        };
        let provides = match raw.get("Provides") {
            Some(v) => parse_relation_list(v, rel_arch).map_err(|e| bad("Provides", e.to_string()))?,
            None => Vec::new(),
        };
        let (source, source_version) = match single("Source") {
            Some(s) => match s.split_once('(') {
                Some((n, v)) => {
                    let v = v
                        .trim_end()
                        .strip_suffix(')')
                        .ok_or_else(|| bad("Source", format!("unclosed '(' in {s:?}")))?;
                    (n.trim().to_string(), DebVersion::parse(v.trim())?)
                }
                None => (s.to_string(), version.clone()),
            },
            None => (name.to_string(), version.clone()),
        };
        let description = raw
            .get("Description")
            .map(|d| d.split('\n').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        Ok(Package {
            name: name.to_string(),
            version,
            multi_arch: single("Multi-Arch").map(str::to_string),
            filename,
            size,
            sha256,
            installed_size,
            pre_depends: relations("Pre-Depends")?,
            depends: relations("Depends")?,
            recommends: relations("Recommends")?,
            provides,
            section: single("Section").map(str::to_string),
            priority: single("Priority").map(str::to_string),
            essential: single("Essential").is_some_and(|e| e.eq_ignore_ascii_case("yes")),
            description,
            source,
            source_version,
            maintainer: single("Maintainer").map(str::to_string),
            homepage: single("Homepage").map(str::to_string),
            architecture,
            archive: String::new(),
        })
    }
}

/// The packages of one or more `Packages` indices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageIndex {
    packages: Vec<Package>,
}

impl PackageIndex {
    /// Parses the text of an uncompressed `Packages` file.
    pub fn parse(text: &str) -> Result<PackageIndex, ControlError> {
        let mut packages = Vec::new();
        for raw in RawParagraphs::new(text) {
            packages.push(Package::from_raw(&raw?)?);
        }
        Ok(PackageIndex { packages })
    }

    /// Parses bytes that must be UTF-8 (Debian control data is).
    pub fn parse_bytes(data: &[u8]) -> Result<PackageIndex, ControlError> {
        let text = std::str::from_utf8(data).map_err(|e| {
            let line = data[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
            ControlError::Syntax {
                line,
                message: "the index is not valid UTF-8".into(),
            }
        })?;
        Self::parse(text)
    }

    /// Adds the packages of `other` (another component, `-updates`, `-security`). Exact
    /// duplicates (same name, version, architecture and hash) are kept once.
    pub fn merge(&mut self, other: PackageIndex) {
        let seen: BTreeSet<(String, String, String)> = self
            .packages
            .iter()
            .map(|p| (p.name.clone(), p.architecture.clone(), p.sha256.clone()))
            .collect();
        self.packages.extend(
            other
                .packages
                .into_iter()
                .filter(|p| !seen.contains(&(p.name.clone(), p.architecture.clone(), p.sha256.clone()))),
        );
    }

    /// Records `archive` (the suite this index belongs to) as every stanza's
    /// [`Package::archive`].
    pub fn in_archive(mut self, archive: &str) -> PackageIndex {
        for p in &mut self.packages {
            p.archive = archive.to_string();
        }
        self
    }

    /// Keeps only the stanzas for which `keep` is true.
    pub fn retain(&mut self, keep: impl FnMut(&Package) -> bool) {
        self.packages.retain(keep);
    }

    /// All packages, in index order.
    pub fn packages(&self) -> &[Package] {
        &self.packages
    }

    /// Number of package stanzas.
    pub fn len(&self) -> usize {
        self.packages.len()
    }

    /// True when the index has no packages.
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    /// The stanzas named `name` (several versions or architectures may exist).
    pub fn by_name<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Package> + 'a {
        self.packages.iter().filter(move |p| p.name == name)
    }
}

impl FromIterator<Package> for PackageIndex {
    fn from_iter<I: IntoIterator<Item = Package>>(iter: I) -> Self {
        PackageIndex {
            packages: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANZAS: &str = "\
Package: docker.io
Source: docker.io (20.10.24+dfsg1-1)
Version: 20.10.24+dfsg1-1+b3
Installed-Size: 125000
Maintainer: Debian Go Packaging Team <team+pkg-go@tracker.debian.org>
Architecture: amd64
Depends: adduser, containerd (>= 1.4~), iptables, runc (>= 1.0.0~rc92~), tini (>= 0.19.0), libc6 (>= 2.34), libdevmapper1.02.1 (>= 2:1.02.97), libsystemd0
Pre-Depends: init-system-helpers (>= 1.54~)
Recommends: apparmor, ca-certificates, cgroupfs-mount | cgroup-lite, git, needrestart, xz-utils
Description: Linux container runtime
 Docker complements kernel namespacing with a high-level API which operates at
 the process level.
 .
 More text.
Homepage: https://mobyproject.org
Section: admin
Priority: optional
Filename: pool/main/d/docker.io/docker.io_20.10.24+dfsg1-1+b3_amd64.deb
Size: 27000000
SHA256: 0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef

Package: mawk
Version: 1.3.4.20200120-3.1
Architecture: amd64
Multi-Arch: foreign
Provides: awk
Pre-Depends: libc6 (>= 2.34)
Essential: yes
Priority: required
Description: Pattern scanning and text processing language
Filename: pool/main/m/mawk/mawk_1.3.4.20200120-3.1_amd64.deb
Size: 134000
SHA256: 1111111111111111111111111111111111111111111111111111111111111111
";

    #[test]
    fn paragraphs_and_continuations() {
        let paras = parse_paragraphs("# comment\nA: 1\nB: x\n  y\n\t.\n z \n\n\n\nA: 2\r\nC:\r\n").unwrap();
        assert_eq!(paras.len(), 2);
        assert_eq!(paras[0].get("a"), Some("1"));
        assert_eq!(paras[0].get("B"), Some("x\ny\n.\nz"));
        assert_eq!(paras[1].get("A"), Some("2"));
        assert_eq!(paras[1].get("C"), Some(""));
        assert_eq!(paras[1].fields().count(), 2);
    }

    #[test]
    fn paragraph_syntax_errors_name_the_line() {
        let e = parse_paragraphs("A: 1\nnot a field\n").unwrap_err();
        assert_eq!(
            e,
            ControlError::Syntax {
                line: 2,
                message: "expected \"Field: value\", found \"not a field\"".into()
            }
        );
        assert!(matches!(
            parse_paragraphs(" cont\n"),
            Err(ControlError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            parse_paragraphs("A: 1\na: 2\n"),
            Err(ControlError::Syntax { line: 2, .. })
        ));
        assert!(Paragraph::parse_single("A: 1\n\nB: 2\n").is_err());
    }

    #[test]
    fn packages_stanzas() {
        let index = PackageIndex::parse(STANZAS).unwrap();
        assert_eq!(index.len(), 2);
        let d = &index.packages()[0];
        assert_eq!(d.name, "docker.io");
        assert_eq!(d.version.to_string(), "20.10.24+dfsg1-1+b3");
        assert_eq!(d.source, "docker.io");
        assert_eq!(d.source_version.to_string(), "20.10.24+dfsg1-1");
        assert_eq!(
            d.sha256,
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        );
        assert_eq!(d.size, 27_000_000);
        assert_eq!(d.installed_size, Some(125_000));
        assert_eq!(d.description, "Linux container runtime");
        assert_eq!(d.depends.len(), 8);
        assert_eq!(d.depends[6][0].to_string(), "libdevmapper1.02.1 (>= 2:1.02.97)");
        assert_eq!(d.pre_depends[0][0].name, "init-system-helpers");
        assert_eq!(format_alternatives(&d.recommends[2]), "cgroupfs-mount | cgroup-lite");
        assert_eq!(d.homepage.as_deref(), Some("https://mobyproject.org"));
        assert!(d.maintainer.as_deref().unwrap().starts_with("Debian Go"));
        let m = &index.packages()[1];
        assert!(m.essential);
        assert_eq!(m.source, "mawk");
        assert_eq!(m.provides[0].name, "awk");
        assert_eq!(m.multi_arch.as_deref(), Some("foreign"));
        assert_eq!(index.by_name("mawk").count(), 1);
    }

    #[test]
    fn missing_fields_are_errors() {
        let e = PackageIndex::parse("Package: a\nVersion: 1\nArchitecture: all\nFilename: x\nSize: 1\n").unwrap_err();
        assert!(matches!(e, ControlError::MissingField { field: "SHA256", .. }), "{e}");
        assert!(e.to_string().contains("\"a\""));
        let e = PackageIndex::parse("Package: a\nVersion: 1\nArchitecture: all\nFilename: x\nSize: big\nSHA256: 00\n")
            .unwrap_err();
        assert!(matches!(e, ControlError::BadField { .. }), "{e}");
    }

    #[test]
    fn relations_with_qualifiers_and_restrictions() {
        let r = parse_relations(
            "libc6 (>= 2.34), python3:any, foo:native (<< 2) | bar (= 1:1.0-1), baz (>2)",
            None,
        )
        .unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(r[0][0].constraint.as_ref().unwrap().0, Op::Ge);
        assert_eq!(r[1][0].arch_qualifier.as_deref(), Some("any"));
        assert_eq!(r[2].len(), 2);
        assert_eq!(r[2][0].arch_qualifier.as_deref(), Some("native"));
        assert_eq!(r[2][1].constraint.as_ref().unwrap().1.epoch(), 1);
        assert_eq!(
            r[3][0].constraint.as_ref().unwrap().0,
            Op::Ge,
            "obsolete '>' means '>='"
        );

        let r = parse_relations(
            "a [amd64], b [!amd64], c [i386 arm64] | d, e [linux-any], f [any-i386]",
            Some("amd64"),
        )
        .unwrap();
        let names: Vec<String> = r.iter().map(|g| format_alternatives(g)).collect();
        assert_eq!(names, ["a", "d", "e"]);
        let r = parse_relations("a [amd64], b [!amd64]", None).unwrap();
        assert_eq!(r.len(), 2, "without an architecture nothing is dropped");

        let r = parse_relations("a <!nocheck>, b <stage1>, c <stage1> <!cross>, d <stage1 !cross>", None).unwrap();
        let names: Vec<String> = r.iter().map(|g| format_alternatives(g)).collect();
        assert_eq!(names, ["a", "c"]);

        for bad in [
            "a (>= )",
            "a (~ 1)",
            "a (>= 1",
            "A",
            "a [amd64",
            "a [amd64 !i386]",
            "a junk",
            ":any",
        ] {
            assert!(parse_relations(bad, None).is_err(), "{bad:?} must be rejected");
        }
        assert!(parse_relation_list("a | b", None).is_err());
    }

    #[test]
    fn merge_skips_duplicates() {
        let mut a = PackageIndex::parse(STANZAS).unwrap();
        a.merge(PackageIndex::parse(STANZAS).unwrap());
        assert_eq!(a.len(), 2);
    }
}
