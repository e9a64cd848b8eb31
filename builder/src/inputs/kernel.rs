//! The kernel: found in a kernel package's files (`boot/vmlinuz-RELEASE`), or taken from local
//! files (`[kernel] path`, `modules_dir`, `config`), and its `.config` checked against what the
//! image's targets and features need.

use super::error::InputError;
use super::host_directory::{copy_host_directory, HostDirectoryError, Ownership};
use crate::definition::kernel_config::{self, MissingOption};
use crate::definition::{ImageDefinition, LocalKernel};
use std::path::{Path, PathBuf};
use uvmkit_filetree::{FileData, FileTree, NodeKind, TreePath};

/// Why the kernel or a module could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// No `lib/modules/RELEASE` or `boot/vmlinuz-RELEASE` in the kernel's files.
    #[error("no usable kernel: {0}")]
    NoKernel(String),
    /// A module some feature or the definition asks for does not exist in this kernel.
    #[error("kernel {release} has no module {module:?} (wanted by {wanted_by}); check the name with `modinfo`, or remove it")]
    UnknownModule {
        /// The module's canonical name.
        module: String,
        /// Who asked for it (a `kernel-config/` file, `[kernel] modules`, another module).
        wanted_by: String,
        /// The kernel release.
        release: String,
    },
    /// A module's `.modinfo` could not be read.
    #[error("cannot read kernel module {path}: {message}")]
    BadModule {
        /// The module's path in the kernel's files.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// `[kernel] modules_dir` does not hold exactly one release.
    #[error("{} must hold exactly one RELEASE/kernel/ directory, found {found:?}", root.display())]
    LocalReleases {
        /// The directory searched.
        root: PathBuf,
        /// The releases found there.
        found: Vec<String>,
    },
    /// A local kernel's modules could not be copied.
    #[error("[kernel] modules_dir {}: {source}", dir.display())]
    LocalModules {
        /// The release's directory.
        dir: PathBuf,
        /// What copying reported.
        source: HostDirectoryError,
    },
    /// The kernel's `.config` lacks options the image's targets or features need.
    #[error(
        "kernel {release} lacks options this image needs:\n{}",
        missing.iter().map(|m| format!("  {m}")).collect::<Vec<_>>().join("\n")
    )]
    MissingOptions {
        /// The kernel release.
        release: String,
        /// What it lacks, by option name.
        missing: Vec<MissingOption>,
    },
}

/// A kernel found in a file tree (a kernel package's contents, or a local directory).
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `uname -r`, such as `6.1.0-28-amd64`.
    pub release: String,
    /// The bzImage (with its EFI stub).
    pub image: FileData,
    /// The kernel's `.config`, when shipped.
    pub config: Option<FileData>,
}

/// Finds the kernel in `tree`: a single `boot/vmlinuz-RELEASE` with a matching
/// `lib/modules/RELEASE/` directory.
pub fn find_kernel(tree: &FileTree) -> Result<Kernel, KernelError> {
    let boot = TreePath::new("/boot").unwrap();
    let mut found = Vec::new();
    for (path, node) in tree.children(&boot) {
        if let (Some(release), NodeKind::File(data)) = (path.file_name().strip_prefix("vmlinuz-"), &node.kind) {
            found.push((release.to_string(), data.clone()));
        }
    }
    let (release, image) = match found.len() {
        0 => {
            return Err(KernelError::NoKernel(
                "the kernel package holds no /boot/vmlinuz-*".into(),
            ))
        }
        1 => found.pop().unwrap(),
        _ => {
            let names: Vec<&str> = found.iter().map(|(r, _)| r.as_str()).collect();
            return Err(KernelError::NoKernel(format!(
                "several kernels ({}); name one package",
                names.join(", ")
            )));
        }
    };
    let config = match tree
        .get(&TreePath::new(&format!("/boot/config-{release}")).unwrap())
        .map(|n| &n.kind)
    {
        Some(NodeKind::File(d)) => Some(d.clone()),
        _ => None,
    };
    Ok(Kernel { release, image, config })
}

/// A kernel from local files, and the tree holding its modules at `/lib/modules/RELEASE`.
pub(super) fn local_kernel(local: &LocalKernel, base_dir: &Path) -> Result<(Kernel, FileTree), InputError> {
    let read_error = |what: &str, path: &Path| {
        let what = format!("{what} {}", path.display());
        move |source| InputError::Read { what, source }
    };
    let image_path = base_dir.join(&local.image);
    let image = FileData::host_file(&image_path).map_err(read_error("[kernel] path", &image_path))?;
    let dir = base_dir.join(&local.modules_dir);
    let root = if dir.join("lib/modules").is_dir() {
        dir.join("lib/modules")
    } else {
        dir.clone()
    };
    let releases: Vec<String> = std::fs::read_dir(&root)
        .map_err(read_error("[kernel] modules_dir", &root))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("kernel").is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let [release] = releases.as_slice() else {
        return Err(KernelError::LocalReleases { root, found: releases }.into());
    };
    let mut tree = FileTree::new();
    let modules = TreePath::new(&format!("/lib/modules/{release}")).map_err(HostDirectoryError::from);
    let release_dir = root.join(release);
    modules
        .and_then(|dest| copy_host_directory(&mut tree, &dest, &release_dir, Ownership::ROOT))
        .map_err(|source| KernelError::LocalModules {
            dir: release_dir.clone(),
            source,
        })?;
    let config = match &local.config {
        Some(c) => {
            let path = base_dir.join(c);
            Some(FileData::host_file(&path).map_err(read_error("[kernel] config", &path))?)
        }
        None => None,
    };
    Ok((
        Kernel {
            release: release.clone(),
            image,
            config,
        },
        tree,
    ))
}

/// Checks the kernel's `.config` against the image's kernel features; a kernel without one is
/// accepted with a warning.
pub(super) fn check_kernel_config(def: &ImageDefinition, kernel: &Kernel) -> Result<(), InputError> {
    let Some(config) = &kernel.config else {
        log::warn!(
            "kernel {} comes without its .config; its options were not checked",
            kernel.release
        );
        return Ok(());
    };
    let text = config.read_all().map_err(|source| InputError::Read {
        what: "kernel config".into(),
        source,
    })?;
    let missing = kernel_config::check(&String::from_utf8_lossy(&text), &def.kernel_features);
    if missing.is_empty() {
        return Ok(());
    }
    Err(KernelError::MissingOptions {
        release: kernel.release.clone(),
        missing,
    }
    .into())
}
