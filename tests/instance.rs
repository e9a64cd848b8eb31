//! One image, many VMs: `images/docker.toml` built once, with no SSH key of its own, booted as
//! two VMs in parallel, each with its own settings volume made by independent tools (a FAT disk
//! from `mkfs.vfat -n UVMKIT-CFG` and `mcopy`, an ISO 9660 CD from `xorriso -V UVMKIT-CFG`):
//!
//! - each VM takes its host name, its user's SSH key and a static address on a second NIC (a
//!   host-only segment between the two, over QEMU socket netdevs) from its volume and logs each
//!   override on the console; each user logs in with their own key only;
//! - the first VM's volume names a client CA the test makes: a client certificate it signed is
//!   accepted by that VM's dockerd (`docker --tlsverify`) and refused by the other's, while the
//!   VM's own client bundle still works;
//! - the fingerprints on the console are the ones the host sees (`ssh-keyscan` and
//!   `ssh-keygen -lf`; `openssl x509 -fingerprint -sha256` of the CA);
//! - the second VM boots again with a corrupt volume (bad TOML): the console names the file and
//!   line, and the VM comes up with the image's defaults.

mod common;

use common::*;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const READY: &str = "uvmkit-init: ready";
/// Boot to the ready marker, services included, under TCG on a loaded two-core machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Guest memory: the root file system is a tmpfs holding the whole initrd.
const MEMORY_MIB: u32 = 2048;

/// The one build of the shipped Docker definition.
struct Built {
    dir: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    /// The docker client: the host's.
    docker: PathBuf,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = test_dir("instance-build");
        let out = dir.join("out");
        let started = Instant::now();
        let definition = repo_root().join("images/docker.toml");
        uvmkit_ok(&[
            "build",
            definition.to_str().unwrap(),
            "--format",
            "efi",
            "--quiet",
            "-o",
            out.to_str().unwrap(),
        ]);
        eprintln!("docker image built in {:.1}s", started.elapsed().as_secs_f64());
        assert!(have("docker"), "the docker client is needed (tests/install-deps.sh)");
        Built {
            kernel: out.join("docker-kernel"),
            initrd: out.join("docker-initrd.img"),
            dir,
            docker: PathBuf::from("docker"),
        }
    })
}

/// Runs a tool the test needs; panics with its output when it fails.
fn tool(cmd: &str, args: &[&str]) -> String {
    let (ok, text) = run(cmd, args);
    assert!(ok, "{cmd} {args:?}: {text}");
    text
}

/// A user of one VM: an SSH key pair.
struct User {
    key: PathBuf,
    public: String,
}

fn user(dir: &Path, name: &str) -> User {
    let key = dir.join(format!("{name}_ed25519"));
    let public = ssh_keygen(&key, name);
    User { key, public }
}

/// A CA made with openssl, as a user's company would have one, and a client certificate it
/// signed: (CA certificate, client certificate, client key).
fn client_ca_and_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    tool(
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
            "/CN=user client CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &p("user-ca-key.pem"),
            "-out",
            &p("user-ca.pem"),
        ],
    );
    tool(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=user",
            "-keyout",
            &p("user-key.pem"),
            "-out",
            &p("user.csr"),
        ],
    );
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    tool(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &p("user.csr"),
            "-CA",
            &p("user-ca.pem"),
            "-CAkey",
            &p("user-ca-key.pem"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p("client.ext"),
            "-out",
            &p("user-cert.pem"),
        ],
    );
    (
        dir.join("user-ca.pem"),
        dir.join("user-cert.pem"),
        dir.join("user-key.pem"),
    )
}

/// A FAT settings volume made by dosfstools and mtools, holding `files` (name, source).
fn fat_volume(dir: &Path, files: &[(&str, &Path)]) -> PathBuf {
    let image = dir.join("settings.img");
    let _ = std::fs::remove_file(&image);
    tool(
        "mkfs.vfat",
        &["-C", "-n", "UVMKIT-CFG", image.to_str().unwrap(), "2048"],
    );
    for (name, source) in files {
        tool(
            "mcopy",
            &[
                "-i",
                image.to_str().unwrap(),
                source.to_str().unwrap(),
                &format!("::{name}"),
            ],
        );
    }
    tool("fsck.fat", &["-n", image.to_str().unwrap()]);
    image
}

