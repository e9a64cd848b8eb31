//! VMware guest RPC over the backdoor's message channel (`BDOOR_CMD_MESSAGE`, command 30;
//! open-vm-tools `lib/message/message.c` and `guest_msg_def.h`), low-bandwidth: 4 bytes of
//! payload per call in EBX.
//!
//! Two protocols ride on it: RPCI (`'RPCI'`, guest asks, VMX answers `1 result` or
//! `0 error`: `info-set guestinfo.ip ...`, `info-get guestinfo.NAME`) and TCLO (`'TCLO'`, the
//! VMX's commands to the tools, fetched by polling: the guest sends the previous command's
//! result, `OK ...` or `ERROR ...`, and receives the next command or nothing). Soft power
//! operations arrive on TCLO as `OS_Halt` and `OS_Reboot` once the guest announced the
//! `statechange` capability.

use super::vmware_backdoor::{request, Backdoor, CMD_MESSAGE};

/// `MESSAGE_TYPE_OPEN`.
pub const TYPE_OPEN: u16 = 0;
/// `MESSAGE_TYPE_SENDSIZE`.
pub const TYPE_SENDSIZE: u16 = 1;
/// `MESSAGE_TYPE_SENDPAYLOAD`.
pub const TYPE_SENDPAYLOAD: u16 = 2;
/// `MESSAGE_TYPE_RECVSIZE`.
pub const TYPE_RECVSIZE: u16 = 3;
/// `MESSAGE_TYPE_RECVPAYLOAD`.
pub const TYPE_RECVPAYLOAD: u16 = 4;
/// `MESSAGE_TYPE_RECVSTATUS`.
pub const TYPE_RECVSTATUS: u16 = 5;
/// `MESSAGE_TYPE_CLOSE`.
pub const TYPE_CLOSE: u16 = 6;

/// `MESSAGE_STATUS_SUCCESS`.
pub const STATUS_SUCCESS: u16 = 0x0001;
/// `MESSAGE_STATUS_DORECV`: a message waits.
pub const STATUS_DORECV: u16 = 0x0002;
/// `MESSAGE_STATUS_CPT`: a checkpoint interrupted the transfer; start it again.
pub const STATUS_CPT: u16 = 0x0010;

/// `RPCI_PROTOCOL_NUM` ("RPCI").
pub const PROTOCOL_RPCI: u32 = 0x4943_5052;
/// `TCLO_PROTOCOL_NUM` ("TCLO").
pub const PROTOCOL_TCLO: u32 = 0x4F4C_4354;
/// `GUESTMSG_FLAG_COOKIE`: ask for cookies, so that other processes cannot use the channel.
pub const FLAG_COOKIE: u32 = 0x8000_0000;

/// Largest message accepted from the host; guestinfo values are small.
pub const MAX_MESSAGE: u32 = 64 * 1024;
/// How often a transfer interrupted by a checkpoint is started again.
const CHECKPOINT_RETRIES: usize = 3;

/// What went wrong on the channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// The open call came back without success: the backdoor has no message channel (QEMU's
    /// vmport), or all channels are in use.
    #[error("the backdoor's message channel does not open (status {0:#06x}): not VMware, or an emulation without guest RPC such as QEMU's vmport")]
    Open(u16),
    /// A call of the transfer failed.
    #[error("message channel {channel}: {step} failed (status {status:#06x})")]
    Transfer {
        /// The channel id.
        channel: u16,
        /// Which step.
        step: &'static str,
        /// The status the VMX returned.
        status: u16,
    },
    /// The host sent something the protocol does not allow.
    #[error("message channel {channel}: protocol error: {what}")]
    Protocol {
        /// The channel id.
        channel: u16,
        /// What was wrong.
        what: String,
    },
    /// The VMX refused an RPCI command (`0 reason`).
    #[error("the host refused {command:?}: {reason}")]
    Refused {
        /// The command's first word.
        command: String,
        /// The VMX's reason.
        reason: String,
    },
}

/// An open message channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    /// The id the VMX assigned.
    pub id: u16,
    /// The cookies (ESI, EDI) every later call carries.
    pub cookie: (u32, u32),
}

