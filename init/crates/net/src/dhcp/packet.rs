//! DHCPv4 message encoding and decoding: the BOOTP header (RFC 2131 §2, figure 1), the magic
//! cookie and the options of RFC 2132, with long-option concatenation (RFC 3396) and option
//! overload (RFC 2132 §9.3).

use std::net::Ipv4Addr;

use thiserror::Error;

/// `op` of a client message (RFC 2131 §2).
pub const BOOTREQUEST: u8 = 1;
/// `op` of a server message (RFC 2131 §2).
pub const BOOTREPLY: u8 = 2;
/// `htype` for 10 Mb/s Ethernet (RFC 1700, "Hardware Type").
pub const HTYPE_ETHERNET: u8 = 1;
/// The BROADCAST bit of `flags` (RFC 2131 §2, figure 2).
pub const FLAG_BROADCAST: u16 = 0x8000;
/// The first four octets of the options field (RFC 2131 §3, RFC 1497).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

/// Fixed BOOTP header length up to and including `file` (RFC 2131 §2).
const HEADER_LEN: usize = 236;
/// A BOOTP message is at least 300 octets (RFC 1542 §2.1); some relays drop shorter ones.
const MIN_MESSAGE_LEN: usize = 300;

/// Option codes of RFC 2132 that this client reads or writes.
pub mod code {
    /// Padding (RFC 2132 §3.1).
    pub const PAD: u8 = 0;
    /// Subnet mask (§3.3).
    pub const SUBNET_MASK: u8 = 1;
    /// Routers (§3.5).
    pub const ROUTER: u8 = 3;
    /// Domain name servers (§3.8).
    pub const DNS: u8 = 6;
    /// Host name (§3.14).
    pub const HOST_NAME: u8 = 12;
    /// Domain name (§3.17).
    pub const DOMAIN_NAME: u8 = 15;
    /// Requested IP address (§9.1).
    pub const REQUESTED_IP: u8 = 50;
    /// IP address lease time (§9.2).
    pub const LEASE_TIME: u8 = 51;
    /// Option overload (§9.3).
    pub const OVERLOAD: u8 = 52;
    /// DHCP message type (§9.6).
    pub const MESSAGE_TYPE: u8 = 53;
    /// Server identifier (§9.7).
    pub const SERVER_ID: u8 = 54;
    /// Parameter request list (§9.8).
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    /// Message, human-readable error text (§9.9).
    pub const MESSAGE: u8 = 56;
    /// Renewal (T1) time value (§9.11).
    pub const RENEWAL_TIME: u8 = 58;
    /// Rebinding (T2) time value (§9.12).
    pub const REBINDING_TIME: u8 = 59;
    /// Client identifier (§9.14).
    pub const CLIENT_ID: u8 = 61;
    /// End of options (§3.2).
    pub const END: u8 = 255;
}

/// Why a datagram is not a DHCP message this client can read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PacketError {
    /// Shorter than the fixed header plus magic cookie.
    #[error("DHCP message is {len} bytes, shorter than the 240-byte BOOTP header and magic cookie; the sender is not a DHCP server or the datagram was truncated")]
    TooShort {
        /// Length received.
        len: usize,
    },
    /// The options field does not start with 99.130.83.99.
    #[error(
        "BOOTP message lacks the DHCP magic cookie 99.130.83.99 (RFC 2131 §3); it is plain BOOTP or not DHCP at all"
    )]
    BadMagicCookie,
    /// An option's length runs past the end of its field.
    #[error("DHCP option {code} claims more bytes than the message holds; the message is truncated or corrupt")]
    TruncatedOption {
        /// Option code.
        code: u8,
    },
    /// An option has a length its definition does not allow.
    #[error(
        "DHCP option {code} has length {len}, which RFC 2132 does not allow for it; the server sent a malformed option"
    )]
    BadOptionLength {
        /// Option code.
        code: u8,
        /// Length found.
        len: usize,
    },
    /// Option 53 holds a value outside 1..=8.
    #[error("DHCP message type {0} is unknown (RFC 2132 §9.6 defines 1 to 8)")]
    UnknownMessageType(u8),
    /// `hlen` is larger than the 16-byte `chaddr` field.
    #[error("BOOTP hardware address length {0} exceeds the 16-byte chaddr field")]
    BadHardwareLength(u8),
}

