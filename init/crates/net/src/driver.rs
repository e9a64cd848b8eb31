//! The network driver the init calls: configures every Ethernet interface, statically or with
//! a DHCP client thread per interface that carries out the state machine's actions.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::dhcp::transport::Received;
use crate::dhcp::{Action, ClientConfig, DhcpClient, DhcpSocket, Event, Lease};
use crate::interfaces::{self, Interface};
use crate::netlink::{self, DefaultRoute, InterfaceAddress, RTPROT_DHCP, RTPROT_STATIC};
use crate::resolv::{self, ResolverSource};

/// Default route metrics are this plus the interface index, so each interface's route is
/// distinct and the first NIC wins.
const ROUTE_METRIC_BASE: u32 = 100;
/// How long a DHCP thread waits for carrier before sending anyway.
const CARRIER_WAIT: Duration = Duration::from_secs(5);
/// Longest a DHCP thread sleeps before looking at its timers and stop flag again.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Pause before reopening a DHCP socket that failed.
const SOCKET_RETRY: Duration = Duration::from_secs(5);
/// How often the interfaces are listed again while a listed interface is still missing (it
/// may be hot-plugged, or its driver may load late).
const MISSING_POLL: Duration = Duration::from_secs(1);

/// A fixed IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticV4 {
    /// The interface address.
    pub address: Ipv4Addr,
    /// Prefix length, 0 to 32.
    pub prefix: u8,
    /// Default gateway, if any.
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers for resolv.conf.
    pub dns: Vec<Ipv4Addr>,
}

/// Which interface an [`InterfaceConfig`] is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceMatch {
    /// The kernel's name, such as `eth1`.
    Name(String),
    /// The hardware address.
    Mac([u8; 6]),
}

impl InterfaceMatch {
    /// Whether `interface` is the one meant.
    pub fn matches(&self, interface: &Interface) -> bool {
        match self {
            InterfaceMatch::Name(name) => *name == interface.name,
            InterfaceMatch::Mac(mac) => *mac == interface.mac,
        }
    }
}

impl std::fmt::Display for InterfaceMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InterfaceMatch::Name(name) => f.write_str(name),
            InterfaceMatch::Mac(m) => write!(
                f,
                "MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
        }
    }
}

/// How one listed interface gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressing {
    /// A fixed address, with an optional gateway and DNS servers.
    Static(StaticV4),
    /// A DHCPv4 client, whatever [`NetworkConfig::dhcp`] says.
    Dhcp,
}

/// The configuration of one particular interface; it replaces the general rules for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// The interface it is for.
    pub interface: InterfaceMatch,
    /// Its address.
    pub addressing: Addressing,
}

/// How the init configures the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Run DHCP on Ethernet interfaces not in `interfaces` (on all of them, or on all but the
    /// first when `static_v4` is set).
    pub dhcp: bool,
    /// A static address for the first Ethernet interface (by name order), unless `interfaces`
    /// lists that interface.
    pub static_v4: Option<StaticV4>,
    /// Interfaces configured exactly as their entry says; one missing at boot is configured
    /// when it appears.
    pub interfaces: Vec<InterfaceConfig>,
    /// Host name sent to DHCP servers (option 12); empty sends none.
    pub hostname: String,
    /// How long boot waits for a first address.
    pub timeout: Duration,
    /// Where to write resolv.conf; `None` leaves it alone.
    pub resolv_conf: Option<PathBuf>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            dhcp: true,
            static_v4: None,
            interfaces: Vec::new(),
            hostname: String::new(),
            timeout: Duration::from_secs(30),
            resolv_conf: Some(PathBuf::from("/etc/resolv.conf")),
        }
    }
}

/// Brings up `lo` with 127.0.0.1/8.
pub fn bring_up_loopback() -> io::Result<()> {
    interfaces::set_link_up("lo", true)?;
    let index = interface_index("lo")?;
    netlink::add_address(&InterfaceAddress {
        index,
        address: Ipv4Addr::LOCALHOST,
        prefix: 8,
    })
}

