//! Replacing the output directory as one unit: a build writes every artifact, `SHA256SUMS`,
//! `manifest.json` and the SBOM into a fresh staging directory beside the output directory
//! (same filesystem), syncs them, and only then swaps it with the old output directory in one
//! `renameat2(RENAME_EXCHANGE)` (rename(2) of the old one away and the new one in where the
//! filesystem cannot exchange), and removes the old one. Everything appears together or not at
//! all: a failed, killed or out-of-space build leaves the previous output untouched, and
//! artifacts of an earlier build with other formats do not linger unlisted. Staging
//! directories that a killed build left are removed by the next build into the same place.

use crate::atomic_file::io_context;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Names of staging directories start with this.
pub const STAGING_PREFIX: &str = ".uvmkit-staging-";

/// The files that mark a directory as an earlier build's output (it may be replaced).
const OUTPUT_MARKERS: [&str; 2] = ["SHA256SUMS", "manifest.json"];

/// One published artifact.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Artifact {
    /// File name in the output directory.
    pub name: String,
    /// What it is: `efi`, `kernel`, `initrd`, `iso`, or a disk format (`raw`, `vhdx`, `vmdk`,
    /// `vmdk-stream`, `qcow2`, `ova`, `vagrant-virtualbox`, `vagrant-libvirt`, `vagrant-hyperv`).
    pub kind: String,
    /// Size in bytes (the apparent size, for sparse files).
    pub size: u64,
    /// Bytes the file occupies on disk.
    #[serde(skip)]
    pub allocated: u64,
    /// SHA-256 of the contents, hex.
    pub sha256: String,
}

/// The output directory of one build, staged until [`ArtifactDir::commit`].
pub struct ArtifactDir {
    out_dir: PathBuf,
    /// The new output directory, filled with finished files only.
    staging: PathBuf,
    /// Files being written and scratch files, inside `staging`; removed before the swap.
    work: PathBuf,
    published: Vec<Artifact>,
    committed: bool,
}