/// DHCP message type, option 53 (RFC 2132 §9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// Client broadcast to locate servers.
    Discover = 1,
    /// Server offer of an address.
    Offer = 2,
    /// Client request of an offered or leased address.
    Request = 3,
    /// Client refusal of an address already in use.
    Decline = 4,
    /// Server confirmation of a lease.
    Ack = 5,
    /// Server refusal of a request.
    Nak = 6,
    /// Client relinquishing a lease.
    Release = 7,
    /// Client request of parameters only.
    Inform = 8,
}

impl MessageType {
    /// Reads the option 53 value.
    pub fn from_u8(value: u8) -> Result<Self, PacketError> {
        Ok(match value {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            other => return Err(PacketError::UnknownMessageType(other)),
        })
    }
}

/// The options of a DHCP message this client understands; the rest are kept raw in `other`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DhcpOptions {
    /// 53: message type.
    pub message_type: Option<MessageType>,
    /// 61: client identifier.
    pub client_id: Option<Vec<u8>>,
    /// 50: requested IP address.
    pub requested_ip: Option<Ipv4Addr>,
    /// 54: server identifier.
    pub server_id: Option<Ipv4Addr>,
    /// 51: lease time in seconds (`u32::MAX` is infinite).
    pub lease_time: Option<u32>,
    /// 58: T1 in seconds.
    pub renewal_time: Option<u32>,
    /// 59: T2 in seconds.
    pub rebinding_time: Option<u32>,
    /// 1: subnet mask.
    pub subnet_mask: Option<Ipv4Addr>,
    /// 3: routers, in order of preference.
    pub routers: Vec<Ipv4Addr>,
    /// 6: DNS servers, in order of preference.
    pub dns_servers: Vec<Ipv4Addr>,
    /// 12: host name.
    pub host_name: Option<String>,
    /// 15: domain name.
    pub domain_name: Option<String>,
    /// 55: parameter request list.
    pub parameter_request_list: Vec<u8>,
    /// 56: message (a server's reason for a NAK).
    pub message: Option<String>,
    /// Every other option, code and data, in the order first seen.
    pub other: Vec<(u8, Vec<u8>)>,
}

/// A DHCP message: the BOOTP header fields of RFC 2131 §2 and the decoded options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpPacket {
    /// 1 = BOOTREQUEST, 2 = BOOTREPLY.
    pub op: u8,
    /// Hardware address type (1 = Ethernet).
    pub htype: u8,
    /// Hardware address length.
    pub hlen: u8,
    /// Relay hop count.
    pub hops: u8,
    /// Transaction ID chosen by the client.
    pub xid: u32,
    /// Seconds since the client began acquisition or renewal.
    pub secs: u16,
    /// Flags (bit 15 = BROADCAST).
    pub flags: u16,
    /// Client IP address, when bound, renewing or rebinding.
    pub ciaddr: Ipv4Addr,
    /// "Your" IP address: the address a server offers or assigns.
    pub yiaddr: Ipv4Addr,
    /// Next server address (boot server).
    pub siaddr: Ipv4Addr,
    /// Relay agent address.
    pub giaddr: Ipv4Addr,
    /// Client hardware address, padded with zeros to 16 bytes.
    pub chaddr: [u8; 16],
    /// Server host name (`sname`) unless overloaded with options; empty when unused.
    pub sname: Vec<u8>,
    /// Boot file name (`file`) unless overloaded with options; empty when unused.
    pub file: Vec<u8>,
    /// Options after the magic cookie.
    pub options: DhcpOptions,
}

impl DhcpPacket {
    /// A client request from an Ethernet MAC with every address zero and no options.
    pub fn request(xid: u32, mac: [u8; 6]) -> Self {
        let mut chaddr = [0u8; 16];
        chaddr[..6].copy_from_slice(&mac);
        Self {
            op: BOOTREQUEST,
            htype: HTYPE_ETHERNET,
            hlen: 6,
            hops: 0,
            xid,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            sname: Vec::new(),
            file: Vec::new(),
            options: DhcpOptions::default(),
        }
    }

    /// The hardware address (`chaddr` cut to `hlen`).
    pub fn hardware_address(&self) -> &[u8] {
        &self.chaddr[..usize::from(self.hlen.min(16))]
    }

