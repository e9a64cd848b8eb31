//! Supervised services: start in `after` order, wait for readiness, restart with backoff, keep
//! their output, stop in reverse order; and the one-time loading of preloaded image archives.
//!
//! The [`Supervisor`] never waits for children itself: whoever reaps (PID 1's event loop, or a
//! test) hands each ended child's status to [`Supervisor::child_exited`], and calls
//! [`Supervisor::poll`] by [`Supervisor::next_due`] for timers (readiness probes, restart
//! delays). So exactly one place calls `waitpid`, and the supervisor runs unchanged outside
//! PID 1.
//!
//! The preload job is a small state machine driven the same way. By default it streams each
//! archive to the engine's API socket ([`image_load`]) on a thread of its own, which the event
//! loop looks at on every poll and gives up on after [`PRELOAD_LOAD_TIMEOUT`]; with a loading
//! command, the commands are children like any other, so their statuses arrive through
//! [`Supervisor::child_exited`] with no second reaper to race. Between loads the event loop only
//! writes a marker and deletes an archive. Each process's output is read by a thread of its own
//! (blocking pipe reads), which writes lines to the console and the service's log file.

mod image_load;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::log;
use crate::sys;
use uvmkit_init_config::{
    PreloadImage, PreloadSection, Readiness, RestartPolicy, ServiceSpec, PRELOAD_MARKER_DIR, SERVICE_LOG_DIR,
    SERVICE_PATH,
};

/// A log file is renamed to `NAME.log.1` when it would grow past this.
pub const LOG_FILE_LIMIT: u64 = 10 << 20;
/// Output lines longer than this are cut.
pub const MAX_LINE: usize = 4096;
/// How often an unready service is probed while its `ready_timeout` runs.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How often a service that missed its `ready_timeout` is still probed (to log when it is).
const LATE_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a TCP readiness probe waits for a connection.
const TCP_PROBE_TIMEOUT: Duration = Duration::from_millis(100);
/// How long an HTTP readiness probe waits for the status line.
const HTTP_PROBE_TIMEOUT: Duration = Duration::from_millis(50);
/// The first restart delay; it doubles after each quick exit.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest restart delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A process that ran this long resets the restart delay.
const STABLE_RUN: Duration = Duration::from_secs(30);
/// How long a process gets to end after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// How long a preload command gets to end after SIGTERM at shutdown.
const PRELOAD_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one archive's load through the engine's API may take in all.
pub const PRELOAD_LOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long the engine may go without taking archive bytes or sending an answer.
const PRELOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the event loop looks at a load through the API.
const PRELOAD_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long shutdown waits for output reader threads to see the end of their pipes.
const READER_WAIT: Duration = Duration::from_secs(1);

/// Reaps those of the given children that have ended (it may reap others too) and returns
/// their process IDs and wait statuses: `waitpid(-1)` in PID 1, `waitpid(pid)` in tests.
pub type Reap<'a> = dyn FnMut(&[libc::pid_t]) -> Vec<(libc::pid_t, libc::c_int)> + 'a;

/// Where the supervisor keeps files; [`Paths::system`] in the running system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The directory of `NAME.log` files.
    pub log_dir: PathBuf,
    /// The directory of `<sha256>.loaded` preload markers.
    pub preload_dir: PathBuf,
    /// The cgroup v2 hierarchy in which each service gets a cgroup of its own, `NAME`, as
    /// systemd gives each unit one: a service's memory and CPU are then counted apart from
    /// the others', and dockerd, seeing its own `memory.swap.max`, knows swap limits work.
    /// None: services stay in the init's cgroup.
    pub cgroup_root: Option<PathBuf>,
}

impl Paths {
    /// [`SERVICE_LOG_DIR`] and [`PRELOAD_MARKER_DIR`].
    pub fn system() -> Paths {
        Paths {
            log_dir: PathBuf::from(SERVICE_LOG_DIR),
            preload_dir: PathBuf::from(PRELOAD_MARKER_DIR),
            cgroup_root: Some(PathBuf::from(CGROUP_ROOT)),
        }
    }
}

/// Where the init mounts the cgroup v2 hierarchy.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Makes (once) the cgroup `root/NAME` and opens its `cgroup.procs` for the child to move
/// itself in; a failure is logged and the service runs in the init's cgroup instead.
fn service_cgroup(root: &Path, name: &str) -> Option<std::os::fd::OwnedFd> {
    let dir = root.join(name);
    let opened = fs::create_dir(&dir)
        .or_else(|err| if dir.is_dir() { Ok(()) } else { Err(err) })
        .and_then(|()| fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs")));
    match opened {
        Ok(file) => Some(file.into()),
        Err(err) => {
            log!("service {name}: no cgroup of its own at {}: {err}", dir.display());
            None
        }
    }
}

/// How a child process ended, decoded from its `wait(2)` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It called `exit` with this status.
    Status(i32),
    /// A signal ended it.
    Signal(i32),
}

impl Exit {
    /// Decodes a raw wait status.
    pub fn from_wait_status(status: libc::c_int) -> Exit {
        if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Status(libc::WEXITSTATUS(status))
        }
    }

    /// Whether it exited with status 0.
    pub fn success(self) -> bool {
        self == Exit::Status(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Exit::Status(code) => write!(f, "exited with status {code}"),
            Exit::Signal(signal) => match sys::signal_name(signal) {
                Some(name) => write!(f, "was killed by signal {signal} ({name})"),
                None => write!(f, "was killed by signal {signal}"),
            },
        }
    }
}

/// The restart delay after `failures` quick exits in a row (1 s, 2 s, 4 s ... 30 s).
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(5);
    (FIRST_BACKOFF * (1 << doublings)).min(MAX_BACKOFF)
}

/// Whether `policy` restarts a process that ended with `exit`.
pub fn restarts(policy: RestartPolicy, exit: Exit) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !exit.success(),
        RestartPolicy::Never => false,
    }
}

fn seconds(duration: Duration) -> String {
    format!("{}.{} s", duration.as_secs(), duration.subsec_millis() / 100)
}

fn since_kernel_start() -> String {
    let t = sys::boottime();
    format!("{}.{:03} s", t.as_secs(), t.subsec_millis())
}

/// One output stream's destinations: the console (as `PREFIX: line`) and `DIR/NAME.log`.
struct OutputLog {
    prefix: String,
    console: bool,
    path: PathBuf,
    file: Mutex<LogFile>,
}

/// The open log file and its size; `closed` once shutdown has let go of it.
#[derive(Default)]
struct LogFile {
    file: Option<File>,
    size: u64,
    closed: bool,
}

impl OutputLog {
    fn new(prefix: &str, console: bool, dir: &Path) -> OutputLog {
        OutputLog {
            prefix: prefix.to_string(),
            console,
            path: dir.join(format!("{prefix}.log")),
            file: Mutex::new(LogFile::default()),
        }
    }

