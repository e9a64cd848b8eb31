//! Runs the first-boot identity flow on a directory and prints the report and its timing:
//! `cargo run --release -p uvmkit-identity --example first_boot -- DIR HOSTNAME [IPV4...]`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use uvmkit_identity::{ensure_identity, ServerNames};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, hostname, ips @ ..] = args.as_slice() else {
        eprintln!("usage: first_boot DIR HOSTNAME [IPV4...]");
        return ExitCode::from(2);
    };
    let mut addresses = Vec::new();
    for ip in ips {
        match ip.parse::<IpAddr>() {
            Ok(ip) => addresses.push(ip),
            Err(e) => {
                eprintln!("{ip:?} is not an IP address: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let names = ServerNames::for_host(hostname, addresses);
    let start = Instant::now();
    match ensure_identity(&PathBuf::from(dir), hostname, &names, SystemTime::now()) {
        Ok(report) => {
            println!("{report}");
            println!("took {:.2} ms", start.elapsed().as_secs_f64() * 1000.0);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("identity: {e}");
            ExitCode::FAILURE
        }
    }
}
