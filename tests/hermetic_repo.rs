//! Resolution from a Debian-style repository made and served by the test itself, on
//! 127.0.0.1: signed with a test key, holding packages the test builds with `dpkg-deb`. No
//! network beyond loopback; a second suite, its security archive, is served as a second mirror.
//! Also: a checksum mismatch, a bad signature, a suite claiming to be another and an unreachable
//! mirror each fail with a clear message and the fetch-failure exit code.

mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const RELEASE: &str = "6.1.0-test-amd64";

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A relocatable ELF object with a `.modinfo` section, as a kernel module has.
fn fake_module(name: &str, depends: &str) -> Vec<u8> {
    use object::write::Object;
    use object::{Architecture, BinaryFormat, Endianness, SectionKind};
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let id = obj.add_section(vec![], b".modinfo".to_vec(), SectionKind::ReadOnlyData);
    obj.append_section_data(
        id,
        format!("license=GPL\0depends={depends}\0name={name}\0").as_bytes(),
        1,
    );
    obj.write().unwrap()
}

/// Builds `NAME_VERSION_amd64.deb` from `root` (which gets DEBIAN/control) with dpkg-deb.
fn build_deb(
    work: &Path,
    name: &str,
    version: &str,
    depends: Option<&str>,
    files: &[(&str, Vec<u8>, u32)],
    links: &[(&str, &str)],
) -> PathBuf {
    let root = work.join(format!("src-{name}"));
    for (path, bytes, mode) in files {
        let p = root.join(path.trim_start_matches('/'));
        write(&p, bytes);
        std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(&p).unwrap().permissions(), *mode);
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(*mode)).unwrap();
    }
    for (path, target) in links {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, &p).unwrap();
    }
    let mut control = format!("Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: Test <test@example.org>\nDescription: test package {name}\n");
    if let Some(d) = depends {
        control.push_str(&format!("Depends: {d}\n"));
    }
    write(&root.join("DEBIAN/control"), control);
    let deb = work.join(format!("pool/{name}_{version}_amd64.deb"));
    std::fs::create_dir_all(deb.parent().unwrap()).unwrap();
    let out = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&root)
        .arg(&deb)
        .output()
        .expect("dpkg-deb");
    assert!(
        out.status.success(),
        "dpkg-deb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    deb
}

fn stanza(deb: &Path, name: &str, version: &str, depends: Option<&str>, sha_override: Option<&str>) -> String {
    let bytes = std::fs::read(deb).unwrap();
    let sha = sha_override
        .map(str::to_string)
        .unwrap_or_else(|| hex::encode(Sha256::digest(&bytes)));
    let mut s = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: Test <test@example.org>\nFilename: pool/{}\nSize: {}\nSHA256: {sha}\nDescription: test package {name}\n",
        deb.file_name().unwrap().to_str().unwrap(),
        bytes.len()
    );
    if let Some(d) = depends {
        s.push_str(&format!("Depends: {d}\n"));
    }
    s.push('\n');
    s
}

/// The host's copy of a library the test's dynamic program needs.
fn host_lib(name: &str) -> Vec<u8> {
    for dir in ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64"] {
        if let Ok(b) = std::fs::read(Path::new(dir).join(name)) {
            return b;
        }
    }
    panic!("host has no {name}");
}