    /// Writes one line (without its newline) to the console and the log file. Failures to
    /// write the file are reported once per opening, then lines go to the console only.
    fn write_line(&self, line: &[u8]) {
        if self.console {
            let mut text = Vec::with_capacity(self.prefix.len() + 2 + line.len() + 1);
            text.extend_from_slice(self.prefix.as_bytes());
            text.extend_from_slice(b": ");
            text.extend_from_slice(line);
            text.push(b'\n');
            let _ = io::stderr().lock().write_all(&text);
        }
        let mut log = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if log.closed {
            return;
        }
        let needed = line.len() as u64 + 1;
        if log.file.is_some() && log.size + needed > LOG_FILE_LIMIT {
            log.file = None;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            let _ = fs::rename(&self.path, old);
        }
        if log.file.is_none() {
            match self.open() {
                Ok((file, size)) => {
                    log.file = Some(file);
                    log.size = size;
                }
                Err(err) => {
                    log!(
                        "cannot write {}: {err}; output goes to the console only",
                        self.path.display()
                    );
                    log.closed = true;
                    return;
                }
            }
        }
        if let Some(file) = log.file.as_mut() {
            let mut record = Vec::with_capacity(line.len() + 1);
            record.extend_from_slice(line);
            record.push(b'\n');
            if file.write_all(&record).is_ok() {
                log.size += needed;
            }
        }
    }

    fn open(&self) -> io::Result<(File, u64)> {
        if let Some(dir) = self.path.parent() {
            fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        let size = file.metadata()?.len();
        Ok((file, size))
    }

    /// Closes the file for good (before file systems are unmounted).
    fn close(&self) {
        let mut log = self.file.lock().unwrap_or_else(|p| p.into_inner());
        log.file = None;
        log.closed = true;
    }
}

/// Splits `input` into lines for `emit`, without the newline (and a `\r` before it). A line
/// longer than `max` bytes is emitted cut to `max` bytes followed by ` [cut]` as soon as it
/// reaches that length, and the rest of it is dropped, so memory stays bounded.
fn split_lines(mut input: impl BufRead, max: usize, mut emit: impl FnMut(&[u8])) {
    let mut line: Vec<u8> = Vec::new();
    let mut dropping = false;
    loop {
        let buf = match input.fill_buf() {
            Ok([]) => break,
            Ok(buf) => buf,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let newline = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..newline.unwrap_or(buf.len())];
        if !dropping {
            let room = max - line.len();
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.len() > room || (line.len() == max && newline.is_none()) {
                line.extend_from_slice(b" [cut]");
                emit(&line);
                line.clear();
                dropping = true;
            }
        }
        let consumed = chunk.len() + usize::from(newline.is_some());
        input.consume(consumed);
        if newline.is_some() {
            if !dropping {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                emit(&line);
            }
            line.clear();
            dropping = false;
        }
    }
    if !line.is_empty() {
        emit(&line);
    }
}

/// Spawns `argv` the way every supervised process starts: a clean environment (`PATH`,
/// `HOME=/root`, then `env`), stdin `/dev/null`, stdout and stderr into one pipe read by a
/// thread that writes lines to `output`, a new session, an empty signal mask and `limits`.
fn spawn(
    argv: &[String],
    env: &BTreeMap<String, String>,
    limits: Vec<sys::Rlimit>,
    cgroup_procs: Option<std::os::fd::OwnedFd>,
    output: Arc<OutputLog>,
) -> io::Result<(libc::pid_t, JoinHandle<()>)> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let (reader, writer) = io::pipe()?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", SERVICE_PATH)
        .env("HOME", "/root")
        .envs(env)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    sys::start_session_with_limits(&mut command, limits, cgroup_procs);
    let child = command.spawn()?;
    // The parent's copies of the pipe's write end must be gone for the reader to see its end.
    drop(command);
    let pid = child.id() as libc::pid_t;
    // The child is reaped by whoever calls `waitpid`, not through `Child`.
    drop(child);
    let reader = std::thread::Builder::new()
        .name(format!("output {}", output.prefix))
        .spawn(move || split_lines(BufReader::new(reader), MAX_LINE, |line| output.write_line(line)))?;
    Ok((pid, reader))
}

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for its `after` services to settle.
    Waiting,
    /// Its process runs.
    Running {
        pid: libc::pid_t,
        since: Instant,
        ready: bool,
        next_probe: Instant,
    },
    /// It ended and starts again at `until`.
    Backoff { until: Instant },
    /// It ended and will not start again.
    Ended,
}

struct Service {
    spec: ServiceSpec,
    limits: Vec<sys::Rlimit>,
    output: Arc<OutputLog>,
    phase: Phase,
    /// Ready, given up on, or ended for good: the services after it may start.
    settled: bool,
    /// When waiting for readiness gives up; set at the first start.
    settle_by: Option<Instant>,
    /// Quick exits in a row, for the restart delay.
    failures: u32,
}

/// The preload job: archives loaded one after the other once a service is ready.
struct Preload {
    spec: PreloadSection,
    output: Arc<OutputLog>,
    /// The index of the next image to look at.
    next: usize,
    /// The loading process: pid, image index, start time.
    running: Option<(libc::pid_t, usize, Instant)>,
    /// The load through the engine's API: the load, image index, start time.
    loading: Option<(image_load::Load, usize, Instant)>,
    finished: bool,
}

/// Starts, watches, restarts and stops the configured services.
pub struct Supervisor {
    services: Vec<Service>,
    preload: Option<Preload>,
    paths: Paths,
    /// Service indices in the order of their first start.
    start_order: Vec<usize>,
    readers: Vec<JoinHandle<()>>,
    stopping: bool,
}

impl Supervisor {
    /// A supervisor for `services` (already validated: known `after` names, no cycles) and the
    /// optional preload job; nothing starts before the first [`Supervisor::poll`].
    pub fn new(services: Vec<ServiceSpec>, preload: Option<PreloadSection>, paths: Paths) -> Supervisor {
        let services = services
            .into_iter()
            .map(|spec| Service {
                limits: spec
                    .rlimits
                    .iter()
                    .filter_map(|(name, value)| Some((sys::rlimit_resource(name)?, value.limit().ok()?)))
                    .collect(),
                output: Arc::new(OutputLog::new(&spec.name, spec.console, &paths.log_dir)),
                spec,
                phase: Phase::Waiting,
                settled: false,
                settle_by: None,
                failures: 0,
            })
            .collect();
        let preload = preload.map(|spec| Preload {
            spec,
            output: Arc::new(OutputLog::new("preload", true, &paths.log_dir)),
            next: 0,
            running: None,
            loading: None,
            finished: false,
        });
        Supervisor {
            services,
            preload,
            paths,
            start_order: Vec::new(),
            readers: Vec::new(),
            stopping: false,
        }
    }

