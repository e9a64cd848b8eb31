//! DHCPv4 client (RFC 2131, RFC 2132): the message codec, a pure state machine and the UDP
//! transport that carries its messages on one interface.

pub mod client;
pub mod packet;
pub mod transport;

pub use client::{Action, ClientConfig, Destination, DhcpClient, Event, Lease, State};
pub use packet::{DhcpOptions, DhcpPacket, MessageType, PacketError};
pub use transport::DhcpSocket;
