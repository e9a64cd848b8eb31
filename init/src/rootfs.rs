//! Moving the initramfs into a tmpfs that becomes `/`.
//!
//! The kernel's rootfs cannot be the old root of `pivot_root(2)`, which container runtimes
//! need, so the first run of the init moves every file into a fresh tmpfs, moves that tmpfs
//! onto `/`, chroots into it and executes itself again. Files are copied and then unlinked one
//! at a time (as `switch_root` does), so memory holds each file once plus one file in flight.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use thiserror::Error;

use crate::sys;

/// Where the new root is mounted while files move into it.
pub const NEW_ROOT: &str = "/.uvmkit-root";

/// Set in the environment of the re-executed init: the move is done.
pub const MOVED_MARKER: &str = "UVMKIT_INIT_ROOT_MOVED";

/// Why the root could not be moved.
#[derive(Debug, Error)]
pub enum RootMoveError {
    /// Setting up the tmpfs failed; nothing was moved.
    #[error("cannot prepare the tmpfs root ({step}): {source}; staying on the initramfs")]
    Prepare {
        /// What was being done.
        step: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// The tmpfs has less room than the files need; nothing was moved.
    #[error(
        "the tmpfs root has {} MiB free but the initramfs holds {} MiB; staying on the initramfs \
         (raise root_size in the image definition)",
        .available >> 20,
        .needed >> 20
    )]
    TooSmall {
        /// Bytes the files occupy.
        needed: u64,
        /// Bytes free in the tmpfs.
        available: u64,
    },
    /// Files were moved but the final mount move or chroot failed.
    #[error("cannot switch to the tmpfs root ({step}): {source}")]
    Switch {
        /// What was being done.
        step: &'static str,
        /// The cause.
        source: io::Error,
    },
}

/// Counts of a tree move.
#[derive(Debug, Default)]
pub struct MoveStats {
    /// Regular files copied.
    pub files: u64,
    /// Bytes of regular files copied.
    pub bytes: u64,
    /// Directories, symlinks, device nodes and hard links recreated.
    pub others: u64,
    /// Mount points found (and later moved along).
    pub mounts: Vec<PathBuf>,
    /// Entries that could not be moved, with the reason.
    pub failures: Vec<String>,
    /// Milliseconds the whole move took.
    pub millis: u128,
    /// How file data was copied in the end (`copy_file_range`, `sendfile`, `read/write`).
    pub method: &'static str,
    /// The tmpfs size limit in bytes.
    pub size: u64,
}

/// Whether `/` is the kernel's initramfs (ramfs or tmpfs rootfs) that has not been moved yet.
pub fn root_is_initramfs() -> bool {
    if std::env::var_os(MOVED_MARKER).is_some() {
        return false;
    }
    matches!(sys::statfs(Path::new("/")), Ok((kind, _)) if kind == sys::RAMFS_MAGIC || kind == sys::TMPFS_MAGIC)
}