    /// Whether every service has settled: ready, given up on after `ready_timeout`, or ended
    /// with no restart coming.
    pub fn all_settled(&self) -> bool {
        self.services.iter().all(|s| s.settled)
    }

    /// The process IDs of every running supervised process (services and preload).
    pub fn pids(&self) -> Vec<libc::pid_t> {
        let services = self.services.iter().filter_map(|s| match s.phase {
            Phase::Running { pid, .. } => Some(pid),
            _ => None,
        });
        let preload = self.preload.as_ref().and_then(|p| p.running.map(|(pid, _, _)| pid));
        services.chain(preload).collect()
    }

    /// When [`Supervisor::poll`] next has work (a probe, a restart, a readiness deadline).
    pub fn next_due(&self) -> Option<Instant> {
        if self.stopping {
            return None;
        }
        let mut due: Option<Instant> = None;
        let mut consider = |at: Instant| due = Some(due.map_or(at, |d| d.min(at)));
        for service in &self.services {
            match service.phase {
                Phase::Running {
                    ready: false,
                    next_probe,
                    ..
                } if service.spec.ready.is_some() => consider(next_probe),
                Phase::Backoff { until } => consider(until),
                _ => {}
            }
            if let (false, Some(by)) = (service.settled, service.settle_by) {
                consider(by);
            }
        }
        if self.preload.as_ref().is_some_and(|p| p.loading.is_some()) {
            consider(Instant::now() + PRELOAD_POLL_INTERVAL);
        }
        due
    }

    /// Does what is due at `now`: starts services whose `after` services have settled and
    /// those whose restart delay is over, probes readiness, gives up on readiness at
    /// `ready_timeout`, and moves the preload job on.
    pub fn poll(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        self.readers.retain(|reader| !reader.is_finished());
        // A service settling can let others start, which can settle at once (no readiness).
        loop {
            let mut changed = false;
            for i in 0..self.services.len() {
                changed |= self.step(i, now);
            }
            if !changed {
                break;
            }
        }
        self.step_preload(now);
    }

    /// Moves service `i` on; returns whether it settled or started.
    fn step(&mut self, i: usize, now: Instant) -> bool {
        let mut changed = false;
        match self.services[i].phase {
            Phase::Waiting => {
                let after = &self.services[i].spec.after;
                let blocked = after
                    .iter()
                    .any(|name| self.services.iter().any(|s| &s.spec.name == name && !s.settled));
                if !blocked {
                    self.start(i, now);
                    changed = true;
                }
            }
            Phase::Backoff { until } if now >= until => {
                self.start(i, now);
                changed = true;
            }
            Phase::Running {
                pid,
                since,
                ready: false,
                next_probe,
            } if now >= next_probe => {
                let service = &mut self.services[i];
                let answered = service.spec.ready.as_ref().is_none_or(probe);
                if answered {
                    service.phase = Phase::Running {
                        pid,
                        since,
                        ready: true,
                        next_probe,
                    };
                    log!(
                        "service {} ready in {} ms ({} since the kernel started)",
                        service.spec.name,
                        now.saturating_duration_since(since).as_millis(),
                        since_kernel_start()
                    );
                    changed |= !service.settled;
                    service.settled = true;
                } else {
                    let interval = if service.settled {
                        LATE_PROBE_INTERVAL
                    } else {
                        PROBE_INTERVAL
                    };
                    service.phase = Phase::Running {
                        pid,
                        since,
                        ready: false,
                        next_probe: now + interval,
                    };
                }
            }
            _ => {}
        }
        let service = &mut self.services[i];
        if let (false, Some(by)) = (service.settled, service.settle_by) {
            if now >= by {
                service.settled = true;
                changed = true;
                log!(
                    "service {} not ready after {} s; starting what comes after it anyway",
                    service.spec.name,
                    service.spec.ready_timeout
                );
            }
        }
        changed
    }

    /// Starts service `i`'s process (creating its directories first).
    fn start(&mut self, i: usize, now: Instant) {
        if !self.start_order.contains(&i) {
            self.start_order.push(i);
        }
        let service = &mut self.services[i];
        service
            .settle_by
            .get_or_insert(now + Duration::from_secs(service.spec.ready_timeout));
        for dir in &service.spec.directories {
            if let Err(err) = fs::DirBuilder::new().recursive(true).mode(0o755).create(dir) {
                log!("service {}: cannot create {}: {err}", service.spec.name, dir.display());
            }
        }
        let cgroup = self
            .paths
            .cgroup_root
            .as_deref()
            .and_then(|root| service_cgroup(root, &service.spec.name));
        match spawn(
            &service.spec.command,
            &service.spec.env,
            service.limits.clone(),
            cgroup,
            service.output.clone(),
        ) {
            Ok((pid, reader)) => {
                self.readers.push(reader);
                log!(
                    "service {} started (pid {pid}): {}",
                    service.spec.name,
                    service.spec.command.join(" ")
                );
                let ready = service.spec.ready.is_none();
                service.phase = Phase::Running {
                    pid,
                    since: now,
                    ready,
                    next_probe: now,
                };
                if ready {
                    service.settled = true;
                }
            }
            Err(err) => {
                let what = format!(
                    "service {}: cannot start {}: {err}",
                    service.spec.name, service.spec.command[0]
                );
                // A failed start counts as a failed run of no length.
                self.after_exit(i, what, Exit::Status(127), Duration::ZERO, now);
            }
        }
    }

    /// Hands over a reaped child: `pid` ended with wait status `status` at `now`. Returns
    /// whether it was one of the supervisor's processes.
    pub fn child_exited(&mut self, pid: libc::pid_t, status: libc::c_int, now: Instant) -> bool {
        let exit = Exit::from_wait_status(status);
        if let Some(i) = self
            .services
            .iter()
            .position(|s| matches!(s.phase, Phase::Running { pid: p, .. } if p == pid))
        {
            let Phase::Running { since, .. } = self.services[i].phase else {
                return true;
            };
            let ran = now.saturating_duration_since(since);
            let what = format!(
                "service {} (pid {pid}) {exit} after {}",
                self.services[i].spec.name,
                seconds(ran)
            );
            self.after_exit(i, what, exit, ran, now);
            return true;
        }
        if let Some(preload) = self.preload.as_mut() {
            if let Some((_, image, started)) = preload.running.filter(|(p, _, _)| *p == pid) {
                preload.running = None;
                preload.next = image + 1;
                let spec = &preload.spec.images[image];
                let took = now.saturating_duration_since(started);
                let outcome = if exit.success() { Ok(()) } else { Err(exit.to_string()) };
                finish_load(&self.paths.preload_dir, spec, took, outcome);
                return true;
            }
        }
        false
    }

