//! `[preload]`: container image archives placed in the image for the init to load on first
//! boot, each named in `init.toml` with its sha256 (which names the marker the init leaves).

use super::AssembleError;
use crate::definition::ImageDefinition;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::Path;
use uvmkit_filetree::{FileData, FileTree, Node, TreePath};

/// Where `[preload]` archives go in the image.
pub const PRELOAD_DIR: &str = "/usr/share/uvmkit/preload";

/// A container image archive in the image, as the init's `[preload]` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreloadedImage {
    /// Its path inside the image.
    pub path: String,
    /// The sha256 of its bytes: names the marker the init leaves once it is loaded.
    pub sha256: String,
}

/// Adds the `[preload]` archives under [`PRELOAD_DIR`] and returns them with their hashes.
pub(super) fn add_preload_images(
    tree: &mut FileTree,
    def: &ImageDefinition,
    base_dir: &Path,
) -> Result<Vec<PreloadedImage>, AssembleError> {
    let Some(preload) = &def.preload else {
        return Ok(Vec::new());
    };
    let mut images = Vec::new();
    for image in &preload.images {
        let host = base_dir.join(image);
        let error = |message: String| AssembleError::Preload {
            image: host.clone(),
            message,
        };
        let mut file = std::fs::File::open(&host).map_err(|e| error(e.to_string()))?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(|e| error(e.to_string()))?;
        let name = Path::new(image)
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| error("the file name must be UTF-8".into()))?;
        let path = format!("{PRELOAD_DIR}/{name}");
        tree.mkdir_all(&TreePath::new(PRELOAD_DIR).expect("static path"))?;
        let data = FileData::host_file(&host).map_err(|e| error(e.to_string()))?;
        tree.insert(&TreePath::new(&path)?, Node::file(data, 0o644))?;
        images.push(PreloadedImage {
            path,
            sha256: hex::encode(hasher.finalize()),
        });
    }
    Ok(images)
}
