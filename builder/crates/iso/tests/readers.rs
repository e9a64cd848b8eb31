//! The ISO is right when independent readers accept it: xorriso (El Torito), isoinfo (volume
//! descriptors, Rock Ridge), bsdtar (libarchive's ISO 9660 reader), sgdisk and fdisk (the
//! hybrid GPT and MBR), fsck.fat (the EFI image inside).

mod common;

use std::path::Path;

use common::{have, pattern, run, sample_iso, scratch};
use uvmkit_filetree::FileData;
use uvmkit_iso::{write_iso, BootImage, EfiBoot, IsoFile, IsoOptions};

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn el_torito_lists_bios_and_uefi_entries() {
    if !have("xorriso") {
        return;
    }
    let dir = scratch("eltorito");
    let Some(s) = sample_iso(dir.path(), true) else { return };
    let (ok, text) = run(
        "xorriso",
        &["-indev", s.iso.to_str().unwrap(), "-report_el_torito", "plain"],
    );
    assert!(ok, "{text}");
    let bios = text
        .lines()
        .find(|l| l.starts_with("El Torito boot img :   1"))
        .unwrap_or_else(|| panic!("no first boot image:\n{text}"));
    assert!(bios.contains("BIOS") && bios.contains("none"), "{bios}");
    let fields: Vec<&str> = bios.split_whitespace().collect();
    assert_eq!(fields[fields.len() - 2], "4", "load size: {bios}");
    let efi = text
        .lines()
        .find(|l| l.starts_with("El Torito boot img :   2"))
        .unwrap_or_else(|| panic!("no second boot image:\n{text}"));
    assert!(efi.contains("UEFI") && efi.contains("none"), "{efi}");
    let opts = text
        .lines()
        .find(|l| l.starts_with("El Torito img opts :   1"))
        .unwrap_or("");
    assert!(
        opts.contains("boot-info-table"),
        "xorriso does not see the boot info table:\n{text}"
    );
    assert!(opts.contains("isohybrid-suitable"), "{text}");
    assert!(text.contains("/isolinux/isolinux.bin"), "{text}");
    assert!(text.contains("/boot/efi.img"), "{text}");
    // The system area as xorriso reads it: our MBR partitions and GPT.
    let (ok, area) = run(
        "xorriso",
        &["-indev", s.iso.to_str().unwrap(), "-report_system_area", "plain"],
    );
    assert!(ok, "{area}");
    assert!(area.contains("MBR partition"), "{area}");
    assert!(area.contains("GPT"), "{area}");
}

#[test]
fn isoinfo_reads_volume_and_rock_ridge() {
    if !have("isoinfo") {
        return;
    }
    let dir = scratch("isoinfo");
    let Some(s) = sample_iso(dir.path(), true) else { return };
    let iso = s.iso.to_str().unwrap();
    let (ok, text) = run("isoinfo", &["-d", "-i", iso]);
    assert!(ok, "{text}");
    assert!(text.contains("Volume id: UVMKIT_TEST"), "{text}");
    assert!(text.contains("Rock Ridge signatures version 1 found"), "{text}");
    assert!(text.contains("El Torito VD version 1 found"), "{text}");
    let (ok, list) = run("isoinfo", &["-R", "-l", "-i", iso]);
    assert!(ok, "{list}");
    for name in [
        "vmlinuz",
        "initrd.img",
        "isolinux.cfg",
        "isolinux.bin",
        "efi.img",
        &s.long_name,
    ] {
        assert!(list.contains(name), "isoinfo -R -l does not list {name}:\n{list}");
    }
    assert!(list.contains("-rwxr-xr-x"), "modes are lost:\n{list}");
    // Without Rock Ridge, the plain level 1 names.
    let (ok, plain) = run("isoinfo", &["-l", "-i", iso]);
    assert!(ok, "{plain}");
    assert!(
        plain.contains("VMLINUZ.;1") && plain.contains("INITRD.IMG;1"),
        "{plain}"
    );
    assert!(plain.contains("ISOLINUX.CFG;1"), "{plain}");
}

