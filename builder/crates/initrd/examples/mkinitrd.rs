//! Writes an initrd from host directories, and reports its size and the time taken.
//!
//! `cargo run --release -p uvmkit-initrd --example mkinitrd -- OUT [--level N | --none]
//!  [--mtime SECS] [--segment NAME=PREFIX[,PREFIX...]]... DIR[:DEST]...`
//!
//! Each `DIR` is copied into the tree at `DEST` (default `/`). Used for benchmarks and for
//! building test initrds by hand; uvmkit itself builds its tree from packages.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Instant;

use uvmkit_filetree::{FileData, FileTree, Node, NodeKind, TreePath};
use uvmkit_initrd::{write_initrd, Compression, InitrdOptions, SegmentRule};

fn add_dir(tree: &mut FileTree, host: &Path, dest: &TreePath) -> Result<(), Box<dyn std::error::Error>> {
    let mut entries: Vec<_> = fs::read_dir(host)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| format!("non-UTF-8 name {n:?}"))?;
        let path = dest.join(&name)?;
        let meta = fs::symlink_metadata(entry.path())?;
        let ft = meta.file_type();
        let mode = meta.mode() & 0o7777;
        let kind = if ft.is_dir() {
            tree.mkdir_all(&path)?;
            add_dir(tree, &entry.path(), &path)?;
            continue;
        } else if ft.is_symlink() {
            NodeKind::Symlink(fs::read_link(entry.path())?.to_string_lossy().into_owned())
        } else if ft.is_file() {
            NodeKind::File(FileData::host_file(entry.path())?)
        } else if ft.is_char_device() || ft.is_block_device() {
            let (major, minor) = ((meta.rdev() >> 8) as u32 & 0xfff, (meta.rdev() & 0xff) as u32);
            if ft.is_char_device() {
                NodeKind::CharDevice { major, minor }
            } else {
                NodeKind::BlockDevice { major, minor }
            }
        } else {
            NodeKind::Fifo
        };
        tree.insert(
            &path,
            Node {
                kind,
                mode,
                uid: 0,
                gid: 0,
            },
        )?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .ok_or("usage: mkinitrd OUT [--level N | --none] [--segment NAME=PREFIX,...]... DIR[:DEST]...")?;
    let mut options = InitrdOptions::default();
    let mut tree = FileTree::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--none" => options.compression = Compression::None,
            "--level" => options.compression = Compression::zstd(args.next().ok_or("--level needs a value")?.parse()?),
            "--mtime" => options.mtime = args.next().ok_or("--mtime needs a value")?.parse()?,
            "--segment" => {
                let spec = args.next().ok_or("--segment needs NAME=PREFIX")?;
                let (name, prefixes) = spec.split_once('=').ok_or("--segment needs NAME=PREFIX")?;
                let prefixes: Vec<&str> = prefixes.split(',').collect();
                options.segments.push(SegmentRule::new(name, &prefixes)?);
            }
            dir => {
                let (host, dest) = dir.split_once(':').unwrap_or((dir, "/"));
                let dest = TreePath::new(dest)?;
                tree.mkdir_all(&dest)?;
                add_dir(&mut tree, Path::new(host), &dest)?;
            }
        }
    }
    let started = Instant::now();
    let mut file = fs::File::create(&out)?;
    let stats = write_initrd(&tree, &options, &mut file)?;
    file.sync_all()?;
    println!("{out}: {stats}");
    println!("{:?}: {:.2} s", options.compression, started.elapsed().as_secs_f64());
    Ok(())
}
