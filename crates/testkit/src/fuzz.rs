//! A small deterministic fuzzer for the parsers of outside bytes, on stable Rust.
//!
//! [`Fuzz::run`] feeds a parser its valid seeds unchanged, then a fixed number of inputs made
//! from them by mutation (bit flips, interesting integers written over what may be a length
//! field, truncation, deletion, duplication, splices of two seeds, inserted dictionary
//! tokens) and some plain random bytes. Every input comes from the fuzzer's seed and the
//! case number alone, so a failure reproduces with the same environment. A case fails when
//! the parser panics, takes longer than the time bound, or (when the test binary installs
//! [`CountingAllocator`], see [`count_allocations!`](crate::count_allocations)) holds more
//! heap at once than the allocation bound. The failing input is written to a file named in
//! the panic message; keep it as a regression case next to the fuzz test.
//!
//! Environment: `UVMKIT_FUZZ_CASES` (mutated cases per target; the default is sized so every
//! fuzz test of the workspace runs in about a minute in release mode), `UVMKIT_FUZZ_SEED`
//! (a different fixed sequence), `UVMKIT_FUZZ_CASE` (run only that case number, and save
//! its input).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Mutated cases per target when `UVMKIT_FUZZ_CASES` is not set.
pub const DEFAULT_CASES: u64 = 3000;

/// One parser under test and the bounds it must keep.
pub struct Fuzz {
    name: &'static str,
    cases: u64,
    seed: u64,
    only_case: Option<u64>,
    max_len: usize,
    max_case_time: Duration,
    max_heap: usize,
    dictionary: Vec<Vec<u8>>,
}

