//! Release features (issue 7): reproducible builds across environments, the lock file and
//! `--locked`, offline bundles (built with no network interface at all), tamper detection and
//! the SPDX SBOM. Every test builds `images/minimal.toml` (copied to its own directory, so the
//! lock files it writes stay out of the repository).

mod common;

use common::{repo_root, shared_cache, test_dir, uvmkit_bin, EPOCH};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// `uvmkit ARGS` in `cwd` with cache `cache` and the tests' `SOURCE_DATE_EPOCH`.
fn uvmkit_in(cwd: &Path, cache: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(uvmkit_bin());
    c.args(args)
        .current_dir(cwd)
        .env("UVMKIT_CACHE", cache)
        .env("SOURCE_DATE_EPOCH", EPOCH);
    c
}

fn ok(mut cmd: Command) -> Output {
    let out = cmd.output().expect("run uvmkit");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fails(mut cmd: Command) -> (i32, String) {
    let out = cmd.output().expect("run uvmkit");
    assert!(!out.status.success(), "{cmd:?} succeeded but should have failed");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A copy of `images/minimal.toml` in `dir`.
fn minimal_copy(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let def = dir.join("minimal.toml");
    std::fs::copy(repo_root().join("images/minimal.toml"), &def).unwrap();
    def
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The `unshare` options that give a process its own network and mount namespaces (as root,
/// or mapped to root in a user namespace); `None` when neither works here.
fn unshare_net_and_mounts() -> Option<&'static [&'static str]> {
    for args in [&["-n", "-m"][..], &["-r", "-n", "-m"][..]] {
        let ok = Command::new("unshare")
            .args(args)
            .arg("true")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Some(args);
        }
    }
    eprintln!(
        "note: `unshare -n -m` is unavailable here (needs root or user namespaces); skipping the no-network, no-mirror build"
    );
    None
}

#[test]
fn builds_are_reproducible_across_environments_and_carry_an_sbom() {
    let root = test_dir("release-repro");
    let cache = shared_cache();

    // First build: --json on stdout, nothing else there.
    let a = root.join("a");
    minimal_copy(&a);
    let out = ok({
        let mut c = uvmkit_in(&a, &cache, &["build", "minimal.toml", "-o", "out", "--json"]);
        c.env_remove("TZ").env_remove("LC_ALL");
        c
    });
    let report: Value = serde_json::from_slice(&out.stdout).expect("--json prints one JSON document on stdout");
    let sums1 = read(&a.join("out/SHA256SUMS"));
    let artifacts = report["artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), sums1.lines().count());
    for art in artifacts {
        let (name, sha, size) = (
            art["name"].as_str().unwrap(),
            art["sha256"].as_str().unwrap(),
            art["size"].as_u64().unwrap(),
        );
        assert!(sums1.contains(&format!("{sha}  {name}\n")), "{name} not in SHA256SUMS");
        assert_eq!(std::fs::metadata(a.join("out").join(name)).unwrap().len(), size);
    }
    let lock = read(&a.join("minimal.lock"));
    assert!(
        lock.contains("name = \"linux-image-amd64\""),
        "lock written beside the definition:\n{lock}"
    );

    // Second build: another working directory and output directory, a copy of the cache,
    // umask 077, another time zone and locale.
    let b = root.join("b");
    minimal_copy(&b);
    std::fs::create_dir_all(b.join("work")).unwrap();
    let cache_copy = root.join("cache-copy");
    let (copied, log) = common::run("cp", &["-al", s(&cache), s(&cache_copy)]);
    assert!(copied, "{log}");
    let out2 = root.join("elsewhere/out2");
    ok({
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("umask 077; exec \"$0\" \"$@\"")
            .arg(uvmkit_bin())
            .args(["build", "../minimal.toml", "-o", s(&out2), "--quiet"])
            .current_dir(b.join("work"))
            .env("UVMKIT_CACHE", &cache_copy)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .env("TZ", "Asia/Tokyo")
            .env("LC_ALL", "C.UTF-8");
        c
    });
    assert_eq!(
        sums1,
        read(&out2.join("SHA256SUMS")),
        "artifacts differ between environments"
    );
    assert_eq!(read(&a.join("out/manifest.json")), read(&out2.join("manifest.json")));
    assert_eq!(
        read(&a.join("out/minimal.spdx.json")),
        read(&out2.join("minimal.spdx.json"))
    );
    assert_eq!(
        lock,
        read(&b.join("minimal.lock")),
        "the two builds pinned different packages"
    );

    // The SBOM.
    let sbom: Value = serde_json::from_str(&read(&a.join("out/minimal.spdx.json"))).expect("SBOM is JSON");
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    assert_eq!(sbom["dataLicense"], "CC0-1.0");
    assert_eq!(
        sbom["creationInfo"]["created"], "2023-11-14T22:13:20Z",
        "created comes from SOURCE_DATE_EPOCH"
    );
    assert!(sbom["documentNamespace"].as_str().unwrap().contains("minimal"));
    let manifest: Value = serde_json::from_str(&read(&a.join("out/manifest.json"))).unwrap();
    let packages = sbom["packages"].as_array().unwrap();
    let find = |name: &str| {
        packages
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("SBOM lacks {name}"))
    };
    let mut kernels = 0;
    // The release minimal.toml names (`suite = "..."`); its -updates and -security come too.
    let release = read(&a.join("minimal.toml"))
        .lines()
        .find_map(|l| l.trim().strip_prefix("suite = \""))
        .and_then(|l| l.split('"').next())
        .expect("minimal.toml names its suite")
        .to_string();
    for input in manifest["inputs"].as_array().unwrap() {
        let p = find(input["name"].as_str().unwrap());
        assert_eq!(p["versionInfo"], input["version"]);
        assert_eq!(p["checksums"][0]["algorithm"], "SHA256");
        assert_eq!(p["checksums"][0]["checksumValue"], input["sha256"]);
        assert_eq!(p["downloadLocation"], "NOASSERTION");
        let purl = p["externalRefs"][0]["referenceLocator"].as_str().unwrap();
        // The archive each package came from (minimal.toml takes -updates and -security too)
        // is in the manifest, the purl's `distro` qualifier and the package comment.
        let archive = input["archive"].as_str().unwrap();
        assert!(
            [
                release.clone(),
                format!("{release}-updates"),
                format!("{release}-security")
            ]
            .iter()
            .any(|a| a == archive),
            "{} from {archive}",
            input["name"]
        );
        assert!(
            // purl percent-encodes '+' in names (Debian 13's linux-image-6.12.x+deb13-amd64).
            purl.starts_with(&format!(
                "pkg:deb/debian/{}@",
                input["name"].as_str().unwrap().replace('+', "%2B")
            )) && purl.ends_with(&format!(
                "?arch={}&distro={archive}",
                input["architecture"].as_str().unwrap()
            )),
            "{purl}"
        );
        assert!(
            p["comment"].as_str().unwrap().contains(&format!("from {archive} (")),
            "{}",
            p["comment"]
        );
        kernels += usize::from(input["role"] == "kernel");
    }
    assert!(kernels >= 1, "no kernel package in the manifest");
    find("linux-image-amd64");
    for line in sums1.lines() {
        let (sha, name) = line.split_once("  ").unwrap();
        let p = find(name);
        assert_eq!(p["checksums"][0]["checksumValue"], sha, "artifact {name}");
    }
    // Licenses: declared where the package's own copyright file is machine-readable; the
    // linux-image-amd64 metapackage's doc directory links to the versioned kernel package's,
    // whose copyright stands for it (Debian Policy 12.5).
    let kernel = manifest["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"].as_str().unwrap().starts_with("linux-image-6"))
        .expect("a versioned kernel package");
    let kernel_license = find(kernel["name"].as_str().unwrap())["licenseDeclared"]
        .as_str()
        .unwrap();
    assert!(kernel_license.contains("GPL-2.0-only"), "{kernel_license}");
    let boot_license = find("systemd-boot-efi")["licenseDeclared"].as_str().unwrap();
    assert!(boot_license.contains("LGPL-2.1-or-later"), "{boot_license}");
    assert_eq!(find("linux-image-amd64")["licenseDeclared"], kernel_license);
    let declared: Vec<&str> = sbom["hasExtractedLicensingInfos"]
        .as_array()
        .map(|a| a.iter().map(|i| i["licenseId"].as_str().unwrap()).collect())
        .unwrap_or_default();
    for p in packages {
        let expr = p["licenseDeclared"].as_str().unwrap();
        for word in expr.split([' ', '(', ')']) {
            if word.starts_with("LicenseRef-") {
                assert!(declared.contains(&word), "{word} used by {} is not declared", p["name"]);
            }
            assert!(
                word.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c)),
                "{word:?} in {expr:?}"
            );
        }
    }
    // An independent SPDX validator (the spdx-tools Python package), when installed.
    if common::have("pyspdxtools") {
        let (valid, log) = common::run("pyspdxtools", &["-i", s(&a.join("out/minimal.spdx.json"))]);
        assert!(valid && log.trim().is_empty(), "pyspdxtools rejects the SBOM:\n{log}");
    }
    let rels = sbom["relationships"].as_array().unwrap();
    assert!(rels.iter().any(|r| r["relationshipType"] == "DESCRIBES"));
    assert!(rels.iter().any(|r| r["relationshipType"] == "CONTAINS"));
    assert!(!sums1.contains("spdx"), "SHA256SUMS lists the artifacts only");
}

