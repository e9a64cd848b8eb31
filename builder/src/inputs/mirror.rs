//! The Debian mirrors, each looked up the first time something has to be fetched from it: a
//! locked build whose packages are all in the cache needs none configured, and an image that
//! takes nothing from the security archive never looks for one.

use super::error::InputError;
use crate::definition::DebianSection;
use std::cell::OnceCell;
use uvmkit_debian::archives::ArchiveKind;
use uvmkit_fetch::mirror::{discover_archive_mirror, ArchiveHost, MirrorSource};

/// Which mirror serves an archive: the security archive is published apart from the rest.
pub fn archive_host(kind: ArchiveKind) -> ArchiveHost {
    match kind {
        ArchiveKind::Security => ArchiveHost::Security,
        ArchiveKind::Release | ArchiveKind::Updates | ArchiveKind::Backports => ArchiveHost::Release,
    }
}

/// The mirrors of one resolution, each found on first use.
pub(super) struct MirrorLookup<'a> {
    /// The definition's `[debian] mirror`.
    release: Option<&'a str>,
    /// The definition's `[debian] security_mirror`.
    security: Option<&'a str>,
    found_release: OnceCell<MirrorSource>,
    found_security: OnceCell<MirrorSource>,
}

impl<'a> MirrorLookup<'a> {
    pub(super) fn new(debian: &'a DebianSection) -> Self {
        MirrorLookup {
            release: debian.mirror.as_deref(),
            security: debian.security_mirror.as_deref(),
            found_release: OnceCell::new(),
            found_security: OnceCell::new(),
        }
    }

    /// The mirror of `host` to fetch `needed` (said in the error when there is none) from.
    pub(super) fn get(&self, host: ArchiveHost, needed: impl FnOnce() -> String) -> Result<&MirrorSource, InputError> {
        let (explicit, cell) = match host {
            ArchiveHost::Release => (self.release, &self.found_release),
            ArchiveHost::Security => (self.security, &self.found_security),
        };
        if let Some(m) = cell.get() {
            return Ok(m);
        }
        let mirror = discover_archive_mirror(host, explicit).map_err(|error| InputError::Mirror {
            needed: needed(),
            error,
        })?;
        Ok(cell.get_or_init(|| mirror))
    }

    /// The mirrors that were needed, release first.
    pub(super) fn into_used(self) -> Vec<(ArchiveHost, MirrorSource)> {
        [
            (ArchiveHost::Release, self.found_release.into_inner()),
            (ArchiveHost::Security, self.found_security.into_inner()),
        ]
        .into_iter()
        .filter_map(|(h, m)| Some((h, m?)))
        .collect()
    }
}