/// An ISO 9660 settings volume made by xorriso (Rock Ridge and Joliet names), holding `files`.
fn iso_volume(dir: &Path, files: &[(&str, &Path)]) -> PathBuf {
    let tree = dir.join("settings-tree");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree).unwrap();
    for (name, source) in files {
        std::fs::copy(source, tree.join(name)).unwrap();
    }
    let image = dir.join("settings.iso");
    let _ = std::fs::remove_file(&image);
    tool(
        "xorriso",
        &[
            "-as",
            "mkisofs",
            "-quiet",
            "-V",
            "UVMKIT-CFG",
            "-r",
            "-J",
            "-o",
            image.to_str().unwrap(),
            tree.to_str().unwrap(),
        ],
    );
    image
}

/// A TCP port on 127.0.0.1 that is free now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One booted VM with its forwarded ports.
struct Vm {
    guest: Guest,
    ssh_port: u16,
    docker_port: u16,
    dir: PathBuf,
}

/// Boots the image's kernel and initrd with a blank data disk, user networking forwarding SSH
/// and Docker, and `extra` QEMU arguments (the settings volume, a second NIC).
fn boot(dir: &Path, extra: &[String]) -> Vm {
    let b = built();
    let disk = dir.join("data.raw");
    if !disk.exists() {
        std::fs::File::create(&disk).unwrap().set_len(2 << 30).unwrap();
    }
    let (ssh_port, docker_port) = (free_port(), free_port());
    let mut args = vec![
        "-kernel".to_string(),
        b.kernel.display().to_string(),
        "-initrd".to_string(),
        b.initrd.display().to_string(),
        "-append".to_string(),
        "console=ttyS0".to_string(),
        "-drive".to_string(),
        format!("if=virtio,format=raw,file={}", disk.display()),
        "-netdev".into(),
        format!("user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22,hostfwd=tcp:127.0.0.1:{docker_port}-:2376"),
        "-device".into(),
        "virtio-net-pci,netdev=net0".into(),
    ];
    args.extend(extra.iter().cloned());
    // A second boot in the same directory must not find the first boot's ready marker.
    let _ = std::fs::remove_file(dir.join("serial.log"));
    let mut guest = Guest::start_with_memory(dir, MEMORY_MIB, &args);
    let ready = guest.wait_for(READY, BOOT_TIMEOUT);
    eprintln!("{}: ready after {ready:.1}s", dir.display());
    Vm {
        guest,
        ssh_port,
        docker_port,
        dir: dir.to_path_buf(),
    }
}

