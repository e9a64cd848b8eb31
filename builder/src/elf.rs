//! Just enough ELF64 (little-endian) to build an image: a program's interpreter and the
//! libraries it needs (`PT_INTERP`, `DT_NEEDED`, `DT_RUNPATH`/`DT_RPATH`), and a section's
//! bytes (a kernel module's `.modinfo`).
//!
//! Layouts from the System V ABI, "ELF Header", "Program Header", "Dynamic Section" and
//! "Sections". Everything is read with positioned reads of the few bytes needed, so looking at
//! an 80 MB binary costs a few kilobytes of I/O. The files come from packages, so every
//! offset, size and count is checked against the file's length and a few fixed caps before
//! anything is allocated or added.

use std::io;

/// Reads bytes at an offset: a file (`FileExt::read_exact_at`) or a slice.
pub trait ReadAt {
    /// Fills `buf` from `offset`; short data is an error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The length of the data in bytes.
    fn data_len(&self) -> io::Result<u64>;
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }

    fn data_len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start.checked_add(buf.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
        let src = self.get(start..end).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn data_len(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

/// Why an ELF file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// Reading failed or the file is truncated.
    #[error("cannot read ELF data: {0}")]
    Io(#[from] io::Error),
    /// The file is ELF but not a form this reader handles, or is inconsistent.
    #[error("unsupported ELF file: {0}")]
    Unsupported(String),
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

/// The largest program header table Linux loads (`load_elf_phdrs` in `fs/binfmt_elf.c`
/// refuses more than 64 KiB).
const MAX_PROGRAM_HEADERS_BYTES: u64 = 64 << 10;
/// The longest library name or search path read (`PATH_MAX`).
const MAX_NAME_BYTES: u64 = 4096;
/// The longest section name read.
const MAX_SECTION_NAME_BYTES: u64 = 256;
/// More `DT_NEEDED` entries than any real program has (they number in the tens); a cap
/// keeps a hostile file from naming one long string a million times.
const MAX_NEEDED: usize = 1024;

/// What the dynamic linker needs to run a program or load a library.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DynamicInfo {
    /// `PT_INTERP`: the program interpreter (`/lib64/ld-linux-x86-64.so.2`).
    pub interpreter: Option<String>,
    /// `DT_NEEDED`, in order.
    pub needed: Vec<String>,
    /// `DT_RUNPATH`, or `DT_RPATH` when there is no RUNPATH, split on `:`.
    pub search_path: Vec<String>,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// The ELF header fields this reader uses.
struct Header {
    phoff: u64,
    phentsize: u16,
    phnum: u16,
    shoff: u64,
    shentsize: u16,
    shnum: u16,
    shstrndx: u16,
}

/// True when `magic` (the first 4 bytes of a file) is an ELF magic number.
pub fn is_elf(magic: &[u8]) -> bool {
    magic.starts_with(b"\x7fELF")
}

fn header(r: &(impl ReadAt + ?Sized)) -> Result<Option<Header>, ElfError> {
    let mut h = [0u8; 64];
    match r.read_exact_at(&mut h, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    if !is_elf(&h) {
        return Ok(None);
    }
    if h[4] != 2 || h[5] != 1 {
        return Err(ElfError::Unsupported(
            "only 64-bit little-endian ELF (x86_64) is supported".into(),
        ));
    }
    Ok(Some(Header {
        phoff: u64_at(&h, 0x20),
        shoff: u64_at(&h, 0x28),
        phentsize: u16_at(&h, 0x36),
        phnum: u16_at(&h, 0x38),
        shentsize: u16_at(&h, 0x3a),
        shnum: u16_at(&h, 0x3c),
        shstrndx: u16_at(&h, 0x3e),
    }))
}

struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// `size` bytes at `offset`, allocated only once they are known to lie inside the file.
fn read_range(r: &(impl ReadAt + ?Sized), offset: u64, size: u64, what: &str) -> Result<Vec<u8>, ElfError> {
    let file_len = r.data_len()?;
    match offset.checked_add(size) {
        Some(end) if end <= file_len => {}
        _ => {
            return Err(ElfError::Unsupported(format!(
                "the {what} ({size} bytes at offset {offset}) lies beyond the end of the {file_len}-byte file"
            )))
        }
    }
    let mut data = vec![0u8; size as usize];
    r.read_exact_at(&mut data, offset)?;
    Ok(data)
}

/// `base + add`, or an error naming `what` when that overflows.
fn offset_sum(base: u64, add: u64, what: &str) -> Result<u64, ElfError> {
    base.checked_add(add)
        .ok_or_else(|| ElfError::Unsupported(format!("the {what} offset overflows 64 bits")))
}

/// The NUL-terminated string at `offset`, which must end before `limit` and within
/// `max_len` bytes.
fn read_cstr(r: &(impl ReadAt + ?Sized), offset: u64, limit: u64, max_len: u64) -> Result<String, ElfError> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 64];
    let mut pos = offset;
    let limit = limit.min(offset.saturating_add(max_len + 1));
    while pos < limit {
        let n = (limit - pos).min(chunk.len() as u64) as usize;
        r.read_exact_at(&mut chunk[..n], pos)?;
        if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return String::from_utf8(out).map_err(|_| ElfError::Unsupported("a name is not UTF-8".into()));
        }
        out.extend_from_slice(&chunk[..n]);
        pos += n as u64;
    }
    Err(ElfError::Unsupported(format!(
        "unterminated string, or one longer than {max_len} bytes, at offset {offset}"
    )))
}

/// Reads the interpreter and dynamic dependencies; `Ok(None)` when the data is not ELF.
/// A static program gives an empty [`DynamicInfo`].
pub fn dynamic_info(r: &(impl ReadAt + ?Sized)) -> Result<Option<DynamicInfo>, ElfError> {
    let Some(h) = header(r)? else { return Ok(None) };
    if h.phnum == 0 {
        // A relocatable object (`.o`, a kernel module) has no program headers, and its
        // e_phentsize is 0.
        return Ok(Some(DynamicInfo::default()));
    }
    if h.phentsize < 56 {
        return Err(ElfError::Unsupported(format!("program header size {}", h.phentsize)));
    }
    let table_size = u64::from(h.phentsize) * u64::from(h.phnum);
    if table_size > MAX_PROGRAM_HEADERS_BYTES {
        return Err(ElfError::Unsupported(format!(
            "a program header table of {table_size} bytes; Linux loads at most {MAX_PROGRAM_HEADERS_BYTES}"
        )));
    }
    let table = read_range(r, h.phoff, table_size, "program header table")?;
    let segments: Vec<Segment> = table
        .chunks(h.phentsize as usize)
        .map(|p| Segment {
            kind: u32_at(p, 0),
            offset: u64_at(p, 8),
            vaddr: u64_at(p, 16),
            filesz: u64_at(p, 32),
        })
        .collect();
    let mut info = DynamicInfo::default();
    if let Some(interp) = segments.iter().find(|s| s.kind == PT_INTERP) {
        let end = offset_sum(interp.offset, interp.filesz, "PT_INTERP")?;
        info.interpreter = Some(read_cstr(r, interp.offset, end, MAX_NAME_BYTES)?);
    }
    let Some(dynamic) = segments.iter().find(|s| s.kind == PT_DYNAMIC) else {
        return Ok(Some(info));
    };
    let entries = read_range(r, dynamic.offset, dynamic.filesz, "dynamic section")?;
    let (mut strtab, mut strsz) = (None, 0u64);
    let (mut needed, mut runpath, mut rpath) = (Vec::new(), None, None);
    for e in entries.chunks_exact(16) {
        let (tag, val) = (u64_at(e, 0), u64_at(e, 8));
        match tag {
            DT_NULL => break,
            DT_NEEDED if needed.len() == MAX_NEEDED => {
                return Err(ElfError::Unsupported(format!(
                    "more than {MAX_NEEDED} DT_NEEDED entries"
                )))
            }
            DT_NEEDED => needed.push(val),
            DT_STRTAB => strtab = Some(val),
            DT_STRSZ => strsz = val,
            DT_RUNPATH => runpath = Some(val),
            DT_RPATH => rpath = Some(val),
            _ => {}
        }
    }
    if needed.is_empty() && runpath.is_none() && rpath.is_none() {
        return Ok(Some(info));
    }
    // DT_STRTAB is a virtual address: map it to a file offset through the PT_LOAD segments.
    let strtab_addr = strtab.ok_or_else(|| ElfError::Unsupported("dynamic section without DT_STRTAB".into()))?;
    let load = segments
        .iter()
        .find(|s| s.kind == PT_LOAD && s.vaddr <= strtab_addr && strtab_addr - s.vaddr < s.filesz)
        .ok_or_else(|| ElfError::Unsupported("DT_STRTAB lies outside every loaded segment".into()))?;
    let strtab_off = offset_sum(load.offset, strtab_addr - load.vaddr, "DT_STRTAB")?;
    let end = offset_sum(strtab_off, strsz, "DT_STRSZ")?;
    for n in needed {
        info.needed.push(read_cstr(
            r,
            offset_sum(strtab_off, n, "DT_NEEDED")?,
            end,
            MAX_NAME_BYTES,
        )?);
    }
    if let Some(p) = runpath.or(rpath) {
        let text = read_cstr(r, offset_sum(strtab_off, p, "DT_RUNPATH")?, end, MAX_NAME_BYTES)?;
        info.search_path = text.split(':').filter(|s| !s.is_empty()).map(str::to_string).collect();
    }
    Ok(Some(info))
}

/// The bytes of the section named `name`, if the file has one; `Ok(None)` also when the data
/// is not ELF.
pub fn section(r: &(impl ReadAt + ?Sized), name: &str) -> Result<Option<Vec<u8>>, ElfError> {
    let Some(h) = header(r)? else { return Ok(None) };
    if h.shnum == 0 {
        return Ok(None);
    }
    if h.shentsize < 64 || h.shstrndx >= h.shnum {
        return Err(ElfError::Unsupported("bad section header table".into()));
    }
    let table_size = u64::from(h.shentsize) * u64::from(h.shnum);
    let table = read_range(r, h.shoff, table_size, "section header table")?;
    let sections: Vec<&[u8]> = table.chunks(h.shentsize as usize).collect();
    let names = sections[h.shstrndx as usize];
    let (names_off, names_size) = (u64_at(names, 0x18), u64_at(names, 0x20));
    let names_end = offset_sum(names_off, names_size, "section name table")?;
    for s in &sections {
        let name_off = offset_sum(names_off, u64::from(u32_at(s, 0)), "section name")?;
        let sname = read_cstr(r, name_off, names_end, MAX_SECTION_NAME_BYTES)?;
        if sname == name {
            let (off, size) = (u64_at(s, 0x18), u64_at(s, 0x20));
            return Ok(Some(read_range(r, off, size, name)?));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_dynamic_program() {
        // The test binary itself is a dynamically linked x86_64 program on Linux hosts.
        let exe = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        let info = dynamic_info(&exe).unwrap().expect("test binary is ELF");
        let interp = info.interpreter.expect("dynamically linked");
        assert!(interp.contains("ld-linux"), "{interp}");
        assert!(
            info.needed.iter().any(|n| n.starts_with("libc.so")),
            "{:?}",
            info.needed
        );
        assert!(section(&exe, ".text").unwrap().is_some());
        assert!(section(&exe, ".no-such-section").unwrap().is_none());
    }

    #[test]
    fn non_elf_and_truncated_data() {
        assert_eq!(dynamic_info(&b"#!/bin/sh\necho hi\n"[..]).unwrap(), None);
        assert_eq!(dynamic_info(&b"\x7fEL"[..]).unwrap(), None);
        let mut h = [0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 1; // 32-bit
        h[5] = 1;
        assert!(matches!(dynamic_info(&h[..]), Err(ElfError::Unsupported(_))));
    }
}
