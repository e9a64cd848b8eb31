//! VMware's "backdoor": an `in` from I/O port 0x5658 with the magic number in EAX, which the
//! hypervisor intercepts and answers in the registers (open-vm-tools `lib/backdoor`,
//! `backdoor_def.h`). QEMU emulates it with `-machine vmport=on` (the default on x86 machines):
//! GETVERSION and a few commands, not the message channel.

use std::io;

/// `BDOOR_MAGIC` ("VMXh").
pub const MAGIC: u32 = 0x564D_5868;
/// `BDOOR_PORT`: the low-bandwidth port.
pub const PORT: u16 = 0x5658;
/// The ports a 32-bit access at [`PORT`] touches, all of which the I/O bitmap must allow.
pub const PORT_SPAN: libc::c_ulong = 4;
/// `BDOOR_CMD_GETVERSION`.
pub const CMD_GETVERSION: u16 = 10;
/// `BDOOR_CMD_MESSAGE`: the guest RPC message channel.
pub const CMD_MESSAGE: u16 = 30;

/// The registers of one backdoor call, in and out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Registers {
    /// EAX: the magic in, a result out.
    pub eax: u32,
    /// EBX: a size or 4 bytes of payload.
    pub ebx: u32,
    /// ECX: command (low 16 bits) and subcommand/status (high 16 bits).
    pub ecx: u32,
    /// EDX: port (low 16 bits) and channel id / message type (high 16 bits).
    pub edx: u32,
    /// ESI: cookie high.
    pub esi: u32,
    /// EDI: cookie low.
    pub edi: u32,
}

/// Something that performs backdoor calls: the real port, or a fake in tests.
pub trait Backdoor {
    /// Performs one call; EAX and the port in EDX are filled in by the caller.
    fn call(&mut self, regs: Registers) -> Registers;
}

/// The real I/O port, usable after [`IoPort::open`] granted this thread access.
pub struct IoPort(());

impl IoPort {
    /// Asks the kernel for access to the backdoor port (ioperm(2), CAP_SYS_RAWIO; refused
    /// under kernel lockdown). The permission belongs to the calling thread.
    pub fn open() -> io::Result<IoPort> {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: ioperm only changes this thread's I/O permission bitmap. A 32-bit `in`
            // is checked against the bits of all four bytes it reads (Intel SDM vol. 1,
            // 19.5.2), 0x5658..=0x565B: one port would fault.
            if unsafe { libc::ioperm(libc::c_ulong::from(PORT), PORT_SPAN, 1) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(IoPort(()))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Err(io::Error::from(io::ErrorKind::Unsupported))
        }
    }
}