/// Moves the initramfs into a tmpfs and makes it `/` (chrooted, working directory `/`).
/// The caller then executes the init again from the new root.
///
/// `size` is the tmpfs `size=` option; `None` sizes the tmpfs to the initramfs's files plus
/// tmpfs's default limit (half the memory), so a large image still fits with room to write.
pub fn move_root_to_tmpfs(size: Option<&str>) -> Result<MoveStats, RootMoveError> {
    let started = Instant::now();
    let new_root = Path::new(NEW_ROOT);
    let prepare = |step| move |source| RootMoveError::Prepare { step, source };
    fs::DirBuilder::new()
        .mode(0o755)
        .create(new_root)
        .or_else(|err| {
            if err.kind() == io::ErrorKind::AlreadyExists {
                Ok(())
            } else {
                Err(err)
            }
        })
        .map_err(prepare("create the mount point"))?;
    sys::mount(Some("rootfs"), new_root, Some("tmpfs"), 0, Some("mode=0755")).map_err(prepare("mount a tmpfs"))?;

    let root_dev = fs::symlink_metadata("/").map_err(prepare("stat /"))?.dev();
    let needed = tree_size(Path::new("/"), root_dev, new_root);
    let (_, default_available) = sys::statfs(new_root).map_err(prepare("statfs the tmpfs"))?;
    let size_option = match size {
        Some(size) => format!("size={size}"),
        None => format!("size={}", needed.saturating_add(default_available)),
    };
    sys::mount(
        None,
        new_root,
        None,
        libc::MS_REMOUNT,
        Some(&format!("mode=0755,{size_option}")),
    )
    .map_err(prepare("set the tmpfs size"))?;
    let (_, available) = sys::statfs(new_root).map_err(prepare("statfs the tmpfs"))?;
    if needed > available {
        let _ = sys::umount(new_root, 0);
        let _ = fs::remove_dir(new_root);
        return Err(RootMoveError::TooSmall { needed, available });
    }

    let mut mover = TreeMover {
        root_dev,
        skip: new_root.to_path_buf(),
        links: HashMap::new(),
        method: CopyMethod::CopyFileRange,
        stats: MoveStats::default(),
    };
    mover.move_dir(Path::new("/"), new_root);
    copy_attributes(Path::new("/"), new_root, &fs::symlink_metadata("/").ok());

    let switch = |step| move |source| RootMoveError::Switch { step, source };
    // Mounts made before the move (at least /dev) go along, each moved as a whole subtree.
    for mount in &mover.stats.mounts {
        let target = new_root.join(mount.strip_prefix("/").unwrap_or(mount));
        if let Err(err) = sys::move_mount(mount, &target) {
            mover
                .stats
                .failures
                .push(format!("cannot move mount {}: {err}", mount.display()));
        }
    }
    std::env::set_current_dir(new_root).map_err(switch("enter the tmpfs"))?;
    sys::move_mount(Path::new("."), Path::new("/")).map_err(switch("move the tmpfs onto /"))?;
    sys::chroot(Path::new(".")).map_err(switch("chroot into the tmpfs"))?;
    std::env::set_current_dir("/").map_err(switch("enter /"))?;
    mover.stats.millis = started.elapsed().as_millis();
    mover.stats.method = mover.method.name();
    mover.stats.size = available;
    Ok(mover.stats)
}

/// Bytes the regular files under `dir` occupy, rounded up to whole pages, not crossing mounts.
fn tree_size(dir: &Path, root_dev: u64, skip: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0u64;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if path == skip || meta.dev() != root_dev {
            continue;
        }
        if meta.is_dir() {
            total += 4096 + tree_size(&path, root_dev, skip);
        } else {
            total += meta.len().div_ceil(4096) * 4096;
        }
    }
    total
}

/// How file data is copied; downgraded once when the kernel refuses a faster way.
#[derive(Debug, Clone, Copy, PartialEq)]
enum CopyMethod {
    /// `copy_file_range(2)`: in-kernel, may share pages.
    CopyFileRange,
    /// `sendfile(2)`: in-kernel copy through the page cache (works between ramfs and tmpfs).
    Sendfile,
    /// `read`/`write` through a user buffer.
    ReadWrite,
}

impl CopyMethod {
    fn name(self) -> &'static str {
        match self {
            CopyMethod::CopyFileRange => "copy_file_range",
            CopyMethod::Sendfile => "sendfile",
            CopyMethod::ReadWrite => "read/write",
        }
    }
}

struct TreeMover {
    root_dev: u64,
    skip: PathBuf,
    /// First destination of each multiply-linked inode, to recreate hard links.
    links: HashMap<(u64, u64), PathBuf>,
    method: CopyMethod,
    stats: MoveStats,
}

