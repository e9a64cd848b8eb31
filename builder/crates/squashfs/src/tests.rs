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
    written_with(tree, &SquashfsOptions::default(), &NoCache)
}

fn written_with(tree: &FileTree, options: &SquashfsOptions, cache: &dyn BlockCache) -> (Vec<u8>, SquashfsStats) {
    let mut out = Cursor::new(Vec::new());
    let options = SquashfsOptions {
        mtime: 1_700_000_000,
        ..options.clone()
    };
    let stats = write_squashfs_cached(tree, &options, cache, &mut out).unwrap();
    (out.into_inner(), stats)
}

/// xz in 64 KiB blocks: the sample's files span several blocks, and tests stay quick. One
/// thread, so the cache's hit and miss counts are exact (on several, two equal blocks in one
/// batch may both be compressed).
fn xz_options(x86_bcj: bool) -> SquashfsOptions {
    SquashfsOptions {
        block_size: 64 * 1024,
        compression: Compression::Xz { preset: 6, x86_bcj },
        threads: 1,
        ..SquashfsOptions::xz()
    }
}

/// Text that compresses, `len` bytes.
fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = seed;
    while out.len() < len {
        out.extend_from_slice(format!("line {i} of a file that compresses well\n").as_bytes());
        i += 7;
    }
    out.truncate(len);
    out
}

