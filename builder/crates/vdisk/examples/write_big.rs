//! Writes a 64 GiB disk holding the given host files in every format and prints, per format,
//! the time taken, the file length, the bytes the file system allocated and the data blocks
//! stored. Run it under `/usr/bin/time -v` to see the peak memory.
//!
//!     cargo run --release -p uvmkit-vdisk --example write_big -- OUT_DIR FILE...

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use uvmkit_disk::SparseImage;
use uvmkit_vdisk::{write_raw, write_vhdx, write_vmdk_sparse, write_vmdk_stream, VhdxOptions, VmdkOptions, WriteStats};

const GIB: u64 = 1 << 30;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let out_dir = PathBuf::from(args.next().ok_or("usage: write_big OUT_DIR FILE...")?);
    let files: Vec<PathBuf> = args.map(PathBuf::from).collect();
    std::fs::create_dir_all(&out_dir)?;

    // Metadata-like bytes at both ends, the files spread over the disk at odd offsets.
    let size = 64 * GIB;
    let mut img = SparseImage::new(size);
    img.put_bytes(0, vec![0x5A; 1 << 20])?;
    img.put_bytes(size - (1 << 20), vec![0xA5; 1 << 20])?;
    let mut offset = GIB;
    let mut data = 2u64 << 20;
    for file in &files {
        let len = std::fs::metadata(file)?.len();
        img.put_file(offset, file, 0, len)?;
        data += len;
        offset = (offset + len + 4 * GIB + 4096 * 3 + 512).next_multiple_of(512);
    }
    println!(
        "virtual size {size}, data {data} bytes in {} extents",
        img.extents().count()
    );

    report("raw", &out_dir.join("big.raw"), |p| Ok(write_raw(&img, p)?))?;
    report("vhdx 32M", &out_dir.join("big-32m.vhdx"), |p| {
        Ok(write_vhdx(&img, &VhdxOptions::default(), &mut File::create(p)?)?)
    })?;
    report("vhdx 1M", &out_dir.join("big-1m.vhdx"), |p| {
        let opts = VhdxOptions {
            block_size: 1 << 20,
            ..Default::default()
        };
        Ok(write_vhdx(&img, &opts, &mut File::create(p)?)?)
    })?;
    report("vmdk sparse", &out_dir.join("big-sparse.vmdk"), |p| {
        Ok(write_vmdk_sparse(&img, &VmdkOptions::default(), &mut File::create(p)?)?)
    })?;
    report("vmdk stream", &out_dir.join("big-stream.vmdk"), |p| {
        Ok(write_vmdk_stream(&img, &VmdkOptions::default(), &mut File::create(p)?)?)
    })?;
    Ok(())
}

fn report(
    name: &str,
    path: &Path,
    write: impl FnOnce(&Path) -> Result<WriteStats, Box<dyn std::error::Error>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let stats = write(path)?;
    let secs = start.elapsed().as_secs_f64();
    let allocated = std::fs::metadata(path)?.blocks() * 512;
    println!(
        "{name:12} {secs:6.2} s  file {:>12} bytes  allocated {:>11} bytes  {} data blocks",
        stats.file_size, allocated, stats.data_blocks
    );
    Ok(())
}
