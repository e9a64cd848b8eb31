//! The init's life as PID 1: boot phases in order, then an event loop that never returns.

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use uvmkit_init_config::{InitConfig, RootMode, CONFIG_PATH, DATA_LABEL};

use crate::clock;
use crate::config;
use crate::datadisk;
use crate::host_agent;
use crate::identity;
use crate::instance;
use crate::log;
use crate::memory;
use crate::modules;
use crate::mounts;
use crate::network;
use crate::power::PowerButtons;
use crate::rootfs;
use crate::services::{Paths, Supervisor};
use crate::shares;
use crate::shutdown::{self, Action};
use crate::sys;
use crate::system;

/// How often input devices are rescanned for a power button.
const RESCAN_INTERVAL: Duration = Duration::from_secs(2);

/// The signals PID 1 handles, all through a signalfd.
const HANDLED_SIGNALS: [libc::c_int; 6] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGHUP,
];

/// Runs `phase`, turning a panic inside it into a log line so that PID 1 goes on.
fn guarded<T>(name: &str, phase: impl FnOnce() -> T) -> Option<T> {
    match panic::catch_unwind(AssertUnwindSafe(phase)) {
        Ok(value) => Some(value),
        Err(_) => {
            log!("{name} failed with a panic (logged above); continuing");
            None
        }
    }
}

/// Boots the system and then serves as PID 1 forever.
pub fn run(argv: Vec<OsString>) -> ! {
    panic::set_hook(Box::new(|info| log::line(&format!("panic: {info}"))));

    guarded("console setup", early_setup);
    let moved = std::env::var_os(rootfs::MOVED_MARKER).is_some();
    if moved {
        // Children must not see it.
        std::env::remove_var(rootfs::MOVED_MARKER);
        log!("running from the new root");
    } else {
        log!("uvmkit-init {} starting", env!("CARGO_PKG_VERSION"));
    }
    let mut config = guarded("configuration", load_config).unwrap_or_default();

    if !moved && config.root == RootMode::Tmpfs && rootfs::root_is_initramfs() {
        guarded("root move", || move_root_and_reexec(&argv, config.root_size.as_deref()));
    }
    if !moved && config.root == RootMode::System && rootfs::root_is_initramfs() {
        guarded("system image", || mount_system_and_reexec(&argv, &config));
        // Only a panic gets here: without its system the VM must not boot on.
        stop_boot();
    }

    // Signals are blocked from here on and read from the signalfd, so a request that arrives
    // during boot waits for the event loop instead of being lost.
    let signals = match sys::SignalFd::new(&HANDLED_SIGNALS) {
        Ok(signals) => Some(signals),
        Err(err) => {
            log!("cannot set up signal handling: {err}; shutdown requests by signal will not work");
            None
        }
    };
    // Ctrl-Alt-Del sends SIGINT to PID 1 instead of rebooting at once.
    if let Err(err) = sys::reboot(libc::RB_DISABLE_CAD) {
        log!("cannot route Ctrl-Alt-Del to the init: {err}");
    }

    let mut buttons = PowerButtons::default();
    // Boot applies the VM's own settings over the image's (host name, interfaces, services'
    // arguments, preload), so the services start from the merged configuration.
    guarded("boot", || boot(&mut config, &mut buttons));
    let mut supervisor = Supervisor::new(config.services.clone(), config.preload.clone(), Paths::system());
    guarded("services", || supervisor.poll(Instant::now()));
    event_loop(signals, buttons, supervisor)
}

/// `/dev`, the console as stdin/stdout/stderr, and the kernel log.
fn early_setup() {
    let dev_error = mounts::mount_once(&mounts::DEV).err();
    let console_error = attach_console().err();
    log::open_kmsg();
    if let Some(err) = dev_error {
        log!("cannot mount devtmpfs on /dev: {err}");
    }
    if let Some(err) = console_error {
        log!("cannot use /dev/console: {err}");
    }
}

