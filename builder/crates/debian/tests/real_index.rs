//! The real bookworm `main/binary-amd64/Packages.xz`: checked against the signed Release,
//! parsed, and used to resolve a container host's package set. Uses the fixtures in
//! `$UVMKIT_TEST_DEBIAN_FIXTURES` when set, else the host's mirror; skips with a note when
//! neither is available.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use uvmkit_debian::compression::decompress_named;
use uvmkit_debian::signature::{verify_inrelease, Keyring};
use uvmkit_debian::{PackageIndex, Release, Request, Resolver};

const PACKAGES: &str = "main/binary-amd64/Packages.xz";

fn host_mirror() -> Option<String> {
    let mut files: Vec<_> = std::fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        if let Some(uri) = text.lines().find_map(|l| l.trim().strip_prefix("URIs:")) {
            return uri
                .split_whitespace()
                .next()
                .map(|u| u.trim_end_matches('/').to_string());
        }
    }
    None
}

/// A fixture file, or the same path below the mirror's `dists/bookworm/`.
fn fixture_or_fetch(fixture: &str, remote: &str) -> Option<Vec<u8>> {
    if let Ok(data) =
        std::fs::read(Path::new(&std::env::var_os("UVMKIT_TEST_DEBIAN_FIXTURES").unwrap_or_default()).join(fixture))
    {
        return Some(data);
    }
    let mirror = host_mirror()?;
    let out = Command::new("curl")
        .args(["-sSf", "--max-time", "120"])
        .arg(format!("{mirror}/dists/bookworm/{remote}"))
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

#[test]
fn parse_and_resolve_bookworm_main() {
    let Some(inrelease) = fixture_or_fetch("InRelease", "InRelease") else {
        println!("note: no bookworm InRelease fixture and no reachable mirror; skipping");
        return;
    };
    let release = Release::parse(&verify_inrelease(&inrelease, &Keyring::debian_archive()).unwrap()).unwrap();
    let remote = release.fetch_path(PACKAGES).unwrap();
    let Some(xz) = fixture_or_fetch("Packages.xz", &remote) else {
        println!("note: no Packages.xz fixture and no reachable mirror; skipping");
        return;
    };
    if release.verify_file(PACKAGES, &xz).is_err() {
        // A fixture from an older mirror generation than the InRelease fixture.
        println!("note: the Packages.xz fixture does not match the InRelease fixture; refresh both; skipping");
        return;
    }

    let t = Instant::now();
    let text = decompress_named(PACKAGES, &xz).unwrap();
    let decompress = t.elapsed();
    let t = Instant::now();
    let index = PackageIndex::parse_bytes(&text).unwrap();
    let parse = t.elapsed();

    let wanted = [
        "docker.io",
        "containerd",
        "runc",
        "iptables",
        "openssh-server",
        "e2fsprogs",
        "ca-certificates",
        "linux-image-amd64",
    ];
    let requests: Vec<Request> = wanted.iter().map(|n| Request::new(*n)).collect();
    let t = Instant::now();
    let resolver = Resolver::new(&index, "amd64").with_origin("bookworm/main");
    let resolution = resolver.resolve(&requests).unwrap();
    let resolve = t.elapsed();

    println!(
        "Packages: {} bytes xz, {} bytes text, {} stanzas; decompressed in {decompress:.2?}, parsed in {parse:.2?}",
        xz.len(),
        text.len(),
        index.len()
    );
    println!(
        "resolved {} requests to {} packages in {resolve:.2?}: {} bytes to download ({:.1} MiB), {} KiB installed",
        wanted.len(),
        resolution.packages.len(),
        resolution.download_size(),
        resolution.download_size() as f64 / (1024.0 * 1024.0),
        resolution.installed_size_kib()
    );
    for p in &resolution.packages {
        println!(
            "  {:<32} {:<28} {}",
            p.package.name,
            p.package.version.to_string(),
            p.reason
        );
    }

    for name in wanted {
        assert_eq!(resolution.why[name], "requested", "{name}");
    }
    for name in ["libc6", "libsystemd0", "libseccomp2", "openssh-client", "libssl3"] {
        assert!(resolution.get(name).is_some(), "{name} must be in the closure");
    }
    assert!(
        resolution
            .packages
            .iter()
            .any(|p| p.package.name.starts_with("linux-image-6.1.0-") && p.package.name.ends_with("-amd64")),
        "linux-image-amd64 must pull in a versioned kernel image"
    );
    // Names are sorted and unique.
    assert!(resolution
        .packages
        .windows(2)
        .all(|w| w[0].package.name < w[1].package.name));
    // Closure: every Depends/Pre-Depends group is met inside the result, by name or Provides.
    for p in &resolution.packages {
        for group in p.package.pre_depends.iter().chain(&p.package.depends) {
            let met = group.iter().any(|rel| {
                resolution.packages.iter().any(|q| {
                    (q.package.name == rel.name && rel.accepts(&q.package.version))
                        || q.package.provides.iter().any(|prov| {
                            prov.name == rel.name
                                && match (&rel.constraint, &prov.constraint) {
                                    (None, _) => true,
                                    (Some((op, want)), Some((_, have))) => op.holds(have, want),
                                    (Some(_), None) => false,
                                }
                        })
                })
            });
            assert!(
                met,
                "{}: dependency {:?} is not met in the closure",
                p.package.name, group
            );
        }
        assert!(p.package.architecture == "amd64" || p.package.architecture == "all");
    }
    // Recommends are not followed (docker.io recommends apparmor, git, xz-utils...).
    assert!(resolution.get("git").is_none());
    // Deterministic.
    assert_eq!(resolver.resolve(&requests).unwrap(), resolution);
}
