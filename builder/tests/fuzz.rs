//! The builder's own readers of outside bytes, fed mutations of valid samples and random bytes
//! (`uvmkit_testkit::fuzz`): image definitions (TOML, then validation), ELF programs and
//! kernel modules (`PT_INTERP`, `DT_NEEDED`, sections), `.modinfo` text, kernel `.config`
//! text, sizes and GUIDs, and the host keys `ssh-keyscan` reports for `uvmkit connect`. None may panic, run long or hold more than its heap bound.

use std::path::Path;

use uvmkit::connect::ssh::parse_keys;
use uvmkit::definition::{kernel_config::parse_kconfig, parse, units::parse_size};
use uvmkit::elf::{dynamic_info, section, DynamicInfo, ReadAt};
use uvmkit::inputs::modules::parse_modinfo_dependencies;
use uvmkit_disk::guid::Guid;
use uvmkit_testkit::fuzz::Fuzz;

uvmkit_testkit::count_allocations!();

fn image(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn image_definitions() {
    let seeds: Vec<Vec<u8>> = ["minimal.toml", "docker.toml", "docker-bookworm.toml"]
        .map(image)
        .to_vec();
    let path = Path::new("fuzz.toml");
    for seed in &seeds {
        parse(std::str::from_utf8(seed).unwrap(), path).expect("the shipped definitions are valid");
    }
    let parsed = std::cell::Cell::new(0u64);
    Fuzz::new("definition")
        .dictionary(&[
            "\n",
            "[",
            "]",
            "[[",
            "]]",
            "=",
            "\"",
            "'",
            "\"\"\"",
            "{",
            "}",
            ",",
            ".",
            "#",
            "\\u",
            "-",
            "0x",
            "1e999",
            "9223372036854775808",
            "99999999999999999999TiB",
            "18446744073709551615",
            "[disk]\n",
            "size = ",
            "[[files]]\n",
            "[[packages]]\n",
            "[docker]\n",
            "[network]\n",
            "[[network.interfaces]]\n",
            "path = ",
            "source = \"../x\"",
            "mode = ",
            "\"/\"",
            "\"..\"",
            "targets = [",
            "formats = [",
            "block_size = ",
        ])
        .run(&seeds, |input| {
            if parse(&String::from_utf8_lossy(input), path).is_ok() {
                parsed.set(parsed.get() + 1);
            }
        });
    // The mutations must reach validation, not only the TOML parser's first error.
    assert!(parsed.get() > 50, "only {} definitions parsed", parsed.get());
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A small x86_64 shared object laid out by the System V ABI: the ELF header, three program
/// headers (`PT_INTERP`, one `PT_LOAD` over the whole file, `PT_DYNAMIC`), the interpreter
/// path, a string table, the dynamic section (two `DT_NEEDED`, `DT_RUNPATH`, `DT_STRTAB`,
/// `DT_STRSZ`), a `.modinfo` section and the section header table.
fn sample_elf() -> Vec<u8> {
    const INTERP: &[u8] = b"/lib64/ld-linux-x86-64.so.2\0";
    const STRTAB: &[u8] = b"\0libc.so.6\0libzstd.so.1\0$ORIGIN/../lib:/opt/lib\0";
    const MODINFO: &[u8] = b"license=GPL\0depends=scsi_mod,libata\0softdep=pre: crc32c post: x\0";
    const SHSTRTAB: &[u8] = b"\0.shstrtab\0.modinfo\0";
    let interp_at = 64 + 3 * 56;
    let strtab_at = interp_at + INTERP.len();
    let dynamic_at = strtab_at + STRTAB.len();
    let dynamic: [(u64, u64); 6] = [
        (1, 1),
        (1, 11),
        (29, 24),
        (5, strtab_at as u64),
        (10, STRTAB.len() as u64),
        (0, 0),
    ];
    let modinfo_at = dynamic_at + dynamic.len() * 16;
    let shstrtab_at = modinfo_at + MODINFO.len();
    let sections_at = shstrtab_at + SHSTRTAB.len();
    let len = sections_at + 3 * 64;
    let mut b = vec![0u8; len];
    b[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    put16(&mut b, 0x10, 3); // ET_DYN
    put16(&mut b, 0x12, 0x3e); // EM_X86_64
    put32(&mut b, 0x14, 1);
    put64(&mut b, 0x20, 64); // e_phoff
    put64(&mut b, 0x28, sections_at as u64); // e_shoff
    put16(&mut b, 0x34, 64);
    put16(&mut b, 0x36, 56);
    put16(&mut b, 0x38, 3);
    put16(&mut b, 0x3a, 64);
    put16(&mut b, 0x3c, 3);
    put16(&mut b, 0x3e, 1); // e_shstrndx
    let segments = [
        (3u32, interp_at, INTERP.len()),
        (1, 0, len),
        (2, dynamic_at, dynamic.len() * 16),
    ];
    for (i, (kind, offset, size)) in segments.into_iter().enumerate() {
        let at = 64 + i * 56;
        put32(&mut b, at, kind);
        put64(&mut b, at + 8, offset as u64);
        put64(&mut b, at + 16, offset as u64); // p_vaddr = p_offset
        put64(&mut b, at + 32, size as u64);
        put64(&mut b, at + 40, size as u64);
    }
    b[interp_at..strtab_at].copy_from_slice(INTERP);
    b[strtab_at..dynamic_at].copy_from_slice(STRTAB);
    for (i, (tag, val)) in dynamic.into_iter().enumerate() {
        put64(&mut b, dynamic_at + i * 16, tag);
        put64(&mut b, dynamic_at + i * 16 + 8, val);
    }
    b[modinfo_at..shstrtab_at].copy_from_slice(MODINFO);
    b[shstrtab_at..sections_at].copy_from_slice(SHSTRTAB);
    for (i, (name, offset, size)) in [(1u32, shstrtab_at, SHSTRTAB.len()), (11, modinfo_at, MODINFO.len())]
        .into_iter()
        .enumerate()
    {
        let at = sections_at + (i + 1) * 64;
        put32(&mut b, at, name);
        put32(&mut b, at + 4, if i == 0 { 3 } else { 1 }); // SHT_STRTAB, SHT_PROGBITS
        put64(&mut b, at + 0x18, offset as u64);
        put64(&mut b, at + 0x20, size as u64);
    }
    b
}

#[test]
fn the_sample_elf_reads_back() {
    let elf = sample_elf();
    assert_eq!(
        dynamic_info(&elf[..]).unwrap(),
        Some(DynamicInfo {
            interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
            needed: vec!["libc.so.6".into(), "libzstd.so.1".into()],
            search_path: vec!["$ORIGIN/../lib".into(), "/opt/lib".into()],
        })
    );
    let modinfo = section(&elf[..], ".modinfo").unwrap().unwrap();
    assert_eq!(
        parse_modinfo_dependencies(&modinfo),
        (
            vec!["libata".to_string(), "scsi_mod".to_string()],
            vec!["crc32c".to_string()]
        )
    );
    assert_eq!(elf.data_len().unwrap(), elf.len() as u64);
}

#[test]
fn elf_programs_and_modules() {
    Fuzz::new("elf").run(&[sample_elf()], |input| {
        let _ = dynamic_info(input);
        if let Ok(Some(modinfo)) = section(input, ".modinfo") {
            let _ = parse_modinfo_dependencies(&modinfo);
        }
        let _ = section(input, ".shstrtab");
    });
}

/// Length fields that once made the reader allocate what the file claimed, or overflow while
/// adding offsets: each is now a typed error before any allocation.
#[test]
fn hostile_elf_lengths_are_errors() {
    let elf = sample_elf();
    let dynamic_phdr = 64 + 2 * 56;
    let cases: [(usize, u64, &str); 5] = [
        // PT_DYNAMIC p_filesz of 2^64-1: was `vec![0; filesz]`, a capacity overflow panic.
        (dynamic_phdr + 32, u64::MAX, "beyond the end"),
        // PT_DYNAMIC p_offset near 2^64: offset + length wrapped.
        (dynamic_phdr + 8, u64::MAX - 8, "beyond the end"),
        // .modinfo sh_size of 1 TiB: was a 1 TiB allocation.
        (elf.len() - 64 + 0x20, 1 << 40, "beyond the end"),
        // PT_INTERP p_offset near 2^64: offset + size wrapped.
        (64 + 8, u64::MAX - 2, "overflows"),
        // e_shoff near 2^64.
        (0x28, u64::MAX - 100, "beyond the end"),
    ];
    for (at, value, expected) in cases {
        let mut bad = elf.clone();
        put64(&mut bad, at, value);
        let err = dynamic_info(&bad[..])
            .err()
            .or_else(|| section(&bad[..], ".modinfo").err())
            .unwrap_or_else(|| panic!("field at {at} = {value:#x} was accepted"));
        assert!(err.to_string().contains(expected), "field at {at}: {err}");
    }
    // A relocatable object (a `.o`, a kernel module): no program headers and an e_phentsize of
    // 0, which made `chunks(0)` panic (found by the fuzzer, case 33).
    let mut object = elf.clone();
    put16(&mut object, 0x36, 0);
    put16(&mut object, 0x38, 0);
    assert_eq!(dynamic_info(&object[..]).unwrap(), Some(DynamicInfo::default()));
    assert!(section(&object[..], ".modinfo").unwrap().is_some());
    // 65535 program headers of 65535 bytes: 4 GiB claimed, refused as Linux refuses it.
    let mut bad = elf.clone();
    put16(&mut bad, 0x36, u16::MAX);
    put16(&mut bad, 0x38, u16::MAX);
    let err = dynamic_info(&bad[..]).unwrap_err();
    assert!(err.to_string().contains("Linux loads at most 65536"), "{err}");
}

#[test]
fn modinfo_text() {
    let seeds = vec![b"license=GPL\0depends=scsi_mod,libata\0softdep=pre: crc32c post: x\0vermagic=6.1.0\0".to_vec()];
    Fuzz::new("modinfo")
        .dictionary(&["\0", "depends=", "softdep=", "pre:", "post:", ",", " ", "-", "_"])
        .run(&seeds, |input| {
            let _ = parse_modinfo_dependencies(input);
        });
}

#[test]
fn kernel_config_text_and_sizes() {
    let seeds = vec![b"CONFIG_VIRTIO_BLK=m\nCONFIG_EXT4_FS=y\n# CONFIG_X is not set\nCONFIG_NR_CPUS=8192\nCONFIG_LOCALVERSION=\"\"\n".to_vec()];
    Fuzz::new("kconfig").run(&seeds, |input| {
        let _ = parse_kconfig(&String::from_utf8_lossy(input));
    });
    let sizes: Vec<Vec<u8>> = ["2GiB", "512MiB", "4096", "1T"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    Fuzz::new("size")
        .dictionary(&[
            "18446744073709551615",
            "99999999999999999999",
            "TiB",
            "K",
            " ",
            "-",
            "+",
        ])
        .run(&sizes, |input| {
            let _ = parse_size(&String::from_utf8_lossy(input));
        });
}

#[test]
fn guids_and_scanned_host_keys() {
    let guids: Vec<Vec<u8>> = [
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        "{0fc63daf-8483-4772-8e79-3d69d8477de4}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    Fuzz::new("guid")
        .dictionary(&["-", "{", "}", "\u{e9}"])
        .run(&guids, |input| {
            let _ = Guid::parse(&String::from_utf8_lossy(input));
        });
    let scan = b"# 127.0.0.1:2222 SSH-2.0-OpenSSH_9.2\n[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm6cGZy\n[127.0.0.1]:2222 ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY=\n";
    Fuzz::new("ssh-keyscan")
        .dictionary(&["\n", " ", "#", "=", "ssh-ed25519 "])
        .run(&[scan.to_vec()], |input| {
            let _ = parse_keys(&String::from_utf8_lossy(input));
        });
}
