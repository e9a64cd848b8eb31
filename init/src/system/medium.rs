//! The system image as a file on an ISO 9660 medium: the ISO in a CD drive (`/dev/sr*`), or the
//! same hybrid ISO written to a USB stick (a whole disk holding ISO 9660).
//!
//! Each block device that can hold one is probed by its primary volume descriptor (ECMA-119
//! 8.4, read with [`crate::instance::volume_label`]) before anything is mounted; an ISO 9660
//! one is mounted read-only at [`MEDIUM_MOUNT`] and kept mounted when it holds the file, since
//! the squashfs is then read from it through a loop device for as long as the VM runs.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::instance::{volume_label, FsType, LABEL_PROBE_BYTES};
use crate::sys;

/// Where the medium holding the image is mounted (on the initramfs; hidden below the new root
/// afterwards, and never unmounted).
pub const MEDIUM_MOUNT: &str = "/.uvmkit-medium";

/// A medium found holding the image's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundMedium {
    /// The block device (`/dev/sr0`, `/dev/sda`).
    pub device: PathBuf,
    /// The image's path below [`MEDIUM_MOUNT`].
    pub file: PathBuf,
}

impl FoundMedium {
    /// "the CD /dev/sr0" or "the disk /dev/sda", for the log.
    pub fn describe(&self) -> String {
        describe_device(&self.device)
    }
}

/// What a look at one device showed, when it need not be looked at again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// It holds no ISO 9660 file system.
    NotIso9660,
    /// It is ISO 9660 but has no such file.
    NoFile,
    /// The file is there but not of the recorded size: another build's medium.
    OtherSize(u64),
}

/// Searches the devices that may hold the medium, remembering in `settled` the ones that
/// cannot (so each is mounted at most once); a CD drive without a disc is tried again on the
/// next call. Returns the first that holds `file` of `size` bytes, left mounted.
pub fn search(
    class_block: &Path,
    file: &Path,
    size: u64,
    settled: &mut BTreeMap<PathBuf, Settled>,
) -> Option<FoundMedium> {
    for device in candidates(class_block) {
        if settled.contains_key(&device) {
            continue;
        }
        match probe(&device, file, size) {
            Ok(Ok(found)) => return Some(found),
            Ok(Err(outcome)) => {
                settled.insert(device, outcome);
            }
            // No disc yet, or the drive is still spinning up: look again later.
            Err(_) => {}
        }
    }
    None
}

/// What `settled` holds, for the error when nothing was found: "/dev/sr0: no such file".
pub fn describe_settled(settled: &BTreeMap<PathBuf, Settled>, file: &Path, size: u64) -> Vec<String> {
    settled
        .iter()
        .filter_map(|(device, outcome)| {
            let what = match outcome {
                Settled::NotIso9660 => return None,
                Settled::NoFile => format!("ISO 9660 without {}", file.display()),
                Settled::OtherSize(other) => format!(
                    "{} is {other} bytes, not {size}: another build's medium",
                    file.display()
                ),
            };
            Some(format!("{}: {what}", device.display()))
        })
        .collect()
}

/// The devices to probe, CD drives first: `sr*`, then whole disks (entries without a
/// `partition` attribute), leaving out loop, RAM and zram devices.
pub fn candidates(class_block: &Path) -> Vec<PathBuf> {
    let mut names: Vec<String> = fs::read_dir(class_block)
        .map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    let virtual_device = |n: &str| ["loop", "ram", "zram"].iter().any(|p| n.starts_with(p));
    names.retain(|n| !virtual_device(n) && !class_block.join(n).join("partition").exists());
    names.sort_by_key(|n| (!n.starts_with("sr"), n.clone()));
    names.into_iter().map(|n| Path::new("/dev").join(n)).collect()
}

/// Whether `device` starts with an ISO 9660 volume; an error when it cannot be read (a CD
/// drive without a disc fails to open with `ENOMEDIUM`).
pub fn is_iso9660(device: &Path) -> io::Result<bool> {
    let mut head = vec![0u8; LABEL_PROBE_BYTES];
    let read = File::open(device)?.read_at(&mut head, 0)?;
    head.truncate(read);
    Ok(matches!(volume_label(&head), Some((FsType::Iso9660, _))))
}

