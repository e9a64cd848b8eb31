//! Stage 1 on the boot initramfs: find the read-only system image, check its sha256, mount it
//! (squashfs) under a tmpfs overlay and make that overlay `/`.
//!
//! The image is a file in the initramfs (the EFI pair, the UKI used alone), the GPT partition
//! named `uvmkit-system` (disk artifacts), found through sysfs `PARTNAME`, or a file on the
//! ISO's ISO 9660 medium ([`medium`]: a CD, or the ISO written to a USB disk); a file is
//! attached to a loop device. The hash is the one the builder wrote into the boot initrd's
//! `init.toml`, which the signed UKI covers; a mismatch stops the boot. The overlay is
//! `lowerdir=` the squashfs, `upperdir=`/`workdir=` on a tmpfs: writes land in memory as they
//! did on the old tmpfs root, but only what is written costs memory. The overlay is moved onto
//! `/` over the kernel's rootfs (so `pivot_root(2)`, which runc needs, works), the initramfs's
//! files are deleted (as `switch_root` does) and the caller executes the init again there.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use thiserror::Error;
use uvmkit_init_config::SystemImageSection;

use crate::rootfs::NEW_ROOT;
use crate::{log, sys};

mod medium;

use medium::MEDIUM_MOUNT;

/// Where the squashfs is mounted (on the initramfs, hidden below the new root afterwards).
const LOWER: &str = "/.uvmkit-lower";
/// The tmpfs holding the overlay's `upper` and `work` directories.
const WRITABLE: &str = "/.uvmkit-rw";

/// Why the system image could not become the root. Every one stops the boot.
#[derive(Debug, Error)]
pub enum SystemImageError {
    /// The boot initrd's configuration has no `[system]` table.
    #[error("root = \"system\" but init.toml has no [system] table; the image was built wrongly")]
    NotConfigured,
    /// Neither the file nor the partition or medium turned up.
    #[error(
        "no system image: {file} is not in the initramfs and {waited_for} appeared within \
         {seconds} s (block devices: {devices})"
    )]
    NotFound {
        /// The file looked for.
        file: PathBuf,
        /// What was waited for: "no partition named uvmkit-system", "no ISO 9660 medium
        /// holding ...", with what the media seen held.
        waited_for: String,
        /// How long was waited.
        seconds: u64,
        /// The block devices seen.
        devices: String,
    },
    /// Reading the image failed or it is shorter than recorded.
    #[error("cannot read the system image {device}: {source}")]
    Read {
        /// The file or device.
        device: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The image's bytes are not the ones the builder recorded.
    #[error(
        "system image {device} does not match the boot configuration: sha256 {actual}, expected \
         {expected}; it was changed or damaged after the build. Refusing to boot from it"
    )]
    Mismatch {
        /// The file or device.
        device: PathBuf,
        /// The recorded hash.
        expected: String,
        /// The hash of the bytes read.
        actual: String,
    },
    /// A mount or directory step failed.
    #[error("cannot mount the system image ({step}): {source}")]
    Mount {
        /// What was being done.
        step: &'static str,
        /// The cause.
        source: io::Error,
    },
}

/// What stage 1 did, for the log line.
#[derive(Debug)]
pub struct MountedSystem {
    /// The file or block device holding the image.
    pub device: PathBuf,
    /// The image's size in bytes.
    pub size: u64,
    /// Milliseconds spent hashing.
    pub hash_millis: u128,
    /// Milliseconds spent waiting for the device.
    pub wait_millis: u128,
    /// Initramfs files that could not be deleted.
    pub failures: Vec<String>,
}

