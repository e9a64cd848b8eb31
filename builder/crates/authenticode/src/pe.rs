//! The parts of a PE/COFF image an Authenticode signature covers or changes (Microsoft
//! "PE Format": "Optional Header Windows-Specific Fields", "Optional Header Data Directories",
//! "Section Table", "The Attribute Certificate Table (Image Only)").

use sha2::{Digest, Sha256};

/// Why bytes are not a PE image this crate can hash or sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeError {
    /// The file is shorter than the headers it announces.
    #[error("not a PE image: the file ends inside its {0}")]
    Truncated(&'static str),
    /// No `MZ` at the start.
    #[error("not a PE image: no MZ signature at the start")]
    NoMzSignature,
    /// `e_lfanew` does not point at `PE\0\0`.
    #[error("not a PE image: no PE\\0\\0 signature where the MS-DOS header points")]
    NoPeSignature,
    /// The optional header is neither PE32 nor PE32+.
    #[error("not a PE image: optional header magic {0:#06x} is neither PE32 (0x10b) nor PE32+ (0x20b)")]
    UnknownMagic(u16),
    /// The optional header has no certificate table entry.
    #[error("the PE image has no certificate table entry in its data directories (NumberOfRvaAndSizes {0})")]
    NoCertificateDirectory(u32),
    /// `SizeOfHeaders` is smaller than the headers or larger than the file.
    #[error(
        "the PE image's SizeOfHeaders ({size}) does not hold its section table or exceeds the file ({file} bytes)"
    )]
    BadSizeOfHeaders {
        /// `SizeOfHeaders`.
        size: u32,
        /// The file's length.
        file: usize,
    },
    /// A section's raw data lies past the end of the file.
    #[error("section {name:?}: its raw data ({offset} + {size} bytes) lies past the end of the file ({file} bytes)")]
    SectionOutsideFile {
        /// The section's name.
        name: String,
        /// `PointerToRawData`.
        offset: u32,
        /// `SizeOfRawData`.
        size: u32,
        /// The file's length.
        file: usize,
    },
    /// The certificate table entry points outside the file, or not at its end.
    #[error("the PE image's certificate table ({offset} + {size} bytes) is not at the end of the file ({file} bytes)")]
    BadCertificateTable {
        /// Its file offset.
        offset: u32,
        /// Its size.
        size: u32,
        /// The file's length.
        file: usize,
    },
}

/// Index of the Certificate Table in the data directories ("Optional Header Data
/// Directories": entry 4; its "RVA" is a file offset).
const DIRECTORY_SECURITY: usize = 4;
/// `CheckSum`'s offset in the optional header (the same for PE32 and PE32+).
const OPT_CHECKSUM: usize = 64;
/// `SizeOfHeaders`' offset in the optional header.
const OPT_SIZE_OF_HEADERS: usize = 60;
/// Length of a section header.
const SECTION_HEADER_LEN: usize = 40;

/// Where the hashed and excluded fields of one PE image lie.
#[derive(Debug, Clone)]
pub(crate) struct PeLayout {
    /// File offset of `CheckSum`.
    pub checksum: usize,
    /// File offset of the Certificate Table's data directory entry (8 bytes).
    pub cert_directory: usize,
    /// `SizeOfHeaders`.
    pub size_of_headers: usize,
    /// `(PointerToRawData, SizeOfRawData)` of every section with raw data, in file order.
    pub sections: Vec<(usize, usize)>,
    /// The Certificate Table entry: file offset and size, `(0, 0)` when unsigned.
    pub cert_table: (u32, u32),
}

fn u16_at(b: &[u8], at: usize, what: &'static str) -> Result<u16, PeError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(PeError::Truncated(what))
}

fn u32_at(b: &[u8], at: usize, what: &'static str) -> Result<u32, PeError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(PeError::Truncated(what))
}

