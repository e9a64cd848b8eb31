//! The compressions Debian uses for indices (`Packages.xz`) and `.deb` members
//! (`data.tar.xz`), chosen by file-name suffix and decoded as streams.

use std::io::{self, BufReader, Read};

/// A compression format, named by the suffix Debian gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No suffix: the bytes as they are.
    None,
    /// `.gz` (RFC 1952), possibly several members.
    Gzip,
    /// `.xz` (the XZ file format), possibly several streams.
    Xz,
    /// `.zst` (RFC 8878).
    Zstd,
}

impl Compression {
    /// The compression a file or member name implies (`Packages.xz`, `data.tar.zst`), or
    /// `None` for an unknown suffix such as `.bz2`.
    pub fn from_name(name: &str) -> Option<Compression> {
        let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        match ext {
            "gz" => Some(Compression::Gzip),
            "xz" => Some(Compression::Xz),
            "zst" => Some(Compression::Zstd),
            "bz2" | "lzma" | "Z" | "lz4" => None,
            _ => Some(Compression::None),
        }
    }

    /// A reader that yields the decompressed bytes of `input`.
    pub fn decoder<'a>(self, input: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(input),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(input)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(BufReader::new(input))?),
        })
    }
}

/// The most an index may expand to: ten times Debian's largest `Packages` file (main,
/// amd64, about 50 MB), so a decompression bomb stops here instead of filling memory.
pub const MAX_INDEX_BYTES: u64 = 512 << 20;

/// Decompresses a whole index held in memory (`Packages.xz` → `Packages`), choosing the
/// decoder from `name`. Fails on an unsupported suffix, corrupt data, or more than
/// [`MAX_INDEX_BYTES`] of output.
pub fn decompress_named(name: &str, data: &[u8]) -> io::Result<Vec<u8>> {
    decompress_named_limited(name, data, MAX_INDEX_BYTES)
}

/// [`decompress_named`] with a limit of `limit` bytes of output.
pub fn decompress_named_limited(name: &str, data: &[u8], limit: u64) -> io::Result<Vec<u8>> {
    let compression = Compression::from_name(name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{name}: unsupported compression; use the .xz, .gz or uncompressed variant"),
        )
    })?;
    let mut out = Vec::new();
    compression.decoder(data)?.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{name}: expands to more than {} MiB, more than any Debian index; refusing it as a decompression bomb",
                limit >> 20
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn suffixes() {
        assert_eq!(
            Compression::from_name("main/binary-amd64/Packages.xz"),
            Some(Compression::Xz)
        );
        assert_eq!(Compression::from_name("data.tar.zst"), Some(Compression::Zstd));
        assert_eq!(Compression::from_name("control.tar.gz"), Some(Compression::Gzip));
        assert_eq!(Compression::from_name("data.tar"), Some(Compression::None));
        assert_eq!(Compression::from_name("Packages"), Some(Compression::None));
        assert_eq!(Compression::from_name("data.tar.bz2"), None);
    }

    #[test]
    fn round_trips_each_format() {
        let text = b"Package: hello\nVersion: 1.0\n".repeat(100);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&text).unwrap();
            e.finish().unwrap()
        };
        let xz = {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(&text).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::stream::encode_all(&text[..], 3).unwrap();
        assert_eq!(decompress_named("P.gz", &gz).unwrap(), text);
        assert_eq!(decompress_named("P.xz", &xz).unwrap(), text);
        assert_eq!(decompress_named("P.zst", &zst).unwrap(), text);
        assert_eq!(decompress_named("P", &text).unwrap(), text);
        assert!(decompress_named("P.xz", &gz).is_err());
        assert!(decompress_named("P.bz2", &text).is_err());
    }
}
