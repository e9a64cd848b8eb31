//! The Docker host, run as a user would run it: `images/docker.toml` (Debian 13) with the test's
//! own SSH key and a container image the test makes (a static busybox) preloaded, booted under
//! QEMU (TCG) with a blank data disk and user networking that forwards 127.0.0.1 ports to 22
//! and 2376.
//!
//! - First boot: the client bundle is fetched with scp, `docker --tlsverify version` and
//!   `docker run` of the preloaded image work, a named volume is written; plain TCP, a foreign
//!   client certificate and no client certificate are refused.
//! - `system_powerdown`, boot again on the same disk: same SSH host key and CA, the image and
//!   the volume are still there, and the image was not loaded twice.
//! - QEMU killed after a sync, boot again: the data disk mounts and the synced file is intact.
//! - A disk holding someone else's file system is left byte for byte as it was; that VM's SSH
//!   host keys differ from the first VM's, and the image itself holds no private key.
//! - `images/docker-bookworm.toml` (Debian 12) builds, boots and serves Docker over TLS too.
//!
//! Each definition is built once and shared by its tests; independent VMs boot in parallel.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const READY: &str = "uvmkit-init: ready";
/// Boot to the ready marker, services included, under TCG on a loaded two-core machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Guest memory: the root file system is a tmpfs holding the whole initrd.
const MEMORY_MIB: u32 = 2048;
/// The image the test preloads.
const TEST_IMAGE: &str = "uvmkit-test/busybox:1";

/// The shipped definitions the tests build.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Definition {
    /// `images/docker.toml`: Debian 13.
    Trixie,
    /// `images/docker-bookworm.toml`: Debian 12.
    Bookworm,
}

impl Definition {
    /// The image's name: the definition's file stem and its artifacts' prefix.
    fn name(self) -> &'static str {
        match self {
            Definition::Trixie => "docker",
            Definition::Bookworm => "docker-bookworm",
        }
    }
}

/// What the one build of one definition (with the test's key and preload) gives.
struct Built {
    definition: Definition,
    dir: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    uki: PathBuf,
    ssh_key: PathBuf,
    /// The docker client: the host's, or the image's own when the host has none.
    docker: PathBuf,
}

fn built(definition: Definition) -> &'static Built {
    static TRIXIE: OnceLock<Built> = OnceLock::new();
    static BOOKWORM: OnceLock<Built> = OnceLock::new();
    let cell = match definition {
        Definition::Trixie => &TRIXIE,
        Definition::Bookworm => &BOOKWORM,
    };
    cell.get_or_init(|| build(definition))
}

fn build(definition: Definition) -> Built {
    let name = definition.name();
    let dir = test_dir(&format!("{name}-build"));
    // The shipped definition as it is: it must build, and it provides the busybox the test
    // image is made from (and a docker client when the host has none).
    let stock = dir.join("stock");
    let started = Instant::now();
    let definition_path = repo_root().join(format!("images/{name}.toml"));
    uvmkit_ok(&[
        "build",
        definition_path.to_str().unwrap(),
        "--format",
        "efi",
        "--quiet",
        "-o",
        stock.to_str().unwrap(),
    ]);
    eprintln!(
        "{name}: shipped definition built in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let extracted = dir.join("extracted");
    std::fs::create_dir_all(&extracted).unwrap();
    let stock_initrd = stock.join(format!("{name}-initrd.img"));
    let (ok, listing) = run("bsdtar", &["-tf", stock_initrd.to_str().unwrap()]);
    assert!(ok, "bsdtar: {listing}");
    // Debian 12 ships busybox in /bin, Debian 13 (merged /usr) in /usr/bin.
    let busybox = ["usr/bin/busybox", "bin/busybox"]
        .into_iter()
        .find(|p| listing.lines().any(|l| l == *p))
        .unwrap_or_else(|| panic!("no busybox in {}", stock_initrd.display()));
    let (ok, text) = run(
        "bsdtar",
        &[
            "-xf",
            stock_initrd.to_str().unwrap(),
            "-C",
            extracted.to_str().unwrap(),
            busybox,
            "usr/bin/docker",
        ],
    );
    assert!(ok, "bsdtar cannot take busybox and docker out of the initrd: {text}");

    write_busybox_image_archive(&extracted.join(busybox), &dir.join("busybox.tar"));
    let ssh_key = dir.join("id_ed25519");
    let (ok, text) = run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "uvmkit-test",
            "-f",
            ssh_key.to_str().unwrap(),
        ],
    );
    assert!(ok, "ssh-keygen: {text}");
    let public = std::fs::read_to_string(ssh_key.with_extension("pub")).unwrap();
    let mut text = std::fs::read_to_string(&definition_path).unwrap();
    text.push_str(&format!(
        "\n[ssh]\nauthorized_keys = [{:?}]\n\n[preload]\nimages = [\"busybox.tar\"]\n",
        public.trim()
    ));
    let test_definition = dir.join(format!("{name}.toml"));
    std::fs::write(&test_definition, text).unwrap();
    let out = dir.join("out");
    let started = Instant::now();
    uvmkit_ok(&[
        "build",
        test_definition.to_str().unwrap(),
        "--format",
        "efi",
        "--quiet",
        "-o",
        out.to_str().unwrap(),
    ]);
    eprintln!(
        "{name}: image with preload built in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let docker = if have("docker") {
        PathBuf::from("docker")
    } else {
        eprintln!("note: using the image's own docker client");
        extracted.join("usr/bin/docker")
    };
    Built {
        definition,
        kernel: out.join(format!("{name}-kernel")),
        initrd: out.join(format!("{name}-initrd.img")),
        uki: out.join(format!("{name}.efi")),
        dir,
        ssh_key,
        docker,
    }
}