#[test]
fn bundle_builds_offline_without_any_network_and_refuses_tampering() {
    let root = test_dir("release-bundle");
    let cache = shared_cache();
    let def = minimal_copy(&root.join("def"));
    let bundle = root.join("minimal.uvmkit.tar");
    ok(uvmkit_in(&root, &cache, &["bundle", s(&def), "-o", s(&bundle)]));
    let size = std::fs::metadata(&bundle).unwrap().len();
    eprintln!("bundle: {} bytes ({:.1} MiB)", size, size as f64 / (1 << 20) as f64);
    let (listed, members) = common::run("tar", &["-tvf", s(&bundle)]);
    assert!(listed, "tar cannot read the bundle: {members}");
    for m in ["SHA256SUMS", "definition.toml", "image.lock", "blobs/sha256/"] {
        assert!(members.contains(m), "bundle lacks {m}:\n{members}");
    }
    assert!(
        members.lines().all(|l| l.contains(" 1970-01-01 ") && l.contains("0/0")),
        "members carry mtime 0 and uid/gid 0:\n{members}"
    );

    // Writing it again gives the same bytes.
    let again = root.join("again.tar");
    ok(uvmkit_in(&root, &cache, &["bundle", s(&def), "-o", s(&again)]));
    assert!(
        std::fs::read(&bundle).unwrap() == std::fs::read(&again).unwrap(),
        "bundles differ"
    );

    // Offline with an empty cache and no bundle: every missing package is named, not just one.
    let empty = root.join("empty-cache");
    let (code, err) = fails(uvmkit_in(
        &root,
        &empty,
        &["build", "--offline", s(&def), "-o", s(&root.join("nothing"))],
    ));
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("linux-image-amd64") && err.contains("systemd-boot-efi") && err.contains("isolinux"),
        "{err}"
    );

    let online = root.join("online");
    ok(uvmkit_in(
        &root,
        &cache,
        &["build", s(&def), "-o", s(&online), "--quiet"],
    ));

    if let Some(unshare) = unshare_net_and_mounts() {
        // No network interface, and no mirror anywhere: an empty directory hides the host's
        // apt sources, UVMKIT_DEBIAN_MIRROR is unset, and the definition names none.
        let offline = root.join("offline");
        let fresh_cache = root.join("fresh-cache");
        let no_apt = root.join("empty-etc-apt");
        std::fs::create_dir_all(&no_apt).unwrap();
        assert!(
            !read(&def).lines().any(|l| l.trim_start().starts_with("mirror")),
            "minimal.toml names a mirror"
        );
        let mut c = Command::new("unshare");
        c.args(unshare)
            .arg("sh")
            .arg("-c")
            .arg(
                "mount --bind \"$0\" /etc/apt && test -z \"$(ls -A /etc/apt)\" || { echo 'cannot hide /etc/apt' >&2; exit 99; }; exec \"$@\"",
            )
            .arg(&no_apt)
            .arg(uvmkit_bin())
            .args([
                "build",
                "--offline",
                "--bundle",
                s(&bundle),
                "-o",
                s(&offline),
                "--quiet",
            ])
            .current_dir(&root)
            .env("UVMKIT_CACHE", &fresh_cache)
            .env_remove("UVMKIT_DEBIAN_MIRROR")
            .env("SOURCE_DATE_EPOCH", EPOCH);
        let t = Instant::now();
        ok(c);
        eprintln!(
            "offline build from the bundle, empty cache, no network, no mirror configured: {:.1}s",
            t.elapsed().as_secs_f64()
        );
        assert_eq!(
            read(&online.join("SHA256SUMS")),
            read(&offline.join("SHA256SUMS")),
            "the offline build differs from the online one"
        );
        // Release pipelines compare every output: the manifest names the definition as the
        // online build does (the bundle's definition keeps its file name).
        assert_eq!(
            read(&online.join("manifest.json")),
            read(&offline.join("manifest.json")),
            "the offline build's manifest.json differs from the online one"
        );
        assert_eq!(
            read(&online.join("minimal.spdx.json")),
            read(&offline.join("minimal.spdx.json")),
            "the offline build's SBOM (licenses from a fresh cache) differs from the online one"
        );
    }

    // One altered byte in a blob: refused, naming the blob.
    let mut bytes = std::fs::read(&bundle).unwrap();
    // A tar header starts a 512-byte block with the member's name (SHA256SUMS names them too).
    let at = (0..bytes.len())
        .step_by(512)
        .find(|&i| bytes[i..].starts_with(b"blobs/sha256/"))
        .expect("a blob member");
    let name = String::from_utf8(bytes[at..at + 13 + 64].to_vec()).unwrap();
    bytes[at + 512 + 100] ^= 0x55;
    let tampered = root.join("tampered.tar");
    std::fs::write(&tampered, &bytes).unwrap();
    let (code, err) = fails(uvmkit_in(
        &root,
        &root.join("cache-t"),
        &["build", "--offline", "--bundle", s(&tampered), "-o", s(&root.join("t"))],
    ));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&name) && err.contains("tampered"), "{err}");
    assert!(!root.join("t/SHA256SUMS").exists());

    // An altered definition is refused too.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes
        .windows(7)
        .position(|w| w == b"name = ")
        .expect("the definition's text");
    bytes[at + 8] ^= 0x01;
    std::fs::write(&tampered, &bytes).unwrap();
    let (code, err) = fails(uvmkit_in(
        &root,
        &root.join("cache-t"),
        &["build", "--offline", "--bundle", s(&tampered), "-o", s(&root.join("t"))],
    ));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("definition.toml"), "{err}");
}

#[test]
fn locked_builds_name_what_changed() {
    let root = test_dir("release-locked");
    let cache = shared_cache();
    let def = minimal_copy(&root);
    let lock = root.join("minimal.lock");

    let (code, err) = fails(uvmkit_in(&root, &cache, &["fetch", "--locked", "minimal.toml"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("there is no") && err.contains("minimal.lock"), "{err}");

    ok(uvmkit_in(&root, &cache, &["fetch", "minimal.toml"]));
    let pinned = read(&lock);
    ok(uvmkit_in(&root, &cache, &["fetch", "--locked", "minimal.toml"]));

    let mut text = read(&def);
    text.push_str("\n[[packages]]\nname = \"busybox-static\"\n");
    std::fs::write(&def, text).unwrap();
    let (code, err) = fails(uvmkit_in(
        &root,
        &cache,
        &["build", "--locked", "minimal.toml", "-o", "out"],
    ));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("+ busybox-static"), "{err}");
    assert_eq!(read(&lock), pinned, "--locked must not touch the lock");
    assert!(!root.join("out/SHA256SUMS").exists());
}
