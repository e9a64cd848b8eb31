//! Host folders in containers, end to end: `images/docker.toml` with a `[[shares]]` entry for
//! a 9p share, booted in QEMU with `-virtfs`; a file the host writes after boot is read by a
//! container through `docker run -v /mnt/work:/app` over the TLS Docker API, as users map
//! their project directory.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const READY: &str = "uvmkit-init: ready";
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const IMAGE: &str = "uvmkit-test/busybox:shares";

/// What the build gives: kernel, initrd, the SSH key, and the docker client (the host's, or
/// the image's own when the host has none).
struct Built {
    kernel: PathBuf,
    initrd: PathBuf,
    key: PathBuf,
    client: PathBuf,
}

/// Builds the Docker image with the test's SSH key, a preloaded busybox image and the share.
fn build(dir: &Path) -> Built {
    let definition_path = repo_root().join("images/docker.toml");
    // The shipped image's busybox makes the container image.
    let stock = dir.join("stock");
    uvmkit_ok(&[
        "build",
        definition_path.to_str().unwrap(),
        "--format",
        "efi",
        "--quiet",
        "-o",
        stock.to_str().unwrap(),
    ]);
    let extracted = dir.join("extracted");
    std::fs::create_dir_all(&extracted).unwrap();
    let initrd = stock.join("docker-initrd.img");
    extract_from_initrd(&initrd, &extracted, &["usr/bin/busybox"]);
    write_busybox_archive(
        &extracted.join("usr/bin/busybox"),
        &["sh", "cat", "ls"],
        IMAGE,
        &dir.join("busybox.tar"),
    );
    let key = dir.join("id_ed25519");
    let public = ssh_keygen(&key, "uvmkit-test");
    let mut text = std::fs::read_to_string(&definition_path).unwrap();
    text.push_str(&format!(
        "\n[ssh]\nauthorized_keys = [{:?}]\n\n[preload]\nimages = [\"busybox.tar\"]\n\n\
         [[shares]]\nsource = \"work\"\npath = \"/mnt/work\"\ntype = \"9p\"\n",
        public.trim()
    ));
    let definition = dir.join("docker.toml");
    std::fs::write(&definition, text).unwrap();
    let out = dir.join("out");
    uvmkit_ok(&[
        "build",
        definition.to_str().unwrap(),
        "--format",
        "efi",
        "--quiet",
        "-o",
        out.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_dir_all(&stock);
    // The image carries no docker command (preload uses the engine's API): the host's client
    // talks to the VM as a user's would.
    assert!(have("docker"), "the docker client is needed (tests/install-deps.sh)");
    let client = PathBuf::from("docker");
    Built {
        kernel: out.join("docker-kernel"),
        initrd: out.join("docker-initrd.img"),
        key,
        client,
    }
}

#[test]
fn a_host_file_reaches_a_container_through_a_9p_share() {
    let dir = test_dir("host-folders");
    let started = Instant::now();
    let built = build(&dir);
    eprintln!(
        "docker image with a share built in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let shared = dir.join("work");
    std::fs::create_dir_all(&shared).unwrap();
    let disk = dir.join("data.raw");
    std::fs::File::create(&disk).unwrap().set_len(4 << 30).unwrap();
    let (ssh_port, docker_port) = (free_port(), free_port());
    let args: Vec<String> = vec![
        "-kernel".into(),
        built.kernel.display().to_string(),
        "-initrd".into(),
        built.initrd.display().to_string(),
        "-append".into(),
        "console=ttyS0 quiet".into(),
        "-drive".into(),
        format!("if=virtio,format=raw,file={}", disk.display()),
        "-netdev".into(),
        format!("user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22,hostfwd=tcp:127.0.0.1:{docker_port}-:2376"),
        "-device".into(),
        "virtio-net-pci,netdev=net0".into(),
        "-virtfs".into(),
        format!("local,path={},mount_tag=work,security_model=none", shared.display()),
    ];
    let mut guest = Guest::start_with_memory(&dir, 2048, &args);
    let ready = guest.wait_for(READY, BOOT_TIMEOUT);
    let log = guest.log();
    let mounted = log
        .lines()
        .find(|l| l.contains("share work (9p) mounted on /mnt/work"))
        .unwrap_or_else(|| guest.fail("the 9p share was not mounted"))
        .to_string();
    eprintln!("ready after {ready:.1}s; {}", mounted.trim());
    // The 9p share's modules load; the others' (cifs, vboxsf) are left out.
    let skipped = log
        .lines()
        .find(|l| l.contains("modules for host folders not loaded"))
        .unwrap_or_else(|| guest.fail("no line about the share modules left out"))
        .to_string();
    assert!(skipped.contains("cifs") && !skipped.contains(" 9p"), "{skipped}");

    // Written after boot, so only the live share can carry it.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let token = format!("uvmkit-host-folder-{}-{nanos:09}", std::process::id());
    std::fs::write(shared.join("FILE"), format!("{token}\n")).unwrap();

    let reach = Reach {
        key: built.key.clone(),
        dir: dir.clone(),
        ssh_port,
        docker_port,
    };
    let bundle = reach.fetch_client_bundle(&mut guest);
    let deadline = Instant::now() + Duration::from_secs(300);
    while !reach
        .docker_command(&built.client, &bundle_tls_flags(&bundle))
        .args(["image", "inspect", IMAGE])
        .output()
        .unwrap()
        .status
        .success()
    {
        if Instant::now() > deadline {
            guest.fail(&format!("{IMAGE} was not loaded within 300 s"));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let read = reach.docker(
        &mut guest,
        &built.client,
        &bundle,
        &["run", "--rm", "-v", "/mnt/work:/app", IMAGE, "cat", "/app/FILE"],
    );
    assert_eq!(read.trim(), token);
    eprintln!(
        "a container read the host's file through the share at {:.1}s",
        guest.elapsed()
    );
    guest.kill();
    std::fs::remove_file(&disk).unwrap();
}
