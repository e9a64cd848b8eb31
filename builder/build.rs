//! Builds the static init (`init/`) and embeds it, so `uvmkit` carries its PID 1 and a fresh
//! clone needs no separate step. `UVMKIT_INIT=/path/to/uvmkit-init` embeds a prebuilt one.
//!
//! The init is built by a nested cargo in its own target directory (no lock shared with the
//! outer build), for `x86_64-unknown-linux-musl` when that target is installed, else for
//! `x86_64-unknown-linux-gnu` with `+crt-static`: both give a fully static binary.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "build/init_sources.rs"]
mod init_sources;

fn main() {
    println!("cargo:rerun-if-env-changed=UVMKIT_INIT");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dest = out_dir.join("uvmkit-init");
    if let Some(prebuilt) = env::var_os("UVMKIT_INIT") {
        let prebuilt = PathBuf::from(prebuilt);
        println!("cargo:rerun-if-changed={}", prebuilt.display());
        std::fs::copy(&prebuilt, &dest).unwrap_or_else(|e| panic!("UVMKIT_INIT={}: {e}", prebuilt.display()));
        return;
    }
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let init_dir = manifest_dir.parent().unwrap().join("init");
    // Everything the init links: its own crate and every local crate it reaches, watched as
    // whole directories (cargo scans them recursively), plus the lock that pins the rest.
    let sources =
        init_sources::local_crate_dirs(&init_dir).unwrap_or_else(|e| panic!("reading the init's dependencies: {e}"));
    for dir in &sources {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    let workspace_dir = manifest_dir.parent().unwrap();
    println!("cargo:rerun-if-changed={}", workspace_dir.join("Cargo.lock").display());
    println!("cargo:rerun-if-changed={}", workspace_dir.join("Cargo.toml").display());

    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let musl = has_target(&rustc, "x86_64-unknown-linux-musl");
    let triple = if musl {
        "x86_64-unknown-linux-musl"
    } else {
        "x86_64-unknown-linux-gnu"
    };
    let target_dir = out_dir.join("init-target");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // A clean environment: the outer build's CARGO_*/RUSTFLAGS must not leak into this one.
    cmd.env_clear();
    for key in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "CARGO_NET_OFFLINE",
        "CARGO_MAKEFLAGS",
    ] {
        if let Some(v) = env::var_os(key) {
            cmd.env(key, v);
        }
    }
    if !musl {
        cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static");
    }
    cmd.args([
        "build",
        "--release",
        "--quiet",
        "--bin",
        "uvmkit-init",
        "--target",
        triple,
        "--manifest-path",
    ])
    .arg(init_dir.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir);
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the init: {e}"));
    if !status.success() {
        panic!("building the init (init/) for {triple} failed; see the errors above");
    }
    let built = target_dir.join(triple).join("release").join("uvmkit-init");
    std::fs::copy(&built, &dest).unwrap_or_else(|e| panic!("{}: {e}", built.display()));
}

fn has_target(rustc: &str, triple: &str) -> bool {
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(triple)
        .join("lib")
        .is_dir()
}
