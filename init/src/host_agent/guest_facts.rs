//! What the guest tells its host: host name, OS, kernel, and each interface's addresses, read
//! fresh from the kernel whenever the host asks (a DHCP renewal may have changed them).

use std::ffi::CStr;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// One network interface with its addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceFacts {
    /// The kernel's name (`eth0`).
    pub name: String,
    /// The MAC address.
    pub mac: [u8; 6],
    /// IPv4 addresses with their prefix lengths.
    pub ipv4: Vec<(Ipv4Addr, u8)>,
    /// IPv6 addresses with their prefix lengths.
    pub ipv6: Vec<(Ipv6Addr, u8)>,
    /// Default gateways that leave through this interface.
    pub gateways: Vec<IpAddr>,
    /// Whether its IPv4 address comes from DHCP.
    pub dhcp: bool,
}

impl InterfaceFacts {
    /// The MAC as `00:15:5D:0A:0B:0C` (upper case: how Hyper-V names adapters, and what
    /// hv_kvp_daemon compares with).
    #[cfg(test)]
    pub fn mac_text(&self) -> String {
        let m = self.mac;
        format!(
            "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Everything the agents report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestFacts {
    /// The host name.
    pub hostname: String,
    /// `NAME` from `/etc/os-release`.
    pub os_name: String,
    /// `VERSION_ID` from `/etc/os-release`.
    pub os_version_id: String,
    /// `uname -s` (`Linux`).
    pub kernel_name: String,
    /// `uname -r` (`6.12.48+deb13-amd64`).
    pub kernel_release: String,
    /// `uname -v`.
    pub kernel_version: String,
    /// `uname -m` (`x86_64`).
    pub machine: String,
    /// The interfaces that have a MAC address, loopback left out, sorted by name.
    pub interfaces: Vec<InterfaceFacts>,
    /// The name servers in `/etc/resolv.conf`.
    pub dns: Vec<IpAddr>,
}

impl GuestFacts {
    /// Every IPv4 address of every interface, in interface order.
    pub fn ipv4_addresses(&self) -> Vec<Ipv4Addr> {
        self.interfaces
            .iter()
            .flat_map(|i| i.ipv4.iter().map(|a| a.0))
            .collect()
    }

    /// Every IPv6 address of every interface, in interface order.
    pub fn ipv6_addresses(&self) -> Vec<Ipv6Addr> {
        self.interfaces
            .iter()
            .flat_map(|i| i.ipv6.iter().map(|a| a.0))
            .collect()
    }

    /// The interface with MAC address `mac`, however the host spells it (`00:15:5d:..`,
    /// `00-15-5D-..`, `00155D..`).
    pub fn interface_by_mac(&self, mac: &str) -> Option<&InterfaceFacts> {
        let wanted = parse_mac_loosely(mac)?;
        self.interfaces.iter().find(|i| i.mac == wanted)
    }
}

/// A MAC address with `:` or `-` separators or none, any case.
pub fn parse_mac_loosely(text: &str) -> Option<[u8; 6]> {
    let hex: String = text.trim().chars().filter(|c| *c != ':' && *c != '-').collect();
    if hex.len() != 12 || !hex.is_ascii() {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, byte) in mac.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(mac)
}

/// `KEY=value` lines of os-release(5), the value unquoted.
pub fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
    })
}

/// The `nameserver` entries of a resolv.conf.
pub fn resolv_conf_servers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then(|| words.next()?.parse().ok())?
        })
        .collect()
}

/// The IPv4 default gateways in `/proc/net/route` text, with their interfaces.
pub fn default_routes_v4(text: &str) -> Vec<(String, Ipv4Addr)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 3 || fields[1] != "00000000" {
                return None;
            }
            // The gateway is a host-order u32 printed in hex: little-endian bytes on x86.
            let raw = u32::from_str_radix(fields[2], 16).ok()?;
            Some((fields[0].to_string(), Ipv4Addr::from(raw.to_le_bytes())))
        })
        .collect()
}

/// A prefix length from a netmask.
fn prefix_of(mask: &[u8]) -> u8 {
    mask.iter().map(|b| b.count_ones() as u8).sum()
}

/// Reads the facts from the running system.
pub fn collect(hostname: &str, dhcp: bool) -> GuestFacts {
    let os_release = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let (kernel_name, kernel_release, kernel_version, machine) = uname();
    let routes = default_routes_v4(&fs::read_to_string("/proc/net/route").unwrap_or_default());
    let mut interfaces = interface_addresses();
    for interface in &mut interfaces {
        interface.dhcp = dhcp;
        interface.gateways = routes
            .iter()
            .filter(|(name, _)| *name == interface.name)
            .map(|(_, gw)| IpAddr::V4(*gw))
            .collect();
    }
    GuestFacts {
        hostname: hostname.to_string(),
        os_name: os_release_value(&os_release, "NAME").unwrap_or_else(|| kernel_name.clone()),
        os_version_id: os_release_value(&os_release, "VERSION_ID").unwrap_or_default(),
        kernel_name,
        kernel_release,
        kernel_version,
        machine,
        interfaces,
        dns: resolv_conf_servers(&fs::read_to_string("/etc/resolv.conf").unwrap_or_default()),
    }
}

