//! `uvmkit inspect`: the resolved inputs of a definition, for people (text) or programs
//! (`--json`): packages, files and bytes per package, what the packages' defaults left out and
//! why, the kernel and its modules, and with `--files` every file of the image with its bytes
//! and where it came from, largest first, so users see what to trim.

use crate::assemble::{AssembleError, AssembledTree, LeftOut, Origin};
use crate::definition::LoadedDefinition;
use crate::inputs::{describe_mirrors, ResolvedInputs};
use crate::pipeline::assemble_image;
use crate::publish::human_bytes;
use serde::Serialize;
use uvmkit_filetree::NodeKind;

/// One file (any entry but a directory) of the image tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageFile {
    /// Its path in the image.
    pub path: String,
    /// Its size in bytes (0 for links and device nodes).
    pub bytes: u64,
    /// What made it: `package`, `library` (the ELF closure), `uvmkit`, `kernel-module`,
    /// `preload` or `files` (a `[[files]]` entry).
    pub origin: &'static str,
    /// The Debian package it came from, when it came from one.
    pub package: Option<String>,
    /// The target of a symbolic or hard link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// Files taken from one `[[packages]]` entry.
#[derive(Debug, Clone, Serialize)]
struct PackageTotal {
    package: String,
    files: usize,
    bytes: u64,
}

/// What `uvmkit inspect --json` prints.
#[derive(Debug, Serialize)]
struct Report<'a> {
    image: &'a str,
    packages: Vec<PackageLine<'a>>,
    files_taken_from_packages: Vec<PackageTotal>,
    left_out_by_defaults: &'a [LeftOut],
    kernel: KernelLine<'a>,
    tree_entries: usize,
    tree_file_bytes: u64,
    /// Every non-directory entry, largest first.
    files: Vec<ImageFile>,
}

#[derive(Debug, Serialize)]
struct PackageLine<'a> {
    name: &'a str,
    version: &'a str,
    archive: &'a str,
    deb_bytes: u64,
    role: crate::inputs::Role,
    reason: &'a str,
}

#[derive(Debug, Serialize)]
struct KernelLine<'a> {
    release: &'a str,
    bytes: u64,
    modules: Vec<&'a str>,
}

/// Every non-directory entry of the assembled tree with its bytes and origin, largest first
/// (then by path), the package of a closure library looked up in `inputs`.
pub fn image_files(assembled: &AssembledTree, inputs: &ResolvedInputs) -> Vec<ImageFile> {
    let kernel_package = inputs
        .packages
        .iter()
        .find(|p| p.role == crate::inputs::Role::Kernel && p.name.starts_with("linux-image-"))
        .map(|p| p.name.clone());
    let mut files: Vec<ImageFile> = assembled
        .tree
        .iter()
        .filter(|(_, node)| node.kind != NodeKind::Directory)
        .map(|(path, node)| {
            let (bytes, link) = match &node.kind {
                NodeKind::File(d) => (d.len(), None),
                NodeKind::Symlink(t) => (0, Some(t.clone())),
                NodeKind::HardLink(t) => (0, Some(t.to_string())),
                _ => (0, None),
            };
            let (origin, package) = match assembled.origins.get(path) {
                Some(Origin::Package(name)) => ("package", Some(name.clone())),
                Some(Origin::Library) => ("library", inputs.owners.get(path).cloned()),
                Some(Origin::KernelModule) => ("kernel-module", kernel_package.clone()),
                Some(Origin::Preload) => ("preload", None),
                Some(Origin::Definition) => ("files", None),
                Some(Origin::Uvmkit) | None => ("uvmkit", None),
            };
            ImageFile {
                path: path.to_string(),
                bytes,
                origin,
                package,
                link,
            }
        })
        .collect();
    files.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
    files
}

/// Prints the report: as text, with `files` every file of the image too; or as JSON (files
/// always included).
pub fn print(loaded: &LoadedDefinition, inputs: &ResolvedInputs, files: bool, json: bool) -> Result<(), AssembleError> {
    let assembled = assemble_image(loaded, inputs)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report(loaded, inputs, &assembled)).expect("serialises")
        );
    } else {
        print_text(loaded, inputs, &assembled, files);
    }
    Ok(())
}

