//! Unified Kernel Images: the systemd-boot EFI stub (`linuxx64.efi.stub`) with the kernel,
//! the initrd, the command line and os-release appended as PE sections, one EFI executable
//! the firmware boots directly (UAPI Group "Unified Kernel Image" specification).
//!
//! The layout follows the PE/COFF specification and the placement systemd's `ukify` uses:
//! - new section headers are appended to the stub's section table, which must have room before
//!   the first section's raw data (`SizeOfHeaders` rounded up to `FileAlignment`);
//! - each new section's `VirtualAddress` follows the previous section's end, rounded up to
//!   `SectionAlignment`; its raw data starts at the end of the file so far rounded up to
//!   4 KiB ([`PAYLOAD_FILE_ALIGNMENT`], a multiple of `FileAlignment`) and is zero-padded to a
//!   multiple of `FileAlignment`;
//! - no byte of the file lies outside the headers and the sections: each section's
//!   `SizeOfRawData` reaches the next section's raw data (the zero padding before a 4 KiB
//!   boundary belongs to the section before it), and `SizeOfHeaders` reaches the first one.
//!   The Authenticode hash covers the headers and each section's raw data ("Windows
//!   Authenticode Portable Executable Signature Format", "Calculating the PE Image Hash",
//!   steps 9-13), leaving out bytes between sections, while tools such as `osslsigncode` hash
//!   the file flat; without gaps both give the same digest. Loaders copy
//!   `min(VirtualSize, SizeOfRawData)` bytes of a section (PE format, "Section Table":
//!   `SizeOfRawData` may exceed `VirtualSize`), so the padding is never loaded;
//! - order `.osrel`, `.cmdline`, `.uname`, `.initrd`, `.linux`: the kernel last, with a virtual
//!   size of at least the kernel's own `SizeOfImage`, so the memory after it belongs to it
//!   when the stub hands over to it in place (EFI handover protocol);
//! - data sections are `IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ`; `.linux` is
//!   `IMAGE_SCN_CNT_CODE | IMAGE_SCN_MEM_READ`, as current ukify sets it, because stubs that
//!   use the handover protocol run the kernel's entry code where the firmware loaded it;
//! - `NumberOfSections`, `SizeOfHeaders`, `SizeOfInitializedData` (plus each new section's
//!   virtual size) and `SizeOfImage` are updated; `CheckSum` is set to zero (UEFI firmware does
//!   not check it; ukify writes zero too); `TimeDateStamp` is the stub's, so the output is a
//!   pure function of the inputs.
//!
//! The initrd and kernel can come from files and are streamed, never loaded whole.

#![deny(missing_docs)]

mod pe;

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use pe::{round_up, PeImage, SectionHeader, MACHINE_AMD64, SECTION_HEADER_LEN};
use uvmkit_filetree::CopyError;

/// `IMAGE_SCN_CNT_CODE`.
pub const SCN_CNT_CODE: u32 = 0x0000_0020;
/// `IMAGE_SCN_CNT_INITIALIZED_DATA`.
pub const SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
/// `IMAGE_SCN_MEM_READ`.
pub const SCN_MEM_READ: u32 = 0x4000_0000;

/// File offset alignment of every section this crate adds.
pub const PAYLOAD_FILE_ALIGNMENT: u32 = 4096;

/// Where a section's contents come from.
#[derive(Clone, Copy, Debug)]
pub enum SectionData<'a> {
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// A file, streamed when the UKI is written; its size is read when the layout is planned.
    File(&'a Path),
}

/// The payload sections of a UKI.
#[derive(Clone, Copy, Debug)]
pub struct UkiSections<'a> {
    /// `.osrel`: the os-release file describing the image.
    pub osrel: &'a [u8],
    /// `.cmdline`: the kernel command line (no NUL bytes).
    pub cmdline: &'a [u8],
    /// `.uname`: the kernel release (`uname -r`), if known.
    pub uname: Option<&'a [u8]>,
    /// `.initrd`: the initramfs, if any.
    pub initrd: Option<SectionData<'a>>,
    /// `.linux`: the kernel image (an x86 bzImage for the x86-64 stub).
    pub linux: SectionData<'a>,
}