impl Fuzz {
    /// A target named `name` (used in messages and for the per-target seed), with the default
    /// case count, inputs up to 64 KiB, 2 s and 64 MiB per case.
    pub fn new(name: &'static str) -> Fuzz {
        let env_u64 = |key: &str| {
            std::env::var(key).ok().map(|v| {
                let v = v.trim();
                let parsed = match v.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => v.parse(),
                };
                parsed.unwrap_or_else(|_| panic!("{key}={v:?} is not a number"))
            })
        };
        let base_seed = env_u64("UVMKIT_FUZZ_SEED").unwrap_or(0x75_76_6d_6b_69_74);
        Fuzz {
            name,
            cases: env_u64("UVMKIT_FUZZ_CASES").unwrap_or(DEFAULT_CASES),
            seed: base_seed ^ fnv1a(name.as_bytes()),
            only_case: env_u64("UVMKIT_FUZZ_CASE"),
            max_len: 64 << 10,
            max_case_time: Duration::from_secs(2),
            max_heap: 64 << 20,
            dictionary: Vec::new(),
        }
    }

    /// Runs `cases` mutated cases unless `UVMKIT_FUZZ_CASES` says otherwise (for targets
    /// whose cases are slow, such as decompressing whole archives).
    pub fn default_cases(mut self, cases: u64) -> Fuzz {
        if std::env::var_os("UVMKIT_FUZZ_CASES").is_none() {
            self.cases = cases;
        }
        self
    }

    /// The largest input a mutation may grow to.
    pub fn max_len(mut self, bytes: usize) -> Fuzz {
        self.max_len = bytes;
        self
    }

    /// The most heap one case may hold at once (checked with [`CountingAllocator`]).
    pub fn max_heap(mut self, bytes: usize) -> Fuzz {
        self.max_heap = bytes;
        self
    }

    /// The longest one case may take.
    pub fn max_case_time(mut self, time: Duration) -> Fuzz {
        self.max_case_time = time;
        self
    }

    /// Tokens of the format (`"\n "`, `"Depends:"`, `"[["`) that mutations insert and write
    /// over the input, so text formats are explored beyond random bytes.
    pub fn dictionary(mut self, tokens: &[&str]) -> Fuzz {
        self.dictionary.extend(tokens.iter().map(|t| t.as_bytes().to_vec()));
        self
    }

    /// Feeds `target` every seed, then the mutated cases; panics naming the first case that
    /// panicked, ran too long or held too much heap, with its input saved to a file.
    pub fn run(&self, seeds: &[Vec<u8>], target: impl Fn(&[u8])) {
        assert!(!seeds.is_empty(), "fuzz target {} needs at least one seed", self.name);
        let started = Instant::now();
        let watchdog = Watchdog::start(self.name, self.max_case_time * 10);
        let mut slowest = Duration::ZERO;
        let mut peak_heap = 0;
        let seed_cases = seeds
            .iter()
            .enumerate()
            .map(|(i, seed)| (format!("seed {i}"), seed.clone()));
        let cases: Box<dyn Iterator<Item = (String, Vec<u8>)>> = match self.only_case {
            Some(case) => Box::new(std::iter::once((format!("case {case}"), self.input(seeds, case)))),
            None => Box::new(
                seed_cases.chain((0..self.cases).map(|case| (format!("case {case}"), self.input(seeds, case)))),
            ),
        };
        for (label, input) in cases {
            if self.only_case.is_some() {
                eprintln!(
                    "fuzz {}: {label} saved at {}",
                    self.name,
                    self.save(&label, &input).display()
                );
            }
            watchdog.begin(&label, &input);
            let heap_before = heap::begin_case(self.name, self.max_heap);
            let start = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(|| target(&input)));
            let took = start.elapsed();
            let heap = heap::end_case(heap_before);
            watchdog.end();
            let failure = match outcome {
                Err(panic) => Some(format!("panicked: {}", panic_message(&panic))),
                Ok(()) if took > self.max_case_time => {
                    Some(format!("took {took:?}, over the bound of {:?}", self.max_case_time))
                }
                Ok(()) if heap > self.max_heap => Some(format!(
                    "held {heap} bytes of heap at once, over the bound of {} bytes",
                    self.max_heap
                )),
                Ok(()) => None,
            };
            if let Some(failure) = failure {
                let path = self.save(&label, &input);
                panic!(
                    "fuzz {}: {label} ({} bytes) {failure}; input saved at {}; keep it as a regression case \
                     (reproduce with UVMKIT_FUZZ_SEED=0x{:x} UVMKIT_FUZZ_CASE=N)",
                    self.name,
                    input.len(),
                    path.display(),
                    self.seed ^ fnv1a(self.name.as_bytes()),
                );
            }
            slowest = slowest.max(took);
            peak_heap = peak_heap.max(heap);
        }
        eprintln!(
            "fuzz {}: {} seeds + {} cases in {:?} (slowest {:?}, most heap {} KiB{})",
            self.name,
            seeds.len(),
            self.cases,
            started.elapsed(),
            slowest,
            peak_heap >> 10,
            if heap::counting() { "" } else { ", not counted" },
        );
    }

    /// The input of mutated case `case`: a function of the seed and the case number only.
    pub fn input(&self, seeds: &[Vec<u8>], case: u64) -> Vec<u8> {
        let mut rng = Rng::new(self.seed ^ case.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        if rng.below(16) == 0 {
            // Mostly short: a length below a random bound below a sixteenth of the maximum.
            let bound = rng.below(self.max_len as u64 / 16 + 1) + 1;
            let len = rng.below(bound) as usize;
            return (0..len).map(|_| rng.next() as u8).collect();
        }
        let mut data = seeds[rng.below(seeds.len() as u64) as usize].clone();
        let rounds = 1 + rng.below(4);
        for _ in 0..rounds {
            self.mutate(&mut data, seeds, &mut rng);
        }
        data.truncate(self.max_len);
        data
    }

    fn mutate(&self, data: &mut Vec<u8>, seeds: &[Vec<u8>], rng: &mut Rng) {
        let len = data.len() as u64;
        let at = |rng: &mut Rng| rng.below(len + 1) as usize;
        match rng.below(10) {
            // Flip one bit.
            0 if len > 0 => {
                let i = rng.below(len) as usize;
                data[i] ^= 1 << rng.below(8);
            }
            // Write an interesting integer, little or big endian, over what may be a length,
            // count or offset field.
            1 | 2 if len > 0 => {
                let width = [1usize, 2, 4, 8][rng.below(4) as usize];
                let value = INTERESTING[rng.below(INTERESTING.len() as u64) as usize];
                let bytes = if rng.below(2) == 0 {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                };
                let bytes = if rng.below(2) == 0 {
                    &bytes[..width]
                } else {
                    &bytes[8 - width..]
                };
                let i = rng.below(len) as usize;
                let end = (i + width).min(data.len());
                data[i..end].copy_from_slice(&bytes[..end - i]);
            }
            // Truncate.
            3 => data.truncate(at(rng)),
            // Delete a range.
            4 if len > 0 => {
                let start = at(rng);
                let end = (start + 1 + rng.below(64u64.min(len)) as usize).min(data.len());
                data.drain(start..end);
            }
            // Duplicate a range somewhere else.
            5 if len > 0 => {
                let start = rng.below(len) as usize;
                let end = (start + 1 + rng.below(256) as usize).min(data.len());
                let piece = data[start..end].to_vec();
                let dest = at(rng);
                data.splice(dest..dest, piece);
            }
            // Splice: the head of this input with the tail of another seed.
            6 => {
                let other = &seeds[rng.below(seeds.len() as u64) as usize];
                let cut = at(rng);
                let from = rng.below(other.len() as u64 + 1) as usize;
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            // Insert or write a dictionary token.
            7 | 8 if !self.dictionary.is_empty() => {
                let token = &self.dictionary[rng.below(self.dictionary.len() as u64) as usize];
                let i = at(rng);
                if rng.below(2) == 0 {
                    data.splice(i..i, token.iter().copied());
                } else {
                    let end = (i + token.len()).min(data.len());
                    data.splice(i..end, token.iter().copied());
                }
            }
            // Insert random bytes.
            _ => {
                let i = at(rng);
                let n = 1 + rng.below(16) as usize;
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(i..i, bytes);
            }
        }
    }

    fn save(&self, label: &str, input: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join("uvmkit-fuzz-failures");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{}-{}.bin", self.name, label.replace(' ', "-")));
        if let Err(e) = std::fs::write(&path, input) {
            eprintln!("fuzz {}: cannot save the input at {}: {e}", self.name, path.display());
        }
        path
    }
}

/// Runs `f` and returns its result with the most heap it held at once, in bytes. Needs
/// [`CountingAllocator`] installed (see [`count_allocations!`](crate::count_allocations)).
pub fn peak_heap<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = heap::begin_case("peak_heap", usize::MAX / 16);
    let out = f();
    let held = heap::end_case(before);
    assert!(
        heap::counting(),
        "peak_heap needs uvmkit_testkit::count_allocations!() in the test binary"
    );
    (out, held)
}

