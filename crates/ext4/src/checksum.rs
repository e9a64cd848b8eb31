//! crc32c as ext4 and its `metadata_csum` feature use it.
//!
//! The kernel's `ext4_chksum()` feeds a caller-chosen seed into the crc32c (Castagnoli)
//! register and returns the register as is, without the final inversion of the textbook
//! crc32c. Checksums chain: the filesystem seed is `crc32c(~0, s_uuid)`, an inode's seed is
//! `crc32c(crc32c(fs_seed, inode_number), i_generation)`, and every structure is summed from
//! the seed that the on-disk format documentation names for it.

use crc::{Crc, CRC_32_ISCSI};

const CASTAGNOLI: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

/// The raw crc32c register after feeding `data` into a register holding `seed`.
pub(crate) fn crc32c(seed: u32, data: &[u8]) -> u32 {
    // The crate's reflected register is the bit-reversed initial value, and its final value
    // is inverted (CRC-32/ISCSI has xorout 0xFFFFFFFF); undo both to get ext4's raw register.
    let mut digest = CASTAGNOLI.digest_with_initial(seed.reverse_bits());
    digest.update(data);
    !digest.finalize()
}

/// The checksum seed of one inode: the filesystem seed chained with its number and generation.
pub(crate) fn inode_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    crc32c(crc32c(fs_seed, &ino.to_le_bytes()), &generation.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_textbook_crc32c_before_the_final_inversion() {
        // crc32c("123456789") is 0xE3069283 (the catalogue's check value).
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
        // Chaining equals one pass over the concatenation.
        assert_eq!(crc32c(crc32c(!0, b"1234"), b"56789"), crc32c(!0, b"123456789"));
    }
}
