//! UKIs read back by objdump (binutils' PE reader) and the `object` crate.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::read::pe::PeFile64;
use object::LittleEndian as LE;
use uvmkit_uki::{
    write_uki, SectionData, UkiError, UkiLayout, UkiSections, SCN_CNT_CODE, SCN_CNT_INITIALIZED_DATA, SCN_MEM_READ,
};

/// A minimal PE32+ x86-64 EFI application: `.text` (a `ret`) and `.data`, 4 KiB sections,
/// 512-byte file alignment, `SizeOfHeaders` = `header_size`, a non-zero checksum and timestamp.
fn synthetic_stub(header_size: u32) -> Vec<u8> {
    let mut b = vec![0u8; header_size as usize + 0x400];
    let put16 = |b: &mut Vec<u8>, o: usize, v: u16| b[o..o + 2].copy_from_slice(&v.to_le_bytes());
    let put32 = |b: &mut Vec<u8>, o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    b[0..2].copy_from_slice(b"MZ");
    put32(&mut b, 0x3c, 0x40);
    b[0x40..0x44].copy_from_slice(b"PE\0\0");
    let coff = 0x44;
    put16(&mut b, coff, 0x8664);
    put16(&mut b, coff + 2, 2);
    put32(&mut b, coff + 4, 0x1234_5678); // TimeDateStamp
    put16(&mut b, coff + 16, 0xf0); // SizeOfOptionalHeader: 112 + 16 directories
    put16(&mut b, coff + 18, 0x0206);
    let opt = coff + 20;
    put16(&mut b, opt, 0x20b);
    put32(&mut b, opt + 4, 0x200); // SizeOfCode
    put32(&mut b, opt + 8, 0x200); // SizeOfInitializedData
    put32(&mut b, opt + 16, 0x1000); // AddressOfEntryPoint
    put32(&mut b, opt + 20, 0x1000); // BaseOfCode
    put32(&mut b, opt + 32, 0x1000); // SectionAlignment
    put32(&mut b, opt + 36, 0x200); // FileAlignment
    put32(&mut b, opt + 56, 0x3000); // SizeOfImage
    put32(&mut b, opt + 60, header_size); // SizeOfHeaders
    put32(&mut b, opt + 64, 0xdead); // CheckSum
    put16(&mut b, opt + 68, 10); // EFI application
    put32(&mut b, opt + 108, 16); // NumberOfRvaAndSizes
    let table = opt + 0xf0;
    let section = |b: &mut Vec<u8>, i: usize, name: &[u8], va: u32, vs: u32, ptr: u32, flags: u32| {
        let o = table + i * 40;
        b[o..o + name.len()].copy_from_slice(name);
        b[o + 8..o + 12].copy_from_slice(&vs.to_le_bytes());
        b[o + 12..o + 16].copy_from_slice(&va.to_le_bytes());
        b[o + 16..o + 20].copy_from_slice(&0x200u32.to_le_bytes());
        b[o + 20..o + 24].copy_from_slice(&ptr.to_le_bytes());
        b[o + 36..o + 40].copy_from_slice(&flags.to_le_bytes());
    };
    section(&mut b, 0, b".text", 0x1000, 0x10, header_size, 0x6000_0020);
    section(&mut b, 1, b".data", 0x2000, 0x8, header_size + 0x200, 0xc000_0040);
    b[header_size as usize] = 0xc3;
    b
}

/// Bytes with the x86 boot setup header's signatures, standing in for a bzImage.
fn fake_bzimage(len: usize) -> Vec<u8> {
    let mut k: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
    k[0x1fe] = 0x55;
    k[0x1ff] = 0xaa;
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("uvmkit-uki-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

use uvmkit_testkit::have;

/// `objdump -h` rows as (name, size, vma, file offset). binutils reports the smaller of
/// VirtualSize and SizeOfRawData as the size.
fn objdump_sections(file: &Path) -> Vec<(String, u64, u64, u64)> {
    let out = Command::new("objdump").arg("-h").arg(file).output().unwrap();
    assert!(
        out.status.success(),
        "objdump -h failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() == 7 && f[0].parse::<u32>().is_ok() {
                let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
                Some((f[1].to_string(), hex(f[2]), hex(f[3]), hex(f[5])))
            } else {
                None
            }
        })
        .collect()
}