impl ArtifactDir {
    /// Prepares replacing `out_dir`: removes staging directories of dead builds beside it and
    /// creates a fresh one (mode 0700, `mkdir` fails rather than reuse one). An existing
    /// `out_dir` must be empty or an earlier build's output (it has `SHA256SUMS` or
    /// `manifest.json`), so that `-o` naming some other directory never replaces it.
    pub fn create(out_dir: &Path) -> io::Result<ArtifactDir> {
        let out_dir = std::path::absolute(out_dir).map_err(io_context(out_dir, "resolve"))?;
        let (Some(parent), Some(name)) = (out_dir.parent(), out_dir.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} cannot be an output directory: name a directory below it",
                    out_dir.display()
                ),
            ));
        };
        let name = name.to_string_lossy().into_owned();
        fs::create_dir_all(parent).map_err(io_context(parent, "create the output directory's parent"))?;
        check_replaceable(&out_dir)?;
        remove_stale_staging(parent, &name);
        // Directories an older uvmkit staged inside the output directory itself.
        remove_stale_staging(&out_dir, "");
        let staging = parent.join(format!("{STAGING_PREFIX}{}-{name}", std::process::id()));
        if staging.exists() {
            // Our own pid, so a dead process's: we have not made it yet.
            fs::remove_dir_all(&staging).map_err(io_context(&staging, "clear"))?;
        }
        create_private_dir(&staging)?;
        let work = staging.join(".work");
        let dir = ArtifactDir {
            out_dir,
            staging,
            work,
            published: Vec::new(),
            committed: false,
        };
        create_private_dir(&dir.work)?;
        Ok(dir)
    }

    /// The output directory.
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// Where to write `name` before publishing it (also usable for scratch files).
    pub fn staging_path(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    /// A scratch directory `name` inside the work area (removed with it, never published).
    pub fn scratch_dir(&self, name: &str) -> io::Result<PathBuf> {
        let dir = self.work.join(name);
        fs::create_dir_all(&dir).map_err(io_context(&dir, "create"))?;
        Ok(dir)
    }

    /// Syncs and hashes the staged file `name` and moves it into the new output directory.
    pub fn publish(&mut self, name: &str, kind: &str) -> io::Result<Artifact> {
        let (meta, sha256) = sync_and_hash(&self.staging_path(name))?;
        self.place(name, kind, meta, sha256)
    }

    /// [`ArtifactDir::publish`] for several staged files (`name`, `kind`), synced and hashed at
    /// once, one thread each; listed in the order given.
    pub fn publish_all(&mut self, files: &[(&str, &str)]) -> io::Result<Vec<Artifact>> {
        let staged: Vec<PathBuf> = files.iter().map(|(name, _)| self.staging_path(name)).collect();
        let checked: Vec<io::Result<(fs::Metadata, String)>> = std::thread::scope(|scope| {
            let threads: Vec<_> = staged.iter().map(|path| scope.spawn(|| sync_and_hash(path))).collect();
            threads
                .into_iter()
                .map(|t| t.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect()
        });
        files
            .iter()
            .zip(checked)
            .map(|(&(name, kind), checked)| {
                let (meta, sha256) = checked?;
                self.place(name, kind, meta, sha256)
            })
            .collect()
    }

    /// Moves the staged file `name`, synced and hashed, into the new output directory.
    fn place(&mut self, name: &str, kind: &str, meta: fs::Metadata, sha256: String) -> io::Result<Artifact> {
        let staged = self.staging_path(name);
        let dest = self.staging.join(name);
        fs::rename(&staged, &dest).map_err(io_context(&dest, "move into place"))?;
        let artifact = Artifact {
            name: name.to_string(),
            kind: kind.to_string(),
            size: meta.len(),
            allocated: std::os::unix::fs::MetadataExt::blocks(&meta) * 512,
            sha256,
        };
        self.published.push(artifact.clone());
        Ok(artifact)
    }

    /// Writes `bytes` as `name` and publishes it.
    pub fn publish_bytes(&mut self, name: &str, kind: &str, bytes: &[u8]) -> io::Result<Artifact> {
        let staged = self.staging_path(name);
        let mut f = File::create(&staged).map_err(io_context(&staged, "create"))?;
        f.write_all(bytes).map_err(io_context(&staged, "write"))?;
        drop(f);
        self.publish(name, kind)
    }

    /// Writes a summary file (`SHA256SUMS`, `manifest.json`, the SBOM) into the new output
    /// directory, synced; summaries are not listed as artifacts.
    pub fn write_summary(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.staging.join(name);
        let mut f = File::create_new(&path).map_err(io_context(&path, "create"))?;
        f.write_all(bytes).map_err(io_context(&path, "write"))?;
        f.sync_all().map_err(io_context(&path, "sync"))
    }

    /// The artifacts published so far, in order.
    pub fn published(&self) -> &[Artifact] {
        &self.published
    }

    /// `SHA256SUMS` text for the published artifacts, sorted by name (`sha256sum -c` format).
    pub fn sha256sums(&self) -> String {
        let mut rows: Vec<&Artifact> = self.published.iter().collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        rows.iter().map(|a| format!("{}  {}\n", a.sha256, a.name)).collect()
    }

    /// Replaces the output directory with the staged one, as one unit, and removes the old one.
    pub fn commit(mut self) -> io::Result<()> {
        fs::remove_dir_all(&self.work).map_err(io_context(&self.work, "remove"))?;
        File::open(&self.staging)
            .and_then(|d| d.sync_all())
            .map_err(io_context(&self.staging, "sync"))?;
        let parent = self.out_dir.parent().unwrap_or(Path::new("/")).to_path_buf();
        // Re-checked: the directory may have been made meanwhile.
        check_replaceable(&self.out_dir)?;
        let old = match exchange(&self.staging, &self.out_dir) {
            // The old output now lies at the staging path.
            Ok(true) => Some(self.staging.clone()),
            // Nothing was there: the staging directory became the output directory.
            Ok(false) => None,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
                // No RENAME_EXCHANGE on this filesystem: move the old one away first. A crash
                // between the two renames leaves no output directory, never a mixed one.
                let aside = parent.join(format!("{STAGING_PREFIX}{}-old", std::process::id()));
                fs::rename(&self.out_dir, &aside).map_err(io_context(&self.out_dir, "move aside"))?;
                fs::rename(&self.staging, &self.out_dir).map_err(io_context(&self.out_dir, "move into place"))?;
                Some(aside)
            }
            Err(e) => return Err(io_context(&self.out_dir, "replace")(e)),
        };
        self.committed = true;
        File::open(&parent)
            .and_then(|d| d.sync_all())
            .map_err(io_context(&parent, "sync"))?;
        if let Some(old) = old {
            fs::remove_dir_all(&old).map_err(io_context(&old, "remove the previous output"))?;
        }
        Ok(())
    }
}