    /// Serialises the message; the result is at least 300 bytes (RFC 1542 §2.1).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MIN_MESSAGE_LEN + 64);
        out.extend_from_slice(&[self.op, self.htype, self.hlen, self.hops]);
        out.extend_from_slice(&self.xid.to_be_bytes());
        out.extend_from_slice(&self.secs.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        for addr in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            out.extend_from_slice(&addr.octets());
        }
        out.extend_from_slice(&self.chaddr);
        put_fixed(&mut out, &self.sname, 64);
        put_fixed(&mut out, &self.file, 128);
        out.extend_from_slice(&MAGIC_COOKIE);
        encode_options(&self.options, &mut out);
        out.push(code::END);
        if out.len() < MIN_MESSAGE_LEN {
            out.resize(MIN_MESSAGE_LEN, code::PAD);
        }
        out
    }

    /// Parses a message received from the network.
    pub fn decode(bytes: &[u8]) -> Result<Self, PacketError> {
        if bytes.len() < HEADER_LEN + MAGIC_COOKIE.len() {
            return Err(PacketError::TooShort { len: bytes.len() });
        }
        if bytes[HEADER_LEN..HEADER_LEN + 4] != MAGIC_COOKIE {
            return Err(PacketError::BadMagicCookie);
        }
        let hlen = bytes[2];
        if hlen > 16 {
            return Err(PacketError::BadHardwareLength(hlen));
        }
        let be32 = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let ip = |at: usize| Ipv4Addr::from(be32(at));
        let mut chaddr = [0u8; 16];
        chaddr.copy_from_slice(&bytes[28..44]);
        let sname_field = &bytes[44..108];
        let file_field = &bytes[108..236];

        // RFC 2131 §4.1: options, then `file`, then `sname` when overloaded (RFC 2132 §9.3).
        let mut raw = RawOptions::default();
        raw.parse(&bytes[HEADER_LEN + 4..])?;
        let overload = raw.get(code::OVERLOAD).map(<[u8]>::to_vec);
        let (mut sname, mut file) = (trim_nul(sname_field), trim_nul(file_field));
        if let Some(value) = overload {
            let [flag] = value[..] else {
                return Err(PacketError::BadOptionLength {
                    code: code::OVERLOAD,
                    len: value.len(),
                });
            };
            if flag & 1 != 0 {
                raw.parse(file_field)?;
                file = Vec::new();
            }
            if flag & 2 != 0 {
                raw.parse(sname_field)?;
                sname = Vec::new();
            }
        }

        Ok(Self {
            op: bytes[0],
            htype: bytes[1],
            hlen,
            hops: bytes[3],
            xid: be32(4),
            secs: u16::from_be_bytes([bytes[8], bytes[9]]),
            flags: u16::from_be_bytes([bytes[10], bytes[11]]),
            ciaddr: ip(12),
            yiaddr: ip(16),
            siaddr: ip(20),
            giaddr: ip(24),
            chaddr,
            sname,
            file,
            options: raw.into_options()?,
        })
    }
}

fn put_fixed(out: &mut Vec<u8>, value: &[u8], width: usize) {
    let n = value.len().min(width - 1);
    out.extend_from_slice(&value[..n]);
    out.resize(out.len() + width - n, 0);
}

fn trim_nul(field: &[u8]) -> Vec<u8> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    field[..end].to_vec()
}

