//! Network bring-up for the uvmkit init (PID 1): Ethernet interface discovery, link and
//! address configuration over ioctls and rtnetlink, a DHCPv4 client (RFC 2131/2132) and
//! `/etc/resolv.conf`. Pure Rust over `libc` bindings, so it links into a static musl binary.
//!
//! The init calls [`bring_up_loopback`], then [`start`] with a [`NetworkConfig`]; `start`
//! returns once one interface holds an address (or the boot timeout passes) and leaves a thread
//! per DHCP interface that renews its lease for as long as the VM runs. At shutdown,
//! [`NetworkHandle::release_all`] gives the leases back.

#![deny(missing_docs)]

pub mod dhcp;
mod driver;
pub mod interfaces;
pub mod netlink;
pub mod resolv;

pub use driver::{
    bring_up_loopback, start, Addressing, InterfaceConfig, InterfaceMatch, NetworkConfig, NetworkHandle, StaticV4,
};