/// The host's UKI stub (Debian's `systemd-boot-efi`).
const HOST_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// The fixture's kernel image: with `bootable_header`, 4 KiB carrying the x86 setup header's
/// `boot_flag` and `HdrS` magic (Documentation/arch/x86/boot.rst) that a UKI requires.
fn fake_kernel(bootable_header: bool) -> Vec<u8> {
    if !bootable_header {
        return b"not a real kernel".to_vec();
    }
    let mut k = vec![0u8; 4096];
    k[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k
}

struct Repo {
    dir: PathBuf,
    signer_keyring: PathBuf,
}

/// Makes the repository under `dir`. `tamper_hello` lists a wrong sha256 for one package;
/// `sign_with_other_key` signs InRelease with a key the keyring does not hold.
fn make_repo(dir: &Path, tamper_hello: bool, sign_with_other_key: bool) -> Repo {
    make_repo_with(dir, tamper_hello, sign_with_other_key, false)
}

/// [`make_repo`]; with `buildable`, the kernel starts with an x86 boot header and the
/// `systemd-boot-efi` package ships the host's real UKI stub, so an `efi` build succeeds.
fn make_repo_with(dir: &Path, tamper_hello: bool, sign_with_other_key: bool, buildable: bool) -> Repo {
    let work = dir.to_path_buf();
    let mut packages = String::new();
    // A dynamically linked program and the C library it loads.
    let true_bin = std::fs::read("/usr/bin/true").unwrap();
    let hello = build_deb(
        &work,
        "hello",
        "1.0-1",
        Some("libc6 (>= 2.30)"),
        &[
            ("/usr/bin/hello", true_bin, 0o755),
            ("/usr/share/doc/hello/README", b"docs".to_vec(), 0o644),
            ("/etc/hello.conf", b"greeting=hi\n".to_vec(), 0o644),
        ],
        &[],
    );
    packages += &stanza(
        &hello,
        "hello",
        "1.0-1",
        Some("libc6 (>= 2.30)"),
        tamper_hello.then_some("00".repeat(32).as_str()),
    );
    let libc = build_deb(
        &work,
        "libc6",
        "2.36-9",
        None,
        &[
            ("/lib/x86_64-linux-gnu/libc.so.6", host_lib("libc.so.6"), 0o755),
            (
                "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                host_lib("ld-linux-x86-64.so.2"),
                0o755,
            ),
        ],
        &[(
            "/lib64/ld-linux-x86-64.so.2",
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        )],
    );
    packages += &stanza(&libc, "libc6", "2.36-9", None, None);
    // A kernel package: modules with .modinfo dependencies, and a .config meeting the checks.
    let features = uvmkit::definition::kernel_config::selected(&[uvmkit::definition::Target::Qemu], &[]);
    let mut kconfig = String::new();
    let mut files: Vec<(String, Vec<u8>, u32)> =
        vec![(format!("/boot/vmlinuz-{RELEASE}"), fake_kernel(buildable), 0o644)];
    for f in &features {
        for (option, allowed) in &f.options {
            kconfig += &format!("{option}={}\n", if allowed.contains('m') { "m" } else { "y" });
        }
        for m in &f.modules.load {
            if m == "af_packet" {
                continue; // built in, below
            }
            let deps = if m == "virtio_blk" { "virtio,virtio_ring" } else { "" };
            files.push((
                format!("/lib/modules/{RELEASE}/kernel/drivers/{m}.ko"),
                fake_module(m, deps),
                0o644,
            ));
        }
    }
    files.push((
        format!("/lib/modules/{RELEASE}/kernel/drivers/virtio/virtio.ko"),
        fake_module("virtio", ""),
        0o644,
    ));
    files.push((
        format!("/lib/modules/{RELEASE}/kernel/drivers/virtio/virtio_ring.ko"),
        fake_module("virtio_ring", ""),
        0o644,
    ));
    files.push((
        format!("/lib/modules/{RELEASE}/modules.builtin"),
        b"kernel/net/packet/af_packet.ko\n".to_vec(),
        0o644,
    ));
    files.push((format!("/boot/config-{RELEASE}"), kconfig.into_bytes(), 0o644));
    let files_ref: Vec<(&str, Vec<u8>, u32)> = files.iter().map(|(p, b, m)| (p.as_str(), b.clone(), *m)).collect();
    let kernel = build_deb(
        &work,
        &format!("linux-image-{RELEASE}"),
        "6.1.1-1",
        Some("kmod, linux-base"),
        &files_ref,
        &[],
    );
    packages += &stanza(
        &kernel,
        &format!("linux-image-{RELEASE}"),
        "6.1.1-1",
        Some("kmod, linux-base"),
        None,
    );
    let meta = build_deb(
        &work,
        "linux-image-amd64",
        "6.1.1-1",
        Some(&format!("linux-image-{RELEASE} (= 6.1.1-1)")),
        &[],
        &[],
    );
    packages += &stanza(
        &meta,
        "linux-image-amd64",
        "6.1.1-1",
        Some(&format!("linux-image-{RELEASE} (= 6.1.1-1)")),
        None,
    );
    let stub = build_deb(
        &work,
        "systemd-boot-efi",
        "252-1",
        None,
        &[(
            "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
            if buildable {
                std::fs::read(HOST_STUB).unwrap()
            } else {
                b"MZ stub".to_vec()
            },
            0o644,
        )],
        &[],
    );
    packages += &stanza(&stub, "systemd-boot-efi", "252-1", None, None);

    let signer = uvmkit_debian::testing::TestSigner::generate(7);
    let other = uvmkit_debian::testing::TestSigner::generate(8);
    publish_suite(
        &work,
        "test",
        "test",
        &packages,
        if sign_with_other_key { &other } else { &signer },
    );
    let keyring = work.join("test-keyring.gpg");
    write(&keyring, signer.public_keyring_bytes());
    Repo {
        dir: work,
        signer_keyring: keyring,
    }
}

/// Writes `dists/SUITE/main/binary-amd64/Packages.xz` under `root` and an `InRelease` listing
/// it, signed by `signer`, whose `Suite:` and `Codename:` say `claims`.
fn publish_suite(root: &Path, suite: &str, claims: &str, packages: &str, signer: &uvmkit_debian::testing::TestSigner) {
    let index_dir = root.join(format!("dists/{suite}/main/binary-amd64"));
    write(&index_dir.join("Packages"), packages);
    let st = Command::new("xz")
        .args(["-k", "-f"])
        .arg(index_dir.join("Packages"))
        .status()
        .expect("xz");
    assert!(st.success());
    let xz = std::fs::read(index_dir.join("Packages.xz")).unwrap();
    let release = format!(
        "Origin: Test\nSuite: {claims}\nCodename: {claims}\nDate: Sat, 01 Jan 2000 00:00:00 UTC\nArchitectures: amd64\nComponents: main\nSHA256:\n {} {} main/binary-amd64/Packages.xz\n",
        hex::encode(Sha256::digest(&xz)),
        xz.len()
    );
    write(
        &root.join(format!("dists/{suite}/InRelease")),
        signer.clearsign(&release),
    );
}

/// The security archive of the test release, served from `REPO/security` as a second mirror:
/// `test-security` holding `hello` at `hello_version` (built anew, so its sha256 differs from
/// the release's), its InRelease signed by the release's key and claiming `claims`.
fn publish_security(repo: &Repo, hello_version: &str, claims: &str) {
    let work = repo.dir.join("security");
    let true_bin = std::fs::read("/usr/bin/true").unwrap();
    let hello = build_deb(
        &work,
        "hello",
        hello_version,
        Some("libc6 (>= 2.30)"),
        &[
            ("/usr/bin/hello", true_bin, 0o755),
            (
                "/etc/hello.conf",
                format!("fixed in {hello_version}\n").into_bytes(),
                0o644,
            ),
        ],
        &[],
    );
    let packages = stanza(&hello, "hello", hello_version, Some("libc6 (>= 2.30)"), None);
    let signer = uvmkit_debian::testing::TestSigner::generate(7);
    publish_suite(&work, "test-security", claims, &packages, &signer);
}

/// Serves `root` over HTTP on 127.0.0.1 until the test process ends; returns the base URL.
fn serve(root: PathBuf) -> String {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let port = server.server_addr().to_ip().unwrap().port();
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let rel = request.url().trim_start_matches('/').to_string();
            let path = root.join(&rel);
            let response = match (rel.contains(".."), std::fs::read(&path)) {
                (false, Ok(bytes)) => request.respond(tiny_http::Response::from_data(bytes)),
                _ => request.respond(tiny_http::Response::empty(404)),
            };
            let _ = response;
        }
    });
    format!("http://127.0.0.1:{port}")
}