/// The sample tree with a compressible 200 KiB file and a piece of real x86-64 code (this test
/// program), where the BCJ filter has call targets to convert.
fn xz_sample_tree() -> (FileTree, Vec<u8>) {
    let mut tree = sample_tree();
    tree.insert(
        &path("/usr/share/doc/text"),
        Node::file(FileData::inline(text(200_000, 3)), 0o644),
    )
    .unwrap();
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let code = exe[..exe.len().min(512 * 1024)].to_vec();
    tree.insert(
        &path("/usr/bin/code"),
        Node::file(FileData::inline(code.clone()), 0o755),
    )
    .unwrap();
    (tree, code)
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

/// Data blocks are compressed on worker threads a batch at a time; the image must not depend
/// on how many. The tree spans several batches (more than 8 MiB of blocks), with files that
/// end mid-block, empty files between them, blocks stored raw and repeated blocks.
#[test]
fn the_image_is_the_same_on_any_number_of_threads() {
    let mut tree = FileTree::new();
    for i in 0..40u64 {
        let data = match i % 4 {
            0 => text(1_000_000 + i as usize * 1000, i),
            1 => pattern(50_000 + i as usize * 777, i),
            2 => Vec::new(),
            _ => vec![0u8; 64 * 1024 * 3 + 5],
        };
        tree.insert(
            &path(&format!("/data/f{i:02}")),
            Node::file(FileData::inline(data), 0o644),
        )
        .unwrap();
    }
    let options = |threads| SquashfsOptions {
        block_size: 64 * 1024,
        compression: Compression::Zstd { level: 3 },
        threads,
        ..SquashfsOptions::zstd()
    };
    let (one, stats) = written_with(&tree, &options(1), &NoCache);
    assert!(stats.file_bytes > 10 << 20, "{stats:?}");
    for threads in [2, 3, 8] {
        let (many, _) = written_with(&tree, &options(threads), &NoCache);
        assert!(many == one, "{threads} threads wrote other bytes than one");
    }
    // A cache filled on several threads gives the same bytes, cold and warm.
    let dir = ScratchDir::new("squashfs-threads");
    let cache = DirBlockCache::open(&dir.path().join("blocks")).unwrap();
    assert!(
        written_with(&tree, &options(4), &cache).0 == one,
        "cold cache, 4 threads"
    );
    let warm = DirBlockCache::open(&dir.path().join("blocks")).unwrap();
    assert!(
        written_with(&tree, &options(3), &warm).0 == one,
        "warm cache, 3 threads"
    );
    // Only the tails under a page are compressed again (they are never cached).
    let small_tails = tree
        .iter()
        .filter_map(|(_, node)| match &node.kind {
            NodeKind::File(data) => Some(data.len() % (64 * 1024)),
            _ => None,
        })
        .filter(|tail| (1..DirBlockCache::DEFAULT_MIN_BLOCK as u64).contains(tail))
        .count() as u64;
    assert_eq!(warm.stats().misses, small_tails, "{:?}", warm.stats());
    assert_eq!(warm.stats().rejected, 0);
    // The xz sample (BCJ on code blocks) too.
    let (xz_tree, _) = xz_sample_tree();
    let (xz_one, _) = written_with(&xz_tree, &xz_options(true), &NoCache);
    let xz_many = SquashfsOptions {
        threads: 4,
        ..xz_options(true)
    };
    assert!(
        written_with(&xz_tree, &xz_many, &NoCache).0 == xz_one,
        "xz on 4 threads"
    );
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

#[test]
fn xz_images_are_read_back_byte_for_byte_by_unsquashfs() {
    let (tree, code) = xz_sample_tree();
    let (image, stats) = written_with(&tree, &xz_options(true), &NoCache);
    let (again, _) = written_with(&tree, &xz_options(true), &NoCache);
    assert_eq!(image, again, "the same tree gives the same bytes");
    assert_eq!(u16::from_le_bytes([image[20], image[21]]), XZ_COMPRESSION);
    // The options block: an uncompressed 8-byte metadata block after the superblock holding
    // the dictionary size (the block size) and the x86 filter flag.
    assert_ne!(u16::from_le_bytes([image[24], image[25]]) & FLAG_COMP_OPT, 0);
    assert_eq!(&image[96..106], &[8, 0x80, 0, 0, 1, 0, 1, 0, 0, 0]);
    assert_eq!(stats.image_bytes as usize, image.len());
    if !have("unsquashfs") {
        return;
    }
    let dir = ScratchDir::new("squashfs-xz");
    let file = dir.path().join("system.squashfs");
    std::fs::write(&file, &image).unwrap();
    let (ok, superblock) = run("unsquashfs", &["-s", file.to_str().unwrap()]);
    assert!(ok, "{superblock}");
    assert!(superblock.contains("Compression xz"), "{superblock}");
    assert!(superblock.contains("Dictionary size 65536"), "{superblock}");
    assert!(superblock.contains("Filters selected: x86"), "{superblock}");
    assert!(superblock.contains("Block size 65536"), "{superblock}");

    let (ok, listing) = run("unsquashfs", &["-lls", "-d", "", file.to_str().unwrap()]);
    assert!(ok, "{listing}");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x root/root") && l.ends_with(" /usr/bin/code")),
        "{listing}"
    );
    let extracted = dir.path().join("root");
    let (ok, out) = run(
        "unsquashfs",
        &["-no-xattrs", "-d", extracted.to_str().unwrap(), file.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    // Every regular file, byte for byte.
    let mut compared = 0;
    for (p, node) in tree.iter() {
        if let NodeKind::File(data) = &node.kind {
            let on_disk = std::fs::read(extracted.join(p.as_str().trim_start_matches('/'))).unwrap_or_else(|e| {
                panic!(
                    "{p}: {e}\n{}",
                    run("find", &[extracted.to_str().unwrap(), "-maxdepth", "3"]).1
                )
            });
            assert!(on_disk == data.read_all().unwrap(), "{p} differs");
            compared += 1;
        }
    }
    assert_eq!(compared, 707);
    assert_eq!(std::fs::read(extracted.join("usr/bin/code")).unwrap(), code);
    assert_eq!(
        std::fs::read_link(extracted.join("bin/sh")).unwrap().to_str(),
        Some("../init")
    );
}

#[test]
fn the_x86_filter_is_kept_where_it_makes_code_smaller() {
    let (tree, _) = xz_sample_tree();
    let (with_bcj, _) = written_with(&tree, &xz_options(true), &NoCache);
    let (without, _) = written_with(&tree, &xz_options(false), &NoCache);
    // Both padded to 4 KiB; the bytes used tell the difference.
    let used = |image: &[u8]| u64::from_le_bytes(image[40..48].try_into().unwrap());
    assert!(
        used(&with_bcj) < used(&without),
        "BCJ {} bytes, plain {} bytes",
        used(&with_bcj),
        used(&without)
    );
    // Each stream names its filters in its block header (xz-file-format.txt 3.1): after the
    // 12-byte stream header, the header size, the flags (filters − 1 in the low bits), then
    // the first filter's id, 0x04 for x86 BCJ. Some data blocks keep the filter, the
    // compressible text and every metadata block (after the inode table's start) do not.
    let inode_table = u64::from_le_bytes(with_bcj[64..72].try_into().unwrap()) as usize;
    let x86_at: Vec<usize> = (0..with_bcj.len() - 16)
        .filter(|&i| with_bcj[i..i + 6] == [0xfd, b'7', b'z', b'X', b'Z', 0])
        .filter(|&i| with_bcj[i + 13] & 3 == 1 && with_bcj[i + 14] == 0x04)
        .collect();
    assert!(!x86_at.is_empty());
    assert!(x86_at.iter().all(|&i| i < inode_table), "{x86_at:?}");
    let streams = (0..with_bcj.len() - 6)
        .filter(|&i| with_bcj[i..i + 6] == [0xfd, b'7', b'z', b'X', b'Z', 0])
        .count();
    assert!(x86_at.len() < streams);
}

#[test]
fn a_warm_cache_gives_the_same_bytes_as_a_cold_one_and_as_none() {
    let (tree, _) = xz_sample_tree();
    let dir = ScratchDir::new("squashfs-cache");
    let options = xz_options(true);
    let (uncached, _) = written_with(&tree, &options, &NoCache);
    let cold = DirBlockCache::open(&dir.path().join("blocks")).unwrap();
    let (cold_bytes, _) = written_with(&tree, &options, &cold);
    assert_eq!(cold_bytes, uncached);
    // Blocks of 4 KiB or more are cached: init (5, stored raw), the three equal blocks of
    // zeros (1: the second and third are hits already), text (3), code (8); the tails of
    // zeros and text, init.toml, secret and the 700 small files are compressed each time.
    assert_eq!((cold.stats().hits, cold.stats().misses), (2, 17 + 704));
    let entries = entry_files(&dir.path().join("blocks"));
    assert_eq!(entries.len(), 17, "{entries:?}");

    let warm = DirBlockCache::open(&dir.path().join("blocks")).unwrap();
    let (warm_bytes, _) = written_with(&tree, &options, &warm);
    assert_eq!(warm_bytes, uncached);
    assert_eq!(warm.stats().hits, 19);
    assert_eq!(warm.stats().rejected, 0);

    // Another compressor or block size does not use these entries.
    let other = DirBlockCache::open(&dir.path().join("blocks")).unwrap();
    let zstd = SquashfsOptions {
        block_size: 64 * 1024,
        threads: 1,
        ..SquashfsOptions::zstd()
    };
    written_with(&tree, &zstd, &other);
    // Its only hits are the repeated zero blocks it wrote itself.
    assert_eq!(other.stats().hits, 2);
    assert_eq!(entry_files(&dir.path().join("blocks")).len(), 17 + 17);
}

#[test]
fn a_corrupt_or_truncated_cache_entry_is_ignored_and_rewritten() {
    let (tree, _) = xz_sample_tree();
    let dir = ScratchDir::new("squashfs-cache-corrupt");
    let blocks = dir.path().join("blocks");
    let options = xz_options(true);
    let (expected, _) = written_with(&tree, &options, &NoCache);
    written_with(&tree, &options, &DirBlockCache::open(&blocks).unwrap());

    // Damage four entries: one byte of the payload flipped, one cut short, one emptied, and
    // one replaced by another entry that is whole but belongs to a different block.
    let mut entries = entry_files(&blocks);
    entries.sort();
    let mut flipped = std::fs::read(&entries[0]).unwrap();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x55;
    std::fs::write(&entries[0], &flipped).unwrap();
    let whole = std::fs::read(&entries[1]).unwrap();
    std::fs::write(&entries[1], &whole[..whole.len() / 2]).unwrap();
    std::fs::write(&entries[2], b"").unwrap();
    std::fs::copy(&entries[4], &entries[3]).unwrap();

    let cache = DirBlockCache::open(&blocks).unwrap();
    let (bytes, _) = written_with(&tree, &options, &cache);
    assert!(bytes == expected, "a damaged cache changed the image");
    assert_eq!(cache.stats().rejected, 4);
    assert_eq!(cache.stats().hits, 19 - 4);
    // Rewritten: the next build finds all of them.
    assert_eq!(std::fs::read(&entries[1]).unwrap(), whole);
    let again = DirBlockCache::open(&blocks).unwrap();
    written_with(&tree, &options, &again);
    assert_eq!((again.stats().hits, again.stats().rejected), (19, 0));
}

#[test]
fn the_cache_is_pruned_to_its_bound_least_recently_used_first() {
    let (tree, _) = xz_sample_tree();
    let dir = ScratchDir::new("squashfs-cache-prune");
    let blocks = dir.path().join("blocks");
    let cache = DirBlockCache::open(&blocks).unwrap();
    written_with(&tree, &xz_options(true), &cache);
    let total: u64 = entry_files(&blocks).iter().map(|p| p.metadata().unwrap().len()).sum();
    let mut bounded = DirBlockCache::open(&blocks)
        .unwrap()
        .with_bounds(DirBlockCache::DEFAULT_MIN_BLOCK, total / 2);
    bounded.prune().unwrap();
    let left: u64 = entry_files(&blocks).iter().map(|p| p.metadata().unwrap().len()).sum();
    assert!(left <= total / 2 && left > 0, "{left} of {total}");
    assert!(bounded.stats().pruned > 0);
}

#[test]
fn out_of_range_compression_settings_are_refused() {
    let options = SquashfsOptions {
        compression: Compression::Xz {
            preset: 12,
            x86_bcj: false,
        },
        ..SquashfsOptions::xz()
    };
    let err = write_squashfs(&FileTree::new(), &options, &mut Cursor::new(Vec::new())).unwrap_err();
    assert_eq!(err.to_string(), "squashfs compression: xz preset 12 is not from 0 to 9");
}

fn entry_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for sub in std::fs::read_dir(dir).unwrap() {
        for entry in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            files.push(entry.unwrap().path());
        }
    }
    files
}

/// `tree`'s inline files of `min_len` bytes or more as host files in `dir`, each recorded
/// with its sha256.
fn with_checked_host_files(tree: &FileTree, dir: &std::path::Path, min_len: usize) -> FileTree {
    use sha2::{Digest, Sha256};
    let mut out = tree.clone();
    for (p, node) in tree.iter() {
        if let NodeKind::File(FileData::Inline(bytes)) = &node.kind {
            if bytes.len() >= min_len {
                let host = dir.join(p.as_str().replace('/', "_"));
                std::fs::write(&host, &bytes[..]).unwrap();
                let sha256 = Sha256::digest(&bytes[..]).into();
                out.get_mut(p).unwrap().kind =
                    NodeKind::File(FileData::checked_host_file(host, bytes.len() as u64, sha256));
            }
        }
    }
    out
}

#[test]
fn blocks_of_files_with_a_known_sha256_are_found_without_reading_the_file() {
    let (tree, _) = xz_sample_tree();
    let dir = ScratchDir::new("squashfs-file-blocks");
    let blobs = dir.path().join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let named = with_checked_host_files(&tree, &blobs, 64 * 1024);
    let options = SquashfsOptions {
        threads: 3,
        ..xz_options(true)
    };
    // The same bytes as the inline tree, with no cache and with a cold one.
    let (expected, _) = written_with(&tree, &options, &NoCache);
    assert!(written_with(&named, &options, &NoCache).0 == expected);
    let cold = DirBlockCache::open(&dir.path().join("blocks")).unwrap();
    assert!(written_with(&named, &options, &cold).0 == expected);

    // Overwrite the blobs with other bytes of their length: the tree still says the old
    // sha256, so a warm build must take every cached block from the cache, unread. Tails
    // under a page are not cached (they are read and compressed each time) and stay; so
    // does /init, whose random bytes do not compress (a block stored raw is read).
    let mut blob_count = 0;
    for entry in std::fs::read_dir(&blobs).unwrap() {
        let path = entry.unwrap().path();
        if path.ends_with("init") {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let tail = bytes.len() % (64 * 1024);
        let tail = if tail < DirBlockCache::DEFAULT_MIN_BLOCK {
            tail
        } else {
            0
        };
        let cached = bytes.len() - tail;
        bytes[..cached].copy_from_slice(&pattern(cached, 99));
        std::fs::write(&path, &bytes).unwrap();
        blob_count += 1;
    }
    assert!(blob_count >= 3, "{blob_count} blobs");
    let warm = DirBlockCache::open(&dir.path().join("blocks")).unwrap();
    assert!(
        written_with(&named, &options, &warm).0 == expected,
        "a warm build read a file whose blocks the cache holds"
    );
    assert_eq!(warm.stats().rejected, 0);
    // Without the cache the new bytes are read: the test would notice a build that ignored them.
    assert!(written_with(&named, &options, &NoCache).0 != expected);

    // A file that is gone when its block must be read is an error that names it.
    std::fs::remove_dir_all(&blobs).unwrap();
    let err = write_squashfs(
        &named,
        &SquashfsOptions {
            mtime: 1_700_000_000,
            ..options.clone()
        },
        &mut Cursor::new(Vec::new()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("reading /") && err.contains("for the system image: cannot read"),
        "{err}"
    );
}