/// Appends one option, split into several instances when longer than 255 bytes (RFC 3396 §7).
fn put_option(out: &mut Vec<u8>, code: u8, data: &[u8]) {
    if data.is_empty() {
        out.extend_from_slice(&[code, 0]);
        return;
    }
    for chunk in data.chunks(255) {
        out.push(code);
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
}

fn addresses(list: &[Ipv4Addr]) -> Vec<u8> {
    list.iter().flat_map(|a| a.octets()).collect()
}

/// Writes the options in a fixed order: message type first (some servers expect it there),
/// then the client's identity and request, then everything else by code.
fn encode_options(o: &DhcpOptions, out: &mut Vec<u8>) {
    if let Some(t) = o.message_type {
        put_option(out, code::MESSAGE_TYPE, &[t as u8]);
    }
    if let Some(id) = &o.client_id {
        put_option(out, code::CLIENT_ID, id);
    }
    if let Some(a) = o.requested_ip {
        put_option(out, code::REQUESTED_IP, &a.octets());
    }
    if let Some(a) = o.server_id {
        put_option(out, code::SERVER_ID, &a.octets());
    }
    if let Some(name) = &o.host_name {
        put_option(out, code::HOST_NAME, name.as_bytes());
    }
    if !o.parameter_request_list.is_empty() {
        put_option(out, code::PARAMETER_REQUEST_LIST, &o.parameter_request_list);
    }
    if let Some(t) = o.lease_time {
        put_option(out, code::LEASE_TIME, &t.to_be_bytes());
    }
    if let Some(t) = o.renewal_time {
        put_option(out, code::RENEWAL_TIME, &t.to_be_bytes());
    }
    if let Some(t) = o.rebinding_time {
        put_option(out, code::REBINDING_TIME, &t.to_be_bytes());
    }
    if let Some(m) = o.subnet_mask {
        put_option(out, code::SUBNET_MASK, &m.octets());
    }
    if !o.routers.is_empty() {
        put_option(out, code::ROUTER, &addresses(&o.routers));
    }
    if !o.dns_servers.is_empty() {
        put_option(out, code::DNS, &addresses(&o.dns_servers));
    }
    if let Some(d) = &o.domain_name {
        put_option(out, code::DOMAIN_NAME, d.as_bytes());
    }
    if let Some(m) = &o.message {
        put_option(out, code::MESSAGE, m.as_bytes());
    }
    for (c, data) in &o.other {
        put_option(out, *c, data);
    }
}

/// Options as (code, data) in first-seen order, with repeated codes concatenated (RFC 3396 §5).
#[derive(Default)]
struct RawOptions(Vec<(u8, Vec<u8>)>);

impl RawOptions {
    fn parse(&mut self, mut field: &[u8]) -> Result<(), PacketError> {
        while let Some((&c, rest)) = field.split_first() {
            match c {
                code::PAD => field = rest,
                code::END => break,
                _ => {
                    let (&len, rest) = rest.split_first().ok_or(PacketError::TruncatedOption { code: c })?;
                    let len = usize::from(len);
                    if rest.len() < len {
                        return Err(PacketError::TruncatedOption { code: c });
                    }
                    let data = &rest[..len];
                    match self.0.iter_mut().find(|(k, _)| *k == c) {
                        Some((_, existing)) => existing.extend_from_slice(data),
                        None => self.0.push((c, data.to_vec())),
                    }
                    field = &rest[len..];
                }
            }
        }
        Ok(())
    }

    fn get(&self, c: u8) -> Option<&[u8]> {
        self.0.iter().find(|(k, _)| *k == c).map(|(_, v)| v.as_slice())
    }

    fn into_options(self) -> Result<DhcpOptions, PacketError> {
        let mut o = DhcpOptions::default();
        for (c, data) in self.0 {
            match c {
                code::MESSAGE_TYPE => o.message_type = Some(MessageType::from_u8(exact::<1>(c, &data)?[0])?),
                code::CLIENT_ID => o.client_id = Some(data),
                code::REQUESTED_IP => o.requested_ip = Some(Ipv4Addr::from(exact::<4>(c, &data)?)),
                code::SERVER_ID => o.server_id = Some(Ipv4Addr::from(exact::<4>(c, &data)?)),
                code::LEASE_TIME => o.lease_time = Some(u32::from_be_bytes(exact::<4>(c, &data)?)),
                code::RENEWAL_TIME => o.renewal_time = Some(u32::from_be_bytes(exact::<4>(c, &data)?)),
                code::REBINDING_TIME => o.rebinding_time = Some(u32::from_be_bytes(exact::<4>(c, &data)?)),
                code::SUBNET_MASK => o.subnet_mask = Some(Ipv4Addr::from(exact::<4>(c, &data)?)),
                code::ROUTER => o.routers = address_list(c, &data)?,
                code::DNS => o.dns_servers = address_list(c, &data)?,
                code::HOST_NAME => o.host_name = Some(text(&data)),
                code::DOMAIN_NAME => o.domain_name = Some(text(&data)),
                code::PARAMETER_REQUEST_LIST => o.parameter_request_list = data,
                code::MESSAGE => o.message = Some(text(&data)),
                code::OVERLOAD => {}
                _ => o.other.push((c, data)),
            }
        }
        Ok(o)
    }
}

fn exact<const N: usize>(c: u8, data: &[u8]) -> Result<[u8; N], PacketError> {
    data.try_into().map_err(|_| PacketError::BadOptionLength {
        code: c,
        len: data.len(),
    })
}

fn address_list(c: u8, data: &[u8]) -> Result<Vec<Ipv4Addr>, PacketError> {
    if data.is_empty() || !data.len().is_multiple_of(4) {
        return Err(PacketError::BadOptionLength {
            code: c,
            len: data.len(),
        });
    }
    Ok(data
        .chunks_exact(4)
        .map(|q| Ipv4Addr::new(q[0], q[1], q[2], q[3]))
        .collect())
}

/// NVT ASCII text; some servers append NUL terminators (RFC 2132 §2 says they should not).
fn text(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    /// A DHCPOFFER laid out byte by byte from RFC 2131 figure 1, as a server on 10.0.2.2
    /// offering 10.0.2.15 would send it.
    fn captured_offer() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&[2, 1, 6, 0]); // op BOOTREPLY, htype Ethernet, hlen 6, hops 0
        b.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // xid
        b.extend_from_slice(&[0, 0, 0x80, 0]); // secs 0, flags BROADCAST
        b.extend_from_slice(&[0, 0, 0, 0]); // ciaddr
        b.extend_from_slice(&[10, 0, 2, 15]); // yiaddr
        b.extend_from_slice(&[10, 0, 2, 2]); // siaddr
        b.extend_from_slice(&[0, 0, 0, 0]); // giaddr
        b.extend_from_slice(&MAC);
        b.extend_from_slice(&[0; 10]); // chaddr padding
        b.extend_from_slice(&[0; 64]); // sname
        b.extend_from_slice(&[0; 128]); // file
        b.extend_from_slice(&[99, 130, 83, 99]); // magic cookie
        b.extend_from_slice(&[53, 1, 2]); // DHCPOFFER
        b.extend_from_slice(&[54, 4, 10, 0, 2, 2]); // server identifier
        b.extend_from_slice(&[51, 4, 0, 0, 0x0e, 0x10]); // lease 3600 s
        b.extend_from_slice(&[1, 4, 255, 255, 255, 0]); // subnet mask
        b.extend_from_slice(&[3, 4, 10, 0, 2, 2]); // router
        b.extend_from_slice(&[6, 8, 10, 0, 2, 3, 1, 1, 1, 1]); // two DNS servers
        b.extend_from_slice(&[15, 9]);
        b.extend_from_slice(b"lab.local"); // domain name
        b.extend_from_slice(&[0, 0]); // pads
        b.push(255);
        b.resize(300, 0);
        b
    }

    #[test]
    fn decodes_a_hand_built_offer() {
        let p = DhcpPacket::decode(&captured_offer()).unwrap();
        assert_eq!(p.op, BOOTREPLY);
        assert_eq!(p.xid, 0xdeadbeef);
        assert_eq!(p.flags, FLAG_BROADCAST);
        assert_eq!(p.yiaddr, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(p.siaddr, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(p.hardware_address(), &MAC);
        let o = &p.options;
        assert_eq!(o.message_type, Some(MessageType::Offer));
        assert_eq!(o.server_id, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(o.lease_time, Some(3600));
        assert_eq!(o.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(o.routers, vec![Ipv4Addr::new(10, 0, 2, 2)]);
        assert_eq!(
            o.dns_servers,
            vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)]
        );
        assert_eq!(o.domain_name.as_deref(), Some("lab.local"));
        assert!(o.other.is_empty());
    }

    #[test]
    fn encodes_the_rfc_layout() {
        let mut p = DhcpPacket::request(0x01020304, MAC);
        p.flags = FLAG_BROADCAST;
        p.secs = 7;
        p.options.message_type = Some(MessageType::Discover);
        p.options.client_id = Some(vec![1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        p.options.parameter_request_list = vec![1, 3, 6];
        let b = p.encode();
        assert_eq!(b.len(), 300);
        assert_eq!(&b[..4], &[1, 1, 6, 0]);
        assert_eq!(&b[4..8], &[1, 2, 3, 4]);
        assert_eq!(&b[8..12], &[0, 7, 0x80, 0]);
        assert_eq!(&b[28..34], &MAC);
        assert_eq!(&b[236..240], &MAGIC_COOKIE);
        assert_eq!(&b[240..243], &[53, 1, 1]);
        assert_eq!(&b[243..252], &[61, 7, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(&b[252..257], &[55, 3, 1, 3, 6]);
        assert_eq!(b[257], 255);
        assert!(b[258..].iter().all(|&x| x == 0));
    }

    #[test]
    fn round_trips_every_option() {
        let mut p = DhcpPacket::request(42, MAC);
        p.op = BOOTREPLY;
        p.ciaddr = Ipv4Addr::new(192, 168, 1, 9);
        p.yiaddr = Ipv4Addr::new(192, 168, 1, 10);
        p.giaddr = Ipv4Addr::new(192, 168, 1, 254);
        p.sname = b"server".to_vec();
        p.file = b"pxelinux.0".to_vec();
        p.options = DhcpOptions {
            message_type: Some(MessageType::Ack),
            client_id: Some(vec![1, 2, 3]),
            requested_ip: Some(Ipv4Addr::new(192, 168, 1, 10)),
            server_id: Some(Ipv4Addr::new(192, 168, 1, 1)),
            lease_time: Some(86400),
            renewal_time: Some(43200),
            rebinding_time: Some(75600),
            subnet_mask: Some(Ipv4Addr::new(255, 255, 252, 0)),
            routers: vec![Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(192, 168, 1, 2)],
            dns_servers: vec![Ipv4Addr::new(9, 9, 9, 9)],
            host_name: Some("uvm-01".into()),
            domain_name: Some("example.test".into()),
            parameter_request_list: vec![1, 3, 6, 12, 15, 51, 58, 59],
            message: Some("ok".into()),
            other: vec![(26, vec![5, 220]), (119, vec![0xaa; 300])],
        };
        let decoded = DhcpPacket::decode(&p.encode()).unwrap();
        assert_eq!(decoded, p);
    }

    #[test]
    fn long_options_are_split_and_joined() {
        let mut p = DhcpPacket::request(1, MAC);
        p.options.dns_servers = (0..100).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect(); // 400 bytes
        let b = p.encode();
        // First instance: code 6, length 255; the second carries the remaining 145 bytes.
        assert_eq!(&b[240..242], &[6, 255]);
        assert_eq!(&b[240 + 257..240 + 259], &[6, 145]);
        assert_eq!(DhcpPacket::decode(&b).unwrap().options.dns_servers.len(), 100);
    }

    #[test]
    fn reads_overloaded_file_and_sname() {
        let mut b = captured_offer();
        // Options area: replace the domain option with an overload flag of 3 (file and sname).
        b.truncate(240);
        b.extend_from_slice(&[53, 1, 5, 52, 1, 3, 255]);
        b[108] = 51; // lease time in `file`
        b[109..114].copy_from_slice(&[4, 0, 0, 0, 60]);
        b[114] = 255;
        b[44..50].copy_from_slice(&[3, 4, 10, 0, 2, 1]); // router in `sname`
        b[50] = 255;
        b.resize(300, 0);
        let p = DhcpPacket::decode(&b).unwrap();
        assert_eq!(p.options.message_type, Some(MessageType::Ack));
        assert_eq!(p.options.lease_time, Some(60));
        assert_eq!(p.options.routers, vec![Ipv4Addr::new(10, 0, 2, 1)]);
        assert!(p.sname.is_empty() && p.file.is_empty());
    }

    #[test]
    fn rejects_malformed_messages() {
        let good = captured_offer();
        assert_eq!(
            DhcpPacket::decode(&good[..200]),
            Err(PacketError::TooShort { len: 200 })
        );
        let mut bad = good.clone();
        bad[236] = 0;
        assert_eq!(DhcpPacket::decode(&bad), Err(PacketError::BadMagicCookie));
        let mut bad = good.clone();
        bad.truncate(240);
        bad.extend_from_slice(&[6, 10, 1, 2, 3]);
        assert_eq!(DhcpPacket::decode(&bad), Err(PacketError::TruncatedOption { code: 6 }));
        let mut bad = good.clone();
        bad.truncate(240);
        bad.extend_from_slice(&[54, 3, 1, 2, 3, 255]);
        assert_eq!(
            DhcpPacket::decode(&bad),
            Err(PacketError::BadOptionLength { code: 54, len: 3 })
        );
        let mut bad = good;
        bad.truncate(240);
        bad.extend_from_slice(&[53, 1, 9, 255]);
        assert_eq!(DhcpPacket::decode(&bad), Err(PacketError::UnknownMessageType(9)));
        // Arbitrary garbage never panics.
        for len in [0usize, 1, 239, 240, 241, 242, 400] {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let _ = DhcpPacket::decode(&junk);
        }
    }
}
