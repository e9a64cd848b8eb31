//! `usr/share/doc/PACKAGE/copyright`: the license a package declares, in SPDX terms.
//!
//! Only machine-readable files count ("Machine-readable debian/copyright file", version 1.0,
//! the DEP-5 format): their first paragraph has a `Format:` field naming
//! `copyright-format/1.0`. The first line of each `Files:` paragraph's `License:` field is a
//! license expression of Debian short names (spec "License specification"): `or` and `and`
//! (`and` binding tighter), `, and`/`, or` to group with lower precedence, and
//! `NAME with WORDS exception`. Those names map to SPDX 2.3 license identifiers (Annex A);
//! names without one become `LicenseRef-NAME` (SPDX 2.3 §10.1), with the license text found
//! in the file. Free-form files declare nothing.

use std::collections::BTreeMap;

/// A package's declared license as an SPDX 2.3 license expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredLicense {
    /// The expression: each `Files:` paragraph's license, distinct, sorted, joined with `AND`.
    pub expression: String,
    /// Every `LicenseRef-` the expression uses, sorted by identifier.
    pub references: Vec<LicenseRef>,
}

/// A license without an SPDX identifier, as the copyright file names and states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseRef {
    /// `LicenseRef-` followed by letters, digits, `.` and `-`.
    pub id: String,
    /// The Debian short name (with its exception, if any).
    pub name: String,
    /// The license text the file gives, or the name when it gives none.
    pub text: String,
}

/// One deb822 paragraph of a copyright file: fields in order, names as written.
type Paragraph = Vec<(String, String)>;

fn field<'a>(p: &'a Paragraph, name: &str) -> Option<&'a str> {
    p.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Splits `text` into paragraphs. Continuation lines lose their first space; a line of a
