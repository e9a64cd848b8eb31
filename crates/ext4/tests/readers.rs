//! The filesystems this crate writes, checked by e2fsprogs: `e2fsck -fn` must find nothing to
//! fix and `debugfs` / `dumpe2fs` must read back what went in.

mod support;

use std::time::Instant;

use support::*;
use uvmkit_ext4::{build_ext4, Ext4Options};
use uvmkit_filetree::{FileData, FileTree, Node, NodeKind, TreePath};

const EPOCH: u32 = 1_700_000_000;

fn options(size_bytes: u64) -> Ext4Options {
    Ext4Options {
        size_bytes,
        label: "uvmkit-data".into(),
        uuid: *b"0123456789abcdef",
        hash_seed: *b"fedcba9876543210",
        mtime: EPOCH,
        ..Ext4Options::default()
    }
}

#[test]
fn empty_64_mib_filesystem_is_clean() {
    if !have("e2fsck") || !have("dumpe2fs") {
        return;
    }
    let dir = ScratchDir::new("ext4-empty");
    let img = dir.path().join("fs.img");
    let fs = build_ext4(&FileTree::new(), &options(64 << 20)).unwrap();
    write_sparse(&fs, &img);
    assert_fsck_clean(&img);
    let (ok, header) = run("dumpe2fs", &["-h", img.to_str().unwrap()]);
    assert!(ok, "{header}");
    assert!(header.contains("Filesystem volume name:   uvmkit-data"), "{header}");
    for feature in [
        "has_journal",
        "ext_attr",
        "filetype",
        "extent",
        "sparse_super",
        "large_file",
        "huge_file",
        "dir_nlink",
        "extra_isize",
        "metadata_csum",
    ] {
        assert!(header.contains(feature), "feature {feature} missing:\n{header}");
    }
    assert!(header.contains("Filesystem state:         clean"), "{header}");
    assert!(header.contains("Maximum mount count:      -1"), "{header}");
}

fn p(s: &str) -> TreePath {
    TreePath::new(s).unwrap()
}

/// A tree with something of every kind: nested directories, a 20 MB host file, a directory
/// of 5000 entries, fast and slow symlinks, a hard link, device nodes, a fifo, setuid modes
/// and non-root owners.
fn rich_tree(scratch: &std::path::Path) -> (FileTree, Vec<u8>) {
    let big = pattern(20_000_003, 7);
    let big_path = scratch.join("big.bin");
    std::fs::write(&big_path, &big).unwrap();
    let mut t = FileTree::new();
    t.insert(
        &p("/usr/bin/big.bin"),
        Node::file(FileData::host_file(&big_path).unwrap(), 0o644),
    )
    .unwrap();
    t.insert(
        &p("/usr/bin/su"),
        Node {
            uid: 0,
            gid: 0,
            ..Node::file(FileData::inline(b"#!/bin/sh\necho su\n".to_vec()), 0o4755)
        },
    )
    .unwrap();
    t.insert(
        &p("/home/user/notes.txt"),
        Node {
            uid: 1000,
            gid: 1001,
            ..Node::file(FileData::inline(b"hello ext4\n".to_vec()), 0o640)
        },
    )
    .unwrap();
    t.get_mut(&p("/home/user")).unwrap().uid = 1000;
    t.get_mut(&p("/home/user")).unwrap().gid = 1001;
    t.insert(
        &p("/home/big-ids"),
        Node {
            uid: 200_000,
            gid: 300_000,
            ..Node::file(FileData::inline(Vec::new()), 0o2750)
        },
    )
    .unwrap();
    t.insert(
        &p("/tmp"),
        Node {
            mode: 0o1777,
            ..Node::directory()
        },
    )
    .unwrap();
    t.insert(&p("/etc/fast"), Node::symlink("../usr/bin/su")).unwrap();
    let slow_target = format!("/{}/target", "long-directory-name".repeat(10));
    t.insert(&p("/etc/slow"), Node::symlink(slow_target.clone())).unwrap();
    t.insert(
        &p("/etc/hard"),
        Node {
            kind: NodeKind::HardLink(p("/home/user/notes.txt")),
            mode: 0o640,
            uid: 1000,
            gid: 1001,
        },
    )
    .unwrap();
    t.insert(
        &p("/dev/null"),
        Node {
            kind: NodeKind::CharDevice { major: 1, minor: 3 },
            mode: 0o666,
            uid: 0,
            gid: 0,
        },
    )
    .unwrap();
    t.insert(
        &p("/dev/big"),
        Node {
            kind: NodeKind::BlockDevice { major: 259, minor: 300 },
            mode: 0o660,
            uid: 0,
            gid: 6,
        },
    )
    .unwrap();
    t.insert(
        &p("/dev/fifo"),
        Node {
            kind: NodeKind::Fifo,
            mode: 0o600,
            uid: 0,
            gid: 0,
        },
    )
    .unwrap();
    for i in 0..5000 {
        let node = if i % 100 == 0 {
            Node::directory()
        } else {
            Node::file(FileData::inline(format!("entry {i}\n").into_bytes()), 0o644)
        };
        t.insert(&p(&format!("/var/many/entry-with-a-longish-name-{i:05}")), node)
            .unwrap();
    }
    (t, big)
}