/// Finds, verifies and mounts the system image and makes the overlay `/` (chrooted, working
/// directory `/`). The caller then executes the init again from the new root.
pub fn mount_system_root(
    section: Option<&SystemImageSection>,
    upper_size: Option<&str>,
) -> Result<MountedSystem, SystemImageError> {
    let section = section.ok_or(SystemImageError::NotConfigured)?;
    let mount_error = |step| move |source| SystemImageError::Mount { step, source };
    let (device, wait_millis) = locate(section)?;

    // Hash and mount through one open file: the bytes hashed are the bytes mounted when the
    // image is a file in the initramfs (a loop device over that same file).
    let hash_started = Instant::now();
    let read_error = |source| SystemImageError::Read {
        device: device.clone(),
        source,
    };
    let file = File::open(&device).map_err(read_error)?;
    let actual = sha256_prefix(&file, section.size).map_err(read_error)?;
    let hash_millis = hash_started.elapsed().as_millis();
    if !actual.eq_ignore_ascii_case(&section.sha256) {
        return Err(SystemImageError::Mismatch {
            device,
            expected: section.sha256.clone(),
            actual,
        });
    }
    let source = if fs::metadata(&device).map_err(read_error)?.is_file() {
        sys::loop_attach(file.as_fd()).map_err(mount_error("attach a loop device"))?
    } else {
        device.clone()
    };

    for dir in [LOWER, WRITABLE, NEW_ROOT] {
        make_dir(Path::new(dir)).map_err(mount_error("create the mount points"))?;
    }
    let source_text = source.to_string_lossy();
    sys::mount(
        Some(&source_text),
        Path::new(LOWER),
        Some("squashfs"),
        libc::MS_RDONLY,
        None,
    )
    .map_err(mount_error("mount the squashfs"))?;
    let tmpfs_options = match upper_size {
        Some(size) => format!("mode=0755,size={size}"),
        None => "mode=0755".to_string(),
    };
    sys::mount(
        Some("uvmkit-rw"),
        Path::new(WRITABLE),
        Some("tmpfs"),
        0,
        Some(&tmpfs_options),
    )
    .map_err(mount_error("mount the writable tmpfs"))?;
    let upper = Path::new(WRITABLE).join("upper");
    let work = Path::new(WRITABLE).join("work");
    for dir in [&upper, &work] {
        make_dir(dir).map_err(mount_error("create the overlay directories"))?;
    }
    // The merged root takes the upper directory's attributes.
    fs::set_permissions(&upper, fs::Permissions::from_mode(0o755)).map_err(mount_error("set the root's mode"))?;
    let options = format!(
        "lowerdir={LOWER},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    sys::mount(Some("overlay"), Path::new(NEW_ROOT), Some("overlay"), 0, Some(&options))
        .map_err(mount_error("mount the overlay"))?;

    // Free the initramfs: every file on it goes, the mounts stay.
    let root_dev = fs::symlink_metadata("/").map_err(mount_error("stat /"))?.dev();
    let mut failures = Vec::new();
    let skip = [LOWER, WRITABLE, NEW_ROOT, MEDIUM_MOUNT, "/dev"].map(Path::new);
    remove_tree(Path::new("/"), root_dev, &skip, &mut failures);

    let new_dev = Path::new(NEW_ROOT).join("dev");
    make_dir(&new_dev).map_err(mount_error("create /dev in the new root"))?;
    sys::move_mount(Path::new("/dev"), &new_dev).map_err(mount_error("move /dev"))?;
    std::env::set_current_dir(NEW_ROOT).map_err(mount_error("enter the new root"))?;
    sys::move_mount(Path::new("."), Path::new("/")).map_err(mount_error("move the overlay onto /"))?;
    sys::chroot(Path::new(".")).map_err(mount_error("chroot into the overlay"))?;
    std::env::set_current_dir("/").map_err(mount_error("enter /"))?;
    Ok(MountedSystem {
        device,
        size: section.size,
        hash_millis,
        wait_millis,
        failures,
    })
}

/// The image's file in the initramfs, or else its partition or its medium once one appears
/// (bounded wait).
fn locate(section: &SystemImageSection) -> Result<(PathBuf, u128), SystemImageError> {
    if section.file.is_file() {
        return Ok((section.file.clone(), 0));
    }
    let started = Instant::now();
    let _ = make_dir(Path::new("/sys"));
    if !matches!(sys::statfs(Path::new("/sys")), Ok((kind, _)) if kind == SYSFS_MAGIC) {
        let _ = sys::mount(Some("sysfs"), Path::new("/sys"), Some("sysfs"), 0, None);
    }
    let class_block = Path::new("/sys/class/block");
    let deadline = started + Duration::from_secs(section.wait_seconds);
    let mut settled = BTreeMap::new();
    let found = loop {
        if let Some(device) = section.partition.as_ref().and_then(|p| partition_named(class_block, p)) {
            break Some(device);
        }
        if let Some(file) = &section.medium_file {
            if let Some(found) = medium::search(class_block, file, section.size, &mut settled) {
                log!(
                    "system image: {} on {} (ISO 9660, mounted read-only at {MEDIUM_MOUNT})",
                    file.display(),
                    found.describe()
                );
                break Some(found.file);
            }
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let devices = block_devices(class_block);
    let _ = sys::umount(Path::new("/sys"), libc::MNT_DETACH);
    match found {
        Some(device) => Ok((device, started.elapsed().as_millis())),
        None => Err(SystemImageError::NotFound {
            file: section.file.clone(),
            waited_for: waited_for(section, &settled),
            seconds: section.wait_seconds,
            devices: if devices.is_empty() {
                "none".into()
            } else {
                devices.join(" ")
            },
        }),
    }
}

/// "no partition named uvmkit-system", "no ISO 9660 medium holding /f (/dev/sr0: ...)".
fn waited_for(section: &SystemImageSection, settled: &BTreeMap<PathBuf, medium::Settled>) -> String {
    let mut places = Vec::new();
    if let Some(partition) = &section.partition {
        places.push(format!("no partition named {partition}"));
    }
    if let Some(file) = &section.medium_file {
        let seen = medium::describe_settled(settled, file, section.size);
        let seen = if seen.is_empty() {
            String::new()
        } else {
            format!(" ({})", seen.join("; "))
        };
        places.push(format!("no ISO 9660 medium holding {}{seen}", file.display()));
    }
    if places.is_empty() {
        "init.toml names neither a partition nor a medium to wait for, so nothing".into()
    } else {
        places.join(" and ")
    }
}

/// `SYSFS_MAGIC` from `include/uapi/linux/magic.h`.
const SYSFS_MAGIC: i64 = 0x6265_6572;

/// The `/dev` node of the partition whose GPT name (`PARTNAME=` in its `uevent`) is `name`.
fn partition_named(class_block: &Path, name: &str) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(class_block).ok()?.flatten().map(|e| e.path()).collect();
    entries.sort();
    entries.into_iter().find_map(|dir| {
        let uevent = fs::read_to_string(dir.join("uevent")).ok()?;
        let value = |key: &str| uevent.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='));
        if value("PARTNAME")? != name {
            return None;
        }
        Some(Path::new("/dev").join(value("DEVNAME")?))
    })
}

fn block_devices(class_block: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(class_block)
        .map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// The sha256 of the first `size` bytes of `file`, lower-case hex; fails if it is shorter.
fn sha256_prefix(mut file: &File, size: u64) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("it ends {left} bytes before the recorded size {size}"),
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn make_dir(path: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o755).create(path) {
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Deletes everything below `dir` on device `root_dev`, leaving `skip` and other mounts.
fn remove_tree(dir: &Path, root_dev: u64, skip: &[&Path], failures: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if skip.contains(&path.as_path()) {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != root_dev {
            continue;
        }
        let removed = if meta.is_dir() {
            remove_tree(&path, root_dev, skip, failures);
            fs::remove_dir(&path)
        } else {
            fs::remove_file(&path)
        };
        if let Err(err) = removed {
            failures.push(format!("{}: {err}", path.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("uvmkit-system-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_partition_is_found_by_its_gpt_name() {
        let base = scratch("sysfs");
        for (dev, uevent) in [
            ("sda", "MAJOR=8\nMINOR=0\nDEVNAME=sda\nDEVTYPE=disk\n"),
            (
                "sda1",
                "MAJOR=8\nMINOR=1\nDEVNAME=sda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=EFI system partition\n",
            ),
            (
                "sda2",
                "MAJOR=8\nMINOR=2\nDEVNAME=sda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=uvmkit-system\n",
            ),
            (
                "sda3",
                "MAJOR=8\nMINOR=3\nDEVNAME=sda3\nDEVTYPE=partition\nPARTN=3\nPARTNAME=uvmkit-data\n",
            ),
        ] {
            fs::create_dir_all(base.join(dev)).unwrap();
            fs::write(base.join(dev).join("uevent"), uevent).unwrap();
        }
        assert_eq!(
            partition_named(&base, "uvmkit-system"),
            Some(PathBuf::from("/dev/sda2"))
        );
        assert_eq!(partition_named(&base, "uvmkit-system2"), None);
        assert_eq!(block_devices(&base), ["sda", "sda1", "sda2", "sda3"]);
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn the_hash_covers_exactly_the_recorded_size() {
        let base = scratch("hash");
        let file = base.join("image");
        let mut bytes = b"abc".to_vec();
        bytes.extend_from_slice(&[0u8; 100]);
        fs::write(&file, &bytes).unwrap();
        let f = File::open(&file).unwrap();
        // sha256("abc"), the FIPS 180-2 example: the padding after the image is not hashed.
        assert_eq!(
            sha256_prefix(&f, 3).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let err = sha256_prefix(&File::open(&file).unwrap(), 200).unwrap_err();
        assert!(
            err.to_string().contains("97 bytes before the recorded size 200"),
            "{err}"
        );
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn not_found_names_what_was_waited_for_and_what_the_media_held() {
        let mut section = SystemImageSection {
            sha256: "ab".repeat(32),
            size: 4096,
            file: "/uvmkit-system.squashfs".into(),
            partition: None,
            medium_file: Some("/uvmkit/system.squashfs".into()),
            wait_seconds: 60,
        };
        let settled = BTreeMap::from([(PathBuf::from("/dev/sr0"), medium::Settled::OtherSize(8192))]);
        let err = SystemImageError::NotFound {
            file: section.file.clone(),
            waited_for: waited_for(&section, &settled),
            seconds: 60,
            devices: "sda sr0".into(),
        };
        assert_eq!(
            err.to_string(),
            "no system image: /uvmkit-system.squashfs is not in the initramfs and no ISO 9660 \
             medium holding /uvmkit/system.squashfs (/dev/sr0: /uvmkit/system.squashfs is 8192 \
             bytes, not 4096: another build's medium) appeared within 60 s (block devices: sda sr0)"
        );
        section.partition = Some("uvmkit-system".into());
        section.medium_file = None;
        assert_eq!(
            waited_for(&section, &BTreeMap::new()),
            "no partition named uvmkit-system"
        );
    }

    #[test]
    fn a_mismatch_names_both_hashes_and_refuses() {
        let err = SystemImageError::Mismatch {
            device: "/dev/sda2".into(),
            expected: "aa".into(),
            actual: "bb".into(),
        };
        assert_eq!(
            err.to_string(),
            "system image /dev/sda2 does not match the boot configuration: sha256 bb, expected aa; \
             it was changed or damaged after the build. Refusing to boot from it"
        );
    }
}