impl Vm {
    /// Runs `command` in the VM as root over SSH with `key`.
    fn ssh_status(&self, key: &Path, command: &str) -> Output {
        Command::new("ssh")
            .args([
                "-i",
                key.to_str().unwrap(),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
            ])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "ConnectTimeout=20",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.dir.join("known_hosts").display()))
            .args(["-p", &self.ssh_port.to_string(), "root@127.0.0.1", command])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Like [`Vm::ssh_status`], failing with the console log when the command fails.
    fn ssh(&mut self, key: &Path, command: &str) -> String {
        let out = self.ssh_status(key, command);
        if !out.status.success() {
            self.guest.fail(&format!(
                "ssh {command:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `docker --tlsverify ... version` against the VM with these TLS files.
    fn docker_version(&self, ca: &Path, cert: &Path, key: &Path) -> Output {
        Command::new(&built().docker)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_TLS_VERIFY")
            .env("DOCKER_CONFIG", self.dir.join("docker-config"))
            .arg("--tlsverify")
            .arg(format!("--tlscacert={}", ca.display()))
            .arg(format!("--tlscert={}", cert.display()))
            .arg(format!("--tlskey={}", key.display()))
            .args(["-H", &format!("tcp://127.0.0.1:{}", self.docker_port)])
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Copies a file out of the VM over SSH.
    fn fetch(&mut self, key: &Path, path: &str, to: &Path) {
        let text = self.ssh(key, &format!("cat {path}"));
        std::fs::write(to, text).unwrap();
    }

    /// Checks that the console's fingerprints are the ones the host sees; `key` logs in.
    fn check_fingerprints(&mut self, key: &Path) {
        let log = self.guest.log();
        let (ok, scanned) = run(
            "ssh-keyscan",
            &["-p", &self.ssh_port.to_string(), "-t", "ed25519,ecdsa", "127.0.0.1"],
        );
        assert!(ok, "ssh-keyscan: {scanned}");
        let keys = self.dir.join("scanned_keys");
        std::fs::write(&keys, &scanned).unwrap();
        let listed = tool("ssh-keygen", &["-lf", keys.to_str().unwrap()]);
        for (kind, console_name) in [("ED25519", "ssh ed25519 host key"), ("ECDSA", "ssh ecdsa host key")] {
            let host = listed
                .lines()
                .find(|l| l.ends_with(&format!("({kind})")))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or_else(|| panic!("no {kind} key in {listed}"));
            let console = log
                .lines()
                .rfind(|l| l.contains(console_name))
                .unwrap_or_else(|| panic!("no {console_name:?} line on the console:\n{log}"));
            assert!(
                console.contains(&format!("({host})")),
                "{kind}: host sees {host}, console says {console}"
            );
        }
        let ca = self.dir.join("vm-ca.pem");
        self.fetch(key, "/var/lib/uvmkit/identity/tls/ca.pem", &ca);
        let openssl = tool(
            "openssl",
            &["x509", "-noout", "-fingerprint", "-sha256", "-in", ca.to_str().unwrap()],
        );
        let fingerprint = openssl.trim().rsplit('=').next().unwrap();
        assert!(
            log.lines()
                .any(|l| l.contains("identity: tls CA") && l.contains(fingerprint)),
            "the console does not give the CA fingerprint {fingerprint}:\n{log}"
        );
    }
}

/// Asserts that every line of `expected` is on the console.
fn assert_console(vm: &mut Vm, expected: &[String]) {
    let log = vm.guest.log();
    for line in expected {
        if !log.contains(line.as_str()) {
            vm.guest.fail(&format!("no {line:?} on the console"));
        }
    }
}

#[test]
fn two_vms_of_one_image_take_their_own_settings_and_a_corrupt_volume_changes_nothing() {
    let b = built();
    let dir = b.dir.join("vms");
    std::fs::create_dir_all(&dir).unwrap();
    let (alice, bob) = (user(&dir, "alice"), user(&dir, "bob"));
    let (user_ca, user_cert, user_key) = client_ca_and_certificate(&dir);
    let segment = free_port();

    // VM A: a FAT disk, a client CA and an engine setting.
    let dir_a = test_dir("instance-vm-a");
    let settings_a = dir_a.join("uvmkit.toml");
    std::fs::write(
        &settings_a,
        format!(
            "hostname = \"vm-a\"\n\n[ssh]\nauthorized_keys = [{:?}]\n\n[[network.interfaces]]\n\
             mac = \"52:54:00:77:00:0a\"\naddress = \"192.168.77.10/24\"\n\n[docker]\ndebug = true\n\n\
             [tls]\nclient_ca = \"client-ca.pem\"\n",
            alice.public
        ),
    )
    .unwrap();
    let volume_a = fat_volume(&dir_a, &[("uvmkit.toml", &settings_a), ("client-ca.pem", &user_ca)]);
    let extra_a = vec![
        "-drive".to_string(),
        format!("if=virtio,format=raw,readonly=on,file={}", volume_a.display()),
        "-netdev".into(),
        format!("socket,id=net1,listen=127.0.0.1:{segment}"),
        "-device".into(),
        "virtio-net-pci,netdev=net1,mac=52:54:00:77:00:0a".into(),
    ];

    // VM B: an ISO on a CD drive, no client CA.
    let dir_b = test_dir("instance-vm-b");
    let settings_b = dir_b.join("uvmkit.toml");
    std::fs::write(
        &settings_b,
        format!(
            "hostname = \"vm-b\"\n\n[ssh]\nauthorized_keys = [{:?}]\n\n[[network.interfaces]]\n\
             mac = \"52:54:00:77:00:0b\"\naddress = \"192.168.77.11/24\"\n",
            bob.public
        ),
    )
    .unwrap();
    let volume_b = iso_volume(&dir_b, &[("uvmkit.toml", &settings_b)]);
    let extra_b = vec![
        "-drive".to_string(),
        format!("if=ide,index=1,media=cdrom,file={}", volume_b.display()),
        "-netdev".into(),
        format!("socket,id=net1,connect=127.0.0.1:{segment}"),
        "-device".into(),
        "virtio-net-pci,netdev=net1,mac=52:54:00:77:00:0b".into(),
    ];

    let a = std::thread::spawn({
        let (dir_a, key) = (dir_a.clone(), alice.key.clone());
        move || {
            let mut vm = boot(&dir_a, &extra_a);
            let bundle = dir_a.join("client");
            std::fs::create_dir_all(&bundle).unwrap();
            for file in ["ca.pem", "cert.pem", "key.pem"] {
                vm.fetch(
                    &key,
                    &format!("/var/lib/uvmkit/identity/tls/client/{file}"),
                    &bundle.join(file),
                );
            }
            vm
        }
    });
    // B connects to A's end of the segment, which A's QEMU opens as it starts.
    std::thread::sleep(Duration::from_secs(3));
    let mut vm_b = boot(&dir_b, &extra_b);
    let mut vm_a = a.join().unwrap_or_else(|_| panic!("VM A did not boot"));

    // Each VM logs its overrides and took its own host name and key.
    assert_console(
        &mut vm_a,
        &[
            "instance: settings from uvmkit.toml on /dev/vdb (vfat)".into(),
            "instance: hostname docker -> vm-a".into(),
            "instance: network 52:54:00:77:00:0a 192.168.77.10/24 (added)".into(),
            "instance: docker debug (unset) -> true".into(),
            "instance: dockerd --tlscacert /var/lib/uvmkit/identity/tls/ca.pem -> /run/uvmkit/docker-client-ca.pem"
                .into(),
            "instance: dockerd accepts clients of the VM's CA and 1 more CA(s): CN=user client CA".into(),
            "alice (added to /root/.ssh/authorized_keys)".into(),
        ],
    );
    assert_console(
        &mut vm_b,
        &[
            "instance: settings from uvmkit.toml on /dev/sr0 (iso9660)".into(),
            "instance: hostname docker -> vm-b".into(),
            "instance: network 52:54:00:77:00:0b 192.168.77.11/24 (added)".into(),
            "bob (added to /root/.ssh/authorized_keys)".into(),
        ],
    );
    assert_eq!(vm_a.ssh(&alice.key, "hostname").trim(), "vm-a");
    assert_eq!(vm_b.ssh(&bob.key, "hostname").trim(), "vm-b");
    assert!(
        !vm_a.ssh_status(&bob.key, "true").status.success(),
        "bob's key logs into vm-a"
    );
    assert!(
        !vm_b.ssh_status(&alice.key, "true").status.success(),
        "alice's key logs into vm-b"
    );
    let daemon_json = vm_a.ssh(&alice.key, "cat /etc/docker/daemon.json");
    assert!(
        daemon_json.contains("\"debug\": true"),
        "daemon.json of vm-a: {daemon_json}"
    );

    // The user's client certificate: accepted by A, refused by B; A's own bundle still works.
    let bundle = dir_a.join("client");
    let own = vm_a.docker_version(
        &bundle.join("ca.pem"),
        &bundle.join("cert.pem"),
        &bundle.join("key.pem"),
    );
    assert!(own.status.success(), "vm-a refuses its own client bundle: {own:?}");
    let started = Instant::now();
    let accepted = vm_a.docker_version(&bundle.join("ca.pem"), &user_cert, &user_key);
    assert!(
        accepted.status.success() && !accepted.stdout.is_empty(),
        "vm-a refuses the user's client certificate: {}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    eprintln!(
        "vm-a: docker version with the user's own certificate answered in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let ca_b = dir_b.join("vm-ca.pem");
    vm_b.fetch(&bob.key, "/var/lib/uvmkit/identity/tls/ca.pem", &ca_b);
    let refused = vm_b.docker_version(&ca_b, &user_cert, &user_key);
    assert!(
        !refused.status.success(),
        "vm-b accepts a client of a CA it was never given"
    );

    // The fingerprints on the console are the ones the host sees.
    vm_a.check_fingerprints(&alice.key);
    vm_b.check_fingerprints(&bob.key);
    drop(vm_a);

    // B again, its volume now corrupt: named on the console, and the image's defaults apply.
    vm_b.guest.kill();
    let corrupt = dir_b.join("corrupt.toml");
    std::fs::write(
        &corrupt,
        "hostname = \"vm-b\"\n\n[ssh]\nauthorized_keys = [\"ssh-ed25519\nAAAA\"]\n",
    )
    .unwrap();
    let corrupt_volume = fat_volume(&dir_b, &[("uvmkit.toml", &corrupt)]);
    let mut again = boot(
        &dir_b,
        &[
            "-drive".to_string(),
            format!("if=virtio,format=raw,readonly=on,file={}", corrupt_volume.display()),
        ],
    );
    let log = again.guest.log();
    let named = log
        .lines()
        .find(|l| l.contains("instance: uvmkit.toml line 4, column"))
        .map(str::to_string);
    let Some(named) = named else {
        again.guest.fail("the console does not name uvmkit.toml line 4");
    };
    eprintln!("corrupt volume: {named}");
    assert_console(
        &mut again,
        &[
            "instance: settings volume /dev/vdb not used; booting with the image's settings".into(),
            "service dockerd ready".into(),
        ],
    );
    for applied in ["instance: hostname", "instance: ssh key", "instance: settings from"] {
        assert!(!log.contains(applied), "a corrupt volume applied {applied:?}:\n{log}");
    }
    assert!(
        !again.ssh_status(&bob.key, "true").status.success(),
        "a key from the corrupt volume logs in"
    );
}