impl PeLayout {
    /// Reads the headers of `pe`.
    pub fn parse(pe: &[u8]) -> Result<PeLayout, PeError> {
        if pe.len() < 64 {
            return Err(PeError::Truncated("MS-DOS header"));
        }
        if &pe[..2] != b"MZ" {
            return Err(PeError::NoMzSignature);
        }
        // "MS-DOS Stub (Image Only)": the PE signature's offset is at 0x3c.
        let pe_offset = u32_at(pe, 0x3c, "MS-DOS header")? as usize;
        if pe.get(pe_offset..pe_offset + 4) != Some(b"PE\0\0".as_slice()) {
            return Err(PeError::NoPeSignature);
        }
        let coff = pe_offset + 4;
        let number_of_sections = u16_at(pe, coff + 2, "COFF header")? as usize;
        let size_of_optional_header = u16_at(pe, coff + 16, "COFF header")? as usize;
        let opt = coff + 20;
        // "Optional Header Standard Fields": the data directories follow NumberOfRvaAndSizes,
        // which sits at 92 in PE32 and at 108 in PE32+ (ImageBase is 8 bytes there).
        let (rva_count_at, directories_at) = match u16_at(pe, opt, "optional header")? {
            0x10b => (92, 96),
            0x20b => (108, 112),
            other => return Err(PeError::UnknownMagic(other)),
        };
        let rva_count = u32_at(pe, opt + rva_count_at, "optional header")?;
        if rva_count as usize <= DIRECTORY_SECURITY
            || size_of_optional_header < directories_at + 8 * (DIRECTORY_SECURITY + 1)
        {
            return Err(PeError::NoCertificateDirectory(rva_count));
        }
        let cert_directory = opt + directories_at + 8 * DIRECTORY_SECURITY;
        let cert_table = (
            u32_at(pe, cert_directory, "optional header")?,
            u32_at(pe, cert_directory + 4, "optional header")?,
        );
        let size_of_headers = u32_at(pe, opt + OPT_SIZE_OF_HEADERS, "optional header")?;
        let table = opt + size_of_optional_header;
        let table_end = table + number_of_sections * SECTION_HEADER_LEN;
        if (size_of_headers as usize) < table_end || size_of_headers as usize > pe.len() {
            return Err(PeError::BadSizeOfHeaders {
                size: size_of_headers,
                file: pe.len(),
            });
        }
        let mut sections = Vec::with_capacity(number_of_sections);
        for i in 0..number_of_sections {
            let h = table + i * SECTION_HEADER_LEN;
            let size = u32_at(pe, h + 16, "section table")?;
            let offset = u32_at(pe, h + 20, "section table")?;
            if size == 0 {
                continue;
            }
            if offset as u64 + size as u64 > pe.len() as u64 {
                let name = String::from_utf8_lossy(&pe[h..h + 8])
                    .trim_end_matches('\0')
                    .to_string();
                return Err(PeError::SectionOutsideFile {
                    name,
                    offset,
                    size,
                    file: pe.len(),
                });
            }
            sections.push((offset as usize, size as usize));
        }
        // "Calculating the PE Image Hash", step 9: sections in ascending PointerToRawData.
        sections.sort_unstable();
        let layout = PeLayout {
            checksum: opt + OPT_CHECKSUM,
            cert_directory,
            size_of_headers: size_of_headers as usize,
            sections,
            cert_table,
        };
        if layout.is_signed() && cert_table.0 as u64 + cert_table.1 as u64 != pe.len() as u64 {
            return Err(PeError::BadCertificateTable {
                offset: cert_table.0,
                size: cert_table.1,
                file: pe.len(),
            });
        }
        Ok(layout)
    }

    /// True when the image already carries an Attribute Certificate Table.
    pub fn is_signed(&self) -> bool {
        self.cert_table != (0, 0)
    }

    /// The Authenticode hash of `pe` (Windows Authenticode Portable Executable Signature
    /// Format, "Calculating the PE Image Hash"): every byte of the headers but `CheckSum` and
    /// the Certificate Table entry, each section's raw data in file order, then whatever
    /// follows `SUM_OF_BYTES_HASHED` up to the Attribute Certificate Table.
    pub fn digest(&self, pe: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        // Steps 3-8: the headers, skipping CheckSum and the Certificate Table entry.
        h.update(&pe[..self.checksum]);
        h.update(&pe[self.checksum + 4..self.cert_directory]);
        h.update(&pe[self.cert_directory + 8..self.size_of_headers]);
        // Steps 9-13: each section, counting what was hashed.
        let mut sum_of_bytes_hashed = self.size_of_headers;
        for &(offset, size) in &self.sections {
            h.update(&pe[offset..offset + size]);
            sum_of_bytes_hashed += size;
        }
        // Step 14: extra data from SUM_OF_BYTES_HASHED up to the certificate table. This is
        // the specification's rule as firmware (EDK II's DxeImageVerificationLib) applies it;
        // bytes between sections are not covered, and are never loaded.
        let end = pe.len() - self.cert_table.1 as usize;
        if end > sum_of_bytes_hashed {
            h.update(&pe[sum_of_bytes_hashed..end]);
        }
        h.finalize().into()
    }
}

/// The PE image checksum (the algorithm of imagehlp's `CheckSumMappedFile`, which the PE
/// format names for `CheckSum`): 16-bit little-endian words summed with end-around carry,
/// the `CheckSum` field counted as zero, plus the file's length.
pub(crate) fn pe_checksum(pe: &[u8], checksum_offset: usize) -> u32 {
    let skip = checksum_offset..checksum_offset + 4;
    let byte = |i: usize| {
        if skip.contains(&i) {
            0
        } else {
            pe.get(i).copied().unwrap_or(0)
        }
    };
    let mut sum: u32 = 0;
    for at in (0..pe.len()).step_by(2) {
        sum += u32::from(u16::from_le_bytes([byte(at), byte(at + 1)]));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum.wrapping_add(pe.len() as u32)
}
