//! `uvmkit.exe` for Windows hosts: cross-built with mingw-w64 and run under Wine.
//!
//! - `uvmkit.exe instance` writes the same bytes as the Linux binary, for ISO and VHDX.
//! - `uvmkit.exe env NAME --shell powershell` and `--shell cmd` print the exact lines for a
//!   context in the Docker CLI's store, with Windows paths.
//! - `uvmkit.exe build` says it needs a Linux or macOS host (exit 2).
//!
//! Skipped (with a note) when the Windows target, mingw-w64 or Wine is missing; run
//! tests/install-deps.sh.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TARGET: &str = "x86_64-pc-windows-gnu";

/// Builds uvmkit.exe into a target directory of its own (kept between runs, so only changes
/// are rebuilt), embedding the init the host build already made.
fn build_exe() -> PathBuf {
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("windows-target");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--release",
        "--target",
        TARGET,
        "-p",
        "uvmkit",
        "--bin",
        "uvmkit",
    ])
    .arg("--target-dir")
    .arg(&target_dir)
    .current_dir(repo_root());
    // The init is Linux's either way; reuse the host build's instead of building it again.
    let build_dir = uvmkit_bin().parent().unwrap().join("build");
    let init = std::fs::read_dir(&build_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("out/uvmkit-init"))
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    if let Some(init) = init {
        cmd.env("UVMKIT_INIT", init);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "cross build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target_dir.join(TARGET).join("release/uvmkit.exe")
}

/// Wine 8 (Debian 12) has no bcryptprimitives.dll, whose ProcessPrng Rust's std calls for
/// random bytes; this shim beside the exe supplies it through RtlGenRandom.
fn wine_shims(exe: &Path, prefix: &Path) {
    if prefix.join("drive_c/windows/system32/bcryptprimitives.dll").exists() {
        return;
    }
    let dir = exe.parent().unwrap();
    let source = dir.join("bcryptprimitives-shim.c");
    std::fs::write(
        &source,
        "#include <windows.h>\n\
         BOOLEAN WINAPI SystemFunction036(PVOID, ULONG);\n\
         BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {\n\
           while (len > 0) {\n\
             ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;\n\
             if (!SystemFunction036(data, n)) return FALSE;\n\
             data += n; len -= n;\n\
           }\n\
           return TRUE;\n\
         }\n",
    )
    .unwrap();
    let (ok, text) = run(
        "x86_64-w64-mingw32-gcc",
        &[
            "-shared",
            "-O2",
            "-o",
            dir.join("bcryptprimitives.dll").to_str().unwrap(),
            source.to_str().unwrap(),
            "-ladvapi32",
        ],
    );
    assert!(ok, "mingw gcc (shim): {text}");
}

