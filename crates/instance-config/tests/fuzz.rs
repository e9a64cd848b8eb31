//! `uvmkit.toml` from a per-VM settings volume, which anyone who can attach a disk to the VM
//! writes: fed mutations of a full valid file and random bytes (`uvmkit_testkit::fuzz`). The
//! parser and its checks (host name, key lines, interfaces, the `[docker]` section, paths)
//! may not panic, run long or hold more than their heap bound; what parses must serialize and
//! parse back to the same settings.

use uvmkit_instance_config::InstanceSettings;
use uvmkit_testkit::fuzz::Fuzz;

uvmkit_testkit::count_allocations!();

const FULL: &str = r#"hostname = "vm-1"

[ssh]
authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm6 user@laptop"]

[[network.interfaces]]
name = "eth1"
address = "192.168.56.10/24"

[[network.interfaces]]
mac = "52:54:00:12:34:56"
address = "10.0.0.5/8"
gateway = "10.0.0.1"
dns = ["10.0.0.1"]

[docker]
registry-mirrors = ["http://10.0.2.2:5000"]
dns = ["192.168.1.1"]
insecure-registries = ["registry.lan:5000", "10.20.0.0/16"]
log-driver = "json-file"
log-opts = { max-size = "10m", max-file = "3" }
default-address-pools = [{ base = "10.200.0.0/16", size = 24 }]

[tls]
client_ca = "client-ca.pem"
ca_certificates = ["certs/corp.pem"]

[preload]
images = ["images/app.tar"]
"#;

#[test]
fn settings_files() {
    let seeds = vec![FULL.as_bytes().to_vec(), b"hostname = \"a\"\n".to_vec()];
    for seed in &seeds {
        InstanceSettings::parse(std::str::from_utf8(seed).unwrap()).expect("the seeds are valid");
    }
    let parsed = std::cell::Cell::new(0u64);
    Fuzz::new("instance-settings")
        .dictionary(&[
            "\n",
            "[",
            "]",
            "[[",
            "]]",
            "=",
            "\"",
            "'",
            "{",
            "}",
            ",",
            "/",
            "..",
            "/33",
            "/0",
            ":",
            "256.",
            "ff:",
            "999999999999999999999",
            "\\u0000",
            "\u{e9}",
            "address = ",
            "name = ",
            "hostname = ",
            "size = ",
        ])
        .run(&seeds, |input| {
            let Ok(text) = std::str::from_utf8(input) else { return };
            if let Ok(settings) = InstanceSettings::parse(text) {
                parsed.set(parsed.get() + 1);
                let _ = settings.static_address("eth1", [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
                if let Some(docker) = &settings.docker {
                    let _ = docker.daemon_json();
                }
            }
        });
    // The mutations must reach the checks behind the TOML parser, not only its first error.
    assert!(parsed.get() > 50, "only {} inputs parsed", parsed.get());
}
