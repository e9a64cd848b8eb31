//! The cylinder-head-sector addresses of MBR partition records.
//!
//! An MBR partition record (UEFI 2.10 §5.2.1, Table 5.2) gives a partition's first and last
//! block twice: as 32-bit LBAs, which firmware and operating systems read, and as the 3-byte
//! CHS addresses of the PC BIOS's INT 13h interface, which only old boot code reads. A CHS
//! address only means something for a chosen disk geometry; each writer says which.

/// The geometry a CHS address is computed in: heads per cylinder and sectors per track.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChsGeometry {
    /// Heads per cylinder (1 to 255).
    pub heads: u32,
    /// Sectors per track (1 to 63).
    pub sectors_per_track: u32,
}

impl ChsGeometry {
    /// The customary translated geometry of large disks: 255 heads, 63 sectors per track.
    pub const LBA_ASSIST: ChsGeometry = ChsGeometry {
        heads: 255,
        sectors_per_track: 63,
    };

    /// The CHS address of block `lba`, packed as a partition record stores it: head; sector
    /// (1-based, bits 0–5) with cylinder bits 8–9 in bits 6–7; cylinder bits 0–7. `None` when
    /// the cylinder needs more than 10 bits: the caller writes its format's "beyond CHS"
    /// marker instead (UEFI's protective MBR and isohybrid use different ones).
    pub fn address(&self, lba: u64) -> Option<[u8; 3]> {
        let heads = u64::from(self.heads);
        let sectors = u64::from(self.sectors_per_track);
        let cylinder = lba / (heads * sectors);
        if cylinder > 1023 {
            return None;
        }
        let head = (lba / sectors) % heads;
        let sector = lba % sectors + 1;
        Some([
            head as u8,
            (sector as u8) | (((cylinder >> 8) as u8) << 6),
            cylinder as u8,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_pack_as_int13h_does() {
        let g = ChsGeometry::LBA_ASSIST;
        assert_eq!(g.address(0), Some([0, 1, 0]));
        assert_eq!(g.address(1), Some([0, 2, 0]));
        assert_eq!(g.address(62), Some([0, 63, 0]));
        assert_eq!(g.address(63), Some([1, 1, 0]));
        assert_eq!(g.address(255 * 63), Some([0, 1, 1]));
        // Cylinder 256 sets bit 6 of the sector byte; the last cylinder is 1023.
        assert_eq!(g.address(256 * 255 * 63), Some([0, 0x41, 0]));
        assert_eq!(g.address(1024 * 255 * 63 - 1), Some([254, 0xFF, 0xFF]));
        assert_eq!(g.address(1024 * 255 * 63), None);
        // isohybrid's 64 heads of 32 sectors: block 10239 is cylinder 4, head 63, sector 32.
        let iso = ChsGeometry {
            heads: 64,
            sectors_per_track: 32,
        };
        assert_eq!(iso.address(10_239), Some([0x3F, 0x20, 4]));
        assert_eq!(iso.address(3_000_000), None);
    }
}
