//! Helpers shared by the integration and boot tests: running the `uvmkit` binary as a user
//! would, and booting what it writes in QEMU (TCG: KVM does not work on the test machines).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// `SOURCE_DATE_EPOCH` every test build uses.
pub const EPOCH: &str = "1700000000";

/// The `uvmkit` binary under test.
pub fn uvmkit_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_uvmkit"))
}

/// The repository's top directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A cache shared by every test binary of one `cargo test` run, so inputs are fetched once.
pub fn shared_cache() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("uvmkit-cache");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh directory for one test.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `uvmkit ARGS` with the shared cache and a fixed `SOURCE_DATE_EPOCH`.
pub fn uvmkit(args: &[&str]) -> Output {
    Command::new(uvmkit_bin())
        .args(args)
        .env("UVMKIT_CACHE", shared_cache())
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .expect("run uvmkit")
}

/// Like [`uvmkit`], panicking with its output when it fails.
pub fn uvmkit_ok(args: &[&str]) -> String {
    let out = uvmkit(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "uvmkit {args:?} failed ({}):\n{stderr}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &stderr
}

/// True when `tool` is on PATH; otherwise prints why a check is skipped.
pub fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        eprintln!("note: {tool} is not installed; run tests/install-deps.sh (skipping this check)");
    }
    found
}

/// A fresh ed25519 SSH key pair without a passphrase at `path` and `path.pub`, with `comment`;
/// returns the public key line.
pub fn ssh_keygen(path: &Path, comment: &str) -> String {
    let (ok, text) = run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            comment,
            "-f",
            path.to_str().unwrap(),
        ],
    );
    assert!(ok, "ssh-keygen: {text}");
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// Runs a command and returns (success, stdout + stderr).
pub fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// At most two guests at once: the test machines have two cores, and TCG is single-threaded
/// per guest.
static SLOTS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());
const MAX_GUESTS: usize = 2;

struct Slot;
impl Slot {
    fn take() -> Slot {
        let (lock, cv) = &SLOTS;
        let mut n = lock.lock().unwrap();
        while *n >= MAX_GUESTS {
            n = cv.wait(n).unwrap();
        }
        *n += 1;
        Slot
    }
}
impl Drop for Slot {
    fn drop(&mut self) {
        let (lock, cv) = &SLOTS;
        *lock.lock().unwrap() -= 1;
        cv.notify_one();
    }
}

