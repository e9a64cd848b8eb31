//! Finding the persistent data partition: the partition whose ext4 label, or whose GPT
//! partition name, is `uvmkit-data` (uvmkit's disk images carry one).
//!
//! Disks behind SCSI, SATA and NVMe controllers may appear after their driver loads, so the
//! search polls `/sys/class/block` until the partition appears or storage enumeration settles
//! ([`crate::storage`]), within a bound, before it decides there is none.
//!
//! With `[data_disk]` in the configuration the partition is mounted at [`DATA_MOUNT_POINT`] and the
//! configured directories (`/var/lib/docker`, ...) are bind-mounted from it. When no data
//! partition exists and `format_blank` is set, a whole disk that is entirely blank (zeros in
//! its first and last MiB, where partition tables and file system signatures live) gets a GPT
//! with one partition named `uvmkit-data`, formatted as ext4 labelled `uvmkit-data`. A disk
//! holding anything is never written. The file system is written and flushed before the table
//! that names the partition, so a power loss in between leaves a disk that still reads blank;
//! and a `uvmkit-data` partition that reads as zeros at both ends (left by a first boot cut
//! short) is formatted, while one holding anything else is never written. Without any disk,
//! state lives in a tmpfs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use thiserror::Error;
use uvmkit_disk::gpt::{self, GptError, GptPartition};
use uvmkit_disk::Guid;
use uvmkit_ext4::{build_ext4, Ext4Error, Ext4Options, FileTree};
use uvmkit_init_config::{DATA_LABEL, DATA_MOUNT_POINT};

use crate::log;
use crate::storage::{self, SettleWatch, Verdict, QUIET_PERIOD, SETTLE_LIMIT};
use crate::sys;

/// How much of each end of a disk must read as zeros for it to count as blank.
pub const BLANK_CHECK_BYTES: u64 = 1 << 20;

/// Disks smaller than this are never formatted (they cannot usefully hold container state).
pub const MIN_DISK_BYTES: u64 = 64 << 20;

/// The data partition starts here (the customary 1 MiB alignment).
const PARTITION_ALIGN: u64 = 1 << 20;

/// `BLKRRPART` from `include/uapi/linux/fs.h`: re-read the partition table.
const BLKRRPART: libc::c_ulong = 0x125F;

