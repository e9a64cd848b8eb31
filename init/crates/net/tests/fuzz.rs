//! DHCP messages from the network, fed mutations of valid server replies and random bytes
//! (`uvmkit_testkit::fuzz`): the decoder, and the client's state machine taking whatever the
//! decoder accepts (its transaction id and hardware address made to match, so the options
//! reach the lease arithmetic). None may panic, run long or hold more than its heap bound.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use uvmkit_net::dhcp::packet::{code, BOOTREPLY};
use uvmkit_net::dhcp::{Action, ClientConfig, DhcpClient, DhcpOptions, DhcpPacket, Event, MessageType};
use uvmkit_testkit::fuzz::Fuzz;

uvmkit_testkit::count_allocations!();

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// A server's reply of `kind`, encoded by the crate's own encoder.
fn reply(kind: MessageType, overload: bool) -> Vec<u8> {
    let mut p = DhcpPacket::request(0x1234_5678, MAC);
    p.op = BOOTREPLY;
    p.yiaddr = Ipv4Addr::new(10, 0, 2, 15);
    p.siaddr = Ipv4Addr::new(10, 0, 2, 2);
    p.options = DhcpOptions {
        message_type: Some(kind),
        server_id: Some(Ipv4Addr::new(10, 0, 2, 2)),
        lease_time: Some(86_400),
        renewal_time: Some(43_200),
        rebinding_time: Some(75_600),
        subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
        routers: vec![Ipv4Addr::new(10, 0, 2, 2)],
        dns_servers: vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)],
        domain_name: Some("example.internal".into()),
        host_name: Some("guest".into()),
        message: Some("ok".into()),
        other: if overload {
            vec![(code::OVERLOAD, vec![3])]
        } else {
            Vec::new()
        },
        ..DhcpOptions::default()
    };
    let mut bytes = p.encode();
    if overload {
        // Options continued in `file` (RFC 2132 section 9.3): a domain name and the end.
        bytes[108..112].copy_from_slice(&[code::DOMAIN_NAME, 2, b'x', b'y']);
        bytes[112] = code::END;
        bytes[44] = code::END;
    }
    bytes
}

#[test]
fn the_seed_replies_decode() {
    let ack = DhcpPacket::decode(&reply(MessageType::Ack, false)).unwrap();
    assert_eq!(ack.options.lease_time, Some(86_400));
    assert_eq!(ack.options.dns_servers.len(), 2);
    let overloaded = DhcpPacket::decode(&reply(MessageType::Offer, true)).unwrap();
    assert_eq!(overloaded.options.domain_name.as_deref(), Some("example.internalxy"));
}

/// Runs the client from DISCOVER through `packet` as the OFFER and then as the ACK, then
/// through every timer it asks for, the last far in the future.
fn drive_client(mut packet: DhcpPacket) {
    let start = Instant::now();
    let mut client = DhcpClient::new(
        ClientConfig {
            mac: MAC,
            host_name: Some("guest".into()),
            seed: 7,
        },
        start,
    );
    let discover = client.handle(Event::Start, start);
    let Some(Action::Send(sent, _)) = discover.first() else {
        panic!("no DISCOVER: {discover:?}")
    };
    packet.xid = sent.xid;
    packet.op = BOOTREPLY;
    packet.hlen = 6;
    packet.chaddr[..6].copy_from_slice(&MAC);
    let mut now = start;
    for kind in [MessageType::Offer, MessageType::Ack] {
        packet.options.message_type = Some(kind);
        client.handle(Event::Packet(packet.clone()), now);
    }
    for _ in 0..8 {
        let Some(deadline) = client.deadline() else { break };
        now = now.max(deadline);
        client.handle(Event::Timer, now);
        client.handle(Event::Packet(packet.clone()), now);
    }
    client.handle(Event::Timer, now + Duration::from_secs(u64::from(u32::MAX) * 2));
    client.handle(Event::Release, now);
}

#[test]
fn dhcp_messages() {
    let seeds = vec![
        reply(MessageType::Offer, false),
        reply(MessageType::Ack, false),
        reply(MessageType::Nak, false),
        reply(MessageType::Offer, true),
    ];
    let decoded = std::cell::Cell::new(0u64);
    Fuzz::new("dhcp").max_len(1500).run(&seeds, |input| {
        if let Ok(packet) = DhcpPacket::decode(input) {
            decoded.set(decoded.get() + 1);
            let again = DhcpPacket::decode(&packet.encode());
            assert!(
                again.is_ok(),
                "our encoding of a decoded message does not decode: {again:?}"
            );
            drive_client(packet);
        }
    });
    // The mutations must reach the client, not only the decoder's first checks.
    assert!(decoded.get() > 150, "only {} inputs decoded", decoded.get());
}
