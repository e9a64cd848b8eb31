//! From the parsed [`DefinitionFile`] to the validated [`ImageDefinition`], once: each phase
//! checks one part of the definition and returns it in the form the pipeline uses. A problem
//! is reported with the key it concerns and what is allowed there.

use super::file::{
    DefinitionFile, EspLayout, FileTable, KernelTable, MemoryTable, NetworkSection, PackageTable, VmTable,
};
use super::image::{
    DiskSection, ExtraFile, ExtraFileKind, ImageDefinition, KernelSection, LocalKernel, PackageSelection, VmSection,
    ALWAYS_EXCLUDE, DEFAULT_INCLUDE, DOCKER_DAEMON_JSON,
};
use super::kernel_config::{self, Feature};
use super::package_defaults::left_out_by_default;
use super::target::Format;
use super::units::check_disk_size;
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::path::{Component, Path};
use uvmkit_docker_config::DockerSection;
use uvmkit_filetree::TreePath;

/// A value that is not acceptable: the key (`disk.size`, `files[0] (/a)`) and why.
#[derive(Debug)]
pub(super) struct Invalid {
    pub(super) key: String,
    pub(super) message: String,
}

fn invalid(key: &str, message: String) -> Invalid {
    Invalid {
        key: key.to_string(),
        message,
    }
}

/// Validates every part of `file`, in the order the keys are documented.
pub(super) fn validate(file: DefinitionFile) -> Result<ImageDefinition, Invalid> {
    check_name(&file.name)?;
    check_hostname(&file.hostname)?;
    let mut kernel_features = check_targets_formats_features(&file)?;
    let memory = file.memory.as_ref().map(memory_section).transpose()?;
    if memory.as_ref().is_some_and(|m| m.zram.is_some()) {
        // The zram driver and swap support: the kernel must have them, and the module is loaded.
        let zram = kernel_config::feature(ZRAM_FEATURE).expect("kernel-config/zram.toml is compiled in");
        if !kernel_features.iter().any(|f| f.name == zram.name) {
            kernel_features.push(zram);
        }
    }
    check_initrd(file.initrd.compression_level)?;
    let disk_checked = check_disk(file.disk.size, file.disk.vhdx_block_size, &file.formats)?;
    if let Some(label) = &file.iso.volume_label {
        check_volume_label(label)?;
    }
    check_debian(&file.debian)?;
    if file.boot.loader == EspLayout::Shim {
        check_cmdline_for_grub(&file.cmdline)?;
    }
    let kernel = kernel_section(&file.kernel)?;
    let packages = file
        .packages
        .iter()
        .enumerate()
        .map(|(i, p)| package_selection(i, p))
        .collect::<Result<Vec<_>, _>>()?;
    let files = extra_files("files", &file.files)?;
    let data_files = extra_files("disk.data_files", &file.disk.data_files)?;
    let network = file.network.as_ref().map(network_section).transpose()?;
    if let Some(data) = &file.data_disk {
        check_binds(&data.binds)?;
    }
    check_services(&file)?;
    check_shares(&file.shares)?;
    let docker_daemon_json = docker_daemon_json(file.docker.as_ref(), &files)?;
    let vm = vm_section(&file.vm)?;
    let definition = ImageDefinition {
        name: file.name,
        hostname: file.hostname,
        cmdline: file.cmdline,
        targets: file.targets,
        features: file.features,
        kernel_features,
        formats: file.formats,
        debian: file.debian,
        kernel,
        packages,
        files,
        initrd: file.initrd,
        disk: DiskSection {
            size: file.disk.size,
            vhdx_block_size: disk_checked,
            vhdx_fixed: file.disk.vhdx_fixed,
            qcow2_compressed: file.disk.qcow2_compressed,
            data_files,
        },
        iso: file.iso,
        vm,
        boot: file.boot,
        init: file.init,
        network,
        data_disk: file.data_disk,
        services: file.services,
        ssh: file.ssh,
        preload: file.preload,
        docker_daemon_json,
        shares: file.shares,
        memory,
    };
    definition
        .check_formats(&definition.formats)
        .map_err(|e| invalid("formats", e.to_string()))?;
    Ok(definition)
}

/// The `kernel-config/` feature a `[memory] zram` size selects.
const ZRAM_FEATURE: &str = "zram";

/// `[memory]`: `zram` is a share of memory (1% to 100%) or a size of whole pages from 16MiB to
/// 1TiB, in the form the init reads back.
fn memory_section(memory: &MemoryTable) -> Result<uvmkit_init_config::MemorySection, Invalid> {
    let zram = memory
        .zram
        .as_deref()
        .map(|text| text.parse::<uvmkit_init_config::ZramSize>())
        .transpose()
        .map_err(|e| invalid("memory.zram", e.to_string()))?;
    Ok(uvmkit_init_config::MemorySection { zram })
}