fn status(ecx: u32) -> u16 {
    (ecx >> 16) as u16
}

impl Channel {
    /// Opens a channel for `protocol`, with cookies, or without if the VMX does not do cookies.
    pub fn open(backdoor: &mut impl Backdoor, protocol: u32) -> Result<Channel, RpcError> {
        let mut last = 0;
        for flags in [FLAG_COOKIE, 0] {
            let out = backdoor.call(request(CMD_MESSAGE, TYPE_OPEN, protocol | flags, 0, (0, 0)));
            last = status(out.ecx);
            if last & STATUS_SUCCESS != 0 {
                return Ok(Channel {
                    id: (out.edx >> 16) as u16,
                    cookie: (out.esi, out.edi),
                });
            }
        }
        Err(RpcError::Open(last))
    }

    fn call(&self, backdoor: &mut impl Backdoor, subcommand: u16, ebx: u32) -> (u16, u32, u16) {
        let out = backdoor.call(request(CMD_MESSAGE, subcommand, ebx, self.id, self.cookie));
        (status(out.ecx), out.ebx, (out.edx >> 16) as u16)
    }

    /// Sends `message`: its size, then 4 bytes per call, little-endian, the last word padded
    /// with zeros.
    pub fn send(&self, backdoor: &mut impl Backdoor, message: &[u8]) -> Result<(), RpcError> {
        'again: for _ in 0..CHECKPOINT_RETRIES {
            let (st, _, _) = self.call(backdoor, TYPE_SENDSIZE, message.len() as u32);
            if st & STATUS_SUCCESS == 0 {
                return Err(self.failed("send size", st));
            }
            for chunk in message.chunks(4) {
                let mut word = [0u8; 4];
                word[..chunk.len()].copy_from_slice(chunk);
                let (st, _, _) = self.call(backdoor, TYPE_SENDPAYLOAD, u32::from_le_bytes(word));
                if st & STATUS_SUCCESS == 0 {
                    if st & STATUS_CPT != 0 {
                        continue 'again;
                    }
                    return Err(self.failed("send payload", st));
                }
            }
            return Ok(());
        }
        Err(self.failed("send (interrupted by checkpoints)", STATUS_CPT))
    }

    /// Receives the message the VMX has for this channel; empty if there is none.
    pub fn receive(&self, backdoor: &mut impl Backdoor) -> Result<Vec<u8>, RpcError> {
        'again: for _ in 0..CHECKPOINT_RETRIES {
            let (st, size, kind) = self.call(backdoor, TYPE_RECVSIZE, 0);
            if st & STATUS_SUCCESS == 0 {
                return Err(self.failed("receive size", st));
            }
            if st & STATUS_DORECV == 0 {
                return Ok(Vec::new());
            }
            if kind != TYPE_SENDSIZE {
                return Err(self.protocol(format!("expected a size (type 1), got type {kind}")));
            }
            if size > MAX_MESSAGE {
                return Err(self.protocol(format!("a message of {size} bytes, more than {MAX_MESSAGE}")));
            }
            let mut message = Vec::with_capacity(size as usize + 3);
            while message.len() < size as usize {
                let (st, word, kind) = self.call(backdoor, TYPE_RECVPAYLOAD, u32::from(STATUS_SUCCESS));
                if st & STATUS_SUCCESS == 0 {
                    if st & STATUS_CPT != 0 {
                        continue 'again;
                    }
                    return Err(self.failed("receive payload", st));
                }
                if kind != TYPE_SENDPAYLOAD {
                    return Err(self.protocol(format!("expected payload (type 2), got type {kind}")));
                }
                message.extend_from_slice(&word.to_le_bytes());
            }
            message.truncate(size as usize);
            let (st, _, _) = self.call(backdoor, TYPE_RECVSTATUS, u32::from(STATUS_SUCCESS));
            if st & STATUS_SUCCESS == 0 {
                if st & STATUS_CPT != 0 {
                    continue 'again;
                }
                return Err(self.failed("receive status", st));
            }
            return Ok(message);
        }
        Err(self.failed("receive (interrupted by checkpoints)", STATUS_CPT))
    }

    /// Closes the channel.
    pub fn close(&self, backdoor: &mut impl Backdoor) {
        let _ = self.call(backdoor, TYPE_CLOSE, 0);
    }

    fn failed(&self, step: &'static str, status: u16) -> RpcError {
        RpcError::Transfer {
            channel: self.id,
            step,
            status,
        }
    }

    fn protocol(&self, what: String) -> RpcError {
        RpcError::Protocol { channel: self.id, what }
    }
}

