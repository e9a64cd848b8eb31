//! Every writer's output checked by an independent reader: `qemu-img check` finds no errors,
//! `qemu-img info` sees the right format and virtual size, and `qemu-img compare` finds the
//! disk identical to the raw image `write_raw` wrote. Skipped, with a note, when qemu-img is
//! not on PATH.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Cursor;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use uvmkit_disk::SparseImage;
use uvmkit_vdisk::{
    write_qcow2, write_raw, write_vhdx, write_vmdk_sparse, write_vmdk_stream, Qcow2Options, VhdxOptions, VmdkAdapter,
    VmdkOptions, WriteStats,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

use uvmkit_testkit::{have, nonzero_pattern, run, ScratchDir};

fn qemu_img(args: &[&str]) -> (bool, String) {
    run("qemu-img", args)
}

/// A disk with scattered data: the first and last sector, a host-file extent straddling a
/// 32 MiB (or mid-disk) boundary at an odd offset, a 2 MiB extent of zeros that every format
/// should leave out, a few bytes deep inside a large hole. Returns the image and the byte
/// ranges that hold non-zero data.
fn scattered(size: u64, dir: &Path) -> (SparseImage, Vec<(u64, u64)>) {
    let blob = dir.join("blob.bin");
    std::fs::write(&blob, nonzero_pattern(400_000, 7)).unwrap();
    let mut img = SparseImage::new(size);
    let boundary = (32 * MIB).min(size / 2 / MIB * MIB);
    let zeros_at = size / 4 / MIB * MIB;
    let deep = size / 4 * 3 + 12_345;
    let straddle = (boundary - 100_000, 300_003);
    img.put_bytes(0, nonzero_pattern(512, 1)).unwrap();
    img.put_file(straddle.0, &blob, 1_000, straddle.1).unwrap();
    img.put_bytes(zeros_at, vec![0; 2 * MIB as usize]).unwrap();
    img.put_bytes(deep, nonzero_pattern(7, 3)).unwrap();
    img.put_bytes(size - 512, nonzero_pattern(512, 2)).unwrap();
    let data = vec![(0, 512), straddle, (deep, 7), (size - 512, 512)];
    (img, data)
}

/// Blocks of `block` bytes that hold data.
fn blocks_with_data(data: &[(u64, u64)], block: u64) -> u64 {
    let mut set = BTreeSet::new();
    for &(off, len) in data {
        set.extend(off / block..=(off + len - 1) / block);
    }
    set.len() as u64
}

/// Checks one output against the raw image with qemu-img.
fn check(path: &Path, format: &str, raw: &Path, size: u64, create_type: Option<&str>) {
    let p = path.to_str().unwrap();
    let (ok, text) = qemu_img(&["check", "-f", format, p]);
    assert!(
        ok && text.contains("No errors were found"),
        "qemu-img check {p}:\n{text}"
    );
    let (ok, text) = qemu_img(&["info", "--output=json", "-f", format, p]);
    assert!(ok, "qemu-img info {p}:\n{text}");
    assert!(text.contains(&format!("\"format\": \"{format}\"")), "{p}:\n{text}");
    assert!(text.contains(&format!("\"virtual-size\": {size},")), "{p}:\n{text}");
    if let Some(create_type) = create_type {
        assert!(
            text.contains(&format!("\"create-type\": \"{create_type}\"")),
            "{p}:\n{text}"
        );
    }
    let (ok, text) = qemu_img(&["compare", "-f", format, "-F", "raw", p, raw.to_str().unwrap()]);
    assert!(
        ok && text.contains("Images are identical"),
        "qemu-img compare {p}:\n{text}"
    );
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Writes every format for a disk of `size` bytes and checks each with qemu-img.
fn all_formats(size: u64, vhdx_variants: &[(u32, bool)]) {
    if !have("qemu-img") {
        return;
    }
    let dir = ScratchDir::new(&format!("vdisk-readers-{size}"));
    let (img, data) = scattered(size, dir.path());
    let data_bytes: u64 = data.iter().map(|&(_, len)| len).sum();

    let raw = dir.path().join("disk.raw");
    let stats = write_raw(&img, &raw).unwrap();
    assert_eq!(stats.virtual_size, size);
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), size);
    assert!(
        allocated(&raw) < data_bytes + 2 * MIB,
        "raw allocates {}",
        allocated(&raw)
    );

    for &(block_size, fixed) in vhdx_variants {
        let path = dir.path().join(format!("disk-{block_size}-{fixed}.vhdx"));
        let opts = VhdxOptions {
            block_size,
            fixed,
            seed: [9; 32],
        };
        let stats = write_vhdx(&img, &opts, &mut File::create(&path).unwrap()).unwrap();
        let bs = u64::from(block_size);
        let expected_blocks = if fixed {
            size.div_ceil(bs)
        } else {
            blocks_with_data(&data, bs)
        };
        assert_eq!(stats.data_blocks, expected_blocks, "{}", path.display());
        assert_eq!(stats.file_size, std::fs::metadata(&path).unwrap().len());
        assert!(
            allocated(&path) < data_bytes + 8 * MIB,
            "{} allocates {} bytes",
            path.display(),
            allocated(&path)
        );
        check(&path, "vhdx", &raw, size, None);
    }

    let grains = blocks_with_data(&data, 64 << 10);
    let opts = VmdkOptions {
        adapter_type: VmdkAdapter::LsiLogic,
        seed: [4; 32],
        hw_version: 4,
        extent_file_name: "disk-sparse.vmdk".into(),
    };
    let path = dir.path().join("disk-sparse.vmdk");
    let stats = write_vmdk_sparse(&img, &opts, &mut File::create(&path).unwrap()).unwrap();
    assert_eq!(stats.data_blocks, grains);
    assert_eq!(stats.file_size, std::fs::metadata(&path).unwrap().len());
    // Grains, plus two copies of 4 bytes of grain table per 64 KiB of disk.
    let tables = 2 * size / (64 << 10) * 4;
    assert!(stats.file_size <= grains * (64 << 10) + tables + 2 * MIB, "{stats:?}");
    check(&path, "vmdk", &raw, size, Some("monolithicSparse"));

    let opts = VmdkOptions {
        extent_file_name: "disk-stream.vmdk".into(),
        ..opts
    };
    let path = dir.path().join("disk-stream.vmdk");
    let stats = write_vmdk_stream(&img, &opts, &mut File::create(&path).unwrap()).unwrap();
    assert_eq!(stats.data_blocks, grains);
    assert_eq!(stats.file_size, std::fs::metadata(&path).unwrap().len());
    assert!(
        stats.file_size <= grains * (66 << 10) + size / (32 * MIB) * 4 + MIB,
        "{stats:?}"
    );
    check(&path, "vmdk", &raw, size, Some("streamOptimized"));

    // qcow2 stores the same 64 KiB clusters the VMDK grains are.
    for compressed in [false, true] {
        let path = dir.path().join(format!("disk-{compressed}.qcow2"));
        let stats = write_qcow2(&img, &Qcow2Options { compressed }, &mut File::create(&path).unwrap()).unwrap();
        assert_eq!(stats.data_blocks, grains, "{}", path.display());
        assert_eq!(stats.file_size, std::fs::metadata(&path).unwrap().len());
        // Clusters, header and L1, at most one L2 table per 512 MiB, and the refcount table
        // with one block per 2 GiB of file.
        let metadata = 2 + size.div_ceil(512 * MIB) + 1 + (grains + 64).div_ceil(32768);
        assert!(stats.file_size <= (grains + metadata) * (64 << 10), "{stats:?}");
        check(&path, "qcow2", &raw, size, None);
        let (ok, text) = qemu_img(&["check", "--output=json", "-f", "qcow2", path.to_str().unwrap()]);
        assert!(
            ok && !text.contains("\"leaks\""),
            "qemu-img check {}:\n{text}",
            path.display()
        );
        if compressed {
            assert!(text.contains("\"compressed-clusters\": "), "{text}");
        }
    }
}

