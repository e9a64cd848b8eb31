//! Stopping the machine: end every process, flush and unmount file systems, power off or reboot.

use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::log;
use crate::mounts;
use crate::network;
use crate::sys;

/// What the machine does once everything is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Turn the machine off.
    PowerOff,
    /// Restart the machine.
    Reboot,
}

impl Action {
    /// The signal that asks PID 1 for this action (what `/sbin/poweroff` and `/sbin/reboot`
    /// send).
    pub fn signal(self) -> libc::c_int {
        match self {
            Action::PowerOff => libc::SIGUSR2,
            Action::Reboot => libc::SIGUSR1,
        }
    }

    /// The action a signal to PID 1 asks for, if any: SIGTERM, SIGINT (Ctrl-Alt-Del) and
    /// SIGUSR2 power off; SIGUSR1 reboots.
    pub fn from_signal(signal: libc::c_int) -> Option<Action> {
        match signal {
            libc::SIGTERM | libc::SIGINT | libc::SIGUSR2 => Some(Action::PowerOff),
            libc::SIGUSR1 => Some(Action::Reboot),
            _ => None,
        }
    }

    fn reboot_command(self) -> libc::c_int {
        match self {
            Action::PowerOff => libc::RB_POWER_OFF,
            Action::Reboot => libc::RB_AUTOBOOT,
        }
    }
}

/// How long processes get to exit after SIGTERM before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(5);

/// Reaps every ended child; returns their process IDs and wait statuses.
pub fn reap_children() -> Vec<(libc::pid_t, libc::c_int)> {
    let mut reaped = Vec::new();
    while let sys::Reaped::Child { pid, status } = sys::reap_one() {
        reaped.push((pid, status));
    }
    reaped
}

/// `PF_KTHREAD` from `include/linux/sched.h`: the process is a kernel thread.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Whether a `/proc/PID/stat` line belongs to a user process (not a kernel thread).
///
/// `proc(5)`: the command name (field 2) is in parentheses and may hold spaces, so fields are
/// counted after the last `)`; `flags` is field 9.
pub fn is_user_process(stat: &str) -> Option<bool> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let flags: u64 = rest.split_whitespace().nth(6)?.parse().ok()?;
    Some(flags & PF_KTHREAD == 0)
}

/// Whether any user process other than PID 1 is left. (`kill(-1, 0)` cannot tell: it
/// succeeds on kernel threads too.)
fn processes_remain() -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            return false;
        };
        pid != 1
            && std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|stat| is_user_process(&stat))
                .unwrap_or(false)
    })
}

/// Waits until no other process is left or `limit` passes, reaping meanwhile.
fn wait_for_exit(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        reap_children();
        if !processes_remain() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM to every process, waits up to [`TERM_GRACE`], then SIGKILLs what is left.
pub fn kill_all_processes() {
    if !processes_remain() {
        return;
    }
    let started = Instant::now();
    let _ = sys::kill(-1, libc::SIGTERM);
    let _ = sys::kill(-1, libc::SIGCONT);
    if wait_for_exit(TERM_GRACE) {
        log!(
            "all processes ended after SIGTERM in {} ms",
            started.elapsed().as_millis()
        );
        return;
    }
    log!(
        "processes still running after {} s; sending SIGKILL",
        TERM_GRACE.as_secs()
    );
    let _ = sys::kill(-1, libc::SIGKILL);
    if !wait_for_exit(Duration::from_secs(2)) {
        log!("some processes did not end even after SIGKILL");
    }
}

/// Stops everything and performs `action`: first `stop_services` (which stops the supervised
/// services in order and closes their log files), then every other process, then file systems.
/// Returns only if the kernel refused to stop the machine; the caller keeps running as PID 1.
pub fn shut_down(action: Action, stop_services: impl FnOnce()) {
    log!(
        "{} requested",
        match action {
            Action::PowerOff => "power off",
            Action::Reboot => "reboot",
        }
    );
    stop_services();
    kill_all_processes();
    network::release();
    sys::sync();
    mounts::unmount_all();
    sys::sync();
    log!(
        "{}",
        match action {
            Action::PowerOff => "powering off",
            Action::Reboot => "rebooting",
        }
    );
    if let Err(err) = sys::reboot(action.reboot_command()) {
        log!("the kernel refused to stop the machine: {err}; still running");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_threads_are_told_from_user_processes() {
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 0 0 0";
        let user = "91 (my (odd) name) S 1 91 91 34816 91 4194560 120 0 0 0 0 0 0 0 20 0 1 0 300";
        assert_eq!(is_user_process(kthread), Some(false));
        assert_eq!(is_user_process(user), Some(true));
        assert_eq!(is_user_process("garbage"), None);
        // This test process is a user process.
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert_eq!(is_user_process(&own), Some(true));
    }

    #[test]
    fn signals_map_to_actions_and_back() {
        assert_eq!(Action::from_signal(libc::SIGTERM), Some(Action::PowerOff));
        assert_eq!(Action::from_signal(libc::SIGINT), Some(Action::PowerOff));
        assert_eq!(Action::from_signal(libc::SIGUSR2), Some(Action::PowerOff));
        assert_eq!(Action::from_signal(libc::SIGUSR1), Some(Action::Reboot));
        assert_eq!(Action::from_signal(libc::SIGCHLD), None);
        for action in [Action::PowerOff, Action::Reboot] {
            assert_eq!(Action::from_signal(action.signal()), Some(action));
        }
    }
}