/// lone `.` stands for an empty line (spec "Syntax", after Debian Policy 5.1).
fn paragraphs(text: &str) -> Vec<Paragraph> {
    let mut out = Vec::new();
    let mut current: Paragraph = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else if line.starts_with('#') {
            continue;
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                let cont = &line[1..];
                value.push('\n');
                if cont.trim() != "." {
                    value.push_str(cont.trim_end());
                }
            }
        } else if let Some((name, value)) = line.split_once(':') {
            current.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Whether the first paragraph names the machine-readable format.
fn is_machine_readable(paras: &[Paragraph]) -> bool {
    paras
        .first()
        .and_then(|p| field(p, "Format"))
        .is_some_and(|f| f.contains("copyright-format/1.0") || f.contains("dep.debian.net/deps/dep5"))
}

/// The license a copyright file declares for the package's files; `None` for a free-form
/// (or empty) file, or one whose `Files:` paragraphs name no license.
pub fn declared_license(text: &str) -> Option<DeclaredLicense> {
    let paras = paragraphs(text);
    if !is_machine_readable(&paras) {
        return None;
    }
    // Stand-alone `License:` paragraphs hold the texts `Files:` paragraphs refer to.
    let mut standalone: BTreeMap<String, String> = BTreeMap::new();
    for p in paras.iter().skip(1).filter(|p| field(p, "Files").is_none()) {
        if let Some(lic) = field(p, "License") {
            let (name, body) = split_license(lic);
            if !body.is_empty() {
                standalone.entry(name.to_ascii_lowercase()).or_insert(body);
            }
        }
    }
    let mut parts: Vec<String> = Vec::new();
    let mut refs: BTreeMap<String, LicenseRef> = BTreeMap::new();
    for p in paras.iter().skip(1).filter(|p| field(p, "Files").is_some()) {
        let Some(lic) = field(p, "License") else { continue };
        let (first, body) = split_license(lic);
        if first.is_empty() {
            continue;
        }
        let expr = parse_expression(&first);
        expr.collect_refs(&mut |id, name| {
            let text = standalone
                .get(&name.to_ascii_lowercase())
                .cloned()
                .or_else(|| Some(body.clone()).filter(|b| !b.is_empty()))
                .unwrap_or_else(|| name.to_string());
            refs.entry(id.to_string()).or_insert_with(|| LicenseRef {
                id: id.to_string(),
                name: name.to_string(),
                text,
            });
        });
        // `A and B` in one paragraph is two licenses of the package, like two paragraphs.
        let conjuncts = match expr {
            Expr::And(items) => items,
            other => vec![other],
        };
        for e in conjuncts {
            let rendered = e.render();
            if !parts.contains(&rendered) {
                parts.push(rendered);
            }
        }
    }
    if parts.is_empty() {
        return None;
    }
    parts.sort();
    let expression = if parts.len() == 1 {
        parts.remove(0)
    } else {
        parts
            .iter()
            .map(|p| {
                if p.contains(" OR ") || p.contains(" AND ") {
                    format!("({p})")
                } else {
                    p.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    Some(DeclaredLicense {
        expression,
        references: refs.into_values().collect(),
    })
}

/// A `License:` field's first line (the expression) and the text after it.
fn split_license(value: &str) -> (String, String) {
    let (first, body) = value.split_once('\n').unwrap_or((value, ""));
    (first.trim().to_string(), body.trim_matches('\n').to_string())
}

/// A license expression in SPDX terms.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    /// An SPDX license identifier, possibly with `+` or `WITH exception`.
    Id(String),
    /// `LicenseRef-ID` for the Debian name.
    Ref {
        id: String,
        name: String,
    },
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

impl Expr {
    fn join(op_and: bool, a: Expr, b: Expr) -> Expr {
        let mut items = Vec::new();
        for e in [a, b] {
            match (op_and, e) {
                (true, Expr::And(v)) | (false, Expr::Or(v)) => items.extend(v),
                (_, e) => items.push(e),
            }
        }
        if op_and {
            Expr::And(items)
        } else {
            Expr::Or(items)
        }
    }

    fn render(&self) -> String {
        match self {
            Expr::Id(s) => s.clone(),
            Expr::Ref { id, .. } => id.clone(),
            Expr::And(items) | Expr::Or(items) => {
                let op = if matches!(self, Expr::And(_)) { " AND " } else { " OR " };
                items
                    .iter()
                    .map(|e| match e {
                        Expr::And(_) | Expr::Or(_) => format!("({})", e.render()),
                        _ => e.render(),
                    })
                    .collect::<Vec<_>>()
                    .join(op)
            }
        }
    }

    fn collect_refs(&self, f: &mut impl FnMut(&str, &str)) {
        match self {
            Expr::Id(_) => {}
            Expr::Ref { id, name } => f(id, name),
            Expr::And(items) | Expr::Or(items) => items.iter().for_each(|e| e.collect_refs(f)),
        }
    }
}

/// Parses the first line of a `License:` field. Commas separate groups of lower precedence
/// than `and`/`or`; a group after a comma starts with the operator joining it (`, and`,
/// `, or`), else `and` is taken.
fn parse_expression(text: &str) -> Expr {
    let mut result: Option<Expr> = None;
    for group in text.split(',') {
        let words: Vec<&str> = group.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let (op_and, words) = match words[0].to_ascii_lowercase().as_str() {
            "and" => (true, &words[1..]),
            "or" => (false, &words[1..]),
            _ => (true, &words[..]),
        };
        let Some(expr) = parse_or(words) else { continue };
        result = Some(match result {
            None => expr,
            Some(prev) => Expr::join(op_and, prev, expr),
        });
    }
    result.unwrap_or_else(|| term(text.trim(), None))
}

/// `a or b and c` → `a OR (b AND c)`.
fn parse_or(words: &[&str]) -> Option<Expr> {
    let alternatives = words.split(|w| w.eq_ignore_ascii_case("or"));
    let mut out: Option<Expr> = None;
    for alt in alternatives {
        let mut conj: Option<Expr> = None;
        for t in alt.split(|w| w.eq_ignore_ascii_case("and")) {
            let Some((name, rest)) = t.split_first() else { continue };
            let exception = match rest.split_first() {
                Some((w, exc)) if w.eq_ignore_ascii_case("with") && !exc.is_empty() => Some(exc.join(" ")),
                _ => None,
            };
            let e = term(name, exception.as_deref());
            conj = Some(match conj {
                None => e,
                Some(prev) => Expr::join(true, prev, e),
            });
        }
        if let Some(c) = conj {
            out = Some(match out {
                None => c,
                Some(prev) => Expr::join(false, prev, c),
            });
        }
    }
    out
}

/// One Debian short name, with its exception words if any.
fn term(name: &str, exception: Option<&str>) -> Expr {
    let Some(spdx) = spdx_for(name) else {
        let full = match exception {
            Some(e) => format!("{name} with {e}"),
            None => name.to_string(),
        };
        return license_ref(&full);
    };
    let Some(exception) = exception else { return spdx };
    match (&spdx, spdx_exception(exception, name)) {
        (Expr::Id(id), Some(exc)) => Expr::Id(format!("{id} WITH {exc}")),
        _ => license_ref(&format!("{name} with {exception}")),
    }
}

fn license_ref(name: &str) -> Expr {
    Expr::Ref {
        id: license_ref_id(name),
        name: name.to_string(),
    }
}

/// `LicenseRef-` and `name` with `+` spelled `plus` and every other character outside
/// `[A-Za-z0-9.-]` a `-` (SPDX 2.3 `idstring`).
pub fn license_ref_id(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' => out.push(c),
            '+' => out.push_str("-plus"),
            _ => {
                if !out.ends_with('-') {
                    out.push('-');
                }
            }
        }
    }
    let clean = out.trim_matches('-');
    format!("LicenseRef-{}", if clean.is_empty() { "unnamed" } else { clean })
}

/// SPDX identifiers passed through as written (compared without regard to case).
const SPDX_IDS: &[&str] = &[
    "0BSD",
    "AFL-2.1",
    "AFL-3.0",
    "Apache-1.0",
    "Apache-1.1",
    "Apache-2.0",
    "Artistic-1.0",
    "Artistic-1.0-Perl",
    "Artistic-2.0",
    "Beerware",
    "BSD-1-Clause",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "BSD-4-Clause",
    "BSL-1.0",
    "bzip2-1.0.6",
    "CC-BY-3.0",
    "CC-BY-4.0",
    "CC-BY-SA-3.0",
    "CC-BY-SA-4.0",
    "CC0-1.0",
    "CDDL-1.0",
    "CDDL-1.1",
    "curl",
    "EPL-1.0",
    "EPL-2.0",
    "FSFAP",
    "FSFUL",
    "FSFULLR",
    "FTL",
    "HPND",
    "ICU",
    "IJG",
    "ISC",
    "Libpng",
    "libpng-2.0",
    "LPPL-1.3c",
    "MIT",
    "MIT-0",
    "MPL-1.1",
    "MPL-2.0",
    "NCSA",
    "OFL-1.1",
    "OpenSSL",
    "PostgreSQL",
    "PSF-2.0",
    "Python-2.0",
    "Ruby",
    "Sleepycat",
    "TCL",
    "Unicode-DFS-2016",
    "Unlicense",
    "Vim",
    "W3C",
    "WTFPL",
    "X11",
    "Zlib",
    "ZPL-2.1",
];

/// The SPDX expression of one Debian short name (spec "License short name"), or `None` when
/// it has none.
fn spdx_for(name: &str) -> Option<Expr> {
    if let Some(id) = SPDX_IDS.iter().find(|id| id.eq_ignore_ascii_case(name)) {
        return Some(Expr::Id(id.to_string()));
    }
    let lower = name.to_ascii_lowercase();
    let (base, plus) = match lower.strip_suffix('+') {
        Some(b) => (b, true),
        None => (lower.as_str(), false),
    };
    let id = |s: &str| Some(Expr::Id(s.to_string()));
    match base {
        "public-domain" => return Some(license_ref("public-domain")),
        "expat" => return id("MIT"),
        "perl" => {
            return Some(Expr::Or(vec![
                Expr::Id("Artistic-1.0-Perl".into()),
                Expr::Id("GPL-1.0-or-later".into()),
            ]))
        }
        "artistic" | "artistic-1" => return id("Artistic-1.0-Perl"),
        "artistic-2" => return id("Artistic-2.0"),
        "apache-2" => return id("Apache-2.0"),
        "mpl-2" => return id("MPL-2.0"),
        "cc0" => return id("CC0-1.0"),
        "psf-2" => return id("PSF-2.0"),
        "zope-2.1" => return id("ZPL-2.1"),
        "bsd-2-clause" => return id("BSD-2-Clause"),
        "bsd-3-clause" => return id("BSD-3-Clause"),
        "bsd-4-clause" => return id("BSD-4-Clause"),
        "bsl" => return id("BSL-1.0"),
        _ => {}
    }
    // The GNU licenses: GPL, LGPL, AGPL, GFDL and GFDL-NIV, with or without a version.
    for (prefix, spdx, any_version, versions) in [
        ("gpl", "GPL", "1.0", &["1", "2", "3"][..]),
        ("lgpl", "LGPL", "2.0", &["2", "2.1", "3"][..]),
        ("agpl", "AGPL", "3.0", &["1", "3"][..]),
        ("gfdl-niv", "GFDL", "1.1", &["1.1", "1.2", "1.3"][..]),
        ("gfdl", "GFDL", "1.1", &["1.1", "1.2", "1.3"][..]),
    ] {
        let rest = if base == prefix {
            ""
        } else if let Some(r) = base.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) {
            r
        } else {
            continue;
        };
        let niv = if prefix == "gfdl-niv" { "-no-invariants" } else { "" };
        if rest.is_empty() {
            // No version: any version the licensor published.
            return id(&format!("{spdx}-{any_version}{niv}-or-later"));
        }
        let version = rest.strip_suffix(".0").unwrap_or(rest);
        if !versions.contains(&version) {
            return None;
        }
        let version = if version.contains('.') {
            version.to_string()
        } else {
            format!("{version}.0")
        };
        let suffix = if plus { "or-later" } else { "only" };
        return id(&format!("{spdx}-{version}{niv}-{suffix}"));
    }
    // Other families: `Apache-2.0+`, `MPL-1.1+`: SPDX's `+` operator.
    if plus {
        if let Some(id) = SPDX_IDS.iter().find(|id| id.eq_ignore_ascii_case(base)) {
            return Some(Expr::Id(format!("{id}+")));
        }
    }
    None
}

/// The SPDX exception identifier for Debian's `with WORDS` after `license`, if there is one.
fn spdx_exception(words: &str, license: &str) -> Option<&'static str> {
    let w = words.to_ascii_lowercase().replace('-', " ");
    let w = w.trim_end_matches(" exception").trim_end_matches(" note").trim();
    let gpl3 = license.to_ascii_lowercase().contains("gpl-3");
    Some(match w {
        "autoconf" if gpl3 => "Autoconf-exception-3.0",
        "autoconf" => "Autoconf-exception-2.0",
        "gcc" | "gcc 3.1" | "gcc runtime library" => "GCC-exception-3.1",
        "classpath" | "classpath 2.0" => "Classpath-exception-2.0",
        "libtool" => "Libtool-exception",
        "bison" | "bison 2.2" => "Bison-exception-2.2",
        "font" | "font 2.0" => "Font-exception-2.0",
        "linux syscall" => "Linux-syscall-note",
        "llvm" => "LLVM-exception",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP5: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: example
Source: https://example.org/

Files: *
Copyright: 2001-2020 Example Authors
License: GPL-2+

Files: lib/*
Copyright: 2010 Someone
License: LGPL-2.1+
 This library is free software; you can redistribute it.
 .
 See /usr/share/common-licenses/LGPL-2.1.

Files: compat/strlcpy.c
Copyright: 1998 Todd C. Miller
License: ISC

Files: debian/*
Copyright: 2020 A Debian Developer
License: GPL-2+

Files: contrib/*
Copyright: 2003 Someone Else
License: Expat, and BSD-3-clause

Files: extra/thing.c
Copyright: 2004 Nobody
License: Frobnicate-1.0

License: GPL-2+
 This program is free software.

License: Frobnicate-1.0
 Permission is granted to frobnicate.
 .
 No warranty.
";

    #[test]
    fn dep5_with_several_files_paragraphs() {
        let d = declared_license(DEP5).expect("machine-readable");
        assert_eq!(
            d.expression,
            "BSD-3-Clause AND GPL-2.0-or-later AND ISC AND LGPL-2.1-or-later AND LicenseRef-Frobnicate-1.0 AND MIT"
        );
        assert_eq!(d.references.len(), 1);
        let r = &d.references[0];
        assert_eq!(r.id, "LicenseRef-Frobnicate-1.0");
        assert_eq!(r.name, "Frobnicate-1.0");
        assert_eq!(r.text, "Permission is granted to frobnicate.\n\nNo warranty.");
    }

    #[test]
    fn exceptions_and_alternatives() {
        let file = |lic: &str| {
            format!(
                "Format: http://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: x\nLicense: {lic}\n"
            )
        };
        let expr = |lic: &str| declared_license(&file(lic)).unwrap().expression;
        let d = declared_license(&file(
            "GPL-2+ with OpenSSL-exception\n Linking with OpenSSL is allowed.",
        ))
        .unwrap();
        assert_eq!(d.expression, "LicenseRef-GPL-2-plus-with-OpenSSL-exception");
        assert_eq!(d.references[0].name, "GPL-2+ with OpenSSL-exception");
        assert_eq!(d.references[0].text, "Linking with OpenSSL is allowed.");
        assert_eq!(expr("GPL-2+ or Artistic"), "GPL-2.0-or-later OR Artistic-1.0-Perl");
        assert_eq!(
            expr("GPL-3+ with Autoconf exception"),
            "GPL-3.0-or-later WITH Autoconf-exception-3.0"
        );
        assert_eq!(
            expr("GPL-2 or LGPL-2.1 and MIT"),
            "GPL-2.0-only OR (LGPL-2.1-only AND MIT)"
        );
        assert_eq!(
            expr("GPL-2+ or Artistic-2.0, and BSD-3-clause"),
            "BSD-3-Clause AND (GPL-2.0-or-later OR Artistic-2.0)"
        );
        assert_eq!(
            expr("GPL-2+ or Artistic-2.0, or BSD-3-clause"),
            "GPL-2.0-or-later OR Artistic-2.0 OR BSD-3-Clause"
        );
        assert_eq!(expr("ISC and Zlib"), "ISC AND Zlib");
        assert_eq!(expr("Perl"), "Artistic-1.0-Perl OR GPL-1.0-or-later");
        assert_eq!(expr("GPL"), "GPL-1.0-or-later");
        assert_eq!(expr("LGPL-3.0+"), "LGPL-3.0-or-later");
        assert_eq!(expr("GFDL-NIV-1.2+"), "GFDL-1.2-no-invariants-or-later");
        assert_eq!(expr("Apache-2.0"), "Apache-2.0");
        assert_eq!(expr("zlib"), "Zlib");
        assert_eq!(expr("MPL-2.0+"), "MPL-2.0+");
        let pd = declared_license(&file("public-domain\n Nobody owns this.")).unwrap();
        assert_eq!(pd.expression, "LicenseRef-public-domain");
        assert_eq!(pd.references[0].text, "Nobody owns this.");
    }

    #[test]
    fn free_form_and_empty_files_declare_nothing() {
        let free = "This is Debian's prepackaged version of foo.\n\nCopyright (C) 1999 Someone\n\nLicense: GPL-2\n";
        assert_eq!(declared_license(free), None);
        assert_eq!(declared_license(""), None);
        // Machine-readable, but no Files paragraph says anything.
        let header_only = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nLicense: MIT\n";
        assert_eq!(declared_license(header_only), None);
    }

    #[test]
    fn reference_ids_keep_to_the_idstring_characters() {
        assert_eq!(license_ref_id("Foo License (v2)"), "LicenseRef-Foo-License-v2");
        assert_eq!(license_ref_id("GPL-2+ with X"), "LicenseRef-GPL-2-plus-with-X");
        assert_eq!(license_ref_id("***"), "LicenseRef-unnamed");
        for id in [license_ref_id("ü ß/é"), license_ref_id("a_b")] {
            assert!(
                id[11..]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'),
                "{id}"
            );
        }
    }
}