impl TreeMover {
    /// Moves the contents of `src` into the existing directory `dst`, deepest first.
    fn move_dir(&mut self, src: &Path, dst: &Path) {
        let mut entries: Vec<_> = match fs::read_dir(src) {
            Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
            Err(err) => {
                self.fail(src, &err);
                return;
            }
        };
        entries.sort();
        for path in entries {
            if path == self.skip {
                continue;
            }
            let Some(name) = path.file_name() else { continue };
            let target = dst.join(name);
            if let Err(err) = self.move_entry(&path, &target) {
                self.fail(&path, &err);
            }
        }
    }

    fn move_entry(&mut self, src: &Path, dst: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(src)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            fs::DirBuilder::new().mode(0o700).create(dst)?;
            if meta.dev() != self.root_dev {
                // A mount point: keep an empty directory to move the mount onto later.
                self.stats.mounts.push(src.to_path_buf());
                copy_attributes(src, dst, &Some(meta));
                return Ok(());
            }
            self.move_dir(src, dst);
            copy_attributes(src, dst, &Some(meta));
            self.stats.others += 1;
            // Fails only if something could not be moved; that is already recorded.
            let _ = fs::remove_dir(src);
            return Ok(());
        }
        // Looked up whatever the link count is now: moving the first name lowered it.
        if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
            fs::hard_link(first, dst)?;
            fs::remove_file(src)?;
            self.stats.others += 1;
            return Ok(());
        }
        if meta.nlink() > 1 {
            self.links.insert((meta.dev(), meta.ino()), dst.to_path_buf());
        }
        if kind.is_file() {
            self.copy_file(src, dst, &meta)?;
            self.stats.files += 1;
            self.stats.bytes += meta.len();
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
            self.stats.others += 1;
        } else if kind.is_block_device() || kind.is_char_device() || kind.is_fifo() || kind.is_socket() {
            sys::mknod(dst, meta.mode(), meta.rdev())?;
            self.stats.others += 1;
        }
        copy_attributes(src, dst, &Some(meta));
        fs::remove_file(src)
    }

    fn copy_file(&mut self, src: &Path, dst: &Path, meta: &fs::Metadata) -> io::Result<()> {
        let from = File::open(src)?;
        let to = OpenOptions::new().write(true).create_new(true).mode(0o600).open(dst)?;
        let mut remaining = meta.len();
        while remaining > 0 {
            let chunk = remaining.min(1 << 30) as usize;
            let copied = match self.method {
                CopyMethod::CopyFileRange => sys::copy_file_range(from.as_fd(), to.as_fd(), chunk),
                CopyMethod::Sendfile => sys::sendfile(to.as_fd(), from.as_fd(), chunk),
                CopyMethod::ReadWrite => io::copy(&mut (&from).take(remaining), &mut &to).map(|n| n as usize),
            };
            match copied {
                Ok(0) => break,
                Ok(n) => remaining = remaining.saturating_sub(n as u64),
                Err(err) if self.method != CopyMethod::ReadWrite && is_unsupported(&err) => {
                    // Nothing was copied by the refused call; the offsets are unchanged.
                    self.method = match self.method {
                        CopyMethod::CopyFileRange => CopyMethod::Sendfile,
                        _ => CopyMethod::ReadWrite,
                    };
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    fn fail(&mut self, path: &Path, err: &io::Error) {
        self.stats.failures.push(format!("{}: {err}", path.display()));
    }
}

/// Errors that mean "this kernel or file system pair cannot do that copy call".
fn is_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::EBADF)
    )
}