impl Backdoor for IoPort {
    #[cfg(target_arch = "x86_64")]
    fn call(&mut self, regs: Registers) -> Registers {
        let (mut eax, mut ecx, mut edx, mut esi, mut edi) = (
            u64::from(regs.eax),
            u64::from(regs.ecx),
            u64::from(regs.edx),
            u64::from(regs.esi),
            u64::from(regs.edi),
        );
        let mut ebx = u64::from(regs.ebx);
        // SAFETY: `in eax, dx` on the port this thread was granted by ioperm; the hypervisor
        // may rewrite every general register named here. RBX is reserved by LLVM, so it is
        // swapped through a scratch register around the instruction.
        unsafe {
            std::arch::asm!(
                "xchg {b}, rbx",
                "in eax, dx",
                "xchg {b}, rbx",
                b = inout(reg) ebx,
                inout("rax") eax,
                inout("rcx") ecx,
                inout("rdx") edx,
                inout("rsi") esi,
                inout("rdi") edi,
                options(nostack),
            );
        }
        Registers {
            eax: eax as u32,
            ebx: ebx as u32,
            ecx: ecx as u32,
            edx: edx as u32,
            esi: esi as u32,
            edi: edi as u32,
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn call(&mut self, regs: Registers) -> Registers {
        regs
    }
}

/// The registers of a call: magic, command (with subcommand), EBX, the port with `channel`,
/// and the cookies.
pub fn request(command: u16, subcommand: u16, ebx: u32, channel: u16, cookie: (u32, u32)) -> Registers {
    Registers {
        eax: MAGIC,
        ebx,
        ecx: u32::from(subcommand) << 16 | u32::from(command),
        edx: u32::from(channel) << 16 | u32::from(PORT),
        esi: cookie.0,
        edi: cookie.1,
    }
}

/// The backdoor's version if it answers GETVERSION (EBX comes back as the magic), else
/// `None`: not VMware, nor an emulation of its backdoor.
pub fn probe(backdoor: &mut impl Backdoor) -> Option<u32> {
    let out = backdoor.call(request(CMD_GETVERSION, 0, !MAGIC, 0, (0, 0)));
    (out.ebx == MAGIC && out.eax != u32::MAX).then_some(out.eax)
}

/// [`probe`] in a child process: an `in` the kernel or hypervisor refuses is a fault that kills
/// the process, and PID 1 must not die of it. `Ok(None)`: no backdoor; `Err`: the port is
/// not accessible (ioperm refused, or the access faulted).
pub fn probe_in_child() -> io::Result<Option<u32>> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (read_end, write_end) = (fds[0], fds[1]);
    // SAFETY: the child only makes system calls (ioperm, the port access, write, _exit): no
    // allocation or lock that another thread of the parent could hold.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let err = io::Error::last_os_error();
        unsafe {
            libc::close(read_end);
            libc::close(write_end);
        }
        return Err(err);
    }
    if pid == 0 {
        let answer: [u8; 5] = match IoPort::open() {
            Ok(mut port) => match probe(&mut port) {
                Some(version) => {
                    let v = version.to_le_bytes();
                    [1, v[0], v[1], v[2], v[3]]
                }
                None => [0; 5],
            },
            Err(err) => {
                let errno = err.raw_os_error().unwrap_or(0) as u32;
                let e = errno.to_le_bytes();
                [2, e[0], e[1], e[2], e[3]]
            }
        };
        // SAFETY: writing a local buffer to the pipe, then leaving without unwinding.
        unsafe {
            libc::write(write_end, answer.as_ptr().cast(), answer.len());
            libc::_exit(0);
        }
    }
    // SAFETY: closing the parent's copy of the write end; reading into a local buffer.
    let mut answer = [0u8; 5];
    let n = unsafe {
        libc::close(write_end);
        let n = libc::read(read_end, answer.as_mut_ptr().cast(), answer.len());
        libc::close(read_end);
        n
    };
    let mut status = 0;
    // SAFETY: waiting for our own child (it may already be reaped by another thread's wait for
    // any child; the answer came through the pipe either way).
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    if n != 5 {
        let how = if waited == pid && libc::WIFSIGNALED(status) {
            format!("the port access was killed by signal {}", libc::WTERMSIG(status))
        } else {
            "the probe ended without an answer".to_string()
        };
        return Err(io::Error::other(how));
    }
    let value = u32::from_le_bytes([answer[1], answer[2], answer[3], answer[4]]);
    match answer[0] {
        1 => Ok(Some(value)),
        2 => Err(io::Error::from_raw_os_error(value as i32)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port nobody answers: `in` returns all ones in EAX and leaves the rest (what bare
    /// hardware and other hypervisors do).
    struct Silent;
    impl Backdoor for Silent {
        fn call(&mut self, regs: Registers) -> Registers {
            Registers { eax: u32::MAX, ..regs }
        }
    }

    /// QEMU's vmport (hw/i386/vmport.c, vmport_cmd_get_version): EAX = 6, EBX = magic.
    struct QemuVmport;
    impl Backdoor for QemuVmport {
        fn call(&mut self, regs: Registers) -> Registers {
            assert_eq!(regs.eax, MAGIC);
            assert_eq!(regs.ecx & 0xffff, u32::from(CMD_GETVERSION));
            assert_eq!(regs.edx & 0xffff, u32::from(PORT));
            Registers {
                eax: 6,
                ebx: MAGIC,
                ..regs
            }
        }
    }

    #[test]
    fn getversion_tells_a_backdoor_from_an_empty_port() {
        assert_eq!(probe(&mut QemuVmport), Some(6));
        assert_eq!(probe(&mut Silent), None);
    }

    #[test]
    fn the_probe_in_a_child_survives_an_unprivileged_port() {
        // Without privilege (or where the kernel has no ioperm) the child reports the error; as
        // root on a machine without a backdoor it finds none. Either way this process lives on.
        match probe_in_child() {
            Ok(None) => {}
            Ok(Some(version)) => eprintln!("a backdoor answered: version {version}"),
            Err(err) => eprintln!("no access to the port: {err}"),
        }
    }

    #[test]
    fn request_registers_are_laid_out_as_backdoor_def_h_says() {
        let r = request(CMD_MESSAGE, 1, 42, 7, (0x1111, 0x2222));
        assert_eq!(
            r,
            Registers {
                eax: 0x564D5868,
                ebx: 42,
                ecx: 0x0001_001E,
                edx: 0x0007_5658,
                esi: 0x1111,
                edi: 0x2222,
            }
        );
    }
}