/// Checks `uki` against `layout` with the `object` crate and returns the parsed section data.
fn check_with_object(uki: &[u8], layout: &UkiLayout, stub: &[u8]) {
    let pe = PeFile64::parse(uki).expect("object parses the UKI");
    let stub_pe = PeFile64::parse(stub).unwrap();
    let nt = pe.nt_headers();
    let opt = &nt.optional_header;
    assert_eq!(opt.size_of_image.get(LE), layout.size_of_image);
    assert_eq!(opt.check_sum.get(LE), 0);
    assert_eq!(
        nt.file_header.time_date_stamp.get(LE),
        stub_pe.nt_headers().file_header.time_date_stamp.get(LE)
    );
    assert_eq!(
        nt.file_header.number_of_sections.get(LE) as usize,
        layout.sections.len()
    );
    assert_eq!(uki.len() as u64, layout.file_size);
    let fa = opt.file_alignment.get(LE);
    let sa = opt.section_alignment.get(LE);
    let table: Vec<_> = pe.section_table().iter().collect();
    assert_eq!(table.len(), layout.sections.len());
    let stub_count = stub_pe.section_table().len();
    let mut prev_end = 0u32;
    for (i, (h, s)) in table.iter().zip(&layout.sections).enumerate() {
        let name = String::from_utf8_lossy(h.raw_name()).trim_end_matches('\0').to_string();
        assert_eq!(name, s.name);
        assert_eq!(h.virtual_address.get(LE), s.virtual_address);
        assert_eq!(h.virtual_size.get(LE), s.virtual_size);
        assert_eq!(h.pointer_to_raw_data.get(LE), s.file_offset);
        assert_eq!(h.size_of_raw_data.get(LE), s.raw_size);
        assert_eq!(h.characteristics.get(LE), s.characteristics);
        if i >= stub_count {
            // The stub's own sections are as its linker placed them; ours follow the rules.
            assert_eq!(s.file_offset % fa, 0, "{name} raw data unaligned");
            assert_eq!(s.raw_size % fa, 0, "{name} raw size unaligned");
            assert_eq!(s.virtual_address % sa, 0, "{name} address unaligned");
        }
        assert!(s.virtual_address >= prev_end, "{name} overlaps the previous section");
        prev_end = s.virtual_address + s.virtual_size;
    }
    assert!(prev_end <= layout.size_of_image);
    assert_eq!(layout.sections.last().unwrap().name, ".linux");
    check_no_bytes_outside_sections(uki, layout, opt.size_of_headers.get(LE));
}

/// Every byte of `uki` lies in the headers or in one section's raw data: sorted by file offset,
/// the first section starts at `SizeOfHeaders`, each ends where the next starts, and the last
/// ends the file. Then the Authenticode hash (headers and sections) and a flat hash of the file
/// (osslsigncode's) cover the same bytes.
fn check_no_bytes_outside_sections(uki: &[u8], layout: &UkiLayout, size_of_headers: u32) {
    let mut raw: Vec<(u32, u32, &str)> = layout
        .sections
        .iter()
        .filter(|s| s.raw_size > 0)
        .map(|s| (s.file_offset, s.raw_size, s.name.as_str()))
        .collect();
    raw.sort();
    let mut end = size_of_headers;
    for (offset, size, name) in raw {
        assert_eq!(
            offset, end,
            "{name} starts at {offset:#x}; the bytes before it end at {end:#x}"
        );
        end = offset + size;
    }
    assert_eq!(u64::from(end), uki.len() as u64, "bytes after the last section");
}

fn section_bytes<'a>(uki: &'a [u8], layout: &UkiLayout, name: &str) -> &'a [u8] {
    let s = layout.sections.iter().find(|s| s.name == name).unwrap();
    let start = s.file_offset as usize;
    &uki[start..start + (s.virtual_size.min(s.raw_size)) as usize]
}