/// Sends one RPCI command on a channel of its own and returns the VMX's result (after `1 `).
pub fn rpci(backdoor: &mut impl Backdoor, command: &str) -> Result<String, RpcError> {
    let channel = Channel::open(backdoor, PROTOCOL_RPCI)?;
    let reply = channel
        .send(backdoor, command.as_bytes())
        .and_then(|()| channel.receive(backdoor));
    channel.close(backdoor);
    let reply = reply?;
    let text = String::from_utf8_lossy(&reply);
    let text = text.trim_end_matches('\0');
    let verb = command.split(' ').next().unwrap_or_default().to_string();
    match text.split_at_checked(2) {
        Some(("1 ", result)) => Ok(result.to_string()),
        Some(("0 ", reason)) => Err(RpcError::Refused {
            command: verb,
            reason: reason.to_string(),
        }),
        _ if text == "1" => Ok(String::new()),
        _ => Err(RpcError::Protocol {
            channel: channel.id,
            what: format!("an RPCI reply that is neither \"1 ...\" nor \"0 ...\": {text:?}"),
        }),
    }
}

/// `info-get guestinfo.NAME`: `Ok(None)` when the VM has no such variable.
pub fn guestinfo_get(backdoor: &mut impl Backdoor, name: &str) -> Result<Option<String>, RpcError> {
    match rpci(backdoor, &format!("info-get guestinfo.{name}")) {
        Ok(value) => Ok(Some(value)),
        // The VMX answers "0 No value found" for an unset variable.
        Err(RpcError::Refused { .. }) => Ok(None),
        Err(err) => Err(err),
    }
}

/// `info-set guestinfo.NAME VALUE`.
pub fn guestinfo_set(backdoor: &mut impl Backdoor, name: &str, value: &str) -> Result<(), RpcError> {
    rpci(backdoor, &format!("info-set guestinfo.{name} {value}")).map(|_| ())
}

/// `TOOLS_VERSION_UNMANAGED`: tools that the guest OS manages, as distributions' open-vm-tools.
pub const TOOLS_VERSION_UNMANAGED: u32 = 0x7fff_ffff;

/// What announces this guest's tools to the VMX: the version (so that vSphere shows tools
/// running) and the capabilities that make the VMX send soft power operations over TCLO
/// (`TOOLS_CAP_OLD_NOVAL`: the name, a trailing space, no NUL; powerOps.c).
pub fn announcements() -> Vec<String> {
    vec![
        format!("tools.set.version {TOOLS_VERSION_UNMANAGED}"),
        "tools.capability.statechange ".to_string(),
        "tools.capability.softpowerop_retry ".to_string(),
    ]
}

/// A soft power operation the host asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerRequest {
    /// `OS_Halt`: shut down.
    Halt,
    /// `OS_Reboot`: restart.
    Reboot,
}

impl PowerRequest {
    /// `GuestOsState` (vmware/guestrpc/powerops.h): HALT 1, REBOOT 2.
    pub fn guest_os_state(self) -> u32 {
        match self {
            PowerRequest::Halt => 1,
            PowerRequest::Reboot => 2,
        }
    }

    /// The RPCI message that reports the state change done (`tools.os.statechange.status
    /// SUCCESS STATE`), sent before the guest goes down.
    pub fn status_message(self) -> String {
        format!("tools.os.statechange.status 1 {}", self.guest_os_state())
    }
}

/// What a TCLO command asks of the agent besides its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcloAction {
    /// Nothing more.
    None,
    /// Send the capabilities again (`Capabilities_Register`, after a VMX reset).
    Announce,
    /// Power off or reboot.
    Power(PowerRequest),
}