/// A `docker save` archive (manifest.json, image config, one layer) holding a static busybox
/// with links for the applets the test runs. Deterministic, so the build is too.
fn write_busybox_image_archive(busybox: &Path, out: &Path) {
    fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).unwrap();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    }
    let binary = std::fs::read(busybox).unwrap();
    let mut layer = tar::Builder::new(Vec::new());
    for dir in ["bin/", "data/", "tmp/"] {
        let mut h = header(dir, tar::EntryType::Directory, 0o755, 0);
        h.set_cksum();
        layer.append(&h, std::io::empty()).unwrap();
    }
    let mut h = header("bin/busybox", tar::EntryType::Regular, 0o755, binary.len() as u64);
    h.set_cksum();
    layer.append(&h, binary.as_slice()).unwrap();
    for applet in ["sh", "echo", "cat", "sync", "ls"] {
        let mut h = header(&format!("bin/{applet}"), tar::EntryType::Symlink, 0o777, 0);
        h.set_link_name("busybox").unwrap();
        h.set_cksum();
        layer.append(&h, std::io::empty()).unwrap();
    }
    let layer = layer.into_inner().unwrap();
    let layer_id = hex::encode(Sha256::digest(&layer));
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": { "Env": ["PATH=/bin"], "Cmd": ["/bin/sh"] },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_id}")] },
        "history": [{ "created": "2023-11-14T22:13:20Z", "created_by": "uvmkit tests/docker.rs" }],
    })
    .to_string();
    let config_id = hex::encode(Sha256::digest(config.as_bytes()));
    let manifest = serde_json::json!([{
        "Config": format!("{config_id}.json"),
        "RepoTags": [TEST_IMAGE],
        "Layers": [format!("{layer_id}/layer.tar")],
    }])
    .to_string();
    let mut archive = tar::Builder::new(std::fs::File::create(out).unwrap());
    for (path, bytes) in [
        (format!("{layer_id}/layer.tar"), layer.as_slice()),
        (format!("{config_id}.json"), config.as_bytes()),
        ("manifest.json".to_string(), manifest.as_bytes()),
    ] {
        let mut h = header(&path, tar::EntryType::Regular, 0o644, bytes.len() as u64);
        h.set_cksum();
        archive.append(&h, bytes).unwrap();
    }
    archive.into_inner().unwrap().flush().unwrap();
}

/// The SSH host keys each VM of this run showed: two VMs booted from one image must differ.
static HOST_KEYS_SEEN: Mutex<Vec<Vec<String>>> = Mutex::new(Vec::new());

fn record_host_keys(keys: Vec<String>) {
    let mut seen = HOST_KEYS_SEEN.lock().unwrap();
    for other in seen.iter() {
        assert!(
            other.iter().all(|k| !keys.contains(k)),
            "two VMs booted from one image share an SSH host key"
        );
    }
    seen.push(keys);
}

