//! Where the inputs of one resolution come from: the definition, the Debian mirror (looked up
//! on first use), the content cache and the downloader, with the command's options.

use super::error::InputError;
use super::mirror::MirrorLookup;
use crate::definition::ImageDefinition;
use std::path::{Path, PathBuf};
use uvmkit_fetch::cache::ContentCache;
use uvmkit_fetch::http::Fetcher;

/// Everything the steps of a resolution share.
pub(super) struct InputSources<'a> {
    /// The definition being resolved.
    pub(super) def: &'a ImageDefinition,
    /// The directory the definition's relative paths start from.
    pub(super) base_dir: &'a Path,
    /// The Debian mirror, found when something has to be fetched.
    pub(super) mirror: MirrorLookup<'a>,
    /// The content-addressed cache.
    pub(super) cache: ContentCache,
    /// The downloader (refuses the network when offline).
    pub(super) fetcher: Fetcher,
    /// The command's options.
    pub(super) opts: &'a InputOptions,
}

impl<'a> InputSources<'a> {
    /// Opens the cache and the downloader for resolving `def` with `opts`; the mirror is
    /// looked up on first use.
    pub(super) fn open(
        def: &'a ImageDefinition,
        base_dir: &'a Path,
        opts: &'a InputOptions,
    ) -> Result<InputSources<'a>, InputError> {
        Ok(InputSources {
            def,
            base_dir,
            mirror: MirrorLookup::new(&def.debian),
            cache: ContentCache::open(&opts.cache_dir)?,
            fetcher: Fetcher::new(opts.offline)?,
            opts,
        })
    }
}

/// Options of the inputs stage.
#[derive(Debug, Clone)]
pub struct InputOptions {
    /// The content-addressed cache directory.
    pub cache_dir: PathBuf,
    /// Refuse all network access.
    pub offline: bool,
    /// Fetch the archive index even if a recent one is cached.
    pub refresh: bool,
    /// Accept an index past its `Valid-Until` or older than one seen before (a deliberate
    /// snapshot).
    pub allow_old_index: bool,
    /// No progress bars.
    pub quiet: bool,
    /// Parallel downloads.
    pub jobs: usize,
    /// The image's lock file and how it is used.
    pub lock: LockUse,
}

/// How a resolution uses the image's lock file (`IMAGE.lock`, beside the definition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockUse {
    /// No lock is read or written.
    None,
    /// Packages come from the lock while it is current; a successful build or fetch records
    /// what it used.
    Update(PathBuf),
    /// Like `Update`, but the lock is never written (a bundle's lock is what it carries).
    ReadOnly(PathBuf),
    /// `--locked`: the lock must exist and match a fresh resolution; it is never written.
    Locked(PathBuf),
}

impl LockUse {
    /// The lock file's path, unless no lock is used.
    pub fn path(&self) -> Option<&Path> {
        match self {
            LockUse::None => None,
            LockUse::Update(p) | LockUse::ReadOnly(p) | LockUse::Locked(p) => Some(p),
        }
    }
}
