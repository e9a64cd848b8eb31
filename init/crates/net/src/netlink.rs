//! IPv4 addresses and default routes through rtnetlink (rtnetlink(7), include/uapi/linux/
//! rtnetlink.h and if_addr.h): RTM_NEWADDR/RTM_DELADDR and RTM_NEWROUTE/RTM_DELROUTE, each
//! sent with NLM_F_ACK and checked against the kernel's NLMSG_ERROR reply.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

// include/uapi/linux/netlink.h
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
// include/uapi/linux/rtnetlink.h
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RT_TABLE_MAIN: u8 = 254;
const RTN_UNICAST: u8 = 1;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_HOST: u8 = 254;
const RTNH_F_ONLINK: u32 = 4;
/// Route origin: `proto dhcp` in `ip route`.
pub const RTPROT_DHCP: u8 = 16;
/// Route origin: `proto static` in `ip route`.
pub const RTPROT_STATIC: u8 = 4;
// include/uapi/linux/if_addr.h
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;

const NLMSG_HDRLEN: usize = 16;

/// An IPv4 address with its prefix on one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// Interface index.
    pub index: u32,
    /// The address.
    pub address: Ipv4Addr,
    /// Prefix length, 0 to 32.
    pub prefix: u8,
}

impl InterfaceAddress {
    /// The subnet's broadcast address, or `None` for /31 and /32 (RFC 3021).
    pub fn broadcast(&self) -> Option<Ipv4Addr> {
        (self.prefix < 31).then(|| Ipv4Addr::from(u32::from(self.address) | (u32::MAX >> self.prefix)))
    }

    /// Whether `other` is inside this address's subnet.
    pub fn contains(&self, other: Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
        u32::from(self.address) & mask == u32::from(other) & mask
    }
}

/// A default route (0.0.0.0/0) through a gateway on one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRoute {
    /// Outgoing interface index.
    pub index: u32,
    /// Next hop.
    pub gateway: Ipv4Addr,
    /// Preferred source address.
    pub source: Option<Ipv4Addr>,
    /// Route metric; lower wins between interfaces.
    pub metric: u32,
    /// Route origin, such as [`RTPROT_DHCP`].
    pub protocol: u8,
    /// Whether the gateway is reachable though outside the interface's subnet.
    pub onlink: bool,
}

/// Adds (or replaces) an address, like `ip addr replace A/P brd + dev X`.
pub fn add_address(a: &InterfaceAddress) -> io::Result<()> {
    let msg = address_message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, a);
    request(&msg).map_err(|e| context(e, &format!("add {}/{} to interface {}", a.address, a.prefix, a.index)))
}

/// Removes an address; one that is already gone is not an error.
pub fn remove_address(a: &InterfaceAddress) -> io::Result<()> {
    match request(&address_message(RTM_DELADDR, 0, a)) {
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) || e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        r => r.map_err(|e| {
            context(
                e,
                &format!("remove {}/{} from interface {}", a.address, a.prefix, a.index),
            )
        }),
    }
}

/// Adds (or replaces) a default route, like `ip route replace default via G dev X metric M`.
pub fn add_default_route(r: &DefaultRoute) -> io::Result<()> {
    let msg = route_message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, r);
    request(&msg).map_err(|e| {
        context(
            e,
            &format!("add a default route via {} on interface {}", r.gateway, r.index),
        )
    })
}

/// Removes a default route; one that is already gone is not an error.
pub fn remove_default_route(r: &DefaultRoute) -> io::Result<()> {
    match request(&route_message(RTM_DELROUTE, 0, r)) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) || e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        res => res.map_err(|e| context(e, &format!("remove the default route via {}", r.gateway))),
    }
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("rtnetlink: cannot {what}: {e}"))
}

/// `struct ifaddrmsg` and its attributes.
fn address_message(kind: u16, flags: u16, a: &InterfaceAddress) -> Vec<u8> {
    let mut m = header(kind, flags);
    let scope = if a.address.is_loopback() {
        RT_SCOPE_HOST
    } else {
        RT_SCOPE_UNIVERSE
    };
    m.extend_from_slice(&[libc::AF_INET as u8, a.prefix, 0, scope]);
    m.extend_from_slice(&a.index.to_ne_bytes());
    attribute(&mut m, IFA_LOCAL, &a.address.octets());
    attribute(&mut m, IFA_ADDRESS, &a.address.octets());
    if let Some(b) = a.broadcast() {
        attribute(&mut m, IFA_BROADCAST, &b.octets());
    }
    finish(m)
}