/// `[vm]`: a plausible number of CPUs and a whole number of MiB of memory, enough for the
/// kernel and the initrd it unpacks.
fn vm_section(vm: &VmTable) -> Result<VmSection, Invalid> {
    if !(1..=128).contains(&vm.cpus) {
        return Err(invalid("vm.cpus", format!("{}: use 1 to 128", vm.cpus)));
    }
    if vm.memory < (128 << 20) || !vm.memory.is_multiple_of(1 << 20) || vm.memory > (1 << 40) {
        return Err(invalid(
            "vm.memory",
            format!(
                "{} bytes: use a whole number of MiB from 128MiB to 1TiB, such as \"2GiB\"",
                vm.memory
            ),
        ));
    }
    Ok(VmSection {
        cpus: vm.cpus,
        memory_mib: vm.memory >> 20,
    })
}

/// With `[boot] loader = "shim"`, GRUB's `linux` command hands the kernel the command line,
/// rebuilt from its arguments (grub-core/lib/cmdline.c): an argument with a space is wrapped in
/// double quotes, and GRUB releases before 2.12 also backslash-escape every `\\`, `'` and `"`.
/// So `foo="a b"` is re-expressed as one argument GRUB quotes again, while a backslash, a single
/// quote or an unbalanced double quote could reach the kernel changed.
fn check_cmdline_for_grub(cmdline: &str) -> Result<(), Invalid> {
    let refuse = |what: &str| {
        invalid(
            "cmdline",
            format!(
                "{what}, which GRUB would pass to the kernel changed; remove it, or set [boot] \
                 loader = \"uki\" (the UKI passes the command line as it is)"
            ),
        )
    };
    if let Some(c) = cmdline.chars().find(|c| matches!(c, '\\' | '\'')) {
        return Err(refuse(&format!("{cmdline:?} holds {c:?}")));
    }
    if cmdline.matches('"').count() % 2 != 0 {
        return Err(refuse(&format!("{cmdline:?} has an unbalanced '\"'")));
    }
    Ok(())
}

/// `[[shares]]`: checked by the rules the init applies when it reads them back.
fn check_shares(shares: &[uvmkit_init_config::ShareSection]) -> Result<(), Invalid> {
    let config = uvmkit_init_config::InitConfig {
        shares: shares.to_vec(),
        ..uvmkit_init_config::InitConfig::default()
    };
    config.check_base().map_err(|e| invalid("shares", e.to_string()))
}

/// `[docker]` as `daemon.json` text; a `[[files]]` entry for the same path would silently
/// replace it, so the two together are refused.
fn docker_daemon_json(docker: Option<&DockerSection>, files: &[ExtraFile]) -> Result<Option<String>, Invalid> {
    let Some(docker) = docker else {
        return Ok(None);
    };
    let daemon_json = TreePath::new(DOCKER_DAEMON_JSON).expect("an absolute path");
    if let Some(i) = files.iter().position(|f| f.path == daemon_json) {
        return Err(invalid(
            &format!("files[{i}].path"),
            format!("{DOCKER_DAEMON_JSON} is written from [docker]; set dockerd's options there, not in a file"),
        ));
    }
    docker
        .daemon_json()
        .map(Some)
        .map_err(|e| invalid("docker", e.to_string()))
}

/// `[debian]`: the release's other archives are named after it, so it must be a release name;
/// `security_mirror` only serves `security = true`; `backports` are package names.
fn check_debian(debian: &super::DebianSection) -> Result<(), Invalid> {
    let derived = debian.updates || debian.security || !debian.backports.is_empty();
    if derived && debian.suite.contains(['-', '/']) {
        return Err(invalid(
            "debian.suite",
            format!(
                "{:?} is not a release name; with updates, security or backports, name the release \
                 (\"bookworm\") and its -updates, -security and -backports suites follow from it",
                debian.suite
            ),
        ));
    }
    if debian.security_mirror.is_some() && !debian.security {
        return Err(invalid(
            "debian.security_mirror",
            "is set, but security = false takes nothing from the security archive; set security = true or remove it"
                .into(),
        ));
    }
    for (i, name) in debian.backports.iter().enumerate() {
        if !uvmkit_debian::control::valid_package_name(name) {
            return Err(invalid(
                &format!("debian.backports[{i}]"),
                format!("{name:?} is not a Debian package name (lowercase letters, digits, '+', '-', '.')"),
            ));
        }
    }
    Ok(())
}

