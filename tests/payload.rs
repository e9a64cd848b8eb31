//! What the Docker image carries, read with `uvmkit inspect --json` from the real Debian 13
//! packages: the programs dockerd runs are in the tree; containerd's legacy shims, `ctr` and
//! the docker command are not, and inspect says what the packages' defaults left out, why and
//! what each weighs. `defaults = false` and naming a path in `include` bring them back.
//! (Debian 13's docker.io 26.1.5 ships no `dnet`/`ovrouter` and its containerd no
//! `containerd-stress`; the defaults name them for the builds that do, and they are checked
//! absent here all the same.)

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;

/// Runs `uvmkit inspect DEFINITION --json` and parses what it prints.
fn inspect(definition: &std::path::Path) -> Value {
    let out = uvmkit(&["inspect", definition.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "uvmkit inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON")
}

/// The image's files: path -> (bytes, origin, package).
fn files_of(report: &Value) -> BTreeMap<String, (u64, String, Option<String>)> {
    report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                (
                    f["bytes"].as_u64().unwrap(),
                    f["origin"].as_str().unwrap().to_string(),
                    f["package"].as_str().map(str::to_string),
                ),
            )
        })
        .collect()
}

/// What the packages' defaults left out: path -> (package, bytes, reason).
fn left_out_of(report: &Value) -> BTreeMap<String, (String, u64, String)> {
    report["left_out_by_defaults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["path"].as_str().unwrap().to_string(),
                (
                    l["package"].as_str().unwrap().to_string(),
                    l["bytes"].as_u64().unwrap(),
                    l["reason"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

/// What Debian 13's containerd ships that the defaults leave out.
const DROPPED: [(&str, &str); 3] = [
    ("/usr/bin/ctr", "containerd"),
    ("/usr/bin/containerd-shim", "containerd"),
    ("/usr/bin/containerd-shim-runc-v1", "containerd"),
];

/// Named by the defaults, absent from Debian 13's packages.
const NOT_SHIPPED: [&str; 4] = [
    "/usr/bin/dnet",
    "/usr/bin/ovrouter",
    "/usr/bin/diagnosticClient",
    "/usr/bin/containerd-stress",
];

#[test]
fn the_docker_image_holds_what_dockerd_runs_and_not_the_test_tools() {
    let definition = repo_root().join("images/docker.toml");
    let report = inspect(&definition);
    let files = files_of(&report);

    // What the engine runs: dockerd, containerd and its runc v2 shim, runc, the userland proxy
    // for published ports, docker-init for `--init`.
    for (path, package) in [
        ("/usr/sbin/dockerd", "docker.io"),
        ("/usr/bin/containerd", "containerd"),
        ("/usr/bin/containerd-shim-runc-v2", "containerd"),
        ("/usr/sbin/runc", "runc"),
        ("/usr/sbin/docker-proxy", "docker.io"),
        ("/usr/bin/tini-static", "tini"),
    ] {
        let (bytes, origin, from) = files.get(path).unwrap_or_else(|| panic!("{path} is not in the image"));
        assert!(*bytes > 500_000, "{path}: {bytes} bytes");
        assert_eq!((origin.as_str(), from.as_deref()), ("package", Some(package)), "{path}");
    }
    assert_eq!(
        files["/usr/bin/docker-init"].1, "files",
        "the [[files]] link to tini-static"
    );

    // What it never runs is left out, and inspect says so with the bytes and the reason.
    let left_out = left_out_of(&report);
    let mut dropped_bytes = 0;
    for (path, package) in DROPPED {
        assert!(!files.contains_key(path), "{path} is in the image");
        let (from, bytes, reason) = left_out
            .get(path)
            .unwrap_or_else(|| panic!("{path} not listed as left out"));
        assert_eq!(from, package);
        assert!(*bytes > 1 << 20, "{path}: {bytes} bytes");
        assert!(!reason.is_empty());
        dropped_bytes += bytes;
        eprintln!("left out {path} ({package}): {bytes} bytes: {reason}");
    }
    for path in NOT_SHIPPED {
        assert!(!files.contains_key(path), "{path} is in the image");
    }
    assert_eq!(left_out.len(), DROPPED.len(), "{left_out:?}");
    // The docker command stays out: the preload uses the engine's API.
    assert!(
        !files.contains_key("/usr/bin/docker"),
        "the docker command is in the image"
    );

    // Largest first, each file with its package; libraries name the package they came from.
    let sizes: Vec<u64> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["bytes"].as_u64().unwrap())
        .collect();
    assert!(
        sizes.windows(2).all(|w| w[0] >= w[1]),
        "files are not sorted largest first"
    );
    let libc = files
        .iter()
        .find(|(path, _)| path.ends_with("/libc.so.6"))
        .expect("libc in the image");
    assert_eq!((libc.1 .1.as_str(), libc.1 .2.as_deref()), ("library", Some("libc6")));
    assert_eq!(files["/init"].1, "uvmkit");

    let tree_bytes = report["tree_file_bytes"].as_u64().unwrap();
    let listed: u64 = files.values().map(|f| f.0).sum();
    assert_eq!(listed, tree_bytes, "the files listed add up to the tree");
    eprintln!(
        "docker image tree: {tree_bytes} bytes in {} files; the defaults left out {dropped_bytes} bytes",
        files.len()
    );
}

#[test]
fn defaults_false_and_a_named_path_keep_what_the_defaults_leave_out() {
    let dir = test_dir("payload-defaults");
    let stock = std::fs::read_to_string(repo_root().join("images/docker.toml")).unwrap();
    let entry = "[[packages]]\nname = \"containerd\"\n";
    assert!(stock.contains(entry));
    let definition = dir.join("docker.toml");

    // `defaults = false` on containerd: its left-out programs are back.
    std::fs::write(&definition, stock.replace(entry, &format!("{entry}defaults = false\n"))).unwrap();
    let report = inspect(&definition);
    let (files, left_out) = (files_of(&report), left_out_of(&report));
    for (path, _) in DROPPED {
        assert!(files.contains_key(path), "{path}");
    }
    assert!(left_out.is_empty(), "{left_out:?}");

    // `ctr` named in include: only it comes back.
    let include = "include = [\"/usr/bin/*\", \"/etc/**\", \"/usr/bin/ctr\"]\n";
    std::fs::write(&definition, stock.replace(entry, &format!("{entry}{include}"))).unwrap();
    let report = inspect(&definition);
    let files = files_of(&report);
    assert!(files.contains_key("/usr/bin/ctr"));
    assert!(!files.contains_key("/usr/bin/containerd-shim") && !files.contains_key("/usr/bin/containerd-shim-runc-v1"));
}
