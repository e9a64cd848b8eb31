//! The initrd read back by independent readers: GNU cpio, bsdtar (libarchive) and the zstd CLI.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use uvmkit_filetree::{FileData, FileTree, Node, NodeKind, TreePath};
use uvmkit_initrd::{plan_segments, write_initrd, Compression, InitrdOptions, SegmentRule};

const MTIME: u64 = 1_700_000_000;

fn p(s: &str) -> TreePath {
    TreePath::new(s).unwrap()
}

use uvmkit_testkit::have;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("uvmkit-initrd-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `cmd` with `stdin` from a file and returns stdout, failing with stderr.
fn run(cmd: &mut Command, stdin: Option<&Path>) -> Vec<u8> {
    if let Some(input) = stdin {
        cmd.stdin(fs::File::open(input).unwrap());
    } else {
        cmd.stdin(Stdio::null());
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A tree with every kind of node, odd modes and owners, an inline and a host file.
fn sample(dir: &Path) -> FileTree {
    let host = dir.join("host-blob");
    let host_bytes: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(&host, &host_bytes).unwrap();
    let mut t = FileTree::new();
    t.insert(
        &p("/init"),
        Node::file(FileData::inline(b"#!/bin/sh\necho hello\n".to_vec()), 0o755),
    )
    .unwrap();
    t.insert(
        &p("/bin/busybox"),
        Node::file(FileData::host_file(&host).unwrap(), 0o4755),
    )
    .unwrap();
    t.insert(
        &p("/bin/sh"),
        Node {
            kind: NodeKind::HardLink(p("/bin/busybox")),
            mode: 0o4755,
            uid: 0,
            gid: 0,
        },
    )
    .unwrap();
    t.insert(
        &p("/sbin/ash"),
        Node {
            kind: NodeKind::HardLink(p("/bin/busybox")),
            mode: 0o4755,
            uid: 0,
            gid: 0,
        },
    )
    .unwrap();
    t.insert(&p("/bin/ls"), Node::symlink("busybox")).unwrap();
    t.insert(&p("/lib64"), Node::symlink("/usr/lib/x86_64-linux-gnu"))
        .unwrap();
    t.insert(
        &p("/dev/console"),
        Node {
            kind: NodeKind::CharDevice { major: 5, minor: 1 },
            mode: 0o600,
            uid: 0,
            gid: 5,
        },
    )
    .unwrap();
    t.insert(
        &p("/dev/sda"),
        Node {
            kind: NodeKind::BlockDevice { major: 8, minor: 0 },
            mode: 0o660,
            uid: 0,
            gid: 6,
        },
    )
    .unwrap();
    t.insert(
        &p("/run/initctl"),
        Node {
            kind: NodeKind::Fifo,
            mode: 0o600,
            uid: 0,
            gid: 0,
        },
    )
    .unwrap();
    t.insert(
        &p("/tmp"),
        Node {
            kind: NodeKind::Directory,
            mode: 0o1777,
            uid: 0,
            gid: 0,
        },
    )
    .unwrap();
    t.insert(
        &p("/home/user/.profile"),
        Node {
            kind: NodeKind::File(FileData::inline(b"export A=1\n".to_vec())),
            mode: 0o640,
            uid: 1000,
            gid: 100,
        },
    )
    .unwrap();
    t.insert(
        &p("/lib/modules/6.1.0/kernel/e1000.ko"),
        Node::file(FileData::inline(vec![0x5a; 10_001]), 0o644),
    )
    .unwrap();
    t.insert(
        &p("/lib/modules/6.1.0/modules.order"),
        Node::file(FileData::inline(b"kernel/e1000.ko\n".to_vec()), 0o644),
    )
    .unwrap();
    t.insert(&p("/lib/ld.so"), Node::file(FileData::inline(vec![]), 0o755))
        .unwrap();
    t.insert(
        &p("/usr/bin/dockerd"),
        Node::file(FileData::inline(vec![0xd0; 33_333]), 0o755),
    )
    .unwrap();
    t
}

fn plain(tree: &FileTree, segments: Vec<SegmentRule>) -> Vec<u8> {
    let mut out = Vec::new();
    let opts = InitrdOptions {
        mtime: MTIME,
        compression: Compression::None,
        segments,
    };
    let stats = write_initrd(tree, &opts, &mut out).unwrap();
    assert_eq!(stats.compressed_bytes, out.len() as u64);
    assert_eq!(stats.uncompressed_bytes, out.len() as u64);
    out
}

/// `cpio -itvn` lines, whitespace-collapsed, without the date (locale and TZ dependent).
fn cpio_listing(archive: &Path) -> Vec<String> {
    let out = run(
        Command::new("cpio").args(["-itvn", "--quiet"]).env("TZ", "UTC"),
        Some(archive),
    );
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // mode nlink uid gid size-or-"maj," [min] Mon DD YYYY name [-> target]
            let (head, rest) = if f[4].ends_with(',') {
                (&f[..6], &f[9..])
            } else {
                (&f[..5], &f[8..])
            };
            format!("{} {}", head.join(" "), rest.join(" "))
        })
        .collect()
}

#[test]
fn gnu_cpio_lists_names_modes_owners_links_and_devices() {
    if !have("cpio") {
        return;
    }
    let dir = scratch("cpio");
    let tree = sample(&dir);
    let archive = dir.join("initrd.cpio");
    fs::write(&archive, plain(&tree, vec![])).unwrap();
    let listing = cpio_listing(&archive);
    let expected = [
        "drwxr-xr-x 10 0 0 0 .",
        "drwxr-xr-x 2 0 0 0 bin",
        "-rwsr-xr-x 3 0 0 0 bin/busybox",
        "lrwxrwxrwx 1 0 0 7 bin/ls -> busybox",
        "-rwsr-xr-x 3 0 0 0 bin/sh",
        "drwxr-xr-x 2 0 0 0 dev",
        "crw------- 1 0 5 5, 1 dev/console",
        "brw-rw---- 1 0 6 8, 0 dev/sda",
        "drwxr-xr-x 3 0 0 0 home",
        "drwxr-xr-x 2 0 0 0 home/user",
        "-rw-r----- 1 1000 100 11 home/user/.profile",
        "-rwxr-xr-x 1 0 0 21 init",
        "drwxr-xr-x 3 0 0 0 lib",
        "-rwxr-xr-x 1 0 0 0 lib/ld.so",
        "drwxr-xr-x 3 0 0 0 lib/modules",
        "drwxr-xr-x 3 0 0 0 lib/modules/6.1.0",
        "drwxr-xr-x 2 0 0 0 lib/modules/6.1.0/kernel",
        "-rw-r--r-- 1 0 0 10001 lib/modules/6.1.0/kernel/e1000.ko",
        "-rw-r--r-- 1 0 0 16 lib/modules/6.1.0/modules.order",
        "lrwxrwxrwx 1 0 0 25 lib64 -> /usr/lib/x86_64-linux-gnu",
        "drwxr-xr-x 2 0 0 0 run",
        "prw------- 1 0 0 0 run/initctl",
        "drwxr-xr-x 2 0 0 0 sbin",
        // The last name of a hard-linked file carries its contents.
        "-rwsr-xr-x 3 0 0 70000 sbin/ash",
        "drwxrwxrwt 2 0 0 0 tmp",
        "drwxr-xr-x 3 0 0 0 usr",
        "drwxr-xr-x 2 0 0 0 usr/bin",
        "-rwxr-xr-x 1 0 0 33333 usr/bin/dockerd",
    ];
    assert_eq!(listing, expected);
    // Every member carries the caller's mtime.
    let dated = run(
        Command::new("cpio").args(["-itv", "--quiet"]).env("TZ", "UTC"),
        Some(&archive),
    );
    let dated = String::from_utf8(dated).unwrap();
    assert!(dated.lines().all(|l| l.contains("Nov 14  2023")), "{dated}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bsdtar_sees_hard_links_and_extracts_contents() {
    if !have("bsdtar") {
        return;
    }
    let dir = scratch("bsdtar");
    let tree = sample(&dir);
    let archive = dir.join("initrd.cpio");
    fs::write(&archive, plain(&tree, vec![])).unwrap();
    let listing = String::from_utf8(run(Command::new("bsdtar").arg("-tvf").arg(&archive), None)).unwrap();
    assert!(
        listing.lines().any(|l| l.ends_with("bin/sh link to bin/busybox")),
        "{listing}"
    );
    assert!(
        listing.lines().any(|l| l.ends_with("sbin/ash link to bin/busybox")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.contains(" 5,1 ") && l.ends_with("dev/console")),
        "{listing}"
    );

    let root = dir.join("root");
    fs::create_dir(&root).unwrap();
    run(
        Command::new("bsdtar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&root)
            .args(["--exclude", "dev", "--exclude", "run"]),
        None,
    );
    let busybox = fs::read(root.join("bin/busybox")).unwrap();
    assert_eq!(busybox, fs::read(dir.join("host-blob")).unwrap());
    let ino = fs::metadata(root.join("bin/busybox")).unwrap().ino();
    assert_eq!(fs::metadata(root.join("bin/sh")).unwrap().ino(), ino);
    assert_eq!(fs::metadata(root.join("sbin/ash")).unwrap().ino(), ino);
    assert_eq!(fs::metadata(root.join("bin/busybox")).unwrap().nlink(), 3);
    assert_eq!(fs::read(root.join("init")).unwrap(), b"#!/bin/sh\necho hello\n");
    assert_eq!(
        fs::read(root.join("lib/modules/6.1.0/kernel/e1000.ko")).unwrap(),
        vec![0x5a; 10_001]
    );
    assert_eq!(
        fs::read_link(root.join("lib64")).unwrap(),
        Path::new("/usr/lib/x86_64-linux-gnu")
    );
    assert_eq!(fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777, 0o1777);
    assert_eq!(fs::metadata(root.join("init")).unwrap().mtime() as u64, MTIME);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn zstd_decompresses_to_the_plain_archive_with_a_bounded_window() {
    if !have("zstd") {
        return;
    }
    let dir = scratch("zstd");
    let mut tree = sample(&dir);
    // 12 MiB of poorly compressible data, so the frame needs more than one window.
    let noise: Vec<u8> = (0..12u64 << 20)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect();
    tree.insert(&p("/var/noise"), Node::file(FileData::inline(noise), 0o644))
        .unwrap();
    let compressed = dir.join("initrd.zst");
    let opts = InitrdOptions {
        mtime: MTIME,
        compression: Compression::zstd(3),
        segments: vec![],
    };
    let mut out = Vec::new();
    let stats = write_initrd(&tree, &opts, &mut out).unwrap();
    assert_eq!(stats.compressed_bytes, out.len() as u64);
    fs::write(&compressed, &out).unwrap();

    let decompressed = run(Command::new("zstd").args(["-dc", "-q"]).arg(&compressed), None);
    assert!(
        decompressed == plain(&tree, vec![]),
        "zstd -dc output differs from the plain archive"
    );
    assert_eq!(decompressed.len() as u64, stats.uncompressed_bytes);

    let info = String::from_utf8(run(Command::new("zstd").args(["-lv"]).arg(&compressed), None)).unwrap();
    assert!(info.contains("Window Size: 8.00 MiB"), "{info}");
    assert!(info.contains("Check: XXH64"), "{info}");
    assert!(info.contains("# Zstandard Frames: 1"), "{info}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn segments_are_separate_frames_and_complete_archives() {
    if !have("zstd") || !have("cpio") {
        return;
    }
    let dir = scratch("segments");
    let tree = sample(&dir);
    let rules = vec![
        SegmentRule::new("modules", &["lib/modules"]).unwrap(),
        SegmentRule::new("docker", &["/usr/bin/dockerd"]).unwrap(),
        SegmentRule::new("busybox", &["bin/busybox"]).unwrap(),
    ];
    let opts = InitrdOptions {
        mtime: MTIME,
        compression: Compression::default(),
        segments: rules.clone(),
    };
    let mut out = Vec::new();
    let stats = write_initrd(&tree, &opts, &mut out).unwrap();
    let whole = dir.join("initrd.zst");
    fs::write(&whole, &out).unwrap();

    let info = String::from_utf8(run(Command::new("zstd").args(["-lv"]).arg(&whole), None)).unwrap();
    assert!(info.contains("# Zstandard Frames: 4"), "{info}");

    // zstd decodes the concatenated frames as the concatenation of the plain segments.
    let decompressed = run(Command::new("zstd").args(["-dc", "-q"]).arg(&whole), None);
    assert!(
        decompressed == plain(&tree, rules.clone()),
        "concatenated frames decode to something else"
    );

    // Each frame is a complete archive that GNU cpio lists on its own; together they hold every
    // path once, each after its parent directory.
    let mut offset = 0usize;
    let mut names: Vec<String> = Vec::new();
    for (i, seg) in stats.segments.iter().enumerate() {
        let piece = dir.join(format!("segment-{i}.zst"));
        fs::write(&piece, &out[offset..offset + seg.compressed_bytes as usize]).unwrap();
        offset += seg.compressed_bytes as usize;
        let raw = dir.join(format!("segment-{i}.cpio"));
        fs::write(&raw, run(Command::new("zstd").args(["-dc", "-q"]).arg(&piece), None)).unwrap();
        assert_eq!(fs::metadata(&raw).unwrap().len(), seg.uncompressed_bytes);
        let listed = String::from_utf8(run(Command::new("cpio").args(["-it", "--quiet"]), Some(&raw))).unwrap();
        let listed: Vec<String> = listed.lines().map(str::to_string).collect();
        assert_eq!(listed.len() as u64, seg.entries, "segment {}", seg.name);
        names.extend(listed);
    }
    assert_eq!(offset, out.len());
    assert_eq!(names.len(), tree.len());
    for (i, name) in names.iter().enumerate() {
        if let Some(parent) = p(name).parent() {
            let parent = if parent.is_root() {
                ".".to_string()
            } else {
                parent.as_str().to_string()
            };
            let at = names
                .iter()
                .position(|n| *n == parent)
                .unwrap_or_else(|| panic!("{parent} missing"));
            assert!(at < i, "{name} comes before its directory {parent}");
        }
    }
    // The busybox segment holds all three names of the hard-linked file.
    let plan = plan_segments(&tree, &rules).unwrap();
    let busybox: Vec<&str> = plan[3].paths().map(|p| p.as_str()).collect();
    assert_eq!(busybox, ["bin/busybox", "bin/sh", "sbin", "sbin/ash"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn output_is_deterministic() {
    let dir = scratch("determinism");
    let tree = sample(&dir);
    let opts = InitrdOptions {
        mtime: MTIME,
        compression: Compression::default(),
        segments: vec![SegmentRule::new("modules", &["lib/modules"]).unwrap()],
    };
    let mut a = Vec::new();
    let mut b = Vec::new();
    write_initrd(&tree, &opts, &mut a).unwrap();
    write_initrd(&tree.clone(), &opts, &mut b).unwrap();
    assert!(a == b, "two writes of the same tree differ");
    let mut c = Vec::new();
    write_initrd(
        &tree,
        &InitrdOptions {
            mtime: MTIME + 1,
            ..opts.clone()
        },
        &mut c,
    )
    .unwrap();
    assert!(a != c, "mtime does not reach the output");
    // A segment's bytes depend on its own entries only.
    let plan = plan_segments(&tree, &opts.segments).unwrap();
    let mut modules = Vec::new();
    plan[1].write(MTIME, opts.compression, &mut modules).unwrap();
    let mut other = tree.clone();
    other
        .insert(
            &p("/etc/hostname"),
            Node::file(FileData::inline(b"uvm\n".to_vec()), 0o644),
        )
        .unwrap();
    let plan2 = plan_segments(&other, &opts.segments).unwrap();
    let mut modules2 = Vec::new();
    plan2[1].write(MTIME, opts.compression, &mut modules2).unwrap();
    assert!(modules == modules2, "an unrelated change altered the modules segment");
    assert_eq!(
        plan[1].fingerprint(MTIME, opts.compression),
        plan2[1].fingerprint(MTIME, opts.compression)
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_that_changed_size_is_an_error_not_a_different_initrd() {
    let dir = scratch("changed");
    let blob = dir.join("blob");
    fs::write(&blob, b"0123456789").unwrap();
    let mut tree = FileTree::new();
    tree.insert(&p("/x"), Node::file(FileData::host_file(&blob).unwrap(), 0o644))
        .unwrap();
    fs::write(&blob, b"01234").unwrap();
    let err = write_initrd(&tree, &InitrdOptions::default(), &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("/x"), "{err}");
    fs::remove_dir_all(&dir).unwrap();
}
