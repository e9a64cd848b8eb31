//! The builder re-embeds the init whenever anything the init links changes: the directories
//! `build.rs` watches are exactly the local crates in the init's dependency graph as cargo
//! resolves it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../builder/build/init_sources.rs"]
mod init_sources;

/// The local (path) crates reached from `uvmkit-init` by normal and build dependencies,
/// according to `cargo metadata`.
fn cargo_local_closure(workspace: &Path) -> BTreeSet<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--filter-platform",
            "x86_64-unknown-linux-gnu",
            "--manifest-path",
        ])
        .arg(workspace.join("Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut local_dirs = BTreeMap::new();
    for pkg in meta["packages"].as_array().unwrap() {
        if pkg["source"].is_null() {
            let manifest = PathBuf::from(pkg["manifest_path"].as_str().unwrap());
            let id = pkg["id"].as_str().unwrap().to_string();
            local_dirs.insert(id, manifest.parent().unwrap().canonicalize().unwrap());
        }
    }
    let nodes: BTreeMap<String, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap().to_string(), n))
        .collect();
    let init_id = local_dirs
        .iter()
        .find(|(_, dir)| dir.ends_with("init"))
        .map(|(id, _)| id.clone())
        .expect("uvmkit-init is a workspace member");
    let mut seen = BTreeSet::new();
    let mut pending = vec![init_id];
    while let Some(id) = pending.pop() {
        let Some(dir) = local_dirs.get(&id) else { continue };
        if !seen.insert(dir.clone()) {
            continue;
        }
        for dep in nodes[&id]["deps"].as_array().unwrap() {
            let linked = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null() || k["kind"] == "build");
            if linked {
                pending.push(dep["pkg"].as_str().unwrap().to_string());
            }
        }
    }
    seen
}

#[test]
fn build_script_watches_every_crate_the_init_links() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let watched = init_sources::local_crate_dirs(&workspace.join("init")).unwrap();
    let linked = cargo_local_closure(workspace);
    assert_eq!(
        watched, linked,
        "build.rs must watch exactly the local crates the init links"
    );
    for shared in ["crates/disk", "crates/ext4", "crates/filetree", "crates/service-spec"] {
        let dir = workspace.join(shared).canonicalize().unwrap();
        assert!(
            watched.contains(&dir),
            "{shared} is linked by the init and must be watched"
        );
    }
}