/// Integers that break length, count and offset arithmetic.
const INTERESTING: [u64; 16] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0xffff_ffff_ffff_ffff,
    0xffff_fffe,
    4096,
    1 << 40,
];

/// splitmix64: small, fast, and the same everywhere.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a non-string panic)".into())
}

/// Aborts the process, naming the case, when one case runs far beyond its time bound (a
/// parser in an endless loop cannot be stopped any other way).
struct Watchdog {
    current: Arc<Mutex<Option<(Instant, String, Vec<u8>)>>>,
    stop: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(name: &'static str, limit: Duration) -> Watchdog {
        let current: Arc<Mutex<Option<(Instant, String, Vec<u8>)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (watched, stopped) = (current.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let guard = watched.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((since, label, input)) = guard.as_ref() {
                    if since.elapsed() > limit {
                        let dir = std::env::temp_dir().join("uvmkit-fuzz-failures");
                        let _ = std::fs::create_dir_all(&dir);
                        let path = dir.join(format!("{name}-{}.bin", label.replace(' ', "-")));
                        let _ = std::fs::write(&path, input);
                        eprintln!(
                            "fuzz {name}: {label} still runs after {limit:?}: an endless loop? input saved at {}",
                            path.display()
                        );
                        std::process::abort();
                    }
                }
            }
        });
        Watchdog { current, stop }
    }

    fn begin(&self, label: &str, input: &[u8]) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), label.to_string(), input.to_vec()));
    }

    fn end(&self) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A global allocator that counts, per thread, the heap a fuzz case holds, so [`Fuzz::run`]
/// can check the allocation bound. Install it with [`count_allocations!`](crate::count_allocations).
///
/// A single request beyond 16 times the case's bound is refused (the allocation fails and
/// the process aborts with Rust's "memory allocation failed" message) after a line on
/// standard error naming the target, so an unbounded `Vec::with_capacity(length_from_input)`
/// cannot take the machine's memory first.
pub struct CountingAllocator;

mod heap {
    use super::*;

    static COUNTING: AtomicBool = AtomicBool::new(false);

