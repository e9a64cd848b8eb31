//! Helpers the tool-driven tests share: scratch directories, writing an image out sparsely,
//! running the e2fsprogs readers.

#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use uvmkit_disk::{ExtentData, SparseImage};

/// A fresh, empty directory for one test, removed when dropped.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(test: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("uvmkit-ext4-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        ScratchDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `image` to `path` as a sparse raw file: only its extents are written.
pub fn write_sparse(image: &SparseImage, path: &Path) {
    let out = File::create(path).unwrap();
    out.set_len(image.size()).unwrap();
    write_extents(image, &out, true);
}

/// Writes only `image`'s extents over the existing file at `path`, as formatting a used
/// device does; everything else keeps its old bytes.
pub fn write_over(image: &SparseImage, path: &Path) {
    let out = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    assert_eq!(out.metadata().unwrap().len(), image.size());
    write_extents(image, &out, false);
}

/// Writes `image`'s extents into `out`; `fresh` says `out` reads as zeros already, so zero
/// chunks of host files (sparse inputs) need not be written.
fn write_extents(image: &SparseImage, out: &File, fresh: bool) {
    let mut buf = vec![0u8; 1 << 20];
    for extent in image.extents() {
        match &extent.data {
            ExtentData::Bytes(b) => out.write_all_at(b, extent.offset).unwrap(),
            ExtentData::HostFile { path, offset, len } => {
                let src = File::open(path).unwrap();
                let mut done = 0;
                while done < *len {
                    let n = (*len - done).min(buf.len() as u64) as usize;
                    src.read_exact_at(&mut buf[..n], offset + done).unwrap();
                    if !fresh || buf[..n].iter().any(|&b| b != 0) {
                        out.write_all_at(&buf[..n], extent.offset + done).unwrap();
                    }
                    done += n as u64;
                }
            }
        }
    }
}

/// True when `tool` is on PATH (or in /sbin, /usr/sbin); otherwise prints why the calling
/// test skips its checks.
pub fn have(tool: &str) -> bool {
    let found = tool_path(tool).is_some();
    if !found {
        eprintln!("note: {tool} is not on PATH; skipping the checks that need it");
    }
    found
}

fn tool_path(tool: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(tool)).find(|p| p.is_file())
}

/// Runs `tool args`, returning (success, stdout + stderr).
pub fn run(tool: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool_path(tool).unwrap()).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Asserts that `e2fsck -fn` finds nothing to fix in the image at `path`.
pub fn assert_fsck_clean(path: &Path) {
    let (ok, text) = run("e2fsck", &["-fn", path.to_str().unwrap()]);
    assert!(ok, "e2fsck -fn failed:\n{text}");
}

/// `debugfs -R request image`'s standard output (its banner goes to standard error).
pub fn debugfs(path: &Path, request: &str) -> String {
    let out = Command::new(tool_path("debugfs").unwrap())
        .args(["-R", request, path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debugfs -R {request:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `len` bytes of a fixed pseudo-random sequence (xorshift), different per `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