#[test]
fn ten_mib_disk() {
    // A block larger than the disk, the smallest block, and a fixed file.
    all_formats(
        10 * MIB,
        &[(32 << 20, false), (1 << 20, false), (256 << 20, false), (1 << 20, true)],
    );
}

#[test]
fn one_gib_disk() {
    all_formats(GIB, &[(32 << 20, false), (1 << 20, false), (32 << 20, true)]);
}

#[test]
fn sixty_four_gib_disk() {
    all_formats(64 * GIB, &[(32 << 20, false)]);
}

#[test]
fn ide_and_pvscsi_descriptors_are_read() {
    if !have("qemu-img") {
        return;
    }
    let dir = ScratchDir::new("vdisk-adapters");
    let (img, _) = scattered(10 * MIB, dir.path());
    let raw = dir.path().join("disk.raw");
    write_raw(&img, &raw).unwrap();
    for adapter in [VmdkAdapter::Ide, VmdkAdapter::BusLogic, VmdkAdapter::Pvscsi] {
        let opts = VmdkOptions {
            adapter_type: adapter,
            hw_version: 7,
            ..Default::default()
        };
        let path = dir.path().join(format!("{}.vmdk", adapter.ddb_name()));
        write_vmdk_sparse(&img, &opts, &mut File::create(&path).unwrap()).unwrap();
        check(&path, "vmdk", &raw, 10 * MIB, Some("monolithicSparse"));
    }
}

