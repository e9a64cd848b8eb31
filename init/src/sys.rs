//! Thin, safe wrappers over the Linux system calls the init needs and `std` does not offer.
//!
//! Every `unsafe` block of the crate lives here; each wrapper checks the return value and turns
//! `-1` into the `errno` as an [`io::Error`].

use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// `MODULE_INIT_COMPRESSED_FILE` from `include/uapi/linux/module.h` (Linux 5.17+, with
/// `CONFIG_MODULE_DECOMPRESS`): the kernel decompresses the module itself.
pub const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

/// `RAMFS_MAGIC` from `include/uapi/linux/magic.h`: the initramfs when rootfs is ramfs.
pub const RAMFS_MAGIC: i64 = 0x8584_58f6;
/// `TMPFS_MAGIC` from `include/uapi/linux/magic.h`: tmpfs, and rootfs when it is a tmpfs.
pub const TMPFS_MAGIC: i64 = 0x0102_1994;

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn c_str(text: &str) -> io::Result<CString> {
    CString::new(text).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string contains a NUL byte"))
}

/// `mount(2)`; `source`, `fstype` and `data` may be absent.
pub fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(c_str).transpose()?;
    let target = c_path(target)?;
    let fstype = fstype.map(c_str).transpose()?;
    let data = data.map(c_str).transpose()?;
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is a valid NUL-terminated string or null, alive for the call.
    check(unsafe { libc::mount(ptr(&source), target.as_ptr(), ptr(&fstype), flags, ptr(&data).cast()) })
}

/// `mount(2)` with `MS_MOVE`: moves the mount at `from` (and everything below it) to `to`.
pub fn move_mount(from: &Path, to: &Path) -> io::Result<()> {
    let from = c_path(from)?;
    let to = c_path(to)?;
    // SAFETY: valid NUL-terminated strings; the other arguments may be null for MS_MOVE.
    check(unsafe {
        libc::mount(
            from.as_ptr(),
            to.as_ptr(),
            std::ptr::null(),
            libc::MS_MOVE,
            std::ptr::null(),
        )
    })
}

/// `umount2(2)`.
pub fn umount(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = c_path(target)?;
    // SAFETY: valid NUL-terminated string.
    check(unsafe { libc::umount2(target.as_ptr(), flags) })
}

/// `chroot(2)`.
pub fn chroot(path: &Path) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: valid NUL-terminated string.
    check(unsafe { libc::chroot(path.as_ptr()) })
}

/// `sethostname(2)`.
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
}

/// `reboot(2)` with one of the `LINUX_REBOOT_CMD_*` / `RB_*` commands. Returns only on failure
/// (or for the commands that do not stop the machine, such as `RB_DISABLE_CAD`).
pub fn reboot(cmd: libc::c_int) -> io::Result<()> {
    // SAFETY: plain integer argument.
    check(unsafe { libc::reboot(cmd) })
}

/// `finit_module(2)` with empty parameters.
pub fn finit_module(fd: BorrowedFd<'_>, flags: u32) -> io::Result<()> {
    let params: &CStr = c"";
    // SAFETY: valid fd, valid NUL-terminated parameter string, integer flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            fd.as_raw_fd(),
            params.as_ptr(),
            flags as libc::c_uint,
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `kill(2)`.
pub fn kill(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::kill(pid, signal) })
}

/// `getpid(2)`.
pub fn getpid() -> libc::pid_t {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getpid() }
}

/// `setsid(2)`.
pub fn setsid() -> io::Result<()> {
    // SAFETY: no arguments.
    let ret = unsafe { libc::setsid() };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `ioctl(fd, TIOCSCTTY, 1)`: make the terminal the controlling terminal of this session,
/// stealing it if another session has it.
pub fn set_controlling_tty(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 1 as libc::c_int) })
}

/// Clears `ISIG` on a terminal so that Ctrl-C / Ctrl-\ typed on it do not signal its
/// foreground process group.
pub fn disable_tty_signals(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut termios = MaybeUninit::<libc::termios>::uninit();
    // SAFETY: tcgetattr fills the struct on success; it is read only then.
    check(unsafe { libc::tcgetattr(fd.as_raw_fd(), termios.as_mut_ptr()) })?;
    // SAFETY: initialised by the successful tcgetattr above.
    let mut termios = unsafe { termios.assume_init() };
    termios.c_lflag &= !libc::ISIG;
    // SAFETY: valid fd and a fully initialised termios.
    check(unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &termios) })
}

