//! Formats an ext4 image from a host directory, for manual checks and measurements:
//!
//! ```text
//! cargo run --release -p uvmkit-ext4 --example dir_to_ext4 -- SRC_DIR SIZE_MIB OUT.img
//! ```
//!
//! Regular files, directories and symlinks are copied with their permission bits; owners
//! become root. The image is written sparsely (only its extents), then timings are printed.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use uvmkit_ext4::{build_ext4, Ext4Options};
use uvmkit_filetree::{FileData, FileTree, Node, TreePath};

fn add_dir(tree: &mut FileTree, host: &Path, at: &TreePath) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(host)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = at.join(&name).expect("a host file name is a valid path component");
        let meta = std::fs::symlink_metadata(entry.path())?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            tree.insert(
                &path,
                Node {
                    mode,
                    ..Node::directory()
                },
            )
            .expect("a fresh path");
            add_dir(tree, &entry.path(), &path)?;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(entry.path())?.to_string_lossy().into_owned();
            tree.insert(&path, Node::symlink(target)).expect("a fresh path");
        } else if meta.is_file() {
            tree.insert(&path, Node::file(FileData::host_file(entry.path())?, mode))
                .expect("a fresh path");
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        return Err("usage: dir_to_ext4 SRC_DIR SIZE_MIB OUT.img".into());
    }
    let started = Instant::now();
    let mut tree = FileTree::new();
    add_dir(&mut tree, Path::new(&args[1]), &TreePath::root())?;
    let scanned = started.elapsed();
    let opts = Ext4Options {
        size_bytes: args[2].parse::<u64>()? << 20,
        label: "uvmkit-data".into(),
        uuid: *b"uvmkit-example!!",
        hash_seed: *b"uvmkit-hashseed!",
        mtime: 1_700_000_000,
        assume_zeroed: true,
        ..Ext4Options::default()
    };
    let image = build_ext4(&tree, &opts)?;
    let built = started.elapsed();
    let mut out = File::create(&args[3])?;
    out.set_len(image.size())?;
    image.write_extents(&mut out)?;
    out.sync_all()?;
    println!(
        "{} nodes, {} MiB of files; scan {:?}, build {:?}, total with writing {:?}; {} extents, {} MiB allocated",
        tree.len(),
        tree.total_file_bytes() >> 20,
        scanned,
        built - scanned,
        started.elapsed(),
        image.extents().count(),
        image.allocated_bytes() >> 20
    );
    Ok(())
}
