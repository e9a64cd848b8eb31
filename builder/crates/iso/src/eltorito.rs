//! El Torito (Bootable CD-ROM Format Specification 1.0): the boot record volume descriptor,
//! the boot catalog, and the boot information table ISOLINUX expects in its boot file.

/// Platform ids of the validation entry and section headers (§2.1; 0xEF is UEFI's, UEFI 2.10
/// §13.3.2.1).
pub(crate) const PLATFORM_X86: u8 = 0x00;
pub(crate) const PLATFORM_EFI: u8 = 0xEF;

/// One bootable image in the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BootEntry {
    /// Platform the image is for.
    pub platform: u8,
    /// Virtual 512-byte sectors to load (no-emulation), 0 when the image is too large to say.
    pub sector_count: u16,
    /// First 2048-byte sector of the image.
    pub lba: u32,
}

/// The boot record volume descriptor (§2.0), at sector 17, pointing at the catalog.
pub(crate) fn boot_record(catalog_lba: u32) -> [u8; 2048] {
    let mut d = [0u8; 2048];
    d[0] = 0; // boot record indicator
    d[1..6].copy_from_slice(b"CD001");
    d[6] = 1;
    let system = b"EL TORITO SPECIFICATION";
    d[7..7 + system.len()].copy_from_slice(system); // rest of the 32 bytes stays zero
    d[0x47..0x4B].copy_from_slice(&catalog_lba.to_le_bytes());
    d
}

/// A no-emulation initial/default or section entry (§2.2 and §2.4): bootable, load segment 0
/// (meaning the traditional 0x7C0), system type 0.
fn image_entry(e: &BootEntry) -> [u8; 32] {
    let mut r = [0u8; 32];
    r[0] = 0x88; // bootable
    r[1] = 0; // no emulation
    r[6..8].copy_from_slice(&e.sector_count.to_le_bytes());
    r[8..12].copy_from_slice(&e.lba.to_le_bytes());
    r
}

/// The boot catalog (one 2048-byte sector): the validation entry for the first entry's
/// platform, that entry as the initial/default entry, then each further entry in a section
/// of its own, the last header marked final (§2.1–§2.4).
pub(crate) fn catalog(entries: &[BootEntry]) -> [u8; 2048] {
    let mut c = [0u8; 2048];
    let Some(first) = entries.first() else {
        return c;
    };
    // §2.1 validation entry; the checksum makes the 16-bit words sum to zero.
    c[0] = 1;
    c[1] = first.platform;
    c[30] = 0x55;
    c[31] = 0xAA;
    let sum = c[..32]
        .chunks_exact(2)
        .fold(0u16, |s, w| s.wrapping_add(u16::from_le_bytes([w[0], w[1]])));
    c[28..30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
    c[32..64].copy_from_slice(&image_entry(first));
    let rest = &entries[1..];
    for (i, e) in rest.iter().enumerate() {
        let at = 64 + i * 64;
        // §2.3 section header: 0x90 more headers follow, 0x91 final; one entry in it.
        c[at] = if i + 1 == rest.len() { 0x91 } else { 0x90 };
        c[at + 1] = e.platform;
        c[at + 2..at + 4].copy_from_slice(&1u16.to_le_bytes());
        c[at + 32..at + 64].copy_from_slice(&image_entry(e));
    }
    c
}

/// Writes the boot information table into `boot_file` (mkisofs's `-boot-info-table`, which
/// ISOLINUX relies on): at byte 8 the LBA of the primary volume descriptor, the file's own LBA,
/// its length, and the 32-bit sum of its little-endian words from byte 64 on; then 40 zero
/// bytes. The file must be at least 64 bytes long.
pub(crate) fn patch_boot_info_table(boot_file: &mut [u8], pvd_lba: u32, file_lba: u32) {
    let mut sum = 0u32;
    for word in boot_file[64..].chunks(4) {
        let mut w = [0u8; 4];
        w[..word.len()].copy_from_slice(word);
        sum = sum.wrapping_add(u32::from_le_bytes(w));
    }
    let len = boot_file.len() as u32;
    boot_file[8..12].copy_from_slice(&pvd_lba.to_le_bytes());
    boot_file[12..16].copy_from_slice(&file_lba.to_le_bytes());
    boot_file[16..20].copy_from_slice(&len.to_le_bytes());
    boot_file[20..24].copy_from_slice(&sum.to_le_bytes());
    boot_file[24..64].fill(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_validates_and_lists_sections() {
        let c = catalog(&[
            BootEntry {
                platform: PLATFORM_X86,
                sector_count: 4,
                lba: 40,
            },
            BootEntry {
                platform: PLATFORM_EFI,
                sector_count: 0,
                lba: 50,
            },
        ]);
        let sum = c[..32]
            .chunks_exact(2)
            .fold(0u16, |s, w| s.wrapping_add(u16::from_le_bytes([w[0], w[1]])));
        assert_eq!(sum, 0);
        assert_eq!(&c[32..34], &[0x88, 0]);
        assert_eq!(u16::from_le_bytes([c[38], c[39]]), 4);
        assert_eq!(u32::from_le_bytes(c[40..44].try_into().unwrap()), 40);
        assert_eq!(&c[64..68], &[0x91, 0xEF, 1, 0]);
        assert_eq!(u32::from_le_bytes(c[104..108].try_into().unwrap()), 50);
    }

    #[test]
    fn boot_info_table_sums_the_tail() {
        let mut f = vec![0u8; 70];
        f[64] = 1;
        f[68] = 2; // a partial last word counts as zero-padded
        f[10] = 0xFF;
        patch_boot_info_table(&mut f, 16, 33);
        assert_eq!(&f[8..24], &[16, 0, 0, 0, 33, 0, 0, 0, 70, 0, 0, 0, 3, 0, 0, 0]);
    }
}
