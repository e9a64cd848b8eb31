//! `/etc/uvmkit/init.toml`: what the init (PID 1) needs to know at boot, written from the
//! validated definition, the kernel release, the modules to load and the preloaded images, in
//! the types of `uvmkit-init-config` that the init reads it back with.

use super::preload::PreloadedImage;
use crate::definition::file::DEFAULT_PRELOAD_SOCKET;
use crate::definition::ImageDefinition;
use crate::inputs::ModuleSelection;
use std::path::PathBuf;
use uvmkit_init_config::{DataDiskSection, InitConfig, ModuleSpec, PreloadImage, PreloadSection, RootMode};

/// `/etc/uvmkit/init.toml` as text.
pub fn init_config(
    def: &ImageDefinition,
    kernel_release: &str,
    modules: &ModuleSelection,
    preloaded: &[PreloadedImage],
) -> String {
    let config = InitConfig {
        hostname: def.hostname.clone(),
        root: if def.init.root_on_tmpfs {
            RootMode::Tmpfs
        } else {
            RootMode::Initramfs
        },
        root_size: None,
        kernel_release: Some(kernel_release.to_string()),
        modules: modules
            .modules
            .iter()
            .map(|m| ModuleSpec {
                name: m.name.clone(),
                path: m.path.clone().into(),
                depends: m.depends.clone(),
            })
            .collect(),
        network: def.network.clone(),
        data_disk: def.data_disk.as_ref().map(|data| DataDiskSection {
            format_blank: data.format_blank,
            binds: data.binds.iter().map(PathBuf::from).collect(),
            identity: data.identity,
        }),
        services: def.services.clone(),
        preload: def.preload.as_ref().map(|preload| PreloadSection {
            after: preload.service.clone(),
            // The engine's API unless the definition gives a load command.
            socket: match &preload.command {
                Some(_) => None,
                None => Some(preload.socket.as_deref().unwrap_or(DEFAULT_PRELOAD_SOCKET).into()),
            },
            command: preload.command.clone().unwrap_or_default(),
            images: preloaded
                .iter()
                .map(|image| PreloadImage {
                    path: image.path.clone().into(),
                    sha256: image.sha256.clone(),
                })
                .collect(),
        }),
        shares: def.shares.clone(),
        system: None,
        memory: def.memory.clone(),
    };
    let text = toml::to_string(&config).expect("the init configuration serializes as TOML");
    format!("# Written by uvmkit build; read by the init (PID 1) at boot.\n{text}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition as config;
    use std::net::Ipv4Addr;
    use std::path::Path;

    fn definition(text: &str) -> ImageDefinition {
        config::parse(text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn init_config_carries_network_and_data_disk() {
        let modules = ModuleSelection::default();
        let plain = init_config(&definition("name = \"t\"\n"), "6.1", &modules, &[]);
        assert_eq!(
            plain,
            "# Written by uvmkit build; read by the init (PID 1) at boot.\n\
             hostname = \"uvmkit\"\nroot = \"tmpfs\"\nkernel_release = \"6.1\"\n"
        );
        let def = definition(
            "name = \"t\"\n[network]\ndhcp = false\n[network.static]\naddress = \"10.0.0.2/8\"\ngateway = \"10.0.0.1\"\ndns = [\"10.0.0.1\"]\n[data_disk]\nformat_blank = true\nbinds = [\"/var/lib/docker\"]\n",
        );
        // The init reads it with the same types and accepts every value.
        let config: InitConfig = toml::from_str(&init_config(&def, "6.1", &modules, &[])).unwrap();
        assert_eq!((config.check_base(), config.check_services()), (Ok(()), Ok(())));
        let network = config.network.unwrap();
        assert!(!network.dhcp);
        assert_eq!(network.timeout, 30);
        let static_v4 = network.static_v4.unwrap();
        assert_eq!(static_v4.address_and_prefix(), Some((Ipv4Addr::new(10, 0, 0, 2), 8)));
        assert_eq!(static_v4.gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(static_v4.dns, [Ipv4Addr::new(10, 0, 0, 1)]);
        let data = config.data_disk.unwrap();
        assert!(data.format_blank && !data.identity);
        assert_eq!(data.binds, [PathBuf::from("/var/lib/docker")]);
    }

    #[test]
    fn init_config_carries_the_shares() {
        let def = definition(
            "name = \"t\"\n[[shares]]\nsource = \"work\"\npath = \"/mnt/work\"\ntype = \"9p\"\noptions = [\"ro\"]\n",
        );
        let text = init_config(&def, "6.1", &ModuleSelection::default(), &[]);
        let config: InitConfig = toml::from_str(&text).unwrap();
        assert_eq!(config.check_base(), Ok(()));
        let share = &config.shares[0];
        assert_eq!(
            (
                share.source.as_str(),
                share.path.as_path(),
                share.kind.fs_type(),
                share.options.as_slice()
            ),
            ("work", Path::new("/mnt/work"), "9p", &["ro".to_string()][..])
        );
    }

    #[test]
    fn preload_goes_through_the_engine_api_unless_a_command_is_given() {
        let base = "name = \"t\"\n[[services]]\nname = \"dockerd\"\ncommand = [\"/usr/sbin/dockerd\"]\n[preload]\nimages = [\"a.tar\"]\n";
        let image = PreloadedImage {
            path: "/usr/share/uvmkit/preload/a.tar".into(),
            sha256: "a".repeat(64),
        };
        let config = |extra: &str| -> InitConfig {
            let text = init_config(
                &definition(&format!("{base}{extra}")),
                "6.1",
                &ModuleSelection::default(),
                &[image.clone()],
            );
            let config: InitConfig = toml::from_str(&text).unwrap();
            assert_eq!(config.check_services(), Ok(()));
            config
        };
        let api = config("").preload.unwrap();
        assert_eq!(api.socket.as_deref(), Some(Path::new("/var/run/docker.sock")));
        assert!(api.command.is_empty());
        assert_eq!(api.images[0].path, Path::new("/usr/share/uvmkit/preload/a.tar"));
        let other = config("socket = \"/run/engine.sock\"\n").preload.unwrap();
        assert_eq!(other.socket.as_deref(), Some(Path::new("/run/engine.sock")));
        let cli = config("command = [\"/usr/bin/docker\", \"load\", \"-i\"]\n")
            .preload
            .unwrap();
        assert_eq!((cli.socket, cli.command.len()), (None, 3));
    }
}
