//! Helpers the crates' tests share: a scratch directory per test, finding and running the
//! independent readers (qemu-img, e2fsck, xorriso, ...) and deterministic test data.

#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod fuzz;

#[cfg(test)]
count_allocations!();

/// A fresh, empty directory for one test, removed when dropped.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// `$TMPDIR/uvmkit-NAME-PID`, emptied first.
    pub fn new(name: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("uvmkit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        ScratchDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where `tool` is: on PATH, or in /usr/sbin or /sbin (e2fsprogs live there).
pub fn tool_path(tool: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(tool)).find(|p| p.is_file())
}

/// True when `tool` is found; otherwise prints why the calling test skips its checks.
pub fn have(tool: &str) -> bool {
    let found = tool_path(tool).is_some();
    if !found {
        eprintln!(
            "note: {tool} is not installed; skipping the checks that need it (tests/install-deps.sh installs it)"
        );
    }
    found
}

/// Runs `tool args`, returning (success, stdout + stderr).
pub fn run(tool: &str, args: &[&str]) -> (bool, String) {
    let program = tool_path(tool).unwrap_or_else(|| PathBuf::from(tool));
    let out = Command::new(&program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `len` bytes of a fixed pseudo-random sequence (xorshift), different per `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    xorshift_bytes(len, seed, |word| word)
}

/// Like [`pattern`], but every 8-byte word has its low bit set, so no block of it is all
/// zeros: data that writers which leave out zero blocks must store whole.
pub fn nonzero_pattern(len: usize, seed: u64) -> Vec<u8> {
    xorshift_bytes(len, seed, |word| word | 1)
}

/// `len` bytes of xorshift64 words seeded by `seed`, each passed through `shape`.
fn xorshift_bytes(len: usize, seed: u64, shape: impl Fn(u64) -> u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&shape(x).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_dirs_are_fresh_and_removed() {
        let path = {
            let dir = ScratchDir::new("testkit-self");
            std::fs::write(dir.path().join("f"), b"x").unwrap();
            dir.path().to_path_buf()
        };
        assert!(!path.exists());
    }

    #[test]
    fn tools_are_found_and_run() {
        assert!(have("sh"));
        assert!(!have("no-such-tool-uvmkit"));
        assert_eq!(
            run("sh", &["-c", "echo out; echo err >&2"]),
            (true, "out\nerr\n".to_string())
        );
        assert!(!run("sh", &["-c", "exit 3"]).0);
    }

    #[test]
    fn a_fuzz_case_holding_too_much_heap_fails() {
        let fuzz = fuzz::Fuzz::new("testkit-heap").default_cases(2).max_heap(1 << 20);
        let outcome = std::panic::catch_unwind(|| {
            fuzz.run(&[b"abc".to_vec()], |input| {
                let held = vec![1u8; (input.len() + 2) << 20];
                assert!(held.len() > 1 << 20);
            })
        });
        let message = *outcome.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("over the bound of 1048576 bytes"), "{message}");
    }

    #[test]
    fn peak_heap_counts_what_a_closure_holds_at_once() {
        let (len, held) = fuzz::peak_heap(|| {
            let a = vec![1u8; 3 << 20];
            drop(a);
            vec![2u8; 1 << 20].len()
        });
        assert_eq!(len, 1 << 20);
        assert!((3 << 20..4 << 20).contains(&held), "{held}");
    }

    #[test]
    fn patterns_are_fixed_per_seed() {
        assert_eq!(pattern(100, 1), pattern(100, 1));
        assert_ne!(pattern(100, 1), pattern(100, 2));
        assert_eq!(pattern(13, 7).len(), 13);
        let nonzero = nonzero_pattern(1 << 16, 1);
        assert!(nonzero.chunks(8).all(|w| w[0] & 1 == 1));
        assert_eq!(nonzero[1..8], pattern(8, 1)[1..8]);
    }
}
