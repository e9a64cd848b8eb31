//! The DHCP client state machine of RFC 2131 §4.4 (figure 5): INIT → SELECTING → REQUESTING →
//! BOUND → RENEWING → REBINDING. It is pure: the caller feeds it events with the current
//! monotonic time and carries out the actions it returns, so it runs the same under a test's
//! fake clock as on a real interface.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::packet::{code, DhcpPacket, MessageType, BOOTREPLY, FLAG_BROADCAST};

/// First retransmission delay; doubled after each attempt (RFC 2131 §4.1).
const INITIAL_BACKOFF: Duration = Duration::from_secs(4);
/// Longest retransmission delay (RFC 2131 §4.1).
const MAX_BACKOFF: Duration = Duration::from_secs(64);
/// Jitter is uniform in ±1 s (RFC 2131 §4.1).
const JITTER_MS: u64 = 1000;
/// REQUEST attempts in REQUESTING before going back to INIT (4 + 8 + 16 + 32 s, about a minute).
const REQUEST_ATTEMPTS: u32 = 4;
/// Shortest retransmission interval in RENEWING and REBINDING (RFC 2131 §4.4.5).
const MIN_RENEW_INTERVAL: Duration = Duration::from_secs(60);
/// Options asked of the server (option 55).
const PARAMETER_REQUEST_LIST: [u8; 8] = [
    code::SUBNET_MASK,
    code::ROUTER,
    code::DNS,
    code::HOST_NAME,
    code::DOMAIN_NAME,
    code::LEASE_TIME,
    code::RENEWAL_TIME,
    code::REBINDING_TIME,
];

/// Who the client is on the wire.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The interface's Ethernet address (`chaddr`, and the client identifier).
    pub mac: [u8; 6],
    /// Host name to send in option 12, if any.
    pub host_name: Option<String>,
    /// Seed of transaction IDs and retransmission jitter.
    pub seed: u64,
}

/// A state of RFC 2131 figure 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started, or stopped after a release.
    Init,
    /// DISCOVER sent, waiting for an OFFER.
    Selecting,
    /// REQUEST for an offer sent, waiting for ACK or NAK.
    Requesting,
    /// Holding a lease until T1.
    Bound,
    /// Past T1: renewing with the leasing server by unicast.
    Renewing,
    /// Past T2: rebinding with any server by broadcast.
    Rebinding,
}

/// An input to the state machine.
#[derive(Debug, Clone)]
// One value per datagram, moved once: boxing the packet would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// Begin acquiring a lease (from INIT, or restart from any state).
    Start,
    /// A DHCP message arrived on the interface.
    Packet(DhcpPacket),
    /// The time returned in the last `WaitUntil` may have come; early timers are ignored.
    Timer,
    /// Shut down: release the lease, if any, and stop.
    Release,
}

/// An address lease granted by a server's DHCPACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The leased address (`yiaddr`).
    pub address: Ipv4Addr,
    /// Prefix length from option 1 (or the address class when absent).
    pub prefix: u8,
    /// Routers from option 3; the first is the default gateway.
    pub routers: Vec<Ipv4Addr>,
    /// DNS servers from option 6.
    pub dns_servers: Vec<Ipv4Addr>,
    /// Domain name from option 15, the resolver's search domain.
    pub domain_name: Option<String>,
    /// Server identifier (option 54) of the server that granted the lease.
    pub server_id: Ipv4Addr,
    /// Lease duration (option 51).
    pub lease_time: Duration,
    /// T1 (option 58, default half the lease).
    pub renewal_time: Duration,
    /// T2 (option 59, default 7/8 of the lease).
    pub rebinding_time: Duration,
    /// When the REQUEST that earned this lease was first sent: times count from here (§4.4.1).
    pub acquired: Instant,
}

impl Lease {
    /// When RENEWING starts.
    pub fn t1(&self) -> Instant {
        self.acquired + self.renewal_time
    }
    /// When REBINDING starts.
    pub fn t2(&self) -> Instant {
        self.acquired + self.rebinding_time
    }
    /// When the address must no longer be used.
    pub fn expiry(&self) -> Instant {
        self.acquired + self.lease_time
    }
    /// The default gateway, if the server gave one.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.routers.first().copied()
    }
    /// Whether the interface configuration (address, prefix, gateway) differs from `other`'s.
    fn differs_on_link(&self, other: &Lease) -> bool {
        self.address != other.address || self.prefix != other.prefix || self.gateway() != other.gateway()
    }
}

