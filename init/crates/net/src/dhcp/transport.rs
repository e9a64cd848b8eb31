//! The DHCP client's transport: a UDP socket on 0.0.0.0:68 bound to one interface
//! (SO_BINDTODEVICE), allowed to broadcast. Replies reach it before the interface has an
//! address because requests set the BROADCAST flag (RFC 2131 §4.1), so servers broadcast them.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

pub use super::client::Destination;
use super::packet::{DhcpPacket, PacketError};

/// DHCP client port (RFC 2131 §4.1).
pub const CLIENT_PORT: u16 = 68;
/// DHCP server port (RFC 2131 §4.1).
pub const SERVER_PORT: u16 = 67;

/// A DHCP client socket bound to one interface.
#[derive(Debug)]
pub struct DhcpSocket {
    socket: UdpSocket,
}

/// What one `receive` call yielded.
#[derive(Debug)]
// One value per datagram, moved once: boxing the packet would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Received {
    /// A decoded DHCP message.
    Packet(DhcpPacket),
    /// A datagram that is not a DHCP message, and why.
    Malformed(PacketError),
    /// Nothing arrived before the timeout.
    Timeout,
}

impl DhcpSocket {
    /// Opens 0.0.0.0:68 on `interface` with SO_BROADCAST, SO_REUSEADDR and SO_BINDTODEVICE.
    pub fn open(interface: &str) -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked before it is wrapped.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::IPPROTO_UDP) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        set_option(&fd, libc::SO_REUSEADDR, &one.to_ne_bytes())?;
        set_option(&fd, libc::SO_BROADCAST, &one.to_ne_bytes())?;
        // Bound to the device, several interfaces can each hold port 68, and broadcasts
        // arriving on one are not seen by the others.
        set_option(&fd, libc::SO_BINDTODEVICE, interface.as_bytes())
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind the DHCP socket to {interface}: {e}")))?;
        let socket = UdpSocket::from(fd);
        let sa = any_address(CLIENT_PORT);
        // SAFETY: `sa` is a valid sockaddr_in of the length passed.
        let rc = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot bind UDP port 68 on {interface}: {e}; is another DHCP client running?"),
            ));
        }
        Ok(Self { socket })
    }

    /// Sends a message to port 67 of `to`.
    pub fn send(&self, packet: &DhcpPacket, to: Destination) -> io::Result<()> {
        let address = match to {
            Destination::Broadcast => Ipv4Addr::BROADCAST,
            Destination::Unicast(a) => a,
        };
        self.socket
            .send_to(&packet.encode(), SocketAddrV4::new(address, SERVER_PORT))?;
        Ok(())
    }

    /// Waits at most `timeout` (at least 1 ms) for one datagram.
    pub fn receive(&self, timeout: Duration) -> io::Result<Received> {
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        // 1500-byte Ethernet MTU less IP and UDP headers, with room to spare.
        let mut buf = [0u8; 2048];
        match self.socket.recv_from(&mut buf) {
            Ok((n, _)) => Ok(match DhcpPacket::decode(&buf[..n]) {
                Ok(p) => Received::Packet(p),
                Err(e) => Received::Malformed(e),
            }),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(Received::Timeout),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Received::Timeout),
            Err(e) => Err(e),
        }
    }
}

fn set_option(fd: &OwnedFd, name: libc::c_int, value: &[u8]) -> io::Result<()> {
    // SAFETY: `value` is valid for `value.len()` bytes for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn any_address(port: u16) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value (0.0.0.0, port 0).
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = port.to_be();
    sa.sin_addr.s_addr = u32::from(Ipv4Addr::UNSPECIFIED).to_be();
    sa
}