fn uname() -> (String, String, String, String) {
    // SAFETY: uname fills the zeroed struct it is given; its fields are NUL-terminated.
    let mut buf: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut buf) } != 0 {
        return Default::default();
    }
    let field = |f: &[libc::c_char]| {
        // SAFETY: the kernel NUL-terminates every utsname field within its array.
        unsafe { CStr::from_ptr(f.as_ptr()) }.to_string_lossy().into_owned()
    };
    (
        field(&buf.sysname),
        field(&buf.release),
        field(&buf.version),
        field(&buf.machine),
    )
}

/// The interfaces with a MAC address (`/sys/class/net/NAME/address`) and their addresses from
/// getifaddrs(3), sorted by name.
fn interface_addresses() -> Vec<InterfaceFacts> {
    let mut interfaces: Vec<InterfaceFacts> = Vec::new();
    let Ok(entries) = fs::read_dir("/sys/class/net") else {
        return interfaces;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let mac = fs::read_to_string(Path::new("/sys/class/net").join(&name).join("address"))
            .ok()
            .and_then(|text| parse_mac_loosely(&text));
        match mac {
            Some(mac) if name != "lo" && mac != [0; 6] => interfaces.push(InterfaceFacts {
                name,
                mac,
                ..InterfaceFacts::default()
            }),
            _ => {}
        }
    }
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));

    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list that freeifaddrs releases below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return interfaces;
    }
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: a node of the list getifaddrs returned; its pointers are valid or null.
        let node = unsafe { &*cursor };
        cursor = node.ifa_next;
        if node.ifa_addr.is_null() || node.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string.
        let name = unsafe { CStr::from_ptr(node.ifa_name) }.to_string_lossy();
        let Some(interface) = interfaces.iter_mut().find(|i| i.name == name) else {
            continue;
        };
        // SAFETY: ifa_addr points to a sockaddr of the family it names; so does ifa_netmask.
        match i32::from(unsafe { (*node.ifa_addr).sa_family }) {
            libc::AF_INET => {
                let addr = unsafe { &*(node.ifa_addr as *const libc::sockaddr_in) };
                let prefix = if node.ifa_netmask.is_null() {
                    32
                } else {
                    let mask = unsafe { &*(node.ifa_netmask as *const libc::sockaddr_in) };
                    prefix_of(&mask.sin_addr.s_addr.to_ne_bytes())
                };
                interface
                    .ipv4
                    .push((Ipv4Addr::from(addr.sin_addr.s_addr.to_ne_bytes()), prefix));
            }
            libc::AF_INET6 => {
                let addr = unsafe { &*(node.ifa_addr as *const libc::sockaddr_in6) };
                let prefix = if node.ifa_netmask.is_null() {
                    128
                } else {
                    let mask = unsafe { &*(node.ifa_netmask as *const libc::sockaddr_in6) };
                    prefix_of(&mask.sin6_addr.s6_addr)
                };
                interface.ipv6.push((Ipv6Addr::from(addr.sin6_addr.s6_addr), prefix));
            }
            _ => {}
        }
    }
    // SAFETY: the list came from getifaddrs and is not used after this.
    unsafe { libc::freeifaddrs(list) };
    interfaces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_match_however_the_host_spells_them() {
        let facts = GuestFacts {
            interfaces: vec![InterfaceFacts {
                name: "eth0".into(),
                mac: [0x00, 0x15, 0x5d, 0x0a, 0x0b, 0x0c],
                ..Default::default()
            }],
            ..Default::default()
        };
        for spelling in [
            "00:15:5D:0A:0B:0C",
            "00:15:5d:0a:0b:0c",
            "00-15-5D-0A-0B-0C",
            "00155D0A0B0C",
        ] {
            assert_eq!(facts.interface_by_mac(spelling).map(|i| i.name.as_str()), Some("eth0"));
        }
        assert!(facts.interface_by_mac("00:15:5D:0A:0B:0D").is_none());
        assert!(facts.interface_by_mac("garbage").is_none());
        assert_eq!(facts.interfaces[0].mac_text(), "00:15:5D:0A:0B:0C");
    }

    #[test]
    fn os_release_resolv_conf_and_routes_are_read() {
        let os = "PRETTY_NAME=\"uvmkit (Debian trixie)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"13\"\n";
        assert_eq!(os_release_value(os, "NAME").as_deref(), Some("Debian GNU/Linux"));
        assert_eq!(os_release_value(os, "VERSION_ID").as_deref(), Some("13"));
        assert_eq!(os_release_value(os, "ID"), None);
        assert_eq!(
            resolv_conf_servers("# x\nnameserver 10.0.2.3\nnameserver fec0::3\nsearch lan\n"),
            vec!["10.0.2.3".parse::<IpAddr>().unwrap(), "fec0::3".parse().unwrap()]
        );
        let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            default_routes_v4(route),
            vec![("eth0".to_string(), Ipv4Addr::new(10, 0, 2, 2))]
        );
        assert_eq!(prefix_of(&[255, 255, 255, 0]), 24);
    }

    #[test]
    fn this_machine_has_facts() {
        let facts = collect("testhost", true);
        assert_eq!(facts.hostname, "testhost");
        assert_eq!(facts.kernel_name, "Linux");
        assert!(!facts.kernel_release.is_empty());
        assert!(facts.interfaces.iter().all(|i| i.name != "lo"));
    }
}