/// OVMF firmware arguments with a private copy of the variable store.
pub fn ovmf_args(dir: &Path) -> Vec<String> {
    let vars = dir.join("OVMF_VARS.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("OVMF installed (tests/install-deps.sh)");
    vec![
        "-drive".into(),
        "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
        "-drive".into(),
        format!("if=pflash,format=raw,file={}", vars.display()),
    ]
}

/// A running guest whose serial console goes to a file.
pub struct Guest {
    child: Child,
    serial: PathBuf,
    monitor: PathBuf,
    started: Instant,
    _slot: Slot,
}

impl Guest {
    /// Starts `qemu-system-x86_64 -accel tcg` with 1 GiB of memory, `args`, a serial log and a
    /// monitor socket in `dir`.
    pub fn start(dir: &Path, args: &[String]) -> Guest {
        Guest::start_with_memory(dir, 1024, args)
    }

    /// Like [`Guest::start`] with `memory_mib` MiB of guest memory.
    pub fn start_with_memory(dir: &Path, memory_mib: u32, args: &[String]) -> Guest {
        let slot = Slot::take();
        let serial = dir.join("serial.log");
        let monitor = dir.join("monitor.sock");
        let _ = std::fs::remove_file(&monitor);
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-accel",
            "tcg",
            "-m",
            &memory_mib.to_string(),
            "-smp",
            "1",
            "-nographic",
            "-no-reboot",
            "-nodefaults",
        ])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-monitor")
        .arg(format!("unix:{},server,nowait", monitor.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .expect("qemu-system-x86_64 installed (tests/install-deps.sh)");
        Guest {
            child,
            serial,
            monitor,
            started: Instant::now(),
            _slot: slot,
        }
    }

    /// The serial output so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.serial)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Kills QEMU and panics with `why`, its stderr and the last serial lines.
    pub fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let log = self.log();
        let tail: String = log
            .lines()
            .rev()
            .take(80)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        panic!(
            "{why} after {:.1}s\n--- qemu stderr ---\n{err}\n--- last serial lines ---\n{tail}",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Waits until the serial log contains `marker`; returns seconds since start.
    pub fn wait_for(&mut self, marker: &str, timeout: Duration) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(marker) {
                return self.started.elapsed().as_secs_f64();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.fail(&format!("QEMU exited ({status}) before printing {marker:?}"));
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "no {marker:?} on the serial console within {}s",
                    timeout.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends a command to the QEMU monitor.
    pub fn monitor(&mut self, command: &str) {
        let mut s = UnixStream::connect(&self.monitor).unwrap_or_else(|e| self.fail(&format!("monitor: {e}")));
        s.write_all(format!("{command}\n").as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Seconds since QEMU started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Kills QEMU at once, as a power cut would stop the machine.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for QEMU to exit by itself; returns seconds waited.
    pub fn wait_exit(&mut self, timeout: Duration) -> f64 {
        let t0 = Instant::now();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return t0.elapsed().as_secs_f64();
            }
            if t0.elapsed() > timeout {
                self.fail(&format!("QEMU did not exit within {}s", timeout.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port on 127.0.0.1 that is free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes a `docker save` archive (manifest.json, image config, one layer) tagged `tag`, holding
/// the static `busybox` as /bin/busybox with links for `applets`. Deterministic.
pub fn write_busybox_archive(busybox: &Path, applets: &[&str], tag: &str, out: &Path) {
    use sha2::{Digest, Sha256};
    fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).unwrap();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        h
    }
    let binary = std::fs::read(busybox).unwrap();
    let mut layer = tar::Builder::new(Vec::new());
    for dir in ["bin/", "tmp/"] {
        layer
            .append(&header(dir, tar::EntryType::Directory, 0o755, 0), std::io::empty())
            .unwrap();
    }
    let h = header("bin/busybox", tar::EntryType::Regular, 0o755, binary.len() as u64);
    layer.append(&h, binary.as_slice()).unwrap();
    for applet in applets {
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
    })
    .to_string();
    let config_id = hex::encode(Sha256::digest(config.as_bytes()));
    let manifest = serde_json::json!([{
        "Config": format!("{config_id}.json"),
        "RepoTags": [tag],
        "Layers": [format!("{layer_id}/layer.tar")],
    }])
    .to_string();
    let mut archive = tar::Builder::new(std::fs::File::create(out).unwrap());
    for (path, bytes) in [
        (format!("{layer_id}/layer.tar"), layer.as_slice()),
        (format!("{config_id}.json"), config.as_bytes()),
        ("manifest.json".to_string(), manifest.as_bytes()),
    ] {
        let h = header(&path, tar::EntryType::Regular, 0o644, bytes.len() as u64);
        archive.append(&h, bytes).unwrap();
    }
    archive.into_inner().unwrap().flush().unwrap();
}

/// The name of the system image inside a published initrd (the member the boot part is
/// followed by; see `builder/src/encode/system.rs`).
pub const SYSTEM_IMAGE_MEMBER: &str = "uvmkit-system.squashfs";

/// The published initrd split where the system image's uncompressed cpio member begins: the
/// zstd-compressed boot part (with its zero padding) and that member's newc header and body.
pub fn split_initrd(initrd: &[u8]) -> (&[u8], &[u8]) {
    let name = format!("{SYSTEM_IMAGE_MEMBER}\0");
    let at = initrd
        .windows(name.len())
        .position(|w| w == name.as_bytes())
        .unwrap_or_else(|| panic!("the initrd carries no {SYSTEM_IMAGE_MEMBER}"));
    let header = at - 110;
    assert_eq!(
        &initrd[header..header + 6],
        b"070701",
        "a newc header precedes the name"
    );
    assert_eq!(header % 4, 0, "the appended archive starts on a 4-byte boundary");
    (&initrd[..header], &initrd[header..])
}

/// The member names of a run of newc cpio archives (the kernel unpacks them one after the
/// other; `cpio` and `bsdtar` stop at the first `TRAILER!!!`), with the zero padding between
/// archives skipped. Panics on anything else.
pub fn newc_names(stream: &[u8]) -> Vec<String> {
    let field = |at: usize| {
        let text = std::str::from_utf8(&stream[at..at + 8]).unwrap();
        usize::from_str_radix(text, 16).unwrap()
    };
    let mut names = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        if stream[pos] == 0 {
            pos += 1;
            continue;
        }
        assert_eq!(&stream[pos..pos + 6], b"070701", "no newc header at byte {pos}");
        let (filesize, namesize) = (field(pos + 54), field(pos + 94));
        let name = String::from_utf8_lossy(&stream[pos + 110..pos + 110 + namesize - 1]).into_owned();
        pos = (pos + 110 + namesize).next_multiple_of(4);
        pos = (pos + filesize).next_multiple_of(4);
        if name != "TRAILER!!!" {
            names.push(name);
        }
    }
    names
}

/// The squashfs body of the system member: newc header (110 bytes), name padded to 4 bytes.
pub fn system_image_of(member: &[u8]) -> &[u8] {
    let size = usize::from_str_radix(std::str::from_utf8(&member[54..62]).unwrap(), 16).unwrap();
    let start = (110 + SYSTEM_IMAGE_MEMBER.len() + 1).next_multiple_of(4);
    &member[start..start + size]
}

/// Writes the system image (the image's whole root tree, squashfs) that the published initrd
/// `initrd` carries to `dest`, and returns `dest`.
pub fn write_system_image(initrd: &Path, dest: &Path) -> PathBuf {
    let bytes = std::fs::read(initrd).unwrap_or_else(|e| panic!("{}: {e}", initrd.display()));
    let (_, member) = split_initrd(&bytes);
    std::fs::write(dest, system_image_of(member)).unwrap();
    dest.to_path_buf()
}

/// The paths of a system image's tree, one a line and relative (as `bsdtar -tf` lists a
/// cpio), read by `unsquashfs`.
pub fn system_image_listing(image: &Path) -> String {
    let (ok, text) = run("unsquashfs", &["-l", "-d", "", image.to_str().unwrap()]);
    assert!(ok, "unsquashfs -l {}: {text}", image.display());
    text.lines()
        .filter_map(|l| l.strip_prefix('/'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Extracts `paths` (relative to the root) of the system image carried by `initrd` into
/// `dir`, with `unsquashfs`.
pub fn extract_from_initrd(initrd: &Path, dir: &Path, paths: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let image = write_system_image(initrd, &dir.join(".system.squashfs"));
    let mut args = vec!["-f", "-d", dir.to_str().unwrap(), image.to_str().unwrap()];
    args.extend_from_slice(paths);
    let (ok, text) = run("unsquashfs", &args);
    assert!(
        ok,
        "unsquashfs cannot take {paths:?} out of {}: {text}",
        initrd.display()
    );
    for path in paths {
        assert!(dir.join(path).exists(), "{} holds no {path}", initrd.display());
    }
    let _ = std::fs::remove_file(image);
}

/// The `ssh`/`scp` options every boot test uses: only `key`, no prompts, the VM's host key kept
/// in `dir/known_hosts` (each boot makes a new one), a bounded connect.
pub fn ssh_options(key: &Path, dir: &Path) -> Vec<String> {
    [
        "-i",
        key.to_str().unwrap(),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        &format!("UserKnownHostsFile={}", dir.join("known_hosts").display()),
        "-o",
        "ConnectTimeout=20",
        "-o",
        "LogLevel=ERROR",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// How a test reaches a booted VM as a user does: SSH as root and the Docker engine over TLS,
/// both on ports QEMU forwards from the host's loopback.
pub struct Reach {
    /// The private key the image authorises.
    pub key: PathBuf,
    /// The test's directory: known hosts, the fetched client bundle, the docker client's config.
    pub dir: PathBuf,
    /// The host port forwarded to the guest's 22.
    pub ssh_port: u16,
    /// The host port forwarded to the guest's 2376.
    pub docker_port: u16,
}

impl Reach {
    /// `ssh root@VM COMMAND`; panics with `guest`'s console log when it fails.
    pub fn ssh(&self, guest: &mut Guest, command: &str) -> String {
        let out = Command::new("ssh")
            .args(ssh_options(&self.key, &self.dir))
            .args(["-p", &self.ssh_port.to_string(), "root@127.0.0.1", command])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        stdout_or_fail(guest, &format!("ssh {command:?}"), &out)
    }

    /// Copies the Docker client bundle out with scp, as the README tells users to, into
    /// `dir/client`; panics unless it holds `ca.pem`, `cert.pem` and `key.pem`.
    pub fn fetch_client_bundle(&self, guest: &mut Guest) -> PathBuf {
        let to = self.dir.join("client");
        let _ = std::fs::remove_dir_all(&to);
        let out = Command::new("scp")
            .args(ssh_options(&self.key, &self.dir))
            .args(["-r", "-P", &self.ssh_port.to_string()])
            .args([
                "root@127.0.0.1:/var/lib/uvmkit/identity/tls/client",
                to.to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        stdout_or_fail(guest, "scp of the client bundle", &out);
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            assert!(to.join(file).is_file(), "the client bundle has no {file}");
        }
        to
    }

    /// The docker client `program` aimed at the VM's engine with the flags `tls`, with a
    /// config directory of its own and none of the caller's `DOCKER_*` settings.
    pub fn docker_command(&self, program: &Path, tls: &[String]) -> Command {
        let mut command = Command::new(program);
        command
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_TLS_VERIFY")
            .env("DOCKER_CONFIG", self.dir.join("docker-config"))
            .args(tls)
            .args(["-H", &format!("tcp://127.0.0.1:{}", self.docker_port)])
            .stdin(Stdio::null());
        command
    }

    /// `docker ARGS` with the client bundle at `bundle`; panics with the console log on failure.
    pub fn docker(&self, guest: &mut Guest, program: &Path, bundle: &Path, args: &[&str]) -> String {
        let out = self
            .docker_command(program, &bundle_tls_flags(bundle))
            .args(args)
            .output()
            .unwrap();
        stdout_or_fail(guest, &format!("docker {args:?}"), &out)
    }
}

/// The docker client's TLS flags: verify the engine against `bundle/ca.pem`, present `cert`.
pub fn tls_flags(bundle: &Path, cert: &Path, key: &Path) -> Vec<String> {
    vec![
        "--tlsverify".into(),
        format!("--tlscacert={}", bundle.join("ca.pem").display()),
        format!("--tlscert={}", cert.display()),
        format!("--tlskey={}", key.display()),
    ]
}

/// [`tls_flags`] with the bundle's own certificate and key.
pub fn bundle_tls_flags(bundle: &Path) -> Vec<String> {
    tls_flags(bundle, &bundle.join("cert.pem"), &bundle.join("key.pem"))
}

/// The standard output of a command that must have succeeded; otherwise fails the test with
/// `guest`'s console log, naming `what`.
pub fn stdout_or_fail(guest: &mut Guest, what: &str, out: &Output) -> String {
    if !out.status.success() {
        guest.fail(&format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}