/// Why a blank disk could not be made into the data disk; the disk's name is added by the
/// log line that reports it.
#[derive(Debug, Error)]
pub enum DataDiskError {
    /// The disk cannot hold a partition between the GPT's structures.
    #[error("{disk_bytes} bytes is too small for a data partition")]
    TooSmall {
        /// The disk's size.
        disk_bytes: u64,
    },
    /// The GPT could not be laid out for this disk.
    #[error("cannot lay out the partition table: {0}")]
    Gpt(#[from] GptError),
    /// Writing the protective MBR or a GPT failed.
    #[error("cannot write the partition table: {0}")]
    WritePartitionTable(#[source] io::Error),
    /// The empty ext4 file system could not be built.
    #[error("cannot build the file system: {0}")]
    Ext4(#[from] Ext4Error),
    /// Writing the file system's metadata failed.
    #[error("cannot write the file system: {0}")]
    WriteFileSystem(#[source] io::Error),
    /// The device could not be opened exclusively: something uses it.
    #[error("cannot open {} exclusively: {source}; left alone", .device.display())]
    Open {
        /// The device node.
        device: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The device's size could not be read.
    #[error("cannot size {}: {source}", .device.display())]
    Size {
        /// The device node.
        device: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The device's first or last MiB could not be read to check that it is blank.
    #[error("cannot read {}: {source}; left alone", .device.display())]
    Read {
        /// The device node.
        device: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// No random bytes for the GUIDs and the ext4 UUID and hash seed.
    #[error("cannot read /dev/urandom: {0}")]
    Random(#[source] io::Error),
    /// The written tables and file system could not be flushed to the device.
    #[error("cannot flush {}: {source}", .device.display())]
    Flush {
        /// The device node.
        device: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// `BLKRRPART` failed, so the kernel does not know the new partition yet.
    #[error("the kernel did not re-read the new partition table of {}: {source}", .device.display())]
    Reread {
        /// The device node.
        device: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// A partition found by [`find`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPartition {
    /// Its device node (`/dev/vda2`).
    pub device: PathBuf,
    /// How it was recognised: `ext4 label` or `GPT name`.
    pub matched_by: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// The drivers from the disk to its controller (`sd, mptsas (PCI 0000:00:04.0)`), when
    /// sysfs shows them.
    pub controller: Option<String>,
}

/// The volume name of an ext2/3/4 superblock, given the first 2048 bytes of a device
/// (superblock at byte 1024; `s_magic` 0xEF53 at 0x38, `s_volume_name[16]` at 0x78).
pub fn ext4_label(head: &[u8]) -> Option<String> {
    let sb = head.get(1024..1024 + 0x88)?;
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return None;
    }
    let name = &sb[0x78..0x88];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// What a partition named [`DATA_LABEL`] holds, judged from its first and last
/// [`BLANK_CHECK_BYTES`] (where every file system, volume manager and swap signature lives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionContents {
    /// An ext2/3/4 superblock: mount it.
    Ext4,
    /// Zeros at both ends: the partition was made but its file system never written (a power
    /// loss on first boot by an init that wrote the table first); format it.
    Blank,
    /// Something else: never written.
    Other,
}

/// Classifies a partition from its `head` and `tail` bytes.
pub fn partition_contents(head: &[u8], tail: &[u8]) -> PartitionContents {
    if ext4_label(head).is_some() {
        PartitionContents::Ext4
    } else if head.iter().chain(tail).all(|&b| b == 0) {
        PartitionContents::Blank
    } else {
        PartitionContents::Other
    }
}

/// `PARTNAME=` from a block device's `uevent` text.
pub fn gpt_name(uevent: &str) -> Option<&str> {
    uevent.lines().find_map(|l| l.strip_prefix("PARTNAME="))
}

fn probe(name: &str) -> Option<DataPartition> {
    let sys = PathBuf::from("/sys/class/block").join(name);
    let sectors: u64 = std::fs::read_to_string(sys.join("size")).ok()?.trim().parse().ok()?;
    let device = PathBuf::from("/dev").join(name);
    let mut head = vec![0u8; 2048];
    let label = File::open(&device)
        .ok()
        .and_then(|f| f.read_exact_at(&mut head, 0).ok())
        .and_then(|_| ext4_label(&head));
    let matched_by = if label.as_deref() == Some(DATA_LABEL) {
        "ext4 label"
    } else {
        let mut uevent = String::new();
        File::open(sys.join("uevent")).ok()?.read_to_string(&mut uevent).ok()?;
        if gpt_name(&uevent) != Some(DATA_LABEL) {
            return None;
        }
        "GPT name"
    };
    Some(DataPartition {
        device,
        matched_by,
        size: sectors * 512,
        controller: storage::controller(Path::new("/sys"), name),
    })
}

/// Looks for the data partition, polling for up to `wait` while devices appear.
pub fn find(wait: Duration) -> Option<DataPartition> {
    let deadline = Instant::now() + wait;
    loop {
        let mut names: Vec<String> = std::fs::read_dir("/sys/class/block")
            .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        names.sort();
        // Loop, RAM and optical devices never hold the data partition.
        names.retain(|n| !(n.starts_with("loop") || n.starts_with("ram") || n.starts_with("sr")));
        if let Some(found) = names.iter().find_map(|n| probe(n)) {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Looks for the data partition until it appears or storage enumeration settles, at most
/// [`SETTLE_LIMIT`]; logs how the wait ended when the partition did not turn up.
pub fn find_after_settle() -> Option<DataPartition> {
    let started = Instant::now();
    let mut watch = SettleWatch::new(started, QUIET_PERIOD, SETTLE_LIMIT);
    loop {
        if let Some(found) = find(Duration::ZERO) {
            return Some(found);
        }
        let seen = storage::snapshot(Path::new("/sys"));
        let disks = seen.block.join(" ");
        match watch.observe(Instant::now(), seen) {
            Verdict::Waiting => std::thread::sleep(Duration::from_millis(100)),
            Verdict::Settled => {
                log!(
                    "storage settled after {} ms; block devices: {}",
                    started.elapsed().as_millis(),
                    if disks.is_empty() { "none" } else { &disks }
                );
                return None;
            }
            Verdict::TimedOut(probing) => {
                log!(
                    "storage still changing after {} s ({}); block devices: {}; going on",
                    SETTLE_LIMIT.as_secs(),
                    if probing.is_empty() {
                        "devices kept appearing".to_string()
                    } else {
                        probing.join(", ")
                    },
                    if disks.is_empty() { "none" } else { &disks }
                );
                return None;
            }
        }
    }
}

/// Whether `dev` (of `size` bytes) reads as zeros in its first and last [`BLANK_CHECK_BYTES`].
pub fn is_blank(dev: &File, size: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; BLANK_CHECK_BYTES.min(size) as usize];
    for offset in [0, size - buf.len() as u64] {
        dev.read_exact_at(&mut buf, offset)?;
        if buf.iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The data partition's byte range on a disk of `disk_bytes`: from 1 MiB to the last whole MiB
/// before the backup GPT.
pub fn partition_range(disk_bytes: u64) -> (u64, u64) {
    let end = (gpt::last_usable_lba(disk_bytes) + 1) * 512 / PARTITION_ALIGN * PARTITION_ALIGN;
    (PARTITION_ALIGN, end)
}

/// Writes a protective MBR and a GPT holding one Linux partition named [`DATA_LABEL`] over
/// [`partition_range`]; returns that range.
pub fn write_partition_table(
    disk: &File,
    disk_bytes: u64,
    disk_guid: Guid,
    partition_guid: Guid,
) -> Result<(u64, u64), DataDiskError> {
    let (start, end) = partition_range(disk_bytes);
    if end <= start {
        return Err(DataDiskError::TooSmall { disk_bytes });
    }
    let partition = GptPartition {
        type_guid: Guid::LINUX_FILESYSTEM,
        unique_guid: partition_guid,
        first_lba: start / 512,
        last_lba: end / 512 - 1,
        attributes: 0,
        name: DATA_LABEL.to_string(),
    };
    let tables = gpt::build_gpt(disk_bytes, disk_guid, &[partition])?;
    let write = |bytes: &[u8], offset: u64| {
        disk.write_all_at(bytes, offset)
            .map_err(DataDiskError::WritePartitionTable)
    };
    write(&gpt::protective_mbr(disk_bytes), 0)?;
    write(&tables.primary, 512)?;
    write(&tables.backup, tables.backup_offset)?;
    Ok((start, end))
}

/// A `Write + Seek` view of `len` bytes of a file starting at `base`.
pub struct Window<'a> {
    file: &'a File,
    base: u64,
    len: u64,
    pos: u64,
}

impl<'a> Window<'a> {
    /// The view of `file` from `base` for `len` bytes.
    pub fn new(file: &'a File, base: u64, len: u64) -> Self {
        Window {
            file,
            base,
            len,
            pos: 0,
        }
    }
}

impl Write for Window<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.len.saturating_sub(self.pos);
        if room < buf.len() as u64 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        self.file.write_all_at(buf, self.base + self.pos)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl Seek for Window<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

/// Formats `len` bytes of `dev` from `offset` as an empty ext4 labelled [`DATA_LABEL`],
/// writing metadata only (the rest of the device keeps its zeros).
pub fn format_ext4(
    dev: &File,
    offset: u64,
    len: u64,
    uuid: [u8; 16],
    hash_seed: [u8; 16],
    mtime: u32,
) -> Result<(), DataDiskError> {
    let image = build_ext4(
        &FileTree::new(),
        &Ext4Options {
            size_bytes: len / 4096 * 4096,
            label: DATA_LABEL.to_string(),
            uuid,
            hash_seed,
            mtime,
            // A disk that was checked blank only at its ends may hold old data in between.
            assume_zeroed: false,
            ..Ext4Options::default()
        },
    )?;
    image
        .write_extents(&mut Window::new(dev, offset, len))
        .map_err(DataDiskError::WriteFileSystem)
}

/// A random (version 4) GUID from `bytes`, given in text order.
fn random_guid(mut bytes: [u8; 16]) -> Guid {
    bytes[6] = (bytes[6] & 0x0F) | 0x40;
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
    Guid::from_text_order(bytes)
}

fn random_bytes() -> io::Result<[u8; 64]> {
    let mut bytes = [0u8; 64];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Why a whole disk is not a candidate for formatting, or `None` when it is one.
fn unusable_reason(name: &str) -> Option<String> {
    let sys = Path::new("/sys/class/block").join(name);
    if sys.join("partition").exists() {
        return Some(String::new());
    }
    if fs::read_to_string(sys.join("ro"))
        .map(|t| t.trim() != "0")
        .unwrap_or(true)
    {
        return Some("it is read-only".into());
    }
    let sectors: u64 = fs::read_to_string(sys.join("size")).ok()?.trim().parse().unwrap_or(0);
    if sectors * 512 < MIN_DISK_BYTES {
        return Some(format!("it is smaller than {} MiB", MIN_DISK_BYTES >> 20));
    }
    let has_partitions = fs::read_dir(&sys)
        .map(|d| d.flatten().any(|e| e.path().join("partition").exists()))
        .unwrap_or(true);
    if has_partitions {
        return Some("it has partitions".into());
    }
    None
}

/// Finds the first whole disk that is entirely blank, partitions and formats it, and returns
/// the new data partition. Disks that hold anything are skipped, each with a log line.
pub fn prepare_blank_disk() -> Option<DataPartition> {
    let mut names: Vec<String> = fs::read_dir("/sys/class/block")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.sort();
    names.retain(|n| {
        !["loop", "ram", "sr", "zram", "dm-", "md", "nbd"]
            .iter()
            .any(|p| n.starts_with(p))
    });
    for name in names {
        match unusable_reason(&name) {
            Some(reason) if reason.is_empty() => continue,
            Some(reason) => {
                log!("disk {name}: not formatted as {DATA_LABEL}: {reason}");
                continue;
            }
            None => {}
        }
        match format_disk(&name) {
            Ok(Some(found)) => return Some(found),
            Ok(None) => {}
            Err(err) => log!("disk {name}: {err}"),
        }
    }
    None
}

/// Partitions and formats `/dev/NAME` if it is blank; `Ok(None)` (logged) when it is not.
fn format_disk(name: &str) -> Result<Option<DataPartition>, DataDiskError> {
    let started = Instant::now();
    let device = Path::new("/dev").join(name);
    // O_EXCL on a block device fails while anything has it mounted or claimed.
    let disk = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(&device)
        .map_err(|source| DataDiskError::Open {
            device: device.clone(),
            source,
        })?;
    let size = disk.seek_end().map_err(|source| DataDiskError::Size {
        device: device.clone(),
        source,
    })?;
    let blank = is_blank(&disk, size).map_err(|source| DataDiskError::Read {
        device: device.clone(),
        source,
    })?;
    if !blank {
        log!("disk {name}: not formatted as {DATA_LABEL}: it holds data in its first or last MiB; left alone");
        return Ok(None);
    }
    let random = random_bytes().map_err(DataDiskError::Random)?;
    let part = |i: usize| <[u8; 16]>::try_from(&random[i * 16..i * 16 + 16]).unwrap_or_default();
    let (start, end) = partition_range(size);
    if end <= start {
        return Err(DataDiskError::TooSmall { disk_bytes: size });
    }
    let flush = |disk: &File| {
        disk.sync_all().map_err(|source| DataDiskError::Flush {
            device: device.clone(),
            source,
        })
    };
    // The file system first, flushed, and only then the table that names the partition: a power
    // loss in between leaves a disk whose first and last MiB are still zeros (the file system
    // starts at 1 MiB), which the next boot formats again from the start.
    format_ext4(
        &disk,
        start,
        end - start,
        random_guid(part(2)).to_text_order(),
        part(3),
        unix_now(),
    )?;
    flush(&disk)?;
    write_partition_table(&disk, size, random_guid(part(0)), random_guid(part(1)))?;
    flush(&disk)?;
    // SAFETY: BLKRRPART takes no argument; the descriptor is open.
    if unsafe { libc::ioctl(disk.as_raw_fd(), BLKRRPART as _, 0) } != 0 {
        return Err(DataDiskError::Reread {
            device,
            source: io::Error::last_os_error(),
        });
    }
    drop(disk);
    log!(
        "disk {name}: blank; wrote a GPT and an ext4 {DATA_LABEL} partition of {} MiB in {} ms (controller: {})",
        (end - start) >> 20,
        started.elapsed().as_millis(),
        storage::controller(Path::new("/sys"), name).unwrap_or_else(|| "unknown".into())
    );
    Ok(find(Duration::from_secs(5)))
}

/// Seconds since 1970 as ext4 stores them, 0 if the clock is before that.
fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// Makes sure a partition found by its GPT name holds a file system: one that reads as zeros at
/// both ends is formatted (ext4, [`DATA_LABEL`]) when `format_blank` allows it, and one that
/// holds anything else is never written. Gives the partition to mount, if any.
pub fn ensure_file_system(partition: DataPartition, format_blank: bool) -> Option<DataPartition> {
    if partition.matched_by != "GPT name" {
        return Some(partition);
    }
    let device = partition.device.display().to_string();
    match format_if_blank(&partition, format_blank) {
        Ok(PartitionContents::Ext4) => Some(partition),
        Ok(PartitionContents::Blank) if format_blank => Some(partition),
        Ok(PartitionContents::Blank) => {
            log!("data partition {device} has no file system; set [data_disk] format_blank = true to format it");
            None
        }
        Ok(PartitionContents::Other) => {
            log!("data partition {device} holds something that is not ext4; left alone");
            Some(partition)
        }
        Err(err) => {
            log!("data partition {device}: {err}");
            None
        }
    }
}

/// Classifies `partition` and, if it is blank and `format_blank` is set, formats it.
fn format_if_blank(partition: &DataPartition, format_blank: bool) -> Result<PartitionContents, DataDiskError> {
    let started = Instant::now();
    let device = &partition.device;
    let dev = OpenOptions::new()
        .read(true)
        .write(format_blank)
        .custom_flags(libc::O_EXCL)
        .open(device)
        .map_err(|source| DataDiskError::Open {
            device: device.clone(),
            source,
        })?;
    let size = dev.seek_end().map_err(|source| DataDiskError::Size {
        device: device.clone(),
        source,
    })?;
    let read = |offset: u64, len: u64| {
        let mut buf = vec![0u8; len as usize];
        dev.read_exact_at(&mut buf, offset)
            .map(|()| buf)
            .map_err(|source| DataDiskError::Read {
                device: device.clone(),
                source,
            })
    };
    let len = BLANK_CHECK_BYTES.min(size);
    let contents = partition_contents(&read(0, len)?, &read(size - len, len)?);
    if contents != PartitionContents::Blank || !format_blank {
        return Ok(contents);
    }
    let random = random_bytes().map_err(DataDiskError::Random)?;
    let part = |i: usize| <[u8; 16]>::try_from(&random[i * 16..i * 16 + 16]).unwrap_or_default();
    format_ext4(&dev, 0, size, random_guid(part(0)).to_text_order(), part(1), unix_now())?;
    dev.sync_all().map_err(|source| DataDiskError::Flush {
        device: device.clone(),
        source,
    })?;
    log!(
        "data partition {}: named {DATA_LABEL} but blank (a first boot cut short); formatted it as ext4 ({} MiB) in {} ms",
        device.display(),
        size >> 20,
        started.elapsed().as_millis()
    );
    Ok(contents)
}

trait SeekEnd {
    fn seek_end(&self) -> io::Result<u64>;
}

impl SeekEnd for File {
    fn seek_end(&self) -> io::Result<u64> {
        (&mut &*self).seek(SeekFrom::End(0))
    }
}

/// ext4's options for the data partition.
///
/// `discard` (Documentation/admin-guide/ext4.rst): ext4 sends a discard for every extent it
/// frees once the journal transaction freeing it commits (every 5 s at most), and the
/// hypervisor's disk format deallocates it (qcow2 with `discard=unmap`, VHDX and VMDK through
/// UNMAP/TRIM), so the disk file shrinks soon after containers and images are removed. It is
/// chosen over a periodic `FITRIM` from the init because it needs no timer or thread in PID 1,
/// returns space within seconds rather than at the next run, and only touches what was freed;
/// its known cost, slow synchronous TRIM on some physical SSDs, does not apply to a virtual
/// disk, where a discard is a metadata update in the host's image file.
pub const DATA_MOUNT_OPTIONS: &str = "discard";

/// `queue/discard_max_bytes` of the disk holding `device` under the sysfs tree `sys`: how much
/// one discard may cover, 0 when the disk does not accept discards; `None` when unknown.
pub fn discard_max_bytes(sys: &Path, device: &Path) -> Option<u64> {
    let name = device.file_name()?;
    // A partition's directory sits inside its disk's: /sys/class/block/vda2 -> .../vda/vda2.
    let dir = fs::canonicalize(sys.join("class/block").join(name)).ok()?;
    [dir.join("queue"), dir.parent()?.join("queue")]
        .iter()
        .find_map(|queue| fs::read_to_string(queue.join("discard_max_bytes")).ok())
        .and_then(|text| text.trim().parse().ok())
}

/// What the log says about discard on the data disk.
pub fn discard_note(max_bytes: &Option<u64>) -> String {
    match max_bytes {
        Some(0) => "online discard on, but the disk does not accept discards: freed blocks stay allocated \
                    on the host (QEMU: discard=unmap)"
            .to_string(),
        Some(_) => "online discard on: freed blocks are returned to the host".to_string(),
        None => "online discard on".to_string(),
    }
}

/// Mounts the data partition at [`DATA_MOUNT_POINT`] (a tmpfs when there is none or it cannot be
/// mounted) and bind-mounts each of `binds` from the directory named by its last component.
pub fn mount_state(partition: Option<&DataPartition>, binds: &[PathBuf]) {
    let target = Path::new(DATA_MOUNT_POINT);
    if let Err(err) = fs::DirBuilder::new().recursive(true).mode(0o755).create(target) {
        log!("cannot create {DATA_MOUNT_POINT}: {err}");
        return;
    }
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOATIME;
    let on_disk = partition.and_then(|p| {
        let device = p.device.to_str()?;
        match sys::mount(Some(device), target, Some("ext4"), flags, Some(DATA_MOUNT_OPTIONS)) {
            Ok(()) => {
                log!(
                    "data partition {device} mounted on {DATA_MOUNT_POINT} (controller: {}); {}",
                    p.controller.as_deref().unwrap_or("unknown"),
                    discard_note(&discard_max_bytes(Path::new("/sys"), &p.device))
                );
                Some(())
            }
            Err(err) => {
                log!("cannot mount {device} (ext4) on {DATA_MOUNT_POINT}: {err}; is the ext4 module in the image?");
                None
            }
        }
    });
    if on_disk.is_none() {
        match sys::mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some("mode=0755")) {
            Ok(()) => log!("no data disk: {DATA_MOUNT_POINT} is a tmpfs; state is lost at power off"),
            Err(err) => log!("cannot mount a tmpfs on {DATA_MOUNT_POINT}: {err}"),
        }
    }
    for bind in binds {
        let Some(name) = bind.file_name() else { continue };
        let source = target.join(name);
        let made = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&source)
            .and_then(|_| fs::DirBuilder::new().recursive(true).mode(0o711).create(bind));
        let result = made.and_then(|_| sys::mount(source.to_str(), bind, None, libc::MS_BIND, None));
        if let Err(err) = result {
            log!("cannot bind-mount {} on {}: {err}", source.display(), bind.display());
        }
    }
    if !binds.is_empty() {
        let list: Vec<String> = binds.iter().map(|b| b.display().to_string()).collect();
        log!("state directories on the data disk: {}", list.join(" "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ext4_label() {
        let mut head = vec![0u8; 2048];
        head[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        head[1024 + 0x78..1024 + 0x78 + 11].copy_from_slice(b"uvmkit-data");
        assert_eq!(ext4_label(&head).as_deref(), Some("uvmkit-data"));
        head[1024 + 0x38] = 0;
        assert_eq!(ext4_label(&head), None);
        assert_eq!(ext4_label(&head[..100]), None);
    }

    #[test]
    fn only_a_blank_named_partition_is_formatted() {
        let zeros = vec![0u8; 4096];
        let mut ext4 = zeros.clone();
        ext4[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        assert_eq!(partition_contents(&ext4, &zeros), PartitionContents::Ext4);
        assert_eq!(partition_contents(&zeros, &zeros), PartitionContents::Blank);
        // XFS ("XFSB" at 0), swap ("SWAPSPACE2" at 4086), a ZFS label at the end, or any stray
        // byte: something is there, so it is never formatted.
        let mut xfs = zeros.clone();
        xfs[..4].copy_from_slice(b"XFSB");
        assert_eq!(partition_contents(&xfs, &zeros), PartitionContents::Other);
        let mut swap = zeros.clone();
        swap[4086..].copy_from_slice(b"SWAPSPACE2");
        assert_eq!(partition_contents(&swap, &zeros), PartitionContents::Other);
        let mut tail = zeros.clone();
        tail[4000] = 1;
        assert_eq!(partition_contents(&zeros, &tail), PartitionContents::Other);
    }

    #[test]
    fn discard_support_is_read_from_the_partitions_disk() {
        let sys = std::env::temp_dir().join(format!("uvmkit-init-discard-{}", std::process::id()));
        let _ = fs::remove_dir_all(&sys);
        let disk = sys.join("devices/virtio4/block/vdb");
        fs::create_dir_all(disk.join("vdb1")).unwrap();
        fs::create_dir_all(disk.join("queue")).unwrap();
        fs::write(disk.join("queue/discard_max_bytes"), "2147483136\n").unwrap();
        fs::create_dir_all(sys.join("class/block")).unwrap();
        std::os::unix::fs::symlink(disk.join("vdb1"), sys.join("class/block/vdb1")).unwrap();
        std::os::unix::fs::symlink(&disk, sys.join("class/block/vdb")).unwrap();
        assert_eq!(discard_max_bytes(&sys, Path::new("/dev/vdb1")), Some(2147483136));
        assert_eq!(discard_max_bytes(&sys, Path::new("/dev/vdb")), Some(2147483136));
        assert_eq!(discard_max_bytes(&sys, Path::new("/dev/vdc1")), None);
        fs::write(disk.join("queue/discard_max_bytes"), "0\n").unwrap();
        let note = discard_note(&discard_max_bytes(&sys, Path::new("/dev/vdb1")));
        assert!(note.contains("does not accept discards"), "{note}");
        assert_eq!(
            discard_note(&Some(1)),
            "online discard on: freed blocks are returned to the host"
        );
        fs::remove_dir_all(&sys).unwrap();
    }

    #[test]
    fn reads_the_gpt_name() {
        assert_eq!(
            gpt_name("MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=uvmkit-data\n"),
            Some("uvmkit-data")
        );
        assert_eq!(gpt_name("DEVNAME=vda\n"), None);
    }
}

#[cfg(test)]
mod disk_tests {
    use super::*;
    use std::process::Command;

    fn have(tool: &str) -> bool {
        Command::new(tool).arg("-V").output().is_ok()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("uvmkit-init-datadisk-{}-{name}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn blank_means_zeros_at_both_ends() {
        let dir = scratch("blank");
        let path = dir.join("disk");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let size = 8 << 20;
        file.set_len(size).unwrap();
        assert!(is_blank(&file, size).unwrap());
        // Data in the middle is not looked at: only the signature places count.
        file.write_all_at(b"x", 4 << 20).unwrap();
        assert!(is_blank(&file, size).unwrap());
        file.write_all_at(b"x", size - 1).unwrap();
        assert!(!is_blank(&file, size).unwrap());
        file.write_all_at(b"\0", size - 1).unwrap();
        file.write_all_at(b"x", 510).unwrap();
        assert!(!is_blank(&file, size).unwrap());
        // A disk smaller than the checked span is checked whole.
        assert!(!is_blank(&file, 4096).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn partition_is_mib_aligned_inside_the_usable_area() {
        let (start, end) = partition_range(1 << 30);
        assert_eq!(start, 1 << 20);
        assert_eq!(end, (1 << 30) - (1 << 20));
        assert!(end / 512 - 1 <= gpt::last_usable_lba(1 << 30));
        let odd = (1 << 30) + 7 * 512;
        // The backup table takes the last 33 blocks, so the odd tail is not enough for another MiB.
        assert_eq!(partition_range(odd).1, (1 << 30) - (1 << 20));
        assert!(partition_range(odd).1 / 512 - 1 <= gpt::last_usable_lba(odd));
    }

    #[test]
    fn window_rejects_writes_past_its_end() {
        let dir = scratch("window");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("f"))
            .unwrap();
        let mut w = Window::new(&file, 100, 10);
        w.seek(SeekFrom::Start(8)).unwrap();
        assert!(w.write(b"abc").is_err());
        w.write_all(b"ab").unwrap();
        let mut got = [0u8; 2];
        file.read_exact_at(&mut got, 108).unwrap();
        assert_eq!(&got, b"ab");
        assert!(w.seek(SeekFrom::Current(-20)).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_disk_too_small_for_a_partition_is_refused_unwritten() {
        let dir = scratch("too-small");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("disk"))
            .unwrap();
        let bytes = 1 << 20;
        file.set_len(bytes).unwrap();
        let err = write_partition_table(&file, bytes, random_guid([1; 16]), random_guid([2; 16])).unwrap_err();
        assert!(
            matches!(err, DataDiskError::TooSmall { disk_bytes } if disk_bytes == bytes),
            "{err}"
        );
        assert_eq!(err.to_string(), "1048576 bytes is too small for a data partition");
        let mut head = vec![0u8; 4096];
        file.read_exact_at(&mut head, 0).unwrap();
        assert!(head.iter().all(|&b| b == 0), "nothing was written");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The table and file system the init writes on a blank disk, read by sgdisk and e2fsck.
    #[test]
    fn blank_disk_gets_a_gpt_and_ext4_that_independent_tools_accept() {
        if !have("sgdisk") || !have("e2fsck") {
            eprintln!("note: sgdisk or e2fsck missing from PATH; test skipped");
            return;
        }
        let dir = scratch("format");
        let disk_path = dir.join("disk.raw");
        let size: u64 = 256 << 20;
        let disk = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&disk_path)
            .unwrap();
        disk.set_len(size).unwrap();
        let (start, end) = write_partition_table(&disk, size, random_guid([1; 16]), random_guid([2; 16])).unwrap();
        format_ext4(
            &disk,
            start,
            end - start,
            random_guid([3; 16]).to_text_order(),
            [4; 16],
            1_700_000_000,
        )
        .unwrap();
        drop(disk);

        let out = Command::new("sgdisk").arg("-v").arg(&disk_path).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("No problems found"),
            "sgdisk -v: {text}"
        );
        let out = Command::new("sgdisk").arg("-p").arg(&disk_path).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("uvmkit-data") && text.contains("8300"),
            "sgdisk -p: {text}"
        );

        // e2fsck reads a file system at the start of a file: copy the partition out (sparse).
        let part_path = dir.join("part.raw");
        let status = Command::new("dd")
            .arg(format!("if={}", disk_path.display()))
            .arg(format!("of={}", part_path.display()))
            .args([
                "bs=1M",
                "skip=1",
                &format!("count={}", (end - start) >> 20),
                "conv=sparse",
                "status=none",
            ])
            .status()
            .unwrap();
        assert!(status.success());
        let out = Command::new("e2fsck").args(["-fn"]).arg(&part_path).output().unwrap();
        assert!(
            out.status.success(),
            "e2fsck: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut head = vec![0u8; 2048];
        File::open(&part_path).unwrap().read_exact(&mut head).unwrap();
        assert_eq!(ext4_label(&head).as_deref(), Some(DATA_LABEL));
        fs::remove_dir_all(&dir).unwrap();
    }
}