/// `name` names the artifact files.
fn check_name(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.');
    if !ok {
        return Err(invalid(
            "name",
            format!("{name:?} must be letters, digits, '-', '_' or '.', as it names the artifact files"),
        ));
    }
    Ok(())
}

/// `hostname` is one DNS label (RFC 1123 section 2.1).
fn check_hostname(hostname: &str) -> Result<(), Invalid> {
    let ok = !hostname.is_empty()
        && hostname.len() <= 63
        && hostname.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !hostname.starts_with('-')
        && !hostname.ends_with('-');
    if !ok {
        return Err(invalid(
            "hostname",
            format!("{hostname:?} is not a valid host name (letters, digits and '-', at most 63)"),
        ));
    }
    Ok(())
}

/// `targets` and `formats` are not empty and every feature exists; returns the kernel features
/// the image selects.
fn check_targets_formats_features(file: &DefinitionFile) -> Result<Vec<&'static Feature>, Invalid> {
    if file.targets.is_empty() {
        return Err(invalid(
            "targets",
            "name at least one of \"hyperv\", \"vmware\", \"virtualbox\", \"qemu\"".into(),
        ));
    }
    if file.formats.is_empty() {
        return Err(invalid(
            "formats",
            format!("name at least one of {}", super::Format::names()),
        ));
    }
    for feature in &file.features {
        if kernel_config::feature(feature).is_none() {
            return Err(invalid(
                "features",
                format!(
                    "unknown feature {feature:?}; known: {}",
                    kernel_config::feature_names().join(", ")
                ),
            ));
        }
    }
    Ok(kernel_config::selected(&file.targets, &file.features))
}

fn check_initrd(level: i32) -> Result<(), Invalid> {
    if !(0..=19).contains(&level) {
        return Err(invalid(
            "initrd.compression_level",
            format!("{level} is outside 0..=19"),
        ));
    }
    Ok(())
}

/// `[disk] size` and `vhdx_block_size`; returns the block size as the VHDX writer takes it.
fn check_disk(size: u64, block_size: u64, formats: &[Format]) -> Result<u32, Invalid> {
    check_disk_size(size, formats).map_err(|e| invalid("disk.size", e.to_string()))?;
    // MS-VHDX 2.6.2.1: BlockSize is a power of two from 1 MB to 256 MB.
    if !block_size.is_power_of_two() || !((1 << 20)..=(256 << 20)).contains(&block_size) {
        return Err(invalid(
            "disk.vhdx_block_size",
            format!("{block_size} bytes: use a power of two from 1MiB to 256MiB"),
        ));
    }
    Ok(u32::try_from(block_size).expect("at most 256 MiB"))
}

/// ECMA-119 7.4.1: a volume identifier is at most 32 d-characters.
fn check_volume_label(label: &str) -> Result<(), Invalid> {
    if label.is_empty()
        || label.len() > 32
        || !label
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(invalid(
            "iso.volume_label",
            format!("{label:?}: use 1 to 32 of A-Z, 0-9 and _ (ISO 9660 d-characters)"),
        ));
    }
    Ok(())
}

/// `[kernel]`: `modules_dir` and `config` only go with `path`, and `path` needs `modules_dir`.
fn kernel_section(kernel: &KernelTable) -> Result<KernelSection, Invalid> {
    let local = match (kernel.path.clone(), kernel.modules_dir.clone(), kernel.config.clone()) {
        (None, None, None) => None,
        (None, _, _) => {
            return Err(invalid(
                "kernel.modules_dir",
                "only goes with kernel.path (a local kernel)".into(),
            ))
        }
        (Some(_), None, _) => {
            return Err(invalid(
                "kernel.modules_dir",
                "kernel.path needs modules_dir (the directory holding lib/modules/RELEASE)".into(),
            ))
        }
        (Some(image), Some(modules_dir), config) => Some(LocalKernel {
            image,
            modules_dir,
            config,
        }),
    };
    Ok(KernelSection {
        package: kernel.package.clone(),
        local,
        modules: kernel.modules.clone(),
    })
}