fn definition(dir: &Path, mirror: &str, keyring: &Path) -> PathBuf {
    let def = format!(
        "name = \"hermetic\"\ntargets = [\"qemu\"]\nformats = [\"efi\"]\n[debian]\nsuite = \"test\"\nmirror = \"{mirror}\"\nkeyring = \"{}\"\n[[packages]]\nname = \"hello\"\n",
        keyring.display()
    );
    let path = dir.join("hermetic.toml");
    write(&path, def);
    path
}

/// [`definition`] drawing also from `test-security`, served at `MIRROR/security`.
fn definition_with_security(dir: &Path, mirror: &str, keyring: &Path) -> PathBuf {
    let path = definition(dir, mirror, keyring);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[debian]\n",
        &format!("[debian]\nsecurity = true\nsecurity_mirror = \"{mirror}/security\"\n"),
    );
    write(&path, text);
    path
}

/// The `[[package]]` entry of `name` in a lock file's text.
fn locked<'a>(lock: &'a str, name: &str) -> &'a str {
    lock.split("[[package]]")
        .find(|p| p.contains(&format!("name = \"{name}\"\n")))
        .unwrap_or_else(|| panic!("{name} is not in the lock:\n{lock}"))
}

fn run_with_cache(args: &[&str], cache: &Path) -> (i32, String) {
    let out = Command::new(uvmkit_bin())
        .args(args)
        .env("UVMKIT_CACHE", cache)
        .env_remove("UVMKIT_DEBIAN_MIRROR")
        .env_remove("UVMKIT_DEBIAN_SECURITY_MIRROR")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn resolves_fetches_and_inspects_a_signed_local_repository() {
    if !have("dpkg-deb") || !have("xz") {
        return;
    }
    let dir = test_dir("hermetic-ok");
    let repo = make_repo(&dir.join("repo"), false, false);
    let mirror = serve(repo.dir.clone());
    let def = definition(&dir, &mirror, &repo.signer_keyring);
    let cache = dir.join("cache");
    let (code, text) = run_with_cache(&["fetch", def.to_str().unwrap(), "--quiet"], &cache);
    assert_eq!(code, 0, "uvmkit fetch: {text}");
    assert!(text.contains("kernel 6.1.0-test-amd64"), "{text}");
    let (code, text) = run_with_cache(&["inspect", def.to_str().unwrap(), "--files", "--quiet"], &cache);
    assert_eq!(code, 0, "uvmkit inspect: {text}");
    // The kernel's dependencies on kmod and linux-base are not followed; hello's on libc6 is.
    for needle in [
        "hello",
        "libc6",
        "2.36-9",
        "linux-image-6.1.0-test-amd64",
        "systemd-boot-efi",
        "/usr/bin/hello",
        "/etc/hello.conf",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
        "virtio_blk",
        "virtio_ring",
    ] {
        assert!(text.contains(needle), "inspect output lacks {needle}:\n{text}");
    }
    assert!(!text.contains("/usr/share/doc/hello"), "docs were taken:\n{text}");
    let modules_line = text.lines().find(|l| l.starts_with("modules (")).unwrap();
    let pos = |m: &str| {
        modules_line
            .find(&format!(" {m}"))
            .unwrap_or_else(|| panic!("{m} not in {modules_line}"))
    };
    assert!(
        pos("virtio_ring") < pos("virtio_blk"),
        "dependencies must load first: {modules_line}"
    );
    assert!(text.contains("built in: af_packet"), "{text}");

    // A second run is served from the cache: no network at all.
    let (code, text) = run_with_cache(&["fetch", def.to_str().unwrap(), "--offline", "--quiet"], &cache);
    assert_eq!(code, 0, "offline fetch from a warm cache: {text}");

    // With the lock current and every pinned .deb cached, no mirror is looked up at all: an
    // unusable one in the definition does not matter (the mirror is not part of the lock).
    let lock = std::fs::read_to_string(dir.join("hermetic.lock")).unwrap();
    let pinned = std::fs::read_to_string(&def).unwrap();
    std::fs::write(&def, pinned.replace(&mirror, "ftp://no-such-mirror.invalid/debian")).unwrap();
    let (code, text) = run_with_cache(&["fetch", def.to_str().unwrap(), "--quiet"], &cache);
    assert_eq!(
        code, 0,
        "locked fetch from a warm cache with an unusable mirror: {text}"
    );
    assert!(text.contains("no mirror needed"), "{text}");
    assert_eq!(std::fs::read_to_string(dir.join("hermetic.lock")).unwrap(), lock);

    // Once a pinned .deb is missing, the mirror is needed: the error names the package and
    // the mirror's problem.
    let sha = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"hello\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("sha256 = \"")))
        .map(|l| l.trim_end_matches('"').to_string())
        .expect("hello's sha256 in the lock");
    std::fs::remove_file(cache.join("blobs/sha256").join(&sha[..2]).join(&sha)).unwrap();
    let (code, text) = run_with_cache(&["fetch", def.to_str().unwrap(), "--quiet"], &cache);
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("1 package(s) not in the cache (hello 1.0-1)") && text.contains("ftp: is not supported"),
        "{text}"
    );
}