/// `struct rtmsg` for 0.0.0.0/0 in the main table, and its attributes.
fn route_message(kind: u16, flags: u16, r: &DefaultRoute) -> Vec<u8> {
    let mut m = header(kind, flags);
    // family, dst_len, src_len, tos, table, protocol, scope, type
    m.extend_from_slice(&[
        libc::AF_INET as u8,
        0,
        0,
        0,
        RT_TABLE_MAIN,
        r.protocol,
        RT_SCOPE_UNIVERSE,
        RTN_UNICAST,
    ]);
    m.extend_from_slice(&(if r.onlink { RTNH_F_ONLINK } else { 0 }).to_ne_bytes());
    attribute(&mut m, RTA_GATEWAY, &r.gateway.octets());
    attribute(&mut m, RTA_OIF, &r.index.to_ne_bytes());
    attribute(&mut m, RTA_PRIORITY, &r.metric.to_ne_bytes());
    if let Some(s) = r.source {
        attribute(&mut m, RTA_PREFSRC, &s.octets());
    }
    finish(m)
}

static SEQUENCE: AtomicU32 = AtomicU32::new(1);

/// `struct nlmsghdr` with the length left for `finish`.
fn header(kind: u16, flags: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&SEQUENCE.fetch_add(1, Ordering::Relaxed).to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m
}

/// `struct rtattr`, padded to 4 bytes (RTA_ALIGN).
fn attribute(m: &mut Vec<u8>, kind: u16, data: &[u8]) {
    m.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(data);
    while !m.len().is_multiple_of(4) {
        m.push(0);
    }
}

fn finish(mut m: Vec<u8>) -> Vec<u8> {
    let len = m.len() as u32;
    m[..4].copy_from_slice(&len.to_ne_bytes());
    m
}

/// Sends one request and waits for its acknowledgement; a kernel error becomes its errno.
fn request(msg: &[u8]) -> io::Result<()> {
    // SAFETY: plain socket(2); checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain data; zero means "the kernel".
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `msg` and `kernel` are valid for the lengths passed.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let seq = u32::from_ne_bytes(msg[8..12].try_into().expect("header is 16 bytes"));
    let mut buf = vec![0u8; 8192];
    loop {
        // SAFETY: `buf` is valid for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if let Some(result) = find_ack(&buf[..n as usize], seq) {
            return result;
        }
    }
}

/// Looks through a datagram of netlink messages for the NLMSG_ERROR that answers `seq`.
fn find_ack(mut data: &[u8], seq: u32) -> Option<io::Result<()>> {
    while data.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(data[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed rtnetlink reply",
            )));
        }
        let kind = u16::from_ne_bytes(data[4..6].try_into().ok()?);
        let msg_seq = u32::from_ne_bytes(data[8..12].try_into().ok()?);
        if kind == NLMSG_ERROR && msg_seq == seq && len >= NLMSG_HDRLEN + 4 {
            let errno = i32::from_ne_bytes(data[16..20].try_into().ok()?);
            return Some(if errno == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(-errno))
            });
        }
        data = data.get((len + 3) & !3..).unwrap_or(&[]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_message_layout() {
        let a = InterfaceAddress {
            index: 3,
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
        };
        let m = address_message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, &a);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize, m.len());
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), RTM_NEWADDR);
        assert_eq!(u16::from_ne_bytes(m[6..8].try_into().unwrap()), 0x505);
        assert_eq!(&m[16..20], &[libc::AF_INET as u8, 24, 0, 0]);
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 3);
        // IFA_LOCAL, IFA_ADDRESS, IFA_BROADCAST: 8 bytes each.
        assert_eq!(m.len(), 24 + 3 * 8);
        assert_eq!(&m[24..32], &[8, 0, 2, 0, 10, 0, 2, 15][..]);
        assert_eq!(&m[44..48], &[10, 0, 2, 255]);
    }

    #[test]
    fn subnet_math() {
        let a = InterfaceAddress {
            index: 1,
            address: Ipv4Addr::new(192, 168, 7, 9),
            prefix: 20,
        };
        assert_eq!(a.broadcast(), Some(Ipv4Addr::new(192, 168, 15, 255)));
        assert!(a.contains(Ipv4Addr::new(192, 168, 0, 1)));
        assert!(!a.contains(Ipv4Addr::new(192, 168, 16, 1)));
        let host = InterfaceAddress { prefix: 32, ..a };
        assert_eq!(host.broadcast(), None);
        assert!(!host.contains(Ipv4Addr::new(192, 168, 7, 1)));
        let all = InterfaceAddress { prefix: 0, ..a };
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
    }

    #[test]
    fn finds_the_matching_ack() {
        let mut reply = Vec::new();
        for (seq, errno) in [(7u32, 0i32), (9, -libc::EEXIST)] {
            reply.extend_from_slice(&36u32.to_ne_bytes());
            reply.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            reply.extend_from_slice(&0u16.to_ne_bytes());
            reply.extend_from_slice(&seq.to_ne_bytes());
            reply.extend_from_slice(&0u32.to_ne_bytes());
            reply.extend_from_slice(&errno.to_ne_bytes());
            reply.extend_from_slice(&[0; 16]);
        }
        assert!(find_ack(&reply, 7).unwrap().is_ok());
        assert_eq!(
            find_ack(&reply, 9).unwrap().unwrap_err().raw_os_error(),
            Some(libc::EEXIST)
        );
        assert!(find_ack(&reply, 8).is_none());
        assert!(find_ack(&reply[..20], 7).unwrap().is_err());
    }
}
