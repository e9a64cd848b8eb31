//! Replacing a file whole: readers see its old content or its new one, never a part.
//!
//! The bytes go to a fresh temporary file on the same filesystem, are `fsync`ed, and the file
//! is `rename`d over the destination; POSIX `rename` replaces atomically. The cache keeps its
//! temporary files in a directory of their own; [`write_atomically`] puts them beside the
//! destination.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, `fsync`, a
/// `rename` over `path`, then an `fsync` of the directory so the new name survives a crash.
/// On error nothing is left behind and `path` keeps its old content; the error is the
/// system's, and the caller names `path` in its message (as with [`std::fs::write`]).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().map_or("file".into(), |n| n.to_string_lossy());
    let mut temp = TempFile::create_in(dir, &format!(".{name}."))?;
    temp.file.write_all(bytes)?;
    temp.persist(path)?;
    // The rename is an entry in the directory: make it durable too.
    File::open(dir)?.sync_all()
}

/// A new, empty file that is removed again unless it is persisted.
pub(crate) struct TempFile {
    /// The open file.
    pub file: File,
    /// Where it is.
    pub path: PathBuf,
    keep: bool,
}

impl TempFile {
    /// Creates `dir/PREFIX<pid>.<n>.part`, a name no other writer uses: the counter makes it
    /// unique in this process, `create_new` against a file a crashed process left.
    pub fn create_in(dir: &Path, prefix: &str) -> io::Result<TempFile> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{prefix}{pid}.{n}.part"));
            match File::options().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    return Ok(TempFile {
                        file,
                        path,
                        keep: false,
                    })
                }
                // Left by an earlier process with the same pid: take the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// `fsync`s the file and renames it to `dest`, replacing whatever is there.
    pub fn persist(mut self, dest: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        fs::rename(&self.path, dest)?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::TestDir;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_and_replaces_leaving_no_temporary_file() {
        let dir = TestDir::new("atomic-write");
        let path = dir.0.join("manifest.json");
        write_atomically(&path, b"first").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        write_atomically(&path, b"second, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer");
        assert_eq!(names_in(&dir.0), ["manifest.json"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_content() {
        let dir = TestDir::new("atomic-fail");
        // A directory where the file should go: the rename fails after the temporary file
        // was written, and that file must go again.
        let path = dir.0.join("taken");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), b"old").unwrap();
        let e = write_atomically(&path, b"new").unwrap_err();
        assert!(
            matches!(e.kind(), io::ErrorKind::IsADirectory | io::ErrorKind::DirectoryNotEmpty),
            "{e:?}"
        );
        assert_eq!(names_in(&dir.0), ["taken"]);
        assert_eq!(fs::read(path.join("inside")).unwrap(), b"old");
        // No such directory: nothing is created.
        let missing = dir.0.join("no-such-dir/file");
        assert_eq!(
            write_atomically(&missing, b"x").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