    /// Logs `what` about service `i`'s process, which `exit`ed after running for `ran`, and
    /// schedules a restart or ends the service.
    fn after_exit(&mut self, i: usize, what: String, exit: Exit, ran: Duration, now: Instant) {
        let service = &mut self.services[i];
        if self.stopping || !restarts(service.spec.restart, exit) {
            service.phase = Phase::Ended;
            service.settled = true;
            if self.stopping {
                log!("{what}");
            } else {
                let policy = match service.spec.restart {
                    RestartPolicy::Always => "always",
                    RestartPolicy::OnFailure => "on-failure",
                    RestartPolicy::Never => "never",
                };
                log!("{what}; not restarting (restart = \"{policy}\")");
            }
            return;
        }
        if ran >= STABLE_RUN {
            service.failures = 0;
        }
        service.failures += 1;
        let delay = backoff(service.failures);
        service.phase = Phase::Backoff { until: now + delay };
        log!("{what}; restarting in {} s", delay.as_secs());
    }

    /// Moves the preload job on: collects a load through the API that has ended (or gives up
    /// on one past [`PRELOAD_LOAD_TIMEOUT`]), and once the job's service is ready, starts the
    /// next archive's load.
    fn step_preload(&mut self, now: Instant) {
        let Some(preload) = self.preload.as_mut() else {
            return;
        };
        if let Some((load, image, started)) = preload.loading.take() {
            let took = now.saturating_duration_since(started);
            if !load.is_finished() {
                if took >= PRELOAD_LOAD_TIMEOUT {
                    log!(
                        "preload: loading {} takes longer than {} s; giving up on it",
                        preload.spec.images[image].path.display(),
                        PRELOAD_LOAD_TIMEOUT.as_secs()
                    );
                    load.abort();
                    // The thread ends at once on the closed connection; its error is logged.
                }
                preload.loading = Some((load, image, started));
                return;
            }
            preload.next = image + 1;
            let outcome = load.wait().map(|_| ()).map_err(|err| err.to_string());
            finish_load(&self.paths.preload_dir, &preload.spec.images[image], took, outcome);
        }
        if preload.finished || preload.running.is_some() {
            return;
        }
        let Some(after) = self.services.iter().find(|s| s.spec.name == preload.spec.after) else {
            preload.finished = true;
            return;
        };
        match after.phase {
            Phase::Running { ready: true, .. } => {}
            Phase::Ended => {
                log!(
                    "preload: skipped: service {} is not running, and the images need it",
                    preload.spec.after
                );
                preload.finished = true;
                return;
            }
            _ => return,
        }
        while let Some(image) = preload.spec.images.get(preload.next) {
            let marker = marker_path(&self.paths.preload_dir, &image.sha256);
            if marker.exists() {
                log!(
                    "preload: {} already loaded ({})",
                    image.path.display(),
                    marker.display()
                );
                remove_archive(&image.path);
                preload.next += 1;
                continue;
            }
            if let Some(socket) = &preload.spec.socket {
                let output = preload.output.clone();
                let emit = move |line: &str| output.write_line(line.as_bytes());
                match image_load::start(socket, &image.path, PRELOAD_IDLE_TIMEOUT, emit) {
                    Ok(load) => {
                        log!("preload: loading {} through {}", image.path.display(), socket.display());
                        preload.loading = Some((load, preload.next, now));
                        return;
                    }
                    Err(err) => {
                        log!("preload: loading {} failed: {err}", image.path.display());
                        preload.next += 1;
                        continue;
                    }
                }
            }
            let mut argv = preload.spec.command.clone();
            argv.push(image.path.display().to_string());
            match spawn(&argv, &BTreeMap::new(), Vec::new(), None, preload.output.clone()) {
                Ok((pid, reader)) => {
                    self.readers.push(reader);
                    log!("preload: loading {} (pid {pid})", image.path.display());
                    preload.running = Some((pid, preload.next, now));
                    return;
                }
                Err(err) => {
                    log!(
                        "preload: loading {} failed: cannot start {}: {err}",
                        image.path.display(),
                        argv[0]
                    );
                    preload.next += 1;
                }
            }
        }
        preload.finished = true;
        log!("preload: done");
    }

    /// Stops everything at shutdown: the preload command, then each service in reverse start
    /// order (SIGTERM, up to `stop_timeout`, then SIGKILL); then waits briefly for output to
    /// drain and closes the log files. `reap` reaps ended children among the given pids (it may
    /// reap others too) and returns their pids and wait statuses. Nothing restarts afterwards.
    pub fn stop_all(&mut self, reap: &mut Reap<'_>) {
        self.stopping = true;
        if let Some((pid, image, _)) = self.preload.as_ref().and_then(|p| p.running) {
            let path = self
                .preload
                .as_ref()
                .map(|p| p.spec.images[image].path.clone())
                .unwrap_or_default();
            log!("preload: stopping the load of {} (pid {pid})", path.display());
            self.terminate(pid, "preload", PRELOAD_STOP_TIMEOUT, reap);
        }
        if let Some((load, image, _)) = self.preload.as_mut().and_then(|p| p.loading.take()) {
            let path = &self.preload.as_ref().expect("loading").spec.images[image].path;
            log!("preload: stopping the load of {}", path.display());
            load.abort();
            let deadline = Instant::now() + PRELOAD_STOP_TIMEOUT;
            while !load.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if load.is_finished() {
                let _ = load.wait();
            }
        }
        for i in self.start_order.clone().into_iter().rev() {
            let service = &mut self.services[i];
            match service.phase {
                Phase::Running { pid, .. } => {
                    let name = format!("service {}", service.spec.name);
                    let timeout = Duration::from_secs(service.spec.stop_timeout);
                    log!("stopping {name} (pid {pid})");
                    self.terminate(pid, &name, timeout, reap);
                }
                Phase::Backoff { .. } | Phase::Waiting => service.phase = Phase::Ended,
                Phase::Ended => {}
            }
        }
        let deadline = Instant::now() + READER_WAIT;
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.readers.retain(|reader| !reader.is_finished());
        for service in &self.services {
            service.output.close();
        }
        if let Some(preload) = &self.preload {
            preload.output.close();
        }
    }

    /// SIGTERM to `pid`, up to `timeout` for it to end, then SIGKILL. Children reaped meanwhile
    /// go through [`Supervisor::child_exited`], which logs their end.
    fn terminate(&mut self, pid: libc::pid_t, name: &str, timeout: Duration, reap: &mut Reap<'_>) {
        let started = Instant::now();
        let _ = sys::kill(pid, libc::SIGTERM);
        let _ = sys::kill(pid, libc::SIGCONT);
        if self.wait_for(pid, timeout, reap) {
            log!("{name} stopped in {} ms", started.elapsed().as_millis());
            return;
        }
        log!(
            "{name} did not stop within {} s of SIGTERM; sending SIGKILL",
            timeout.as_secs()
        );
        let _ = sys::kill(pid, libc::SIGKILL);
        if !self.wait_for(pid, KILL_WAIT, reap) {
            log!("{name} (pid {pid}) did not end even after SIGKILL");
        }
    }