/// The Wine loader for 64-bit programs.
fn wine64() -> Option<PathBuf> {
    ["/usr/lib/wine/wine64", "/usr/bin/wine64"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// `path` as Wine's Z: drive names it.
fn windows_path(path: &Path) -> String {
    format!("Z:{}", path.display().to_string().replace('/', "\\"))
}

fn wine(exe: &Path, prefix: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(wine64().unwrap());
    cmd.arg(exe)
        .args(args)
        .env("WINEPREFIX", prefix)
        .env("WINEDEBUG", "-all")
        .env("SOURCE_DATE_EPOCH", EPOCH);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn the_windows_binary_writes_the_same_volumes_and_prints_windows_env_lines() {
    let (ok, targets) = run("rustup", &["target", "list", "--installed"]);
    if !ok || !targets.lines().any(|l| l.trim() == TARGET) {
        eprintln!("note: rustup target {TARGET} is not installed; run tests/install-deps.sh (skipping)");
        return;
    }
    if !have("x86_64-w64-mingw32-gcc") || wine64().is_none() {
        eprintln!("note: mingw-w64 or Wine is missing; run tests/install-deps.sh (skipping)");
        return;
    }
    let dir = test_dir("windows");
    let exe = build_exe();
    let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wineprefix");
    // First start: Wine makes its prefix (system32 among it).
    let _ = wine(&exe, &prefix, &["--version"], &[]);
    wine_shims(&exe, &prefix);
    let version = wine(&exe, &prefix, &["--version"], &[]);
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("uvmkit "),
        "uvmkit.exe --version under Wine: {} {}",
        String::from_utf8_lossy(&version.stdout),
        String::from_utf8_lossy(&version.stderr)
    );

    // instance: the same bytes from both binaries.
    ssh_keygen(&dir.join("id"), "uvmkit-test");
    std::fs::write(dir.join("app.tar"), vec![3u8; 100_000]).unwrap();
    for format in ["iso", "vhdx"] {
        let settings = |p: &dyn Fn(&Path) -> String, out: &Path| -> Vec<String> {
            [
                "instance",
                "-o",
                &p(out),
                "--hostname",
                "win-vm",
                "--ssh-key",
                &p(&dir.join("id.pub")),
                "--interface",
                "eth1=192.168.56.20/24",
                "--preload",
                &p(&dir.join("app.tar")),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        let linux_out = dir.join(format!("linux.{format}"));
        let linux_args = settings(&|p: &Path| p.display().to_string(), &linux_out);
        uvmkit_ok(&linux_args.iter().map(String::as_str).collect::<Vec<_>>());
        let windows_dir = dir.join("win");
        std::fs::create_dir_all(&windows_dir).unwrap();
        // The same file name: a VMDK or VHDX names nothing, but keep the comparison strict.
        let windows_out = windows_dir.join(format!("linux.{format}"));
        let windows_args = settings(&|p: &Path| windows_path(p), &windows_out);
        let out = wine(
            &exe,
            &prefix,
            &windows_args.iter().map(String::as_str).collect::<Vec<_>>(),
            &[],
        );
        assert!(
            out.status.success(),
            "uvmkit.exe instance ({format}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read(&windows_out).unwrap(),
            std::fs::read(&linux_out).unwrap(),
            "uvmkit.exe wrote a different {format} volume"
        );
    }
    let (ok, text) = run("qemu-img", &["check", dir.join("win/linux.vhdx").to_str().unwrap()]);
    assert!(ok, "qemu-img check: {text}");

    // env: a context in the CLI's layout, read by the Windows binary.
    let config = dir.join("docker-config");
    let name = "uvmkit-win";
    let (_, id) = run("sh", &["-c", &format!("printf %s {name} | sha256sum")]);
    let id = id.split_whitespace().next().unwrap().to_string();
    let meta = config.join("contexts/meta").join(&id);
    let tls = config.join("contexts/tls").join(&id).join("docker");
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::create_dir_all(&tls).unwrap();
    std::fs::write(
        meta.join("meta.json"),
        format!(
            "{{\"Name\":\"{name}\",\"Metadata\":{{}},\"Endpoints\":{{\"docker\":{{\"Host\":\"tcp://192.168.56.20:2376\",\"SkipTLSVerify\":false}}}}}}"
        ),
    )
    .unwrap();
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::write(tls.join(f), "-----BEGIN CERTIFICATE-----\n").unwrap();
    }
    let cert_path = format!("{}\\contexts\\tls\\{id}\\docker", windows_path(&config));
    let env = [("DOCKER_CONFIG", windows_path(&config))];
    let out = wine(&exe, &prefix, &["env", name, "--shell", "powershell"], &env);
    assert!(
        out.status.success(),
        "uvmkit.exe env: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n"),
        format!(
            "$Env:DOCKER_HOST = 'tcp://192.168.56.20:2376'\n\
             $Env:DOCKER_TLS_VERIFY = '1'\n\
             $Env:DOCKER_CERT_PATH = '{cert_path}'\n\
             # Or, without these variables: docker context use {name}\n\
             # Run this command to configure your shell:\n\
             # & uvmkit env {name} --shell powershell | Invoke-Expression\n"
        )
    );
    let out = wine(&exe, &prefix, &["env", name, "--shell", "cmd"], &env);
    assert!(
        out.status.success(),
        "uvmkit.exe env --shell cmd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n"),
        format!(
            "SET \"DOCKER_HOST=tcp://192.168.56.20:2376\"\n\
             SET \"DOCKER_TLS_VERIFY=1\"\n\
             SET \"DOCKER_CERT_PATH={cert_path}\"\n\
             REM Or, without these variables: docker context use {name}\n\
             REM Run this command to configure your shell:\n\
             REM @FOR /f \"tokens=*\" %i IN ('uvmkit env {name} --shell cmd') DO @%i\n"
        )
    );

    // build: not on Windows, said plainly.
    let out = wine(&exe, &prefix, &["build", "images\\docker.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("uvmkit build needs a Linux or macOS host"));
    std::fs::remove_dir_all(&dir).unwrap();
}
