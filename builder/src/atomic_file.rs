//! Replacing a file whole or not at all (a temporary file beside it, synced, then renamed over
//! it: rename(2) is atomic within a filesystem), and I/O errors that name the path. The lock
//! file, the bundle and the output directory's summaries are written this way.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Wraps an I/O error on `path` as "cannot WHAT PATH: ERROR", with a hint when the disk is full.
pub fn io_context<'a>(path: &'a Path, what: &str) -> impl FnOnce(io::Error) -> io::Error + 'a {
    let what = what.to_string();
    move |e| {
        let hint = if e.raw_os_error() == Some(libc::ENOSPC) {
            " (the disk is full: free space or choose another -o)"
        } else {
            ""
        };
        io::Error::new(e.kind(), format!("cannot {what} {}: {e}{hint}", path.display()))
    }
}

/// The temporary file `path` is first written as: hidden, in the same directory (so the final
/// rename stays within one filesystem), and named by this process.
pub fn temporary_beside(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ))
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, sync, rename).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temporary_beside(path);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_context(path, "write"))
}
