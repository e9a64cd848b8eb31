//! The Debian mirror, looked up the first time something has to be fetched: a locked build
//! whose packages are all in the cache needs none configured.

use super::error::InputError;
use std::cell::OnceCell;
use uvmkit_fetch::mirror::{discover_debian_mirror, MirrorSource};

/// The mirror of one resolution, found on first use.
pub(super) struct MirrorLookup<'a> {
    /// The definition's `[debian] mirror`.
    explicit: Option<&'a str>,
    found: OnceCell<MirrorSource>,
}

impl<'a> MirrorLookup<'a> {
    pub(super) fn new(explicit: Option<&'a str>) -> Self {
        MirrorLookup {
            explicit,
            found: OnceCell::new(),
        }
    }

    /// The mirror to fetch `needed` (said in the error when there is none) from.
    pub(super) fn get(&self, needed: impl FnOnce() -> String) -> Result<&MirrorSource, InputError> {
        if let Some(m) = self.found.get() {
            return Ok(m);
        }
        let mirror = discover_debian_mirror(self.explicit).map_err(|error| InputError::Mirror {
            needed: needed(),
            error,
        })?;
        Ok(self.found.get_or_init(|| mirror))
    }

    /// The mirror, if it was needed.
    pub(super) fn into_used(self) -> Option<MirrorSource> {
        self.found.into_inner()
    }
}