impl Drop for ArtifactDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// Syncs the file at `staged` to disk and hashes it; returns its metadata and sha256.
fn sync_and_hash(staged: &Path) -> io::Result<(fs::Metadata, String)> {
    let file = File::open(staged).map_err(io_context(staged, "open"))?;
    file.sync_all().map_err(io_context(staged, "sync"))?;
    let meta = file.metadata()?;
    let sha256 = hash_sparse_file(&file).map_err(io_context(staged, "hash"))?;
    Ok((meta, sha256))
}

/// Creates `dir`, which must not exist, readable by its owner only.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(io_context(dir, "create"))
}

/// An existing output directory must be empty or an earlier build's output.
fn check_replaceable(out_dir: &Path) -> io::Result<()> {
    let mut entries = match fs::read_dir(out_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_context(out_dir, "read the output directory")(e)),
    };
    let empty = entries.next().is_none();
    if empty || OUTPUT_MARKERS.iter().any(|m| out_dir.join(m).is_file()) {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{} holds files but is not the output of an earlier build (it has no SHA256SUMS or manifest.json); a build replaces its output directory whole, so name a new or empty directory with -o",
            out_dir.display()
        ),
    ))
}

/// Swaps `from` and `to` atomically; `Ok(false)` when `to` did not exist and `from` was
/// renamed to it.
fn exchange(from: &Path, to: &Path) -> io::Result<bool> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (a, b) = (c(from)?, c(to)?);
    // SAFETY: both are NUL-terminated paths that live across the call; AT_FDCWD with absolute
    // paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOENT) && !to.exists() {
        fs::rename(from, to)?;
        return Ok(false);
    }
    Err(e)
}