/// A TCP port on 127.0.0.1 that is free now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One booted VM with its forwarded ports.
struct Vm {
    built: &'static Built,
    guest: Guest,
    ssh_port: u16,
    docker_port: u16,
    dir: PathBuf,
}

/// Boots the test's UKI under OVMF with `disk` as the data disk; waits for the ready marker.
fn boot_uki(b: &'static Built, name: &str, disk: &Path) -> (Vm, f64) {
    let dir = test_dir(name);
    let esp = dir.join("esp");
    std::fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    std::fs::copy(&b.uki, esp.join("EFI/BOOT/BOOTX64.EFI")).unwrap();
    let mut args = ovmf_args(&dir);
    args.extend(network_args(&dir));
    args.extend([
        "-drive".to_string(),
        format!("if=virtio,format=raw,file=fat:rw:{}", esp.display()),
        "-drive".to_string(),
        format!("if=virtio,format=raw,file={}", disk.display()),
    ]);
    start(b, name, dir, args)
}

/// Boots the test's kernel and initrd directly (faster than firmware) with `disk` attached.
fn boot_direct(b: &'static Built, name: &str, disk: &Path) -> (Vm, f64) {
    let dir = test_dir(name);
    let mut args = vec![
        "-kernel".to_string(),
        b.kernel.display().to_string(),
        "-initrd".to_string(),
        b.initrd.display().to_string(),
        "-append".to_string(),
        "console=ttyS0 quiet".to_string(),
        "-drive".to_string(),
        format!("if=virtio,format=raw,file={}", disk.display()),
    ];
    args.extend(network_args(&dir));
    start(b, name, dir, args)
}

/// User networking forwarding two fresh host ports; the ports are written to `dir`.
fn network_args(dir: &Path) -> Vec<String> {
    let (ssh_port, docker_port) = (free_port(), free_port());
    std::fs::write(dir.join("ports"), format!("{ssh_port} {docker_port}")).unwrap();
    vec![
        "-netdev".into(),
        format!("user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22,hostfwd=tcp:127.0.0.1:{docker_port}-:2376"),
        "-device".into(),
        "virtio-net-pci,netdev=net0".into(),
    ]
}

fn start(built: &'static Built, name: &str, dir: PathBuf, args: Vec<String>) -> (Vm, f64) {
    let ports = std::fs::read_to_string(dir.join("ports")).unwrap();
    let (ssh_port, docker_port) = ports.split_once(' ').unwrap();
    let mut guest = Guest::start_with_memory(&dir, MEMORY_MIB, &args);
    let ready = guest.wait_for(READY, BOOT_TIMEOUT);
    eprintln!("{name}: ready after {ready:.1}s from QEMU start");
    (
        Vm {
            built,
            guest,
            ssh_port: ssh_port.parse().unwrap(),
            docker_port: docker_port.parse().unwrap(),
            dir,
        },
        ready,
    )
}

