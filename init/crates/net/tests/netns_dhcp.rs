//! End-to-end DHCP against dnsmasq, inside two network namespaces of our own joined by a veth
//! pair: the client gets a lease, puts the address and default route on the interface
//! (checked with `ip`), writes resolv.conf, renews at T1 and releases at shutdown (checked in
//! dnsmasq's log). Needs root, `ip` (iproute2) and `dnsmasq` (Debian's dnsmasq-base); without
//! them it prints why and passes.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SERVER_ADDR: &str = "10.213.0.1";
const INNER_ENV: &str = "UVMKIT_NET_TEST_DIR";

fn have(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        || Path::new("/usr/sbin").join(tool).is_file()
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deletes the namespaces and stops dnsmasq however the test ends.
struct Lab {
    namespaces: Vec<String>,
    dnsmasq: Option<Child>,
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.dnsmasq.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if std::env::var_os("UVMKIT_NET_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[test]
fn dhcp_lease_in_a_network_namespace() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: network namespaces need root");
        return;
    }
    for tool in ["ip", "dnsmasq"] {
        if !have(tool) {
            eprintln!("skipping: {tool} is not installed (apt-get install -y iproute2 dnsmasq-base)");
            return;
        }
    }
    let id = std::process::id();
    let (srv, cli) = (format!("uvmkit-srv-{id}"), format!("uvmkit-cli-{id}"));
    let dir = std::env::temp_dir().join(format!("uvmkit-net-netns-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut lab = Lab {
        namespaces: Vec::new(),
        dnsmasq: None,
        dir: dir.clone(),
    };
    for ns in [&srv, &cli] {
        run(&["ip", "netns", "add", ns]);
        lab.namespaces.push(ns.clone());
    }
    // The client end is called eth0: the driver skips interfaces named veth*.
    run(&[
        "ip", "-n", &srv, "link", "add", "vs0", "type", "veth", "peer", "name", "eth0", "netns", &cli,
    ]);
    run(&[
        "ip",
        "-n",
        &srv,
        "addr",
        "add",
        &format!("{SERVER_ADDR}/24"),
        "dev",
        "vs0",
    ]);
    run(&["ip", "-n", &srv, "link", "set", "vs0", "up"]);

    let log = dir.join("dnsmasq.log");
    let dnsmasq = Command::new("ip")
        .args([
            "netns",
            "exec",
            &srv,
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
        ])
        .args([
            "--interface=vs0",
            "--bind-interfaces",
            "--user=root",
            "--log-dhcp",
            "--no-ping",
        ])
        .args(["--dhcp-range=10.213.0.50,10.213.0.60,255.255.255.0,2m"])
        .args([
            "--dhcp-option=option:router,10.213.0.1",
            "--dhcp-option=option:dns-server,10.213.0.1",
        ])
        .args(["--dhcp-option=option:domain-name,uvmkit.test"])
        // T1 of 4 s so the renewal happens within the test.
        .args(["--dhcp-option=option:T1,4", "--dhcp-option=option:T2,100"])
        .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
        .arg(format!("--log-facility={}", log.display()))
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .stdout(Stdio::null())
        .spawn()
        .expect("start dnsmasq");
    lab.dnsmasq = Some(dnsmasq);
    // dnsmasq logs its DHCP range once its socket is open; a DISCOVER before that is lost.
    let ready = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("DHCP, IP range")
    {
        assert!(
            Instant::now() < ready,
            "dnsmasq did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // `ip netns exec` also remounts /sys, so the client sees its namespace's /sys/class/net.
    let out = Command::new("ip")
        .args(["netns", "exec", &cli])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "client_inside_namespace",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER_ENV, &dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let server_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.status.success(),
        "client failed:\n{text}\ndnsmasq log:\n{}",
        server_log()
    );
    assert!(text.contains("1 passed"), "the client test did not run:\n{text}");
    eprintln!("client output:\n{text}");

    // The server saw the whole life of the lease: DORA, a renewal and the release.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server_log().contains("DHCPRELEASE(vs0)") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = server_log();
    for needle in [
        "DHCPDISCOVER(vs0)",
        "DHCPOFFER(vs0)",
        "DHCPREQUEST(vs0)",
        "DHCPRELEASE(vs0)",
        "uvmkit-test",
    ] {
        assert!(s.contains(needle), "dnsmasq log lacks {needle}:\n{s}");
    }
    assert!(
        s.matches("DHCPACK(vs0)").count() >= 2,
        "no renewal ACK in the dnsmasq log:\n{s}"
    );
}

/// The client half, run by the test above inside the client namespace.
#[test]
#[ignore = "run by dhcp_lease_in_a_network_namespace inside a network namespace"]
fn client_inside_namespace() {
    let Some(dir) = std::env::var_os(INNER_ENV).map(PathBuf::from) else {
        eprintln!("skipping: {INNER_ENV} is unset; this half runs only inside the namespace test");
        return;
    };
    uvmkit_net::bring_up_loopback().expect("bring up lo");
    assert!(run(&["ip", "-4", "addr", "show", "dev", "lo"]).contains("inet 127.0.0.1/8"));

    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&lines);
    let config = uvmkit_net::NetworkConfig {
        hostname: "uvmkit-test".into(),
        timeout: Duration::from_secs(30),
        resolv_conf: Some(dir.join("resolv.conf")),
        ..Default::default()
    };
    let began = Instant::now();
    let net = uvmkit_net::start(&config, move |line| {
        eprintln!("net: {line}");
        sink.lock().unwrap().push(line.to_owned());
    })
    .expect("start the network");
    eprintln!("first lease after {:?}", began.elapsed());

    let addresses = net.addresses();
    assert_eq!(addresses.len(), 1, "expected one lease: {addresses:?}");
    let leased = addresses[0];
    assert!(
        (Ipv4Addr::new(10, 213, 0, 50)..=Ipv4Addr::new(10, 213, 0, 60)).contains(&leased),
        "{leased}"
    );
    let addr = run(&["ip", "-4", "addr", "show", "dev", "eth0"]);
    assert!(
        addr.contains(&format!("inet {leased}/24 brd 10.213.0.255")),
        "ip addr:\n{addr}"
    );
    let route = run(&["ip", "-4", "route", "show", "default"]);
    assert!(
        route.contains(&format!("default via {SERVER_ADDR} dev eth0 proto dhcp src {leased}")),
        "ip route:\n{route}"
    );
    let resolv = std::fs::read_to_string(dir.join("resolv.conf")).unwrap();
    assert!(
        resolv.contains("search uvmkit.test\nnameserver 10.213.0.1\n"),
        "resolv.conf:\n{resolv}"
    );

    // T1 is 4 s: wait for the renewal to go through.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lines.lock().unwrap().iter().any(|l| l.contains("renewed")) {
        assert!(
            Instant::now() < deadline,
            "no renewal within 20 s: {:?}",
            lines.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(net.addresses(), vec![leased], "renewal changed the address");

    net.release_all();
    assert!(net.addresses().is_empty());
    let addr = run(&["ip", "-4", "addr", "show", "dev", "eth0"]);
    assert!(!addr.contains("inet "), "address left after release:\n{addr}");
    let route = run(&["ip", "-4", "route", "show", "default"]);
    assert!(route.trim().is_empty(), "default route left after release:\n{route}");

    // The static path on the same interface: address, default route and resolv.conf.
    let config = uvmkit_net::NetworkConfig {
        dhcp: false,
        static_v4: Some(uvmkit_net::StaticV4 {
            address: Ipv4Addr::new(10, 213, 0, 7),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 213, 0, 1)),
            dns: vec![Ipv4Addr::new(10, 213, 0, 53)],
        }),
        ..config
    };
    let net = uvmkit_net::start(&config, |line| eprintln!("net: {line}")).expect("static configuration");
    assert_eq!(net.addresses(), vec![Ipv4Addr::new(10, 213, 0, 7)]);
    let addr = run(&["ip", "-4", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("inet 10.213.0.7/24 brd 10.213.0.255"), "ip addr:\n{addr}");
    let route = run(&["ip", "-4", "route", "show", "default"]);
    assert!(
        route.contains("default via 10.213.0.1 dev eth0 proto static src 10.213.0.7"),
        "ip route:\n{route}"
    );
    let resolv = std::fs::read_to_string(dir.join("resolv.conf")).unwrap();
    assert!(resolv.ends_with("\nnameserver 10.213.0.53\n"), "resolv.conf:\n{resolv}");
}