    thread_local! {
        /// Bytes this thread holds (frees of other threads' memory can make it dip).
        static LIVE: Cell<isize> = const { Cell::new(0) };
        /// The most `LIVE` reached since the case began.
        static PEAK: Cell<isize> = const { Cell::new(0) };
        /// The target running on this thread and its bound, while a case runs.
        static CASE: Cell<Option<(&'static str, usize)>> = const { Cell::new(None) };
    }

    pub(super) fn counting() -> bool {
        COUNTING.load(Ordering::Relaxed)
    }

    pub(super) fn begin_case(name: &'static str, bound: usize) -> isize {
        let live = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(live));
        CASE.with(|c| c.set(Some((name, bound))));
        live
    }

    /// The most heap held beyond what was held when the case began.
    pub(super) fn end_case(before: isize) -> usize {
        CASE.with(|c| c.set(None));
        (PEAK.with(Cell::get) - before).max(0) as usize
    }

    /// Whether a request of `size` bytes may go to the system allocator.
    pub(super) fn admit(size: usize) -> bool {
        let Ok(Some((name, bound))) = CASE.try_with(Cell::get) else {
            return true;
        };
        if size <= bound.saturating_mul(16) {
            return true;
        }
        let mut line = StackText::default();
        let _ = write!(
            line,
            "fuzz {name}: one allocation of {size} bytes asked for, over 16 times the bound of {bound} bytes; \
             an unbounded length from the input? (rerun with UVMKIT_FUZZ_CASE=N to find the case)\n"
        );
        let _ = std::io::stderr().write_all(line.text());
        false
    }

    pub(super) fn add(delta: isize) {
        COUNTING.store(true, Ordering::Relaxed);
        let _ = LIVE.try_with(|live| {
            let now = live.get() + delta;
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }

    /// Text formatted without allocating (the allocator cannot allocate).
    pub(super) struct StackText {
        buf: [u8; 400],
        len: usize,
    }

    impl Default for StackText {
        fn default() -> Self {
            StackText { buf: [0; 400], len: 0 }
        }
    }

    impl StackText {
        pub(super) fn text(&self) -> &[u8] {
            &self.buf[..self.len]
        }
    }

    impl std::fmt::Write for StackText {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let n = s.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
            Ok(())
        }
    }

    use std::fmt::Write as _;
}

// SAFETY: every call goes to `System` with the caller's layout; the bookkeeping only touches
// this thread's `Cell`s, which need no allocation.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !heap::admit(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = System.alloc(layout);
        if !p.is_null() {
            heap::add(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !heap::admit(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            heap::add(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        heap::add(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() && !heap::admit(new_size) {
            return std::ptr::null_mut();
        }
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            heap::add(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Installs [`CountingAllocator`] as the test binary's global allocator, so [`Fuzz::run`]
/// checks each case's heap. Once per test binary (crate root or any module).
#[macro_export]
macro_rules! count_allocations {
    () => {
        #[global_allocator]
        static UVMKIT_FUZZ_ALLOCATOR: $crate::fuzz::CountingAllocator = $crate::fuzz::CountingAllocator;
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_fixed_per_case_and_differ_between_cases() {
        let fuzz = Fuzz::new("testkit-self");
        let seeds = vec![b"Package: a\nVersion: 1\n".to_vec(), vec![0u8; 100]];
        assert_eq!(fuzz.input(&seeds, 7), fuzz.input(&seeds, 7));
        let distinct: std::collections::BTreeSet<Vec<u8>> = (0..200).map(|c| fuzz.input(&seeds, c)).collect();
        assert!(distinct.len() > 150, "only {} distinct inputs", distinct.len());
        assert!((0..200).all(|c| fuzz.input(&seeds, c).len() <= 64 << 10));
    }

    #[test]
    fn a_panicking_case_fails_with_its_saved_input() {
        let fuzz = Fuzz::new("testkit-panics").default_cases(500);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            fuzz.run(&[b"abc".to_vec()], |input| {
                assert!(!input.contains(&0xff), "found 0xff")
            })
        }));
        let message = panic_message(&outcome.unwrap_err());
        assert!(message.contains("panicked: found 0xff"), "{message}");
        let path = message
            .split("input saved at ")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap();
        assert!(std::fs::read(path).unwrap().contains(&0xff));
    }

    #[test]
    fn a_slow_case_fails() {
        let fuzz = Fuzz::new("testkit-slow")
            .default_cases(3)
            .max_case_time(Duration::from_millis(5));
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            fuzz.run(&[b"abc".to_vec()], |input| {
                if input != b"abc" {
                    std::thread::sleep(Duration::from_millis(20))
                }
            })
        }));
        assert!(panic_message(&outcome.unwrap_err()).contains("over the bound of 5ms"));
    }
}
