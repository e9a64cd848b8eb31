//! The writer against `unsquashfs` (squashfs-tools), the independent reader.

use super::*;
use std::io::Cursor;
use uvmkit_testkit::{have, pattern, run, ScratchDir};

fn path(p: &str) -> TreePath {
    TreePath::new(p).unwrap()
}

/// A tree with every node kind, a file of several blocks, one that compresses to nothing,
/// one that does not compress, a hard link and a directory whose listing spans metadata blocks.
fn sample_tree() -> FileTree {
    let mut tree = FileTree::new();
    tree.insert(&path("/init"), Node::file(FileData::inline(pattern(300_000, 1)), 0o755))
        .unwrap();
    tree.insert(
        &path("/etc/uvmkit/init.toml"),
        Node::file(FileData::inline(b"hostname = \"x\"\n".to_vec()), 0o644),
    )
    .unwrap();
    tree.insert(
        &path("/var/zeros"),
        Node::file(FileData::inline(vec![0u8; 200_000]), 0o600),
    )
    .unwrap();
    tree.insert(&path("/var/empty"), Node::file(FileData::inline(Vec::new()), 0o644))
        .unwrap();
    tree.insert(&path("/bin/sh"), Node::symlink("../init")).unwrap();
    tree.insert(
        &path("/bin/init-link"),
        Node {
            kind: NodeKind::HardLink(path("/init")),
            mode: 0o755,
            uid: 0,
            gid: 0,
        },
    )
    .unwrap();
    tree.insert(
        &path("/dev/console"),
        Node {
            kind: NodeKind::CharDevice { major: 5, minor: 1 },
            mode: 0o600,
            uid: 0,
            gid: 5,
        },
    )
    .unwrap();
    tree.insert(
        &path("/home/user/secret"),
        Node {
            kind: NodeKind::File(FileData::inline(b"owned".to_vec())),
            mode: 0o4750,
            uid: 1000,
            gid: 1000,
        },
    )
    .unwrap();
    for i in 0..700 {
        let name = format!("/usr/share/many/entry-with-a-long-name-{i:04}");
        tree.insert(
            &path(&name),
            Node::file(FileData::inline(format!("{i}\n").into_bytes()), 0o644),
        )
        .unwrap();
    }
    tree
}

fn written(tree: &FileTree) -> (Vec<u8>, SquashfsStats) {
    let mut out = Cursor::new(Vec::new());
    let options = SquashfsOptions {
        mtime: 1_700_000_000,
        ..SquashfsOptions::default()
    };
    let stats = write_squashfs(tree, &options, &mut out).unwrap();
    (out.into_inner(), stats)
}

#[test]
fn the_same_tree_gives_the_same_bytes() {
    let tree = sample_tree();
    let (first, stats) = written(&tree);
    let (second, _) = written(&tree);
    assert_eq!(first, second);
    assert_eq!(first.len() as u64, stats.image_bytes);
    assert_eq!(stats.image_bytes % 4096, 0);
    assert_eq!(&first[..4], b"hsqs");
    // Hard links share an inode: one fewer than the tree's entries.
    assert_eq!(stats.inodes as usize, tree.len() - 1);
    // The zeros compress; the random init does not, and is stored raw.
    assert!(stats.bytes_used < 300_000 + 200_000 + 40_000, "{stats:?}");
}

#[test]
fn unsquashfs_lists_and_extracts_the_tree() {
    if !have("unsquashfs") {
        return;
    }
    let tree = sample_tree();
    let (image, _) = written(&tree);
    let dir = ScratchDir::new("squashfs-read");
    let file = dir.path().join("system.squashfs");
    std::fs::write(&file, &image).unwrap();
    let (ok, superblock) = run("unsquashfs", &["-s", file.to_str().unwrap()]);
    assert!(ok, "{superblock}");
    assert!(superblock.contains("Compression zstd"), "{superblock}");
    assert!(superblock.contains("Block size 131072"), "{superblock}");

    let (ok, listing) = run("unsquashfs", &["-lln", "-d", "", file.to_str().unwrap()]);
    assert!(ok, "{listing}");
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")) || l.contains(&format!(" {name} -> ")))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"))
            .to_string()
    };
    assert!(line("/init").starts_with("-rwxr-xr-x 0/0"), "{}", line("/init"));
    assert!(line("/init").contains(" 300000 2023-11-14 "), "{}", line("/init"));
    assert!(
        line("/home/user/secret").starts_with("-rwsr-x--- 1000/1000 "),
        "{}",
        line("/home/user/secret")
    );
    assert!(line("/bin/sh").contains("/bin/sh -> ../init"), "{}", line("/bin/sh"));
    assert!(
        line("/dev/console").starts_with("crw------- 0/5 "),
        "{}",
        line("/dev/console")
    );
    assert!(line("/dev/console").contains("5,  1"), "{}", line("/dev/console"));
    assert_eq!(
        listing.lines().filter(|l| l.contains("/usr/share/many/entry")).count(),
        700
    );

    let extracted = dir.path().join("root");
    let (ok, out) = run(
        "unsquashfs",
        &[
            "-no-xattrs",
            "-d",
            extracted.to_str().unwrap(),
            file.to_str().unwrap(),
            "init",
            "var",
            "usr",
            "bin",
            "etc",
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(std::fs::read(extracted.join("init")).unwrap(), pattern(300_000, 1));
    assert_eq!(std::fs::read(extracted.join("var/zeros")).unwrap(), vec![0u8; 200_000]);
    assert_eq!(std::fs::read(extracted.join("var/empty")).unwrap(), b"");
    assert_eq!(
        std::fs::read(extracted.join("bin/init-link")).unwrap(),
        pattern(300_000, 1)
    );
    assert_eq!(
        std::fs::read(extracted.join("etc/uvmkit/init.toml")).unwrap(),
        b"hostname = \"x\"\n"
    );
    assert_eq!(
        std::fs::read(extracted.join("usr/share/many/entry-with-a-long-name-0699")).unwrap(),
        b"699\n"
    );
}

#[test]
fn a_bad_block_size_is_refused() {
    let mut out = Cursor::new(Vec::new());
    let options = SquashfsOptions {
        block_size: 5000,
        ..SquashfsOptions::default()
    };
    let err = write_squashfs(&FileTree::new(), &options, &mut out).unwrap_err();
    assert_eq!(
        err.to_string(),
        "squashfs block size 5000 is not a power of two from 4096 to 1048576"
    );
}