#[test]
fn bsdtar_lists_and_extracts_the_same_bytes() {
    if !have("bsdtar") {
        return;
    }
    let dir = scratch("bsdtar");
    let Some(s) = sample_iso(dir.path(), true) else { return };
    let iso = s.iso.to_str().unwrap();
    let (ok, list) = run("bsdtar", &["-tvf", iso]);
    assert!(ok, "{list}");
    for name in [
        "boot/vmlinuz",
        "boot/initrd.img",
        "isolinux/isolinux.cfg",
        "empty",
        "deep/a/b/c/d/e/f/file",
    ] {
        assert!(
            list.lines().any(|l| l.ends_with(name)),
            "bsdtar does not list {name}:\n{list}"
        );
    }
    assert!(list.lines().any(|l| l.contains(&s.long_name)), "{list}");
    assert!(
        list.lines()
            .any(|l| l.contains("link -> ") || l.contains("link link to")),
        "symlink lost:\n{list}"
    );
    let line = list.lines().find(|l| l.ends_with("boot/vmlinuz")).unwrap();
    assert!(line.starts_with("-rwxr-xr-x"), "{line}");

    for (name, data) in &s.contents {
        let out = std::process::Command::new("bsdtar")
            .args(["-xOf", iso, name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            out.stdout == *data,
            "{name}: extracted bytes differ ({} vs {})",
            out.stdout.len(),
            data.len()
        );
    }
    let extract = dir.path().join("x");
    std::fs::create_dir_all(&extract).unwrap();
    let (ok, text) = run("bsdtar", &["-xf", iso, "-C", extract.to_str().unwrap()]);
    assert!(ok, "{text}");
    let link = std::fs::read_link(extract.join("link")).unwrap();
    assert_eq!(link.to_str().unwrap(), s.link_target);
    // isolinux.bin comes back with its boot information table filled in.
    let isolinux = read(&extract.join("isolinux/isolinux.bin"));
    assert_eq!(u32::from_le_bytes(isolinux[8..12].try_into().unwrap()), 16);
    assert_eq!(
        u32::from_le_bytes(isolinux[16..20].try_into().unwrap()) as usize,
        isolinux.len()
    );
}

#[test]
fn hybrid_partition_tables_verify() {
    if !have("sgdisk") || !have("fdisk") {
        return;
    }
    let dir = scratch("partitions");
    let Some(s) = sample_iso(dir.path(), true) else { return };
    let iso = s.iso.to_str().unwrap();
    let (ok, text) = run("sgdisk", &["-v", iso]);
    assert!(ok && text.contains("No problems found"), "sgdisk -v:\n{text}");
    let (ok, text) = run("sgdisk", &["-p", iso]);
    assert!(ok, "{text}");
    assert!(text.contains("EF00") && text.contains("0700"), "{text}");
    let (ok, fdisk) = run("fdisk", &["-l", iso]);
    assert!(ok, "{fdisk}");
    assert!(
        fdisk.contains("EFI (FAT-12/16/32)") || fdisk.contains("EFI System"),
        "{fdisk}"
    );
    assert!(!fdisk.contains("overlap"), "{fdisk}");
    // The MBR view: the active ISO partition, the EFI partition and the GPT protective entry.
    let data = read(&s.iso);
    assert_eq!(&data[510..512], &[0x55, 0xAA]);
    let types: Vec<u8> = (0..4).map(|i| data[446 + 16 * i + 4]).collect();
    assert_eq!(types, [0x17, 0xEF, 0xEE, 0x00]);
    assert_eq!(data[446], 0x80);
    // The EFI partition holds exactly the FAT image, which fsck.fat accepts.
    let start = u32::from_le_bytes(data[446 + 16 + 8..446 + 16 + 12].try_into().unwrap()) as u64 * 512;
    assert_eq!(Some(start / 2048), s.efi_lba.map(u64::from));
    if have("fsck.fat") {
        let fat = dir.path().join("fat.img");
        std::fs::write(&fat, &data[start as usize..start as usize + s.efi_len as usize]).unwrap();
        let (ok, text) = run("fsck.fat", &["-n", fat.to_str().unwrap()]);
        assert!(ok, "fsck.fat:\n{text}");
    }
}

#[test]
fn output_is_deterministic() {
    let a = scratch("determinism-a");
    let b = scratch("determinism-b");
    let (Some(x), Some(y)) = (sample_iso(a.path(), true), sample_iso(b.path(), true)) else {
        return;
    };
    assert_eq!(x.stats, y.stats);
    assert!(read(&x.iso) == read(&y.iso), "two runs gave different bytes");
}

#[test]
fn seed_and_epoch_change_only_what_they_should() {
    let file = |epoch: i64, seed: u8| {
        let mut out = Vec::new();
        write_iso(
            &[IsoFile {
                path: "a.txt".into(),
                data: FileData::inline(b"hello".to_vec()),
                mode: 0o644,
            }],
            None,
            Some(&EfiBoot {
                image: BootImage::Data(FileData::inline(vec![0xA5; 4096])),
                path: "efi.img".into(),
            }),
            &IsoOptions {
                volume_id: "V".into(),
                epoch,
                seed: [seed; 32],
                hybrid: true,
            },
            &mut out,
        )
        .unwrap();
        out
    };
    let base = file(1_700_000_000, 1);
    assert_eq!(base, file(1_700_000_000, 1));
    assert_ne!(base, file(1_700_000_000, 2));
    assert_ne!(base, file(1_700_000_001, 1));
    // The PVD's creation date is the epoch: 2023-11-14T22:13:20Z.
    assert_eq!(&base[16 * 2048 + 813..16 * 2048 + 829], b"2023111422132000");
}

#[test]
fn non_hybrid_uefi_only_image_reads_back() {
    let dir = scratch("uefi-only");
    let image = pattern(5000 * 512, 9);
    let iso = dir.path().join("u.iso");
    let mut out = std::fs::File::create(&iso).unwrap();
    let stats = write_iso(
        &[IsoFile {
            path: "readme".into(),
            data: FileData::inline(b"x".to_vec()),
            mode: 0o600,
        }],
        None,
        Some(&EfiBoot {
            image: BootImage::Data(FileData::inline(image.clone())),
            path: "EFI/efiboot.img".into(),
        }),
        &IsoOptions {
            volume_id: "UEFI_ONLY".into(),
            epoch: 0,
            seed: [0; 32],
            hybrid: false,
        },
        &mut out,
    )
    .unwrap();
    drop(out);
    let data = read(&iso);
    assert_eq!(data.len() as u64, stats.bytes);
    assert!(
        data[..512].iter().all(|&b| b == 0),
        "a non-hybrid image has an empty system area"
    );
    let lba = stats.efi_image_lba.unwrap() as usize;
    assert_eq!(&data[lba * 2048..lba * 2048 + image.len()], &image[..]);
    if have("xorriso") {
        let (ok, text) = run(
            "xorriso",
            &["-indev", iso.to_str().unwrap(), "-report_el_torito", "plain"],
        );
        assert!(ok, "{text}");
        let line = text
            .lines()
            .find(|l| l.starts_with("El Torito boot img :   1"))
            .unwrap();
        assert!(line.contains("UEFI") && line.contains(" 5000 "), "{line}");
        assert!(!text.contains("boot img :   2"), "{text}");
    }
    if have("bsdtar") {
        let (ok, list) = run("bsdtar", &["-tvf", iso.to_str().unwrap()]);
        assert!(
            ok && list.contains("EFI/efiboot.img") && list.contains("-rw-------"),
            "{list}"
        );
    }
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let opts = IsoOptions {
        volume_id: "lower".into(),
        epoch: 0,
        seed: [0; 32],
        hybrid: false,
    };
    let err = write_iso(&[], None, None, &opts, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("A-Z"), "{err}");
    let opts = IsoOptions {
        volume_id: "OK".into(),
        ..opts
    };
    let f = |p: &str| IsoFile {
        path: p.into(),
        data: FileData::inline(vec![1]),
        mode: 0o644,
    };
    let err = write_iso(&[f("a"), f("/a")], None, None, &opts, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
    let err = write_iso(&[f("a"), f("a/b")], None, None, &opts, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
    let err = write_iso(&[f("1/2/3/4/5/6/7/8/x")], None, None, &opts, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("levels"), "{err}");
    let efi = EfiBoot {
        image: BootImage::Data(FileData::inline(vec![0; 100])),
        path: "e.img".into(),
    };
    let err = write_iso(&[], None, Some(&efi), &opts, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("512"), "{err}");
    let bios = uvmkit_iso::BiosBoot {
        isolinux_bin: vec![0; 4096],
        isohdpfx: vec![0; 432],
        path: "i.bin".into(),
    };
    let hybrid = IsoOptions {
        hybrid: true,
        ..opts.clone()
    };
    let err = write_iso(&[], Some(&bios), None, &hybrid, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("isohybrid"), "{err}");
    // A host file that changed size since it was listed.
    let dir = scratch("changed");
    let p = dir.path().join("f");
    std::fs::write(&p, b"abc").unwrap();
    let data = FileData::host_file(&p).unwrap();
    std::fs::write(&p, b"abcdef").unwrap();
    let err = write_iso(
        &[IsoFile {
            path: "f".into(),
            data,
            mode: 0o644,
        }],
        None,
        None,
        &opts,
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("changed size"), "{err}");
}

#[test]
fn aliases_share_the_efi_image_bytes() {
    use uvmkit_iso::{write_iso_with_aliases, EfiAlias};
    let dir = scratch("aliases");
    let image = pattern(1 << 20, 11);
    let efi = EfiBoot {
        image: BootImage::Data(FileData::inline(image.clone())),
        path: "boot/efi.img".into(),
    };
    let aliases = [
        EfiAlias {
            path: "boot/vmlinuz".into(),
            offset: 4096,
            len: 300_001,
            mode: 0o644,
        },
        EfiAlias {
            path: "boot/initrd.img".into(),
            offset: 2048 * 200,
            len: 200_000,
            mode: 0o644,
        },
    ];
    let files = [IsoFile {
        path: "isolinux/isolinux.cfg".into(),
        data: FileData::inline(b"x".to_vec()),
        mode: 0o644,
    }];
    let opts = IsoOptions {
        volume_id: "ALIAS".into(),
        epoch: 0,
        seed: [1; 32],
        hybrid: true,
    };
    let iso = dir.path().join("a.iso");
    let mut out = std::fs::File::create(&iso).unwrap();
    let stats = write_iso_with_aliases(&files, None, Some(&efi), &aliases, &opts, &mut out).unwrap();
    drop(out);
    // Stored once: the whole image fits in the 2 MiB the EFI image and metadata round up to.
    assert_eq!(stats.bytes, 2 << 20);
    let expect = |a: &EfiAlias| image[a.offset as usize..(a.offset + a.len) as usize].to_vec();
    if have("bsdtar") {
        for a in &aliases {
            let out = std::process::Command::new("bsdtar")
                .args(["-xOf", iso.to_str().unwrap(), &a.path])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert!(out.stdout == expect(a), "{}: bsdtar extracted other bytes", a.path);
        }
    }
    if have("xorriso") {
        for a in &aliases {
            let dest = dir.path().join(a.path.replace('/', "_"));
            let (ok, text) = run(
                "xorriso",
                &[
                    "-osirrox",
                    "on",
                    "-indev",
                    iso.to_str().unwrap(),
                    "-extract",
                    &format!("/{}", a.path),
                    dest.to_str().unwrap(),
                ],
            );
            assert!(ok, "{text}");
            assert!(read(&dest) == expect(a), "{}: xorriso extracted other bytes", a.path);
        }
    }
    let bad = [EfiAlias {
        path: "k".into(),
        offset: 512,
        len: 1,
        mode: 0o644,
    }];
    let err = write_iso_with_aliases(&[], None, Some(&efi), &bad, &opts, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("2048"), "{err}");
    let bad = [EfiAlias {
        path: "k".into(),
        offset: 2048,
        len: 1 << 20,
        mode: 0o644,
    }];
    let err = write_iso_with_aliases(&[], None, Some(&efi), &bad, &opts, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
}

#[test]
fn uefi_only_hybrid_image_has_a_clean_gpt() {
    if !have("sgdisk") {
        return;
    }
    let dir = scratch("uefi-hybrid");
    let iso = dir.path().join("u.iso");
    let mut out = std::fs::File::create(&iso).unwrap();
    write_iso(
        &[IsoFile {
            path: "a".into(),
            data: FileData::inline(vec![1; 5000]),
            mode: 0o644,
        }],
        None,
        Some(&EfiBoot {
            image: BootImage::Data(FileData::inline(vec![0; 3 << 20])),
            path: "efi.img".into(),
        }),
        &IsoOptions {
            volume_id: "U".into(),
            epoch: 0,
            seed: [5; 32],
            hybrid: true,
        },
        &mut out,
    )
    .unwrap();
    drop(out);
    let (ok, text) = run("sgdisk", &["-v", iso.to_str().unwrap()]);
    assert!(ok && text.contains("No problems found"), "{text}");
    let data = read(&iso);
    assert!(
        data[..432].iter().all(|&b| b == 0),
        "no BIOS entry, so no MBR boot code"
    );
}

#[test]
fn bios_only_hybrid_image_has_one_isohybrid_partition() {
    if !have("fdisk") {
        return;
    }
    let Some(bios) = common::bios_boot() else { return };
    let dir = scratch("bios-hybrid");
    let iso = dir.path().join("b.iso");
    let mut out = std::fs::File::create(&iso).unwrap();
    let stats = write_iso(
        &[IsoFile {
            path: "isolinux/isolinux.cfg".into(),
            data: FileData::inline(b"x".to_vec()),
            mode: 0o644,
        }],
        Some(&bios),
        None,
        &IsoOptions {
            volume_id: "B".into(),
            epoch: 0,
            seed: [5; 32],
            hybrid: true,
        },
        &mut out,
    )
    .unwrap();
    drop(out);
    assert_eq!(stats.bytes % (1 << 20), 0, "hybrid images are whole 1 MiB cylinders");
    let data = read(&iso);
    assert_eq!(&data[..432], &bios.isohdpfx[..432]);
    let boot_block = u64::from_le_bytes(data[432..440].try_into().unwrap());
    assert_eq!(boot_block, u64::from(stats.bios_image_lba.unwrap()) * 4);
    assert_eq!(&data[446..462][..5], &[0x80, 0, 1, 0, 0x17]);
    assert!(data[462..510].iter().all(|&b| b == 0), "one partition only");
    let (ok, text) = run("fdisk", &["-l", iso.to_str().unwrap()]);
    assert!(ok && text.contains("b.iso1"), "{text}");
    assert!(!text.contains("b.iso2"), "{text}");
    if have("xorriso") {
        let (ok, text) = run(
            "xorriso",
            &["-indev", iso.to_str().unwrap(), "-report_el_torito", "plain"],
        );
        assert!(ok && text.contains("BIOS") && !text.contains("UEFI"), "{text}");
    }
}
