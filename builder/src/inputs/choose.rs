//! Which packages a build uses: pinned by a current lock file (no archive index is fetched or
//! parsed), else resolved from the archive index (itself cached by the index digests and the
//! requests). With `--locked`, a missing lock or one a fresh resolution differs from is an
//! error naming the changes.

use super::archive::{self, ArchiveIndex};
use super::boot_files::{ISOLINUX_PACKAGES, SHIM_CHAIN_PACKAGES, STUB_PACKAGE};
use super::error::InputError;
use super::lock::{self, LockError};
use super::package::{FetchedPackage, Role};
use super::sources::{InputSources, LockUse};
use crate::definition::{Format, ImageDefinition};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use uvmkit_debian::archives::{merge_archives, ArchivesError};
use uvmkit_debian::control::{Package, PackageIndex};
use uvmkit_debian::resolve::{Request, Resolver};

/// Why the packages could not be resolved from the index.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A requested package or a dependency cannot be satisfied.
    #[error(transparent)]
    Packages(#[from] uvmkit_debian::resolve::ResolveError),
    /// A `[debian] backports` package is not in the backports archive.
    #[error(transparent)]
    Archives(#[from] ArchivesError),
    /// The kernel package (or a `linux-image-*` package it depends on) is not in the archive.
    #[error("kernel package {name} is not in {suite}/{components}")]
    KernelPackage {
        /// The package.
        name: String,
        /// The suites searched, comma-separated.
        suite: String,
        /// `[debian] components`, comma-separated.
        components: String,
    },
    /// A boot loader package the formats need is not in the archive.
    #[error("boot loader package {name} is not in {suite}")]
    BootLoader {
        /// The package.
        name: String,
        /// The suites searched, comma-separated.
        suite: String,
    },
}

/// The packages to build with, following the lock as [`LockUse`] says.
pub(super) fn choose_packages(src: &InputSources) -> Result<Vec<FetchedPackage>, InputError> {
    let Some(lock_path) = src.opts.lock.path() else {
        return resolve_from_index(src);
    };
    let locked = matches!(src.opts.lock, LockUse::Locked(_));
    let lock = lock::read(lock_path)?;
    let current = lock
        .as_ref()
        .filter(|l| l.resolution_inputs == lock::resolution_inputs(src.def));
    match (lock.as_ref(), current) {
        (_, Some(lock)) if !src.opts.refresh => Ok(lock::pinned_packages(lock, src.def)),
        (None, _) if locked => Err(LockError::Missing {
            path: lock_path.to_path_buf(),
        }
        .into()),
        (Some(lock), _) if locked => {
            let fresh = resolve_from_index(src)?;
            let changes = lock::drift(&lock.packages, &fresh);
            if changes.is_empty() {
                Ok(fresh)
            } else {
                Err(LockError::Drift {
                    path: lock_path.to_path_buf(),
                    changes,
                }
                .into())
            }
        }
        _ => resolve_from_index(src),
    }
}

/// Resolves the packages from the archive index, from the cache when these index digests and
/// requests were resolved before.
fn resolve_from_index(src: &InputSources) -> Result<Vec<FetchedPackage>, InputError> {
    let archive = archive::load_index(src)?;
    let key = resolution_key(src.def, &archive);
    let cache = &src.cache;
    let cached: Option<Vec<FetchedPackage>> = cache
        .get_ref("resolution", &key)?
        .and_then(|d| std::fs::read(cache.path_of(&d)).ok())
        .and_then(|b| serde_json::from_slice(&b).ok());
    match cached {
        Some(p) => Ok(p),
        None => {
            let index = merge_archives(archive.parse()?).map_err(ResolveError::from)?;
            let packages = resolve_packages(src.def, &index)?;
            let digest = cache.put_bytes(&serde_json::to_vec(&packages).expect("serialises"), None)?;
            cache.set_ref("resolution", &key, &digest)?;
            Ok(packages)
        }
    }
}

/// The cache key of a resolution: the index digests and everything in the definition that
/// decides what is resolved.
fn resolution_key(def: &ImageDefinition, index: &ArchiveIndex) -> String {
    let mut key = format!(
        "v2\narch={}\nkernel={}\nlocal-kernel={}\n",
        def.debian.architecture,
        def.kernel.package,
        def.kernel.local.is_some()
    );
    for (suite, sha) in index.digests() {
        key.push_str(&format!("index={suite} {sha}\n"));
    }
    for name in &def.debian.backports {
        key.push_str(&format!("backport={name}\n"));
    }
    for p in &def.packages {
        key.push_str(&format!("package={}\n", p.name));
    }
    key.push_str(&format!("iso={}\n", def.formats.contains(&Format::Iso)));
    key.push_str(&format!("shim={}\n", def.boots_through_shim(&def.formats)));
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The packages to fetch: the definition's with their dependencies, the kernel (following its
/// `linux-image-*` dependencies only: the rest serve installing a kernel on a Debian system),
/// and the boot loaders the formats need (without dependencies: only their files are used; the
/// signed chain's packages depend on `grub-common`, `mokutil` and the like, which serve
/// installing it on a Debian system).
fn resolve_packages(def: &ImageDefinition, index: &PackageIndex) -> Result<Vec<FetchedPackage>, ResolveError> {
    let suites: Vec<String> = def.debian.archives().into_iter().map(|a| a.suite).collect();
    let suites = suites.join(",");
    let resolver = Resolver::new(index, &def.debian.architecture)
        .with_origin(format!("{suites} ({})", def.debian.components.join(",")));
    let mut out: BTreeMap<String, FetchedPackage> = BTreeMap::new();
    let fetched = |p: &Package, role: Role, reason: String| FetchedPackage {
        name: p.name.clone(),
        version: p.version.to_string(),
        architecture: p.architecture.clone(),
        filename: p.filename.clone(),
        sha256: p.sha256.clone(),
        size: p.size,
        role,
        reason,
        source: Some(p.source.clone()).filter(|s| !s.is_empty()),
        maintainer: p.maintainer.clone(),
        homepage: p.homepage.clone(),
        archive: p.archive.clone(),
    };
    if !def.packages.is_empty() {
        let requests: Vec<Request> = def.packages.iter().map(|p| Request::new(p.name.clone())).collect();
        let resolution = resolver.resolve(&requests)?;
        for r in &resolution.packages {
            let role = if r.reason == "requested" {
                Role::Requested
            } else {
                Role::Dependency
            };
            out.insert(r.package.name.clone(), fetched(&r.package, role, r.reason.clone()));
        }
    }
    if def.kernel.local.is_none() {
        let mut queue = vec![(def.kernel.package.clone(), None, "kernel".to_string())];
        while let Some((name, constraint, reason)) = queue.pop() {
            let pkg = resolver
                .best(&name, constraint.as_ref())
                .ok_or_else(|| ResolveError::KernelPackage {
                    name: name.clone(),
                    suite: suites.clone(),
                    components: def.debian.components.join(","),
                })?;
            for group in &pkg.depends {
                if let Some(rel) = group.iter().find(|r| r.name.starts_with("linux-image-")) {
                    queue.push((
                        rel.name.clone(),
                        rel.constraint.clone(),
                        format!("dependency of {}", pkg.name),
                    ));
                }
            }
            out.insert(pkg.name.clone(), fetched(pkg, Role::Kernel, reason));
        }
    }
    let mut loaders = vec![STUB_PACKAGE];
    if def.formats.contains(&Format::Iso) {
        loaders.extend(ISOLINUX_PACKAGES);
    }
    if def.boots_through_shim(&def.formats) {
        loaders.extend(SHIM_CHAIN_PACKAGES);
    }
    for name in loaders {
        let pkg = resolver.best(name, None).ok_or_else(|| ResolveError::BootLoader {
            name: name.to_string(),
            suite: suites.clone(),
        })?;
        out.entry(name.to_string())
            .or_insert_with(|| fetched(pkg, Role::Bootloader, "boot loader".into()));
    }
    Ok(out.into_values().collect())
}