/// `[[packages]]` entry `i`: its globs compile.
fn package_selection(i: usize, p: &PackageTable) -> Result<PackageSelection, Invalid> {
    let key = format!("packages[{i}] ({})", p.name);
    let include: Vec<String> = p
        .include
        .clone()
        .unwrap_or_else(|| DEFAULT_INCLUDE.iter().map(|s| s.to_string()).collect());
    let exclude: Vec<String> = ALWAYS_EXCLUDE
        .iter()
        .map(|s| s.to_string())
        .chain(p.exclude.iter().cloned())
        .collect();
    // The defaults give way to the entry: `defaults = false`, or a path its include names.
    let left_out_by_default = if p.defaults {
        left_out_by_default(&p.name)
            .iter()
            .filter(|(path, _)| !include.iter().any(|glob| glob == path))
            .copied()
            .collect()
    } else {
        Vec::new()
    };
    Ok(PackageSelection {
        name: p.name.clone(),
        include_set: glob_set(&key, &include)?,
        exclude_set: glob_set(&key, &exclude)?,
        include,
        allow_setuid_and_devices: p.allow_setuid_and_devices,
        left_out_by_default,
    })
}

fn glob_set(key: &str, globs: &[String]) -> Result<GlobSet, Invalid> {
    let mut b = GlobSetBuilder::new();
    for glob in globs {
        b.add(Glob::new(glob).map_err(|e| invalid(key, format!("bad glob {glob:?}: {e}")))?);
    }
    b.build().map_err(|e| invalid(key, e.to_string()))
}

/// `[[files]]` or `[disk] data_files`: each entry makes exactly one thing at a path inside the
/// tree.
fn extra_files(section: &str, files: &[FileTable]) -> Result<Vec<ExtraFile>, Invalid> {
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let key = format!("{section}[{i}] ({})", f.path);
        let mut kinds = Vec::new();
        kinds.extend(f.contents.clone().map(ExtraFileKind::Contents));
        kinds.extend(f.source.clone().map(ExtraFileKind::Source));
        kinds.extend(f.directory.clone().map(ExtraFileKind::Directory));
        kinds.extend(f.symlink.clone().map(ExtraFileKind::Symlink));
        if f.mkdir {
            kinds.push(ExtraFileKind::Mkdir);
        }
        if kinds.len() != 1 {
            return Err(invalid(
                &key,
                "give exactly one of contents, source, directory, symlink or mkdir = true".into(),
            ));
        }
        let kind = kinds.remove(0);
        if let ExtraFileKind::Source(p) | ExtraFileKind::Directory(p) = &kind {
            if !stays_inside(p) {
                return Err(invalid(
                    &key,
                    format!(
                        "{:?} is absolute or leaves the definition's directory; copy the file beside the definition and name it by a relative path (host files outside it are never taken into an image)",
                        p.display().to_string()
                    ),
                ));
            }
        }
        let path = TreePath::new(&f.path)
            .ok()
            .filter(|_| f.path.starts_with('/'))
            .ok_or_else(|| {
                invalid(
                    &key,
                    "path must be absolute and stay inside the image (no '..' above /)".into(),
                )
            })?;
        out.push(ExtraFile {
            path,
            kind,
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
        });
    }
    Ok(out)
}