/// Where a message goes: always UDP port 67.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255 on the interface.
    Broadcast,
    /// One server, by unicast (RENEWING and RELEASE).
    Unicast(Ipv4Addr),
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this message.
    Send(DhcpPacket, Destination),
    /// Put the lease on the interface: address, prefix, default route, resolvers.
    Configure(Lease),
    /// Take this lease's address and route off the interface.
    Deconfigure(Lease),
    /// Deliver `Event::Timer` at this time unless a packet arrives first.
    WaitUntil(Instant),
}

/// The DHCP client of one interface.
#[derive(Debug)]
pub struct DhcpClient {
    config: ClientConfig,
    rng: SplitMix64,
    state: State,
    xid: u32,
    /// Retransmissions so far in the current state.
    attempts: u32,
    deadline: Option<Instant>,
    /// Start of the current exchange, for the `secs` field.
    exchange_started: Instant,
    /// First send of the current REQUEST, where a new lease's clock starts.
    request_sent: Instant,
    /// The (address, server) of the offer being requested.
    offer: Option<(Ipv4Addr, Ipv4Addr)>,
    lease: Option<Lease>,
}

impl DhcpClient {
    /// A client in INIT; nothing is sent until `Event::Start`.
    pub fn new(config: ClientConfig, now: Instant) -> Self {
        let rng = SplitMix64(config.seed);
        Self {
            config,
            rng,
            state: State::Init,
            xid: 0,
            attempts: 0,
            deadline: None,
            exchange_started: now,
            request_sent: now,
            offer: None,
            lease: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The lease in use (BOUND, RENEWING, REBINDING).
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// When the next `Event::Timer` is due; `None` when stopped.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Advances the state machine by one event.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::Start => {
                if let Some(old) = self.lease.take() {
                    actions.push(Action::Deconfigure(old));
                }
                self.restart(now, &mut actions);
            }
            Event::Packet(packet) => self.on_packet(&packet, now, &mut actions),
            Event::Timer => {
                if self.deadline.is_some_and(|d| now >= d) {
                    self.on_timeout(now, &mut actions);
                }
            }
            Event::Release => {
                if let Some(lease) = self.lease.take() {
                    actions.push(Action::Send(
                        self.release_packet(&lease),
                        Destination::Unicast(lease.server_id),
                    ));
                    actions.push(Action::Deconfigure(lease));
                }
                self.state = State::Init;
                self.offer = None;
                self.deadline = None;
            }
        }
        if let Some(d) = self.deadline {
            actions.push(Action::WaitUntil(d));
        }
        actions
    }

    /// INIT → SELECTING: a fresh transaction and a DISCOVER.
    fn restart(&mut self, now: Instant, actions: &mut Vec<Action>) {
        self.state = State::Selecting;
        self.xid = self.rng.next() as u32;
        self.attempts = 0;
        self.offer = None;
        self.exchange_started = now;
        actions.push(Action::Send(self.discover(now), Destination::Broadcast));
        self.deadline = Some(now + self.backoff());
    }

    fn on_packet(&mut self, p: &DhcpPacket, now: Instant, actions: &mut Vec<Action>) {
        // RFC 2131 §4.4.1: only replies to our transaction, for our hardware address.
        if p.op != BOOTREPLY || p.xid != self.xid || p.hardware_address() != self.config.mac {
            return;
        }
        let Some(kind) = p.options.message_type else { return };
        match (self.state, kind) {
            (State::Selecting, MessageType::Offer) => {
                let Some(server) = p.options.server_id else { return };
                if !usable_address(p.yiaddr) {
                    return;
                }
                // The first acceptable offer wins (RFC 2131 §4.4.1 lets the client choose).
                self.offer = Some((p.yiaddr, server));
                self.state = State::Requesting;
                self.attempts = 0;
                self.request_sent = now;
                actions.push(Action::Send(self.request(now), Destination::Broadcast));
                self.deadline = Some(now + self.backoff());
            }
            (State::Requesting, MessageType::Ack) => {
                let Some((_, server)) = self.offer else { return };
                if p.options.server_id.is_some_and(|s| s != server) {
                    return;
                }
                let Some(lease) = lease_from_ack(p, server, self.request_sent) else {
                    return;
                };
                self.bind(lease, actions);
            }
            (State::Renewing | State::Rebinding, MessageType::Ack) => {
                let Some(old) = self.lease.take() else { return };
                let server = p.options.server_id.unwrap_or(old.server_id);
                let Some(lease) = lease_from_ack(p, server, self.request_sent) else {
                    self.lease = Some(old);
                    return;
                };
                if lease.differs_on_link(&old) {
                    actions.push(Action::Deconfigure(old));
                }
                self.bind(lease, actions);
            }
            (State::Requesting, MessageType::Nak) => {
                let Some((_, server)) = self.offer else { return };
                if p.options.server_id.is_some_and(|s| s != server) {
                    return;
                }
                self.restart(now, actions);
            }
            (State::Renewing | State::Rebinding, MessageType::Nak) => {
                if let Some(old) = self.lease.take() {
                    actions.push(Action::Deconfigure(old));
                }
                self.restart(now, actions);
            }
            _ => {}
        }
    }

    /// → BOUND with a new lease, waiting for T1.
    fn bind(&mut self, lease: Lease, actions: &mut Vec<Action>) {
        self.state = State::Bound;
        self.attempts = 0;
        self.offer = None;
        self.deadline = Some(lease.t1());
        actions.push(Action::Configure(lease.clone()));
        self.lease = Some(lease);
    }

    fn on_timeout(&mut self, now: Instant, actions: &mut Vec<Action>) {
        match self.state {
            State::Init => self.deadline = None,
            State::Selecting => {
                self.attempts += 1;
                actions.push(Action::Send(self.discover(now), Destination::Broadcast));
                self.deadline = Some(now + self.backoff());
            }
            State::Requesting => {
                self.attempts += 1;
                if self.attempts >= REQUEST_ATTEMPTS {
                    // §3.1 step 5: neither ACK nor NAK after retransmitting: back to INIT.
                    self.restart(now, actions);
                } else {
                    actions.push(Action::Send(self.request(now), Destination::Broadcast));
                    self.deadline = Some(now + self.backoff());
                }
            }
            State::Bound | State::Renewing | State::Rebinding => {
                let Some(lease) = self.lease.clone() else {
                    self.restart(now, actions);
                    return;
                };
                // Checked latest-first so a clock that jumped (a suspended VM) lands right.
                if now >= lease.expiry() {
                    self.lease = None;
                    actions.push(Action::Deconfigure(lease));
                    self.restart(now, actions);
                } else if now >= lease.t2() {
                    self.enter(State::Rebinding, now);
                    actions.push(Action::Send(self.request(now), Destination::Broadcast));
                    self.deadline = Some(retransmit_at(now, lease.expiry()));
                } else if now >= lease.t1() {
                    self.enter(State::Renewing, now);
                    actions.push(Action::Send(self.request(now), Destination::Unicast(lease.server_id)));
                    self.deadline = Some(retransmit_at(now, lease.t2()));
                } else {
                    self.deadline = Some(lease.t1());
                }
            }
        }
    }

    /// Moves to RENEWING or REBINDING; a new transaction on entry, retransmissions keep it.
    fn enter(&mut self, state: State, now: Instant) {
        if self.state != state {
            self.state = state;
            self.xid = self.rng.next() as u32;
            self.attempts = 0;
            self.exchange_started = now;
            self.request_sent = now;
        } else {
            self.attempts += 1;
        }
    }

    /// The delay before the next retransmission: 4, 8, 16, 32, 64, 64... s, ±1 s (§4.1).
    fn backoff(&mut self) -> Duration {
        let base = INITIAL_BACKOFF
            .saturating_mul(1 << self.attempts.min(4))
            .min(MAX_BACKOFF);
        let jitter = self.rng.next() % (2 * JITTER_MS + 1);
        base + Duration::from_millis(jitter) - Duration::from_millis(JITTER_MS)
    }

    fn base_packet(&self, kind: MessageType, now: Instant) -> DhcpPacket {
        let mut p = DhcpPacket::request(self.xid, self.config.mac);
        let secs = now.saturating_duration_since(self.exchange_started).as_secs();
        p.secs = u16::try_from(secs).unwrap_or(u16::MAX);
        p.options.message_type = Some(kind);
        // Client identifier: hardware type then address (RFC 2132 §9.14).
        let mut id = vec![1];
        id.extend_from_slice(&self.config.mac);
        p.options.client_id = Some(id);
        p
    }

    fn discover(&self, now: Instant) -> DhcpPacket {
        let mut p = self.base_packet(MessageType::Discover, now);
        // No address yet: ask the server to broadcast its reply (§4.1).
        p.flags = FLAG_BROADCAST;
        p.options.host_name = self.config.host_name.clone();
        p.options.parameter_request_list = PARAMETER_REQUEST_LIST.to_vec();
        p
    }

    /// A DHCPREQUEST as §4.3.2 shapes it for the current state.
    fn request(&self, now: Instant) -> DhcpPacket {
        let mut p = self.base_packet(MessageType::Request, now);
        p.options.host_name = self.config.host_name.clone();
        p.options.parameter_request_list = PARAMETER_REQUEST_LIST.to_vec();
        match (self.state, &self.lease) {
            (State::Renewing | State::Rebinding, Some(lease)) => {
                // ciaddr carries the address; no option 50 or 54.
                p.ciaddr = lease.address;
            }
            _ => {
                if let Some((address, server)) = self.offer {
                    p.flags = FLAG_BROADCAST;
                    p.options.requested_ip = Some(address);
                    p.options.server_id = Some(server);
                }
            }
        }
        p
    }

    fn release_packet(&mut self, lease: &Lease) -> DhcpPacket {
        self.xid = self.rng.next() as u32;
        let mut p = self.base_packet(MessageType::Release, self.exchange_started);
        p.ciaddr = lease.address;
        p.options.server_id = Some(lease.server_id);
        p
    }
}

