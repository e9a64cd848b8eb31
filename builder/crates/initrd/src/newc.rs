//! The cpio "newc" format, as the kernel's initramfs unpacker reads it.
//!
//! Reference: the kernel's Documentation/driver-api/early-userspace/buffer-format.rst. Each
//! member is a 110-byte ASCII header (magic `070701` and thirteen 8-digit hexadecimal fields),
//! the NUL-terminated name padded so that header + name is a multiple of 4 bytes, then the
//! body (file contents or symlink target) padded to a multiple of 4 bytes. The archive ends
//! with a member named `TRAILER!!!`.

use std::io::{self, Write};

/// Magic of the "new ASCII" format without CRC (buffer-format.rst: `c_magic`).
const MAGIC: &[u8; 6] = b"070701";

/// Size of the fixed header: magic plus 13 fields of 8 hexadecimal digits.
pub(crate) const HEADER_LEN: u64 = 6 + 13 * 8;

/// Name of the member that ends an archive.
pub(crate) const TRAILER: &str = "TRAILER!!!";

/// The kernel ignores members whose name (with its NUL) is longer than `PATH_MAX`
/// (init/initramfs.c, `do_header`), and symlink bodies longer than `PATH_MAX`.
pub(crate) const PATH_MAX: usize = 4096;

/// One member's header fields, in buffer-format.rst's order and names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Header {
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub filesize: u32,
    pub rdevmajor: u32,
    pub rdevminor: u32,
}

/// Bytes of padding that bring `len` to a multiple of 4.
pub(crate) fn pad4(len: u64) -> u64 {
    (4 - len % 4) % 4
}

impl Header {
    /// Writes the header and `name` (with its NUL and padding); returns the bytes written.
    /// `c_devmajor`/`c_devminor` (the device the file came from) are always 0 and `c_check`
    /// is 0, as the format without CRC requires.
    pub fn write(&self, name: &str, out: &mut impl Write) -> io::Result<u64> {
        let namesize = name.len() as u64 + 1;
        let fields = [
            self.ino,
            self.mode,
            self.uid,
            self.gid,
            self.nlink,
            self.mtime,
            self.filesize,
            0, // c_devmajor
            0, // c_devminor
            self.rdevmajor,
            self.rdevminor,
            namesize as u32,
            0, // c_check
        ];
        let mut buf = Vec::with_capacity(HEADER_LEN as usize + name.len() + 4);
        buf.extend_from_slice(MAGIC);
        for field in fields {
            // Infallible on a Vec.
            let _ = write!(buf, "{field:08X}");
        }
        buf.extend_from_slice(name.as_bytes());
        buf.push(0);
        let padding = pad4(HEADER_LEN + namesize);
        buf.extend(std::iter::repeat_n(0u8, padding as usize));
        out.write_all(&buf)?;
        Ok(buf.len() as u64)
    }
}

/// Writes the `TRAILER!!!` member; returns the bytes written.
pub(crate) fn write_trailer(out: &mut impl Write) -> io::Result<u64> {
    Header {
        nlink: 1,
        ..Header::default()
    }
    .write(TRAILER, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_matches_buffer_format() {
        let mut out = Vec::new();
        let h = Header {
            ino: 1,
            mode: 0o100644,
            uid: 2,
            gid: 3,
            nlink: 1,
            mtime: 0x5f5e100,
            filesize: 5,
            rdevmajor: 0,
            rdevminor: 0,
        };
        let n = h.write("etc/x", &mut out).unwrap();
        assert_eq!(n, out.len() as u64);
        assert_eq!(out.len() % 4, 0);
        let text = std::str::from_utf8(&out[..110]).unwrap();
        assert_eq!(
            text,
            "070701\
             00000001000081A4000000020000000300000001\
             05F5E100000000050000000000000000\
             000000000000000000000006\
             00000000"
        );
        assert_eq!(&out[110..116], b"etc/x\0");
        // 110 + 6 = 116, already aligned.
        assert_eq!(out.len(), 116);
    }

    #[test]
    fn trailer_is_padded() {
        let mut out = Vec::new();
        write_trailer(&mut out).unwrap();
        // 110 + 11 = 121 -> 124.
        assert_eq!(out.len(), 124);
        assert_eq!(&out[110..121], b"TRAILER!!!\0");
        assert!(out[121..].iter().all(|&b| b == 0));
    }
}