/// One section of the written image, as its header describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UkiSection {
    /// Section name (`.text`, `.linux`...).
    pub name: String,
    /// Address relative to the image base once loaded.
    pub virtual_address: u32,
    /// Size once loaded (the contents' length; more for `.linux`).
    pub virtual_size: u32,
    /// Offset of the raw data in the file.
    pub file_offset: u32,
    /// Size of the raw data in the file (a multiple of `FileAlignment`).
    pub raw_size: u32,
    /// `IMAGE_SCN_*` flags.
    pub characteristics: u32,
}

/// The layout [`write_uki`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UkiLayout {
    /// Every section, the stub's first, then the added ones in file order.
    pub sections: Vec<UkiSection>,
    /// `SizeOfImage` of the output.
    pub size_of_image: u32,
    /// Length of the output file in bytes.
    pub file_size: u64,
}

/// Errors from assembling a UKI.
#[derive(Debug, thiserror::Error)]
pub enum UkiError {
    /// The stub is not a PE image this writer understands.
    #[error("the EFI stub is not a usable PE image ({0}): pass systemd-boot's linuxx64.efi.stub")]
    NotPe(String),
    /// The stub carries an Authenticode signature that appending would invalidate.
    #[error("the EFI stub is signed; adding sections would break the signature: use the unsigned stub and sign the UKI afterwards")]
    SignedStub,
    /// The stub already has a section the UKI adds.
    #[error("the EFI stub already has a {0} section: pass the plain systemd-boot stub, not a finished UKI")]
    SectionExists(String),
    /// A stub section's raw data is not aligned as the header says it must be.
    #[error("the EFI stub's section {name} starts at file offset {offset:#x}, not a multiple of FileAlignment {alignment:#x}: use an unmodified systemd-boot stub")]
    UnalignedStubSection {
        /// The section's name.
        name: String,
        /// Its `PointerToRawData`.
        offset: u32,
        /// The optional header's `FileAlignment`.
        alignment: u32,
    },
    /// No room for the new section headers.
    #[error("the EFI stub has no room for {count} more section headers (they would end at {needed:#x}, the headers end at {available:#x}): use a systemd-boot stub built with header space")]
    NoHeaderRoom {
        /// Section headers to add.
        count: usize,
        /// File offset where they would end.
        needed: usize,
        /// File offset where the header space ends.
        available: usize,
    },
    /// The header space the new section headers need holds data.
    #[error("the EFI stub has data after its section table at {offset:#x}, where the new section headers go: use an unmodified systemd-boot stub")]
    HeaderNotEmpty {
        /// File offset of the first non-zero byte.
        offset: usize,
    },
    /// The command line holds a NUL byte.
    #[error("the kernel command line contains a NUL byte at position {0}: the stub would cut it there; remove it")]
    CmdlineHasNul(usize),
    /// The kernel does not look like a bzImage.
    #[error("the kernel {0} is not an x86 bzImage (no boot-sector signature 0xAA55 and \"HdrS\" setup header): pass /boot/vmlinuz-*")]
    NotABzImage(String),
    /// The result would not fit PE's 32-bit offsets.
    #[error("the UKI would be larger than 4 GiB, beyond PE's 32-bit file offsets and addresses: shrink the initrd")]
    TooLarge,
    /// Reading an input file failed.
    #[error("cannot read {path}: {source}")]
    ReadInput {
        /// The input file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// An input file changed size between planning and writing.
    #[error("{path} changed size while the UKI was written ({actual} bytes, expected {expected}): rebuild")]
    InputChanged {
        /// The input file.
        path: PathBuf,
        /// Its size when the layout was planned.
        expected: u64,
        /// Its size when written.
        actual: u64,
    },
    /// Writing the output failed.
    #[error("cannot write the UKI: {0}")]
    Write(io::Error),
}

/// A section to append, with the size of its contents.
struct NewSection<'a> {
    header: SectionHeader,
    data: SectionData<'a>,
    len: u64,
}

fn data_len(data: &SectionData<'_>) -> Result<u64, UkiError> {
    match data {
        SectionData::Bytes(b) => Ok(b.len() as u64),
        SectionData::File(path) => std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|source| UkiError::ReadInput {
                path: path.to_path_buf(),
                source,
            }),
    }
}