    /// Reaps until `pid` has ended or `limit` passes; returns whether it ended.
    fn wait_for(&mut self, pid: libc::pid_t, limit: Duration, reap: &mut Reap<'_>) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let mut ended = false;
            for (reaped, status) in reap(&self.pids()) {
                ended |= reaped == pid;
                self.child_exited(reaped, status, Instant::now());
            }
            if ended {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether a service's readiness check answers now.
fn probe(ready: &Readiness) -> bool {
    match ready {
        Readiness::Unix(path) => UnixStream::connect(path).is_ok(),
        Readiness::Tcp(port) => {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
            TcpStream::connect_timeout(&addr, TCP_PROBE_TIMEOUT).is_ok()
        }
        Readiness::HttpUnix(path) => http_answers(path).unwrap_or(false),
    }
}

/// Whether the server on unix socket `path` answers `GET /` with an HTTP status line
/// (RFC 9112 section 4: `HTTP-version SP status-code`) within [`HTTP_PROBE_TIMEOUT`]. Any status
/// counts: the server is serving requests.
fn http_answers(path: &Path) -> io::Result<bool> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_write_timeout(Some(HTTP_PROBE_TIMEOUT))?;
    stream.set_read_timeout(Some(HTTP_PROBE_TIMEOUT))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut head = [0u8; 9];
    let mut filled = 0;
    while filled < head.len() {
        match io::Read::read(&mut stream, &mut head[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(head[..filled].starts_with(b"HTTP/1.") && filled == head.len())
}

/// Logs how the load of `image` ended after `took`; a loaded archive gets its marker and is
/// deleted from the root file system.
fn finish_load(dir: &Path, image: &PreloadImage, took: Duration, outcome: Result<(), String>) {
    let took = took.as_millis();
    match outcome {
        Ok(()) => {
            match write_marker(dir, &image.sha256) {
                Ok(()) => log!("preload: loaded {} in {took} ms", image.path.display()),
                Err(err) => log!(
                    "preload: loaded {} in {took} ms, but cannot write its marker: {err}; \
                     it will be loaded again at the next boot",
                    image.path.display()
                ),
            }
            remove_archive(&image.path);
        }
        Err(err) => log!(
            "preload: loading {} failed: {err} after {took} ms",
            image.path.display()
        ),
    }
}

fn marker_path(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(format!("{sha256}.loaded"))
}

/// Records that the archive with `sha256` was loaded, durably (file and directory synced).
fn write_marker(dir: &Path, sha256: &str) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    let path = marker_path(dir, sha256);
    let mut file = File::create(&path)?;
    file.write_all(b"loaded\n")?;
    file.sync_all()?;
    File::open(dir)?.sync_all()
}

/// Deletes a loaded archive from the root file system, giving its memory back; one on a
/// read-only volume is left.
fn remove_archive(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        // An archive on a read-only settings volume takes no memory: it stays.
        Err(err) if err.kind() == io::ErrorKind::ReadOnlyFilesystem => {}
        Err(err) => log!("preload: cannot remove {}: {err}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use uvmkit_init_config::{PreloadImage, RlimitValue};

    fn have_perl() -> bool {
        let found = Path::new("/usr/bin/perl").exists();
        if !found {
            eprintln!("skipped: /usr/bin/perl (perl-base) is missing");
        }
        found
    }

    /// A fresh directory under the temporary directory, removed when dropped.
    struct Scratch(PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("uvmkit-init-services-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn paths(dir: &Path) -> Paths {
        Paths {
            log_dir: dir.join("log"),
            preload_dir: dir.join("preload"),
            cgroup_root: None,
        }
    }

    fn spec(name: &str, command: &[&str]) -> ServiceSpec {
        ServiceSpec {
            name: name.to_string(),
            command: command.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            after: Vec::new(),
            ready: None,
            ready_timeout: 120,
            restart: RestartPolicy::Never,
            rlimits: BTreeMap::new(),
            stop_timeout: 10,
            directories: Vec::new(),
            console: false,
        }
    }

    fn sh(name: &str, script: &str) -> ServiceSpec {
        spec(name, &["/bin/sh", "-c", script])
    }

    /// A perl one-liner (perl-base) listening on a unix socket, after a delay.
    fn unix_listener(name: &str, socket: &Path, delay: &str) -> ServiceSpec {
        let script = format!(
            "sleep {delay}; exec perl -MIO::Socket::UNIX -e \
             '$s = IO::Socket::UNIX->new(Local => $ARGV[0], Listen => 5) or die $!; sleep 60' {}",
            socket.display()
        );
        let mut service = sh(name, &script);
        service.ready = Some(Readiness::Unix(socket.to_path_buf()));
        service
    }

    /// Reaps the supervisor's own children only: other tests run processes in this process.
    fn reap_own(pids: &[libc::pid_t]) -> Vec<(libc::pid_t, libc::c_int)> {
        pids.iter()
            .filter_map(|&pid| sys::try_wait(pid).ok().flatten().map(|status| (pid, status)))
            .collect()
    }

    /// Drives the supervisor like PID 1's event loop until `done` or `limit` passes; calls
    /// `watch` every round. Returns whether `done` became true.
    fn drive(
        supervisor: &mut Supervisor,
        limit: Duration,
        mut watch: impl FnMut(&Supervisor),
        done: impl Fn(&Supervisor) -> bool,
    ) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            for (pid, status) in reap_own(&supervisor.pids()) {
                assert!(supervisor.child_exited(pid, status, Instant::now()));
            }
            supervisor.poll(Instant::now());
            watch(supervisor);
            if done(supervisor) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let wait = supervisor
                .next_due()
                .map_or(Duration::from_millis(20), |due| {
                    due.saturating_duration_since(Instant::now())
                })
                .min(Duration::from_millis(20));
            std::thread::sleep(wait);
        }
    }

    fn stop(supervisor: &mut Supervisor) {
        supervisor.stop_all(&mut |pids| reap_own(pids));
        assert!(supervisor.pids().is_empty());
    }

    fn phase(supervisor: &Supervisor, name: &str) -> Phase {
        supervisor.services.iter().find(|s| s.spec.name == name).unwrap().phase
    }

    fn started_at(supervisor: &Supervisor, name: &str) -> Option<Instant> {
        match phase(supervisor, name) {
            Phase::Running { since, .. } => Some(since),
            _ => None,
        }
    }

    fn read_log(dir: &Path, name: &str) -> String {
        fs::read_to_string(dir.join("log").join(format!("{name}.log"))).unwrap_or_default()
    }

    #[test]
    fn after_waits_for_unix_socket_readiness() {
        if !have_perl() {
            return;
        }
        let dir = scratch("unix");
        let socket = dir.join("a.sock");
        let a = unix_listener("a", &socket, "0.3");
        let mut b = sh(
            "b",
            &format!("test -S {} && echo socket-was-there; sleep 60", socket.display()),
        );
        b.after = vec!["a".to_string()];
        let c = sh("c", "echo independent; sleep 60");
        let mut supervisor = Supervisor::new(vec![b, a, c], None, paths(&dir));
        let begin = Instant::now();
        supervisor.poll(begin);
        // The independent service starts at once; b waits for a.
        assert!(started_at(&supervisor, "a").is_some());
        assert!(started_at(&supervisor, "c").is_some());
        assert_eq!(phase(&supervisor, "b"), Phase::Waiting);
        assert!(!supervisor.all_settled());
        assert!(drive(
            &mut supervisor,
            Duration::from_secs(10),
            |_| {},
            |s| s.all_settled()
        ));
        let b_start = started_at(&supervisor, "b").unwrap();
        assert!(b_start - begin >= Duration::from_millis(300), "{:?}", b_start - begin);
        assert!(matches!(phase(&supervisor, "a"), Phase::Running { ready: true, .. }));
        assert!(drive(
            &mut supervisor,
            Duration::from_secs(5),
            |_| {},
            |_| { read_log(&dir, "b").contains("socket-was-there") }
        ));
        stop(&mut supervisor);
        assert_eq!(read_log(&dir, "b"), "socket-was-there\n");
        assert_eq!(read_log(&dir, "c"), "independent\n");
    }

    #[test]
    fn tcp_readiness_and_readiness_timeout() {
        if !have_perl() {
            return;
        }
        let dir = scratch("tcp");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = sh(
            "server",
            &format!(
                "sleep 0.2; exec perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalAddr => \
                 \"127.0.0.1\", LocalPort => $ARGV[0], Listen => 5, ReuseAddr => 1) or die $!; sleep 60' {port}"
            ),
        );
        server.ready = Some(Readiness::Tcp(port));
        let mut never = sh("never", "exec sleep 60");
        never.ready = Some(Readiness::Unix(dir.join("missing.sock")));
        never.ready_timeout = 1;
        let mut client = sh("client", "exec sleep 60");
        client.after = vec!["server".to_string(), "never".to_string()];
        let mut supervisor = Supervisor::new(vec![server, never, client], None, paths(&dir));
        let begin = Instant::now();
        supervisor.poll(begin);
        assert!(drive(
            &mut supervisor,
            Duration::from_secs(10),
            |_| {},
            |s| { matches!(phase(s, "server"), Phase::Running { ready: true, .. }) }
        ));
        // The server is ready, but `never` holds the client back until its timeout.
        assert_eq!(phase(&supervisor, "client"), Phase::Waiting);
        assert!(drive(
            &mut supervisor,
            Duration::from_secs(5),
            |_| {},
            |s| s.all_settled()
        ));
        let waited = started_at(&supervisor, "client").unwrap() - begin;
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        assert!(matches!(
            phase(&supervisor, "never"),
            Phase::Running { ready: false, .. }
        ));
        stop(&mut supervisor);
    }

    #[test]
    fn http_readiness_needs_an_answer_not_just_a_listener() {
        let dir = scratch("http");
        let silent = dir.join("silent.sock");
        // Listening (connections queue in the backlog) but never serving, like dockerd while it
        // starts up.
        let _listener = std::os::unix::net::UnixListener::bind(&silent).unwrap();
        assert!(probe(&Readiness::Unix(silent.clone())));
        assert!(!probe(&Readiness::HttpUnix(silent)));

        let serving = dir.join("serving.sock");
        let listener = std::os::unix::net::UnixListener::bind(&serving).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 64];
            let _ = io::Read::read(&mut conn, &mut request);
            conn.write_all(b"HTTP/1.0 404 Not Found\r\n\r\n").unwrap();
        });
        assert!(probe(&Readiness::HttpUnix(serving.clone())));
        server.join().unwrap();
        assert!(!probe(&Readiness::HttpUnix(dir.join("missing.sock"))));
    }

    #[test]
    fn failures_restart_with_doubling_delay_and_never_does_not() {
        let dir = scratch("restart");
        let mut failing = sh("failing", "echo run; exit 3");
        failing.restart = RestartPolicy::OnFailure;
        failing.ready = Some(Readiness::Unix(dir.join("never.sock")));
        let once = sh("once", "echo once; exit 3");
        let mut supervisor = Supervisor::new(vec![failing, once], None, paths(&dir));
        let mut starts: Vec<Instant> = Vec::new();
        let mut last_pid = None;
        // `watch` sees every start: a start happens in `poll`, the exit is reaped only after.
        drive(
            &mut supervisor,
            Duration::from_millis(3600),
            |s| {
                if let Phase::Running { pid, since, .. } = phase(s, "failing") {
                    if last_pid != Some(pid) {
                        last_pid = Some(pid);
                        starts.push(since);
                    }
                }
            },
            |_| false,
        );
        assert_eq!(starts.len(), 3, "starts at 0 s, 1 s, 3 s");
        let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps[0] >= Duration::from_secs(1) && gaps[0] < Duration::from_millis(1500),
            "{gaps:?}"
        );
        assert!(
            gaps[1] >= Duration::from_secs(2) && gaps[1] < Duration::from_millis(2500),
            "{gaps:?}"
        );
        assert_eq!(phase(&supervisor, "once"), Phase::Ended);
        assert!(matches!(phase(&supervisor, "failing"), Phase::Backoff { .. }));
        // A service that keeps failing before it is ready has not settled (until its
        // ready_timeout); one that ended for good has.
        assert!(!supervisor.services[0].settled && supervisor.services[1].settled);
        stop(&mut supervisor);
        assert_eq!(phase(&supervisor, "failing"), Phase::Ended);
        assert_eq!(read_log(&dir, "failing"), "run\nrun\nrun\n");
        assert_eq!(read_log(&dir, "once"), "once\n");
    }

