//! `uvmkit instance` and `uvmkit connect`, checked from outside.
//!
//! - Every settings volume format reads back with tools that share no code with uvmkit:
//!   `fsck.fat -n` and `mtype` (the FAT volume, `uvmkit.toml` byte for byte), `blkid` (the
//!   label `UVMKIT-CFG` on the whole disk), `isoinfo -d` and `xorriso` (the ISO's volume id
//!   and files), `qemu-img check`/`compare` (VHDX, VMDK against raw); the same settings give
//!   the same bytes; bad settings exit 2 naming the problem.
//! - `uvmkit env` reads a context the Docker CLI itself wrote (`docker context create`).
//! - Boot test: `images/docker.toml` with the test's SSH key, booted under QEMU with ports
//!   forwarded; a wrong `--fingerprint` is refused and leaves both config directories as they
//!   were; the right one writes a context with which `docker --context NAME version` answers
//!   (TLS verified both ways), `docker context use NAME && docker ps` works, the printed bash
//!   lines work, and a second connect trusts the pinned key.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Every file under `dir` with its bytes (directories as empty entries), by relative path.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            if path.is_dir() {
                out.insert(rel + "/", Vec::new());
                stack.push(path);
            } else {
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn sha256_hex(path: &Path) -> String {
    let (ok, text) = run("sha256sum", &[path.to_str().unwrap()]);
    assert!(ok, "sha256sum: {text}");
    text.split_whitespace().next().unwrap().to_string()
}

fn keygen(path: &Path) {
    ssh_keygen(path, "uvmkit-test");
}

/// A self-signed CA certificate (PEM) at `path`.
fn ca_certificate(path: &Path) {
    let key = path.with_extension("key");
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
            "/CN=uvmkit test CA",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            path.to_str().unwrap(),
        ],
    );
    assert!(ok, "openssl: {text}");
}

