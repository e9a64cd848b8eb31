//! Network interfaces: discovery through `/sys/class/net` (Documentation/ABI/testing/
//! sysfs-class-net) and the link's administrative state through SIOCGIFFLAGS/SIOCSIFFLAGS
//! (netdevice(7)).

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// `type` of an Ethernet interface: ARPHRD_ETHER (include/uapi/linux/if_arp.h).
pub const ARPHRD_ETHER: u16 = 1;

/// An Ethernet interface found in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Kernel name, such as `eth0` or `ens3`.
    pub name: String,
    /// Interface index (`ifindex`), as rtnetlink names it.
    pub index: u32,
    /// Hardware address.
    pub mac: [u8; 6],
}

/// Whether an interface is one the init should configure: Ethernet, and not the loopback, a
/// bridge or a veth end that a container runtime created.
pub fn is_configurable(name: &str, arp_type: u16, is_bridge: bool) -> bool {
    arp_type == ARPHRD_ETHER
        && !is_bridge
        && name != "lo"
        && name != "docker0"
        && !name.starts_with("br-")
        && !name.starts_with("veth")
}

/// Lists the configurable Ethernet interfaces under `/sys/class/net`, sorted by name.
pub fn ethernet_interfaces() -> io::Result<Vec<Interface>> {
    ethernet_interfaces_in(Path::new("/sys/class/net"))
}

/// Lists the configurable Ethernet interfaces under a sysfs `class/net` directory.
pub fn ethernet_interfaces_in(class_net: &Path) -> io::Result<Vec<Interface>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(class_net)? {
        let dir = entry?.path();
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        // An interface can vanish between readdir and read: skip it rather than fail.
        let Some(arp_type) = read_trimmed(&dir.join("type")).and_then(|t| t.parse::<u16>().ok()) else {
            continue;
        };
        if !is_configurable(&name, arp_type, dir.join("bridge").exists()) {
            continue;
        }
        let Some(index) = read_trimmed(&dir.join("ifindex")).and_then(|t| t.parse::<u32>().ok()) else {
            continue;
        };
        let Some(mac) = read_trimmed(&dir.join("address")).and_then(|t| parse_mac(&t)) else {
            continue;
        };
        found.push(Interface { name, index, mac });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Whether the interface can pass traffic: carrier is 1 and the operational state (RFC 2863)
/// is `up`, or `unknown` for drivers that do not report it. The kernel sets `operstate` only
/// after its link watch has activated the transmit queue, up to a second after carrier;
/// packets sent before that are dropped.
pub fn has_carrier(name: &str) -> bool {
    let dir = Path::new("/sys/class/net").join(name);
    read_trimmed(&dir.join("carrier")).as_deref() == Some("1")
        && matches!(read_trimmed(&dir.join("operstate")).as_deref(), Some("up" | "unknown"))
}

/// Polls for carrier until it appears or `limit` passes; returns whether it appeared.
pub fn wait_for_carrier(name: &str, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    loop {
        if has_carrier(name) {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// `struct ifreq` with the `ifr_flags` member of its union (netdevice(7)), padded to the
/// kernel's 40 bytes on 64-bit.
#[repr(C)]
struct IfreqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Sets the link administratively up (`up`) or down, like `ip link set NAME up|down`.
pub fn set_link_up(name: &str, up: bool) -> io::Result<()> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not an interface name"),
        ));
    }
    // SAFETY: plain socket(2); checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfreqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    let context = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("cannot {what} of {name}: {e}"));
    // SAFETY: `req` is a valid ifreq for SIOCGIFFLAGS/SIOCSIFFLAGS, alive for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(context("read the link flags", io::Error::last_os_error()));
    }
    let want = if up {
        req.flags | libc::IFF_UP as libc::c_short
    } else {
        req.flags & !(libc::IFF_UP as libc::c_short)
    };
    if want == req.flags {
        return Ok(());
    }
    req.flags = want;
    // SAFETY: as above.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS as _, &mut req) } < 0 {
        return Err(context(
            if up { "bring up the link" } else { "bring down the link" },
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_matches_the_kernel_size() {
        assert_eq!(std::mem::size_of::<IfreqFlags>(), 40);
    }

    #[test]
    fn filters_interfaces() {
        assert!(is_configurable("eth0", 1, false));
        assert!(is_configurable("ens3", 1, false));
        assert!(!is_configurable("lo", 772, false));
        assert!(!is_configurable("lo", 1, false));
        assert!(!is_configurable("docker0", 1, true));
        assert!(!is_configurable("docker0", 1, false));
        assert!(!is_configurable("br-1234", 1, false));
        assert!(!is_configurable("mybridge", 1, true));
        assert!(!is_configurable("veth12ab", 1, false));
        assert!(!is_configurable("wg0", 65534, false));
    }

    #[test]
    fn parses_macs() {
        assert_eq!(parse_mac("52:54:00:12:34:56"), Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(parse_mac("52:54:00:12:34"), None);
        assert_eq!(parse_mac("52:54:00:12:34:56:78"), None);
        assert_eq!(parse_mac("52:54:00:12:34:5g"), None);
        assert_eq!(parse_mac("5:54:00:12:34:56"), None);
    }

    #[test]
    fn lists_a_fake_sysfs() {
        let root = std::env::temp_dir().join(format!("uvmkit-net-sysfs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let add = |name: &str, arp: &str, index: &str, mac: &str, bridge: bool| {
            let d = root.join(name);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("type"), format!("{arp}\n")).unwrap();
            fs::write(d.join("ifindex"), format!("{index}\n")).unwrap();
            fs::write(d.join("address"), format!("{mac}\n")).unwrap();
            if bridge {
                fs::create_dir(d.join("bridge")).unwrap();
            }
        };
        add("lo", "772", "1", "00:00:00:00:00:00", false);
        add("eth1", "1", "3", "52:54:00:00:00:02", false);
        add("eth0", "1", "2", "52:54:00:00:00:01", false);
        add("docker0", "1", "4", "02:42:00:00:00:01", true);
        add("cni0", "1", "5", "02:42:00:00:00:02", true);
        add("veth9", "1", "6", "02:42:00:00:00:03", false);
        add("sit0", "776", "7", "00:00:00:00", false);
        let found = ethernet_interfaces_in(&root).unwrap();
        fs::remove_dir_all(&root).unwrap();
        let names: Vec<_> = found.iter().map(|i| (i.name.as_str(), i.index)).collect();
        assert_eq!(names, vec![("eth0", 2), ("eth1", 3)]);
        assert_eq!(found[0].mac, [0x52, 0x54, 0, 0, 0, 1]);
    }
}
