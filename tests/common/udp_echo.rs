//! A UDP echo server for the Docker boot test's container image, where busybox has no UDP
//! server: `udp-echo PORT` prints every datagram it receives on stdout (the container's log)
//! and sends it back to its sender. tests/docker.rs compiles it static with rustc.

use std::io::Write;
use std::net::UdpSocket;

fn main() {
    let port = std::env::args().nth(1).expect("usage: udp-echo PORT");
    let socket = UdpSocket::bind(format!("0.0.0.0:{port}")).expect("bind the UDP port");
    let mut datagram = [0u8; 65536];
    loop {
        let (len, from) = socket.recv_from(&mut datagram).expect("receive a datagram");
        let mut out = std::io::stdout().lock();
        out.write_all(&datagram[..len]).expect("write to stdout");
        out.flush().expect("flush stdout");
        socket.send_to(&datagram[..len], from).expect("echo the datagram");
    }
}