/// Not 0.0.0.0, broadcast, multicast or loopback.
fn usable_address(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback())
}

/// Half the time left until `limit`, at least 60 s, never past `limit` (§4.4.5).
fn retransmit_at(now: Instant, limit: Instant) -> Instant {
    let half = limit.saturating_duration_since(now) / 2;
    (now + half.max(MIN_RENEW_INTERVAL)).min(limit)
}

/// Builds a lease from a DHCPACK, or `None` when it lacks what §3.1 requires of one.
fn lease_from_ack(p: &DhcpPacket, server_id: Ipv4Addr, acquired: Instant) -> Option<Lease> {
    if !usable_address(p.yiaddr) {
        return None;
    }
    let o = &p.options;
    let lease_secs = o.lease_time?;
    let lease_time = Duration::from_secs(u64::from(lease_secs));
    // Defaults and sanity of T1 < T2 < lease from §4.4.5.
    let mut rebinding_time = o
        .rebinding_time
        .map(|s| Duration::from_secs(u64::from(s)))
        .filter(|t| *t <= lease_time)
        .unwrap_or(lease_time * 7 / 8);
    let renewal_time = o
        .renewal_time
        .map(|s| Duration::from_secs(u64::from(s)))
        .filter(|t| *t <= rebinding_time)
        .unwrap_or((lease_time / 2).min(rebinding_time));
    if rebinding_time < renewal_time {
        rebinding_time = renewal_time;
    }
    Some(Lease {
        address: p.yiaddr,
        prefix: o.subnet_mask.map_or_else(|| classful_prefix(p.yiaddr), mask_prefix),
        routers: o.routers.iter().copied().filter(|r| usable_address(*r)).collect(),
        dns_servers: o.dns_servers.clone(),
        domain_name: o.domain_name.clone().filter(|d| !d.is_empty()),
        server_id,
        lease_time,
        renewal_time,
        rebinding_time,
        acquired,
    })
}

