//! Helpers the tool-driven tests share: scratch directories, writing an image out sparsely,
//! running the e2fsprogs readers, test data.

#![allow(dead_code)]

use std::fs::File;
use std::path::Path;
use std::process::Command;

use uvmkit_disk::SparseImage;

pub use uvmkit_testkit::{have, pattern, run, tool_path, ScratchDir};

/// Writes `image` to `path` as a sparse raw file: only its extents are written.
pub fn write_sparse(image: &SparseImage, path: &Path) {
    let mut out = File::create(path).unwrap();
    out.set_len(image.size()).unwrap();
    image.write_extents(&mut out).unwrap();
}

/// Writes only `image`'s extents over the existing file at `path`, as formatting a used
/// device does; everything else keeps its old bytes.
pub fn write_over(image: &SparseImage, path: &Path) {
    let mut out = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    assert_eq!(out.metadata().unwrap().len(), image.size());
    image.write_extents(&mut out).unwrap();
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
