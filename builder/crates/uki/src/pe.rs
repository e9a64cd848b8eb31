//! The few PE/COFF structures a UKI writer reads and patches.
//!
//! Reference: Microsoft's "PE Format" specification (learn.microsoft.com/windows/win32/debug/pe-format):
//! the MS-DOS stub's `e_lfanew` at 0x3c, the `PE\0\0` signature, the COFF file header
//! ("COFF File Header (Object and Image)"), the optional header ("Optional Header Image Only",
//! whose Windows-specific fields are at the same offsets in PE32 and PE32+ up to
//! `NumberOfRvaAndSizes`) and the section table ("Section Table (Section Headers)").

use crate::UkiError;

/// Size of one section header ("Section Table": 40 bytes each).
pub(crate) const SECTION_HEADER_LEN: usize = 40;
/// Size of the COFF file header.
const COFF_HEADER_LEN: usize = 20;

/// `IMAGE_FILE_MACHINE_AMD64`.
pub(crate) const MACHINE_AMD64: u16 = 0x8664;
/// `IMAGE_FILE_LOCAL_SYMS_STRIPPED`, set when the symbol table is removed.
const FILE_LOCAL_SYMS_STRIPPED: u16 = 0x0008;
/// Optional header magic of PE32 and PE32+.
const MAGIC_PE32: u16 = 0x10b;
const MAGIC_PE32_PLUS: u16 = 0x20b;
/// Index of the certificate table in the data directories.
const DIRECTORY_SECURITY: usize = 4;

// Offsets inside the optional header, the same in PE32 and PE32+.
const OPT_SIZE_OF_INITIALIZED_DATA: usize = 8;
const OPT_SECTION_ALIGNMENT: usize = 32;
const OPT_FILE_ALIGNMENT: usize = 36;
const OPT_SIZE_OF_IMAGE: usize = 56;
const OPT_SIZE_OF_HEADERS: usize = 60;
const OPT_CHECKSUM: usize = 64;

/// One section header, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SectionHeader {
    pub name: [u8; 8],
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub size_of_raw_data: u32,
    pub pointer_to_raw_data: u32,
    pub characteristics: u32,
}