/// `dup2(2)`.
pub fn dup2(from: BorrowedFd<'_>, to: RawFd) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    let ret = unsafe { libc::dup2(from.as_raw_fd(), to) };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `copy_file_range(2)` from the current offsets; returns the bytes copied (0 at end of file).
pub fn copy_file_range(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: null offsets mean "use and advance the file offsets".
    let ret = unsafe {
        libc::copy_file_range(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            0,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// `sendfile(2)` from the current offset of `from`; returns the bytes copied (0 at end of file).
pub fn sendfile(to: BorrowedFd<'_>, from: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: a null offset means "use and advance the file offset of `from`".
    let ret = unsafe { libc::sendfile(to.as_raw_fd(), from.as_raw_fd(), std::ptr::null_mut(), len) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// `mknod(2)` for device nodes, FIFOs and sockets; `mode` includes the file type bits.
pub fn mknod(path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: valid NUL-terminated string and integers.
    check(unsafe { libc::mknod(path.as_ptr(), mode, dev) })
}

/// `utimensat(2)` without following a final symlink: sets access and modification time.
pub fn set_times_nofollow(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let path = c_path(path)?;
    let times = [
        libc::timespec {
            tv_sec: atime.0 as _,
            tv_nsec: atime.1 as _,
        },
        libc::timespec {
            tv_sec: mtime.0 as _,
            tv_nsec: mtime.1 as _,
        },
    ];
    // SAFETY: valid path and a two-element timespec array.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

/// The file system type (`f_type`) and the bytes available to a writer, from `statfs(2)`.
pub fn statfs(path: &Path) -> io::Result<(i64, u64)> {
    let path = c_path(path)?;
    let mut buf = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: statfs fills the struct on success; it is read only then.
    check(unsafe { libc::statfs(path.as_ptr(), buf.as_mut_ptr()) })?;
    // SAFETY: initialised by the successful call above.
    let buf = unsafe { buf.assume_init() };
    // The field types differ between glibc and musl; the casts are no-ops on one of them.
    #[allow(clippy::unnecessary_cast)]
    Ok((
        buf.f_type as i64,
        (buf.f_bavail as u64).saturating_mul(buf.f_bsize as u64),
    ))
}

/// Time since boot, including suspend (`CLOCK_BOOTTIME`).
pub fn boottime() -> Duration {
    let mut ts = MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: clock_gettime fills the struct on success.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, ts.as_mut_ptr()) };
    if ret != 0 {
        return Duration::ZERO;
    }
    // SAFETY: initialised by the successful call above.
    let ts = unsafe { ts.assume_init() };
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// The kernel release (`uname -r`).
pub fn kernel_release() -> io::Result<String> {
    let mut buf = MaybeUninit::<libc::utsname>::uninit();
    // SAFETY: uname fills the struct on success.
    check(unsafe { libc::uname(buf.as_mut_ptr()) })?;
    // SAFETY: initialised by the successful call; `release` is NUL-terminated.
    let buf = unsafe { buf.assume_init() };
    let release = unsafe { CStr::from_ptr(buf.release.as_ptr()) };
    Ok(release.to_string_lossy().into_owned())
}

/// Outcome of one non-blocking `waitpid(-1)`.
pub enum Reaped {
    /// A child ended and was reaped: its process ID and `wait(2)` status.
    Child {
        /// The child's process ID.
        pid: libc::pid_t,
        /// The raw wait status (decode with `WIFEXITED` and friends).
        status: libc::c_int,
    },
    /// Children exist but none has ended.
    NoneReady,
    /// No children at all.
    NoChildren,
}

/// `waitpid(-1, WNOHANG)`.
pub fn reap_one() -> Reaped {
    let mut status = 0;
    // SAFETY: valid pointer to an int.
    let ret = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    match ret {
        0 => Reaped::NoneReady,
        pid if pid > 0 => Reaped::Child { pid, status },
        _ if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => Reaped::NoneReady,
        _ => Reaped::NoChildren,
    }
}

/// `waitpid(pid, WNOHANG)`: the wait status if that child has ended (and is now reaped).
#[cfg_attr(not(test), allow(dead_code))]
pub fn try_wait(pid: libc::pid_t) -> io::Result<Option<libc::c_int>> {
    let mut status = 0;
    // SAFETY: valid pointer to an int.
    let ret = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        _ => Ok(Some(status)),
    }
}

/// A resource limit for [`start_session_with_limits`]: the `RLIMIT_*` number and the value
/// (soft and hard), `None` meaning unlimited.
pub type Rlimit = (libc::c_int, Option<u64>);

/// Makes `command`'s child a session leader (`setsid(2)`) with an empty signal mask and
/// `limits` applied, between `fork` and `exec`; with `cgroup_procs` (a cgroup's `cgroup.procs`
/// open for writing) it first moves into that cgroup, so that everything it starts is counted
/// there from its first instruction. A limit or move the kernel refuses fails the spawn.
pub fn start_session_with_limits(
    command: &mut std::process::Command,
    limits: Vec<Rlimit>,
    cgroup_procs: Option<std::os::fd::OwnedFd>,
) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let hook = move || -> io::Result<()> {
        // Only async-signal-safe calls here: this runs in the forked child.
        // SAFETY: write, setsid, sigemptyset, sigprocmask and setrlimit are plain system calls
        // on memory owned by this closure.
        unsafe {
            if let Some(fd) = &cgroup_procs {
                // Documentation/admin-guide/cgroup-v2.rst, "cgroup.procs": writing a PID
                // migrates that process; the kernel reads 0 as the writer itself.
                if libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            check(libc::setsid())?;
            let mut set = MaybeUninit::<libc::sigset_t>::uninit();
            check(libc::sigemptyset(set.as_mut_ptr()))?;
            check(libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut()))?;
            for &(resource, value) in &limits {
                let value = value.unwrap_or(libc::RLIM_INFINITY);
                let limit = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                check(libc::setrlimit(resource as _, &limit))?;
            }
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe system calls and allocates nothing.
    unsafe {
        command.pre_exec(hook);
    }
}

/// The `RLIMIT_*` number of an `rlimits` key of the configuration.
pub fn rlimit_resource(name: &str) -> Option<libc::c_int> {
    let resource = match name {
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "core" => libc::RLIMIT_CORE,
        "stack" => libc::RLIMIT_STACK,
        _ => return None,
    };
    Some(resource as libc::c_int)
}

/// The conventional name of a signal number, for log lines (`SIGTERM`), if it is a common one.
pub fn signal_name(signal: libc::c_int) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSYS => "SIGSYS",
        _ => return None,
    })
}

/// A set of blocked signals delivered through a `signalfd(2)` instead of handlers.
pub struct SignalFd {
    fd: std::os::fd::OwnedFd,
}

impl SignalFd {
    /// Blocks `signals` for this thread and returns a non-blocking descriptor that reads them.
    pub fn new(signals: &[libc::c_int]) -> io::Result<SignalFd> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set; sigaddset and sigprocmask read it.
        unsafe {
            check(libc::sigemptyset(set.as_mut_ptr()))?;
            for &signal in signals {
                check(libc::sigaddset(set.as_mut_ptr(), signal))?;
            }
            check(libc::sigprocmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut()))?;
            let fd = libc::signalfd(-1, set.as_ptr(), libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(SignalFd {
                fd: std::os::fd::FromRawFd::from_raw_fd(fd),
            })
        }
    }

    /// The next pending signal number, if any.
    pub fn next(&self) -> io::Result<Option<libc::c_int>> {
        let mut info = MaybeUninit::<libc::signalfd_siginfo>::uninit();
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `size` bytes into the struct.
        let ret = unsafe { libc::read(self.fd.as_raw_fd(), info.as_mut_ptr().cast(), size) };
        if ret == -1 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(err),
            };
        }
        if ret as usize != size {
            return Ok(None);
        }
        // SAFETY: the kernel wrote a whole struct.
        let info = unsafe { info.assume_init() };
        Ok(Some(info.ssi_signo as libc::c_int))
    }

    /// The descriptor, for `poll`.
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// `poll(2)` for readability on `fds`; returns which of them are readable (or hung up).
pub fn poll_readable(fds: &[RawFd], timeout: Duration) -> io::Result<Vec<bool>> {
    let mut pollfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: pointer and length describe `pollfds`.
    let ret = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, timeout_ms) };
    if ret == -1 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(err);
    }
    Ok(pollfds.iter().map(|p| p.revents != 0).collect())
}

/// `sync(2)`.
pub fn sync() {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::sync() }
}

/// `LOOP_CTL_GET_FREE` and `LOOP_SET_FD` from `include/uapi/linux/loop.h`.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_SET_FD: libc::c_ulong = 0x4C00;

/// Attaches `file` to a free loop device and returns the device's path. A file opened
/// read-only gives a read-only loop device (the kernel sets `LO_FLAGS_READ_ONLY`).
pub fn loop_attach(file: BorrowedFd<'_>) -> io::Result<std::path::PathBuf> {
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    // SAFETY: a valid descriptor; LOOP_CTL_GET_FREE takes no argument.
    let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
    if number < 0 {
        return Err(io::Error::last_os_error());
    }
    let path = std::path::PathBuf::from(format!("/dev/loop{number}"));
    let device = std::fs::OpenOptions::new().read(true).open(&path)?;
    // SAFETY: both descriptors are valid for the call; LOOP_SET_FD takes the backing fd.
    check(unsafe { libc::ioctl(device.as_raw_fd(), LOOP_SET_FD as _, file.as_raw_fd()) })?;
    Ok(path)
}