#[test]
fn the_security_archive_wins_at_a_higher_version_and_outdated_reports_its_updates() {
    if !have("dpkg-deb") || !have("xz") {
        return;
    }
    let dir = test_dir("hermetic-security");
    let repo = make_repo(&dir.join("repo"), false, false);
    publish_security(&repo, "1.0-1+sec1", "test-security");
    let mirror = serve(repo.dir.clone());
    let def = definition_with_security(&dir, &mirror, &repo.signer_keyring);
    let cache = dir.join("cache");
    let image = def.to_str().unwrap();
    let (code, text) = run_with_cache(&["fetch", image, "--quiet"], &cache);
    assert_eq!(code, 0, "uvmkit fetch: {text}");
    assert!(text.contains("security archive from the image definition"), "{text}");

    // hello is in both suites: the security archive's 1.0-1+sec1 > 1.0-1 is taken, from there;
    // libc6 is only in the release.
    let lock = std::fs::read_to_string(dir.join("hermetic.lock")).unwrap();
    let hello = locked(&lock, "hello");
    assert!(
        hello.contains("version = \"1.0-1+sec1\"") && hello.contains("archive = \"test-security\""),
        "{hello}"
    );
    assert!(
        hello.contains("filename = \"pool/hello_1.0-1+sec1_amd64.deb\""),
        "{hello}"
    );
    assert!(locked(&lock, "libc6").contains("archive = \"test\""), "{lock}");
    // The .deb came from the security mirror: its bytes are the security build's.
    let sha = hello
        .lines()
        .find_map(|l| l.strip_prefix("sha256 = \""))
        .unwrap()
        .trim_end_matches('"');
    let served = std::fs::read(repo.dir.join("security/pool/hello_1.0-1+sec1_amd64.deb")).unwrap();
    assert_eq!(sha, hex::encode(Sha256::digest(&served)));
    let (code, text) = run_with_cache(&["inspect", image, "--quiet"], &cache);
    assert_eq!(code, 0, "uvmkit inspect: {text}");
    let line = text.lines().find(|l| l.trim_start().starts_with("hello ")).unwrap();
    assert!(line.contains("1.0-1+sec1") && line.contains("test-security"), "{line}");

    // Nothing newer yet: exit 0 and an empty report.
    let (code, text) = run_with_cache(&["outdated", image, "--quiet"], &cache);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("0 of 5 locked packages have newer versions"), "{text}");

    // The security archive publishes a newer hello: reported as a security update (exit 11),
    // in JSON too; the lock is not touched.
    publish_security(&repo, "1.0-1+sec2", "test-security");
    let (code, text) = run_with_cache(&["outdated", image, "--quiet"], &cache);
    assert_eq!(code, 11, "{text}");
    let line = text.lines().find(|l| l.trim_start().starts_with("hello ")).unwrap();
    assert!(
        line.contains("1.0-1+sec1 (test-security) -> 1.0-1+sec2 (test-security)") && line.ends_with("security"),
        "{line}"
    );
    let out = Command::new(uvmkit_bin())
        .args(["outdated", image, "--json"])
        .env("UVMKIT_CACHE", &cache)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(11));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let outdated = report["outdated"].as_array().unwrap();
    assert_eq!(outdated.len(), 1, "{report}");
    assert_eq!(outdated[0]["name"], "hello");
    assert_eq!(outdated[0]["locked"], "1.0-1+sec1");
    assert_eq!(outdated[0]["available"], "1.0-1+sec2");
    assert_eq!(outdated[0]["available_archive"], "test-security");
    assert_eq!(outdated[0]["security"], true);
    assert_eq!(report["archives"], serde_json::json!(["test", "test-security"]));
    assert_eq!(std::fs::read_to_string(dir.join("hermetic.lock")).unwrap(), lock);

    // --refresh takes the update into the lock; then nothing is outdated again.
    let (code, text) = run_with_cache(&["fetch", image, "--refresh", "--quiet"], &cache);
    assert_eq!(code, 0, "{text}");
    let lock = std::fs::read_to_string(dir.join("hermetic.lock")).unwrap();
    assert!(locked(&lock, "hello").contains("version = \"1.0-1+sec2\""), "{lock}");
    let (code, text) = run_with_cache(&["outdated", image, "--quiet"], &cache);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn a_suite_whose_inrelease_claims_another_suite_is_refused() {
    if !have("dpkg-deb") || !have("xz") {
        return;
    }
    let dir = test_dir("hermetic-wrong-suite");
    let repo = make_repo(&dir.join("repo"), false, false);
    // Validly signed, but it says it is the release, not its security archive.
    publish_security(&repo, "1.0-1+sec1", "test");
    let mirror = serve(repo.dir.clone());
    let def = definition_with_security(&dir, &mirror, &repo.signer_keyring);
    let (code, text) = run_with_cache(&["fetch", def.to_str().unwrap(), "--quiet"], &dir.join("cache"));
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains(
            "security/dists/test-security/InRelease is signed for suite test (codename test), not test-security"
        ),
        "{text}"
    );
    assert!(
        !dir.join("hermetic.lock").exists(),
        "a refused archive must not be locked"
    );
}

#[test]
fn a_package_whose_checksum_does_not_match_is_refused() {
    if !have("dpkg-deb") || !have("xz") {
        return;
    }
    let dir = test_dir("hermetic-checksum");
    let repo = make_repo(&dir.join("repo"), true, false);
    let mirror = serve(repo.dir.clone());
    let def = definition(&dir, &mirror, &repo.signer_keyring);
    let (code, text) = run_with_cache(&["fetch", def.to_str().unwrap(), "--quiet"], &dir.join("cache"));
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("hello_1.0-1_amd64.deb") && text.to_lowercase().contains("sha256"),
        "{text}"
    );
}

#[test]
fn an_index_signed_by_an_unknown_key_is_refused() {
    if !have("dpkg-deb") || !have("xz") {
        return;
    }
    let dir = test_dir("hermetic-signature");
    let repo = make_repo(&dir.join("repo"), false, true);
    let mirror = serve(repo.dir.clone());
    let def = definition(&dir, &mirror, &repo.signer_keyring);
    let (code, text) = run_with_cache(&["fetch", def.to_str().unwrap(), "--quiet"], &dir.join("cache"));
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("InRelease") && text.contains("signed only by keys not in the keyring"),
        "{text}"
    );
}