/// Makes `/dev/console` this session's controlling terminal and stdin/stdout/stderr.
fn attach_console() -> std::io::Result<()> {
    // Fails with EPERM when already a session leader (the re-executed init): fine.
    let _ = sys::setsid();
    let console = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags_noctty()
        .open("/dev/console")?;
    let tty_result = sys::set_controlling_tty(console.as_fd());
    // PID 1 does not read the console; with ISIG on, a Ctrl-C typed there would send PID 1
    // SIGINT, which means "power off". Programs that later own the console set their own modes.
    let _ = sys::disable_tty_signals(console.as_fd());
    for fd in 0..=2 {
        sys::dup2(console.as_fd(), fd)?;
    }
    tty_result
}

/// `OpenOptions` with `O_NOCTTY`.
trait NoCtty {
    fn custom_flags_noctty(&mut self) -> &mut Self;
}

impl NoCtty for OpenOptions {
    fn custom_flags_noctty(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::custom_flags(self, libc::O_NOCTTY)
    }
}

fn load_config() -> InitConfig {
    match config::load(Path::new(CONFIG_PATH)) {
        Ok(Some((config, services_error))) => {
            if let Some(err) = services_error {
                log!("{err}");
                log!("starting no services; the rest of the configuration is used");
            }
            config
        }
        Ok(None) => {
            log!("{CONFIG_PATH} is missing; using defaults");
            InitConfig::default()
        }
        Err(err) => {
            // The parser's message spans several lines (it quotes the bad line).
            log!("{err}");
            log!("using the default configuration");
            InitConfig::default()
        }
    }
}

/// Moves the initramfs into a tmpfs root and executes the init again from there. Returns only
/// if that could not be done; boot then goes on in this process.
fn move_root_and_reexec(argv: &[OsString], size: Option<&str>) {
    let stats = match rootfs::move_root_to_tmpfs(size) {
        Ok(stats) => stats,
        Err(err) => {
            log!("{err}");
            return;
        }
    };
    for failure in &stats.failures {
        log!("root move: {failure}");
    }
    log!(
        "root moved to tmpfs ({} MiB limit): {} files ({} MiB, by {}), {} other entries in {} ms",
        stats.size >> 20,
        stats.files,
        stats.bytes >> 20,
        stats.method,
        stats.others,
        stats.millis
    );
    reexec(argv, "the tmpfs root");
}

/// Loads the boot modules, then verifies and mounts the system image as an overlay root and
/// executes the init again from there. Never returns: a missing or altered image, or a failed
/// mount, stops the boot with the reason on the console.
fn mount_system_and_reexec(argv: &[OsString], config: &InitConfig) {
    let started = Instant::now();
    if !config.modules.is_empty() {
        let release = match &config.kernel_release {
            Some(release) => release.clone(),
            None => sys::kernel_release().unwrap_or_default(),
        };
        modules::load_all(&config.modules, &Path::new("/lib/modules").join(&release));
    }
    match system::mount_system_root(config.system.as_ref(), config.root_size.as_deref()) {
        Ok(mounted) => {
            for failure in &mounted.failures {
                log!("freeing the initramfs: {failure}");
            }
            log!(
                "system image {} ({:.1} MiB, found in {} ms, sha256 ok in {} ms) mounted read-only; \
                 root is overlay (stage 1 took {} ms)",
                mounted.device.display(),
                mounted.size as f64 / (1 << 20) as f64,
                mounted.wait_millis,
                mounted.hash_millis,
                started.elapsed().as_millis()
            );
            reexec(argv, "the overlay root");
        }
        Err(err) => log!("{err}"),
    }
    stop_boot();
}

