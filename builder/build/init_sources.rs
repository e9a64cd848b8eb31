//! Which directories the embedded init is built from: `init/` and every crate it reaches
//! through `path =` dependencies, followed transitively. `build.rs` watches each of them, so an
//! edit to any crate the init links rebuilds the PID 1 that `uvmkit` embeds.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The directories of the crate at `crate_dir` and of every local crate it depends on
/// (normal and build dependencies, not dev-dependencies), sorted and canonical.
pub fn local_crate_dirs(crate_dir: &Path) -> Result<BTreeSet<PathBuf>, String> {
    let mut seen = BTreeSet::new();
    let mut pending = vec![crate_dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let dir = dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()))?;
        if !seen.insert(dir.clone()) {
            continue;
        }
        let manifest_path = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
        let manifest: toml::Table = text.parse().map_err(|e| format!("{}: {e}", manifest_path.display()))?;
        for section in ["dependencies", "build-dependencies"] {
            let Some(deps) = manifest.get(section).and_then(|d| d.as_table()) else {
                continue;
            };
            for dep in deps.values() {
                if let Some(path) = dep.get("path").and_then(|p| p.as_str()) {
                    pending.push(dir.join(path));
                }
            }
        }
    }
    Ok(seen)
}