#[test]
fn an_unreachable_mirror_is_reported() {
    let dir = test_dir("hermetic-unreachable");
    // Port 9 (discard) on loopback: nothing listens there.
    let def = definition(&dir, "http://127.0.0.1:9", Path::new("/nonexistent-keyring"));
    let def_text = std::fs::read_to_string(&def)
        .unwrap()
        .replace("keyring = \"/nonexistent-keyring\"\n", "");
    std::fs::write(&def, def_text).unwrap();
    let (code, text) = run_with_cache(&["fetch", def.to_str().unwrap(), "--quiet"], &dir.join("cache"));
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("127.0.0.1:9"), "{text}");
}

#[test]
fn malformed_definitions_name_file_line_and_key() {
    let dir = test_dir("bad-definition");
    let def = dir.join("bad.toml");
    write(&def, "name = \"x\"\n[kernel]\npackages = \"linux-image-amd64\"\n");
    let (code, text) = run_with_cache(&["fetch", def.to_str().unwrap()], &dir.join("cache"));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("bad.toml:3:1") && text.contains("packages") && text.contains("package"),
        "{text}"
    );
    let (code, text) = run_with_cache(
        &["build", dir.join("missing.toml").to_str().unwrap()],
        &dir.join("cache"),
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("missing.toml"), "{text}");
}

/// Signs `dists/SUITE/InRelease` under `root` again for the `Packages.xz` already there, with
/// `Date: date` and `fields` (such as `Valid-Until: ...\n`) added.
fn resign(root: &Path, suite: &str, date: &str, fields: &str) {
    let xz = std::fs::read(root.join(format!("dists/{suite}/main/binary-amd64/Packages.xz"))).unwrap();
    let release = format!(
        "Origin: Test\nSuite: {suite}\nCodename: {suite}\nDate: {date}\n{fields}Architectures: amd64\nComponents: main\nSHA256:\n {} {} main/binary-amd64/Packages.xz\n",
        hex::encode(Sha256::digest(&xz)),
        xz.len()
    );
    let signer = uvmkit_debian::testing::TestSigner::generate(7);
    write(
        &root.join(format!("dists/{suite}/InRelease")),
        signer.clearsign(&release),
    );
}

#[test]
fn an_index_older_than_one_seen_before_or_expired_is_refused_unless_allowed() {
    if !have("dpkg-deb") || !have("xz") {
        return;
    }
    let dir = test_dir("hermetic-replay");
    let repo = make_repo(&dir.join("repo"), false, false);
    let mirror = serve(repo.dir.clone());
    let def = definition(&dir, &mirror, &repo.signer_keyring);
    let (image, cache) = (def.to_str().unwrap(), dir.join("cache"));
    resign(&repo.dir, "test", "Sun, 02 Jan 2000 00:00:00 UTC", "");
    let (code, text) = run_with_cache(&["fetch", image, "--quiet"], &cache);
    assert_eq!(code, 0, "{text}");
    // A mirror replaying the older, validly signed index of the day before.
    resign(&repo.dir, "test", "Sat, 01 Jan 2000 00:00:00 UTC", "");
    let (code, text) = run_with_cache(&["fetch", image, "--refresh", "--quiet"], &cache);
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("dists/test/InRelease is dated Sat, 01 Jan 2000 00:00:00 UTC, older than the index of Sun, 02 Jan 2000 00:00:00 UTC")
            && text.contains("--allow-old-index"),
        "{text}"
    );
    let (code, text) = run_with_cache(&["fetch", image, "--refresh", "--allow-old-index", "--quiet"], &cache);
    assert_eq!(code, 0, "a deliberate snapshot: {text}");
    // The snapshot did not lower the bar for later builds.
    let (code, text) = run_with_cache(&["fetch", image, "--refresh", "--quiet"], &cache);
    assert_eq!(code, 3, "{text}");
    // A newer index past its Valid-Until.
    resign(
        &repo.dir,
        "test",
        "Mon, 03 Jan 2000 00:00:00 UTC",
        "Valid-Until: Mon, 10 Jan 2000 00:00:00 UTC\n",
    );
    let (code, text) = run_with_cache(&["fetch", image, "--refresh", "--quiet"], &cache);
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("expired at Mon, 10 Jan 2000 00:00:00 UTC (its Valid-Until)"),
        "{text}"
    );
    let (code, text) = run_with_cache(&["fetch", image, "--refresh", "--allow-old-index", "--quiet"], &cache);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn damaged_cache_blobs_are_repaired_and_hostile_packages_refused() {
    if !have("dpkg-deb") || !have("xz") {
        return;
    }
    let dir = test_dir("hermetic-blobs");
    let repo = make_repo(&dir.join("repo"), false, false);
    let mirror = serve(repo.dir.clone());
    let def = definition(&dir, &mirror, &repo.signer_keyring);
    let (image, cache) = (def.to_str().unwrap(), dir.join("cache"));
    let (code, text) = run_with_cache(&["fetch", image, "--quiet"], &cache);
    assert_eq!(code, 0, "{text}");
    // A flipped byte in the unpacked EFI stub: detected before the build reads it, and
    // repaired by unpacking again (de-duplication does not keep the damaged blob).
    let stub = hex::encode(Sha256::digest(b"MZ stub"));
    let blob = cache.join("blobs/sha256").join(&stub[..2]).join(&stub);
    assert_eq!(std::fs::read(&blob).unwrap(), b"MZ stub");
    std::fs::write(&blob, b"MZ stuB").unwrap();
    let (code, text) = run_with_cache(&["fetch", image, "--quiet"], &cache);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("systemd-boot-efi 252-1 are incomplete or damaged; unpacking it again"),
        "{text}"
    );
    assert_eq!(std::fs::read(&blob).unwrap(), b"MZ stub", "the damaged blob was kept");
    // A build (`inspect` resolves the same way) hashes again only the files that changed since
    // they were last hashed. Damaged in place with its modification time put back, the stub
    // still changed (its change time did): found and repaired the same way.
    let (code, text) = run_with_cache(&["inspect", image], &cache);
    assert_eq!(code, 0, "{text}");
    let modified = std::fs::metadata(&blob).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&blob, b"MZ stuB").unwrap();
    let file = std::fs::File::options().write(true).open(&blob).unwrap();
    file.set_modified(modified).unwrap();
    drop(file);
    let (code, text) = run_with_cache(&["inspect", image], &cache);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("systemd-boot-efi 252-1 are incomplete or damaged; unpacking it again"),
        "{text}"
    );
    assert_eq!(std::fs::read(&blob).unwrap(), b"MZ stub", "the damaged blob was kept");

    // A lock without the stub's package: an error naming it and what to do, not a panic.
    let lock_path = dir.join("hermetic.lock");
    let lock = std::fs::read_to_string(&lock_path).unwrap();
    let kept: Vec<&str> = lock
        .split("[[package]]")
        .filter(|p| !p.contains("name = \"systemd-boot-efi\"\n"))
        .collect();
    std::fs::write(&lock_path, kept.join("[[package]]")).unwrap();
    let out = dir.join("out");
    let (code, text) = run_with_cache(&["build", image, "-o", out.to_str().unwrap(), "--quiet"], &cache);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("no systemd-boot-efi package is pinned") && text.contains("fetch --refresh"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    std::fs::write(&lock_path, &lock).unwrap();

    // A package that unpacks to more than [debian] max_unpacked_size, from a fresh cache.
    let text_def = std::fs::read_to_string(&def).unwrap();
    std::fs::write(
        &def,
        text_def.replace("[debian]\n", "[debian]\nmax_unpacked_size = 1024\n"),
    )
    .unwrap();
    let (code, text) = run_with_cache(&["fetch", image, "--quiet"], &dir.join("cache2"));
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("unpacks to more than 1024 bytes ([debian] max_unpacked_size)"),
        "{text}"
    );
}