    #[test]
    fn restart_policies_and_backoff_sequence() {
        let ok = Exit::Status(0);
        let failed = Exit::Status(1);
        let killed = Exit::Signal(libc::SIGKILL);
        assert!(restarts(RestartPolicy::Always, ok) && restarts(RestartPolicy::Always, killed));
        assert!(!restarts(RestartPolicy::OnFailure, ok));
        assert!(restarts(RestartPolicy::OnFailure, failed) && restarts(RestartPolicy::OnFailure, killed));
        assert!(!restarts(RestartPolicy::Never, failed) && !restarts(RestartPolicy::Never, killed));
        let delays: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(Exit::from_wait_status(3 << 8), Exit::Status(3));
        assert_eq!(Exit::from_wait_status(libc::SIGKILL), killed);
        assert_eq!(killed.to_string(), "was killed by signal 9 (SIGKILL)");
        assert_eq!(failed.to_string(), "exited with status 1");
    }

    #[test]
    fn stop_goes_in_reverse_order_with_term_then_kill() {
        let dir = scratch("stop");
        // Ignores SIGTERM; SIGKILL ends it.
        let mut stubborn = sh("stubborn", "trap '' TERM; echo up; while :; do sleep 0.1; done");
        stubborn.stop_timeout = 1;
        let mut polite = spec("polite", &["/bin/sleep", "60"]);
        polite.after = vec!["stubborn".to_string()];
        let mut supervisor = Supervisor::new(vec![polite, stubborn], None, paths(&dir));
        supervisor.poll(Instant::now());
        assert!(drive(
            &mut supervisor,
            Duration::from_secs(5),
            |_| {},
            |_| { read_log(&dir, "stubborn").contains("up") }
        ));
        let pid_of = |s: &Supervisor, name: &str| match phase(s, name) {
            Phase::Running { pid, .. } => pid,
            other => panic!("{name} is {other:?}"),
        };
        let (stubborn_pid, polite_pid) = (pid_of(&supervisor, "stubborn"), pid_of(&supervisor, "polite"));
        let begin = Instant::now();
        let mut ended: Vec<(libc::pid_t, Exit, Duration)> = Vec::new();
        supervisor.stop_all(&mut |pids| {
            let reaped = reap_own(pids);
            for &(pid, status) in &reaped {
                ended.push((pid, Exit::from_wait_status(status), begin.elapsed()));
            }
            reaped
        });
        assert_eq!(ended.len(), 2, "{ended:?}");
        // Started last, stopped first, by SIGTERM at once.
        assert_eq!(ended[0].0, polite_pid);
        assert_eq!(ended[0].1, Exit::Signal(libc::SIGTERM));
        assert!(ended[0].2 < Duration::from_millis(900), "{ended:?}");
        // The one that ignores SIGTERM gets SIGKILL after its stop_timeout.
        assert_eq!(ended[1].0, stubborn_pid);
        assert_eq!(ended[1].1, Exit::Signal(libc::SIGKILL));
        assert!(ended[1].2 >= Duration::from_secs(1), "{ended:?}");
        assert!(supervisor.services.iter().all(|s| s.phase == Phase::Ended));
        // Nothing restarts after the stop.
        supervisor.poll(Instant::now() + Duration::from_secs(60));
        assert!(supervisor.pids().is_empty());
    }