/// Probes one device: `Ok(Ok(_))` when it holds `file` of `size` bytes (and stays mounted),
/// `Ok(Err(_))` when it never will, `Err` when it could not be read yet.
fn probe(device: &Path, file: &Path, size: u64) -> io::Result<Result<FoundMedium, Settled>> {
    if !is_iso9660(device)? {
        return Ok(Err(Settled::NotIso9660));
    }
    let mount_point = Path::new(MEDIUM_MOUNT);
    match fs::DirBuilder::new().create(mount_point) {
        Err(err) if err.kind() != io::ErrorKind::AlreadyExists => return Err(err),
        _ => {}
    }
    sys::mount(
        Some(&device.to_string_lossy()),
        mount_point,
        Some(FsType::Iso9660.kernel_name()),
        libc::MS_RDONLY,
        None,
    )?;
    let path = mount_point.join(file.strip_prefix("/").unwrap_or(file));
    let outcome = match fs::metadata(&path) {
        Ok(meta) if meta.is_file() && meta.len() == size => {
            return Ok(Ok(FoundMedium {
                device: device.to_path_buf(),
                file: path,
            }))
        }
        Ok(meta) if meta.is_file() => Settled::OtherSize(meta.len()),
        _ => Settled::NoFile,
    };
    sys::umount(mount_point, 0)?;
    Ok(Err(outcome))
}

fn describe_device(device: &Path) -> String {
    let name = device.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let kind = if name.starts_with("sr") { "CD" } else { "disk" };
    format!("the {kind} {}", device.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("uvmkit-medium-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn cd_drives_come_first_then_whole_disks_never_partitions_or_loops() {
        let base = scratch("sysfs");
        for dev in ["loop0", "sda", "sda1", "sr1", "sr0", "vda", "zram0", "ram0"] {
            fs::create_dir_all(base.join(dev)).unwrap();
        }
        fs::write(base.join("sda1").join("partition"), "1\n").unwrap();
        assert_eq!(
            candidates(&base),
            ["/dev/sr0", "/dev/sr1", "/dev/sda", "/dev/vda"].map(PathBuf::from)
        );
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn only_an_iso9660_volume_descriptor_counts_as_a_medium() {
        let base = scratch("probe");
        let mut iso = vec![0u8; LABEL_PROBE_BYTES];
        // ECMA-119 8.4: type 1, "CD001", version 1, the volume identifier at byte 40.
        iso[16 * 2048..16 * 2048 + 7].copy_from_slice(b"\x01CD001\x01");
        iso[16 * 2048 + 40..16 * 2048 + 47].copy_from_slice(b"MINIMAL");
        fs::write(base.join("iso"), &iso).unwrap();
        fs::write(base.join("ext4"), vec![0u8; LABEL_PROBE_BYTES]).unwrap();
        assert!(is_iso9660(&base.join("iso")).unwrap());
        assert!(!is_iso9660(&base.join("ext4")).unwrap());
        // A drive without a disc (here: no device at all) is an error, to be tried again.
        assert!(is_iso9660(&base.join("sr9")).is_err());
        // A device that is not ISO 9660 is settled without mounting anything.
        let found = probe(&base.join("ext4"), Path::new("/uvmkit/system.squashfs"), 1).unwrap();
        assert_eq!(found, Err(Settled::NotIso9660));
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn the_log_and_the_error_say_which_medium_was_seen() {
        let found = FoundMedium {
            device: "/dev/sr0".into(),
            file: "/.uvmkit-medium/uvmkit/system.squashfs".into(),
        };
        assert_eq!(found.describe(), "the CD /dev/sr0");
        assert_eq!(describe_device(Path::new("/dev/sda")), "the disk /dev/sda");
        let settled = BTreeMap::from([
            (PathBuf::from("/dev/sda"), Settled::NotIso9660),
            (PathBuf::from("/dev/sr0"), Settled::OtherSize(10)),
            (PathBuf::from("/dev/sr1"), Settled::NoFile),
        ]);
        let file = Path::new("/uvmkit/system.squashfs");
        assert_eq!(
            describe_settled(&settled, file, 4096),
            [
                "/dev/sr0: /uvmkit/system.squashfs is 10 bytes, not 4096: another build's medium",
                "/dev/sr1: ISO 9660 without /uvmkit/system.squashfs",
            ]
        );
    }
}
