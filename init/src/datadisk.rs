//! Finding the persistent data partition: the partition whose ext4 label, or whose GPT
//! partition name, is `uvmkit-data` (uvmkit's disk images carry one).
//!
//! Disks behind SCSI and SATA controllers are probed asynchronously after their driver loads,
//! so the search polls `/sys/class/block` for a short while before giving up.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The label uvmkit gives the data partition.
pub const DATA_LABEL: &str = "uvmkit-data";

/// A partition found by [`find`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPartition {
    /// Its device node (`/dev/vda2`).
    pub device: PathBuf,
    /// How it was recognised: `ext4 label` or `GPT name`.
    pub matched_by: &'static str,
    /// Size in bytes.
    pub size: u64,
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

/// `PARTNAME=` from a block device's `uevent` text.
pub fn gpt_name(uevent: &str) -> Option<&str> {
    uevent.lines().find_map(|l| l.strip_prefix("PARTNAME="))
}

fn probe(name: &str) -> Option<DataPartition> {
    let sys = PathBuf::from("/sys/class/block").join(name);
    let sectors: u64 = std::fs::read_to_string(sys.join("size")).ok()?.trim().parse().ok()?;
    let device = PathBuf::from("/dev").join(name);
    let mut head = vec![0u8; 2048];
    let label = File::open(&device).ok().and_then(|f| f.read_exact_at(&mut head, 0).ok()).and_then(|_| ext4_label(&head));
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
    Some(DataPartition { device, matched_by, size: sectors * 512 })
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
    fn reads_the_gpt_name() {
        assert_eq!(gpt_name("MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=uvmkit-data\n"), Some("uvmkit-data"));
        assert_eq!(gpt_name("DEVNAME=vda\n"), None);
    }
}