    #[test]
    fn output_environment_limits_and_directories() {
        let dir = scratch("output");
        let run_dir = dir.join("run/deep/x");
        let mut service = sh(
            "env",
            "echo \"$PATH|$HOME|$FOO|$CARGO|$RUST_TEST_THREADS\"; echo to-stderr >&2; ulimit -n; \
             printf 'no newline'",
        );
        service.env.insert("FOO".to_string(), "bar".to_string());
        service.rlimits.insert("nofile".to_string(), RlimitValue::Value(256));
        service.directories = vec![run_dir.clone()];
        let mut supervisor = Supervisor::new(vec![service], None, paths(&dir));
        supervisor.poll(Instant::now());
        assert!(drive(
            &mut supervisor,
            Duration::from_secs(5),
            |_| {},
            |s| { s.all_settled() && s.pids().is_empty() }
        ));
        stop(&mut supervisor);
        assert_eq!(
            read_log(&dir, "env"),
            format!("{SERVICE_PATH}|/root|bar||\nto-stderr\n256\nno newline\n")
        );
        assert!(run_dir.is_dir());
    }

    #[test]
    fn each_service_moves_itself_into_its_own_cgroup_before_it_runs() {
        // A stand-in hierarchy with the file the kernel makes in every new cgroup: the child's
        // write of "0" (itself) lands there.
        let dir = scratch("cgroup");
        let mut paths = paths(&dir);
        paths.cgroup_root = Some(dir.join("cgroup"));
        fs::create_dir_all(dir.join("cgroup/moved")).unwrap();
        fs::write(dir.join("cgroup/moved/cgroup.procs"), "").unwrap();
        let mut supervisor = Supervisor::new(vec![sh("moved", "echo ran")], None, paths);
        supervisor.poll(Instant::now());
        assert!(drive(
            &mut supervisor,
            Duration::from_secs(5),
            |_| {},
            |s| { s.all_settled() && s.pids().is_empty() }
        ));
        stop(&mut supervisor);
        assert_eq!(fs::read_to_string(dir.join("cgroup/moved/cgroup.procs")).unwrap(), "0");
        assert_eq!(read_log(&dir, "moved"), "ran\n");
    }

    #[test]
    fn lines_are_split_and_long_lines_cut() {
        let mut lines: Vec<String> = Vec::new();
        let input = format!("one\r\ntwo\n{}\nthree\n\nlast", "x".repeat(20));
        // A tiny buffer makes lines arrive in pieces.
        split_lines(BufReader::with_capacity(3, input.as_bytes()), 8, |l| {
            lines.push(String::from_utf8_lossy(l).into_owned())
        });
        assert_eq!(lines, ["one", "two", "xxxxxxxx [cut]", "three", "", "last"]);
        let mut lines: Vec<String> = Vec::new();
        split_lines(BufReader::new(&b"12345678\n"[..]), 8, |l| {
            lines.push(String::from_utf8_lossy(l).into_owned())
        });
        assert_eq!(lines, ["12345678"]);
    }

    #[test]
    fn log_files_rotate_at_the_limit() {
        let dir = scratch("rotate");
        let log = OutputLog::new("big", false, &dir);
        let line = vec![b'a'; 1 << 20];
        for _ in 0..11 {
            log.write_line(&line);
        }
        log.close();
        let old = fs::metadata(dir.join("big.log.1")).unwrap().len();
        let new = fs::metadata(dir.join("big.log")).unwrap().len();
        assert_eq!(old, 9 * ((1 << 20) + 1));
        assert_eq!(new, 2 * ((1 << 20) + 1));
        // Closed: further lines do not reach the file.
        log.write_line(b"after close");
        assert_eq!(fs::metadata(dir.join("big.log")).unwrap().len(), new);
    }

