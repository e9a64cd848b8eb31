//! Downloading the chosen `.deb`s: each is looked up in the cache and re-hashed there (on up
//! to `jobs` threads); only the missing or damaged ones are fetched, from the mirror of the
//! archive each was taken from, checked against the sha256 the archive index gives.

use super::error::InputError;
use super::mirror::archive_host;
use super::package::FetchedPackage;
use super::parallel::map_in_order;
use super::sources::InputSources;
use super::unpack::PackageError;
use std::path::PathBuf;
use uvmkit_fetch::cache::{ContentCache, Sha256Digest};
use uvmkit_fetch::http::{Download, Progress};
use uvmkit_fetch::mirror::ArchiveHost;
use uvmkit_fetch::FetchError;

/// The cached `.deb` of each package (verified by sha256), downloading from the mirror only
/// the ones that are missing or damaged; returns their paths and the bytes downloaded.
pub(super) fn fetch_packages(
    src: &InputSources,
    packages: &[FetchedPackage],
) -> Result<(Vec<PathBuf>, u64), InputError> {
    let (cache, opts) = (&src.cache, src.opts);
    let digests: Vec<Sha256Digest> = packages
        .iter()
        .map(|p| {
            p.sha256.parse().map_err(|_| PackageError::BadSha256 {
                package: p.name.clone(),
                sha256: p.sha256.clone(),
            })
        })
        .collect::<Result<_, _>>()?;
    let present = verified_in_cache(cache, &digests, opts.jobs)?;
    let missing: Vec<usize> = (0..packages.len()).filter(|&i| !present[i]).collect();
    let describe = |i: &usize| {
        let p = &packages[*i];
        format!("{} {} ({}, sha256 {})", p.name, p.version, p.filename, p.sha256)
    };
    if missing.is_empty() {
        return Ok((digests.iter().map(|d| cache.path_of(d)).collect(), 0));
    }
    if opts.offline {
        return Err(InputError::Offline(missing.iter().map(describe).collect()));
    }
    // Each archive's packages come from its mirror: the security archive's from its own.
    let archives = src.def.debian.archives();
    let host_of = |p: &FetchedPackage| {
        archives
            .iter()
            .find(|a| a.suite == p.archive)
            .map_or(ArchiveHost::Release, |a| archive_host(a.kind))
    };
    let mut downloads: Vec<Download> = Vec::new();
    for host in [ArchiveHost::Release, ArchiveHost::Security] {
        let wanted: Vec<usize> = missing
            .iter()
            .copied()
            .filter(|&i| host_of(&packages[i]) == host)
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let mirror = src.mirror.get(host, || {
            let names: Vec<String> = wanted
                .iter()
                .map(|&i| format!("{} {}", packages[i].name, packages[i].version))
                .collect();
            format!("{} package(s) not in the cache ({})", wanted.len(), names.join(", "))
        })?;
        let base = mirror.url.trim_end_matches('/');
        downloads.extend(wanted.iter().map(|&i| Download {
            url: format!("{base}/{}", packages[i].filename),
            sha256: digests[i],
            size: Some(packages[i].size),
            label: format!("{} {}", packages[i].name, packages[i].version),
        }));
    }
    let progress = if opts.quiet {
        Progress::hidden()
    } else {
        Progress::bars()
    };
    let report = src.fetcher.fetch_many(&downloads, cache, opts.jobs, &progress)?;
    Ok((
        digests.iter().map(|d| cache.path_of(d)).collect(),
        report.downloaded_bytes,
    ))
}

/// Whether each blob is in the cache with its content intact (re-hashed, on up to `jobs`
/// threads); a damaged one is removed, so it counts as missing.
fn verified_in_cache(cache: &ContentCache, digests: &[Sha256Digest], jobs: usize) -> Result<Vec<bool>, FetchError> {
    map_in_order(digests, jobs, |d| cache.get_verified(d).map(|p| p.is_some()))
        .into_iter()
        .collect()
}
