//! The deterministic ustar archive an OVA and a Vagrant box both are: regular files (mode
//! 0644) and directories (mode 0755), in the order they are added, owned by root, with one
//! timestamp.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;

use crate::{Error, Result};

/// An archive being written.
pub(crate) struct Archive<W: Write> {
    tar: tar::Builder<W>,
    mtime: u64,
    what: &'static str,
}

impl<W: Write> Archive<W> {
    /// Starts an archive whose members all carry `mtime`; `what` names it in errors.
    pub(crate) fn new(out: W, mtime: u64, what: &'static str) -> Self {
        Archive {
            tar: tar::Builder::new(out),
            mtime,
            what,
        }
    }

    fn header(&self, name: &str, size: u64, kind: tar::EntryType) -> Result<tar::Header> {
        // Plain names, or a few such names joined by '/' (Hyper-V boxes keep the disk in
        // `Virtual Hard Disks/`): no empty, hidden or parent components, nothing a reader
        // could resolve outside the directory it extracts into.
        let component_is_plain = |c: &str| {
            !c.is_empty()
                && !c.starts_with('.')
                && !c.starts_with(' ')
                && !c.ends_with(' ')
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.' | ' '))
        };
        let plain = name.len() <= 100 && name.split('/').all(component_is_plain);
        if !plain {
            return Err(Error::MemberName(name.to_string()));
        }
        let (path, mode) = match kind {
            tar::EntryType::Directory => (format!("{name}/"), 0o755),
            _ => (name.to_string(), 0o644),
        };
        // POSIX.1-1988 ustar, the format OVF requires (DSP0243 1.0.0 clause 5.3).
        let mut h = tar::Header::new_ustar();
        h.set_path(&path).map_err(|_| Error::MemberName(name.to_string()))?;
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(self.mtime);
        h.set_username("root").map_err(|e| self.io(e))?;
        h.set_groupname("root").map_err(|e| self.io(e))?;
        h.set_cksum();
        Ok(h)
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::Write {
            what: self.what,
            source,
        }
    }

    /// Adds the directory `name` (without a trailing '/').
    pub(crate) fn add_dir(&mut self, name: &str) -> Result<()> {
        let header = self.header(name, 0, tar::EntryType::Directory)?;
        self.tar.append(&header, std::io::empty()).map_err(|e| self.io(e))
    }

    /// Adds a member holding `bytes`.
    pub(crate) fn add_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let header = self.header(name, bytes.len() as u64, tar::EntryType::Regular)?;
        self.tar.append(&header, bytes).map_err(|e| self.io(e))
    }

    /// Adds a member holding the contents of the file at `path`.
    pub(crate) fn add_file(&mut self, name: &str, path: &Path) -> Result<()> {
        let read_error = |source| Error::ReadDisk {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(read_error)?;
        let len = file.metadata().map_err(read_error)?.len();
        let header = self.header(name, len, tar::EntryType::Regular)?;
        // The size is in the header already: a file that changed length under us would make
        // a corrupt archive, which `append` refuses as a short read.
        self.tar
            .append(&header, BufReader::with_capacity(1 << 20, file))
            .map_err(|e| self.io(e))
    }

    /// Writes the two zero blocks that end an archive and returns the output.
    pub(crate) fn finish(self) -> Result<W> {
        let what = self.what;
        let mut out = self.tar.into_inner().map_err(|source| Error::Write { what, source })?;
        out.flush().map_err(|source| Error::Write { what, source })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_ustar_with_fixed_owner_mode_and_time() {
        let mut a = Archive::new(Vec::new(), 1_700_000_000, "test");
        a.add_bytes("a.txt", b"hello").unwrap();
        let bytes = a.finish().unwrap();
        // One header, one data block, two end blocks.
        assert_eq!(bytes.len(), 4 * 512);
        assert_eq!(&bytes[257..263], b"ustar\0");
        let mut archive = tar::Archive::new(&bytes[..]);
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        let h = entry.header();
        assert_eq!(h.path().unwrap().to_str(), Some("a.txt"));
        assert_eq!(h.mode().unwrap(), 0o644);
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
        assert_eq!(h.mtime().unwrap(), 1_700_000_000);
        assert_eq!(h.username().unwrap(), Some("root"));
    }

    #[test]
    fn directories_are_0755_and_end_in_a_slash() {
        let mut a = Archive::new(Vec::new(), 7, "test");
        a.add_dir("Virtual Hard Disks").unwrap();
        a.add_bytes("Virtual Hard Disks/d.vhdx", b"x").unwrap();
        let bytes = a.finish().unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let entries: Vec<(String, u32, bool)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                let name = h.path().unwrap().to_str().unwrap().to_string();
                (name, h.mode().unwrap(), h.entry_type().is_dir())
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("Virtual Hard Disks/".to_string(), 0o755, true),
                ("Virtual Hard Disks/d.vhdx".to_string(), 0o644, false)
            ]
        );
    }

    #[test]
    fn refuses_names_that_are_not_plain() {
        for bad in [
            "",
            "../x",
            "a/../b",
            "a//b",
            "/a",
            "a/",
            ".hidden",
            "a/.b",
            " a",
            "a\\b",
            &"x".repeat(101),
        ] {
            let mut a = Archive::new(Vec::new(), 0, "test");
            assert!(matches!(a.add_bytes(bad, b""), Err(Error::MemberName(_))), "{bad:?}");
        }
    }
}
