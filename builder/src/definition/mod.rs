//! The image definition: the TOML file a user writes (`images/*.toml`), parsed and validated
//! once into the [`ImageDefinition`] the pipeline takes.
//!
//! Parsing is strict: unknown keys are errors, and every error names the file, the line and
//! column, and the key, with what is allowed there. Relative paths in the definition are
//! relative to the definition file's directory. The steps are [`file`] (the serde types, which
//! only parse), [`validate`] (each part checked once) and [`image`] (the validated types).

pub mod file;
pub mod image;
pub mod kernel_config;
pub mod package_defaults;
pub mod target;
pub mod units;
mod validate;

pub use file::{
    BootSection, DataDiskSection, DebianArchive, DebianSection, EspLayout, InitSection, InitrdSection, IsoSection,
    NetworkSection, PreloadSection, SshSection, StaticNetwork, SystemCompression,
};
pub use image::{
    DiskSection, ExtraFile, ExtraFileKind, FormatsError, ImageDefinition, KernelSection, LocalKernel, PackageSelection,
    Selected, VmSection, ALWAYS_EXCLUDE, DEFAULT_INCLUDE, DOCKER_DAEMON_JSON,
};
pub use package_defaults::{left_out_by_default, PackageDefaults, PACKAGE_DEFAULTS};
pub use target::{Format, Target};
pub use units::{check_disk_size, is_valid_disk_size, parse_size, DiskSizeError, SizeError, MAX_DISK_SIZE};
pub use uvmkit_service_spec::{Readiness, RestartPolicy, RlimitValue, ServiceSpec};

use std::path::{Path, PathBuf};

/// An image definition loaded from a file, with the directory relative paths start from.
#[derive(Debug, Clone)]
pub struct LoadedDefinition {
    /// The validated definition.
    pub definition: ImageDefinition,
    /// The file it came from.
    pub path: PathBuf,
    /// The directory relative paths in it are relative to.
    pub base_dir: PathBuf,
    /// The file's bytes (hashed into the manifest and the disk identifiers).
    pub source_text: String,
}

/// Why a definition could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read image definition {}: {source}", path.display())]
    Read {
        /// The definition file.
        path: PathBuf,
        /// What reading it reported.
        source: std::io::Error,
    },
    /// The TOML is malformed or a key is unknown or has the wrong type.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        /// The definition file.
        path: PathBuf,
        /// Line of the problem, from 1.
        line: usize,
        /// Column of the problem, from 1.
        column: usize,
        /// What is wrong there, and what is allowed.
        message: String,
    },
    /// The TOML is well-formed but a value is not acceptable.
    #[error("{}: `{key}`: {message}", path.display())]
    Invalid {
        /// The definition file.
        path: PathBuf,
        /// The key, such as `disk.size` or `files[0] (/etc/motd)`.
        key: String,
        /// What is wrong with its value, and what is allowed.
        message: String,
    },
}

/// Reads and validates the definition at `path`.
pub fn load(path: &Path) -> Result<LoadedDefinition, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let definition = parse(&text, path)?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base_dir = if base_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base_dir
    };
    check_sources_stay_inside(&definition, &base_dir, path)?;
    Ok(LoadedDefinition {
        definition,
        path: path.to_path_buf(),
        base_dir,
        source_text: text,
    })
}

