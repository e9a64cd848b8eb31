//! ISO 9660 file identifiers: interchange level 1 names (ECMA-119 7.5, 7.6 and 10.1) made from
//! arbitrary names, unique within their directory, and their sort order (9.3).
//!
//! The real names travel in Rock Ridge `NM` entries; these 8.3 upper-case names are what a
//! reader without Rock Ridge (a firmware, an old boot loader) sees.

use std::collections::BTreeSet;

/// Characters in a level 1 file name and extension, and in a directory identifier.
const NAME_MAX: usize = 8;
const EXT_MAX: usize = 3;

/// A file or directory identifier as ISO 9660 records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IsoName {
    /// File name (or the whole directory identifier).
    base: Vec<u8>,
    /// File name extension; `None` for directories.
    ext: Option<Vec<u8>>,
}

impl IsoName {
    /// The bytes of the identifier: `BASE` for a directory, `BASE.EXT;1` for a file
    /// (ECMA-119 7.5.1: the separators are always present, the version is 1).
    pub fn identifier(&self) -> Vec<u8> {
        let mut id = self.base.clone();
        if let Some(ext) = &self.ext {
            id.push(b'.');
            id.extend_from_slice(ext);
            id.extend_from_slice(b";1");
        }
        id
    }

    /// The key of ECMA-119 9.3: by name, then by extension, each as if padded with spaces.
    /// Every d-character sorts after the space, so padding equals plain byte order.
    pub fn sort_key(&self) -> (&[u8], &[u8]) {
        (&self.base, self.ext.as_deref().unwrap_or(&[]))
    }
}

/// Maps one character to a d-character: letters are upper-cased, digits and `_` kept, anything
/// else becomes `_`.
fn d_char(c: char) -> u8 {
    match c {
        'a'..='z' => c.to_ascii_uppercase() as u8,
        'A'..='Z' | '0'..='9' | '_' => c as u8,
        _ => b'_',
    }
}

fn d_string(s: &str, max: usize) -> Vec<u8> {
    s.chars().map(d_char).take(max).collect()
}

/// The level 1 name for `name` before de-duplication.
fn candidate(name: &str, is_dir: bool) -> IsoName {
    if is_dir {
        let mut base = d_string(name, NAME_MAX);
        if base.is_empty() {
            base.push(b'_');
        }
        return IsoName { base, ext: None };
    }
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    };
    let mut base = d_string(stem, NAME_MAX);
    if base.is_empty() {
        base.push(b'_');
    }
    IsoName {
        base,
        ext: Some(d_string(ext, EXT_MAX)),
    }
}

/// Level 1 names for the entries of one directory, given as `(name, is_dir)` in a fixed order.
/// Where two names map to the same identifier, the later one gets a decimal counter in place
/// of the end of its name (`LONGNA01`), so the result depends only on the input.
pub(crate) fn assign(entries: &[(&str, bool)]) -> Vec<IsoName> {
    let mut used: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut out = Vec::with_capacity(entries.len());
    for &(name, is_dir) in entries {
        let mut iso = candidate(name, is_dir);
        if used.contains(&iso.identifier()) {
            let stem = iso.base.clone();
            // A directory holds at most a few million entries, far below 10^8.
            for n in 1u64.. {
                let digits = n.to_string().into_bytes();
                let keep = NAME_MAX.saturating_sub(digits.len()).min(stem.len());
                iso.base = stem[..keep].to_vec();
                iso.base.extend_from_slice(&digits);
                if !used.contains(&iso.identifier()) {
                    break;
                }
            }
        }
        used.insert(iso.identifier());
        out.push(iso);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(entries: &[(&str, bool)]) -> Vec<String> {
        assign(entries)
            .iter()
            .map(|n| String::from_utf8(n.identifier()).unwrap())
            .collect()
    }

    #[test]
    fn level_one_names() {
        assert_eq!(
            ids(&[
                ("vmlinuz", false),
                ("initrd.img", false),
                ("isolinux.cfg", false),
                ("ldlinux.c32", false),
                ("EFI", true),
                ("my.dir-name", true),
                (".hidden", false),
                ("a.tar.gz", false),
            ]),
            [
                "VMLINUZ.;1",
                "INITRD.IMG;1",
                "ISOLINUX.CFG;1",
                "LDLINUX.C32;1",
                "EFI",
                "MY_DIR_N",
                "_HIDDEN.;1",
                "A_TAR.GZ;1",
            ]
        );
    }

    #[test]
    fn collisions_get_counters() {
        assert_eq!(
            ids(&[
                ("longname-one.txt", false),
                ("longname-two.txt", false),
                ("LONGNAME-three.txt", false),
                ("x", true),
                ("X", true),
            ]),
            ["LONGNAME.TXT;1", "LONGNAM1.TXT;1", "LONGNAM2.TXT;1", "X", "X1"]
        );
    }
}