impl SectionHeader {
    /// The name without its NUL padding.
    pub fn name_str(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(8);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    /// The 40-byte header; relocations and line numbers are zero, as in any image file.
    pub fn encode(&self) -> [u8; SECTION_HEADER_LEN] {
        let mut b = [0u8; SECTION_HEADER_LEN];
        b[0..8].copy_from_slice(&self.name);
        b[8..12].copy_from_slice(&self.virtual_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.virtual_address.to_le_bytes());
        b[16..20].copy_from_slice(&self.size_of_raw_data.to_le_bytes());
        b[20..24].copy_from_slice(&self.pointer_to_raw_data.to_le_bytes());
        b[36..40].copy_from_slice(&self.characteristics.to_le_bytes());
        b
    }
}

/// The parsed headers of a PE image, with the offsets needed to patch them.
#[derive(Clone, Debug)]
pub(crate) struct PeImage {
    pub machine: u16,
    coff_offset: usize,
    optional_offset: usize,
    pub section_table_offset: usize,
    pub section_alignment: u32,
    pub file_alignment: u32,
    pub size_of_headers: u32,
    pub size_of_initialized_data: u32,
    pub pointer_to_symbol_table: u32,
    pub number_of_symbols: u32,
    pub security_directory: (u32, u32),
    /// Set by the writer when it drops a trailing COFF symbol table.
    pub symbols_stripped: bool,
    pub sections: Vec<SectionHeader>,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

impl PeImage {
    /// Parses the headers of `image`, checking what the writer relies on.
    pub fn parse(image: &[u8]) -> Result<Self, UkiError> {
        let bad = |why: &str| UkiError::NotPe(why.to_string());
        if image.get(0..2) != Some(b"MZ") {
            return Err(bad("no MZ signature at offset 0"));
        }
        let pe_offset = u32_at(image, 0x3c).ok_or_else(|| bad("file too short for an MS-DOS header"))? as usize;
        if image.get(pe_offset..pe_offset + 4) != Some(b"PE\0\0") {
            return Err(bad("no PE signature at the offset e_lfanew names"));
        }
        let coff_offset = pe_offset + 4;
        let short = || bad("headers run past the end of the file");
        let machine = u16_at(image, coff_offset).ok_or_else(short)?;
        let number_of_sections = u16_at(image, coff_offset + 2).ok_or_else(short)? as usize;
        let pointer_to_symbol_table = u32_at(image, coff_offset + 8).ok_or_else(short)?;
        let number_of_symbols = u32_at(image, coff_offset + 12).ok_or_else(short)?;
        let size_of_optional_header = u16_at(image, coff_offset + 16).ok_or_else(short)? as usize;
        let optional_offset = coff_offset + COFF_HEADER_LEN;
        let magic = u16_at(image, optional_offset).ok_or_else(short)?;
        let (rva_count_offset, directories_offset) = match magic {
            MAGIC_PE32 => (92, 96),
            MAGIC_PE32_PLUS => (108, 112),
            _ => return Err(bad("optional header magic is neither PE32 nor PE32+")),
        };
        if size_of_optional_header < directories_offset {
            return Err(bad("optional header too short"));
        }
        let opt = |off: usize| u32_at(image, optional_offset + off).ok_or_else(short);
        let section_alignment = opt(OPT_SECTION_ALIGNMENT)?;
        let file_alignment = opt(OPT_FILE_ALIGNMENT)?;
        if !file_alignment.is_power_of_two()
            || !section_alignment.is_power_of_two()
            || section_alignment < file_alignment
        {
            return Err(bad(
                "SectionAlignment/FileAlignment are not powers of two with SectionAlignment >= FileAlignment",
            ));
        }
        let rva_count = opt(rva_count_offset)? as usize;
        let security_directory = if rva_count > DIRECTORY_SECURITY
            && size_of_optional_header >= directories_offset + 8 * (DIRECTORY_SECURITY + 1)
        {
            let d = directories_offset + 8 * DIRECTORY_SECURITY;
            (opt(d)?, opt(d + 4)?)
        } else {
            (0, 0)
        };
        let section_table_offset = optional_offset + size_of_optional_header;
        let mut sections = Vec::with_capacity(number_of_sections);
        for i in 0..number_of_sections {
            let o = section_table_offset + i * SECTION_HEADER_LEN;
            let raw = image.get(o..o + SECTION_HEADER_LEN).ok_or_else(short)?;
            sections.push(SectionHeader {
                name: raw[0..8].try_into().expect("8 bytes"),
                virtual_size: u32_at(raw, 8).expect("in range"),
                virtual_address: u32_at(raw, 12).expect("in range"),
                size_of_raw_data: u32_at(raw, 16).expect("in range"),
                pointer_to_raw_data: u32_at(raw, 20).expect("in range"),
                characteristics: u32_at(raw, 36).expect("in range"),
            });
        }
        Ok(PeImage {
            machine,
            coff_offset,
            optional_offset,
            section_table_offset,
            section_alignment,
            file_alignment,
            size_of_headers: opt(OPT_SIZE_OF_HEADERS)?,
            size_of_initialized_data: opt(OPT_SIZE_OF_INITIALIZED_DATA)?,
            pointer_to_symbol_table,
            number_of_symbols,
            security_directory,
            symbols_stripped: false,
            sections,
        })
    }

    /// `SizeOfImage` of `image` when it is a PE file (the kernel's bzImage is one when built
    /// with its EFI stub).
    pub fn size_of_image(image: &[u8]) -> Option<u32> {
        let pe = PeImage::parse(image).ok()?;
        u32_at(image, pe.optional_offset + OPT_SIZE_OF_IMAGE)
    }

    /// Rewrites the headers in `image` (which must be at least `SizeOfHeaders` long): the
    /// section table and count, `SizeOfHeaders`, `SizeOfInitializedData`, `SizeOfImage`, a zero
    /// `CheckSum`, and the symbol table fields when the symbol table was dropped.
    pub fn patch(&self, image: &mut [u8], size_of_image: u32) {
        put_u16(image, self.coff_offset + 2, self.sections.len() as u16);
        if self.symbols_stripped {
            put_u32(image, self.coff_offset + 8, 0);
            put_u32(image, self.coff_offset + 12, 0);
            let c = u16_at(image, self.coff_offset + 18).expect("parsed before");
            put_u16(image, self.coff_offset + 18, c | FILE_LOCAL_SYMS_STRIPPED);
        }
        put_u32(
            image,
            self.optional_offset + OPT_SIZE_OF_INITIALIZED_DATA,
            self.size_of_initialized_data,
        );
        put_u32(image, self.optional_offset + OPT_SIZE_OF_IMAGE, size_of_image);
        put_u32(image, self.optional_offset + OPT_SIZE_OF_HEADERS, self.size_of_headers);
        put_u32(image, self.optional_offset + OPT_CHECKSUM, 0);
        for (i, s) in self.sections.iter().enumerate() {
            let o = self.section_table_offset + i * SECTION_HEADER_LEN;
            image[o..o + SECTION_HEADER_LEN].copy_from_slice(&s.encode());
        }
    }
}

/// `value` rounded up to a multiple of `align`.
pub(crate) fn round_up(value: u64, align: u32) -> u64 {
    let a = u64::from(align);
    value.div_ceil(a) * a
}
