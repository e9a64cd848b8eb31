//! Network bring-up at boot (`[network]` in the configuration) over the `uvmkit_net` crate:
//! `lo`, then DHCP or a static address on the Ethernet interfaces.

use std::sync::OnceLock;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use uvmkit_net::{Addressing, InterfaceConfig, InterfaceMatch, NetworkConfig, NetworkHandle, StaticV4};

use crate::log;
use uvmkit_init_config::NetworkSection;

/// The running network, kept so that shutdown can release the DHCP leases.
static RUNNING: OnceLock<NetworkHandle> = OnceLock::new();

/// The `uvmkit_net` configuration for `section`.
pub fn net_config(section: &NetworkSection, hostname: &str) -> NetworkConfig {
    NetworkConfig {
        dhcp: section.dhcp,
        static_v4: section.static_v4.as_ref().and_then(|s| {
            let (address, prefix) = s.address_and_prefix()?;
            Some(StaticV4 {
                address,
                prefix,
                gateway: s.gateway,
                dns: s.dns.clone(),
            })
        }),
        // The configuration was checked at build time and again at boot: every entry has a name
        // or a MAC address, and an address that parses if it has one.
        interfaces: section
            .interfaces
            .iter()
            .filter_map(|entry| {
                let interface = match (&entry.name, entry.mac_bytes()) {
                    (Some(name), _) => InterfaceMatch::Name(name.clone()),
                    (None, Some(mac)) => InterfaceMatch::Mac(mac),
                    (None, None) => return None,
                };
                let addressing = match entry.address_and_prefix() {
                    Some((address, prefix)) => Addressing::Static(StaticV4 {
                        address,
                        prefix,
                        gateway: entry.gateway,
                        dns: entry.dns.clone(),
                    }),
                    None => Addressing::Dhcp,
                };
                Some(InterfaceConfig { interface, addressing })
            })
            .collect(),
        hostname: hostname.to_string(),
        timeout: Duration::from_secs(section.timeout),
        ..NetworkConfig::default()
    }
}

/// Brings up `lo` and starts configuring the other interfaces on a thread; joining it waits
/// for the first address (or the timeout) and gives the addresses configured by then.
pub fn start(section: &NetworkSection, hostname: &str) -> JoinHandle<Vec<std::net::Ipv4Addr>> {
    let config = net_config(section, hostname);
    thread::spawn(move || {
        let started = Instant::now();
        if let Err(err) = uvmkit_net::bring_up_loopback() {
            log!("cannot bring up lo: {err}");
        }
        let handle = match uvmkit_net::start(&config, |line| log!("network: {line}")) {
            Ok(handle) => handle,
            Err(err) => {
                log!("network: {err}; networking stays down");
                return Vec::new();
            }
        };
        let addresses = handle.addresses();
        if addresses.is_empty() {
            log!("network: no address after {} ms", started.elapsed().as_millis());
        } else {
            let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
            log!(
                "network up in {} ms: {}",
                started.elapsed().as_millis(),
                list.join(", ")
            );
        }
        let _ = RUNNING.set(handle);
        addresses
    })
}

/// Gives back DHCP leases at shutdown.
pub fn release() {
    if let Some(handle) = RUNNING.get() {
        handle.release_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use uvmkit_init_config::{InterfaceSection, StaticSection};

    #[test]
    fn section_maps_to_the_net_crate_config() {
        let section = NetworkSection {
            dhcp: false,
            timeout: 7,
            static_v4: Some(StaticSection {
                address: "192.168.1.5/24".into(),
                gateway: Some(Ipv4Addr::new(192, 168, 1, 1)),
                dns: vec![Ipv4Addr::new(1, 1, 1, 1)],
            }),
            interfaces: vec![
                InterfaceSection {
                    name: Some("eth1".into()),
                    mac: None,
                    address: Some("192.168.56.2/24".into()),
                    gateway: None,
                    dns: vec![Ipv4Addr::new(192, 168, 56, 1)],
                },
                InterfaceSection {
                    name: None,
                    mac: Some("52:54:00:AB:CD:EF".into()),
                    address: None,
                    gateway: None,
                    dns: vec![],
                },
            ],
        };
        let config = net_config(&section, "docker");
        assert_eq!(
            config.interfaces,
            vec![
                InterfaceConfig {
                    interface: InterfaceMatch::Name("eth1".into()),
                    addressing: Addressing::Static(StaticV4 {
                        address: Ipv4Addr::new(192, 168, 56, 2),
                        prefix: 24,
                        gateway: None,
                        dns: vec![Ipv4Addr::new(192, 168, 56, 1)],
                    }),
                },
                InterfaceConfig {
                    interface: InterfaceMatch::Mac([0x52, 0x54, 0, 0xab, 0xcd, 0xef]),
                    addressing: Addressing::Dhcp,
                },
            ]
        );
        assert!(!config.dhcp);
        assert_eq!(config.timeout, Duration::from_secs(7));
        assert_eq!(config.hostname, "docker");
        let s = config.static_v4.unwrap();
        assert_eq!((s.address, s.prefix), (Ipv4Addr::new(192, 168, 1, 5), 24));
        assert_eq!(s.gateway, Some(Ipv4Addr::new(192, 168, 1, 1)));
        assert_eq!(
            config.resolv_conf.as_deref(),
            Some(std::path::Path::new("/etc/resolv.conf"))
        );
    }
}