fn interface_index(name: &str) -> io::Result<u32> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read the index of interface {name}: {e}")))?;
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("interface {name} has index {text:?}"),
        )
    })
}

type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// The running network configuration; dropping it leaves the DHCP threads running.
pub struct NetworkHandle {
    shared: Arc<Shared>,
}

/// What the threads and the handle share.
struct Shared {
    log: Log,
    resolv_conf: Option<PathBuf>,
    /// Configuration in force per interface name.
    active: Mutex<Active>,
    /// Signalled whenever `active` changes.
    changed: Condvar,
    links: Mutex<Vec<Arc<DhcpLink>>>,
    /// Set by `release_all`: the thread looking for missing listed interfaces stops.
    stopped: AtomicBool,
}

#[derive(Default)]
struct Active {
    interfaces: BTreeMap<String, Configured>,
    resolv_written: Option<String>,
}

struct Configured {
    address: InterfaceAddress,
    resolver: ResolverSource,
    /// Leased, rather than fixed: fixed DNS servers come first in resolv.conf, since someone
    /// wrote them down for this VM.
    leased: bool,
    /// Whether the configuration brought a default route.
    routed: bool,
}

/// One interface's DHCP client and socket.
struct DhcpLink {
    interface: Interface,
    session: Mutex<Session>,
}