#[test]
fn local_sources_outside_the_definition_and_oversized_disks_are_refused_before_any_fetch() {
    let dir = test_dir("hermetic-outside");
    std::fs::write(dir.join("inside.txt"), b"fine").unwrap();
    let _ = std::fs::remove_file(dir.join("escape"));
    std::os::unix::fs::symlink("/etc/passwd", dir.join("escape")).unwrap();
    // Nothing listens on port 9: reaching the mirror would fail with exit 3, not 2.
    let base = "name = \"x\"\nformats = [\"efi\", \"raw\"]\n[debian]\nmirror = \"http://127.0.0.1:9\"\n";
    let def = dir.join("x.toml");
    for (source, needle) in [
        ("../x", "leaves the definition's directory"),
        ("/etc/passwd", "is absolute or leaves the definition's directory"),
        ("escape", "leads through a symbolic link to /etc/passwd"),
    ] {
        write(
            &def,
            format!("{base}[[files]]\npath = \"/etc/x\"\nsource = \"{source}\"\n"),
        );
        let (code, text) = run_with_cache(&["build", def.to_str().unwrap(), "-o", "unused"], &dir.join("cache"));
        assert_eq!(code, 2, "{source}: {text}");
        assert!(
            text.contains("files[0] (/etc/x)") && text.contains(needle),
            "{source}: {text}"
        );
    }
    for (size, args, needle) in [
        (
            "16GiB",
            &["--disk-size", "15TiB"][..],
            "15TiB is larger than any build allows",
        ),
        (
            "16GiB",
            &["--format", "vmdk", "--disk-size", "3TiB"][..],
            "3TiB is larger than the vmdk format allows",
        ),
        ("1024TiB", &[][..], "1024TiB is larger than any build allows"),
    ] {
        write(&def, format!("{base}[disk]\nsize = \"{size}\"\n"));
        let mut all = vec!["build", def.to_str().unwrap(), "-o", "unused"];
        all.extend_from_slice(args);
        let started = std::time::Instant::now();
        let (code, text) = run_with_cache(&all, &dir.join("cache"));
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(text.contains(needle), "{args:?}: {text}");
        assert!(
            started.elapsed().as_secs() < 10,
            "refused only after {:?}",
            started.elapsed()
        );
    }
}

/// One member of a bundle, as someone altering it sees it.
#[derive(Clone)]
struct BundleMember {
    name: String,
    kind: tar::EntryType,
    mode: u32,
    data: Vec<u8>,
    link: String,
}

/// The members of the bundle at `path`, without `SHA256SUMS` and `MANIFEST.json`.
fn read_bundle(path: &Path) -> Vec<BundleMember> {
    use std::io::Read;
    let mut tar = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut out = Vec::new();
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().trim_end_matches('/').to_string();
        if name == "SHA256SUMS" || name == "MANIFEST.json" {
            continue;
        }
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push(BundleMember {
            name,
            kind: e.header().entry_type(),
            mode: e.header().mode().unwrap(),
            data,
            link,
        });
    }
    out
}

/// Writes `members` as a bundle at `path` with `SHA256SUMS` and `MANIFEST.json` recomputed:
/// what someone altering a bundle does so that every member's hash matches again.
fn rewrite_bundle(path: &Path, members: &[BundleMember]) {
    let mut listed = Vec::new();
    let mut sums = Vec::new();
    for m in members {
        let mode = format!("{:04o}", m.mode & 0o7777);
        listed.push(match m.kind {
            tar::EntryType::Regular => {
                let sha = hex::encode(Sha256::digest(&m.data));
                sums.push(format!("{sha}  {}\n", m.name));
                serde_json::json!({"type": "file", "name": m.name, "mode": mode, "sha256": sha})
            }
            tar::EntryType::Directory => serde_json::json!({"type": "directory", "name": m.name, "mode": mode}),
            _ => serde_json::json!({"type": "symlink", "name": m.name, "target": m.link}),
        });
    }
    let manifest = serde_json::to_vec(&serde_json::json!({"version": 1, "members": listed})).unwrap();
    sums.push(format!("{}  MANIFEST.json\n", hex::encode(Sha256::digest(&manifest))));
    sums.sort_by(|a, b| a[66..].cmp(&b[66..]));
    let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut append = |name: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(0);
        if kind == tar::EntryType::Symlink {
            h.set_size(0);
            tar.append_link(&mut h, name, link).unwrap();
        } else {
            h.set_size(data.len() as u64);
            tar.append_data(&mut h, name, data).unwrap();
        }
    };
    append(
        "SHA256SUMS",
        tar::EntryType::Regular,
        0o644,
        sums.concat().as_bytes(),
        "",
    );
    append("MANIFEST.json", tar::EntryType::Regular, 0o644, &manifest, "");
    for m in members {
        append(&m.name, m.kind, m.mode, &m.data, &m.link);
    }
    tar.finish().unwrap();
}