#[test]
fn synthetic_stub_gets_all_sections_in_order() {
    let dir = scratch("synthetic");
    let stub = synthetic_stub(0x400);
    let kernel = fake_bzimage(100_000);
    let initrd_path = dir.join("initrd");
    let initrd: Vec<u8> = (0..3_000_001u32).map(|i| (i % 253) as u8).collect();
    fs::write(&initrd_path, &initrd).unwrap();
    let sections = UkiSections {
        osrel: b"ID=uvmkit\nVERSION_ID=1\n",
        cmdline: b"console=ttyS0 quiet",
        uname: Some(b"6.1.0-56-amd64"),
        initrd: Some(SectionData::File(&initrd_path)),
        linux: SectionData::Bytes(&kernel),
    };
    let mut uki = Vec::new();
    let layout = write_uki(&stub, &sections, &mut uki).unwrap();

    let names: Vec<&str> = layout.sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [".text", ".data", ".osrel", ".cmdline", ".uname", ".initrd", ".linux"]
    );
    let osrel = &layout.sections[2];
    assert_eq!(
        (osrel.virtual_address, osrel.virtual_size, osrel.file_offset),
        // The first added section starts at the next 4 KiB file offset (PAYLOAD_FILE_ALIGNMENT).
        (0x3000, 23, 0x1000)
    );
    assert_eq!(osrel.characteristics, SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ);
    assert_eq!(layout.sections[6].characteristics, SCN_CNT_CODE | SCN_MEM_READ);
    check_with_object(&uki, &layout, &stub);
    assert_eq!(section_bytes(&uki, &layout, ".cmdline"), b"console=ttyS0 quiet");
    assert_eq!(section_bytes(&uki, &layout, ".uname"), b"6.1.0-56-amd64");
    assert!(section_bytes(&uki, &layout, ".initrd") == initrd.as_slice());
    assert!(section_bytes(&uki, &layout, ".linux") == kernel.as_slice());
    // The stub's own bytes are untouched past the headers.
    assert_eq!(uki[0x400..0x800], stub[0x400..0x800]);

    if have("objdump") {
        let file = dir.join("uki.efi");
        fs::write(&file, &uki).unwrap();
        let rows = objdump_sections(&file);
        let expected: Vec<(String, u64, u64, u64)> = layout
            .sections
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    u64::from(s.virtual_size.min(s.raw_size)),
                    u64::from(s.virtual_address),
                    u64::from(s.file_offset),
                )
            })
            .collect();
        assert_eq!(rows, expected);
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn output_is_deterministic() {
    let stub = synthetic_stub(0x400);
    let kernel = fake_bzimage(5000);
    let sections = UkiSections {
        osrel: b"ID=uvmkit\n",
        cmdline: b"console=ttyS0",
        uname: None,
        initrd: Some(SectionData::Bytes(b"0707010000")),
        linux: SectionData::Bytes(&kernel),
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let la = write_uki(&stub, &sections, &mut a).unwrap();
    let lb = write_uki(&stub, &sections, &mut b).unwrap();
    assert_eq!(la, lb);
    assert!(a == b);
}

#[test]
fn kernel_virtual_size_covers_its_pe_size_of_image() {
    // A bzImage built with the EFI stub is itself a PE file; its SizeOfImage (the memory it
    // needs to decompress) becomes .linux's virtual size, as ukify does.
    let stub = synthetic_stub(0x400);
    let mut kernel = fake_bzimage(0x3000);
    let pe = synthetic_stub(0x400);
    kernel[..0x1fe].copy_from_slice(&pe[..0x1fe]);
    let size_of_image_offset = 0x44 + 20 + 56;
    kernel[size_of_image_offset..size_of_image_offset + 4].copy_from_slice(&0x80_0000u32.to_le_bytes());
    let sections = UkiSections {
        osrel: b"ID=x\n",
        cmdline: b"",
        uname: None,
        initrd: None,
        linux: SectionData::Bytes(&kernel),
    };
    let mut uki = Vec::new();
    let layout = write_uki(&stub, &sections, &mut uki).unwrap();
    let linux = layout.sections.last().unwrap();
    assert_eq!(linux.virtual_size, 0x80_0000);
    assert_eq!(linux.raw_size, 0x3000);
    // The sections before it reach up to its 4 KiB-aligned start.
    let osrel = &layout.sections[2];
    assert_eq!((osrel.file_offset, osrel.raw_size), (0x1000, 0x1000));
    assert_eq!(layout.size_of_image, linux.virtual_address + 0x80_0000);
    check_with_object(&uki, &layout, &stub);
}

#[test]
fn bad_inputs_are_refused_with_reasons() {
    let kernel = fake_bzimage(4096);
    let ok = UkiSections {
        osrel: b"",
        cmdline: b"quiet",
        uname: None,
        initrd: None,
        linux: SectionData::Bytes(&kernel),
    };
    let write = |stub: &[u8], s: &UkiSections| write_uki(stub, s, &mut Vec::new()).unwrap_err();

    // Room for two more headers only (0x198..0x200), five needed with .uname and .initrd.
    let tight = synthetic_stub(0x200);
    let full = UkiSections {
        uname: Some(b"x"),
        initrd: Some(SectionData::Bytes(b"y")),
        ..ok
    };
    assert!(matches!(write(&tight, &full), UkiError::NoHeaderRoom { count: 5, .. }));

    let stub = synthetic_stub(0x400);
    assert!(matches!(
        write(&stub, &UkiSections { cmdline: b"a\0b", ..ok }),
        UkiError::CmdlineHasNul(1)
    ));
    let not_kernel = vec![0u8; 4096];
    assert!(matches!(
        write(
            &stub,
            &UkiSections {
                linux: SectionData::Bytes(&not_kernel),
                ..ok
            }
        ),
        UkiError::NotABzImage(_)
    ));
    assert!(matches!(write(b"not a PE file", &ok), UkiError::NotPe(_)));

    // A finished UKI is not a stub.
    let mut uki = Vec::new();
    write_uki(&stub, &ok, &mut uki).unwrap();
    assert!(matches!(write(&uki, &ok), UkiError::SectionExists(name) if name == ".osrel"));

    // A signed stub (certificate table directory set).
    let mut signed = stub.clone();
    let security_dir = 0x44 + 20 + 112 + 4 * 8;
    signed[security_dir..security_dir + 4].copy_from_slice(&0x800u32.to_le_bytes());
    signed[security_dir + 4..security_dir + 8].copy_from_slice(&0x10u32.to_le_bytes());
    assert!(matches!(write(&signed, &ok), UkiError::SignedStub));

    let missing = Path::new("/nonexistent/initrd.img");
    let err = write(
        &stub,
        &UkiSections {
            initrd: Some(SectionData::File(missing)),
            ..ok
        },
    );
    assert!(err.to_string().contains("/nonexistent/initrd.img"), "{err}");
}

/// The real systemd-boot stub, when installed (Debian's systemd-boot-efi) or named by
/// UVMKIT_UKI_STUB.
fn real_stub() -> Option<Vec<u8>> {
    let candidates = [
        std::env::var_os("UVMKIT_UKI_STUB").map(PathBuf::from),
        Some(PathBuf::from("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")),
    ];
    for path in candidates.into_iter().flatten() {
        if let Ok(bytes) = fs::read(&path) {
            return Some(bytes);
        }
    }
    eprintln!("note: no systemd-boot stub (install systemd-boot-efi or set UVMKIT_UKI_STUB); skipping");
    None
}

#[test]
fn systemd_stub_layout_is_read_back_by_objdump() {
    let Some(stub) = real_stub() else { return };
    let dir = scratch("systemd");
    let kernel = fake_bzimage(1 << 20);
    let initrd: Vec<u8> = (0..777_777u32).map(|i| (i % 241) as u8).collect();
    let sections = UkiSections {
        osrel: b"ID=uvmkit\n",
        cmdline: b"console=ttyS0",
        uname: Some(b"6.1.0"),
        initrd: Some(SectionData::Bytes(&initrd)),
        linux: SectionData::Bytes(&kernel),
    };
    let mut uki = Vec::new();
    let layout = write_uki(&stub, &sections, &mut uki).unwrap();
    check_with_object(&uki, &layout, &stub);
    assert!(section_bytes(&uki, &layout, ".initrd") == initrd.as_slice());
    // Debian's stub keeps a COFF symbol table at its end: it is dropped and the new sections
    // start where it was (at the next 4 KiB file offset), as ukify does.
    let stub_pe = PeFile64::parse(&*stub).unwrap();
    let symbols = stub_pe.nt_headers().file_header.pointer_to_symbol_table.get(LE);
    let uki_pe = PeFile64::parse(&*uki).unwrap();
    if symbols != 0 {
        assert_eq!(uki_pe.nt_headers().file_header.pointer_to_symbol_table.get(LE), 0);
        assert_eq!(uki_pe.nt_headers().file_header.number_of_symbols.get(LE), 0);
        let first_added = &layout.sections[stub_pe.section_table().len()];
        assert_eq!(
            u64::from(first_added.file_offset),
            u64::from(symbols).div_ceil(4096) * 4096
        );
    }
    if have("objdump") {
        let file = dir.join("uki.efi");
        fs::write(&file, &uki).unwrap();
        let rows = objdump_sections(&file);
        let names: Vec<&str> = rows[rows.len() - 5..].iter().map(|r| r.0.as_str()).collect();
        assert_eq!(names, [".osrel", ".cmdline", ".uname", ".initrd", ".linux"]);
        for row in &rows {
            let s = layout.sections.iter().find(|s| s.name == row.0).unwrap();
            let size = u64::from(s.virtual_size.min(s.raw_size));
            assert_eq!(
                (row.1, row.2, row.3),
                (size, u64::from(s.virtual_address), u64::from(s.file_offset)),
                "{}",
                row.0
            );
        }
    }
    fs::remove_dir_all(&dir).unwrap();
}
