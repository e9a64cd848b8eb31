//! The kernel file systems every image needs, cgroup v2 controllers, and unmounting at shutdown.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::log;
use crate::sys;

/// One file system to mount at boot.
#[derive(Debug, Clone, Copy)]
pub struct MountSpec {
    /// The source (device or a name for virtual file systems).
    pub source: &'static str,
    /// The mount point; created if missing.
    pub target: &'static str,
    /// The file system type.
    pub fstype: &'static str,
    /// `MS_*` flags.
    pub flags: libc::c_ulong,
    /// File-system-specific options.
    pub data: Option<&'static str>,
}

const HARDENED: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// `/dev` alone: mounted first, before the root moves, so the console and `/dev/kmsg` exist.
pub const DEV: MountSpec = MountSpec {
    source: "devtmpfs",
    target: "/dev",
    fstype: "devtmpfs",
    flags: libc::MS_NOSUID,
    data: Some("mode=0755"),
};

/// Everything mounted at boot, parents before children.
pub const BOOT_MOUNTS: [MountSpec; 8] = [
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: HARDENED,
        data: None,
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: HARDENED,
        data: None,
    },
    DEV,
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: Some("ptmxmode=0666,mode=0620"),
    },
    MountSpec {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: Some("mode=0755"),
    },
    MountSpec {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: Some("mode=1777"),
    },
    MountSpec {
        source: "tmpfs",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: Some("mode=1777"),
    },
    MountSpec {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: HARDENED,
        data: None,
    },
];

/// Whether `path` is the root of a mount: its device differs from its parent's (or it is `/`).
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    let meta = fs::symlink_metadata(path)?;
    let Some(parent) = path.parent() else {
        return Ok(true);
    };
    let parent_meta = fs::symlink_metadata(if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    })?;
    Ok(meta.dev() != parent_meta.dev() || meta.ino() == parent_meta.ino())
}

/// Mounts `spec` unless something is already mounted there; creates the mount point.
/// Returns whether it mounted.
pub fn mount_once(spec: &MountSpec) -> io::Result<bool> {
    let target = Path::new(spec.target);
    fs::DirBuilder::new().recursive(true).mode(0o755).create(target)?;
    if is_mount_point(target)? {
        return Ok(false);
    }
    match sys::mount(Some(spec.source), target, Some(spec.fstype), spec.flags, spec.data) {
        Ok(()) => Ok(true),
        Err(err) if err.raw_os_error() == Some(libc::EBUSY) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Mounts every entry of [`BOOT_MOUNTS`], logging failures and going on.
pub fn mount_boot_filesystems() {
    for spec in &BOOT_MOUNTS {
        if let Err(err) = mount_once(spec) {
            log!(
                "cannot mount {} ({}) on {}: {err}",
                spec.source,
                spec.fstype,
                spec.target
            );
        }
    }
    // The conventional /dev links that the kernel's devtmpfs does not make.
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/core", "/proc/kcore"),
    ] {
        match std::os::unix::fs::symlink(target, link) {
            Err(err) if err.kind() != io::ErrorKind::AlreadyExists => {
                log!("cannot link {link} to {target}: {err}")
            }
            _ => {}
        }
    }
}

/// Enables every controller of the root cgroup for its children, one by one so that a
/// controller the kernel refuses does not keep the others off. Returns the enabled ones.
pub fn enable_cgroup_controllers(cgroup_root: &Path) -> Vec<String> {
    let available = match fs::read_to_string(cgroup_root.join("cgroup.controllers")) {
        Ok(text) => text,
        Err(err) => {
            log!("cannot read cgroup controllers: {err}");
            return Vec::new();
        }
    };
    let mut enabled = Vec::new();
    for controller in available.split_whitespace() {
        match fs::write(cgroup_root.join("cgroup.subtree_control"), format!("+{controller}")) {
            Ok(()) => enabled.push(controller.to_string()),
            Err(err) => log!("cannot enable cgroup controller {controller}: {err}"),
        }
    }
    enabled
}

/// Decodes the octal escapes (`\040` for a space, ...) the kernel uses in `mountinfo` paths.
fn unescape_mount_path(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

/// The mount points listed in `/proc/self/mountinfo` text, in mount order
/// (`proc(5)`: the fifth field of each line).
pub fn parse_mountinfo(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .collect()
}

/// Unmounts everything but `/` in reverse mount order; what cannot be unmounted (busy, such as
/// `/dev` while the console is open) is remounted read-only. Finally `/` is remounted read-only.
pub fn unmount_all() {
    let mount_points = match fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => parse_mountinfo(&text),
        Err(err) => {
            log!("cannot list mounts: {err}");
            Vec::new()
        }
    };
    let (mut unmounted, mut read_only) = (0, 0);
    for target in mount_points.iter().rev() {
        if target == Path::new("/") {
            continue;
        }
        match sys::umount(target, 0) {
            Ok(()) => unmounted += 1,
            // What cannot be remounted either is already gone with a parent, or a virtual
            // file system that cannot be made read-only: nothing is at risk.
            Err(_) => {
                if remount_read_only(target).is_ok() {
                    read_only += 1;
                }
            }
        }
    }
    let _ = remount_read_only(Path::new("/"));
    log!("unmounted {unmounted} file systems, {read_only} remounted read-only");
}

fn remount_read_only(target: &Path) -> io::Result<()> {
    sys::mount(None, target, None, libc::MS_REMOUNT | libc::MS_RDONLY, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lists_mount_points_in_order_with_escapes() {
        let text = "\
22 1 0:21 / / rw,relatime shared:1 - tmpfs tmpfs rw
23 22 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw,size=4k
24 23 0:22 / /dev/pts rw - devpts devpts rw,mode=620,ptmxmode=666
30 22 0:30 / /mnt/my\\040disk rw - ext4 /dev/vda1 rw
31 22 0:31 / /weird\\134name rw - tmpfs tmpfs rw
";
        assert_eq!(
            parse_mountinfo(text),
            [
                PathBuf::from("/"),
                PathBuf::from("/dev"),
                PathBuf::from("/dev/pts"),
                PathBuf::from("/mnt/my disk"),
                PathBuf::from("/weird\\name"),
            ]
        );
    }

    #[test]
    fn unescape_leaves_incomplete_escapes_alone() {
        assert_eq!(unescape_mount_path("/a\\04"), PathBuf::from("/a\\04"));
        assert_eq!(unescape_mount_path("/a\\"), PathBuf::from("/a\\"));
        assert_eq!(unescape_mount_path("/a\\999"), PathBuf::from("/a\\999"));
    }

    #[test]
    fn root_and_proc_are_mount_points_but_a_plain_directory_is_not() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        assert!(is_mount_point(Path::new("/proc")).unwrap());
        assert!(!is_mount_point(Path::new("/proc/self")).unwrap_or(false));
        let dir = std::env::temp_dir().join(format!("uvmkit-init-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        assert!(!is_mount_point(&dir).unwrap());
        fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn boot_mounts_put_parents_before_children() {
        for (i, spec) in BOOT_MOUNTS.iter().enumerate() {
            for earlier in &BOOT_MOUNTS[i + 1..] {
                assert!(
                    !Path::new(spec.target).starts_with(earlier.target),
                    "{} is mounted before its parent {}",
                    spec.target,
                    earlier.target
                );
            }
        }
    }
}