#[test]
fn one_gib_filesystem_with_every_kind_of_node_reads_back() {
    if !have("e2fsck") || !have("debugfs") {
        return;
    }
    let dir = ScratchDir::new("ext4-rich");
    let (tree, big) = rich_tree(dir.path());
    let img = dir.path().join("fs.img");
    let fs = build_ext4(&tree, &options(1 << 30)).unwrap();
    write_sparse(&fs, &img);
    assert_fsck_clean(&img);
    // For a manual kernel mount of the same image.
    if let Some(keep) = std::env::var_os("UVMKIT_EXT4_KEEP_DIR") {
        std::fs::copy(&img, std::path::Path::new(&keep).join("rich.img")).unwrap();
    }

    let stat = debugfs(&img, "stat /usr/bin/su");
    assert!(stat.contains("Type: regular    Mode:  04755"), "{stat}");
    assert!(stat.contains("Flags: 0x80000"), "{stat}");
    let stat = debugfs(&img, "stat /home/user/notes.txt");
    assert!(stat.contains("User:  1000   Group:  1001"), "{stat}");
    assert!(stat.contains("Links: 2"), "{stat}");
    assert!(stat.contains("mtime: 0x6553f100"), "{stat}");
    let stat = debugfs(&img, "stat /home/big-ids");
    assert!(stat.contains("User: 200000   Group: 300000"), "{stat}");
    assert!(stat.contains("Mode:  02750"), "{stat}");
    assert_eq!(debugfs(&img, "cat /etc/hard"), "hello ext4\n");
    let stat = debugfs(&img, "stat /etc/fast");
    assert!(stat.contains("Fast link dest: \"../usr/bin/su\""), "{stat}");
    let stat = debugfs(&img, "stat /etc/slow");
    assert!(stat.contains("Type: symlink"), "{stat}");
    let slow_target = format!("/{}/target", "long-directory-name".repeat(10));
    assert_eq!(debugfs(&img, "cat /etc/slow"), slow_target);
    let stat = debugfs(&img, "stat /dev/null");
    assert!(
        stat.contains("Type: character special") && stat.contains("Device major/minor number: 01:03"),
        "{stat}"
    );
    let stat = debugfs(&img, "stat /dev/big");
    assert!(
        stat.contains("Type: block special") && stat.contains("Device major/minor number: 259:300"),
        "{stat}"
    );
    let stat = debugfs(&img, "stat /dev/fifo");
    assert!(stat.contains("Type: FIFO"), "{stat}");
    let stat = debugfs(&img, "stat /tmp");
    assert!(stat.contains("Mode:  01777"), "{stat}");

    let listing = debugfs(&img, "ls -l /var/many");
    assert_eq!(listing.matches("entry-with-a-longish-name-").count(), 5000, "{listing}");
    let listing = debugfs(&img, "ls -l /");
    assert!(listing.contains("lost+found"), "{listing}");
    let stat = debugfs(&img, "stat /lost+found");
    assert!(stat.contains("Size: 16384"), "{stat}");

    let out = dir.path().join("big.out");
    debugfs(&img, &format!("dump /usr/bin/big.bin {}", out.display()));
    assert!(
        std::fs::read(&out).unwrap() == big,
        "the 20 MB file reads back differently"
    );
}

#[test]
fn a_file_of_many_extents_gets_an_index_node() {
    if !have("e2fsck") || !have("debugfs") {
        return;
    }
    // 700 MB cross six block groups, so the file needs more extents than the inode holds.
    let dir = ScratchDir::new("ext4-deep");
    let host = dir.path().join("sparse-input");
    let len: u64 = 700_000_000;
    let marks: Vec<(u64, Vec<u8>)> = [0, 140_000_000, 300_000_001, len - 5000]
        .iter()
        .enumerate()
        .map(|(i, &at)| (at, pattern(5000, 100 + i as u64)))
        .collect();
    {
        let f = std::fs::File::create(&host).unwrap();
        f.set_len(len).unwrap();
        for (at, bytes) in &marks {
            std::os::unix::fs::FileExt::write_all_at(&f, bytes, *at).unwrap();
        }
    }
    let mut tree = FileTree::new();
    tree.insert(&p("/huge"), Node::file(FileData::host_file(&host).unwrap(), 0o644))
        .unwrap();
    let fs = build_ext4(&tree, &options(1 << 30)).unwrap();
    let img = dir.path().join("fs.img");
    write_sparse(&fs, &img);
    assert_fsck_clean(&img);
    let stat = debugfs(&img, "stat /huge");
    assert!(stat.contains("(ETB0)"), "no extent tree block:\n{stat}");
    assert!(stat.contains("Size: 700000000"), "{stat}");
    // Follow the tree with debugfs's bmap and read the marks from the image directly.
    for (at, bytes) in &marks {
        let logical = at / 4096;
        let physical: u64 = debugfs(&img, &format!("bmap /huge {logical}")).trim().parse().unwrap();
        let mut got = vec![0u8; bytes.len()];
        fs.read_at(physical * 4096 + at % 4096, &mut got).unwrap();
        assert!(&got == bytes, "bytes at file offset {at} are wrong");
    }
}

