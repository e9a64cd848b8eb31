//! What the ISO tests share: scratch directories, tools, and a sample bootable image.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use uvmkit_disk::{build_esp, EspFile, EspOptions};
use uvmkit_filetree::{FileData, FileTree, Node, NodeKind, TreePath};
use uvmkit_iso::{write_iso_tree, BiosBoot, BootImage, EfiBoot, IsoOptions, IsoStats};

/// Where Debian's isolinux and syslinux-common packages put the BIOS boot files.
pub const ISOLINUX_BIN: &str = "/usr/lib/ISOLINUX/isolinux.bin";
pub const ISOHDPFX_BIN: &str = "/usr/lib/ISOLINUX/isohdpfx.bin";
pub const LDLINUX_C32: &str = "/usr/lib/syslinux/modules/bios/ldlinux.c32";

pub use uvmkit_testkit::{have, pattern, run, ScratchDir};

/// A scratch directory named for the ISO test `test`.
pub fn scratch(test: &str) -> ScratchDir {
    ScratchDir::new(&format!("iso-{test}"))
}

/// The BIOS boot files, or `None` (with a note) when the isolinux packages are missing.
pub fn bios_boot() -> Option<BiosBoot> {
    for f in [ISOLINUX_BIN, ISOHDPFX_BIN, LDLINUX_C32] {
        if !Path::new(f).is_file() {
            eprintln!("note: {f} is missing (install Debian's isolinux and syslinux-common); skipping");
            return None;
        }
    }
    Some(BiosBoot {
        isolinux_bin: std::fs::read(ISOLINUX_BIN).unwrap(),
        isohdpfx: std::fs::read(ISOHDPFX_BIN).unwrap(),
        path: "isolinux/isolinux.bin".into(),
    })
}

/// A sample image and what went into it.
pub struct Sample {
    pub iso: PathBuf,
    pub stats: IsoStats,
    /// Regular files and their bytes, by path.
    pub contents: Vec<(String, Vec<u8>)>,
    pub long_name: String,
    pub link_target: String,
    pub efi_lba: Option<u32>,
    pub efi_len: u64,
}

fn p(s: &str) -> TreePath {
    TreePath::new(s).unwrap()
}

/// Writes a bootable sample ISO into `dir`: kernel-sized and initrd-sized files, ISOLINUX,
/// a 40 MiB FAT32 EFI image, a symbolic link, a hard link, an empty file, a deep path, a long
/// name, colliding level 1 names and a directory of more than one sector.
pub fn sample_iso(dir: &Path, hybrid: bool) -> Option<Sample> {
    let bios = bios_boot()?;
    let mut tree = FileTree::new();
    let mut contents = Vec::new();
    let mut add = |tree: &mut FileTree, path: &str, data: Vec<u8>, mode: u32| {
        tree.insert(&p(path), Node::file(FileData::inline(data.clone()), mode))
            .unwrap();
        contents.push((path.to_string(), data));
    };
    add(&mut tree, "boot/vmlinuz", pattern(300_000, 1), 0o755);
    add(&mut tree, "boot/initrd.img", pattern(1_048_699, 2), 0o644);
    add(
        &mut tree,
        "isolinux/isolinux.cfg",
        b"DEFAULT linux\nLABEL linux\n  KERNEL /boot/vmlinuz\n  APPEND initrd=/boot/initrd.img console=ttyS0\n"
            .to_vec(),
        0o644,
    );
    add(
        &mut tree,
        "isolinux/ldlinux.c32",
        std::fs::read(LDLINUX_C32).unwrap(),
        0o644,
    );
    add(&mut tree, "empty", Vec::new(), 0o644);
    add(&mut tree, "deep/a/b/c/d/e/f/file", b"deep".to_vec(), 0o644);
    let long_name = format!("{}.conf", "a-very-long-file-name".repeat(10));
    add(&mut tree, &format!("etc/{long_name}"), b"long".to_vec(), 0o600);
    add(&mut tree, "etc/long-name-one.txt", b"1".to_vec(), 0o644);
    add(&mut tree, "etc/long-name-two.txt", b"2".to_vec(), 0o644);
    for i in 0..80 {
        add(
            &mut tree,
            &format!("many/file-number-{i:03}"),
            format!("{i}").into_bytes(),
            0o644,
        );
    }
    let link_target = "boot/vmlinuz".to_string();
    tree.insert(&p("link"), Node::symlink(link_target.clone())).unwrap();
    tree.insert(
        &p("hardlink"),
        Node {
            kind: NodeKind::HardLink(p("boot/initrd.img")),
            mode: 0o644,
            uid: 0,
            gid: 0,
        },
    )
    .unwrap();

    let esp = build_esp(
        &[EspFile {
            path: "EFI/BOOT/BOOTX64.EFI".into(),
            source: FileData::inline(pattern(100_000, 3)),
        }],
        &EspOptions {
            size_bytes: Some(40 << 20),
            volume_id: 0x1234_5678,
            label: "UVMKIT".into(),
            mtime: 1_700_000_000,
        },
    )
    .unwrap();
    let efi = EfiBoot {
        image: BootImage::Sparse(esp),
        path: "boot/efi.img".into(),
    };
    let opts = IsoOptions {
        volume_id: "UVMKIT_TEST".into(),
        epoch: 1_700_000_000,
        seed: [7; 32],
        hybrid,
    };
    let iso = dir.join("sample.iso");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&iso).unwrap());
    let stats = write_iso_tree(&tree, Some(&bios), Some(&efi), &opts, &mut out).unwrap();
    drop(out);
    assert_eq!(std::fs::metadata(&iso).unwrap().len(), stats.bytes);
    Some(Sample {
        iso,
        efi_lba: stats.efi_image_lba,
        stats,
        contents,
        long_name,
        link_target,
        efi_len: 40 << 20,
    })
}
