//! `/etc/uvmkit/init.toml`: what the init (PID 1) needs to know at boot, written from the
//! validated definition, the kernel release, the modules to load and the preloaded images.

use super::preload::PreloadedImage;
use crate::definition::{ImageDefinition, ServiceSpec};
use crate::inputs::ModuleSelection;
use serde::Serialize;

/// The part of the init's configuration serde writes: services and preloaded images.
#[derive(Serialize)]
struct InitServices<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    services: &'a [ServiceSpec],
    #[serde(skip_serializing_if = "Option::is_none")]
    preload: Option<InitPreload<'a>>,
}

/// `[preload]` as the init reads it.
#[derive(Serialize)]
struct InitPreload<'a> {
    after: &'a str,
    command: &'a [String],
    images: &'a [PreloadedImage],
}

/// `/etc/uvmkit/init.toml`: what the init needs to know (see `init/src/config.rs`).
pub fn init_config(
    def: &ImageDefinition,
    kernel_release: &str,
    modules: &ModuleSelection,
    preloaded: &[PreloadedImage],
) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut out = String::from("# Written by uvmkit build; read by the init (PID 1) at boot.\n");
    out.push_str(&format!("hostname = {}\n", q(&def.hostname)));
    out.push_str(&format!(
        "root = {}\n",
        q(if def.init.root_on_tmpfs { "tmpfs" } else { "initramfs" })
    ));
    out.push_str(&format!("kernel_release = {}\n", q(kernel_release)));
    let list = |items: &[String]| items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
    if let Some(network) = &def.network {
        out.push_str(&format!(
            "\n[network]\ndhcp = {}\ntimeout = {}\n",
            network.dhcp, network.timeout
        ));
        if let Some(s) = &network.static_v4 {
            out.push_str(&format!("\n[network.static]\naddress = {}\n", q(&s.address)));
            if let Some(gateway) = &s.gateway {
                out.push_str(&format!("gateway = {}\n", q(gateway)));
            }
            out.push_str(&format!("dns = [{}]\n", list(&s.dns)));
        }
    }
    if let Some(data) = &def.data_disk {
        out.push_str(&format!(
            "\n[data_disk]\nformat_blank = {}\nidentity = {}\nbinds = [{}]\n",
            data.format_blank,
            data.identity,
            list(&data.binds)
        ));
    }
    for m in &modules.modules {
        let deps: Vec<String> = m.depends.iter().map(|d| q(d)).collect();
        out.push_str(&format!(
            "\n[[modules]]\nname = {}\npath = {}\ndepends = [{}]\n",
            q(&m.name),
            q(&m.path),
            deps.join(", ")
        ));
    }
    let services = InitServices {
        services: &def.services,
        preload: def.preload.as_ref().map(|preload| InitPreload {
            after: &preload.service,
            command: &preload.command,
            images: preloaded,
        }),
    };
    let text = toml::to_string(&services).expect("services serialize as TOML");
    if !text.is_empty() {
        out.push('\n');
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition as config;
    use std::path::Path;

    fn definition(text: &str) -> ImageDefinition {
        config::parse(text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn init_config_carries_network_and_data_disk() {
        let modules = ModuleSelection::default();
        let plain = init_config(&definition("name = \"t\"\n"), "6.1", &modules, &[]);
        assert!(
            !plain.contains("[network]") && !plain.contains("[data_disk]"),
            "{plain}"
        );
        let def = definition(
            "name = \"t\"\n[network]\ndhcp = false\n[network.static]\naddress = \"10.0.0.2/8\"\ngateway = \"10.0.0.1\"\ndns = [\"10.0.0.1\"]\n[data_disk]\nformat_blank = true\nbinds = [\"/var/lib/docker\"]\n",
        );
        let text = init_config(&def, "6.1", &modules, &[]);
        let value: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(value["network"]["dhcp"].as_bool(), Some(false));
        assert_eq!(value["network"]["timeout"].as_integer(), Some(30));
        assert_eq!(value["network"]["static"]["address"].as_str(), Some("10.0.0.2/8"));
        assert_eq!(value["network"]["static"]["dns"][0].as_str(), Some("10.0.0.1"));
        assert_eq!(value["data_disk"]["format_blank"].as_bool(), Some(true));
        assert_eq!(value["data_disk"]["identity"].as_bool(), Some(false));
        assert_eq!(value["data_disk"]["binds"][0].as_str(), Some("/var/lib/docker"));
    }
}
