//! The read-only system image and the small boot tree that mounts it.
//!
//! The whole root tree is written as squashfs ([`write_system_image`], `builder/crates/squashfs`)
//! and hashed, compressed as `[init] system_compression` says. Data blocks compressed in an
//! earlier build are taken from the block cache in the build cache directory
//! ([`BLOCK_CACHE_DIR`]), so a rebuild compresses only what changed; the image's bytes are the
//! same with a cold or a warm cache. The boot initrd ([`boot_tree`]) holds only `/init`, the device nodes, the boot
//! modules (`[modules] boot` of the selected `kernel-config/*.toml`, with their `depends`) and
//! an `/etc/uvmkit/init.toml` that says `root = "system"` and records the image's sha256 and
//! size; the UKI covers that initrd, so the signature covers the hash. Disk artifacts carry the
//! image as the `uvmkit-system` partition and the ISO as the file [`SYSTEM_MEDIUM_FILE`] on its
//! ISO 9660 file system ([`SystemLocation`] says which the boot initrd waits for); the EFI pair
//! and the UKI used alone append it to the boot initrd as one uncompressed cpio member
//! ([`append_system_image`]), which the kernel unpacks after the compressed part
//! (Documentation/driver-api/early-userspace/buffer-format.rst).

use super::{io_error, EncodeError};
use crate::definition::kernel_config;
use crate::definition::{ImageDefinition, SystemCompression};
use crate::inputs::ResolvedInputs;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use uvmkit_filetree::{FileData, FileTree, Node, NodeKind, TreePath};
pub use uvmkit_init_config::SYSTEM_MEDIUM_FILE;
use uvmkit_init_config::{
    InitConfig, RootMode, SystemImageSection, CONFIG_PATH, SYSTEM_IMAGE_FILE, SYSTEM_PARTITION_NAME,
};
use uvmkit_squashfs::{CacheStats, DirBlockCache, SquashfsOptions, SquashfsStats};

/// The block cache's directory under the build cache directory; the `v1` changes when an
/// entry's meaning does.
pub const BLOCK_CACHE_DIR: &str = "squashfs-blocks-v1";

/// How long the init waits for the `uvmkit-system` partition or the ISO's medium to appear.
pub const PARTITION_WAIT_SECONDS: u64 = 60;

/// Where the init of a boot initrd waits for the system image when it is not in the initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemLocation {
    /// The GPT partition `uvmkit-system` (raw, VHDX, VMDK, qcow2 and the appliances).
    Partition,
    /// The file [`SYSTEM_MEDIUM_FILE`] on an ISO 9660 medium: the ISO in a CD drive, or
    /// written to a USB disk.
    Medium,
}

/// The written system image.
#[derive(Debug, Clone)]
pub struct SystemImage {
    /// The squashfs file in the staging area.
    pub path: PathBuf,
    /// Its length in bytes (a multiple of 4 KiB).
    pub size: u64,
    /// Its sha256, lower-case hex.
    pub sha256: String,
    /// What the writer reported.
    pub stats: SquashfsStats,
    /// How the block cache served the build.
    pub cache: CacheStats,
}

impl SystemImage {
    /// The image's bytes, for a partition or an initrd member.
    pub fn data(&self) -> FileData {
        FileData::HostFile {
            path: self.path.clone(),
            size: self.size,
            sha256: None,
        }
    }
}

/// The squashfs settings for `compression`.
pub fn squashfs_options(compression: SystemCompression, epoch: u64) -> SquashfsOptions {
    let options = match compression {
        SystemCompression::Zstd => SquashfsOptions::zstd(),
        SystemCompression::Xz => SquashfsOptions::xz(),
    };
    SquashfsOptions {
        mtime: u32::try_from(epoch).unwrap_or(u32::MAX),
        ..options
    }
}

/// Writes `tree` as the squashfs system image at `path` and hashes it, taking compressed
/// blocks from (and adding them to) the block cache under `cache_dir`.
pub fn write_system_image(
    tree: &FileTree,
    compression: SystemCompression,
    epoch: u64,
    cache_dir: &Path,
    path: &Path,
) -> Result<SystemImage, EncodeError> {
    let io = io_error("system image");
    let mut cache = DirBlockCache::open(&cache_dir.join(BLOCK_CACHE_DIR)).map_err(io_error("squashfs block cache"))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(&io)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let options = squashfs_options(compression, epoch);
    let stats = uvmkit_squashfs::write_squashfs_cached(tree, &options, &cache, &mut w)?;
    // Bounded: the least recently used entries go once the cache passes its limit.
    cache.prune().map_err(io_error("squashfs block cache"))?;
    let mut file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(&io)?;
    let sha256 = sha256_hex(&mut file).map_err(&io)?;
    Ok(SystemImage {
        path: path.to_path_buf(),
        size: stats.image_bytes,
        sha256,
        stats,
        cache: cache.stats(),
    })
}