impl Vm {
    fn ssh_options(&self) -> Vec<String> {
        let b = self.built;
        [
            "-i",
            b.ssh_key.to_str().unwrap(),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            &format!("UserKnownHostsFile={}", self.dir.join("known_hosts").display()),
            "-o",
            "ConnectTimeout=20",
            "-o",
            "LogLevel=ERROR",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Runs `command` in the VM as root over SSH; panics with the console log when it fails.
    fn ssh(&mut self, command: &str) -> String {
        let out = Command::new("ssh")
            .args(self.ssh_options())
            .args(["-p", &self.ssh_port.to_string(), "root@127.0.0.1", command])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if !out.status.success() {
            self.guest.fail(&format!(
                "ssh {command:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The VM's SSH host keys, as `ssh-keyscan` sees them.
    fn host_keys(&mut self) -> Vec<String> {
        let (ok, text) = run(
            "ssh-keyscan",
            &["-p", &self.ssh_port.to_string(), "-t", "ed25519,ecdsa", "127.0.0.1"],
        );
        assert!(ok, "ssh-keyscan: {text}");
        let mut keys: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(' ').map(|(_, key)| key.to_string()))
            .collect();
        keys.sort();
        assert_eq!(keys.len(), 2, "ed25519 and ECDSA host keys expected:\n{text}");
        keys
    }

    /// Copies the client bundle out with scp, as the README tells users to.
    fn fetch_client_bundle(&mut self) -> PathBuf {
        let to = self.dir.join("client");
        let _ = std::fs::remove_dir_all(&to);
        let out = Command::new("scp")
            .args(self.ssh_options())
            .args([
                "-r",
                "-P",
                &self.ssh_port.to_string(),
                "root@127.0.0.1:/var/lib/uvmkit/identity/tls/client",
                to.to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if !out.status.success() {
            self.guest.fail(&format!(
                "scp of the client bundle: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            assert!(to.join(file).is_file(), "the client bundle has no {file}");
        }
        to
    }

    /// Runs the docker client against the VM with `tls` flags and `args`.
    fn docker_with(&self, tls: &[String], args: &[&str]) -> Output {
        Command::new(&self.built.docker)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_TLS_VERIFY")
            .env("DOCKER_CONFIG", self.dir.join("docker-config"))
            .args(tls)
            .args(["-H", &format!("tcp://127.0.0.1:{}", self.docker_port)])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs the docker client with the VM's client bundle; panics when it fails.
    fn docker(&mut self, bundle: &Path, args: &[&str]) -> String {
        let out = self.docker_with(
            &tls_flags(bundle, &bundle.join("cert.pem"), &bundle.join("key.pem")),
            args,
        );
        if !out.status.success() {
            self.guest.fail(&format!(
                "docker {args:?} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `script` in the test image with the named volume `uvmkit-test-volume` on `/data`.
    fn run_with_volume(&mut self, bundle: &Path, script: &str) -> String {
        self.docker(
            bundle,
            &[
                "run",
                "--rm",
                "-v",
                "uvmkit-test-volume:/data",
                TEST_IMAGE,
                "sh",
                "-c",
                script,
            ],
        )
    }

    /// Waits until `docker image inspect IMAGE` succeeds (the init loads it in the background).
    fn wait_for_preloaded_image(&mut self, bundle: &Path) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(300);
        let tls = tls_flags(bundle, &bundle.join("cert.pem"), &bundle.join("key.pem"));
        loop {
            if self
                .docker_with(&tls, &["image", "inspect", TEST_IMAGE])
                .status
                .success()
            {
                return self.guest.elapsed();
            }
            if Instant::now() > deadline {
                self.guest.fail(&format!("{TEST_IMAGE} was not loaded within 300 s"));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Powers off with the ACPI button and waits for QEMU to exit.
    fn power_off(&mut self) -> f64 {
        self.guest.monitor("system_powerdown");
        self.guest.wait_exit(Duration::from_secs(180))
    }
}

fn tls_flags(bundle: &Path, cert: &Path, key: &Path) -> Vec<String> {
    vec![
        "--tlsverify".into(),
        format!("--tlscacert={}", bundle.join("ca.pem").display()),
        format!("--tlscert={}", cert.display()),
        format!("--tlskey={}", key.display()),
    ]
}

/// A blank sparse disk of `size` bytes.
fn blank_disk(path: &Path, size: u64) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
}

fn sha256_file(path: &Path) -> String {
    let mut h = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path).unwrap(), &mut h).unwrap();
    hex::encode(h.finalize())
}

/// A client certificate from a CA the VM has never seen.
fn foreign_client_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("foreign-cert.pem"), dir.join("foreign-key.pem"));
    let (ok, text) = run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=someone-else",
            "-addext",
            "extendedKeyUsage=clientAuth",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    assert!(ok, "openssl req: {text}");
    (cert, key)
}

#[test]
fn docker_host_serves_tls_keeps_state_across_reboots_and_power_loss() {
    let b = built(Definition::Trixie);
    let disk = b.dir.join("data.raw");
    blank_disk(&disk, 4 << 30);

    // First boot: a blank disk is partitioned and formatted, the identity made, services started.
    let (mut vm, ready) = boot_uki(b, "docker-boot-1", &disk);
    let log = vm.guest.log();
    for line in [
        "blank; wrote a GPT",
        "identity ready in",
        "service containerd ready",
        "service dockerd ready",
        "service sshd ready",
    ] {
        assert!(log.contains(line), "no {line:?} on the console:\n{log}");
    }
    for line in log
        .lines()
        .filter(|l| l.contains("service dockerd ready") || l.contains("identity ready in"))
    {
        eprintln!("first boot: {line}");
    }
    let bundle = vm.fetch_client_bundle();
    let version = vm.docker(&bundle, &["version", "--format", "{{.Server.Version}} {{.Server.Os}}"]);
    let docker_ready = vm.guest.elapsed();
    assert!(version.trim().ends_with("linux"), "docker version: {version}");
    assert!(server_major(&version) >= 26, "Debian 13 ships Docker 26: {version}");
    eprintln!(
        "first boot: ready {ready:.1}s, docker version answered at {docker_ready:.1}s: {}",
        version.trim()
    );

    let loaded = vm.wait_for_preloaded_image(&bundle);
    eprintln!("first boot: {TEST_IMAGE} loaded by {loaded:.1}s");
    let hello = vm.docker(
        &bundle,
        &["run", "--rm", TEST_IMAGE, "echo", "hello from a preloaded image"],
    );
    assert_eq!(hello.trim(), "hello from a preloaded image");
    // `--init` runs the container's command under docker-init (tini) as its PID 1.
    let init = vm.docker(
        &bundle,
        &["run", "--rm", "--init", TEST_IMAGE, "cat", "/proc/1/cmdline"],
    );
    assert!(init.starts_with("/sbin/docker-init\0"), "PID 1 with --init: {init:?}");
    vm.docker(&bundle, &["volume", "create", "uvmkit-test-volume"]);
    vm.run_with_volume(&bundle, "echo kept > /data/file && sync");

    // Refused: plain HTTP on the TLS port, a certificate from another CA, no certificate.
    let plain = vm.docker_with(&[], &["version"]);
    assert!(!plain.status.success(), "plain TCP was answered: {plain:?}");
    let (cert, key) = foreign_client_certificate(&vm.dir);
    let foreign = vm.docker_with(&tls_flags(&bundle, &cert, &key), &["version"]);
    assert!(
        !foreign.status.success(),
        "a foreign client certificate was accepted: {foreign:?}"
    );
    let (ok, text) = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "30",
            "--cacert",
            bundle.join("ca.pem").to_str().unwrap(),
            &format!("https://127.0.0.1:{}/version", vm.docker_port),
        ],
    );
    assert!(!ok, "a client without a certificate was answered: {text}");

    let meminfo = vm.ssh("cat /proc/meminfo");
    let kib = |field: &str| -> u64 {
        meminfo
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    eprintln!(
        "first boot: guest memory in use with dockerd ready: {} MiB of {} MiB (MemTotal - MemAvailable)",
        (kib("MemTotal:") - kib("MemAvailable:")) / 1024,
        kib("MemTotal:") / 1024
    );
    let keys = vm.host_keys();
    record_host_keys(keys.clone());
    let ca = std::fs::read(bundle.join("ca.pem")).unwrap();
    let stopped = vm.power_off();
    let log = vm.guest.log();
    eprintln!("first boot: QEMU exited {stopped:.1}s after the power button");
    let (dockerd_stop, containerd_stop) = (
        log.find("stopping service dockerd"),
        log.find("stopping service containerd"),
    );
    assert!(
        matches!((dockerd_stop, containerd_stop), (Some(d), Some(c)) if d < c),
        "services were not stopped in reverse order:\n{log}"
    );

    // Second boot on the same disk: the same identity, image and volume; nothing loaded twice.
    drop(vm);
    let (mut vm, ready) = boot_uki(b, "docker-boot-2", &disk);
    eprintln!("second boot: ready {ready:.1}s");
    assert_eq!(vm.host_keys(), keys, "the SSH host keys changed across a reboot");
    let bundle = vm.fetch_client_bundle();
    assert_eq!(
        std::fs::read(bundle.join("ca.pem")).unwrap(),
        ca,
        "the CA changed across a reboot"
    );
    let images = vm.docker(&bundle, &["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(
        images.lines().any(|l| l == TEST_IMAGE),
        "{TEST_IMAGE} is gone: {images}"
    );
    let kept = vm.run_with_volume(&bundle, "cat /data/file");
    assert_eq!(kept.trim(), "kept");
    let log = vm.guest.log();
    assert!(
        log.contains("already loaded"),
        "the second boot did not skip the loaded image:\n{log}"
    );

    // Power loss: a synced file survives QEMU being killed.
    vm.ssh("echo synced-before-power-loss > /var/lib/uvmkit/power-loss-check && sync");
    vm.guest.kill();
    drop(vm);
    let (mut vm, ready) = boot_uki(b, "docker-boot-3", &disk);
    eprintln!("after power loss: ready {ready:.1}s");
    assert!(vm.guest.log().contains("data partition"), "{}", vm.guest.log());
    assert_eq!(
        vm.ssh("cat /var/lib/uvmkit/power-loss-check").trim(),
        "synced-before-power-loss"
    );
    let bundle = vm.fetch_client_bundle();
    let volumes = vm.docker(&bundle, &["volume", "ls", "--format", "{{.Name}}"]);
    assert!(volumes.lines().any(|l| l == "uvmkit-test-volume"), "{volumes}");
    vm.power_off();
}

#[test]
fn the_image_holds_no_keys_or_certificates() {
    let b = built(Definition::Trixie);
    let (ok, listing) = run("bsdtar", &["-tf", b.initrd.to_str().unwrap()]);
    assert!(ok, "bsdtar: {listing}");
    let secrets: Vec<&str> = listing
        .lines()
        .filter(|path| {
            let name = path.rsplit('/').next().unwrap_or(path);
            (name.starts_with("ssh_host_") && name.ends_with("_key")) || name.ends_with("key.pem")
        })
        .collect();
    assert!(secrets.is_empty(), "private keys baked into the image: {secrets:?}");
    assert!(listing.lines().any(|p| p == "root/.ssh/authorized_keys"), "{listing}");
}

#[test]
fn a_disk_with_a_foreign_file_system_is_left_untouched() {
    let b = built(Definition::Trixie);
    let disk = b.dir.join("foreign.raw");
    blank_disk(&disk, 256 << 20);
    let (ok, text) = run("mkfs.ext4", &["-q", "-F", "-L", "not-ours", disk.to_str().unwrap()]);
    assert!(ok, "mkfs.ext4: {text}");
    let before = sha256_file(&disk);
    let (mut vm, _) = boot_direct(b, "docker-foreign-disk", &disk);
    let log = vm.guest.log();
    assert!(
        log.contains("left alone") || log.contains("not formatted as uvmkit-data"),
        "no word about the foreign disk:\n{log}"
    );
    assert!(log.contains("no data disk"), "state should be on a tmpfs:\n{log}");
    // Its identity is its own, made at boot (here in the tmpfs).
    let keys = vm.host_keys();
    record_host_keys(keys);
    vm.power_off();
    assert_eq!(sha256_file(&disk), before, "the foreign disk was changed");
}

/// The major version in `docker version --format '{{.Server.Version}} ...'` output.
fn server_major(version: &str) -> u32 {
    version
        .split('.')
        .next()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no server version in {version:?}"))
}

/// The Debian 12 definition still builds, boots (kernel and initrd, a blank data disk) and
/// serves its Docker 20.10 engine over TLS to the docker CLI, with the preloaded image.
#[test]
fn bookworm_docker_host_serves_tls() {
    let b = built(Definition::Bookworm);
    let disk = b.dir.join("data.raw");
    blank_disk(&disk, 1 << 30);
    let (mut vm, ready) = boot_direct(b, "docker-bookworm-boot", &disk);
    let log = vm.guest.log();
    for line in ["blank; wrote a GPT", "service dockerd ready", "service sshd ready"] {
        assert!(log.contains(line), "no {line:?} on the console:\n{log}");
    }
    let bundle = vm.fetch_client_bundle();
    let version = vm.docker(&bundle, &["version", "--format", "{{.Server.Version}} {{.Server.Os}}"]);
    assert_eq!(server_major(&version), 20, "Debian 12 ships Docker 20.10: {version}");
    assert!(version.trim().ends_with("linux"), "docker version: {version}");
    eprintln!("bookworm: ready {ready:.1}s, docker version {}", version.trim());
    vm.wait_for_preloaded_image(&bundle);
    let hello = vm.docker(&bundle, &["run", "--rm", TEST_IMAGE, "echo", "hello from bookworm"]);
    assert_eq!(hello.trim(), "hello from bookworm");
    // Without a client certificate the TLS port answers nothing.
    let plain = vm.docker_with(&[], &["version"]);
    assert!(!plain.status.success(), "plain TCP was answered: {plain:?}");
    vm.power_off();
}
