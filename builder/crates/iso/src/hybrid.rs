//! The isohybrid system area: an MBR whose boot code (syslinux's `isohdpfx.bin`) loads
//! ISOLINUX when the image is written to a disk, with partition entries for BIOS and UEFI
//! firmware, and the GPT a UEFI firmware reads from the same disk.
//!
//! Layout in 512-byte blocks when an EFI image is present (a "hybrid MBR" as gdisk calls it):
//! GPT header and entries at 1–33 inside the ISO's 32 KiB system area; GPT partition 1 covers
//! the ISO 9660 data from block 64 (sector 16) up to the EFI image; partition 2 is the EFI
//! image (an EFI System partition); the backup GPT sits in the padding at the end. The MBR
//! mirrors both partitions (the first one active, for BIOSes that want one) and adds a 0xEE
//! entry over blocks 1–63 so that UEFI firmware and Linux read the GPT (UEFI 2.10 §5.2.3 finds
//! the 0xEE entry that starts at block 1). Nothing overlaps, so `sgdisk -v` is clean.
//! Without an EFI image the MBR has one active 0x17 entry covering the whole image, as
//! syslinux's isohybrid writes it.

use uvmkit_disk::ChsGeometry;

/// Bytes of boot code the MBR takes from `isohdpfx.bin` (the rest is the isohybrid fields
/// and the partition table).
pub(crate) const BOOT_CODE_LEN: usize = 432;

/// ISOLINUX's marker at byte 0x40 of `isolinux.bin` saying it can be entered from the
/// isohybrid MBR.
pub(crate) const ISOHYBRID_MAGIC: u32 = 0x7078_C0FB;

/// One MBR partition entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MbrPartition {
    /// Marked active (0x80).
    pub bootable: bool,
    /// Partition type byte.
    pub kind: u8,
    /// First 512-byte block.
    pub start: u32,
    /// Length in blocks.
    pub blocks: u32,
}

/// isohybrid's disk geometry: 64 heads, 32 sectors per track (1 MiB cylinders).
const GEOMETRY: ChsGeometry = ChsGeometry {
    heads: 64,
    sectors_per_track: 32,
};

/// The packed CHS address of `lba` in isohybrid's geometry, or the customary 0xFE 0xFF 0xFF
/// ("beyond CHS, use the LBA fields") when the cylinder needs more than 10 bits.
fn chs(lba: u32) -> [u8; 3] {
    GEOMETRY.address(u64::from(lba)).unwrap_or([0xFE, 0xFF, 0xFF])
}

/// The MBR: `boot_code` (the first 432 bytes of `isohdpfx.bin`, or none), the 64-bit block
/// number of the boot file ISOLINUX's MBR code loads (at 432, in 512-byte blocks), the disk
/// signature (440), the partition table (446) and 0x55AA (510).
pub(crate) fn mbr(
    boot_code: Option<&[u8]>,
    boot_file_block: u64,
    signature: [u8; 4],
    partitions: &[MbrPartition],
) -> [u8; 512] {
    let mut m = [0u8; 512];
    if let Some(code) = boot_code {
        m[..BOOT_CODE_LEN].copy_from_slice(&code[..BOOT_CODE_LEN]);
        m[432..440].copy_from_slice(&boot_file_block.to_le_bytes());
    }
    m[440..444].copy_from_slice(&signature);
    for (i, p) in partitions.iter().take(4).enumerate() {
        let e = &mut m[446 + 16 * i..462 + 16 * i];
        e[0] = if p.bootable { 0x80 } else { 0 };
        e[1..4].copy_from_slice(&chs(p.start));
        e[4] = p.kind;
        e[5..8].copy_from_slice(&chs(p.start + p.blocks.saturating_sub(1)));
        e[8..12].copy_from_slice(&p.start.to_le_bytes());
        e[12..16].copy_from_slice(&p.blocks.to_le_bytes());
    }
    m[510] = 0x55;
    m[511] = 0xAA;
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbr_fields() {
        let code = vec![0xAB; BOOT_CODE_LEN];
        let m = mbr(
            Some(&code),
            8328,
            [1, 2, 3, 4],
            &[MbrPartition {
                bootable: true,
                kind: 0x17,
                start: 0,
                blocks: 10240,
            }],
        );
        assert_eq!(&m[..432], &code[..]);
        assert_eq!(&m[432..440], &8328u64.to_le_bytes());
        assert_eq!(&m[440..444], &[1, 2, 3, 4]);
        // The same entry xorriso writes for a 5 MiB image: CHS 0/0/1 to 4/63/32.
        assert_eq!(
            &m[446..462],
            &[0x80, 0, 1, 0, 0x17, 0x3F, 0x20, 4, 0, 0, 0, 0, 0, 0x28, 0, 0]
        );
        assert_eq!(&m[510..], &[0x55, 0xAA]);
        assert_eq!(chs(3_000_000), [0xFE, 0xFF, 0xFF]);
    }
}