    fn status_field(status: &str, key: &str) -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    }

    #[test]
    fn children_get_an_empty_signal_mask_and_their_own_session() {
        // PID 1 blocks the signals it reads from a signalfd; spawn from a thread that does too.
        let (blocked, child_mask, session, pid) = std::thread::spawn(|| {
            let _signals = sys::SignalFd::new(&[libc::SIGCHLD, libc::SIGTERM, libc::SIGUSR1]).unwrap();
            let own = fs::read_to_string("/proc/thread-self/status").unwrap();
            let output = Arc::new(OutputLog::new("mask", false, &scratch("mask")));
            let (pid, _reader) = spawn(
                &["/bin/sleep".to_string(), "5".to_string()],
                &BTreeMap::new(),
                Vec::new(),
                None,
                output,
            )
            .unwrap();
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            // proc(5): field 6 is the session ID; fields counted after the command's ')'.
            let session: libc::pid_t = stat[stat.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .nth(3)
                .unwrap()
                .parse()
                .unwrap();
            (
                status_field(&own, "SigBlk:"),
                status_field(&status, "SigBlk:"),
                session,
                pid,
            )
        })
        .join()
        .unwrap();
        sys::kill(pid, libc::SIGKILL).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while sys::try_wait(pid).unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_ne!(blocked, "0000000000000000", "the spawning thread blocks signals");
        assert_eq!(child_mask, "0000000000000000");
        assert_eq!(session, pid, "the child leads its own session");
    }

    #[test]
    fn preload_loads_each_archive_once_after_its_service_is_ready() {
        if !have_perl() {
            return;
        }
        let dir = scratch("preload");
        let socket = dir.join("docker.sock");
        let dockerd = unix_listener("dockerd", &socket, "0.2");
        let archive = |name: &str| {
            let path = dir.join(name);
            fs::write(&path, name).unwrap();
            path
        };
        let (good, bad, known) = (archive("good.tar"), archive("bad.tar"), archive("known.tar"));
        let sha = |c: char| c.to_string().repeat(64);
        fs::create_dir_all(dir.join("preload")).unwrap();
        fs::write(dir.join("preload").join(format!("{}.loaded", sha('c'))), "").unwrap();
        // Loading "needs" the socket: it proves the order. `bad` fails.
        let script = format!(
            "test -S {} || exit 9; case \"$0\" in *bad*) echo refusing; exit 2;; esac; echo \"loaded $(cat \"$0\")\"",
            socket.display()
        );
        let preload = PreloadSection {
            after: "dockerd".to_string(),
            socket: None,
            command: vec!["/bin/sh".to_string(), "-c".to_string(), script],
            images: [(&good, 'a'), (&bad, 'b'), (&known, 'c')]
                .into_iter()
                .map(|(path, c)| PreloadImage {
                    path: path.clone(),
                    sha256: sha(c),
                })
                .collect(),
        };
        let mut supervisor = Supervisor::new(vec![dockerd.clone()], Some(preload.clone()), paths(&dir));
        supervisor.poll(Instant::now());
        let finished = |s: &Supervisor| s.preload.as_ref().unwrap().finished;
        assert!(drive(&mut supervisor, Duration::from_secs(10), |_| {}, finished));
        stop(&mut supervisor);
        assert_eq!(read_log(&dir, "preload"), "loaded good.tar\nrefusing\n");
        let marker = |c: char| dir.join("preload").join(format!("{}.loaded", sha(c)));
        assert!(marker('a').exists() && !marker('b').exists());
        assert!(!good.exists(), "a loaded archive is removed");
        assert!(bad.exists(), "a failed archive stays for inspection");
        assert!(!known.exists(), "an archive loaded at an earlier boot is removed");

        // The next boot loads only what is left to load.
        let _ = fs::remove_file(&socket);
        fs::write(&good, "good.tar").unwrap();
        let mut supervisor = Supervisor::new(vec![dockerd], Some(preload), paths(&dir));
        supervisor.poll(Instant::now());
        assert!(drive(&mut supervisor, Duration::from_secs(10), |_| {}, finished));
        stop(&mut supervisor);
        assert_eq!(read_log(&dir, "preload"), "loaded good.tar\nrefusing\nrefusing\n");
        assert!(!good.exists());
    }

    /// A fake engine on `socket`: every connection that sends a request gets the archive's
    /// bytes echoed back as `Loaded image: BYTES`, or an error message for an archive holding
    /// `bad`; connections that send nothing (readiness probes) are dropped.
    fn fake_engine(socket: &Path) -> std::thread::JoinHandle<()> {
        let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut length = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some(n) = line.strip_prefix("Content-Length: ") {
                        length = n.trim().parse::<usize>().ok();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let Some(length) = length else { continue };
                let mut body = vec![0u8; length];
                io::Read::read_exact(&mut reader, &mut body).unwrap();
                let body = String::from_utf8(body).unwrap();
                let message = if body.contains("bad") {
                    "{\"errorDetail\":{\"message\":\"invalid tar header\"},\"error\":\"invalid tar header\"}"
                        .to_string()
                } else {
                    format!("{{\"stream\":\"Loaded image: {body}\\n\"}}")
                };
                let mut conn = conn;
                let _ = write!(
                    conn,
                    "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{message}\n"
                );
            }
        })
    }

    #[test]
    fn preload_through_the_engine_api_marks_what_loaded() {
        let dir = scratch("preload-api");
        let socket = dir.join("docker.sock");
        let archive = |name: &str| {
            let path = dir.join(name);
            fs::write(&path, name).unwrap();
            path
        };
        let (good, bad) = (archive("good.tar"), archive("bad.tar"));
        let sha = |c: char| c.to_string().repeat(64);
        let mut dockerd = sh("dockerd", "sleep 30");
        dockerd.ready = Some(Readiness::Unix(socket.clone()));
        let preload = PreloadSection {
            after: "dockerd".to_string(),
            socket: Some(socket.clone()),
            command: Vec::new(),
            images: [(&good, 'a'), (&bad, 'b')]
                .into_iter()
                .map(|(path, c)| PreloadImage {
                    path: path.clone(),
                    sha256: sha(c),
                })
                .collect(),
        };
        let mut supervisor = Supervisor::new(vec![dockerd], Some(preload), paths(&dir));
        // The engine starts late: nothing is sent before the service is ready.
        assert!(!drive(
            &mut supervisor,
            Duration::from_millis(300),
            |_| {},
            |s| { s.preload.as_ref().unwrap().loading.is_some() }
        ));
        assert!(dir.join("good.tar").exists() && !dir.join("preload").exists());
        let engine = fake_engine(&socket);
        let finished = |s: &Supervisor| s.preload.as_ref().unwrap().finished;
        assert!(drive(&mut supervisor, Duration::from_secs(10), |_| {}, finished));
        stop(&mut supervisor);
        drop(engine);
        assert_eq!(read_log(&dir, "preload"), "Loaded image: good.tar\n");
        let marker = |c: char| dir.join("preload").join(format!("{}.loaded", sha(c)));
        assert!(marker('a').exists() && !marker('b').exists());
        assert!(!good.exists(), "a loaded archive is removed");
        assert!(bad.exists(), "a failed archive stays for inspection");
    }
}