/// The first `n` bytes of `data` (fewer if it is shorter).
fn data_prefix(data: &SectionData<'_>, n: usize) -> Result<Vec<u8>, UkiError> {
    match data {
        SectionData::Bytes(b) => Ok(b[..b.len().min(n)].to_vec()),
        SectionData::File(path) => {
            let err = |source| UkiError::ReadInput {
                path: path.to_path_buf(),
                source,
            };
            let mut head = Vec::with_capacity(n);
            File::open(path)
                .map_err(err)?
                .take(n as u64)
                .read_to_end(&mut head)
                .map_err(err)?;
            Ok(head)
        }
    }
}

fn describe(data: &SectionData<'_>) -> String {
    match data {
        SectionData::Bytes(_) => "(in memory)".to_string(),
        SectionData::File(path) => path.display().to_string(),
    }
}

fn section_name(name: &str) -> [u8; 8] {
    let mut n = [0u8; 8];
    n[..name.len()].copy_from_slice(name.as_bytes());
    n
}

fn to_u32(v: u64) -> Result<u32, UkiError> {
    u32::try_from(v).map_err(|_| UkiError::TooLarge)
}

/// Writes a UKI made of `stub` and `sections` to `out`; returns the section table written.
pub fn write_uki(stub: &[u8], sections: &UkiSections<'_>, out: &mut impl Write) -> Result<UkiLayout, UkiError> {
    let mut image = PeImage::parse(stub)?;
    if image.security_directory != (0, 0) {
        return Err(UkiError::SignedStub);
    }
    if let Some(at) = sections.cmdline.iter().position(|&b| b == 0) {
        return Err(UkiError::CmdlineHasNul(at));
    }
    let linux_size_of_image = check_linux(&image, &sections.linux)?;
    let stub_end = strip_symbol_table(&mut image, stub);
    let wanted = wanted_sections(sections);
    let wanted_count = wanted.len();
    check_stub_sections(&image, &wanted)?;
    claim_header_room(&mut image, stub, stub_end, wanted.len())?;
    let (mut added, size_of_image) = place_sections(&mut image, wanted, stub_end as u64, linux_size_of_image)?;
    cover_gaps(&mut image);
    for (s, header) in added
        .iter_mut()
        .zip(&image.sections[image.sections.len() - wanted_count..])
    {
        s.header = header.clone();
    }

    let mut head = stub[..stub_end].to_vec();
    image.patch(&mut head, size_of_image);
    out.write_all(&head).map_err(UkiError::Write)?;
    let mut written = head.len() as u64;
    let mut buf = vec![0u8; 256 * 1024];
    for s in &added {
        let pointer = u64::from(s.header.pointer_to_raw_data);
        write_zeros(out, pointer - written)?;
        copy_section(&s.data, s.len, &mut buf, out)?;
        write_zeros(out, u64::from(s.header.size_of_raw_data) - s.len)?;
        written = pointer + u64::from(s.header.size_of_raw_data);
    }

    let sections = image
        .sections
        .iter()
        .map(|s| UkiSection {
            name: s.name_str(),
            virtual_address: s.virtual_address,
            virtual_size: s.virtual_size,
            file_offset: s.pointer_to_raw_data,
            raw_size: s.size_of_raw_data,
            characteristics: s.characteristics,
        })
        .collect();
    Ok(UkiLayout {
        sections,
        size_of_image,
        file_size: written,
    })
}

/// Checks that an x86 stub gets an x86 bzImage, and returns the kernel's own `SizeOfImage`
/// (0 when it has none), which its section's virtual size must cover.
fn check_linux(image: &PeImage, linux: &SectionData<'_>) -> Result<u64, UkiError> {
    // The kernel's setup header (Documentation/arch/x86/boot.rst): boot_flag 0xAA55 at 0x1fe,
    // "HdrS" at 0x202. The x86 stub refuses anything else at boot; refuse it here instead.
    let linux_head = data_prefix(linux, 4096)?;
    if image.machine == MACHINE_AMD64
        && (linux_head.get(0x1fe..0x200) != Some(&[0x55, 0xaa]) || linux_head.get(0x202..0x206) != Some(b"HdrS"))
    {
        return Err(UkiError::NotABzImage(describe(linux)));
    }
    Ok(PeImage::size_of_image(&linux_head).map_or(0, u64::from))
}

