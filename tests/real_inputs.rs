//! Resolution of `images/docker.toml` from the host's Debian mirror (found in its apt
//! sources, as a user's would be): the container engine, its libraries and the drivers of all
//! four hypervisors end up in the image.

mod common;

use common::*;

#[test]
fn docker_image_resolves_with_engine_libraries_and_drivers() {
    let image = repo_root().join("images/docker.toml");
    let text = uvmkit_ok(&["inspect", image.to_str().unwrap(), "--files", "--quiet"]);
    // `--files` lists every file with its bytes and package, then its path (`PATH -> TARGET` for
    // a link).
    let files: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
        .collect();
    let has = |suffix: &str| files.iter().any(|f| f.ends_with(suffix));
    for program in [
        "/usr/bin/containerd",
        "/usr/sbin/dockerd",
        "/usr/sbin/runc",
        "/usr/sbin/sshd",
        "/usr/sbin/xtables-nft-multi",
        "/sbin/mkfs.ext4",
        "/init",
    ] {
        assert!(has(program), "{program} is not in the image");
    }
    // Every library dockerd, containerd, runc and sshd load is there (the closure's job; a
    // missing one would have failed `inspect`), and the main ones by name:
    for lib in [
        "/libc.so.6",
        "/ld-linux-x86-64.so.2",
        "/libseccomp.so.2",
        "/libcrypto.so.3",
    ] {
        assert!(has(lib), "{lib} is not in the image");
    }
    let modules_line = text.lines().find(|l| l.starts_with("modules (")).expect("modules line");
    for module in [
        "hv_storvsc",
        "hv_netvsc",
        "hv_vmbus",
        "vmxnet3",
        "vmw_pvscsi",
        "e1000",
        "ahci",
        "libahci",
        "virtio_blk",
        "overlay",
        "bridge",
        "br_netfilter",
    ] {
        assert!(
            modules_line.split_whitespace().any(|m| m == module),
            "module {module} not selected: {modules_line}"
        );
    }
    assert!(!text.contains("/usr/share/doc/"), "documentation was taken");
    assert!(!text.contains("/usr/share/man/"), "man pages were taken");
}