fn sha256_hex(reader: &mut impl Read) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The boot initrd's tree: `/init`, `/dev`'s nodes, the boot modules and an `init.toml` that
/// mounts `image`, found at `location`, as the root.
pub fn boot_tree(
    tree: &FileTree,
    def: &ImageDefinition,
    inputs: &ResolvedInputs,
    image: &SystemImage,
    location: SystemLocation,
) -> Result<FileTree, EncodeError> {
    let mut boot = FileTree::new();
    let path = |p: &str| TreePath::new(p).expect("a valid constant path");
    let copy = |boot: &mut FileTree, p: &TreePath, node: &Node| {
        boot.insert(p, node.clone()).expect("paths of a valid tree");
    };
    if let Some(init) = tree.get(&path("/init")) {
        copy(&mut boot, &path("/init"), init);
    }
    let dev = path("/dev");
    if let Some(node) = tree.get(&dev) {
        copy(&mut boot, &dev, node);
        for (p, node) in tree.descendants(&dev) {
            if !matches!(node.kind, NodeKind::File(_) | NodeKind::HardLink(_)) {
                copy(&mut boot, p, node);
            }
        }
    }

    // The boot modules with everything they depend on.
    let wanted = kernel_config::boot_modules(&def.kernel_features);
    let normal = |n: &str| n.replace('-', "_");
    let mut needed: BTreeSet<String> = wanted.iter().map(|n| normal(n)).collect();
    loop {
        let before = needed.len();
        for m in &inputs.modules.modules {
            if needed.contains(&normal(&m.name)) {
                needed.extend(m.depends.iter().map(|d| normal(d)));
            }
        }
        if needed.len() == before {
            break;
        }
    }
    let release = &inputs.kernel.release;
    let boot_modules: Vec<_> = inputs
        .modules
        .modules
        .iter()
        .filter(|m| needed.contains(&normal(&m.name)))
        .collect();
    for m in &boot_modules {
        let p = TreePath::new(&format!("/lib/modules/{release}/{}", m.path)).map_err(|e| EncodeError::BootTree {
            what: format!("module {}", m.name),
            reason: e.to_string(),
        })?;
        boot.insert(&p, Node::file(m.data.clone(), 0o644))
            .map_err(|e| EncodeError::BootTree {
                what: format!("module {}", m.name),
                reason: e.to_string(),
            })?;
    }

    // The image's configuration, told to mount the system image, loading only the boot modules.
    let config_path = TreePath::new(CONFIG_PATH).expect("a valid constant path");
    let text = match tree.get(&config_path).map(|n| &n.kind) {
        Some(NodeKind::File(data)) => data.read_all().map_err(io_error("init.toml"))?,
        _ => Vec::new(),
    };
    let mut config: InitConfig =
        toml::from_str(&String::from_utf8_lossy(&text)).map_err(|e| EncodeError::BootTree {
            what: CONFIG_PATH.to_string(),
            reason: e.to_string(),
        })?;
    config.root = RootMode::System;
    config.modules.retain(|m| needed.contains(&normal(&m.name)));
    config.system = Some(SystemImageSection {
        sha256: image.sha256.clone(),
        size: image.size,
        file: SYSTEM_IMAGE_FILE.into(),
        partition: (location == SystemLocation::Partition).then(|| SYSTEM_PARTITION_NAME.into()),
        medium_file: (location == SystemLocation::Medium).then(|| SYSTEM_MEDIUM_FILE.into()),
        wait_seconds: PARTITION_WAIT_SECONDS,
    });
    let text = toml::to_string(&config).expect("the init configuration serializes as TOML");
    let text = format!("# Written by uvmkit build for the boot initrd; read by the init (PID 1) at boot.\n{text}");
    boot.insert(&config_path, Node::file(FileData::inline(text.into_bytes()), 0o644))
        .expect("a valid constant path");
    Ok(boot)
}

/// Copies the boot initrd `boot` to `full` and appends `image` as `/uvmkit-system.squashfs` in
/// an uncompressed cpio archive of its own, starting on a 4-byte boundary as the kernel
/// requires after a compressed archive. Returns the length of `full`.
pub fn append_system_image(boot: &Path, image: &SystemImage, epoch: u64, full: &Path) -> Result<u64, EncodeError> {
    let io = io_error("initrd with the system image");
    std::fs::copy(boot, full).map_err(&io)?;
    let mut file = OpenOptions::new().append(true).open(full).map_err(&io)?;
    let len = file.metadata().map_err(&io)?.len();
    file.write_all(&vec![0u8; (len.next_multiple_of(4) - len) as usize])
        .map_err(&io)?;
    let name = TreePath::new(SYSTEM_IMAGE_FILE).expect("a valid constant path");
    let mut w = BufWriter::with_capacity(1 << 20, file);
    uvmkit_initrd::write_file_archive(&name, &image.data(), 0o400, epoch, &mut w)?;
    w.flush().map_err(&io)?;
    let file: File = w.into_inner().map_err(|e| io(e.into_error()))?;
    Ok(file.metadata().map_err(&io)?.len())
}