/// Where the stub's bytes that the UKI keeps end. Old stubs keep a COFF symbol table at the
/// end of the file; image files should not have one, and new sections must not follow it, so
/// it is dropped when it is last (as ukify does).
fn strip_symbol_table(image: &mut PeImage, stub: &[u8]) -> usize {
    if image.pointer_to_symbol_table == 0 {
        return stub.len();
    }
    let start = image.pointer_to_symbol_table as usize;
    let symbols_end = start.saturating_add(18usize.saturating_mul(image.number_of_symbols as usize));
    let strings = stub
        .get(symbols_end..symbols_end + 4)
        .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()));
    if symbols_end.saturating_add(strings as usize) == stub.len() || symbols_end == stub.len() {
        image.symbols_stripped = true;
        return start;
    }
    stub.len()
}

/// The sections to add, in file order, with their characteristics: `.osrel`, `.cmdline`,
/// `.uname` and `.initrd` when given, and `.linux` last.
fn wanted_sections<'a>(sections: &UkiSections<'a>) -> Vec<(&'static str, SectionData<'a>, u32)> {
    let data_flags = SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ;
    let mut wanted: Vec<(&str, SectionData<'_>, u32)> = vec![
        (".osrel", SectionData::Bytes(sections.osrel), data_flags),
        (".cmdline", SectionData::Bytes(sections.cmdline), data_flags),
    ];
    if let Some(uname) = sections.uname {
        wanted.push((".uname", SectionData::Bytes(uname), data_flags));
    }
    if let Some(initrd) = sections.initrd {
        wanted.push((".initrd", initrd, data_flags));
    }
    wanted.push((".linux", sections.linux, SCN_CNT_CODE | SCN_MEM_READ));
    wanted
}