/// The member `name` of `members`.
fn member<'a>(members: &'a mut [BundleMember], name: &str) -> &'a mut BundleMember {
    members
        .iter_mut()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("the bundle has no {name}"))
}

/// A regular member.
fn file_member(name: &str, data: Vec<u8>) -> BundleMember {
    BundleMember {
        name: name.into(),
        kind: tar::EntryType::Regular,
        mode: 0o644,
        data,
        link: String::new(),
    }
}

#[test]
fn a_bundle_brings_in_only_what_the_archive_signed_and_its_own_files_only_as_pinned() {
    if !have("dpkg-deb") || !have("xz") || !Path::new(HOST_STUB).exists() {
        eprintln!("note: needs dpkg-deb, xz and {HOST_STUB}");
        return;
    }
    let started = std::time::Instant::now();
    let dir = test_dir("hermetic-bundle");
    let repo = make_repo_with(&dir.join("repo"), false, false, true);
    let mirror = serve(repo.dir.clone());
    // The keyring beside the definition, so the bundle carries it.
    let def_dir = dir.join("def");
    std::fs::create_dir_all(&def_dir).unwrap();
    std::fs::copy(&repo.signer_keyring, def_dir.join("keys.gpg")).unwrap();
    let def = definition(&def_dir, &mirror, Path::new("keys.gpg"));
    let (image, cache) = (def.to_str().unwrap(), dir.join("cache"));
    let bundle = dir.join("hermetic.uvmkit.tar");
    let (code, text) = run_with_cache(&["bundle", image, "-o", bundle.to_str().unwrap()], &cache);
    assert_eq!(code, 0, "uvmkit bundle: {text}");
    let pin = hex::encode(Sha256::digest(std::fs::read(&bundle).unwrap()));
    assert!(text.contains(&format!("sha256 {pin}")), "{text}");
    assert_eq!(
        std::fs::read_to_string(dir.join("hermetic.uvmkit.tar.sha256")).unwrap(),
        format!("{pin}  hermetic.uvmkit.tar\n")
    );
    let good = read_bundle(&bundle);
    let names: Vec<&str> = good.iter().map(|m| m.name.as_str()).collect();
    for carried in [
        "dists/test/InRelease",
        "dists/test/main/binary-amd64/Packages.xz",
        "keys.gpg",
    ] {
        assert!(names.contains(&carried), "the bundle lacks {carried}: {names:?}");
    }
    assert_eq!(
        good.iter().find(|m| m.name == "dists/test/InRelease").unwrap().data,
        std::fs::read(repo.dir.join("dists/test/InRelease")).unwrap(),
        "InRelease is carried byte for byte as signed"
    );
    let online = dir.join("online");
    let (code, text) = run_with_cache(&["build", image, "-o", online.to_str().unwrap(), "--quiet"], &cache);
    assert_eq!(code, 0, "online build: {text}");

    // Builds from a bundle, each with a fresh cache, and the mirror gone.
    let build = |bundle: &Path, pin: Option<&str>, name: &str| {
        let out = dir.join(format!("out-{name}"));
        let mut args = vec![
            "build",
            "--offline",
            "--bundle",
            bundle.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ];
        args.extend(pin.map(|p| ["--bundle-sha256", p]).iter().flatten());
        let (code, text) = run_with_cache(&args, &dir.join(format!("cache-{name}")));
        (code, text, out)
    };

    // The good bundle, pinned: verified, built offline, the same artifacts as online, no warning.
    let (code, text, out) = build(&bundle, Some(&pin), "pinned");
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("is not pinned"), "{text}");
    assert!(
        text.contains("bundle: test index signed, dated Sat, 01 Jan 2000 00:00:00 UTC"),
        "{text}"
    );
    for f in ["SHA256SUMS", "manifest.json"] {
        assert_eq!(
            std::fs::read(online.join(f)).unwrap(),
            std::fs::read(out.join(f)).unwrap(),
            "{f} of the offline build differs from the online one"
        );
    }
    // A wrong pin: refused, naming both digests, before anything is built.
    let other_pin = "ab".repeat(32);
    let (code, text, out) = build(&bundle, Some(&other_pin), "wrong-pin");
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains(&format!(
            "hashes to sha256 {pin}, not the {other_pin} given with --bundle-sha256"
        )),
        "{text}"
    );
    assert!(!out.exists());

    // A hand-edited lock pinning another build of hello (its blob added): refused, naming it.
    let lock_text = String::from_utf8(good.iter().find(|m| m.name == "image.lock").unwrap().data.clone()).unwrap();
    let hello_block = lock_text
        .split("[[package]]")
        .find(|p| p.contains("name = \"hello\"\n"))
        .unwrap()
        .to_string();
    let field = |block: &str, key: &str| {
        block
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = ")))
            .unwrap()
            .trim_matches('"')
            .to_string()
    };
    let (good_sha, good_size) = (field(&hello_block, "sha256"), field(&hello_block, "size"));
    let evil_deb = build_deb(
        &dir.join("evil"),
        "hello",
        "1.0-1",
        Some("libc6 (>= 2.30)"),
        &[("/usr/bin/hello", b"#!/bin/sh\necho evil\n".to_vec(), 0o755)],
        &[],
    );
    let evil = std::fs::read(&evil_deb).unwrap();
    let evil_sha = hex::encode(Sha256::digest(&evil));
    let evil_block = hello_block
        .replace(&good_sha, &evil_sha)
        .replace(&format!("size = {good_size}\n"), &format!("size = {}\n", evil.len()));
    let mut edited = good.clone();
    member(&mut edited, "image.lock").data = lock_text.replace(&hello_block, &evil_block).into_bytes();
    edited.push(file_member(&format!("blobs/sha256/{evil_sha}"), evil.clone()));
    let tampered = dir.join("edited-lock.tar");
    rewrite_bundle(&tampered, &edited);
    let (code, text, out) = build(&tampered, None, "edited-lock");
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains(&format!(
            "package hello 1.0-1 (amd64) is pinned from test, but the signed index of test gives it sha256 {good_sha} ({good_size} bytes), not the pinned {evil_sha}"
        )) && text.contains("refusing it"),
        "{text}"
    );
    assert!(!out.exists());

    // ... with the bundle's Packages listing it too: refused, Packages no longer matches InRelease.
    let packages = std::fs::read_to_string(repo.dir.join("dists/test/main/binary-amd64/Packages"))
        .unwrap()
        .replace(&good_sha, &evil_sha)
        .replace(&format!("Size: {good_size}\n"), &format!("Size: {}\n", evil.len()));
    let evil_xz = liblzma::encode_all(packages.as_bytes(), 6).unwrap();
    member(&mut edited, "dists/test/main/binary-amd64/Packages.xz").data = evil_xz.clone();
    rewrite_bundle(&tampered, &edited);
    let (code, text, _) = build(&tampered, None, "edited-packages");
    assert_eq!(code, 3, "{text}");
    let good_xz_sha = hex::encode(Sha256::digest(
        std::fs::read(repo.dir.join("dists/test/main/binary-amd64/Packages.xz")).unwrap(),
    ));
    assert!(
        text.contains(&format!(
            "dists/test/main/binary-amd64/Packages.xz hashes to sha256 {}, but the signed bundle member dists/test/InRelease lists {good_xz_sha} for it",
            hex::encode(Sha256::digest(&evil_xz))
        )),
        "{text}"
    );

    // ... and InRelease edited to list that Packages: its signature no longer holds.
    let inrelease = String::from_utf8(member(&mut edited, "dists/test/InRelease").data.clone()).unwrap();
    let good_xz_len = std::fs::metadata(repo.dir.join("dists/test/main/binary-amd64/Packages.xz"))
        .unwrap()
        .len();
    let evil_line = format!(
        " {} {} main/binary-amd64/Packages.xz",
        hex::encode(Sha256::digest(&evil_xz)),
        evil_xz.len()
    );
    let edited_inrelease = inrelease.replace(
        &format!(" {good_xz_sha} {good_xz_len} main/binary-amd64/Packages.xz"),
        &evil_line,
    );
    assert_ne!(edited_inrelease, inrelease);
    member(&mut edited, "dists/test/InRelease").data = edited_inrelease.into_bytes();
    rewrite_bundle(&tampered, &edited);
    let (code, text, _) = build(&tampered, None, "edited-inrelease");
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("bundle member dists/test/InRelease") && text.contains("refusing it"),
        "{text}"
    );

    // ... or signed again with another key: not in the keyring.
    let release = format!(
        "Origin: Test\nSuite: test\nCodename: test\nDate: Sat, 01 Jan 2000 00:00:00 UTC\nArchitectures: amd64\nComponents: main\nSHA256:\n{evil_line}\n"
    );
    let attacker = uvmkit_debian::testing::TestSigner::generate(8);
    member(&mut edited, "dists/test/InRelease").data = attacker.clearsign(&release).into_bytes();
    rewrite_bundle(&tampered, &edited);
    let (code, text, _) = build(&tampered, None, "resigned");
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("bundle member dists/test/InRelease") && text.contains("signed only by keys not in the keyring"),
        "{text}"
    );

    // Debian cannot sign the definition: edited (with SHA256SUMS recomputed), it builds with a
    // warning, and is refused under the pin.
    let mut edited = good.clone();
    let text_def = String::from_utf8(member(&mut edited, "definition.toml").data.clone()).unwrap();
    member(&mut edited, "definition.toml").data = text_def
        .replacen(
            "name = \"hermetic\"\n",
            "name = \"hermetic\"\ncmdline = \"init=/bin/evil\"\n",
            1,
        )
        .into_bytes();
    rewrite_bundle(&tampered, &edited);
    let (code, text, out) = build(&tampered, None, "edited-definition");
    assert_eq!(code, 0, "{text}");
    let tampered_sha = hex::encode(Sha256::digest(std::fs::read(&tampered).unwrap()));
    assert!(
        text.contains("is not pinned: the bundle's definition and local files are trusted as given")
            && text.contains("own [debian] keyring (keys.gpg)")
            && text.contains(&format!("--bundle-sha256 {tampered_sha}")),
        "{text}"
    );
    let efi = std::fs::read(out.join("hermetic.efi")).unwrap();
    assert!(
        efi.windows(14).any(|w| w == b"init=/bin/evil"),
        "the edited cmdline was not built in"
    );
    let (code, text, out) = build(&tampered, Some(&pin), "edited-definition-pinned");
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains(&format!("hashes to sha256 {tampered_sha}, not the {pin}")),
        "{text}"
    );
    assert!(!out.exists());

    // A bundle without the signed index (as older versions wrote them): refused.
    let stripped: Vec<BundleMember> = good.iter().filter(|m| !m.name.starts_with("dists")).cloned().collect();
    rewrite_bundle(&tampered, &stripped);
    let (code, text, _) = build(&tampered, None, "no-index");
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("carries no dists/test/InRelease") && text.contains("uvmkit bundle"),
        "{text}"
    );
    eprintln!("bundle checks: {:.1}s", started.elapsed().as_secs_f64());
}