fn report<'a>(loaded: &'a LoadedDefinition, inputs: &'a ResolvedInputs, assembled: &'a AssembledTree) -> Report<'a> {
    Report {
        image: &loaded.definition.name,
        packages: inputs
            .packages
            .iter()
            .map(|p| PackageLine {
                name: &p.name,
                version: &p.version,
                archive: &p.archive,
                deb_bytes: p.size,
                role: p.role,
                reason: &p.reason,
            })
            .collect(),
        files_taken_from_packages: assembled
            .package_files
            .iter()
            .map(|(package, files, bytes)| PackageTotal {
                package: package.clone(),
                files: *files,
                bytes: *bytes,
            })
            .collect(),
        left_out_by_defaults: &assembled.left_out,
        kernel: KernelLine {
            release: &inputs.kernel.release,
            bytes: inputs.kernel.image.len(),
            modules: inputs.modules.modules.iter().map(|m| m.name.as_str()).collect(),
        },
        tree_entries: assembled.tree.len(),
        tree_file_bytes: assembled.tree.total_file_bytes(),
        files: image_files(assembled, inputs),
    }
}

fn print_text(loaded: &LoadedDefinition, inputs: &ResolvedInputs, assembled: &AssembledTree, files: bool) {
    let def = &loaded.definition;
    match describe_mirrors(&inputs.mirrors) {
        Some(m) => println!("image {} ({m})", def.name),
        None => println!("image {} (pinned by its lock, all in the cache)", def.name),
    }
    println!("\npackages ({}):", inputs.packages.len());
    for p in &inputs.packages {
        println!(
            "  {:<32} {:<28} {:<20} {:>10}  {:?}: {}",
            p.name,
            p.version,
            p.archive,
            human_bytes(p.size),
            p.role,
            p.reason
        );
    }
    println!("\nfiles taken from packages:");
    for (name, count, bytes) in &assembled.package_files {
        println!("  {name:<32} {count:>6} files {:>10}", human_bytes(*bytes));
    }
    println!(
        "  {:<32} {:>6} files (libraries)",
        "library closure",
        assembled.closure.added.len()
    );
    if !assembled.left_out.is_empty() {
        let total: u64 = assembled.left_out.iter().map(|l| l.bytes).sum();
        println!(
            "\nleft out by the packages' defaults ({}; `defaults = false` or naming the path in `include` keeps it):",
            human_bytes(total)
        );
        for l in &assembled.left_out {
            println!(
                "  {:<16} {:<36} {:>10}  {}",
                l.package,
                l.path,
                human_bytes(l.bytes),
                l.reason
            );
        }
    }
    println!(
        "\nkernel {} ({})",
        inputs.kernel.release,
        human_bytes(inputs.kernel.image.len())
    );
    let names: Vec<&str> = inputs.modules.modules.iter().map(|m| m.name.as_str()).collect();
    println!("modules ({}, in load order): {}", names.len(), names.join(" "));
    if !inputs.modules.builtin.is_empty() {
        println!("built in: {}", inputs.modules.builtin.join(" "));
    }
    let tree = &assembled.tree;
    println!(
        "\nimage tree: {} entries, {} of files",
        tree.len(),
        human_bytes(tree.total_file_bytes())
    );
    if files {
        println!("\nfiles, largest first (bytes, from, path):");
        for f in image_files(assembled, inputs) {
            let from = match (&f.package, f.origin) {
                (Some(package), "package") => package.clone(),
                (Some(package), origin) => format!("{package} ({origin})"),
                (None, "files") => "[[files]]".into(),
                (None, "preload") => "[preload]".into(),
                (None, origin) => origin.to_string(),
            };
            let link = f.link.map(|t| format!(" -> {t}")).unwrap_or_default();
            println!(
                "  {:>11} {:>10}  {from:<36} {}{link}",
                f.bytes,
                human_bytes(f.bytes),
                f.path
            );
        }
    }
}