struct Session {
    client: DhcpClient,
    socket: Option<Arc<DhcpSocket>>,
    stopped: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked thread must not take networking down with it: use the data as it is.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Configures every Ethernet interface; returns after the first DHCP lease (or at once when a
/// fixed address brings a default route, or when no interface uses DHCP) or `config.timeout`,
/// leaving a thread per DHCP interface that keeps renewing and, without a lease, keeps
/// retrying, and a thread that configures listed interfaces missing at boot when they appear.
pub fn start(config: &NetworkConfig, log: impl Fn(&str) + Send + Sync + 'static) -> io::Result<NetworkHandle> {
    let began = Instant::now();
    let shared = Arc::new(Shared {
        log: Arc::new(log),
        resolv_conf: config.resolv_conf.clone(),
        active: Mutex::new(Active::default()),
        changed: Condvar::new(),
        links: Mutex::new(Vec::new()),
        stopped: AtomicBool::new(false),
    });
    let handle = NetworkHandle {
        shared: Arc::clone(&shared),
    };

    let found = wait_for_interfaces(config.timeout)?;
    if found.is_empty() && config.interfaces.is_empty() {
        (shared.log)("no Ethernet interface found; networking stays down");
        return Ok(handle);
    }
    let mut missing: Vec<InterfaceConfig> = config
        .interfaces
        .iter()
        .filter(|entry| !found.iter().any(|i| entry.interface.matches(i)))
        .cloned()
        .collect();
    let mut dhcp_threads = 0;
    for (i, interface) in found.into_iter().enumerate() {
        let Some((addressing, listed)) = addressing_for(config, i, &interface) else {
            (shared.log)(&format!(
                "{}: left unconfigured (DHCP is off and no entry names it)",
                interface.name
            ));
            continue;
        };
        if i == 0 && listed && config.static_v4.is_some() {
            (shared.log)(&format!(
                "{}: its own entry replaces the static address given for the first interface",
                interface.name
            ));
        }
        if let Err(e) = interfaces::set_link_up(&interface.name, true) {
            (shared.log)(&format!("{}: {e}; skipping it", interface.name));
            continue;
        }
        if shared.apply(interface, &addressing, listed, &config.hostname)? {
            dhcp_threads += 1;
        }
    }
    if !missing.is_empty() {
        for entry in &missing {
            (shared.log)(&format!(
                "{}: listed but not present; configuring it when it appears",
                entry.interface
            ));
        }
        let watcher = Arc::clone(&shared);
        let hostname = config.hostname.clone();
        thread::Builder::new()
            .name("net-missing".into())
            .spawn(move || {
                while !missing.is_empty() && !watcher.stopped.load(Ordering::Relaxed) {
                    thread::sleep(MISSING_POLL);
                    watcher.configure_appeared(&mut missing, &hostname);
                }
            })
            .map(drop)?;
    }
    if dhcp_threads > 0 {
        let deadline = began + config.timeout;
        let mut active = lock(&shared.active);
        // A fixed address without a gateway (a host-only network, say) does not take the VM
        // out: boot still waits for the lease that brings the way out.
        while !active.interfaces.values().any(|c| c.leased || c.routed) {
            let now = Instant::now();
            if now >= deadline {
                (shared.log)(&format!(
                    "no DHCP lease within {} s; still trying in the background",
                    config.timeout.as_secs()
                ));
                break;
            }
            active = shared
                .changed
                .wait_timeout(active, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
    Ok(handle)
}

/// How the `position`-th interface present at boot (in name order) is configured, and whether
/// by an entry of its own: its entry if one names it, else `static_v4` for the first and DHCP
/// (when on) for the others; `None` leaves it alone.
fn addressing_for(config: &NetworkConfig, position: usize, interface: &Interface) -> Option<(Addressing, bool)> {
    if let Some(entry) = config.interfaces.iter().find(|e| e.interface.matches(interface)) {
        return Some((entry.addressing.clone(), true));
    }
    match &config.static_v4 {
        Some(s) if position == 0 => Some((Addressing::Static(s.clone()), false)),
        _ if config.dhcp => Some((Addressing::Dhcp, false)),
        _ => None,
    }
}

/// Interfaces may appear a little after their driver loads: poll until one shows or `limit`.
fn wait_for_interfaces(limit: Duration) -> io::Result<Vec<Interface>> {
    let end = Instant::now() + limit;
    loop {
        let found = interfaces::ethernet_interfaces()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot list /sys/class/net: {e}; is sysfs mounted?")))?;
        if !found.is_empty() || Instant::now() >= end {
            return Ok(found);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn spawn_dhcp(shared: &Arc<Shared>, interface: Interface, hostname: &str) -> io::Result<()> {
    let config = ClientConfig {
        mac: interface.mac,
        host_name: (!hostname.is_empty()).then(|| hostname.to_owned()),
        seed: runtime_seed(&interface.mac),
    };
    let link = Arc::new(DhcpLink {
        session: Mutex::new(Session {
            client: DhcpClient::new(config, Instant::now()),
            socket: None,
            stopped: false,
        }),
        interface,
    });
    lock(&shared.links).push(Arc::clone(&link));
    let shared = Arc::clone(shared);
    thread::Builder::new()
        .name(format!("dhcp-{}", link.interface.name))
        .spawn(move || run_dhcp(&shared, &link))
        .map(drop)
}

/// A seed that differs between machines and boots: the MAC, the kernel's boot ID and the
/// monotonic clock. This is runtime state, never an artifact, so it need not be reproducible.
fn runtime_seed(mac: &[u8; 6]) -> u64 {
    let boot_id = std::fs::read("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    // SAFETY: clock_gettime writes the timespec it is given.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let clock = (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64);
    // FNV-1a over all of it.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in mac.iter().chain(&boot_id).chain(&clock.to_le_bytes()) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The DHCP thread of one interface: runs until `release_all` stops it.
fn run_dhcp(shared: &Shared, link: &DhcpLink) {
    let name = &link.interface.name;
    if !interfaces::wait_for_carrier(name, CARRIER_WAIT) {
        (shared.log)(&format!(
            "{name}: no carrier after {} s; sending DHCP anyway",
            CARRIER_WAIT.as_secs()
        ));
    }
    loop {
        let socket = match DhcpSocket::open(name) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                (shared.log)(&format!("{name}: {e}; retrying in {} s", SOCKET_RETRY.as_secs()));
                thread::sleep(SOCKET_RETRY);
                if lock(&link.session).stopped {
                    return;
                }
                continue;
            }
        };
        {
            let mut session = lock(&link.session);
            if session.stopped {
                return;
            }
            session.socket = Some(Arc::clone(&socket));
            // A fresh start after a socket failure drops any lease: the server will re-offer it.
            let actions = session.client.handle(Event::Start, Instant::now());
            shared.execute(link, &socket, actions);
        }
        loop {
            let deadline = {
                let session = lock(&link.session);
                if session.stopped {
                    return;
                }
                session.client.deadline()
            };
            let Some(deadline) = deadline else { return };
            let wait = deadline.saturating_duration_since(Instant::now()).min(POLL_INTERVAL);
            let event = match socket.receive(wait) {
                Ok(Received::Packet(p)) => Event::Packet(p),
                Ok(Received::Malformed(_)) => continue,
                Ok(Received::Timeout) => Event::Timer,
                Err(e) => {
                    (shared.log)(&format!("{name}: DHCP socket failed: {e}; reopening it"));
                    thread::sleep(POLL_INTERVAL);
                    break;
                }
            };
            let mut session = lock(&link.session);
            if session.stopped {
                return;
            }
            let actions = session.client.handle(event, Instant::now());
            shared.execute(link, &socket, actions);
        }
    }
}

impl Shared {
    fn log(&self, message: &str) {
        (self.log)(message);
    }

    /// Carries out a state machine's actions on the interface (with the session locked).
    fn execute(&self, link: &DhcpLink, socket: &DhcpSocket, actions: Vec<Action>) {
        let name = &link.interface.name;
        for action in actions {
            match action {
                Action::Send(packet, to) => {
                    if let Err(e) = socket.send(&packet, to) {
                        // Retransmission covers a lost send; say why in case it persists.
                        self.log(&format!("{name}: cannot send DHCP message to {to:?}: {e}"));
                    }
                }
                Action::Configure(lease) => {
                    if let Err(e) = self.configure(&link.interface, &lease) {
                        self.log(&format!("{name}: {e}"));
                    }
                }
                Action::Deconfigure(lease) => self.deconfigure(&link.interface, &lease),
                Action::WaitUntil(_) => {}
            }
        }
    }

    fn configure(&self, interface: &Interface, lease: &Lease) -> io::Result<()> {
        let address = InterfaceAddress {
            index: interface.index,
            address: lease.address,
            prefix: lease.prefix,
        };
        let renewed = lock(&self.active)
            .interfaces
            .get(&interface.name)
            .is_some_and(|c| c.address == address);
        netlink::add_address(&address)?;
        if let Some(route) = default_route(interface, &address, lease.gateway(), RTPROT_DHCP) {
            netlink::add_default_route(&route)?;
        }
        if renewed {
            self.log(&format!(
                "{}: renewed {} for {} s",
                interface.name,
                lease.address,
                lease.lease_time.as_secs()
            ));
        } else {
            self.log(&format!(
                "{}: leased {}/{} from {} for {} s, gateway {}, DNS {}",
                interface.name,
                lease.address,
                lease.prefix,
                lease.server_id,
                lease.lease_time.as_secs(),
                lease.gateway().map_or_else(|| "none".to_owned(), |g| g.to_string()),
                list(&lease.dns_servers),
            ));
        }
        let resolver = ResolverSource {
            nameservers: lease.dns_servers.clone(),
            domain: lease.domain_name.clone(),
        };
        let configured = Configured {
            address,
            resolver,
            leased: true,
            routed: lease.gateway().is_some(),
        };
        self.set_active(&interface.name, Some(configured));
        Ok(())
    }

    fn deconfigure(&self, interface: &Interface, lease: &Lease) {
        let address = InterfaceAddress {
            index: interface.index,
            address: lease.address,
            prefix: lease.prefix,
        };
        if let Some(route) = default_route(interface, &address, lease.gateway(), RTPROT_DHCP) {
            if let Err(e) = netlink::remove_default_route(&route) {
                self.log(&format!("{}: {e}", interface.name));
            }
        }
        if let Err(e) = netlink::remove_address(&address) {
            self.log(&format!("{}: {e}", interface.name));
        }
        self.log(&format!(
            "{}: dropped {}/{}",
            interface.name, lease.address, lease.prefix
        ));
        self.set_active(&interface.name, None);
    }

    /// Configures `interface` as `addressing` says (`listed`: from its own entry); returns
    /// whether it started a DHCP client.
    fn apply(
        self: &Arc<Self>,
        interface: Interface,
        addressing: &Addressing,
        listed: bool,
        hostname: &str,
    ) -> io::Result<bool> {
        let by = if listed { " (its own entry)" } else { "" };
        match addressing {
            Addressing::Static(s) => {
                self.apply_static(&interface, s, by)?;
                Ok(false)
            }
            Addressing::Dhcp => {
                self.log(&format!("{}: DHCP{by}", interface.name));
                spawn_dhcp(self, interface, hostname)?;
                Ok(true)
            }
        }
    }

    /// Configures the entries of `missing` whose interface has appeared, and drops them from it.
    fn configure_appeared(self: &Arc<Self>, missing: &mut Vec<InterfaceConfig>, hostname: &str) {
        let Ok(found) = interfaces::ethernet_interfaces() else {
            return;
        };
        missing.retain(|entry| {
            let Some(interface) = found.iter().find(|i| entry.interface.matches(i)) else {
                return true;
            };
            let name = interface.name.clone();
            let done = interfaces::set_link_up(&name, true)
                .and_then(|()| self.apply(interface.clone(), &entry.addressing, true, hostname));
            if let Err(e) = done {
                self.log(&format!("{name}: {e}"));
            }
            false
        });
    }

    fn apply_static(&self, interface: &Interface, s: &StaticV4, by: &str) -> io::Result<()> {
        if s.prefix > 32 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("static prefix /{} for {} is larger than 32", s.prefix, interface.name),
            ));
        }
        let address = InterfaceAddress {
            index: interface.index,
            address: s.address,
            prefix: s.prefix,
        };
        netlink::add_address(&address)?;
        if let Some(route) = default_route(interface, &address, s.gateway, RTPROT_STATIC) {
            netlink::add_default_route(&route)?;
        }
        self.log(&format!(
            "{}: static {}/{}{by}, gateway {}, DNS {}",
            interface.name,
            s.address,
            s.prefix,
            s.gateway.map_or_else(|| "none".to_owned(), |g| g.to_string()),
            list(&s.dns)
        ));
        let resolver = ResolverSource {
            nameservers: s.dns.clone(),
            domain: None,
        };
        let configured = Configured {
            address,
            resolver,
            leased: false,
            routed: s.gateway.is_some(),
        };
        self.set_active(&interface.name, Some(configured));
        Ok(())
    }

    /// Records an interface's configuration, rewrites resolv.conf if it changed, wakes `start`.
    fn set_active(&self, name: &str, configured: Option<Configured>) {
        let mut active = lock(&self.active);
        match configured {
            Some(c) => active.interfaces.insert(name.to_owned(), c),
            None => active.interfaces.remove(name),
        };
        if let Some(path) = &self.resolv_conf {
            // Fixed servers first, then leased ones, each in interface name order.
            let (fixed, leased): (Vec<&Configured>, Vec<&Configured>) =
                active.interfaces.values().partition(|c| !c.leased);
            let sources: Vec<ResolverSource> = fixed.iter().chain(&leased).map(|c| c.resolver.clone()).collect();
            let text = resolv::render(&sources);
            if active.resolv_written.as_deref() != Some(text.as_str()) {
                match resolv::write(path, &text) {
                    Ok(()) => active.resolv_written = Some(text),
                    Err(e) => self.log(&e.to_string()),
                }
            }
        }
        self.changed.notify_all();
    }
}

fn default_route(
    interface: &Interface,
    address: &InterfaceAddress,
    gateway: Option<Ipv4Addr>,
    protocol: u8,
) -> Option<DefaultRoute> {
    let gateway = gateway?;
    Some(DefaultRoute {
        index: interface.index,
        gateway,
        source: Some(address.address),
        metric: ROUTE_METRIC_BASE + interface.index,
        protocol,
        onlink: !address.contains(gateway),
    })
}

fn list(addresses: &[Ipv4Addr]) -> String {
    if addresses.is_empty() {
        return "none".to_owned();
    }
    addresses.iter().map(Ipv4Addr::to_string).collect::<Vec<_>>().join(", ")
}

impl NetworkHandle {
    /// The IPv4 addresses configured now, static and leased, in interface name order.
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        lock(&self.shared.active)
            .interfaces
            .values()
            .map(|c| c.address.address)
            .collect()
    }

    /// Sends DHCPRELEASE for every lease, removes the leased addresses and stops the DHCP
    /// threads. Static addresses stay.
    pub fn release_all(&self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        let links = lock(&self.shared.links).clone();
        for link in links {
            let mut session = lock(&link.session);
            session.stopped = true;
            let actions = session.client.handle(Event::Release, Instant::now());
            match session.socket.clone() {
                Some(socket) => self.shared.execute(&link, &socket, actions),
                // Never opened a socket, so never held a lease: nothing to send or remove.
                None => debug_assert!(actions.is_empty()),
            }
        }
    }
}

impl std::fmt::Debug for NetworkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkHandle")
            .field("addresses", &self.addresses())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interface(name: &str, last: u8) -> Interface {
        Interface {
            name: name.into(),
            index: u32::from(last) + 1,
            mac: [0x52, 0x54, 0, 0, 0, last],
        }
    }

    #[test]
    fn listed_interfaces_get_their_entry_and_the_rest_the_general_rules() {
        let fixed = StaticV4 {
            address: Ipv4Addr::new(192, 168, 56, 2),
            prefix: 24,
            gateway: None,
            dns: vec![],
        };
        let first = StaticV4 {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            dns: vec![],
        };
        let mut config = NetworkConfig {
            interfaces: vec![
                InterfaceConfig {
                    interface: InterfaceMatch::Name("eth1".into()),
                    addressing: Addressing::Static(fixed.clone()),
                },
                InterfaceConfig {
                    interface: InterfaceMatch::Mac([0x52, 0x54, 0, 0, 0, 3]),
                    addressing: Addressing::Dhcp,
                },
            ],
            ..NetworkConfig::default()
        };
        let (eth0, eth1, eth2, eth3) = (
            interface("eth0", 0),
            interface("eth1", 1),
            interface("eth2", 2),
            interface("eth3", 3),
        );
        assert_eq!(addressing_for(&config, 0, &eth0), Some((Addressing::Dhcp, false)));
        assert_eq!(
            addressing_for(&config, 1, &eth1),
            Some((Addressing::Static(fixed.clone()), true))
        );
        assert_eq!(addressing_for(&config, 2, &eth2), Some((Addressing::Dhcp, false)));
        // DHCP off: only the first (static) and the listed interfaces are configured, and a
        // DHCP entry still gets its client.
        config.dhcp = false;
        config.static_v4 = Some(first.clone());
        assert_eq!(
            addressing_for(&config, 0, &eth0),
            Some((Addressing::Static(first.clone()), false))
        );
        assert_eq!(addressing_for(&config, 2, &eth2), None);
        assert_eq!(addressing_for(&config, 3, &eth3), Some((Addressing::Dhcp, true)));
        // An entry for the first interface replaces `static_v4`.
        assert_eq!(
            addressing_for(&config, 0, &eth1),
            Some((Addressing::Static(fixed), true))
        );
        assert_eq!(
            InterfaceMatch::Mac([0x52, 0x54, 0, 0xab, 0, 3]).to_string(),
            "MAC 52:54:00:ab:00:03"
        );
    }
}