/// The reply to one TCLO command (`OK ...` or `ERROR ...`, rpcin.c) and what to do next.
pub fn answer_tclo(command: &[u8]) -> (String, TcloAction) {
    let text = String::from_utf8_lossy(command);
    let text = text.trim_end_matches('\0');
    let name = text.split(' ').next().unwrap_or_default();
    match name {
        // The VMX resets the loop when it (re)starts; "ATR" + the application name
        // (rpcChannel.c RpcChannelReset).
        "reset" => ("OK ATR toolbox".to_string(), TcloAction::None),
        "ping" => ("OK ".to_string(), TcloAction::None),
        "Capabilities_Register" => ("OK ".to_string(), TcloAction::Announce),
        // Tools options (toolScripts.*, ...): accepted, there is nothing to configure.
        "Set_Option" => ("OK ".to_string(), TcloAction::None),
        "OS_Halt" => ("OK ".to_string(), TcloAction::Power(PowerRequest::Halt)),
        "OS_Reboot" => ("OK ".to_string(), TcloAction::Power(PowerRequest::Reboot)),
        // No scripts to run on these.
        "OS_PowerOn" | "OS_Resume" | "OS_Suspend" => ("OK ".to_string(), TcloAction::None),
        "" => ("ERROR Bad command".to_string(), TcloAction::None),
        _ => ("ERROR Unknown Command".to_string(), TcloAction::None),
    }
}

/// One round of the TCLO loop (rpcin.c RpcInLoop): send the previous result (empty the first
/// time: "this is the only way to signal the existence of this guest application"), receive
/// the next command. Returns the command, empty when there is none.
pub fn tclo_round(backdoor: &mut impl Backdoor, channel: &Channel, last_result: &str) -> Result<Vec<u8>, RpcError> {
    channel.send(backdoor, last_result.as_bytes())?;
    channel.receive(backdoor)
}

