//! The builder's stages import only downward: every file of `builder/src` names, through
//! `crate::...` paths, only modules of its own stage, of earlier stages, or of the modules
//! below every stage. A stage that reached forward (assembly calling into publishing, the
//! inputs calling back into assembly) would bring back the import circles the folders exist
//! to prevent.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The top-level modules of `builder/src`, bottom first. A module may use those of lower
/// layers and itself, never a later one or another module of its own layer.
const LAYERS: &[&[&str]] = &[
    // Below every stage: an ELF reader and atomic file replacement.
    &["elf", "atomic_file"],
    &["definition"],
    &["inputs"],
    &["assemble"],
    &["encode"],
    &["publish"],
    // Wires the stages together; `inspect` prints what `pipeline` assembles.
    &["pipeline"],
    &["inspect"],
    // Commands beside the build: the per-VM settings volume, and the Docker CLI's connection
    // to a running VM. They use the format crates, never the stages.
    &["instance", "connect"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level modules `source` names through `crate::` paths, in code (comments are
/// skipped: doc links may point anywhere).
fn crate_references(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            // `uvmkit_crate::` or `some_crate::` are other paths, not this crate's root.
            let before = rest[..at].chars().next_back();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    out.extend(first_ident(item.trim()));
                }
            } else {
                out.extend(first_ident(rest));
            }
        }
    }
    out
}

fn first_ident(text: &str) -> Option<String> {
    let ident: String = text.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!ident.is_empty()).then_some(ident)
}

/// Every violation in one file of module `module`: "FILE uses crate::OTHER".
fn violations(file: &str, module: &str, source: &str) -> Vec<String> {
    let Some(own) = layer_of(module) else {
        return vec![format!("{file}: module {module} is in no layer; add it to LAYERS")];
    };
    crate_references(source)
        .into_iter()
        .filter(|used| used != module)
        .filter_map(|used| match layer_of(&used) {
            Some(layer) if layer < own => None,
            Some(layer) if layer == own => Some(format!("{file} uses crate::{used}, a module of its own layer")),
            Some(_) => Some(format!("{file} uses crate::{used}, a later stage")),
            None => Some(format!("{file} uses crate::{used}, which is in no layer")),
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_stage_imports_only_earlier_stages() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for path in &files {
        let rel = path.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_str().unwrap();
        let module = first.strip_suffix(".rs").unwrap_or(first);
        // The crate root and the command sit above everything.
        if module == "lib" || module == "main" {
            continue;
        }
        seen.insert(module.to_string());
        let source = std::fs::read_to_string(path).unwrap();
        problems.extend(violations(&rel.display().to_string(), module, &source));
    }
    assert!(
        problems.is_empty(),
        "imports against the stage order:\n{}",
        problems.join("\n")
    );
    // Every stage folder exists, so the order above describes the real tree.
    for module in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(seen.contains(*module), "no module {module} in builder/src");
    }
    for stage in ["definition", "inputs", "assemble", "encode", "publish"] {
        assert!(src.join(stage).join("mod.rs").is_file(), "{stage} is not a folder");
    }
}

#[test]
fn the_check_catches_forward_and_sideways_imports() {
    let source = "use crate::definition::ImageDefinition;\n\
                  use crate::{elf, publish::ArtifactDir};\n\
                  // crate::pipeline in a comment is fine\n\
                  let x = uvmkit_crate::thing; let y = crate::encode::disk::DATA_LABEL;\n";
    let refs = crate_references(source);
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["definition", "elf", "encode", "publish"]
    );
    let v = violations("assemble/x.rs", "assemble", source);
    assert_eq!(
        v,
        [
            "assemble/x.rs uses crate::encode, a later stage",
            "assemble/x.rs uses crate::publish, a later stage"
        ]
    );
    assert_eq!(
        violations("elf.rs", "elf", "use crate::atomic_file::write_atomically;"),
        ["elf.rs uses crate::atomic_file, a module of its own layer"]
    );
    assert!(violations("publish/m.rs", "publish", source).is_empty());
}