/// Refuses a `[[files]]` or `[disk] data_files` `source` or `directory` that a symbolic link
/// leads out of the definition's directory: only files beside the definition go into an image
/// (validation already refused absolute paths and `..`). A path that does not exist is left
/// for assembly to report.
fn check_sources_stay_inside(def: &ImageDefinition, base_dir: &Path, path: &Path) -> Result<(), ConfigError> {
    let Ok(root) = base_dir.canonicalize() else {
        return Ok(());
    };
    let sections = [("files", &def.files), ("disk.data_files", &def.disk.data_files)];
    for (section, list) in sections {
        for (i, f) in list.iter().enumerate() {
            let (ExtraFileKind::Source(p) | ExtraFileKind::Directory(p)) = &f.kind else {
                continue;
            };
            let Ok(real) = base_dir.join(p).canonicalize() else {
                continue;
            };
            if !real.starts_with(&root) {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    key: format!("{section}[{i}] ({})", f.path),
                    message: format!(
                        "{:?} leads through a symbolic link to {}, outside the definition's directory; host files outside it are never taken into an image: copy the file beside the definition",
                        p.display().to_string(),
                        real.display()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Parses and validates definition text; `path` is used in messages only.
pub fn parse(text: &str, path: &Path) -> Result<ImageDefinition, ConfigError> {
    let file: file::DefinitionFile = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_column(text, s.start)).unwrap_or((1, 1));
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })?;
    validate::validate(file).map_err(|invalid| ConfigError::Invalid {
        path: path.to_path_buf(),
        key: invalid.key,
        message: invalid.message,
    })
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> String {
        parse(text, Path::new("img.toml")).unwrap_err().to_string()
    }

    #[test]
    fn docker_section_becomes_daemon_json_and_unknown_keys_are_named() {
        let def = parse(
            "name = \"d\"\n[docker]\nregistry-mirrors = [\"https://mirror.test\"]\ndns = [\"10.0.2.3\"]\n",
            Path::new("d.toml"),
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(def.docker_daemon_json.as_deref().unwrap()).unwrap();
        assert_eq!(json["registry-mirrors"][0], "https://mirror.test");
        assert_eq!(json["dns"][0], "10.0.2.3");
        let e = parse_err("name = \"d\"\n[docker]\nregistry-mirorrs = [\"https://m.test\"]\n");
        assert!(e.contains("img.toml") && e.contains("registry-mirorrs"), "{e}");
        let e = parse_err("name = \"d\"\n[docker]\ndns = [\"not-an-address\"]\n");
        assert!(
            e.contains("img.toml") && e.contains("dns") && e.contains("not-an-address"),
            "{e}"
        );
        let e = parse_err(
            "name = \"d\"\n[docker]\ndebug = true\n[[files]]\npath = \"/etc/docker/daemon.json\"\ncontents = \"{}\"\n",
        );
        assert!(e.contains("files[0].path") && e.contains("[docker]"), "{e}");
    }

    #[test]
    fn memory_zram_is_checked_and_selects_the_zram_module() {
        let def = parse("name = \"m\"\n[memory]\nzram = \"25%\"\n", Path::new("m.toml")).unwrap();
        assert_eq!(
            def.memory.as_ref().and_then(|m| m.zram),
            Some(uvmkit_init_config::ZramSize::Percent(25))
        );
        let names: Vec<&str> = def.kernel_features.iter().map(|f| f.name.as_str()).collect();
        assert!(names.contains(&"zram"), "{names:?}");
        let zram = def.kernel_features.iter().find(|f| f.name == "zram").unwrap();
        assert_eq!(zram.modules.load, ["zram"]);
        assert_eq!(zram.options.get("CONFIG_SWAP").map(String::as_str), Some("y"));
        // Named as a feature too, it is selected once.
        let def = parse(
            "name = \"m\"\nfeatures = [\"zram\"]\n[memory]\nzram = \"512MiB\"\n",
            Path::new("m.toml"),
        )
        .unwrap();
        assert_eq!(def.kernel_features.iter().filter(|f| f.name == "zram").count(), 1);
        let plain = parse("name = \"m\"\n", Path::new("m.toml")).unwrap();
        assert!(plain.memory.is_none());
        assert!(plain.kernel_features.iter().all(|f| f.name != "zram"));

        let e = parse_err("name = \"m\"\n[memory]\nzram = \"125%\"\n");
        assert!(e.contains("memory.zram") && e.contains("use 1% to 100%"), "{e}");
        let e = parse_err("name = \"m\"\n[memory]\nzram = \"half\"\n");
        assert!(e.contains("memory.zram") && e.contains("\"25%\""), "{e}");
        let e = parse_err("name = \"m\"\n[memory]\nzram = \"1MiB\"\n");
        assert!(e.contains("memory.zram") && e.contains("16MiB to 1TiB"), "{e}");
        let e = parse_err("name = \"m\"\n[memory]\nswap = \"1G\"\n");
        assert!(e.contains("img.toml") && e.contains("swap"), "{e}");
    }

    #[test]
    fn minimal_definition_gets_defaults() {
        let def = parse("name = \"m\"\n", Path::new("m.toml")).unwrap();
        assert_eq!(def.hostname, "uvmkit");
        assert_eq!(def.targets, Target::ALL.to_vec());
        assert_eq!(def.debian.suite, "bookworm");
        assert_eq!(def.kernel.package, "linux-image-amd64");
        assert_eq!(def.disk.size, 8 << 30);
    }

    #[test]
    fn debian_archives_follow_the_release() {
        let def = parse("name = \"m\"\n[debian]\nsuite = \"trixie\"\n", Path::new("m.toml")).unwrap();
        let suites: Vec<String> = def.debian.archives().into_iter().map(|a| a.suite).collect();
        assert_eq!(
            suites,
            ["trixie"],
            "a definition without the keys draws from its suite alone"
        );
        let def = parse(
            "name = \"m\"\n[debian]\nsuite = \"trixie\"\nupdates = true\nsecurity = true\nbackports = [\"linux-image-amd64\"]\nsecurity_mirror = \"http://127.0.0.1/s\"\n",
            Path::new("m.toml"),
        )
        .unwrap();
        let archives = def.debian.archives();
        let suites: Vec<&str> = archives.iter().map(|a| a.suite.as_str()).collect();
        assert_eq!(
            suites,
            ["trixie", "trixie-updates", "trixie-security", "trixie-backports"]
        );
        assert_eq!(
            archives[3].selection,
            uvmkit_debian::archives::Selection::Only(["linux-image-amd64".to_string()].into())
        );
        let e = parse_err("name = \"m\"\n[debian]\nsuite = \"trixie-security\"\nsecurity = true\n");
        assert!(e.contains("debian.suite") && e.contains("release name"), "{e}");
        let e = parse_err("name = \"m\"\n[debian]\nsecurity_mirror = \"http://x/\"\n");
        assert!(
            e.contains("debian.security_mirror") && e.contains("security = true"),
            "{e}"
        );
        let e = parse_err("name = \"m\"\n[debian]\nbackports = [\"Bad Name\"]\n");
        assert!(e.contains("debian.backports[0]"), "{e}");
    }

    #[test]
    fn unknown_key_names_position_and_allowed_keys() {
        let e = parse_err("name = \"m\"\n[debian]\nsuite = \"bookworm\"\nmirorr = \"x\"\n");
        assert!(e.starts_with("img.toml:4:1:"), "{e}");
        assert!(e.contains("mirorr") && e.contains("mirror"), "{e}");
    }

    #[test]
    fn wrong_type_and_bad_values_are_explained() {
        let e = parse_err("name = \"m\"\ntargets = [\"xen\"]\n");
        assert!(e.starts_with("img.toml:2:"), "{e}");
        assert!(e.contains("xen") && e.contains("hyperv"), "{e}");
        let e = parse_err("name = \"m\"\n[disk]\nsize = \"8 parsecs\"\n");
        assert!(e.contains("img.toml:3:") && e.contains("unit"), "{e}");
        let e = parse_err("name = \"m/x\"\n");
        assert!(e.contains("`name`"), "{e}");
        let e = parse_err("name = \"m\"\n[[files]]\npath = \"/a\"\ncontents = \"x\"\nsymlink = \"y\"\n");
        assert!(e.contains("files[0] (/a)") && e.contains("exactly one"), "{e}");
        let e = parse_err("name = \"m\"\n[[files]]\npath = \"/a\"\nmode = \"0999\"\ncontents = \"\"\n");
        assert!(e.contains("octal"), "{e}");
        let e = parse_err("name = \"m\"\nfeatures = [\"gpu\"]\n");
        assert!(e.contains("unknown feature \"gpu\"") && e.contains("containers"), "{e}");
        let e = parse_err("name = \"m\"\nname = \"n\"\n");
        assert!(e.starts_with("img.toml:2:"), "{e}");
    }

    #[test]
    fn modes_and_sizes() {
        let def = parse(
            "name = \"m\"\n[[files]]\npath = \"/a\"\ncontents = \"\"\nmode = 0o750\n[[files]]\npath = \"/b\"\nmkdir = true\nmode = \"0700\"\n[disk]\nsize = \"64GiB\"\n",
            Path::new("m.toml"),
        )
        .unwrap();
        assert_eq!(def.files[0].mode, Some(0o750));
        assert_eq!(def.files[1].mode, Some(0o700));
        assert_eq!(def.disk.size, 64 << 30);
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert!(parse_size("12 furlongs").is_err());
    }

    #[test]
    fn shares_are_parsed_and_checked_with_the_key_named() {
        let def = parse(
            "name = \"m\"\n[[shares]]\nsource = \"work\"\npath = \"/mnt/work\"\ntype = \"virtiofs\"\n",
            Path::new("m.toml"),
        )
        .unwrap();
        assert_eq!(def.shares.len(), 1);
        assert_eq!(def.shares[0].kind.fs_type(), "virtiofs");
        let e = parse_err("name = \"m\"\n[[shares]]\nsource = \"work\"\npath = \"mnt\"\ntype = \"9p\"\n");
        assert!(e.contains("shares") && e.contains("absolute"), "{e}");
        let e = parse_err("name = \"m\"\n[[shares]]\nsource = \"work\"\npath = \"/mnt\"\ntype = \"9p\"\ntag = \"x\"\n");
        assert!(e.contains("tag"), "{e}");
    }

    #[test]
    fn network_and_data_disk_sections() {
        let def = parse("name = \"m\"\n", Path::new("m.toml")).unwrap();
        assert!(def.network.is_none() && def.data_disk.is_none());
        let def = parse(
            "name = \"m\"\n[network]\ntimeout = 10\n[network.static]\naddress = \"10.0.0.2/8\"\ngateway = \"10.0.0.1\"\n[data_disk]\nformat_blank = true\nbinds = [\"/var/lib/docker\"]\n",
            Path::new("m.toml"),
        )
        .unwrap();
        let network = def.network.unwrap();
        assert!(network.dhcp);
        assert_eq!(network.timeout, 10);
        assert_eq!(network.static_v4.unwrap().address, "10.0.0.2/8");
        assert!(def.data_disk.unwrap().format_blank);
        let e = parse_err("name = \"m\"\n[network.static]\naddress = \"10.0.0.2\"\n");
        assert!(e.contains("network.static.address"), "{e}");
        let e = parse_err("name = \"m\"\n[network.static]\naddress = \"10.0.0.2/8\"\ndns = [\"x\"]\n");
        assert!(e.contains("\"x\" is not an IPv4 address"), "{e}");
        let e = parse_err("name = \"m\"\n[data_disk]\nbinds = [\"/a/x\", \"/b/x\"]\n");
        assert!(e.contains("data_disk.binds[1]"), "{e}");
    }

    #[test]
    fn vm_section_and_package_formats() {
        let def = parse("name = \"m\"\n", Path::new("m.toml")).unwrap();
        assert_eq!(
            def.vm,
            VmSection {
                cpus: 2,
                memory_mib: 2048
            }
        );
        assert!(!def.disk.qcow2_compressed);
        let def = parse(
            "name = \"m\"\nformats = [\"qcow2\", \"ova\"]\n[vm]\ncpus = 4\nmemory = \"3GiB\"\n[disk]\nqcow2_compressed = true\n",
            Path::new("m.toml"),
        )
        .unwrap();
        assert_eq!(def.formats, [Format::Qcow2, Format::Ova]);
        assert_eq!(
            def.vm,
            VmSection {
                cpus: 4,
                memory_mib: 3072
            }
        );
        assert!(def.disk.qcow2_compressed);
        let e = parse_err("name = \"m\"\n[vm]\ncpus = 0\n");
        assert!(e.contains("`vm.cpus`: 0: use 1 to 128"), "{e}");
        let e = parse_err("name = \"m\"\n[vm]\nmemory = \"64MiB\"\n");
        assert!(e.contains("`vm.memory`"), "{e}");
        let e = parse_err("name = \"m\"\n[vm]\ndisks = 2\n");
        assert!(e.contains("disks"), "{e}");
    }

    #[test]
    fn vagrant_boxes_need_a_login_key() {
        let e = parse_err("name = \"m\"\nformats = [\"raw\", \"vagrant-libvirt\"]\n");
        assert!(e.contains("`formats`: format vagrant-libvirt needs a login key"), "{e}");
        assert!(e.contains("[ssh] authorized_keys"), "{e}");
        let def = parse(
            "name = \"m\"\nformats = [\"vagrant-virtualbox\"]\n[ssh]\nauthorized_keys = [\"ssh-ed25519 AAAA k\"]\n",
            Path::new("m.toml"),
        )
        .unwrap();
        assert_eq!(def.check_formats(&[Format::VagrantLibvirt]), Ok(()));
        let keyless = parse("name = \"m\"\n", Path::new("m.toml")).unwrap();
        assert_eq!(keyless.check_formats(&[Format::Qcow2, Format::Ova]), Ok(()));
        assert_eq!(
            keyless.check_formats(&[Format::VagrantVirtualbox]),
            Err(FormatsError::VagrantWithoutKey {
                format: Format::VagrantVirtualbox
            })
        );
        for format in Format::ALL {
            assert_eq!(Format::from_name(format.name()), Some(format));
        }
    }

    #[test]
    fn network_interfaces_are_parsed_and_checked_as_the_init_checks_them() {
        let def = parse(
            "name = \"m\"\n[network]\n[[network.interfaces]]\nname = \"eth1\"\naddress = \"192.168.56.2/24\"\n\
             dns = [\"192.168.56.1\"]\n[[network.interfaces]]\nmac = \"08:00:27:AA:BB:CC\"\n",
            Path::new("m.toml"),
        )
        .unwrap();
        let interfaces = def.network.unwrap().interfaces;
        assert_eq!(interfaces.len(), 2);
        assert_eq!(interfaces[0].name.as_deref(), Some("eth1"));
        assert_eq!(
            interfaces[0].address_and_prefix(),
            Some((std::net::Ipv4Addr::new(192, 168, 56, 2), 24))
        );
        assert_eq!(interfaces[0].dns, vec![std::net::Ipv4Addr::new(192, 168, 56, 1)]);
        assert_eq!(interfaces[1].mac_bytes(), Some([8, 0, 0x27, 0xaa, 0xbb, 0xcc]));
        assert_eq!(interfaces[1].address, None);
        for (entry, says) in [
            ("address = \"192.168.56.2/24\"", "exactly one of `name`"),
            ("name = \"eth1\"\naddress = \"192.168.56.2\"", "prefix length"),
            ("name = \"eth1\"\ngateway = \"192.168.56.1\"", "need a fixed `address`"),
            ("mac = \"08:00:27\"", "six hex pairs"),
            (
                "name = \"eth1\"\naddress = \"192.168.56.2/24\"\ndns = [\"dns.test\"]",
                "\"dns.test\" is not an IPv4",
            ),
        ] {
            let e = parse_err(&format!(
                "name = \"m\"\n[[network.interfaces]]\nname = \"eth0\"\n[[network.interfaces]]\n{entry}\n"
            ));
            assert!(
                e.starts_with("img.toml: `network.interfaces`: [[network.interfaces]] entry 2: ") && e.contains(says),
                "{entry}: {e}"
            );
        }
        let e = parse_err("name = \"m\"\n[[network.interfaces]]\nname = \"eth1\"\nmtu = 9000\n");
        assert!(e.contains("mtu"), "{e}");
    }

    const TWO_SERVICES: &str = r#"name = "m"
[[services]]
name = "containerd"
command = ["/usr/bin/containerd"]
ready = { unix = "/run/containerd/containerd.sock" }
restart = "always"
rlimits = { nofile = 1048576, core = "unlimited" }

[[services]]
name = "dockerd"
command = ["/usr/sbin/dockerd", "-H", "unix:///var/run/docker.sock"]
after = ["containerd"]
ready = { http_unix = "/var/run/docker.sock" }
"#;

    #[test]
    fn services_parse_with_readiness_restart_and_limits() {
        let def = parse(TWO_SERVICES, Path::new("m.toml")).unwrap();
        assert_eq!(def.services.len(), 2);
        let containerd = &def.services[0];
        assert_eq!(
            containerd.ready,
            Some(Readiness::Unix("/run/containerd/containerd.sock".into()))
        );
        assert_eq!(containerd.restart, RestartPolicy::Always);
        assert_eq!(containerd.rlimits["nofile"], RlimitValue::Value(1048576));
        assert_eq!(
            def.services[1].ready,
            Some(Readiness::HttpUnix("/var/run/docker.sock".into()))
        );
        assert_eq!(def.services[1].after, ["containerd"]);
        assert_eq!(def.services[1].restart, RestartPolicy::OnFailure);
    }

    #[test]
    fn bad_services_name_the_entry_and_key() {
        let cases = [
            ("name = \"m\"\n[[services]]\nname = \"a\"\ncommand = [\"sshd\"]\n", "services[0] (a).command`: program \"sshd\" is not an absolute path"),
            ("name = \"m\"\n[[services]]\nname = \"A b\"\ncommand = [\"/x\"]\n", "services[0] (A b).name"),
            ("name = \"m\"\n[[services]]\nname = \"a\"\ncommand = [\"/x\"]\nafter = [\"b\"]\n", "names \"b\", which is not another service"),
            ("name = \"m\"\n[[services]]\nname = \"a\"\ncommand = [\"/x\"]\nrlimits = { files = 3 }\n", "unknown limit \"files\""),
            ("name = \"m\"\n[[services]]\nname = \"a\"\ncommand = [\"/x\"]\nrlimits = { nofile = \"lots\" }\n", "nofile = \"lots\" is not a limit"),
            ("name = \"m\"\n[[services]]\nname = \"a\"\ncommand = [\"/x\"]\nrestart = \"sometimes\"\n", "sometimes"),
            ("name = \"m\"\n[[services]]\nname = \"a\"\ncommand = [\"/x\"]\nready = { udp = 53 }\n", "udp"),
            ("name = \"m\"\n[[services]]\nname = \"a\"\ncommand = [\"/x\"]\n[[services]]\nname = \"a\"\ncommand = [\"/y\"]\n", "services[1] (a).name`: is used by two services"),
            ("name = \"m\"\n[ssh]\nauthorized_keys = [\"hunter2\"]\n", "ssh.authorized_keys[0]"),
            ("name = \"m\"\n[preload]\nimages = [\"a.tar\"]\n", "preload.service"),
            ("name = \"m\"\n[[services]]\nname = \"dockerd\"\ncommand = [\"/d\"]\n[preload]\nimages = [\"a.tar\"]\nsocket = \"/s\"\ncommand = [\"/c\"]\n", "preload.socket`: and preload.command are both given"),
            ("name = \"m\"\n[[services]]\nname = \"dockerd\"\ncommand = [\"/d\"]\n[preload]\nimages = [\"a.tar\"]\nsocket = \"docker.sock\"\n", "preload.socket`: give the socket as an absolute path"),
            ("name = \"m\"\n[[packages]]\nname = \"containerd\"\ndefaults = \"no\"\n", "expected a boolean"),
        ];
        for (text, expected) in cases {
            let e = parse_err(text);
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }

    #[test]
    fn service_cycles_are_refused_with_the_path() {
        let text = "name = \"m\"\n[[services]]\nname = \"a\"\ncommand = [\"/a\"]\nafter = [\"c\"]\n\
                    [[services]]\nname = \"b\"\ncommand = [\"/b\"]\nafter = [\"a\"]\n\
                    [[services]]\nname = \"c\"\ncommand = [\"/c\"]\nafter = [\"b\"]\n";
        let e = parse_err(text);
        assert!(
            e.contains("services[0] (a).after`: forms a cycle (a -> c -> b -> a)"),
            "{e}"
        );
    }

    #[test]
    fn shipped_definitions_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
        for name in ["minimal.toml", "docker.toml"] {
            load(&dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn validation_gives_the_pipeline_ready_values() {
        let def = parse(
            "name = \"m\"\nfeatures = [\"containers\"]\ntargets = [\"qemu\"]\n\
             [[packages]]\nname = \"tool\"\n[[packages]]\nname = \"lib\"\ninclude = [\"/usr/lib/**\"]\nexclude = [\"*.a\"]\n\
             [[files]]\npath = \"/etc//motd\"\ncontents = \"hi\"\n[[files]]\npath = \"/srv\"\nmkdir = true\n\
             [disk]\nvhdx_block_size = \"32MiB\"\n",
            Path::new("m.toml"),
        )
        .unwrap();
        let names: Vec<&str> = def.kernel_features.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["base", "qemu", "containers"]);
        assert_eq!(def.files[0].path.to_string(), "/etc/motd");
        assert_eq!(def.files[0].kind, ExtraFileKind::Contents("hi".into()));
        assert_eq!(def.files[1].kind, ExtraFileKind::Mkdir);
        assert_eq!(def.disk.vhdx_block_size, 32 << 20);
        let (tool, lib) = (&def.packages[0], &def.packages[1]);
        assert_eq!(tool.include, DEFAULT_INCLUDE);
        assert!(tool.takes("/usr/sbin/tool") && tool.takes("/etc/tool/a.conf"));
        assert!(!tool.takes("/usr/lib/x/y") && !tool.takes("/usr/share/doc/tool/README"));
        assert!(lib.takes("/usr/lib/x/libx.so.1") && !lib.takes("/usr/lib/x/libx.a"));
        assert!(def.kernel.local.is_none());
    }

    #[test]
    fn a_local_kernel_needs_its_modules() {
        let e = parse_err("name = \"m\"\n[kernel]\npath = \"vmlinuz\"\n");
        assert!(
            e.contains("`kernel.modules_dir`") && e.contains("lib/modules/RELEASE"),
            "{e}"
        );
        let e = parse_err("name = \"m\"\n[kernel]\nconfig = \"config\"\n");
        assert!(e.contains("only goes with kernel.path"), "{e}");
        let def = parse(
            "name = \"m\"\n[kernel]\npath = \"vmlinuz\"\nmodules_dir = \"mods\"\n",
            Path::new("m.toml"),
        )
        .unwrap();
        let local = def.kernel.local.unwrap();
        assert_eq!(
            (local.image.as_path(), local.modules_dir.as_path()),
            (Path::new("vmlinuz"), Path::new("mods"))
        );
        assert_eq!(local.config, None);
    }

    #[test]
    fn the_boot_loader_defaults_to_shim_and_the_command_line_must_survive_grub() {
        let def = parse("name = \"m\"\nformats = [\"efi\", \"raw\"]\n", Path::new("m.toml")).unwrap();
        assert_eq!(def.boot.loader, EspLayout::Shim);
        assert!(def.boots_through_shim(&def.formats));
        assert!(!def.boots_through_shim(&[Format::Efi]));
        let def = parse(
            "name = \"m\"\ncmdline = \"a='b'\"\n[boot]\nloader = \"uki\"\n",
            Path::new("m.toml"),
        )
        .unwrap();
        assert_eq!(def.boot.loader, EspLayout::Uki);
        assert!(!def.boots_through_shim(&Format::ALL));
        let e = parse_err("name = \"m\"\ncmdline = \"a='b'\"\n");
        assert!(e.contains("`cmdline`") && e.contains("loader = \"uki\""), "{e}");
        let e = parse_err("name = \"m\"\ncmdline = 'a=\"b c'\n");
        assert!(e.contains("unbalanced"), "{e}");
        let e = parse_err("name = \"m\"\n[boot]\nloader = \"grub\"\n");
        assert!(e.contains("boot.loader") || e.contains("grub"), "{e}");
    }

    #[test]
    fn the_system_image_compression_is_zstd_unless_the_definition_asks_for_xz() {
        let def = parse("name = \"m\"\n", Path::new("m.toml")).unwrap();
        assert_eq!(def.init.system_compression, SystemCompression::Zstd);
        let def = parse(
            "name = \"m\"\n[init]\nsystem_compression = \"xz\"\n",
            Path::new("m.toml"),
        )
        .unwrap();
        assert_eq!(def.init.system_compression, SystemCompression::Xz);
        let e = parse_err("name = \"m\"\n[init]\nsystem_compression = \"gzip\"\n");
        assert!(
            e.contains("[init] system_compression = \"gzip\"") && e.contains("use \"zstd\" (the default) or \"xz\""),
            "{e}"
        );
    }
}