#[cfg(test)]
pub mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::host_agent::vmware_backdoor::{Registers, MAGIC, PORT};

    /// A scripted backdoor: each call must carry exactly the expected registers and gets the
    /// recorded answer.
    pub struct Script(pub VecDeque<(Registers, Registers)>);

    impl Backdoor for Script {
        fn call(&mut self, regs: Registers) -> Registers {
            let (expected, answer) = self.0.pop_front().expect("a call the script did not expect");
            assert_eq!(regs, expected);
            answer
        }
    }

    /// The registers of a message-channel call on channel 5 with cookies (0xC00C1E01,
    /// 0xC00C1E02), spelled out as numbers.
    fn call(ecx: u32, ebx: u32) -> Registers {
        Registers {
            eax: MAGIC,
            ebx,
            ecx,
            edx: 0x0005_5658,
            esi: 0xC00C_1E01,
            edi: 0xC00C_1E02,
        }
    }

    fn answer(status: u32, ebx: u32, edx_high: u32) -> Registers {
        Registers {
            eax: 0,
            ebx,
            ecx: status << 16,
            edx: edx_high << 16 | u32::from(PORT),
            esi: 0,
            edi: 0,
        }
    }

    fn open_rpci() -> (Registers, Registers) {
        (
            Registers {
                eax: 0x564D_5868,
                ebx: 0xC943_5052, // 'RPCI' | GUESTMSG_FLAG_COOKIE
                ecx: 0x0000_001E,
                edx: 0x0000_5658,
                esi: 0,
                edi: 0,
            },
            Registers {
                eax: 0,
                ebx: 0,
                ecx: 0x0001_0000,
                edx: 0x0005_0000,
                esi: 0xC00C_1E01,
                edi: 0xC00C_1E02,
            },
        )
    }

    #[test]
    fn info_set_is_framed_four_bytes_at_a_time() {
        // "info-set guestinfo.ip 10.0.2.15" is 31 bytes: 7 full words and one of 3 bytes.
        let mut script = VecDeque::from([open_rpci(), (call(0x0001_001E, 31), answer(1, 0, 0))]);
        for word in [
            0x6f666e69u32, // "info"
            0x7465732d,    // "-set"
            0x65756720,    // " gue"
            0x6e697473,    // "stin"
            0x692e6f66,    // "fo.i"
            0x30312070,    // "p 10"
            0x322e302e,    // ".0.2"
            0x0035312e,    // ".15" and a zero pad byte
        ] {
            script.push_back((call(0x0002_001E, word), answer(1, 0, 0)));
        }
        // The reply "1 " : RECVSIZE says 2 bytes of type SENDSIZE, one payload word, status.
        script.push_back((call(0x0003_001E, 0), answer(0x3, 2, 1)));
        script.push_back((call(0x0004_001E, 1), answer(1, 0x0000_2031, 2)));
        script.push_back((call(0x0005_001E, 1), answer(1, 0, 0)));
        script.push_back((call(0x0006_001E, 0), answer(1, 0, 0)));
        let mut backdoor = Script(script);
        guestinfo_set(&mut backdoor, "ip", "10.0.2.15").unwrap();
        assert!(backdoor.0.is_empty(), "calls left over: {:?}", backdoor.0);
    }

    #[test]
    fn info_get_returns_the_value_or_none() {
        let mut script = VecDeque::from([open_rpci(), (call(0x0001_001E, 34), answer(1, 0, 0))]);
        let command = b"info-get guestinfo.uvmkit.hostname";
        for chunk in command.chunks(4) {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            script.push_back((call(0x0002_001E, u32::from_le_bytes(w)), answer(1, 0, 0)));
        }
        // "1 web-7": 7 bytes.
        script.push_back((call(0x0003_001E, 0), answer(0x3, 7, 1)));
        script.push_back((call(0x0004_001E, 1), answer(1, u32::from_le_bytes(*b"1 we"), 2)));
        script.push_back((call(0x0004_001E, 1), answer(1, u32::from_le_bytes(*b"b-7\0"), 2)));
        script.push_back((call(0x0005_001E, 1), answer(1, 0, 0)));
        script.push_back((call(0x0006_001E, 0), answer(1, 0, 0)));
        let mut backdoor = Script(script.clone());
        assert_eq!(
            guestinfo_get(&mut backdoor, "uvmkit.hostname").unwrap().as_deref(),
            Some("web-7")
        );

        // "0 No value found" is an unset variable, not an error.
        let mut unset: VecDeque<_> = script.into_iter().take(11).collect();
        unset.push_back((call(0x0003_001E, 0), answer(0x3, 16, 1)));
        for w in [*b"0 No", *b" val", *b"ue f", *b"ound"] {
            unset.push_back((call(0x0004_001E, 1), answer(1, u32::from_le_bytes(w), 2)));
        }
        unset.push_back((call(0x0005_001E, 1), answer(1, 0, 0)));
        unset.push_back((call(0x0006_001E, 0), answer(1, 0, 0)));
        let mut backdoor = Script(unset);
        assert_eq!(guestinfo_get(&mut backdoor, "uvmkit.hostname").unwrap(), None);
        assert!(backdoor.0.is_empty());
    }

    #[test]
    fn a_backdoor_without_message_channel_fails_to_open_cleanly() {
        // QEMU's vmport leaves the registers of an unknown command as they were: ECX's high
        // half (the status) stays the subcommand, 0: no MESSAGE_STATUS_SUCCESS. Both the
        // cookie and the plain open are tried.
        struct Vmport(usize);
        impl Backdoor for Vmport {
            fn call(&mut self, regs: Registers) -> Registers {
                self.0 += 1;
                regs
            }
        }
        let mut qemu = Vmport(0);
        let err = rpci(&mut qemu, "info-set guestinfo.ip 10.0.2.15").unwrap_err();
        assert_eq!(err, RpcError::Open(0));
        assert_eq!(qemu.0, 2);
        assert!(err.to_string().contains("QEMU's vmport"));
    }

    #[test]
    fn a_checkpoint_restarts_the_send() {
        let mut script = VecDeque::from([
            (call(0x0001_001E, 4), answer(1, 0, 0)),
            (call(0x0002_001E, u32::from_le_bytes(*b"ping")), answer(0x10, 0, 0)),
            (call(0x0001_001E, 4), answer(1, 0, 0)),
            (call(0x0002_001E, u32::from_le_bytes(*b"ping")), answer(1, 0, 0)),
        ]);
        let channel = Channel {
            id: 5,
            cookie: (0xC00C_1E01, 0xC00C_1E02),
        };
        let mut backdoor = Script(std::mem::take(&mut script));
        channel.send(&mut backdoor, b"ping").unwrap();
        assert!(backdoor.0.is_empty());
    }

    #[test]
    fn tclo_commands_get_rpcin_replies() {
        assert_eq!(answer_tclo(b"reset"), ("OK ATR toolbox".to_string(), TcloAction::None));
        assert_eq!(answer_tclo(b"ping\0"), ("OK ".to_string(), TcloAction::None));
        assert_eq!(
            answer_tclo(b"OS_Halt"),
            ("OK ".to_string(), TcloAction::Power(PowerRequest::Halt))
        );
        assert_eq!(
            answer_tclo(b"OS_Reboot"),
            ("OK ".to_string(), TcloAction::Power(PowerRequest::Reboot))
        );
        assert_eq!(answer_tclo(b"Capabilities_Register").1, TcloAction::Announce);
        assert_eq!(answer_tclo(b"Set_Option toolScripts.beforePowerOff 1").0, "OK ");
        assert_eq!(answer_tclo(b"Time_Synchronize 1").0, "ERROR Unknown Command");
        assert_eq!(answer_tclo(b"").0, "ERROR Bad command");
        assert_eq!(PowerRequest::Halt.status_message(), "tools.os.statechange.status 1 1");
        assert_eq!(PowerRequest::Reboot.status_message(), "tools.os.statechange.status 1 2");
        assert_eq!(announcements()[0], "tools.set.version 2147483647");
        assert!(announcements()[1].ends_with("statechange "));
    }

    #[test]
    fn tclo_round_sends_the_last_result_then_polls() {
        let channel = Channel {
            id: 5,
            cookie: (0xC00C_1E01, 0xC00C_1E02),
        };
        // Nothing to send yet: size 0, no payload; then RECVSIZE without DORECV: no command.
        let mut backdoor = Script(VecDeque::from([
            (call(0x0001_001E, 0), answer(1, 0, 0)),
            (call(0x0003_001E, 0), answer(1, 0, 0)),
        ]));
        assert!(tclo_round(&mut backdoor, &channel, "").unwrap().is_empty());
        // "OK " sent, "OS_Halt" (7 bytes) received.
        let mut backdoor = Script(VecDeque::from([
            (call(0x0001_001E, 3), answer(1, 0, 0)),
            (call(0x0002_001E, 0x0020_4b4f), answer(1, 0, 0)),
            (call(0x0003_001E, 0), answer(3, 7, 1)),
            (call(0x0004_001E, 1), answer(1, u32::from_le_bytes(*b"OS_H"), 2)),
            (call(0x0004_001E, 1), answer(1, u32::from_le_bytes(*b"alt\0"), 2)),
            (call(0x0005_001E, 1), answer(1, 0, 0)),
        ]));
        assert_eq!(tclo_round(&mut backdoor, &channel, "OK ").unwrap(), b"OS_Halt");
        assert!(backdoor.0.is_empty());
    }

    #[test]
    fn oversized_or_mistyped_messages_are_protocol_errors() {
        let channel = Channel {
            id: 5,
            cookie: (0xC00C_1E01, 0xC00C_1E02),
        };
        let mut backdoor = Script(VecDeque::from([(call(0x0003_001E, 0), answer(3, MAX_MESSAGE + 1, 1))]));
        assert!(matches!(channel.receive(&mut backdoor), Err(RpcError::Protocol { .. })));
        let mut backdoor = Script(VecDeque::from([(call(0x0003_001E, 0), answer(3, 4, 2))]));
        assert!(matches!(channel.receive(&mut backdoor), Err(RpcError::Protocol { .. })));
    }
}