/// Refuses a stub that already has one of the `wanted` sections, or whose sections are not
/// aligned as its `FileAlignment` says.
fn check_stub_sections(image: &PeImage, wanted: &[(&str, SectionData<'_>, u32)]) -> Result<(), UkiError> {
    for s in &image.sections {
        let name = s.name_str();
        if wanted.iter().any(|(n, _, _)| *n == name) {
            return Err(UkiError::SectionExists(name));
        }
        if s.size_of_raw_data > 0 && s.pointer_to_raw_data % image.file_alignment != 0 {
            return Err(UkiError::UnalignedStubSection {
                name,
                offset: s.pointer_to_raw_data,
                alignment: image.file_alignment,
            });
        }
    }
    Ok(())
}

/// Checks that `count` more section headers fit after the stub's table, in zeroed header
/// space, and sets `SizeOfHeaders` to the whole header room. That room is everything before
/// the first section's raw data and within `SizeOfHeaders` rounded up to `FileAlignment`
/// (the rest of that block is padding).
fn claim_header_room(image: &mut PeImage, stub: &[u8], stub_end: usize, count: usize) -> Result<(), UkiError> {
    let first_raw = image
        .sections
        .iter()
        .filter(|s| s.size_of_raw_data > 0)
        .map(|s| s.pointer_to_raw_data as usize)
        .min()
        .unwrap_or(usize::MAX);
    let headers_end = (round_up(u64::from(image.size_of_headers), image.file_alignment) as usize).min(first_raw);
    let old_table_end = image.section_table_offset + image.sections.len() * SECTION_HEADER_LEN;
    let new_table_end = old_table_end + count * SECTION_HEADER_LEN;
    if new_table_end > headers_end || new_table_end > stub_end {
        return Err(UkiError::NoHeaderRoom {
            count,
            needed: new_table_end,
            available: headers_end,
        });
    }
    if let Some(i) = stub[old_table_end..new_table_end].iter().position(|&b| b != 0) {
        return Err(UkiError::HeaderNotEmpty {
            offset: old_table_end + i,
        });
    }
    image.size_of_headers = headers_end as u32;
    Ok(())
}

/// Gives each of `wanted` its virtual address (after the stub's last section) and file
/// offset (from `file_pos`, the end of the kept stub), adds its header to `image`, and returns
/// the sections with the new `SizeOfImage`.
fn place_sections<'a>(
    image: &mut PeImage,
    wanted: Vec<(&'static str, SectionData<'a>, u32)>,
    mut file_pos: u64,
    linux_size_of_image: u64,
) -> Result<(Vec<NewSection<'a>>, u32), UkiError> {
    let mut next_va = image
        .sections
        .iter()
        .map(|s| {
            // A zero VirtualSize (object-file style) means the raw size.
            let size = if s.virtual_size == 0 {
                s.size_of_raw_data
            } else {
                s.virtual_size
            };
            u64::from(s.virtual_address) + u64::from(size)
        })
        .max()
        .unwrap_or(u64::from(image.size_of_headers));
    let mut added = Vec::with_capacity(wanted.len());
    for (name, data, characteristics) in wanted {
        let len = data_len(&data)?;
        let virtual_size = if name == ".linux" {
            len.max(linux_size_of_image)
        } else {
            len
        };
        let va = round_up(next_va, image.section_alignment);
        // Added sections start PAYLOAD_FILE_ALIGNMENT-aligned in the file (a multiple of
        // FileAlignment, so still valid PE), so the kernel and initrd can be shared by
        // containers with larger sectors (the hybrid ISO's 2 KiB blocks).
        let pointer = round_up(file_pos, u32::max(image.file_alignment, PAYLOAD_FILE_ALIGNMENT));
        let raw_size = round_up(len, image.file_alignment);
        let header = SectionHeader {
            name: section_name(name),
            virtual_size: to_u32(virtual_size)?,
            virtual_address: to_u32(va)?,
            size_of_raw_data: to_u32(raw_size)?,
            pointer_to_raw_data: to_u32(pointer)?,
            characteristics,
        };
        to_u32(va + virtual_size)?;
        to_u32(pointer + raw_size)?;
        image.size_of_initialized_data = image.size_of_initialized_data.wrapping_add(header.virtual_size);
        next_va = va + virtual_size;
        file_pos = pointer + raw_size;
        image.sections.push(header.clone());
        added.push(NewSection { header, data, len });
    }
    let size_of_image = to_u32(round_up(next_va, image.section_alignment))?;
    Ok((added, size_of_image))
}

/// Extends raw data so that no byte of the file lies outside the headers and the sections:
/// `SizeOfHeaders` reaches the first section's raw data (when that still lies before every
/// section's address, so the loaded headers overlap nothing), and each section's
/// `SizeOfRawData` reaches the next section's raw data in file order. Sections without raw
/// data are left alone.
fn cover_gaps(image: &mut PeImage) {
    let mut order: Vec<usize> = (0..image.sections.len())
        .filter(|&i| image.sections[i].size_of_raw_data > 0)
        .collect();
    order.sort_by_key(|&i| image.sections[i].pointer_to_raw_data);
    if let Some(&first) = order.first() {
        let first_raw = image.sections[first].pointer_to_raw_data;
        let lowest_address = image.sections.iter().map(|s| s.virtual_address).min().unwrap_or(0);
        if image.size_of_headers < first_raw && first_raw <= lowest_address {
            image.size_of_headers = first_raw;
        }
    }
    for pair in order.windows(2) {
        let next = image.sections[pair[1]].pointer_to_raw_data;
        let s = &mut image.sections[pair[0]];
        let end = s.pointer_to_raw_data + s.size_of_raw_data;
        if end < next {
            s.size_of_raw_data = next - s.pointer_to_raw_data;
        }
    }
}

fn write_zeros(out: &mut impl Write, mut n: u64) -> Result<(), UkiError> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..k]).map_err(UkiError::Write)?;
        n -= k as u64;
    }
    Ok(())
}

/// Streams exactly `len` bytes of `data` to `out`.
fn copy_section(data: &SectionData<'_>, len: u64, buf: &mut [u8], out: &mut impl Write) -> Result<(), UkiError> {
    let path = match data {
        SectionData::Bytes(b) => return out.write_all(b).map_err(UkiError::Write),
        SectionData::File(path) => *path,
    };
    let err = |source| UkiError::ReadInput {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(err)?;
    let actual = file.metadata().map_err(err)?.len();
    if actual != len {
        return Err(UkiError::InputChanged {
            path: path.to_path_buf(),
            expected: len,
            actual,
        });
    }
    uvmkit_filetree::copy_exact(&mut file, len, out, buf).map_err(|e| match e {
        CopyError::Read(source) => err(source),
        CopyError::Write(e) => UkiError::Write(e),
        CopyError::Short { copied } => UkiError::InputChanged {
            path: path.to_path_buf(),
            expected: len,
            actual: copied,
        },
    })
}
