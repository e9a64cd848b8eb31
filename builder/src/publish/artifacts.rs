//! Writing artifacts so that each appears whole or not at all: every file is written under a
//! staging directory inside the output directory (same filesystem), synced, hashed, then
//! renamed into place. `SHA256SUMS` and `manifest.json` are written last, the same way. A
//! failed build leaves the previous artifacts untouched and removes its staging directory.

use crate::atomic_file::io_context;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// One published artifact.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Artifact {
    /// File name in the output directory.
    pub name: String,
    /// What it is: `efi`, `kernel`, `initrd`, `iso`, or a disk format (`raw`, `vhdx`, `vmdk`,
    /// `vmdk-stream`, `qcow2`, `ova`, `vagrant-virtualbox`, `vagrant-libvirt`).
    pub kind: String,
    /// Size in bytes (the apparent size, for sparse files).
    pub size: u64,
    /// Bytes the file occupies on disk.
    #[serde(skip)]
    pub allocated: u64,
    /// SHA-256 of the contents, hex.
    pub sha256: String,
}

/// The output directory of one build.
pub struct ArtifactDir {
    out_dir: PathBuf,
    staging: PathBuf,
    published: Vec<Artifact>,
}

impl ArtifactDir {
    /// Creates `out_dir` if needed and a fresh staging directory inside it.
    pub fn create(out_dir: &Path) -> io::Result<ArtifactDir> {
        fs::create_dir_all(out_dir).map_err(io_context(out_dir, "create the output directory"))?;
        let staging = out_dir.join(format!(".uvmkit-staging-{}", std::process::id()));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io_context(&staging, "clear"))?;
        }
        fs::create_dir(&staging).map_err(io_context(&staging, "create"))?;
        Ok(ArtifactDir {
            out_dir: out_dir.to_path_buf(),
            staging,
            published: Vec::new(),
        })
    }

    /// The output directory.
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// Where to write `name` before publishing it (also usable for scratch files).
    pub fn staging_path(&self, name: &str) -> PathBuf {
        self.staging.join(name)
    }

    /// A scratch directory inside the staging area, removed with it.
    pub fn scratch_dir(&self, name: &str) -> io::Result<PathBuf> {
        let dir = self.staging.join(name);
        fs::create_dir_all(&dir).map_err(io_context(&dir, "create"))?;
        Ok(dir)
    }

    /// Syncs and hashes the staged file `name`, then renames it into the output directory.
    pub fn publish(&mut self, name: &str, kind: &str) -> io::Result<Artifact> {
        let staged = self.staging_path(name);
        let file = File::open(&staged).map_err(io_context(&staged, "open"))?;
        file.sync_all().map_err(io_context(&staged, "sync"))?;
        let meta = file.metadata()?;
        let sha256 = hash_sparse_file(&file).map_err(io_context(&staged, "hash"))?;
        let dest = self.out_dir.join(name);
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
}

impl Drop for ArtifactDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.staging);
    }
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
    fn publish_moves_whole_files_and_failed_builds_leave_nothing() {
        let dir = std::env::temp_dir().join(format!("uvmkit-pub-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        {
            let mut out = ArtifactDir::create(&dir).unwrap();
            let a = out.publish_bytes("x.efi", "efi", b"abc").unwrap();
            assert_eq!(
                a.sha256,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            );
            fs::write(out.staging_path("half.iso"), b"partial").unwrap();
            assert_eq!(out.sha256sums(), format!("{}  x.efi\n", a.sha256));
            // Dropped without publishing half.iso, as when a build fails.
        }
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["x.efi"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