/// Writes `img` with `write` into memory, twice.
fn twice(write: impl Fn(&mut Cursor<Vec<u8>>) -> WriteStats) -> (Vec<u8>, Vec<u8>) {
    let mut a = Cursor::new(Vec::new());
    let mut b = Cursor::new(Vec::new());
    let sa = write(&mut a);
    let sb = write(&mut b);
    assert_eq!(sa, sb);
    (a.into_inner(), b.into_inner())
}

#[test]
fn outputs_are_deterministic() {
    let dir = ScratchDir::new("vdisk-determinism");
    let (img, _) = scattered(10 * MIB, dir.path());
    let vhdx = VhdxOptions {
        block_size: 1 << 20,
        fixed: false,
        seed: [1; 32],
    };
    let (a, b) = twice(|out| write_vhdx(&img, &vhdx, out).unwrap());
    assert_eq!(a, b);
    let other = VhdxOptions {
        seed: [2; 32],
        ..vhdx.clone()
    };
    let (c, _) = twice(|out| write_vhdx(&img, &other, out).unwrap());
    assert_ne!(a, c, "the seed must reach the VHDX GUIDs");

    let vmdk = VmdkOptions {
        seed: [1; 32],
        ..Default::default()
    };
    let (a, b) = twice(|out| write_vmdk_sparse(&img, &vmdk, out).unwrap());
    assert_eq!(a, b);
    let (a, b) = twice(|out| write_vmdk_stream(&img, &vmdk, out.get_mut()).unwrap());
    assert_eq!(a, b);

    for compressed in [false, true] {
        let (a, b) = twice(|out| write_qcow2(&img, &Qcow2Options { compressed }, out).unwrap());
        assert_eq!(a, b);
    }

    let ra = dir.path().join("a.raw");
    let rb = dir.path().join("b.raw");
    write_raw(&img, &ra).unwrap();
    write_raw(&img, &rb).unwrap();
    assert_eq!(std::fs::read(&ra).unwrap(), std::fs::read(&rb).unwrap());
}

#[test]
fn empty_disks_store_no_data() {
    let img = SparseImage::new(64 * GIB);
    let mut out = Cursor::new(Vec::new());
    let stats = write_vhdx(&img, &VhdxOptions::default(), &mut out).unwrap();
    assert_eq!(stats.data_blocks, 0);
    assert_eq!(stats.file_size, 4 * MIB);
    let mut out = Vec::new();
    let stats = write_vmdk_stream(&img, &VmdkOptions::default(), &mut out).unwrap();
    assert_eq!(stats.data_blocks, 0);
    assert!(stats.file_size < 100 << 10, "{stats:?}");
}
