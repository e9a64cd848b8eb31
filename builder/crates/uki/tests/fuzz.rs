//! The EFI stub (`linuxx64.efi.stub`, from a Debian package) and the kernel image a UKI is made
//! of are outside bytes: each is fed mutations of a valid sample and random bytes
//! (`uvmkit_testkit::fuzz`) while the other stays valid. Writing the UKI may fail with a typed
//! error but may not panic, run long or hold more than its heap bound.

use uvmkit_testkit::fuzz::Fuzz;
use uvmkit_uki::{write_uki, SectionData, UkiSections};

uvmkit_testkit::count_allocations!();

/// A minimal PE32+ x86-64 EFI application (PE/COFF specification, "Optional Header", "Section
/// Table"): `.text` (a `ret`) and `.data`, 4 KiB sections, 512-byte file alignment, a symbol
/// table pointer past the sections.
fn stub() -> Vec<u8> {
    let header_size = 0x400usize;
    let mut b = vec![0u8; header_size + 0x400 + 18];
    let put16 = |b: &mut Vec<u8>, o: usize, v: u16| b[o..o + 2].copy_from_slice(&v.to_le_bytes());
    let put32 = |b: &mut Vec<u8>, o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    b[0..2].copy_from_slice(b"MZ");
    put32(&mut b, 0x3c, 0x40);
    b[0x40..0x44].copy_from_slice(b"PE\0\0");
    let coff = 0x44;
    put16(&mut b, coff, 0x8664);
    put16(&mut b, coff + 2, 2);
    put32(&mut b, coff + 8, (header_size + 0x400) as u32); // PointerToSymbolTable
    put32(&mut b, coff + 12, 0); // NumberOfSymbols
    put16(&mut b, coff + 16, 0xf0); // SizeOfOptionalHeader: 112 + 16 directories
    put16(&mut b, coff + 18, 0x0206);
    let opt = coff + 20;
    put16(&mut b, opt, 0x20b);
    put32(&mut b, opt + 8, 0x200); // SizeOfInitializedData
    put32(&mut b, opt + 16, 0x1000); // AddressOfEntryPoint
    put32(&mut b, opt + 32, 0x1000); // SectionAlignment
    put32(&mut b, opt + 36, 0x200); // FileAlignment
    put32(&mut b, opt + 56, 0x3000); // SizeOfImage
    put32(&mut b, opt + 60, header_size as u32); // SizeOfHeaders
    put16(&mut b, opt + 68, 10); // EFI application
    put32(&mut b, opt + 108, 16); // NumberOfRvaAndSizes
    let table = opt + 0xf0;
    for (i, (name, va, flags)) in [
        (&b".text"[..], 0x1000u32, 0x6000_0020u32),
        (b".data", 0x2000, 0xc000_0040),
    ]
    .into_iter()
    .enumerate()
    {
        let o = table + i * 40;
        b[o..o + name.len()].copy_from_slice(name);
        put32(&mut b, o + 8, 0x10);
        put32(&mut b, o + 12, va);
        put32(&mut b, o + 16, 0x200);
        put32(&mut b, o + 20, (header_size + i * 0x200) as u32);
        put32(&mut b, o + 36, flags);
    }
    b[header_size] = 0xc3;
    b
}

/// Bytes with the x86 boot setup header's signatures (boot protocol, "The real-mode kernel
/// header"), standing in for a bzImage.
fn bzimage() -> Vec<u8> {
    let mut k: Vec<u8> = (0..8192).map(|i| (i * 7 % 256) as u8).collect();
    k[0x1fe] = 0x55;
    k[0x1ff] = 0xaa;
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k
}

fn write(stub: &[u8], kernel: &[u8]) -> Result<(), uvmkit_uki::UkiError> {
    let sections = UkiSections {
        osrel: b"ID=uvmkit\nVERSION_ID=1\n",
        cmdline: b"console=ttyS0 quiet",
        uname: Some(b"6.1.0-56-amd64"),
        initrd: Some(SectionData::Bytes(b"an initrd")),
        linux: SectionData::Bytes(kernel),
    };
    write_uki(stub, &sections, &mut std::io::sink()).map(|_| ())
}

#[test]
fn efi_stubs_and_kernels() {
    let (stub, kernel) = (stub(), bzimage());
    write(&stub, &kernel).expect("the samples make a UKI");
    Fuzz::new("uki-stub").run(&[stub.clone()], |input| {
        let _ = write(input, &kernel);
    });
    Fuzz::new("uki-kernel").run(&[kernel.clone(), stub.clone()], |input| {
        let _ = write(&stub, input);
    });
}