#[test]
fn huge_filesystem_stays_sparse_and_is_quick() {
    if !have("e2fsck") {
        return;
    }
    let dir = ScratchDir::new("ext4-huge");
    let mut tree = FileTree::new();
    let data = pattern(3_000_000, 3);
    let host = dir.path().join("blob");
    std::fs::write(&host, &data).unwrap();
    tree.insert(&p("/a/blob"), Node::file(FileData::host_file(&host).unwrap(), 0o644))
        .unwrap();
    tree.insert(&p("/a/small"), Node::file(FileData::inline(b"x".to_vec()), 0o600))
        .unwrap();
    tree.insert(&p("/b/link"), Node::symlink("/a/blob")).unwrap();
    let started = Instant::now();
    let fs = build_ext4(
        &tree,
        &Ext4Options {
            assume_zeroed: true,
            ..options(64 << 30)
        },
    )
    .unwrap();
    let img = dir.path().join("fs.img");
    write_sparse(&fs, &img);
    let took = started.elapsed();
    assert!(took.as_secs() < 20, "building and writing took {took:?}");
    assert!(
        fs.allocated_bytes() < 16 << 20,
        "{} bytes allocated",
        fs.allocated_bytes()
    );
    use std::os::unix::fs::MetadataExt;
    let on_disk = std::fs::metadata(&img).unwrap().blocks() * 512;
    assert!(on_disk < 32 << 20, "the sparse image takes {on_disk} bytes on disk");
    assert_fsck_clean(&img);
    let (ok, text) = run("dumpe2fs", &["-h", img.to_str().unwrap()]);
    assert!(ok && text.contains("Total journal size:       64M"), "{text}");
}

#[test]
fn formatting_over_old_data_writes_metadata_only_and_is_clean() {
    if !have("e2fsck") {
        return;
    }
    // A device full of noise, and an old filesystem's structures at the same places: the
    // new one must not depend on anything it did not write.
    let dir = ScratchDir::new("ext4-reformat");
    let img = dir.path().join("dev.img");
    std::fs::write(&img, pattern(96 << 20, 11)).unwrap();
    let (old_tree, _) = rich_tree(dir.path());
    write_over(&build_ext4(&old_tree, &options(96 << 20)).unwrap(), &img);
    let blank = build_ext4(
        &FileTree::new(),
        &Ext4Options {
            uuid: [7; 16],
            ..options(96 << 20)
        },
    )
    .unwrap();
    assert!(
        blank.allocated_bytes() < 1 << 20,
        "{} bytes written to format",
        blank.allocated_bytes()
    );
    // As the init formats a disk: the crate's own writer, onto the "device".
    let mut device = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    blank.write_extents(&mut device).unwrap();
    drop(device);
    assert_fsck_clean(&img);
    if let Some(keep) = std::env::var_os("UVMKIT_EXT4_KEEP_DIR") {
        std::fs::copy(&img, std::path::Path::new(&keep).join("reformat.img")).unwrap();
    }
    let listing = debugfs(&img, "ls /");
    assert!(listing.contains("lost+found") && !listing.contains("usr"), "{listing}");
}

#[test]
fn same_input_gives_the_same_bytes() {
    let dir = ScratchDir::new("ext4-determinism");
    let (tree, _) = rich_tree(dir.path());
    let a = build_ext4(&tree, &options(256 << 20)).unwrap();
    let b = build_ext4(&tree.clone(), &options(256 << 20)).unwrap();
    assert!(a == b, "two builds of the same tree differ");
    let c = build_ext4(
        &tree,
        &Ext4Options {
            uuid: [9; 16],
            ..options(256 << 20)
        },
    )
    .unwrap();
    assert!(a != c, "the uuid does not reach the image");
}

#[test]
fn bad_options_and_trees_are_refused_with_reasons() {
    let err = build_ext4(
        &FileTree::new(),
        &Ext4Options {
            label: "x".repeat(17),
            ..options(64 << 20)
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("longer than 16 bytes"), "{err}");
    let err = build_ext4(&FileTree::new(), &options(100 << 10)).unwrap_err();
    assert!(err.to_string().contains("too small"), "{err}");
    let mut t = FileTree::new();
    t.insert(&p("/lost+found"), Node::file(FileData::inline(vec![]), 0o644))
        .unwrap();
    assert!(build_ext4(&t, &options(64 << 20)).is_err());
    let mut t = FileTree::new();
    t.insert(&p("/f"), Node::file(FileData::inline(vec![1; 100 << 20]), 0o644))
        .unwrap();
    let err = build_ext4(&t, &options(64 << 20)).unwrap_err();
    assert!(err.to_string().contains("full while placing /f"), "{err}");
    let mut t = FileTree::new();
    for i in 0..5000 {
        t.insert(&p(&format!("/d/{i}")), Node::directory()).unwrap();
    }
    let err = build_ext4(&t, &options(64 << 20)).unwrap_err();
    assert!(err.to_string().contains("inodes"), "{err}");
}
