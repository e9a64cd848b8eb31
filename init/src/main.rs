//! uvmkit-init: the static PID 1 of uvmkit images.
//!
//! As PID 1 it mounts the kernel file systems, moves the root to a tmpfs, loads the image's
//! kernel modules, starts and supervises the image's services, reaps zombies and powers the
//! machine off or reboots on request. Installed as `/sbin/poweroff` or `/sbin/reboot`
//! (symlinks to `/init`) it asks PID 1 to do so.

#![deny(missing_docs)]

mod clock;
mod config;
mod datadisk;
#[cfg(test)]
mod fuzz;
mod host_agent;
mod hypervisor;
mod identity;
mod instance;
mod log;
mod memory;
mod modules;
mod mounts;
mod network;
mod nocloud;
mod pid1;
mod power;
mod rootfs;
mod services;
mod shares;
mod shutdown;
mod storage;
mod sys;
mod system;

use std::ffi::OsStr;
use std::path::Path;

use shutdown::Action;

/// What this invocation of the binary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// PID 1: boot and run the system.
    Init,
    /// `poweroff`, `halt` or `reboot` run by a user or the kernel: ask PID 1.
    Request(Action),
    /// Anything else: print usage.
    Usage,
}

/// Decides the role from the program name (`argv[0]`) and the process ID.
fn role(argv0: &OsStr, pid: libc::pid_t) -> Role {
    if pid == 1 {
        return Role::Init;
    }
    let name = Path::new(argv0).file_name().unwrap_or_default();
    match name.to_str() {
        Some("poweroff" | "halt") => Role::Request(Action::PowerOff),
        Some("reboot") => Role::Request(Action::Reboot),
        _ => Role::Usage,
    }
}

const USAGE: &str = "\
uvmkit-init is the init (PID 1) of uvmkit images and is started by the kernel.
Run as `poweroff` or `reboot` (symlinks to it) to ask the running init to stop the machine.";

fn main() {
    let argv: Vec<_> = std::env::args_os().collect();
    let argv0 = argv.first().cloned().unwrap_or_default();
    match role(&argv0, sys::getpid()) {
        Role::Init => pid1::run(argv),
        Role::Request(action) => {
            let name = Path::new(&argv0).display().to_string();
            if let Err(err) = sys::kill(1, action.signal()) {
                eprintln!("{name}: cannot signal the init (PID 1): {err}; run it as root");
                std::process::exit(1);
            }
        }
        Role::Usage => {
            eprintln!("{USAGE}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_1_is_always_the_init() {
        assert_eq!(role(OsStr::new("/init"), 1), Role::Init);
        assert_eq!(role(OsStr::new("/sbin/poweroff"), 1), Role::Init);
    }

    #[test]
    fn poweroff_and_reboot_names_send_requests() {
        assert_eq!(role(OsStr::new("/sbin/poweroff"), 42), Role::Request(Action::PowerOff));
        assert_eq!(role(OsStr::new("poweroff"), 42), Role::Request(Action::PowerOff));
        assert_eq!(role(OsStr::new("/sbin/halt"), 42), Role::Request(Action::PowerOff));
        assert_eq!(role(OsStr::new("/sbin/reboot"), 7), Role::Request(Action::Reboot));
        assert_eq!(Action::PowerOff.signal(), libc::SIGUSR2);
        assert_eq!(Action::Reboot.signal(), libc::SIGUSR1);
    }

    #[test]
    fn anything_else_not_pid_1_is_usage() {
        assert_eq!(role(OsStr::new("/init"), 42), Role::Usage);
        assert_eq!(role(OsStr::new("uvmkit-init"), 42), Role::Usage);
        assert_eq!(role(OsStr::new("/sbin/poweroff2"), 42), Role::Usage);
        assert_eq!(role(OsStr::new(""), 42), Role::Usage);
    }
}
