//! `uvmkit outdated`: which packages the lock pins have newer versions in the definition's
//! archives, the way `apt list --upgradable` reports them, so a release pipeline can rebuild
//! when they appear. A newer version from a `-security` suite is a security update.
//!
//! The archive indexes are always fetched again (unless `--offline`, which uses the cached
//! ones); the lock is only read.

use super::archive;
use super::choose::ResolveError;
use super::error::InputError;
use super::lock::{self, LockError};
use super::sources::{InputOptions, InputSources};
use crate::definition::ImageDefinition;
use serde::Serialize;
use std::path::Path;
use uvmkit_debian::archives::{is_security_suite, merge_archives};
use uvmkit_debian::resolve::Resolver;
use uvmkit_debian::DebVersion;

/// A locked package with a newer version available.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutdatedPackage {
    /// Package name.
    pub name: String,
    /// The version the lock pins.
    pub locked: String,
    /// The archive the locked version came from.
    pub locked_archive: String,
    /// The newest version in the definition's archives.
    pub available: String,
    /// The archive that has it (`bookworm-security`).
    pub available_archive: String,
    /// Whether the newer version is a security update (it comes from a `-security` suite).
    pub security: bool,
}

/// What `uvmkit outdated` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutdatedReport {
    /// Image name.
    pub image: String,
    /// The archives compared against, in the definition's order.
    pub archives: Vec<String>,
    /// How many packages the lock pins.
    pub locked_packages: usize,
    /// True when the definition changed since the lock was written (a build resolves again).
    pub lock_stale: bool,
    /// The packages with newer versions, sorted by name.
    pub outdated: Vec<OutdatedPackage>,
}

impl OutdatedReport {
    /// How many of the newer versions are security updates.
    pub fn security_updates(&self) -> usize {
        self.outdated.iter().filter(|p| p.security).count()
    }
}

/// Compares the packages `def`'s lock pins with the newest versions in its archives.
pub fn outdated(def: &ImageDefinition, base_dir: &Path, opts: &InputOptions) -> Result<OutdatedReport, InputError> {
    let lock_path = opts.lock.path().ok_or(LockError::NothingToCompare { path: None })?;
    let lock = lock::read(lock_path)?.ok_or_else(|| LockError::NothingToCompare {
        path: Some(lock_path.to_path_buf()),
    })?;
    let refreshed = InputOptions {
        refresh: !opts.offline,
        ..opts.clone()
    };
    let src = InputSources::open(def, base_dir, &refreshed)?;
    let index = archive::load_index(&src)?;
    let merged = merge_archives(index.parse()?).map_err(ResolveError::from)?;
    let resolver = Resolver::new(&merged, &def.debian.architecture);
    let pinned = lock::pinned_packages(&lock, def);
    let mut outdated = Vec::new();
    for p in &pinned {
        let Some(newest) = resolver.best(&p.name, None) else {
            continue;
        };
        // A locked version that does not parse was not taken from an index: nothing to compare.
        let Ok(locked) = DebVersion::parse(&p.version) else {
            continue;
        };
        if newest.version > locked {
            outdated.push(OutdatedPackage {
                name: p.name.clone(),
                locked: p.version.clone(),
                locked_archive: p.archive.clone(),
                available: newest.version.to_string(),
                available_archive: newest.archive.clone(),
                security: is_security_suite(&newest.archive),
            });
        }
    }
    outdated.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(OutdatedReport {
        image: def.name.clone(),
        archives: def.debian.archives().into_iter().map(|a| a.suite).collect(),
        locked_packages: pinned.len(),
        lock_stale: lock.resolution_inputs != lock::resolution_inputs(def),
        outdated,
    })
}