/// The settings the volume tests write, as flags, in `dir`.
fn instance_flags(dir: &Path) -> Vec<String> {
    keygen(&dir.join("id_ed25519"));
    ca_certificate(&dir.join("client-ca.pem"));
    ca_certificate(&dir.join("corp.pem"));
    std::fs::write(dir.join("app.tar"), vec![7u8; 300_000]).unwrap();
    let p = |f: &str| dir.join(f).display().to_string();
    [
        "--hostname",
        "vm-1",
        "--ssh-key",
        &p("id_ed25519.pub"),
        "--interface",
        "eth1=192.168.56.10/24,gw=192.168.56.1,dns=192.168.56.1",
        "--client-ca",
        &p("client-ca.pem"),
        "--ca-cert",
        &p("corp.pem"),
        "--preload",
        &p("app.tar"),
        "--docker-setting",
        "log-driver=local",
        "--docker-setting",
        "mtu=1400",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn write_volume(flags: &[String], output: &Path) -> String {
    let mut args: Vec<&str> = vec!["instance", "-o", output.to_str().unwrap()];
    args.extend(flags.iter().map(String::as_str));
    uvmkit_ok(&args)
}

#[test]
fn instance_volumes_read_back_with_independent_tools() {
    let dir = test_dir("connect-instance");
    let flags = instance_flags(&dir);
    let public_key = std::fs::read_to_string(dir.join("id_ed25519.pub")).unwrap();
    let mut sizes = Vec::new();
    for format in ["raw", "iso", "vhdx", "vmdk"] {
        let out = dir.join(format!("vm1.{format}"));
        let said = write_volume(&flags, &out);
        assert!(said.contains("settings volume UVMKIT-CFG, 4 file(s)"), "{said}");
        sizes.push(format!("{format} {} bytes", std::fs::metadata(&out).unwrap().len()));
        // Reproducible: the same settings again give the same bytes.
        // (Under the same name: a VMDK's descriptor names its own file.)
        let again_dir = dir.join("again");
        std::fs::create_dir_all(&again_dir).unwrap();
        let again = again_dir.join(format!("vm1.{format}"));
        write_volume(&flags, &again);
        assert_eq!(
            sha256_hex(&out),
            sha256_hex(&again),
            "{format} differs between two runs"
        );
        std::fs::remove_file(&again).unwrap();
    }
    eprintln!("instance volume sizes: {}", sizes.join(", "));

    // FAT: fsck, the label on the whole disk, and the files byte for byte.
    let raw = dir.join("vm1.raw");
    let (ok, text) = run("fsck.fat", &["-n", raw.to_str().unwrap()]);
    assert!(ok, "fsck.fat: {text}");
    let (ok, text) = run("blkid", &["-o", "export", raw.to_str().unwrap()]);
    assert!(
        ok && text.contains("LABEL=UVMKIT-CFG") && text.contains("TYPE=vfat"),
        "blkid: {text}"
    );
    let (ok, settings) = run("mtype", &["-i", raw.to_str().unwrap(), "::uvmkit.toml"]);
    assert!(ok, "mtype: {settings}");
    for line in [
        "hostname = \"vm-1\"",
        &format!("authorized_keys = [{:?}]", public_key.trim()),
        "address = \"192.168.56.10/24\"",
        "gateway = \"192.168.56.1\"",
        "log-driver = \"local\"",
        "mtu = 1400",
        "client_ca = \"tls/client-ca.pem\"",
        "ca_certificates = [\"tls/ca/corp.pem\"]",
        "images = [\"preload/app.tar\"]",
    ] {
        assert!(settings.contains(line), "uvmkit.toml lacks {line:?}:\n{settings}");
    }
    for (on_volume, host) in [
        ("tls/client-ca.pem", "client-ca.pem"),
        ("tls/ca/corp.pem", "corp.pem"),
        ("preload/app.tar", "app.tar"),
    ] {
        let copy = dir.join("copied");
        let (ok, text) = run(
            "mcopy",
            &[
                "-n",
                "-i",
                raw.to_str().unwrap(),
                &format!("::{on_volume}"),
                copy.to_str().unwrap(),
            ],
        );
        assert!(ok, "mcopy {on_volume}: {text}");
        assert_eq!(
            std::fs::read(&copy).unwrap(),
            std::fs::read(dir.join(host)).unwrap(),
            "{on_volume}"
        );
        std::fs::remove_file(&copy).unwrap();
    }

    // ISO 9660: the volume id, the files, and uvmkit.toml as the FAT volume holds it.
    let iso = dir.join("vm1.iso");
    let (ok, text) = run("isoinfo", &["-d", "-i", iso.to_str().unwrap()]);
    assert!(ok && text.contains("Volume id: UVMKIT-CFG"), "isoinfo: {text}");
    let (ok, text) = run("blkid", &["-o", "export", iso.to_str().unwrap()]);
    assert!(
        ok && text.contains("LABEL=UVMKIT-CFG") && text.contains("TYPE=iso9660"),
        "blkid: {text}"
    );
    let (ok, listing) = run(
        "xorriso",
        &["-indev", iso.to_str().unwrap(), "-find", "/", "-type", "f"],
    );
    assert!(ok, "xorriso: {listing}");
    for file in [
        "/uvmkit.toml",
        "/tls/client-ca.pem",
        "/tls/ca/corp.pem",
        "/preload/app.tar",
    ] {
        assert!(
            listing.contains(&format!("'{file}'")),
            "the ISO lacks {file}:\n{listing}"
        );
    }
    let extracted = dir.join("iso-uvmkit.toml");
    let (ok, text) = run(
        "xorriso",
        &[
            "-osirrox",
            "on",
            "-indev",
            iso.to_str().unwrap(),
            "-extract",
            "/uvmkit.toml",
            extracted.to_str().unwrap(),
        ],
    );
    assert!(ok, "xorriso -extract: {text}");
    assert_eq!(std::fs::read_to_string(&extracted).unwrap(), settings);

    // VHDX and VMDK: valid containers of the same disk.
    for format in ["vhdx", "vmdk"] {
        let image = dir.join(format!("vm1.{format}"));
        let (ok, text) = run("qemu-img", &["check", image.to_str().unwrap()]);
        assert!(ok, "qemu-img check {format}: {text}");
        let (ok, text) = run("qemu-img", &["compare", raw.to_str().unwrap(), image.to_str().unwrap()]);
        assert!(
            ok && text.contains("identical"),
            "qemu-img compare raw {format}: {text}"
        );
    }

    // A --settings file: its relative paths are relative to it; flags override it.
    let sub = dir.join("settings");
    std::fs::create_dir_all(sub.join("certs")).unwrap();
    std::fs::copy(dir.join("corp.pem"), sub.join("certs/corp.pem")).unwrap();
    std::fs::write(
        sub.join("vm2.toml"),
        "hostname = \"from-file\"\n[tls]\nca_certificates = [\"certs/corp.pem\"]\n",
    )
    .unwrap();
    let vm2 = dir.join("vm2.raw");
    uvmkit_ok(&[
        "instance",
        "--settings",
        sub.join("vm2.toml").to_str().unwrap(),
        "--hostname",
        "vm-2",
        "-o",
        vm2.to_str().unwrap(),
    ]);
    let (ok, text) = run("mtype", &["-i", vm2.to_str().unwrap(), "::uvmkit.toml"]);
    assert!(
        ok && text.contains("hostname = \"vm-2\"") && text.contains("certs/corp.pem"),
        "{text}"
    );
    let (ok, text) = run("mtype", &["-i", vm2.to_str().unwrap(), "::certs/corp.pem"]);
    assert!(
        ok && text == std::fs::read_to_string(dir.join("corp.pem")).unwrap(),
        "{text}"
    );

    // Bad settings: exit 2, the message names the problem, nothing is written.
    for (args, says) in [
        (vec!["--hostname", "bad/name"], "hostname \"bad/name\" is not valid"),
        (vec!["--docker-setting", "hosts=[\"tcp://0.0.0.0:2375\"]"], "hosts"),
        (vec!["--interface", "eth1=10.0.0.1"], "ADDRESS/PREFIX"),
    ] {
        let bad = dir.join("bad.iso");
        let mut all = vec!["instance", "-o", bad.to_str().unwrap()];
        all.extend(args);
        let out = uvmkit(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {stderr}");
        assert!(stderr.contains(says), "{all:?}: {stderr}");
        assert!(!bad.exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs the docker CLI with `DOCKER_CONFIG=config`.
fn docker(config: &Path, args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .env("DOCKER_CONFIG", config)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null())
        .output()
        .expect("run docker")
}

#[test]
fn env_reads_a_context_the_docker_cli_wrote() {
    if !have("docker") {
        return;
    }
    let dir = test_dir("connect-env");
    let config = dir.join("docker-config");
    ca_certificate(&dir.join("ca.pem"));
    ca_certificate(&dir.join("cert.pem"));
    std::fs::rename(dir.join("cert.key"), dir.join("key.pem")).unwrap();
    let p = |f: &str| dir.join(f).display().to_string();
    let out = docker(
        &config,
        &[
            "context",
            "create",
            "vm-by-docker",
            "--docker",
            &format!(
                "host=tcp://192.168.56.10:2376,ca={},cert={},key={}",
                p("ca.pem"),
                p("cert.pem"),
                p("key.pem")
            ),
        ],
    );
    assert!(
        out.status.success(),
        "docker context create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(uvmkit_bin())
        .args(["env", "vm-by-docker", "--shell", "bash"])
        .env("DOCKER_CONFIG", &config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "uvmkit env: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = {
        let (ok, text) = run("sh", &["-c", "printf %s vm-by-docker | sha256sum"]);
        assert!(ok);
        text.split_whitespace().next().unwrap().to_string()
    };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "export DOCKER_HOST='tcp://192.168.56.10:2376'\n\
             export DOCKER_TLS_VERIFY='1'\n\
             export DOCKER_CERT_PATH='{}/contexts/tls/{id}/docker'\n\
             # Or, without these variables: docker context use vm-by-docker\n\
             # Run this command to configure your shell:\n\
             # eval \"$(uvmkit env vm-by-docker --shell bash)\"\n",
            config.display()
        )
    );
    let out = Command::new(uvmkit_bin())
        .args(["env", "nothing-here"])
        .env("DOCKER_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no Docker context \"nothing-here\""));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Boot to the ready marker under TCG on a loaded two-core machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `uvmkit connect` with the test's config directories.
fn connect(docker_config: &Path, uvmkit_config: &Path, args: &[&str]) -> Output {
    Command::new(uvmkit_bin())
        .arg("connect")
        .args(args)
        .env("DOCKER_CONFIG", docker_config)
        .env("UVMKIT_CONFIG", uvmkit_config)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn connect_points_the_docker_cli_at_a_booted_vm() {
    if !have("docker") || !have("qemu-system-x86_64") {
        return;
    }
    let dir = test_dir("connect-boot");
    let key = dir.join("id_ed25519");
    keygen(&key);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let mut text = std::fs::read_to_string(repo_root().join("images/docker.toml")).unwrap();
    text.push_str(&format!("\n[ssh]\nauthorized_keys = [{:?}]\n", public.trim()));
    let definition = dir.join("docker.toml");
    std::fs::write(&definition, text).unwrap();
    let out = dir.join("out");
    let started = Instant::now();
    uvmkit_ok(&[
        "build",
        definition.to_str().unwrap(),
        "--format",
        "efi",
        "--quiet",
        "-o",
        out.to_str().unwrap(),
    ]);
    eprintln!("image built in {:.1}s", started.elapsed().as_secs_f64());

    let (ssh_port, docker_port) = (free_port(), free_port());
    let args: Vec<String> = [
        "-kernel",
        out.join("docker-kernel").to_str().unwrap(),
        "-initrd",
        out.join("docker-initrd.img").to_str().unwrap(),
        "-append",
        "console=ttyS0 quiet",
        "-netdev",
        &format!("user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22,hostfwd=tcp:127.0.0.1:{docker_port}-:2376"),
        "-device",
        "virtio-net-pci,netdev=net0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut guest = Guest::start_with_memory(&dir, 2048, &args);
    let ready = guest.wait_for("uvmkit-init: ready", BOOT_TIMEOUT);
    eprintln!("VM ready after {ready:.1}s");

    // The fingerprint as ssh-keygen computes it from what ssh-keyscan sees.
    // (sshd may still be making its first answer slowly under TCG: a few tries.)
    let scan_started = Instant::now();
    let scanned = loop {
        let (_, text) = run(
            "ssh-keyscan",
            &["-T", "30", "-p", &ssh_port.to_string(), "-t", "ed25519", "127.0.0.1"],
        );
        if text.contains("ssh-ed25519") {
            break text;
        }
        if scan_started.elapsed() > Duration::from_secs(180) {
            guest.fail(&format!("ssh-keyscan got no key: {text}"));
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let scanned_file = dir.join("scanned");
    std::fs::write(&scanned_file, &scanned).unwrap();
    let (ok, listed) = run("ssh-keygen", &["-l", "-f", scanned_file.to_str().unwrap()]);
    assert!(ok, "ssh-keygen -l: {listed}");
    let fingerprint = listed
        .split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("no fingerprint in {listed}"))
        .to_string();

    let docker_config = dir.join("docker-config");
    let uvmkit_config = dir.join("uvmkit-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    std::fs::write(docker_config.join("config.json"), "{}\n").unwrap();
    let (ssh_port_s, docker_port_s) = (ssh_port.to_string(), docker_port.to_string());
    let common = [
        "127.0.0.1",
        "--port",
        &ssh_port_s,
        "--docker-port",
        &docker_port_s,
        "--identity",
        key.to_str().unwrap(),
        "--name",
        "test-vm",
        "--shell",
        "bash",
    ];

    // A wrong fingerprint: refused, clearly, and nothing written anywhere.
    let before = (tree(&docker_config), tree(&uvmkit_config));
    let wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let mut args = common.to_vec();
    args.extend(["--fingerprint", wrong]);
    let refused = connect(&docker_config, &uvmkit_config, &args);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "wrong fingerprint: {stderr}");
    assert!(
        stderr.contains(&format!("do not include --fingerprint {wrong}")) && stderr.contains("Nothing was written"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&fingerprint),
        "the refusal does not show the key offered: {stderr}"
    );
    assert!(refused.stdout.is_empty());
    assert_eq!(
        (tree(&docker_config), tree(&uvmkit_config)),
        before,
        "a refused connect wrote something"
    );

    // The right one: a context, and the first answered `docker version`.
    let started = Instant::now();
    let mut args = common.to_vec();
    args.extend(["--fingerprint", &fingerprint]);
    let done = connect(&docker_config, &uvmkit_config, &args);
    let stderr = String::from_utf8_lossy(&done.stderr);
    if !done.status.success() {
        guest.fail(&format!("uvmkit connect failed: {stderr}"));
    }
    let connected = started.elapsed().as_secs_f64();
    let version = loop {
        let out = docker(
            &docker_config,
            &["--context", "test-vm", "version", "--format", "{{.Server.Os}}"],
        );
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        if started.elapsed() > Duration::from_secs(120) {
            guest.fail(&format!(
                "docker --context test-vm version: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let answered = started.elapsed().as_secs_f64();
    assert_eq!(version.trim(), "linux");
    eprintln!("uvmkit connect took {connected:.1}s; first docker version answered {answered:.1}s after it started");
    let env_lines = String::from_utf8_lossy(&done.stdout).into_owned();
    assert!(
        env_lines.starts_with(&format!("export DOCKER_HOST='tcp://127.0.0.1:{docker_port}'\n")),
        "{env_lines}"
    );

    // The context's TLS files are the CLI's, key private.
    let id = {
        let (_, text) = run("sh", &["-c", "printf %s test-vm | sha256sum"]);
        text.split_whitespace().next().unwrap().to_string()
    };
    let meta = std::fs::read_to_string(docker_config.join(format!("contexts/meta/{id}/meta.json"))).unwrap();
    assert!(
        meta.contains(&format!(
            "\"Host\":\"tcp://127.0.0.1:{docker_port}\",\"SkipTLSVerify\":false"
        )),
        "{meta}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let key_file = docker_config.join(format!("contexts/tls/{id}/docker/key.pem"));
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    // `docker context use`, then plain docker commands.
    let out = docker(&docker_config, &["context", "use", "test-vm"]);
    assert!(
        out.status.success(),
        "docker context use: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = docker(&docker_config, &["ps", "--format", "{{.ID}}"]);
    assert!(
        out.status.success(),
        "docker ps: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The printed lines, applied by a shell, reach the engine too (the default context again).
    let out = docker(&docker_config, &["context", "use", "default"]);
    assert!(out.status.success());
    std::fs::write(dir.join("env.sh"), &env_lines).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            ". {}/env.sh && docker version --format '{{{{.Server.Os}}}}'",
            dir.display()
        ))
        .env("DOCKER_CONFIG", &docker_config)
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "linux",
        "docker with the printed environment: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Again without --fingerprint: the pinned key is trusted, no first-use warning.
    let again = connect(&docker_config, &uvmkit_config, &common);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "second connect: {stderr}");
    assert!(!stderr.contains("first use"), "{stderr}");
    let pin = std::fs::read_to_string(uvmkit_config.join("known_hosts/test-vm")).unwrap();
    assert!(pin.starts_with("test-vm ssh-ed25519 "), "{pin}");
    guest.kill();
}