/// Removes `dir/.uvmkit-staging-PID-SUFFIX` (or `-PID` when `suffix` is empty, and the
/// `-PID-old` of an interrupted swap) whose process no longer runs.
fn remove_stale_staging(dir: &Path, suffix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(STAGING_PREFIX)) else {
            continue;
        };
        let (pid, tail) = rest.split_once('-').unwrap_or((rest, ""));
        let ours = if suffix.is_empty() {
            tail.is_empty()
        } else {
            tail == suffix || tail == "old"
        };
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        if ours && !process_runs(pid) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether process `pid` exists (kill(2) with signal 0 checks without signalling).
fn process_runs(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only reports whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// SHA-256 of a file, reading only its data regions (`SEEK_DATA`/`SEEK_HOLE`) and hashing
/// holes as zeros without reading them, so a sparse 64 GiB disk hashes at memory speed.
pub fn hash_sparse_file(file: &File) -> io::Result<String> {
    let len = file.metadata()?.len();
    let mut hasher = Sha256::new();
    let zeros = vec![0u8; 1 << 20];
    let mut buf = vec![0u8; 1 << 20];
    let mut f = file;
    let mut pos = 0u64;
    while pos < len {
        let data_start = seek_data(file, pos)?.unwrap_or(len).min(len);
        let mut hole = data_start - pos;
        while hole > 0 {
            let n = hole.min(zeros.len() as u64) as usize;
            hasher.update(&zeros[..n]);
            hole -= n as u64;
        }
        if data_start >= len {
            break;
        }
        let data_end = seek_hole(file, data_start)?.min(len);
        f.seek(SeekFrom::Start(data_start))?;
        let mut left = data_end - data_start;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            f.read_exact(&mut buf[..n])?;
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        pos = data_end;
    }
    Ok(hex::encode(hasher.finalize()))
}

fn lseek(file: &File, offset: u64, whence: i32) -> io::Result<Option<u64>> {
    use std::os::fd::AsRawFd;
    // SAFETY: lseek on a valid descriptor owned by `file`; no memory is passed.
    let r = unsafe { libc::lseek(file.as_raw_fd(), offset as libc::off_t, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        // ENXIO: no data (or hole) at or after offset.
        return if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(Some(r as u64))
}

fn seek_data(file: &File, offset: u64) -> io::Result<Option<u64>> {
    match lseek(file, offset, libc::SEEK_DATA) {
        // Filesystems without SEEK_DATA support: treat everything as data.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(Some(offset)),
        other => other,
    }
}

fn seek_hole(file: &File, offset: u64) -> io::Result<u64> {
    let len = file.metadata()?.len();
    match lseek(file, offset, libc::SEEK_HOLE) {
        Ok(Some(h)) => Ok(h),
        Ok(None) => Ok(len),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(len),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_hash_equals_plain_hash() {
        let dir = std::env::temp_dir().join(format!("uvmkit-art-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sparse");
        let f = File::create(&path).unwrap();
        f.set_len(64 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"hello", 10 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"end", (64 << 20) - 3).unwrap();
        drop(f);
        let plain = hex::encode(Sha256::digest(fs::read(&path).unwrap()));
        assert_eq!(hash_sparse_file(&File::open(&path).unwrap()).unwrap(), plain);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_output_directory_is_replaced_whole_and_failed_builds_leave_nothing() {
        let root = std::env::temp_dir().join(format!("uvmkit-pub-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let dir = root.join("out");
        let names = |d: &Path| {
            let mut v: Vec<String> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        // A first build with an ISO.
        let mut out = ArtifactDir::create(&dir).unwrap();
        out.publish_bytes("x.iso", "iso", b"iso").unwrap();
        out.write_summary("SHA256SUMS", out.sha256sums().as_bytes()).unwrap();
        out.commit().unwrap();
        assert_eq!(names(&dir), ["SHA256SUMS", "x.iso"]);
        // A failed build changes nothing and leaves no staging directory.
        {
            let mut out = ArtifactDir::create(&dir).unwrap();
            let a = out.publish_bytes("x.efi", "efi", b"abc").unwrap();
            assert_eq!(
                a.sha256,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            );
            fs::write(out.staging_path("half.raw"), b"partial").unwrap();
            assert_eq!(out.sha256sums(), format!("{}  x.efi\n", a.sha256));
            assert_eq!(names(&dir), ["SHA256SUMS", "x.iso"]);
        }
        assert_eq!(names(&root), ["out"]);
        // A later build with other formats replaces the directory: the ISO does not linger,
        // the unpublished scratch file does not appear.
        let mut out = ArtifactDir::create(&dir).unwrap();
        out.publish_bytes("x.efi", "efi", b"abc").unwrap();
        fs::write(out.staging_path("scratch"), b"scratch").unwrap();
        out.write_summary("SHA256SUMS", out.sha256sums().as_bytes()).unwrap();
        out.commit().unwrap();
        assert_eq!(names(&dir), ["SHA256SUMS", "x.efi"]);
        assert_eq!(names(&root), ["out"]);
        // A dead build's staging directory is removed; a directory that is not an output is
        // never replaced.
        fs::create_dir(root.join(format!("{STAGING_PREFIX}999999999-out"))).unwrap();
        drop(ArtifactDir::create(&dir).unwrap());
        assert_eq!(names(&root), ["out"]);
        fs::create_dir(root.join("mine")).unwrap();
        fs::write(root.join("mine/notes.txt"), b"keep").unwrap();
        let e = ArtifactDir::create(&root.join("mine")).err().unwrap().to_string();
        assert!(e.contains("not the output of an earlier build"), "{e}");
        fs::remove_dir_all(&root).unwrap();
    }
}
