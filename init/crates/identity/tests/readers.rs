//! The identity as independent readers see it: OpenSSH's ssh-keygen for the host keys, the
//! OpenSSL command line for the certificates and a real mutual-TLS handshake.
//! Each test prints a note and passes when its tool is missing from PATH (CI installs them).

use std::fs;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use uvmkit_identity::{ensure_identity, fingerprint_sha256, ServerNames};

/// A directory holding a fresh identity, removed when dropped.
struct Identity {
    root: PathBuf,
    dir: PathBuf,
}

impl Identity {
    fn new() -> Identity {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("uvmkit-identity-readers-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let dir = root.join("identity");
        let names = ServerNames::for_host("docker-vm", [IpAddr::V4(Ipv4Addr::new(10, 0, 2, 15))]);
        ensure_identity(&dir, "docker-vm", &names, SystemTime::now()).unwrap();
        Identity { root, dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

use uvmkit_testkit::have;

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn stdout_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn ssh_keygen_reads_both_host_keys() {
    if !have("ssh-keygen") {
        return;
    }
    let id = Identity::new();
    for name in ["ssh/ssh_host_ed25519_key", "ssh/ssh_host_ecdsa_key"] {
        let private = id.path(name);
        let public = id.path(&format!("{name}.pub"));
        let public_line = fs::read_to_string(&public).unwrap();

        // `ssh-keygen -l` prints "BITS SHA256:... COMMENT (TYPE)".
        let listed = stdout_ok("ssh-keygen", &["-l", "-f", s(&public)]);
        let fields: Vec<&str> = listed.split_whitespace().collect();
        assert_eq!(fields[0], "256", "{listed}");
        assert_eq!(fields[1], fingerprint_sha256(&public_line).unwrap(), "{listed}");
        assert_eq!(fields[2], "root@docker-vm", "{listed}");
        // The private key file gives the same fingerprint.
        let listed_private = stdout_ok("ssh-keygen", &["-l", "-f", s(&private)]);
        assert_eq!(listed_private.split_whitespace().nth(1), Some(fields[1]));

        // `ssh-keygen -y` decodes the openssh-key-v1 private key and derives its public key.
        let derived = stdout_ok("ssh-keygen", &["-y", "-f", s(&private)]);
        let key_fields = |line: &str| line.split_whitespace().take(2).map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(key_fields(&derived), key_fields(&public_line), "{name}");
    }
}

#[test]
fn openssl_verifies_the_chain_and_purposes() {
    if !have("openssl") {
        return;
    }
    let id = Identity::new();
    let ca = id.path("tls/ca.pem");
    for (cert, purpose) in [
        ("tls/server-cert.pem", "sslserver"),
        ("tls/client/cert.pem", "sslclient"),
    ] {
        let out = stdout_ok(
            "openssl",
            &["verify", "-purpose", purpose, "-CAfile", s(&ca), s(&id.path(cert))],
        );
        assert!(out.trim_end().ends_with(": OK"), "{out}");
    }
    // The bundle's CA copy verifies too, and the extended key usages are not interchangeable.
    let bundle_ca = id.path("tls/client/ca.pem");
    stdout_ok(
        "openssl",
        &["verify", "-CAfile", s(&bundle_ca), s(&id.path("tls/client/cert.pem"))],
    );
    let wrong = run(
        "openssl",
        &[
            "verify",
            "-purpose",
            "sslserver",
            "-CAfile",
            s(&ca),
            s(&id.path("tls/client/cert.pem")),
        ],
    );
    assert!(
        !wrong.status.success(),
        "a client certificate must not verify as a server certificate"
    );
    // A certificate from another VM's CA does not verify against this CA.
    let other = Identity::new();
    let foreign = run(
        "openssl",
        &["verify", "-CAfile", s(&ca), s(&other.path("tls/server-cert.pem"))],
    );
    assert!(!foreign.status.success());
    // Every private key is a valid P-256 key.
    for key in ["tls/ca-key.pem", "tls/server-key.pem", "tls/client/key.pem"] {
        let out = run("openssl", &["pkey", "-in", s(&id.path(key)), "-check", "-noout"]);
        assert!(out.status.success(), "{key}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn openssl_shows_the_extensions() {
    if !have("openssl") {
        return;
    }
    let id = Identity::new();
    let text = |rel: &str| stdout_ok("openssl", &["x509", "-noout", "-text", "-in", s(&id.path(rel))]);

    let ca = text("tls/ca.pem");
    for want in [
        "Version: 3 (0x2)",
        "Signature Algorithm: ecdsa-with-SHA256",
        "Subject: CN = uvmkit CA for docker-vm",
        "X509v3 Basic Constraints: critical\n                CA:TRUE, pathlen:0",
        "X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign",
        "X509v3 Subject Key Identifier",
        "NIST CURVE: P-256",
    ] {
        assert!(ca.contains(want), "CA lacks {want:?}:\n{ca}");
    }

    let server = text("tls/server-cert.pem");
    for want in [
        "Issuer: CN = uvmkit CA for docker-vm",
        "Subject: CN = docker-vm",
        "CA:FALSE",
        "X509v3 Key Usage: critical\n                Digital Signature\n",
        "TLS Web Server Authentication",
        "DNS:docker-vm, DNS:localhost, IP Address:10.0.2.15, IP Address:127.0.0.1",
        "X509v3 Authority Key Identifier",
        "X509v3 Subject Key Identifier",
    ] {
        assert!(server.contains(want), "server certificate lacks {want:?}:\n{server}");
    }
    assert!(!server.contains("Client Authentication"));

    let client = text("tls/client/cert.pem");
    for want in ["Subject: CN = client", "TLS Web Client Authentication", "CA:FALSE"] {
        assert!(client.contains(want), "client certificate lacks {want:?}:\n{client}");
    }
    assert!(!client.contains("Subject Alternative Name"));
}

/// An `openssl s_server` child killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `openssl s_client` with `extra` arguments, sends an HTTP request and returns the
/// combined output and whether the server's status page came back.
fn client_request(id: &Identity, port: u16, extra: &[&str]) -> (String, bool) {
    let connect = format!("127.0.0.1:{port}");
    let ca = id.path("tls/client/ca.pem");
    let mut args = vec![
        "s_client",
        "-connect",
        &connect,
        "-CAfile",
        s(&ca),
        "-verify_return_error",
        "-verify_hostname",
        "docker-vm",
        "-ign_eof",
    ];
    args.extend_from_slice(extra);
    let mut child = Command::new("openssl")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let served = text.contains("HTTP/1.0 200 ok");
    (text, served)
}

#[test]
fn mutual_tls_handshake_needs_the_client_bundle() {
    if !have("openssl") {
        return;
    }
    let id = Identity::new();
    let port = free_port();
    let accept = format!("127.0.0.1:{port}");
    let (cert, key, ca) = (
        id.path("tls/server-cert.pem"),
        id.path("tls/server-key.pem"),
        id.path("tls/ca.pem"),
    );
    let _server = Server(
        Command::new("openssl")
            .args(["s_server", "-cert", s(&cert), "-key", s(&key), "-CAfile", s(&ca)])
            .args(["-Verify", "1", "-verify_return_error", "-accept", &accept, "-www"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&accept).is_err() {
        assert!(
            Instant::now() < deadline,
            "openssl s_server did not start listening on {accept}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let (cert, key) = (id.path("tls/client/cert.pem"), id.path("tls/client/key.pem"));
    let (text, served) = client_request(&id, port, &["-cert", s(&cert), "-key", s(&key)]);
    assert!(served, "handshake with the client bundle failed:\n{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");

    // TLS 1.2 (ECDHE-ECDSA) works as well as the default TLS 1.3.
    let (text, served) = client_request(&id, port, &["-cert", s(&cert), "-key", s(&key), "-tls1_2"]);
    assert!(served && text.contains("TLSv1.2"), "TLS 1.2 handshake failed:\n{text}");

    let (text, served) = client_request(&id, port, &[]);
    assert!(!served, "the server answered a client without a certificate:\n{text}");
    assert!(
        text.contains("certificate required"),
        "expected the server to demand a certificate:\n{text}"
    );

    // The server certificate is also checked against the names clients dial.
    let (text, served) = client_request(
        &id,
        port,
        &["-cert", s(&cert), "-key", s(&key), "-verify_ip", "10.0.2.15"],
    );
    assert!(served, "{text}");
    let (text, served) = client_request(
        &id,
        port,
        &["-cert", s(&cert), "-key", s(&key), "-verify_ip", "10.9.9.9"],
    );
    assert!(!served, "a name outside the SANs was accepted:\n{text}");
}
