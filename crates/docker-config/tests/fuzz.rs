//! The `[docker]` section and the image's own `daemon.json` that instance settings are merged
//! over, fed mutations of valid samples and random bytes (`uvmkit_testkit::fuzz`). Neither the
//! checks nor the merge may panic, run long or hold more than their heap bound.

use uvmkit_docker_config::{merge_daemon_json, DockerSection};
use uvmkit_testkit::fuzz::Fuzz;

uvmkit_testkit::count_allocations!();

const SECTION: &str = r#"dns = ["192.168.1.1", "fd00::53"]
dns-search = ["corp.example"]
registry-mirrors = ["https://mirror.example:5000"]
insecure-registries = ["registry.lan:5000", "10.20.0.0/16", "[fd00::1]:5000"]
log-driver = "json-file"
log-opts = { max-size = "10m", max-file = "3" }
default-address-pools = [{ base = "10.200.0.0/16", size = 24 }]
storage-driver = "overlay2"
"#;

const DAEMON_JSON: &str = r#"{
  "dns": ["10.0.2.3"],
  "log-driver": "local",
  "log-opts": {"max-size": "20m"},
  "features": {"buildkit": true},
  "default-address-pools": [{"base": "172.30.0.0/16", "size": 24}]
}
"#;

#[test]
fn docker_sections() {
    let seeds = vec![SECTION.as_bytes().to_vec()];
    toml::from_str::<DockerSection>(SECTION).expect("the seed is valid");
    Fuzz::new("docker-section")
        .dictionary(&[
            "\n",
            "[",
            "]",
            "\"",
            ",",
            "=",
            "{",
            "}",
            "/",
            ":",
            "::",
            "/129",
            "-1",
            "99999999999999999999",
        ])
        .run(&seeds, |input| {
            let Ok(text) = std::str::from_utf8(input) else { return };
            if let Ok(section) = toml::from_str::<DockerSection>(text) {
                let _ = section.check();
                let _ = section.daemon_json();
                let _ = merge_daemon_json(Some(DAEMON_JSON), &section);
            }
        });
}

#[test]
fn image_daemon_json() {
    let section: DockerSection = toml::from_str(SECTION).unwrap();
    merge_daemon_json(Some(DAEMON_JSON), &section).expect("the seed merges");
    Fuzz::new("daemon-json")
        .dictionary(&[
            "{",
            "}",
            "[",
            "]",
            "\"",
            ",",
            ":",
            "null",
            "1e999",
            "-0",
            "\"log-opts\"",
            "\"dns\"",
            "\\u0000",
        ])
        .run(&[DAEMON_JSON.as_bytes().to_vec(), b"{}".to_vec()], |input| {
            let text = String::from_utf8_lossy(input);
            let _ = merge_daemon_json(Some(&text), &section);
            let _ = merge_daemon_json(Some(&text), &DockerSection::default());
        });
}