/// Leading one bits of a netmask.
fn mask_prefix(mask: Ipv4Addr) -> u8 {
    u32::from(mask).leading_ones() as u8
}

/// The network class's prefix, the default when a server sends no mask (RFC 2131 §4.3.1).
fn classful_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// SplitMix64: a small, seedable generator for transaction IDs and jitter (not cryptographic;
/// RFC 2131 asks only that xids differ between clients).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
    const S: fn(u64) -> Duration = Duration::from_secs;

    fn client(t0: Instant) -> DhcpClient {
        DhcpClient::new(
            ClientConfig {
                mac: MAC,
                host_name: Some("uvm".into()),
                seed: 7,
            },
            t0,
        )
    }

    fn sent(actions: &[Action]) -> Vec<(&DhcpPacket, Destination)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(p, d) => Some((p, *d)),
                _ => None,
            })
            .collect()
    }

    fn only_sent(actions: &[Action]) -> (&DhcpPacket, Destination) {
        let s = sent(actions);
        assert_eq!(s.len(), 1, "expected exactly one message in {actions:?}");
        s[0]
    }

    fn wait(actions: &[Action]) -> Instant {
        match actions.last() {
            Some(Action::WaitUntil(t)) => *t,
            other => panic!("last action is not WaitUntil: {other:?}"),
        }
    }

    fn reply(to: &DhcpPacket, kind: MessageType, lease_secs: Option<u32>) -> DhcpPacket {
        let mut p = DhcpPacket::request(to.xid, MAC);
        p.op = BOOTREPLY;
        p.yiaddr = if kind == MessageType::Nak {
            Ipv4Addr::UNSPECIFIED
        } else {
            ADDR
        };
        p.options.message_type = Some(kind);
        p.options.server_id = Some(SERVER);
        p.options.lease_time = lease_secs;
        p.options.subnet_mask = Some(Ipv4Addr::new(255, 255, 255, 0));
        p.options.routers = vec![SERVER];
        p.options.dns_servers = vec![Ipv4Addr::new(10, 0, 2, 3)];
        p.options.domain_name = Some("lab".into());
        p
    }

    /// Runs INIT → SELECTING → REQUESTING → BOUND and returns the client and its lease.
    fn bound(t0: Instant, lease_secs: u32) -> (DhcpClient, Lease) {
        let mut c = client(t0);
        let a = c.handle(Event::Start, t0);
        let (discover, dest) = only_sent(&a);
        assert_eq!(dest, Destination::Broadcast);
        let offer = reply(discover, MessageType::Offer, Some(lease_secs));
        let a = c.handle(Event::Packet(offer), t0 + S(1));
        assert_eq!(c.state(), State::Requesting);
        let (request, _) = only_sent(&a);
        let ack = reply(request, MessageType::Ack, Some(lease_secs));
        let a = c.handle(Event::Packet(ack), t0 + S(2));
        assert_eq!(c.state(), State::Bound);
        let lease = match &a[0] {
            Action::Configure(l) => l.clone(),
            other => panic!("expected Configure, got {other:?}"),
        };
        (c, lease)
    }

    #[test]
    fn acquires_a_lease() {
        let t0 = Instant::now();
        let mut c = client(t0);
        let a = c.handle(Event::Start, t0);
        assert_eq!(c.state(), State::Selecting);
        let (d, _) = only_sent(&a);
        assert_eq!(d.options.message_type, Some(MessageType::Discover));
        assert_eq!(d.flags, FLAG_BROADCAST);
        assert_eq!(d.options.client_id.as_deref(), Some(&[1, 2, 0, 0, 0, 0, 1][..]));
        assert_eq!(d.options.host_name.as_deref(), Some("uvm"));
        assert!(d.options.parameter_request_list.contains(&code::DNS));

        let a = c.handle(Event::Packet(reply(d, MessageType::Offer, Some(3600))), t0 + S(1));
        let (r, dest) = only_sent(&a);
        assert_eq!(dest, Destination::Broadcast);
        assert_eq!(r.options.message_type, Some(MessageType::Request));
        assert_eq!(r.options.requested_ip, Some(ADDR));
        assert_eq!(r.options.server_id, Some(SERVER));
        assert_eq!(r.ciaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(r.flags, FLAG_BROADCAST);
        assert_eq!(r.secs, 1);
        assert_eq!(r.xid, d.xid, "REQUEST keeps the offer's transaction");

        let a = c.handle(Event::Packet(reply(r, MessageType::Ack, Some(3600))), t0 + S(2));
        let Action::Configure(lease) = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!(lease.address, ADDR);
        assert_eq!(lease.prefix, 24);
        assert_eq!(lease.gateway(), Some(SERVER));
        assert_eq!(lease.domain_name.as_deref(), Some("lab"));
        assert_eq!(lease.acquired, t0 + S(1), "lease time counts from the REQUEST");
        assert_eq!(lease.t1(), t0 + S(1 + 1800));
        assert_eq!(lease.t2(), t0 + S(1 + 3150));
        assert_eq!(wait(&a), lease.t1());
    }

    #[test]
    fn ignores_foreign_and_unexpected_replies() {
        let t0 = Instant::now();
        let mut c = client(t0);
        let a = c.handle(Event::Start, t0);
        let (d, _) = only_sent(&a);
        let mut wrong_xid = reply(d, MessageType::Offer, Some(60));
        wrong_xid.xid ^= 1;
        let mut wrong_mac = reply(d, MessageType::Offer, Some(60));
        wrong_mac.chaddr[0] ^= 1;
        let ack_too_early = reply(d, MessageType::Ack, Some(60));
        let mut no_server = reply(d, MessageType::Offer, Some(60));
        no_server.options.server_id = None;
        for p in [wrong_xid, wrong_mac, ack_too_early, no_server] {
            let a = c.handle(Event::Packet(p), t0);
            assert!(sent(&a).is_empty());
            assert_eq!(c.state(), State::Selecting);
        }
    }

    #[test]
    fn discover_backs_off_exponentially_with_jitter() {
        let t0 = Instant::now();
        let mut c = client(t0);
        let mut now = t0;
        let mut waits = Vec::new();
        let first = c.handle(Event::Start, now);
        let xid = only_sent(&first).0.xid;
        let mut deadline = wait(&first);
        // An early timer does nothing.
        let a = c.handle(Event::Timer, now + S(1));
        assert!(sent(&a).is_empty());
        for _ in 0..7 {
            waits.push(deadline - now);
            now = deadline;
            let a = c.handle(Event::Timer, now);
            let (p, _) = only_sent(&a);
            assert_eq!(p.options.message_type, Some(MessageType::Discover));
            assert_eq!(p.xid, xid);
            deadline = wait(&a);
        }
        for (w, base) in waits.iter().zip([4u64, 8, 16, 32, 64, 64, 64]) {
            assert!(
                *w >= S(base - 1) && *w <= S(base + 1),
                "wait {w:?} not within {base}±1 s"
            );
        }
        assert!(
            waits.windows(2).any(|p| p[0].subsec_millis() != p[1].subsec_millis()),
            "no jitter"
        );
    }

    #[test]
    fn seeds_make_runs_reproducible() {
        let t0 = Instant::now();
        let run = |seed| {
            let mut c = DhcpClient::new(
                ClientConfig {
                    mac: MAC,
                    host_name: None,
                    seed,
                },
                t0,
            );
            let a = c.handle(Event::Start, t0);
            (only_sent(&a).0.xid, wait(&a))
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn request_timeout_returns_to_discovery() {
        let t0 = Instant::now();
        let mut c = client(t0);
        let a = c.handle(Event::Start, t0);
        let offer = reply(only_sent(&a).0, MessageType::Offer, Some(600));
        let mut a = c.handle(Event::Packet(offer), t0);
        for _ in 1..REQUEST_ATTEMPTS {
            a = c.handle(Event::Timer, wait(&a));
            assert_eq!(only_sent(&a).0.options.message_type, Some(MessageType::Request));
            assert_eq!(c.state(), State::Requesting);
        }
        let a = c.handle(Event::Timer, wait(&a));
        assert_eq!(c.state(), State::Selecting);
        assert_eq!(only_sent(&a).0.options.message_type, Some(MessageType::Discover));
    }

    #[test]
    fn nak_while_requesting_restarts() {
        let t0 = Instant::now();
        let mut c = client(t0);
        let a = c.handle(Event::Start, t0);
        let d = only_sent(&a).0.clone();
        let a = c.handle(Event::Packet(reply(&d, MessageType::Offer, Some(600))), t0);
        let r = only_sent(&a).0.clone();
        // A NAK from another server is not about our offer.
        let mut other = reply(&r, MessageType::Nak, None);
        other.options.server_id = Some(Ipv4Addr::new(10, 0, 2, 99));
        c.handle(Event::Packet(other), t0);
        assert_eq!(c.state(), State::Requesting);
        let a = c.handle(Event::Packet(reply(&r, MessageType::Nak, None)), t0 + S(1));
        assert_eq!(c.state(), State::Selecting);
        let (p, _) = only_sent(&a);
        assert_eq!(p.options.message_type, Some(MessageType::Discover));
        assert_ne!(p.xid, d.xid, "a restart uses a new transaction");
    }

    #[test]
    fn renews_rebinds_expires_and_restarts() {
        let t0 = Instant::now();
        let (mut c, lease) = bound(t0, 1000);
        assert_eq!(lease.acquired, t0 + S(1));
        let (t1, t2, exp) = (lease.t1(), lease.t2(), lease.expiry());
        assert_eq!((t1 - t0, t2 - t0, exp - t0), (S(501), S(876), S(1001)));

        // T1: RENEWING, unicast to the server with ciaddr, no options 50/54.
        let a = c.handle(Event::Timer, t1);
        assert_eq!(c.state(), State::Renewing);
        let (p, dest) = only_sent(&a);
        assert_eq!(dest, Destination::Unicast(SERVER));
        assert_eq!(p.ciaddr, ADDR);
        assert_eq!(p.flags, 0);
        assert_eq!((p.options.requested_ip, p.options.server_id), (None, None));
        // Half of the 375 s to T2 = 187.5 s.
        assert_eq!(wait(&a), t1 + Duration::from_millis(187_500));
        let renew_xid = p.xid;

        let a = c.handle(Event::Timer, wait(&a));
        assert_eq!(only_sent(&a).0.xid, renew_xid);
        assert_eq!(c.state(), State::Renewing);
        // 187.5 s left: half of it.
        let next = wait(&a);
        assert_eq!(next, t1 + Duration::from_millis(187_500 + 93_750));
        // 93.75 s left: half is below the 60 s minimum, so 60 s.
        let a = c.handle(Event::Timer, next);
        assert_eq!(wait(&a), next + S(60));
        // 33.75 s left: 60 s would pass T2, so T2.
        let a = c.handle(Event::Timer, next + S(60));
        assert_eq!(wait(&a), t2);

        // T2: REBINDING, broadcast; half of the 125 s left.
        let a = c.handle(Event::Timer, t2);
        assert_eq!(c.state(), State::Rebinding);
        let (p, dest) = only_sent(&a);
        assert_eq!(dest, Destination::Broadcast);
        assert_eq!(p.ciaddr, ADDR);
        assert_ne!(p.xid, renew_xid);
        let next = wait(&a);
        assert_eq!(next, t2 + Duration::from_millis(62_500));
        let a = c.handle(Event::Timer, next);
        assert_eq!(wait(&a), next + S(60));
        let a = c.handle(Event::Timer, next + S(60));
        assert_eq!(wait(&a), exp, "never retransmit past expiry");

        // Expiry: drop the address and start over.
        let a = c.handle(Event::Timer, exp);
        assert_eq!(a[0], Action::Deconfigure(lease));
        assert_eq!(c.state(), State::Selecting);
        assert!(c.lease().is_none());
        assert_eq!(only_sent(&a).0.options.message_type, Some(MessageType::Discover));
    }

    #[test]
    fn renewal_ack_extends_the_lease() {
        let t0 = Instant::now();
        let (mut c, lease) = bound(t0, 1000);
        let a = c.handle(Event::Timer, lease.t1());
        let r = only_sent(&a).0.clone();
        let a = c.handle(
            Event::Packet(reply(&r, MessageType::Ack, Some(1000))),
            lease.t1() + S(1),
        );
        assert_eq!(c.state(), State::Bound);
        // Same address: reconfigure in place, no Deconfigure.
        let Action::Configure(renewed) = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!(renewed.acquired, lease.t1());
        assert_eq!(wait(&a), lease.t1() + S(500));
    }

    #[test]
    fn rebind_ack_with_a_new_address_replaces_the_old() {
        let t0 = Instant::now();
        let (mut c, lease) = bound(t0, 1000);
        c.handle(Event::Timer, lease.t1());
        let a = c.handle(Event::Timer, lease.t2());
        let r = only_sent(&a).0.clone();
        let mut ack = reply(&r, MessageType::Ack, Some(1000));
        ack.yiaddr = Ipv4Addr::new(10, 0, 2, 16);
        ack.options.server_id = Some(Ipv4Addr::new(10, 0, 2, 4));
        let a = c.handle(Event::Packet(ack), lease.t2());
        assert_eq!(a[0], Action::Deconfigure(lease));
        let Action::Configure(new) = &a[1] else { panic!("{a:?}") };
        assert_eq!(new.address, Ipv4Addr::new(10, 0, 2, 16));
        assert_eq!(new.server_id, Ipv4Addr::new(10, 0, 2, 4));
    }

    #[test]
    fn nak_while_renewing_drops_the_lease() {
        let t0 = Instant::now();
        let (mut c, lease) = bound(t0, 1000);
        let a = c.handle(Event::Timer, lease.t1());
        let r = only_sent(&a).0.clone();
        let a = c.handle(Event::Packet(reply(&r, MessageType::Nak, None)), lease.t1());
        assert_eq!(a[0], Action::Deconfigure(lease));
        assert_eq!(c.state(), State::Selecting);
        assert_eq!(only_sent(&a).0.options.message_type, Some(MessageType::Discover));
    }

    #[test]
    fn a_late_wakeup_skips_to_the_right_state() {
        let t0 = Instant::now();
        let (mut c, lease) = bound(t0, 1000);
        let a = c.handle(Event::Timer, lease.t2() + S(1));
        assert_eq!(c.state(), State::Rebinding);
        assert_eq!(only_sent(&a).1, Destination::Broadcast);
        let (mut c, lease) = bound(t0, 1000);
        let a = c.handle(Event::Timer, lease.expiry() + S(5));
        assert_eq!(a[0], Action::Deconfigure(lease));
        assert_eq!(c.state(), State::Selecting);
    }

    #[test]
    fn release_sends_dhcprelease_and_stops() {
        let t0 = Instant::now();
        let (mut c, lease) = bound(t0, 1000);
        let a = c.handle(Event::Release, t0 + S(10));
        let (p, dest) = only_sent(&a);
        assert_eq!(dest, Destination::Unicast(SERVER));
        assert_eq!(p.options.message_type, Some(MessageType::Release));
        assert_eq!(p.ciaddr, ADDR);
        assert_eq!(p.options.server_id, Some(SERVER));
        assert_eq!(a[1], Action::Deconfigure(lease));
        assert_eq!(a.len(), 2, "no WaitUntil after release");
        assert_eq!(c.state(), State::Init);
        assert_eq!(c.deadline(), None);
        // A release without a lease sends nothing.
        let mut idle = client(t0);
        assert!(idle.handle(Event::Release, t0).is_empty());
    }

    #[test]
    fn lease_timers_follow_options_and_defaults() {
        let t0 = Instant::now();
        let mut p = DhcpPacket::request(1, MAC);
        p.yiaddr = ADDR;
        p.options.lease_time = Some(100);
        p.options.renewal_time = Some(10);
        p.options.rebinding_time = Some(20);
        let l = lease_from_ack(&p, SERVER, t0).unwrap();
        assert_eq!((l.renewal_time, l.rebinding_time), (S(10), S(20)));
        assert_eq!(l.prefix, 8, "class A default without option 1");
        // T2 beyond the lease and T1 beyond T2 fall back to the defaults.
        p.options.rebinding_time = Some(500);
        p.options.renewal_time = Some(95);
        let l = lease_from_ack(&p, SERVER, t0).unwrap();
        assert_eq!(
            (l.renewal_time, l.rebinding_time),
            (S(50), Duration::from_millis(87_500))
        );
        p.options.lease_time = None;
        assert!(
            lease_from_ack(&p, SERVER, t0).is_none(),
            "an ACK must carry a lease time"
        );
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 240, 0)), 20);
        assert_eq!(classful_prefix(Ipv4Addr::new(172, 16, 0, 1)), 16);
        assert_eq!(classful_prefix(Ipv4Addr::new(192, 168, 0, 1)), 24);
    }

    #[test]
    fn start_while_bound_drops_the_lease_and_rediscovers() {
        let t0 = Instant::now();
        let (mut c, lease) = bound(t0, 1000);
        let a = c.handle(Event::Start, t0 + S(5));
        assert_eq!(a[0], Action::Deconfigure(lease));
        assert_eq!(c.state(), State::Selecting);
        assert!(c.lease().is_none());
        assert_eq!(only_sent(&a).0.options.message_type, Some(MessageType::Discover));
    }

    #[test]
    fn infinite_lease_does_not_overflow() {
        let t0 = Instant::now();
        let (c, lease) = bound(t0, u32::MAX);
        assert!(lease.t1() > t0 + S(1 << 31));
        assert_eq!(c.state(), State::Bound);
    }
}