/// Copies owner, permissions and times from `meta` (of `src`) to `dst`; best effort, since
/// a file with wrong times or owner is better than a boot that stops.
fn copy_attributes(src: &Path, dst: &Path, meta: &Option<fs::Metadata>) {
    let Some(meta) = meta.as_ref().cloned().or_else(|| fs::symlink_metadata(src).ok()) else {
        return;
    };
    let _ = std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()));
    if !meta.file_type().is_symlink() {
        // After chown: chown clears set-user-ID and set-group-ID bits.
        let _ = fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777));
    }
    let _ = sys::set_times_nofollow(
        dst,
        (meta.atime(), meta.atime_nsec()),
        (meta.mtime(), meta.mtime_nsec()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_errors_say_what_happened_and_what_to_do() {
        let err = RootMoveError::TooSmall {
            needed: 300 << 20,
            available: 200 << 20,
        };
        assert_eq!(
            err.to_string(),
            "the tmpfs root has 200 MiB free but the initramfs holds 300 MiB; staying on the \
             initramfs (raise root_size in the image definition)"
        );
        let err = RootMoveError::Prepare {
            step: "mount tmpfs",
            source: io::Error::from_raw_os_error(libc::ENOMEM),
        };
        assert!(
            err.to_string()
                .starts_with("cannot prepare the tmpfs root (mount tmpfs): "),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("uvmkit-init-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn tree_mover_moves_everything_and_empties_the_source() {
        let base = scratch("move");
        let src = base.join("src");
        let dst = base.join("dst");
        fs::create_dir_all(src.join("etc/uvmkit")).unwrap();
        fs::create_dir_all(&dst).unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(src.join("init"), &big).unwrap();
        fs::set_permissions(src.join("init"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(src.join("etc/uvmkit/init.toml"), b"hostname = \"x\"\n").unwrap();
        fs::write(src.join("empty"), b"").unwrap();
        std::os::unix::fs::symlink("init", src.join("sbin-poweroff")).unwrap();
        fs::hard_link(src.join("init"), src.join("init-link")).unwrap();
        sys::set_times_nofollow(&src.join("empty"), (1, 0), (1_700_000_000, 5)).unwrap();

        let root_dev = fs::symlink_metadata(&src).unwrap().dev();
        let mut mover = TreeMover {
            root_dev,
            skip: src.join("skipped"),
            links: HashMap::new(),
            method: CopyMethod::CopyFileRange,
            stats: MoveStats::default(),
        };
        fs::create_dir(src.join("skipped")).unwrap();
        mover.move_dir(&src, &dst);
        assert!(mover.stats.failures.is_empty(), "{:?}", mover.stats.failures);
        assert_eq!(mover.stats.files, 3);

        assert_eq!(fs::read(dst.join("init")).unwrap(), big);
        assert_eq!(fs::metadata(dst.join("init")).unwrap().mode() & 0o7777, 0o755);
        assert_eq!(
            fs::read(dst.join("etc/uvmkit/init.toml")).unwrap(),
            b"hostname = \"x\"\n"
        );
        assert_eq!(fs::read_link(dst.join("sbin-poweroff")).unwrap(), Path::new("init"));
        assert_eq!(
            fs::metadata(dst.join("init")).unwrap().ino(),
            fs::metadata(dst.join("init-link")).unwrap().ino()
        );
        assert_eq!(fs::metadata(dst.join("empty")).unwrap().mtime(), 1_700_000_000);
        // Only the skipped directory is left behind.
        let left: Vec<_> = fs::read_dir(&src).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, ["skipped"]);
        assert!(!dst.join("skipped").exists());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn every_copy_method_copies_exactly() {
        let base = scratch("methods");
        let data: Vec<u8> = (0..1_234_567u32).map(|i| (i * 7 % 256) as u8).collect();
        fs::write(base.join("src"), &data).unwrap();
        for method in [CopyMethod::CopyFileRange, CopyMethod::Sendfile, CopyMethod::ReadWrite] {
            let mut mover = TreeMover {
                root_dev: 0,
                skip: PathBuf::new(),
                links: HashMap::new(),
                method,
                stats: MoveStats::default(),
            };
            let dst = base.join(format!("{method:?}"));
            let meta = fs::metadata(base.join("src")).unwrap();
            mover.copy_file(&base.join("src"), &dst, &meta).unwrap();
            assert_eq!(fs::read(&dst).unwrap(), data, "{method:?}");
        }
        fs::remove_dir_all(&base).unwrap();
    }
}
