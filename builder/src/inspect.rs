//! `uvmkit inspect`: the resolved inputs of a definition, for people.

use crate::assemble::AssembleError;
use crate::definition::LoadedDefinition;
use crate::inputs::{describe_mirrors, ResolvedInputs};
use crate::pipeline::assemble_image;
use crate::publish::human_bytes;
use uvmkit_filetree::NodeKind;

/// Prints packages with versions and roles, files and bytes per requested package, the
/// kernel and its modules; with `files`, every file of the image.
pub fn print(loaded: &LoadedDefinition, inputs: &ResolvedInputs, files: bool) -> Result<(), AssembleError> {
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
    let assembled = assemble_image(loaded, inputs)?;
    println!("\nfiles taken from packages:");
    for (name, count, bytes) in &assembled.package_files {
        println!("  {name:<32} {count:>6} files {:>10}", human_bytes(*bytes));
    }
    println!(
        "  {:<32} {:>6} files (libraries)",
        "library closure",
        assembled.closure.added.len()
    );
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
        for (path, node) in tree.iter() {
            let detail = match &node.kind {
                NodeKind::File(d) => human_bytes(d.len()),
                NodeKind::Symlink(t) => format!("-> {t}"),
                NodeKind::HardLink(t) => format!("=> {t}"),
                NodeKind::Directory => "dir".into(),
                other => format!("{other:?}"),
            };
            println!(
                "  {:06o} {:>5}:{:<5} {path} {detail}",
                node.st_mode(),
                node.uid,
                node.gid
            );
        }
    }
    Ok(())
}
