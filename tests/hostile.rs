//! Outputs under faults: a build killed with SIGKILL half-way, or one that runs out of disk
//! space, leaves the previous output directory whole (`sha256sum -c` still passes) and
//! publishes nothing of its own; the next build removes what the killed one staged, and its
//! output holds only its own formats. Builds `images/minimal.toml` from the shared cache.

mod common;

use common::{repo_root, shared_cache, test_dir, uvmkit_bin, EPOCH};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn uvmkit(args: &[&str]) -> Command {
    let mut c = Command::new(uvmkit_bin());
    c.args(args)
        .env("UVMKIT_CACHE", shared_cache())
        .env("SOURCE_DATE_EPOCH", EPOCH);
    c
}

fn build_ok(def: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec!["build", s(def), "-o", s(out), "--quiet"];
    args.extend_from_slice(extra);
    let o = uvmkit(&args).output().unwrap();
    assert!(
        o.status.success(),
        "build failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `sha256sum -c SHA256SUMS` in `out`, and the file names it lists.
fn check_sums(out: &Path) -> Vec<String> {
    let o = Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "sha256sum -c failed in {}:\n{}{}",
        out.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    sums.lines()
        .map(|l| l.split_once("  ").unwrap().1.to_string())
        .collect()
}

/// Every entry of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn minimal(dir: &Path) -> PathBuf {
    let def = dir.join("minimal.toml");
    std::fs::copy(repo_root().join("images/minimal.toml"), &def).unwrap();
    def
}

#[test]
fn a_killed_build_leaves_the_previous_output_whole_and_the_next_build_cleans_up() {
    let dir = test_dir("hostile-kill");
    let def = minimal(&dir);
    let out = dir.join("out");
    build_ok(&def, &out, &["--format", "efi,raw", "--disk-size", "128MiB"]);
    let before = check_sums(&out);
    assert!(before.contains(&"minimal.raw".to_string()), "{before:?}");
    let old_sums = std::fs::read(out.join("SHA256SUMS")).unwrap();

    // A big sparse disk in several formats: hashing its holes keeps the build busy long
    // enough to be killed half-way, after it has written into its staging directory.
    let mut child = uvmkit(&[
        "build",
        s(&def),
        "-o",
        s(&out),
        "--quiet",
        "--format",
        "efi,raw,vhdx,vmdk",
        "--disk-size",
        "16GiB",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let staging = format!(".uvmkit-staging-{}-out", child.id());
    let started = Instant::now();
    loop {
        let work = dir.join(&staging).join(".work");
        let busy = std::fs::read_dir(&work).is_ok_and(|d| d.count() > 0);
        let published = std::fs::read_dir(dir.join(&staging)).is_ok_and(|d| d.count() > 1);
        if busy && published {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the build never staged anything"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    eprintln!("killed after {:.1}s", started.elapsed().as_secs_f64());

    assert_eq!(check_sums(&out), before, "the killed build changed the output");
    assert_eq!(std::fs::read(out.join("SHA256SUMS")).unwrap(), old_sums);
    assert!(
        !out.join("minimal.vhdx").exists(),
        "a half-built artifact was published"
    );
    assert!(
        dir.join(&staging).exists(),
        "the kill left no staging directory to clean up"
    );

    // The next build, with other formats, removes it; nothing of the earlier formats lingers.
    build_ok(&def, &out, &["--format", "efi"]);
    let after = check_sums(&out);
    assert!(!after.iter().any(|n| n.ends_with(".raw")), "{after:?}");
    let mut listed: Vec<String> = after.clone();
    listed.extend(["SHA256SUMS", "manifest.json", "minimal.spdx.json"].map(String::from));
    listed.sort();
    assert_eq!(entries(&out), listed, "unlisted files in the output directory");
    assert_eq!(
        entries(&dir),
        ["minimal.lock", "minimal.toml", "out"],
        "staging left behind"
    );
}

/// Unmounts the tmpfs when the test ends, even when it fails.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_cleanly_with_nothing_published() {
    let dir = test_dir("hostile-full");
    let def = minimal(&dir);
    let small = dir.join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256m", "tmpfs", s(&small)])
        .status()
        .is_ok_and(|st| st.success());
    if !mounted {
        eprintln!("note: cannot mount a tmpfs here (needs root); skipping the full-disk build");
        return;
    }
    let _mount = Mount(small.clone());
    let out = small.join("out");
    build_ok(&def, &out, &["--format", "efi"]);
    let before = check_sums(&out);
    // Leave less room than one more set of artifacts needs.
    let used: u64 = before
        .iter()
        .map(|n| std::fs::metadata(out.join(n)).unwrap().len())
        .sum();
    let free = fs_free(&small);
    let filler = small.join("filler");
    let f = std::fs::File::create(&filler).unwrap();
    let keep = used / 2;
    // Allocated for real (a sparse file would not use the space).
    let st = Command::new("fallocate")
        .args(["-l", &(free.saturating_sub(keep)).to_string(), s(&filler)])
        .status()
        .unwrap();
    assert!(st.success());
    drop(f);

    let o = uvmkit(&["build", s(&def), "-o", s(&out), "--quiet", "--format", "efi"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("No space left on device") || err.contains("the disk is full"),
        "{err}"
    );
    assert_eq!(check_sums(&out), before, "the failed build changed the output");
    assert_eq!(entries(&small), ["filler", "out"], "staging left behind");
}

/// Free bytes of the filesystem holding `path`.
fn fs_free(path: &Path) -> u64 {
    let o = Command::new("df")
        .args(["--output=avail", "-B1", s(path)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    text.lines().nth(1).unwrap().trim().parse().unwrap()
}
