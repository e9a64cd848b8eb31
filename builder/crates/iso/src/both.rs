//! Numbers recorded in both byte orders (ECMA-119 7.2.3 and 7.3.3).

/// A 16-bit number as 7.2.3 records it: little-endian, then big-endian.
pub(crate) fn both_u16(v: u16) -> [u8; 4] {
    let mut out = [0u8; 4];
    out[..2].copy_from_slice(&v.to_le_bytes());
    out[2..].copy_from_slice(&v.to_be_bytes());
    out
}

/// A 32-bit number as 7.3.3 records it: little-endian, then big-endian.
pub(crate) fn both_u32(v: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&v.to_le_bytes());
    out[4..].copy_from_slice(&v.to_be_bytes());
    out
}