/// Stops here for good: logs why, then sleeps forever (PID 1 must not exit).
fn stop_boot() -> ! {
    log!("boot stopped: the system image could not be used; this VM will not start its services");
    sys::sync();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Executes the init again (from the new root, `what`) with the moved marker set; returns
/// only if that failed.
fn reexec(argv: &[OsString], what: &str) {
    // The kernel runs the init by absolute path; fall back to the conventional one.
    let program = argv
        .first()
        .filter(|arg0| Path::new(arg0).is_absolute())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/init"));
    let err = Command::new(&program)
        .arg0(argv.first().map(OsString::as_os_str).unwrap_or(OsStr::new("/init")))
        .args(argv.iter().skip(1))
        .env(rootfs::MOVED_MARKER, "1")
        .exec();
    log!(
        "cannot execute {} from {what}: {err}; continuing in this process",
        program.display()
    );
}

/// The boot phases after the root is in place; `config` becomes the image's configuration with
/// the instance settings applied.
fn boot(config: &mut InitConfig, buttons: &mut PowerButtons) {
    mounts::mount_boot_filesystems();
    // Userspace writes to /dev/kmsg are rate limited to 10 lines per 5 s by default, which a
    // boot log exceeds; a printk.devkmsg= kernel argument locks the setting and wins.
    let _ = std::fs::write("/proc/sys/kernel/printk_devkmsg", "on\n");
    let controllers = mounts::enable_cgroup_controllers(Path::new("/sys/fs/cgroup"));
    log!(
        "file systems mounted; cgroup controllers: {}",
        if controllers.is_empty() {
            "none".to_string()
        } else {
            controllers.join(" ")
        }
    );

    match sys::sethostname(&config.hostname) {
        Ok(()) => log!("hostname {}", config.hostname),
        Err(err) => log!("cannot set hostname {:?}: {err}", config.hostname),
    }

    if !config.modules.is_empty() {
        let release = match &config.kernel_release {
            Some(release) => release.clone(),
            None => sys::kernel_release().unwrap_or_default(),
        };
        let dir = Path::new("/lib/modules").join(&release);
        let unneeded = shares::unneeded_modules(&config.shares);
        let (wanted, skipped): (Vec<_>, Vec<_>) = config
            .modules
            .iter()
            .cloned()
            .partition(|m| !unneeded.contains(&m.name.replace('-', "_").as_str()));
        if !skipped.is_empty() {
            let names: Vec<&str> = skipped.iter().map(|m| m.name.as_str()).collect();
            log!(
                "modules for host folders not loaded (no [[shares]] of their type): {}",
                names.join(" ")
            );
        }
        modules::load_all(&wanted, &dir);
    }
    // After the modules: a hypervisor's PTP clock is one of them.
    clock::start();
    // After the modules too: the balloon drivers and zram are among them.
    memory::start(config.memory.as_ref());

    // Some storage controllers add disks after their modules load (NVMe namespaces, sd
    // attaching SCSI disks, Hyper-V storvsc): an image that keeps state there waits, bounded,
    // for enumeration to settle. For one that only reports the partition a single look is
    // enough.
    let found = if config.data_disk.is_some() {
        datadisk::find_after_settle()
    } else {
        datadisk::find(Duration::ZERO)
    };
    // The instance settings come from a volume found in the same storage scan, and the network
    // needs them (its interfaces, and the host name DHCP sends): it starts after them.
    let command_line = instance::parse_command_line(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    let image_hostname = config.hostname.clone();
    let client_ca = guarded("instance settings", || instance::apply(config, &command_line)).flatten();
    if config.hostname != image_hostname {
        if let Err(err) = sys::sethostname(&config.hostname) {
            log!("cannot set hostname {:?}: {err}", config.hostname);
        }
    }
    let network = config
        .network
        .as_ref()
        .map(|section| network::start(section, &config.hostname));

    match &found {
        Some(p) => log!(
            "data partition {} ({} {}, {} MiB) on controller {}",
            p.device.display(),
            p.matched_by,
            DATA_LABEL,
            p.size >> 20,
            p.controller.as_deref().unwrap_or("unknown")
        ),
        None => log!("no data partition labelled {} found; state stays in memory", DATA_LABEL),
    }
    if let Some(data) = &config.data_disk {
        let found = found.and_then(|p| datadisk::ensure_file_system(p, data.format_blank));
        let partition = found.or_else(|| data.format_blank.then(datadisk::prepare_blank_disk).flatten());
        datadisk::mount_state(partition.as_ref(), &data.binds);
    }

    let addresses = network.and_then(|thread| thread.join().ok()).unwrap_or_default();
    if config.data_disk.as_ref().is_some_and(|d| d.identity) {
        identity::ensure(&config.hostname, &addresses);
    }
    if let Some(client_ca) = &client_ca {
        instance::finish(client_ca);
    }
    // After the network (SMB shares need it), before the services that use the folders.
    shares::mount_all(&config.shares);
    // The hypervisor's guest integration: threads of their own, never delaying the services.
    let dhcp = config.network.as_ref().is_some_and(|n| n.dhcp);
    guarded("host agent", || host_agent::start(&config.hostname, dhcp));

    buttons.rescan();
}

/// Reaps children (handing them to the supervisor), runs the supervisor's timers and waits
/// for shutdown requests (signals, the power button), forever. Prints the ready marker once
/// every service has settled: at once when there are none.
fn event_loop(signals: Option<sys::SignalFd>, mut buttons: PowerButtons, mut supervisor: Supervisor) -> ! {
    let mut ready = false;
    let mut last_scan = Instant::now();
    loop {
        let action = guarded("event loop", || {
            if !ready && supervisor.all_settled() {
                log::ready();
                ready = true;
            }
            // Wake for the supervisor's next probe or restart, or to rescan input devices.
            let timeout = supervisor.next_due().map_or(RESCAN_INTERVAL, |due| {
                due.saturating_duration_since(Instant::now()).min(RESCAN_INTERVAL)
            });
            let action = wait_for_events(signals.as_ref(), &mut buttons, timeout);
            if last_scan.elapsed() >= RESCAN_INTERVAL {
                buttons.rescan();
                last_scan = Instant::now();
            }
            // SIGCHLDs coalesce; reaping every round catches every zombie.
            for (pid, status) in shutdown::reap_children() {
                supervisor.child_exited(pid, status, Instant::now());
            }
            supervisor.poll(Instant::now());
            action
        })
        .flatten();
        if let Some(action) = action {
            guarded("shutdown", || {
                shutdown::shut_down(action, || {
                    guarded("stopping services", || {
                        supervisor.stop_all(&mut |_| shutdown::reap_children())
                    });
                })
            });
        }
    }
}

/// Waits up to `timeout` for a signal or input event; returns a requested action.
fn wait_for_events(signals: Option<&sys::SignalFd>, buttons: &mut PowerButtons, timeout: Duration) -> Option<Action> {
    let Some(signals) = signals else {
        std::thread::sleep(timeout);
        return buttons.pressed().then_some(Action::PowerOff);
    };
    let mut fds = vec![signals.as_raw_fd()];
    fds.extend(buttons.fds());
    let ready = match sys::poll_readable(&fds, timeout) {
        Ok(ready) => ready,
        Err(err) => {
            log!("poll failed: {err}");
            std::thread::sleep(Duration::from_secs(1));
            return None;
        }
    };
    let mut action = None;
    if ready[0] {
        loop {
            match signals.next() {
                Ok(Some(signal)) => {
                    if let Some(requested) = Action::from_signal(signal) {
                        log!("received signal {signal}");
                        action = action.or(Some(requested));
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    log!("cannot read signals: {err}");
                    break;
                }
            }
        }
    }
    if ready[1..].iter().any(|&r| r) && buttons.pressed() {
        log!("power button pressed");
        action = action.or(Some(Action::PowerOff));
    }
    action
}