/// Whether a host path, relative to the definition's directory, stays inside it as written:
/// relative, and without `..` (symbolic links are followed when the definition is loaded).
pub(super) fn stays_inside(path: &Path) -> bool {
    !path.as_os_str().is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// `[network.static]`: an IPv4 address with prefix length, and IPv4 gateway and DNS servers.
/// The section in the init's own types (`uvmkit-init-config`), the addresses parsed.
fn network_section(network: &NetworkSection) -> Result<uvmkit_init_config::NetworkSection, Invalid> {
    let static_v4 = match &network.static_v4 {
        None => None,
        Some(s) => Some(static_network(s)?),
    };
    let interfaces = network
        .interfaces
        .iter()
        .enumerate()
        .map(|(i, entry)| interface_entry(i, entry))
        .collect::<Result<_, _>>()?;
    let section = uvmkit_init_config::NetworkSection {
        dhcp: network.dhcp,
        timeout: network.timeout,
        static_v4,
        interfaces,
    };
    // The init's own check, so the build refuses what the init would, in the same words.
    section
        .check_interfaces()
        .map_err(|e| invalid("network.interfaces", e.to_string()))?;
    Ok(section)
}

/// The `index`-th `[[network.interfaces]]` entry with its gateway and DNS servers parsed.
fn interface_entry(
    index: usize,
    entry: &super::file::InterfaceEntry,
) -> Result<uvmkit_init_config::InterfaceSection, Invalid> {
    let ipv4 = |ip: &String| {
        ip.parse::<std::net::Ipv4Addr>().map_err(|_| {
            invalid(
                "network.interfaces",
                format!(
                    "[[network.interfaces]] entry {}: {ip:?} is not an IPv4 address",
                    index + 1
                ),
            )
        })
    };
    Ok(uvmkit_init_config::InterfaceSection {
        name: entry.name.clone(),
        mac: entry.mac.clone(),
        address: entry.address.clone(),
        gateway: entry.gateway.as_ref().map(ipv4).transpose()?,
        dns: entry.dns.iter().map(ipv4).collect::<Result<_, _>>()?,
    })
}

/// `[network.static]`, checked and parsed.
fn static_network(s: &super::StaticNetwork) -> Result<uvmkit_init_config::StaticSection, Invalid> {
    let address_ok = s
        .address
        .split_once('/')
        .is_some_and(|(a, p)| a.parse::<std::net::Ipv4Addr>().is_ok() && p.parse::<u8>().is_ok_and(|p| p <= 32));
    if !address_ok {
        return Err(invalid(
            "network.static.address",
            format!(
                "{:?}: use an IPv4 address and prefix length, such as \"192.168.1.5/24\"",
                s.address
            ),
        ));
    }
    let ipv4 = |ip: &String| {
        ip.parse::<std::net::Ipv4Addr>()
            .map_err(|_| invalid("network.static", format!("{ip:?} is not an IPv4 address")))
    };
    Ok(uvmkit_init_config::StaticSection {
        address: s.address.clone(),
        gateway: s.gateway.as_ref().map(ipv4).transpose()?,
        dns: s.dns.iter().map(ipv4).collect::<Result<_, _>>()?,
    })
}

/// `[data_disk] binds`: plain absolute paths whose last components differ (each names its
/// directory on the data disk).
fn check_binds(binds: &[String]) -> Result<(), Invalid> {
    for (i, bind) in binds.iter().enumerate() {
        let path = Path::new(bind);
        let plain = path.is_absolute()
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        let name = path.file_name();
        let unique = binds[..i].iter().all(|other| Path::new(other).file_name() != name);
        if !plain || name.is_none() || !unique {
            return Err(invalid(
                &format!("data_disk.binds[{i}]"),
                format!("{bind:?}: use an absolute path without '..' whose last component no other entry shares (it names the directory on the data disk)"),
            ));
        }
    }
    Ok(())
}

/// `[[services]]`, `[ssh]` and `[preload]`: names, commands, ordering without cycles, limits.
fn check_services(def: &DefinitionFile) -> Result<(), Invalid> {
    let absolute = |p: &str| p.starts_with('/') && TreePath::new(p).is_ok();
    uvmkit_service_spec::check_services(&def.services).map_err(|err| {
        invalid(
            &format!("services[{}] ({}).{}", err.index, err.service, err.key),
            err.problem,
        )
    })?;
    if let Some(ssh) = &def.ssh {
        for (i, key) in ssh.authorized_keys.iter().enumerate() {
            let mut fields = key.split_whitespace();
            let kind = fields.next().unwrap_or("");
            let known = kind.starts_with("ssh-") || kind.starts_with("ecdsa-sha2-") || kind.starts_with("sk-");
            if !known || fields.next().is_none() || key.contains('\n') {
                return Err(invalid(
                    &format!("ssh.authorized_keys[{i}]"),
                    "give one public key per entry, as in a .pub file: \"ssh-ed25519 AAAA... comment\"".into(),
                ));
            }
        }
    }
    if let Some(preload) = &def.preload {
        if !def.services.iter().any(|s| s.name == preload.service) {
            return Err(invalid(
                "preload.service",
                format!(
                    "{:?} is not a service of this definition; images are loaded once it is ready",
                    preload.service
                ),
            ));
        }
        match (&preload.socket, &preload.command) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "preload.socket",
                    "and preload.command are both given; give the engine's API socket or a load command, not both"
                        .into(),
                ))
            }
            (Some(socket), None) if !absolute(socket) => {
                return Err(invalid(
                    "preload.socket",
                    "give the socket as an absolute path inside the image (/var/run/docker.sock)".into(),
                ))
            }
            (None, Some(command)) if !command.first().is_some_and(|p| absolute(p)) => {
                return Err(invalid(
                    "preload.command",
                    "give the program as an absolute path inside the image".into(),
                ))
            }
            _ => {}
        }
        for (i, image) in preload.images.iter().enumerate() {
            let name = Path::new(image).file_name();
            if name.is_none()
                || preload.images[..i]
                    .iter()
                    .any(|other| Path::new(other).file_name() == name)
            {
                return Err(invalid(
                    &format!("preload.images[{i}]"),
                    format!(
                        "{image:?}: each archive needs a file name of its own (they share one directory in the image)"
                    ),
                ));
            }
        }
    }
    Ok(())
}
