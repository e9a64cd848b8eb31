//! Per-instance settings, read at every boot: what makes one VM of a shared image its own.
//!
//! The settings come from a small volume attached as a disk or CD: a FAT or ISO 9660 file
//! system labelled `UVMKIT-CFG` holding `uvmkit.toml` (the types and checks of
//! `uvmkit_instance_config`), or else a NoCloud seed labelled `cidata` (see [`crate::nocloud`]),
//! and from the kernel command line (`uvmkit.hostname=NAME`, `uvmkit.settings=off`). The
//! image's configuration gives the defaults; every setting given here overrides it, and every
//! override is logged as `instance: WHAT OLD -> NEW`.
//!
//! All or nothing: the volume is read whole (the settings file, every file it names) and
//! checked before anything is applied, so a mistake anywhere (TOML syntax, an unknown key, a
//! missing certificate file) is logged naming the file and line, and the VM boots exactly as
//! the image says.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;
use uvmkit_docker_config::{merge_daemon_json, MergeError, MergedDaemonJson, DAEMON_JSON_PATH};
use uvmkit_identity::{read_certificates, IdentityError, PemCertificate};
use uvmkit_init_config::{InitConfig, InterfaceSection, NetworkSection, PreloadImage, PreloadSection};
use uvmkit_instance_config::{
    InstanceSettings, SettingsError, SshSettings, NOCLOUD_LABEL, SETTINGS_FILE, VOLUME_LABEL,
};

use crate::log;
use crate::nocloud::{self, NoCloudError, META_DATA, USER_DATA};
use crate::sys;

/// Where the settings volume is mounted, read-only, for the VM's lifetime (preloaded archives
/// are read from it once the engine is up).
pub const MOUNT_POINT: &str = "/run/uvmkit/settings";

/// The largest settings, seed or certificate file read (image archives have no limit).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The trust bundle of the image's `ca-certificates` package, which Go (dockerd), OpenSSL and
/// curl read.
pub const TRUST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// root's SSH keys; the image's `[ssh]` keys are already there.
pub const AUTHORIZED_KEYS: &str = "/root/.ssh/authorized_keys";

/// The CA file dockerd's `--tlscacert` points to when the instance gives a client CA: the VM's
/// own CA followed by the user's.
pub const CLIENT_CA_BUNDLE: &str = "/run/uvmkit/docker-client-ca.pem";

/// The dockerd flag naming the CAs whose client certificates are accepted.
const TLSCACERT: &str = "--tlscacert";

/// The engine's preload job when the image has none of its own (the shipped Docker image
/// preloads nothing, but a VM's settings may).
const DEFAULT_PRELOAD_SERVICE: &str = "dockerd";
/// dockerd's API socket, to which the archives are streamed (no docker command needed).
const DEFAULT_PRELOAD_SOCKET: &str = "/var/run/docker.sock";

/// What the kernel command line says about instance settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// `uvmkit.hostname=NAME`: overrides the image's and the volume's host name.
    pub hostname: Option<String>,
    /// `uvmkit.settings=off` turns the settings volume off (it is not even looked for).
    pub use_volume: bool,
    /// Arguments that could not be used, for the log.
    pub problems: Vec<String>,
}

impl Default for CommandLine {
    fn default() -> Self {
        CommandLine {
            hostname: None,
            use_volume: true,
            problems: Vec::new(),
        }
    }
}

/// Reads the `uvmkit.` arguments of a kernel command line (`/proc/cmdline`). SSH keys do not
/// fit there (they hold spaces, and the command line is short and often visible to every
/// process), so they come only from the volume.
pub fn parse_command_line(text: &str) -> CommandLine {
    let mut line = CommandLine::default();
    for arg in text.split_ascii_whitespace() {
        let Some((key, value)) = arg.split_once('=') else {
            continue;
        };
        match key {
            "uvmkit.hostname" => {
                let check = InstanceSettings {
                    hostname: Some(value.to_string()),
                    ..InstanceSettings::default()
                };
                match check.check() {
                    Ok(()) => line.hostname = Some(value.to_string()),
                    Err(err) => line.problems.push(format!(
                        "kernel command line uvmkit.hostname: {}",
                        err.to_string().trim_start_matches(&format!("{SETTINGS_FILE}: "))
                    )),
                }
            }
            "uvmkit.settings" => match value {
                "off" => line.use_volume = false,
                "on" => line.use_volume = true,
                other => line.problems.push(format!(
                    "kernel command line uvmkit.settings={other}: expected off or on; the volume is used"
                )),
            },
            _ if key.starts_with("uvmkit.") => line.problems.push(format!(
                "kernel command line {key}: not a uvmkit setting (uvmkit.hostname, uvmkit.settings); ignored"
            )),
            _ => {}
        }
    }
    line
}

/// Which file system a volume holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    /// FAT12, FAT16 or FAT32.
    Fat,
    /// ISO 9660 (a CD image).
    Iso9660,
}

impl FsType {
    /// The kernel's name for it, as mount(2) takes it.
    pub fn kernel_name(self) -> &'static str {
        match self {
            FsType::Fat => "vfat",
            FsType::Iso9660 => "iso9660",
        }
    }

    /// Mount options: long FAT names decoded as UTF-8 with code page 437 short names (the
    /// modules base.toml loads), not the kernel's compiled-in defaults, which may name an NLS
    /// module the image lacks.
    fn options(self) -> Option<&'static str> {
        match self {
            FsType::Fat => Some("codepage=437,iocharset=utf8"),
            FsType::Iso9660 => None,
        }
    }
}

/// Which kind of settings a volume carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    /// uvmkit's own, labelled [`VOLUME_LABEL`].
    Settings,
    /// A NoCloud seed, labelled [`NOCLOUD_LABEL`].
    NoCloud,
}

/// Bytes of a device [`volume_label`] needs: through the ISO 9660 primary volume descriptor.
pub const LABEL_PROBE_BYTES: usize = 16 * 2048 + 2048;

/// The file system and label of a volume, from its first [`LABEL_PROBE_BYTES`] bytes.
///
/// FAT: the boot sector's extended BPB (Microsoft "FAT: General Overview of On-Disk Format",
/// section 3): `BS_BootSig` 0x29 then the 11-byte `BS_VolLab`, at offsets 38/43 for FAT12/16
/// and 66/71 for FAT32 (whose `BPB_FATSz16` at offset 22 is 0), `BS_FilSysType` starting
/// "FAT", and 0x55 0xAA at 510. ISO 9660: the primary volume descriptor in sector 16 (ECMA-119
/// 8.4): type 1, "CD001", the 32-byte volume identifier at offset 40.
pub fn volume_label(head: &[u8]) -> Option<(FsType, String)> {
    let pvd = head.get(16 * 2048..17 * 2048);
    if let Some(pvd) = pvd.filter(|p| p[0] == 1 && &p[1..6] == b"CD001") {
        return Some((FsType::Iso9660, trimmed(&pvd[40..72])?));
    }
    let boot = head.get(..512)?;
    if boot[510..512] != [0x55, 0xAA] {
        return None;
    }
    let fat32 = u16::from_le_bytes([boot[22], boot[23]]) == 0;
    let (signature, label, kind) = if fat32 { (66, 71, 82) } else { (38, 43, 54) };
    if boot[signature] != 0x29 || !boot[kind..kind + 8].starts_with(b"FAT") {
        return None;
    }
    let label = trimmed(&boot[label..label + 11])?;
    (label != "NO NAME").then_some((FsType::Fat, label))
}

/// Space-padded text, `None` when empty or not UTF-8.
fn trimmed(field: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(field).ok()?.trim_end_matches([' ', '\0']);
    (!text.is_empty()).then(|| text.to_string())
}

/// Which kind of volume a label names: FAT stores labels in upper case and cloud-init accepts
/// `CIDATA` too, so both compare without case.
pub fn kind_of(label: &str) -> Option<VolumeKind> {
    if label.eq_ignore_ascii_case(VOLUME_LABEL) {
        Some(VolumeKind::Settings)
    } else if label.eq_ignore_ascii_case(NOCLOUD_LABEL) {
        Some(VolumeKind::NoCloud)
    } else {
        None
    }
}

/// A settings volume found on a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Its device node (`/dev/vdb`, `/dev/sr0`).
    pub device: PathBuf,
    /// Its file system.
    pub fs: FsType,
    /// Its kind.
    pub kind: VolumeKind,
}

/// Looks once through `/sys/class/block` (disks, partitions and CD drives) for a settings
/// volume; a uvmkit one wins over a NoCloud seed. Call it after storage has been waited for.
pub fn find_volume() -> Option<Volume> {
    let mut names: Vec<String> = fs::read_dir("/sys/class/block")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.sort();
    names.retain(|n| !(n.starts_with("loop") || n.starts_with("ram") || n.starts_with("zram")));
    let mut found: Vec<Volume> = names
        .iter()
        .filter_map(|name| {
            let device = PathBuf::from("/dev").join(name);
            // A CD drive without a disc fails to open (ENOMEDIUM): no volume there.
            let file = File::open(&device).ok()?;
            let mut head = vec![0u8; LABEL_PROBE_BYTES];
            let read = file.read_at(&mut head, 0).ok()?;
            head.truncate(read);
            let (fs, label) = volume_label(&head)?;
            Some(Volume {
                device,
                fs,
                kind: kind_of(&label)?,
            })
        })
        .collect();
    found.sort_by_key(|v| v.kind != VolumeKind::Settings);
    found.into_iter().next()
}

/// Why a settings volume cannot be used; the VM then boots with the image's settings.
#[derive(Debug, Error)]
pub enum InstanceError {
    /// The file system could not be mounted.
    #[error(
        "cannot mount {} ({}) read-only: {source}; check that it holds a FAT or ISO 9660 file system",
        .device.display(), .fs
    )]
    Mount {
        /// The device.
        device: PathBuf,
        /// The file system type tried.
        fs: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// A file on the volume could not be read.
    #[error("cannot read {file} on the settings volume: {source}")]
    Read {
        /// The file, relative to the volume's root.
        file: String,
        /// The cause.
        source: io::Error,
    },
    /// A file is larger than [`MAX_FILE_BYTES`].
    #[error("{file} on the settings volume is larger than {MAX_FILE_BYTES} bytes; is it the right file?")]
    TooLarge {
        /// The file.
        file: String,
    },
    /// A text file is not UTF-8.
    #[error("{file} on the settings volume is not UTF-8 text")]
    NotText {
        /// The file.
        file: String,
    },
    /// `uvmkit.toml` is malformed or holds a bad value (the message names line and key).
    #[error("{0}")]
    Settings(#[from] SettingsError),
    /// The NoCloud seed is malformed.
    #[error("{0}")]
    NoCloud(#[from] NoCloudError),
    /// The NoCloud seed gives a bad host name or key.
    #[error("NoCloud seed: {0}")]
    NoCloudValue(SettingsError),
    /// A certificate file named by `[tls]` holds no readable certificate.
    #[error("{SETTINGS_FILE}: [tls] {key} {}: {source}", .path.display())]
    Certificates {
        /// `client_ca` or `ca_certificates`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it cannot be used (boxed: it is large, and errors are rare).
        source: Box<IdentityError>,
    },
    /// A `[preload]` archive is missing or not a file.
    #[error("{SETTINGS_FILE}: [preload] images {}: {problem}", .path.display())]
    Preload {
        /// The archive, relative to the volume's root.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The image cannot load archives: no `[preload]` and no dockerd.
    #[error(
        "{SETTINGS_FILE}: [preload] images: the image has no [preload] job and no {DEFAULT_PRELOAD_SERVICE} service \
         to load them with; drop [preload] or add a [preload] section to the image"
    )]
    NoPreloadJob,
    /// The `[docker]` settings cannot be merged with the image's.
    #[error("{SETTINGS_FILE}: [docker]: {0}")]
    Docker(MergeError),
    /// `[tls] client_ca` was given but no service of the image takes `--tlscacert`.
    #[error("{SETTINGS_FILE}: [tls] client_ca: no service of the image passes {TLSCACERT} (a dockerd with TLS), so no client CA can be added")]
    NoTlsService,
}

/// A settings volume read whole and checked: what [`apply`] applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Where the settings came from, for the log (`uvmkit.toml on /dev/vdb (vfat)`).
    pub source: String,
    /// The settings.
    pub settings: InstanceSettings,
    /// The certificates of `[tls] client_ca`.
    pub client_ca: Vec<PemCertificate>,
    /// The certificates of `[tls] ca_certificates`, with the file each came from.
    pub ca_certificates: Vec<(PathBuf, PemCertificate)>,
    /// The `[preload]` archives as the preload job takes them (absolute paths, sha256).
    pub preload: Vec<PreloadImage>,
    /// The merged `daemon.json`, when `[docker]` is given.
    pub daemon_json: Option<MergedDaemonJson>,
    /// Lines for the log about what was not used (NoCloud keys).
    pub notes: Vec<String>,
}

/// Mounts `volume` read-only at [`MOUNT_POINT`] and reads it whole; the image's configuration
/// is needed to check what depends on it (`[docker]` against its daemon.json, the client CA
/// against its services). The volume stays mounted (preload reads from it); on an error it is
/// unmounted again.
pub fn load(volume: &Volume, config: &InitConfig) -> Result<Loaded, InstanceError> {
    let root = Path::new(MOUNT_POINT);
    let mount_error = |source| InstanceError::Mount {
        device: volume.device.clone(),
        fs: volume.fs.kernel_name(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(root)
        .map_err(mount_error)?;
    let device = volume.device.to_string_lossy();
    sys::mount(
        Some(&device),
        root,
        Some(volume.fs.kernel_name()),
        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        volume.fs.options(),
    )
    .map_err(mount_error)?;
    let daemon_json = match fs::read_to_string(DAEMON_JSON_PATH) {
        Ok(text) => Some(text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(source) => {
            let _ = sys::umount(root, 0);
            return Err(InstanceError::Read {
                file: DAEMON_JSON_PATH.to_string(),
                source,
            });
        }
    };
    let source = format!(
        "{} on {} ({})",
        match volume.kind {
            VolumeKind::Settings => SETTINGS_FILE,
            VolumeKind::NoCloud => "NoCloud seed",
        },
        volume.device.display(),
        volume.fs.kernel_name()
    );
    let loaded = match volume.kind {
        VolumeKind::Settings => read_settings_volume(root, config, daemon_json.as_deref()),
        VolumeKind::NoCloud => read_nocloud_volume(root),
    };
    match loaded {
        Ok(mut loaded) => {
            loaded.source = source;
            Ok(loaded)
        }
        Err(err) => {
            let _ = sys::umount(root, 0);
            Err(err)
        }
    }
}

/// Reads a file of at most [`MAX_FILE_BYTES`]; `Ok(None)` when it does not exist.
fn read_small(root: &Path, name: &Path) -> Result<Option<Vec<u8>>, InstanceError> {
    let file_name = name.display().to_string();
    let read_error = |source| InstanceError::Read {
        file: file_name.clone(),
        source,
    };
    let file = match File::open(root.join(name)) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(read_error(err)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(InstanceError::TooLarge { file: file_name });
    }
    Ok(Some(bytes))
}

fn read_text(root: &Path, name: &Path) -> Result<Option<String>, InstanceError> {
    read_small(root, name)?
        .map(|bytes| {
            String::from_utf8(bytes).map_err(|_| InstanceError::NotText {
                file: name.display().to_string(),
            })
        })
        .transpose()
}

/// A file the settings name must exist.
fn required_text(root: &Path, name: &Path) -> Result<String, InstanceError> {
    read_text(root, name)?.ok_or_else(|| InstanceError::Read {
        file: name.display().to_string(),
        source: io::Error::new(
            io::ErrorKind::NotFound,
            "it is named in uvmkit.toml but not on the volume",
        ),
    })
}

/// Reads `uvmkit.toml` and every file it names from the volume mounted at `root`.
pub fn read_settings_volume(
    root: &Path,
    config: &InitConfig,
    image_daemon_json: Option<&str>,
) -> Result<Loaded, InstanceError> {
    let text = required_text(root, Path::new(SETTINGS_FILE)).map_err(|err| match err {
        InstanceError::Read { file, source } if source.kind() == io::ErrorKind::NotFound => InstanceError::Read {
            file,
            source: io::Error::new(
                io::ErrorKind::NotFound,
                "the volume is labelled UVMKIT-CFG but has no such file",
            ),
        },
        other => other,
    })?;
    let settings = InstanceSettings::parse(&text)?;
    let mut loaded = Loaded::default();
    if let Some(tls) = &settings.tls {
        if let Some(path) = &tls.client_ca {
            let pem = required_text(root, path)?;
            loaded.client_ca =
                read_certificates(&pem, &path.display().to_string()).map_err(|source| InstanceError::Certificates {
                    key: "client_ca",
                    path: path.clone(),
                    source: Box::new(source),
                })?;
            if !config.services.iter().any(|s| tlscacert_position(&s.command).is_some()) {
                return Err(InstanceError::NoTlsService);
            }
        }
        for path in &tls.ca_certificates {
            let pem = required_text(root, path)?;
            let certs =
                read_certificates(&pem, &path.display().to_string()).map_err(|source| InstanceError::Certificates {
                    key: "ca_certificates",
                    path: path.clone(),
                    source: Box::new(source),
                })?;
            loaded
                .ca_certificates
                .extend(certs.into_iter().map(|c| (path.clone(), c)));
        }
    }
    if let Some(preload) = &settings.preload {
        if !preload.images.is_empty() && config.preload.is_none() && !has_default_preload_job(config) {
            return Err(InstanceError::NoPreloadJob);
        }
        for path in &preload.images {
            loaded.preload.push(PreloadImage {
                path: Path::new(MOUNT_POINT).join(path),
                sha256: hash_archive(&root.join(path)).map_err(|problem| InstanceError::Preload {
                    path: path.clone(),
                    problem,
                })?,
            });
        }
    }
    if let Some(docker) = &settings.docker {
        loaded.daemon_json = Some(merge_daemon_json(image_daemon_json, docker).map_err(InstanceError::Docker)?);
    }
    loaded.settings = settings;
    Ok(loaded)
}

/// Reads a NoCloud seed (`meta-data`, optional `user-data`) from the volume mounted at `root`.
pub fn read_nocloud_volume(root: &Path) -> Result<Loaded, InstanceError> {
    let meta = read_text(root, Path::new(META_DATA))?.unwrap_or_default();
    let user = read_text(root, Path::new(USER_DATA))?;
    let seed = nocloud::parse_seed(&meta, user.as_deref())?;
    let settings = InstanceSettings {
        hostname: seed.hostname,
        ssh: (!seed.ssh_authorized_keys.is_empty()).then_some(SshSettings {
            authorized_keys: seed.ssh_authorized_keys,
        }),
        ..InstanceSettings::default()
    };
    settings.check().map_err(InstanceError::NoCloudValue)?;
    let mut notes: Vec<String> = seed
        .ignored
        .into_iter()
        .map(|what| format!("NoCloud seed: {what} not used"))
        .collect();
    if let Some(id) = seed.instance_id {
        notes.insert(0, format!("NoCloud seed: instance-id {id}"));
    }
    Ok(Loaded {
        settings,
        notes,
        ..Loaded::default()
    })
}

/// The SHA-256 of an archive (it names the marker that says it was loaded).
fn hash_archive(path: &Path) -> Result<String, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot be opened: {e}"))?;
    if !file.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err("is not a file".into());
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) => return Err(format!("cannot be read: {e}")),
        }
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether the image can load archives without a `[preload]` of its own: it runs dockerd, whose
/// API socket takes them.
fn has_default_preload_job(config: &InitConfig) -> bool {
    config.services.iter().any(|s| s.name == DEFAULT_PRELOAD_SERVICE)
}

/// Where in `command` the CA file of `--tlscacert` is: the index of the argument holding it and
/// whether it is `--tlscacert=PATH` (true) or the argument after `--tlscacert` (false).
fn tlscacert_position(command: &[String]) -> Option<(usize, bool)> {
    command.iter().enumerate().find_map(|(i, arg)| {
        if arg.starts_with(&format!("{TLSCACERT}=")) {
            Some((i, true))
        } else if arg == TLSCACERT && i + 1 < command.len() {
            Some((i + 1, false))
        } else {
            None
        }
    })
}

/// A `[[network.interfaces]]` entry as the log shows it.
fn describe_interface(entry: &InterfaceSection) -> String {
    let mut text = entry.address.clone().unwrap_or_else(|| "dhcp".to_string());
    if let Some(gateway) = entry.gateway {
        text.push_str(&format!(" via {gateway}"));
    }
    if !entry.dns.is_empty() {
        let dns: Vec<String> = entry.dns.iter().map(ToString::to_string).collect();
        text.push_str(&format!(" dns {}", dns.join(",")));
    }
    text
}

/// The interface an entry picks, for the log.
fn interface_name(entry: &InterfaceSection) -> String {
    entry.name.clone().or_else(|| entry.mac.clone()).unwrap_or_default()
}

/// Whether two entries pick the same interface (the same name, or the same MAC address).
fn same_interface(a: &InterfaceSection, b: &InterfaceSection) -> bool {
    match (&a.name, &b.name) {
        (Some(x), Some(y)) => x == y,
        _ => a.mac_bytes().is_some() && a.mac_bytes() == b.mac_bytes(),
    }
}

/// What the client CA needs after the identity exists: the CA file each rewritten service
/// pointed to (the VM's own CA), and the user's certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCa {
    /// The VM's CA file, the original `--tlscacert` value.
    pub vm_ca: PathBuf,
    /// The user's CA certificates.
    pub user: Vec<PemCertificate>,
}

/// Applies what changes the init's own configuration: host name (the command line's over the
/// volume's), network interfaces, preload archives, dockerd's `--tlscacert`. Returns the log
/// lines, one per override, and what [`write_client_ca_bundle`] needs once the identity exists.
pub fn merge_into_config(
    config: &mut InitConfig,
    loaded: &Loaded,
    command_line: &CommandLine,
) -> (Vec<String>, Option<ClientCa>) {
    let mut lines = Vec::new();
    let hostname = [
        (command_line.hostname.as_ref(), " (kernel command line)"),
        (loaded.settings.hostname.as_ref(), ""),
    ]
    .into_iter()
    .find_map(|(name, from)| Some((name?, from)));
    if let Some((name, from)) = hostname {
        if *name != config.hostname {
            lines.push(format!("hostname {} -> {name}{from}", config.hostname));
            config.hostname = name.clone();
        }
    }

    let given = loaded
        .settings
        .network
        .as_ref()
        .map(|n| n.interfaces.as_slice())
        .unwrap_or_default();
    if !given.is_empty() {
        // An image without [network] keeps its other interfaces down: only the ones given here
        // come up.
        let network = config.network.get_or_insert_with(|| NetworkSection {
            dhcp: false,
            ..NetworkSection::default()
        });
        for entry in given {
            let name = interface_name(entry);
            match network.interfaces.iter_mut().find(|e| same_interface(e, entry)) {
                Some(old) => {
                    lines.push(format!(
                        "network {name} {} -> {}",
                        describe_interface(old),
                        describe_interface(entry)
                    ));
                    *old = entry.clone();
                }
                None => {
                    lines.push(format!("network {name} {} (added)", describe_interface(entry)));
                    network.interfaces.push(entry.clone());
                }
            }
        }
    }

    if !loaded.preload.is_empty() {
        let preload = config.preload.get_or_insert_with(|| PreloadSection {
            after: DEFAULT_PRELOAD_SERVICE.to_string(),
            socket: Some(DEFAULT_PRELOAD_SOCKET.into()),
            command: Vec::new(),
            images: Vec::new(),
        });
        for image in &loaded.preload {
            lines.push(format!("preload {} (added)", image.path.display()));
            preload.images.push(image.clone());
        }
    }

    let mut client_ca = None;
    if !loaded.client_ca.is_empty() {
        for service in &mut config.services {
            let Some((i, inline)) = tlscacert_position(&service.command) else {
                continue;
            };
            let old = if inline {
                service.command[i][TLSCACERT.len() + 1..].to_string()
            } else {
                service.command[i].clone()
            };
            service.command[i] = if inline {
                format!("{TLSCACERT}={CLIENT_CA_BUNDLE}")
            } else {
                CLIENT_CA_BUNDLE.to_string()
            };
            let subjects: Vec<&str> = loaded.client_ca.iter().map(|c| c.subject.as_str()).collect();
            lines.push(format!(
                "{} {TLSCACERT} {old} -> {CLIENT_CA_BUNDLE} (the VM's CA and {})",
                service.name,
                subjects.join("; ")
            ));
            client_ca.get_or_insert(ClientCa {
                vm_ca: PathBuf::from(old),
                user: loaded.client_ca.clone(),
            });
        }
    }
    (lines, client_ca)
}

/// Adds `keys` to the authorized keys file at `path` (made 0600, its directory 0700), leaving
/// out keys already there; returns the keys added.
pub fn add_authorized_keys(path: &Path, keys: &[String]) -> io::Result<Vec<String>> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let existing = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err),
    };
    let present: Vec<&str> = existing.lines().map(str::trim).collect();
    let added: Vec<String> = keys
        .iter()
        .map(|k| k.trim().to_string())
        .filter(|k| !present.contains(&k.as_str()))
        .collect();
    let mut text = existing.clone();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for key in &added {
        text.push_str(key);
        text.push('\n');
    }
    write_file(path, text.as_bytes(), 0o600)?;
    Ok(added)
}

/// The trust bundle with `extra` certificates appended. When the image has no bundle (its
/// `ca-certificates` package was never configured, which is what writes it), it is first made
/// as `update-ca-certificates` makes it: the certificates `conf` lists (lines not starting
/// with `#` or `!`), read from `share`.
pub fn extended_trust_bundle(
    bundle: &Path,
    conf: &Path,
    share: &Path,
    extra: &[(PathBuf, PemCertificate)],
) -> io::Result<String> {
    let mut text = match fs::read_to_string(bundle) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let mut text = String::new();
            let list = fs::read_to_string(conf).unwrap_or_default();
            for name in list.lines().map(str::trim) {
                if name.is_empty() || name.starts_with('#') || name.starts_with('!') {
                    continue;
                }
                if let Ok(cert) = fs::read_to_string(share.join(name)) {
                    text.push_str(&cert);
                    if !text.ends_with('\n') {
                        text.push('\n');
                    }
                }
            }
            text
        }
        Err(err) => return Err(err),
    };
    for (_, cert) in extra {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&cert.pem);
    }
    Ok(text)
}

/// Writes dockerd's CA bundle: the VM's own CA (so the VM's client bundle keeps working)
/// followed by the user's CAs.
pub fn write_client_ca_bundle(client_ca: &ClientCa, out: &Path) -> io::Result<()> {
    let mut text = fs::read_to_string(&client_ca.vm_ca)?;
    for cert in &client_ca.user {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&cert.pem);
    }
    if let Some(dir) = out.parent() {
        fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    }
    write_file(out, text.as_bytes(), 0o644)
}

/// Writes `path` whole through a temporary file and a rename, so a reader never sees half.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension("uvmkit-new");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    drop(file);
    fs::rename(&tmp, path)
}

/// Finds, reads and applies the instance settings, before the network and services start;
/// logs every override and every problem. Returns what is left for after the identity exists.
pub fn apply(config: &mut InitConfig, command_line: &CommandLine) -> Option<ClientCa> {
    for problem in &command_line.problems {
        log!("instance: {problem}");
    }
    let loaded = if command_line.use_volume {
        match find_volume() {
            Some(volume) => match load(&volume, config) {
                Ok(loaded) => Some(loaded),
                Err(err) => {
                    log!("instance: {err}");
                    log!(
                        "instance: settings volume {} not used; booting with the image's settings",
                        volume.device.display()
                    );
                    None
                }
            },
            None => None,
        }
    } else {
        log!("instance: settings volume off (uvmkit.settings=off)");
        None
    };
    let mut loaded = loaded.unwrap_or_default();
    // VMware's guestinfo.uvmkit.* variables, where the VM has them; `uvmkit.settings=off`
    // turns every outside source off, this one too.
    if command_line.use_volume {
        crate::host_agent::add_vmware_settings(&mut loaded);
    }
    if !loaded.source.is_empty() {
        log!("instance: settings from {}", loaded.source);
    }
    for note in &loaded.notes {
        log!("instance: {note}");
    }
    let (lines, client_ca) = merge_into_config(config, &loaded, command_line);
    for line in lines {
        log!("instance: {line}");
    }
    if let Some(ssh) = &loaded.settings.ssh {
        match add_authorized_keys(Path::new(AUTHORIZED_KEYS), &ssh.authorized_keys) {
            Ok(added) => {
                for key in added {
                    let fingerprint = uvmkit_identity::fingerprint_sha256(&key).unwrap_or_default();
                    let comment = key.split_ascii_whitespace().nth(2).unwrap_or("");
                    log!("instance: ssh key {fingerprint} {comment} (added to {AUTHORIZED_KEYS})");
                }
            }
            Err(err) => log!("instance: cannot write {AUTHORIZED_KEYS}: {err}"),
        }
    }
    if let Some(merged) = &loaded.daemon_json {
        // An image without [docker] has no daemon.json, nor its directory.
        let path = Path::new(DAEMON_JSON_PATH);
        let written = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path.parent().expect("an absolute path"))
            .and_then(|()| write_file(path, merged.text.as_bytes(), 0o644));
        match written {
            Ok(()) => {
                for change in &merged.changes {
                    log!(
                        "instance: docker {} {} -> {}",
                        change.key,
                        change.before.as_deref().unwrap_or("(unset)"),
                        change.after
                    );
                }
            }
            Err(err) => log!("instance: cannot write {DAEMON_JSON_PATH}: {err}"),
        }
    }
    if !loaded.ca_certificates.is_empty() {
        let bundle = Path::new(TRUST_BUNDLE);
        let written = extended_trust_bundle(
            bundle,
            Path::new("/etc/ca-certificates.conf"),
            Path::new("/usr/share/ca-certificates"),
            &loaded.ca_certificates,
        )
        .and_then(|text| {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(bundle.parent().expect("an absolute path"))?;
            write_file(bundle, text.as_bytes(), 0o644)
        });
        match written {
            Ok(()) => {
                for (path, cert) in &loaded.ca_certificates {
                    log!(
                        "instance: trusted CA {} (SHA256 Fingerprint={}) from {} (added to {TRUST_BUNDLE})",
                        cert.subject,
                        cert.fingerprint,
                        path.display()
                    );
                }
            }
            Err(err) => log!("instance: cannot write {TRUST_BUNDLE}: {err}"),
        }
    }
    client_ca
}

/// After the identity exists: writes dockerd's client CA bundle, logged.
pub fn finish(client_ca: &ClientCa) {
    match write_client_ca_bundle(client_ca, Path::new(CLIENT_CA_BUNDLE)) {
        Ok(()) => log!(
            "instance: dockerd accepts clients of the VM's CA and {} more CA(s): {}",
            client_ca.user.len(),
            client_ca
                .user
                .iter()
                .map(|c| format!("{} (SHA256 Fingerprint={})", c.subject, c.fingerprint))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(err) => log!(
            "instance: cannot write {CLIENT_CA_BUNDLE} from {}: {err}; dockerd will not start with TLS",
            client_ca.vm_ca.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;
    use std::os::unix::fs::MetadataExt;
    use std::time::SystemTime;
    use uvmkit_identity::{create_ca, issue_client_cert};

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm6dKfh1uXH4x6mF4xX1b8Y3lY2x6sWqQeQzC6b7Z1E user@laptop";

    /// A fresh directory under the system's temp directory.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("uvmkit-instance-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The image's configuration as the builder writes it for the Docker image.
    fn image_config() -> InitConfig {
        toml::from_str(
            r#"
hostname = "docker"

[network]
dhcp = true

[[network.interfaces]]
name = "eth1"

[[network.interfaces]]
name = "eth2"
address = "10.9.0.2/24"

[[services]]
name = "dockerd"
command = ["/usr/sbin/dockerd", "-H", "tcp://0.0.0.0:2376", "--tlsverify", "--tlscacert=/var/lib/uvmkit/identity/tls/ca.pem"]
"#,
        )
        .unwrap()
    }

    fn ca_pem(name: &str) -> String {
        create_ca(&mut OsRng, name, SystemTime::now(), 10).unwrap().cert_pem
    }

    #[test]
    fn command_line_gives_hostname_and_turns_the_volume_off() {
        let line = parse_command_line("console=ttyS0 uvmkit.hostname=vm-3 quiet uvmkit.settings=off");
        assert_eq!(line.hostname.as_deref(), Some("vm-3"));
        assert!(!line.use_volume);
        assert!(line.problems.is_empty());
        assert_eq!(parse_command_line("quiet"), CommandLine::default());
        let line = parse_command_line("uvmkit.hostname=bad/name uvmkit.settings=maybe uvmkit.ssh_key=x");
        assert_eq!(line.hostname, None);
        assert!(line.use_volume);
        assert_eq!(line.problems.len(), 3, "{:?}", line.problems);
        assert!(line.problems[0].starts_with("kernel command line uvmkit.hostname: hostname \"bad/name\""));
        assert!(line.problems[1].contains("expected off or on"));
        assert!(line.problems[2].contains("uvmkit.ssh_key: not a uvmkit setting"));
    }

    /// A FAT16 boot sector with `label`, as the Microsoft FAT specification lays it out.
    fn fat16_boot_sector(label: &[u8; 11]) -> Vec<u8> {
        let mut head = vec![0u8; LABEL_PROBE_BYTES];
        head[11..13].copy_from_slice(&512u16.to_le_bytes());
        head[22..24].copy_from_slice(&32u16.to_le_bytes());
        head[38] = 0x29;
        head[43..54].copy_from_slice(label);
        head[54..62].copy_from_slice(b"FAT16   ");
        head[510] = 0x55;
        head[511] = 0xAA;
        head
    }

    #[test]
    fn labels_of_fat_and_iso_9660_volumes() {
        let head = fat16_boot_sector(b"UVMKIT-CFG ");
        assert_eq!(volume_label(&head), Some((FsType::Fat, "UVMKIT-CFG".into())));
        assert_eq!(volume_label(&fat16_boot_sector(b"NO NAME    ")), None);
        let mut iso = vec![0u8; LABEL_PROBE_BYTES];
        iso[32768] = 1;
        iso[32769..32774].copy_from_slice(b"CD001");
        iso[32768 + 40..32768 + 72].copy_from_slice(format!("{:32}", "cidata").as_bytes());
        assert_eq!(volume_label(&iso), Some((FsType::Iso9660, "cidata".into())));
        assert_eq!(volume_label(&[0u8; 100]), None);
        assert_eq!(kind_of("uvmkit-cfg"), Some(VolumeKind::Settings));
        assert_eq!(kind_of("CIDATA"), Some(VolumeKind::NoCloud));
        assert_eq!(kind_of("ESP"), None);

        // What independent tools write reads the same.
        let dir = scratch("labels");
        let fat = dir.join("fat.img");
        if Path::new("/usr/sbin/mkfs.vfat").exists() || Path::new("/sbin/mkfs.vfat").exists() {
            for (size, fat_bits) in [("2048", "12"), ("40960", "32")] {
                let _ = fs::remove_file(&fat);
                let out = std::process::Command::new("mkfs.vfat")
                    .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
                    .args(["-C", "-F", fat_bits, "-n", "UVMKIT-CFG", fat.to_str().unwrap(), size])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let mut head = fs::read(&fat).unwrap();
                head.truncate(LABEL_PROBE_BYTES);
                assert_eq!(
                    volume_label(&head),
                    Some((FsType::Fat, "UVMKIT-CFG".into())),
                    "FAT{fat_bits}"
                );
            }
        }
        if Path::new("/usr/bin/xorriso").exists() {
            let tree = dir.join("tree");
            fs::create_dir_all(&tree).unwrap();
            fs::write(tree.join("uvmkit.toml"), "").unwrap();
            let iso = dir.join("cfg.iso");
            let out = std::process::Command::new("xorriso")
                .args(["-as", "mkisofs", "-quiet", "-V", "UVMKIT-CFG", "-r", "-J", "-o"])
                .arg(&iso)
                .arg(&tree)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let mut head = fs::read(&iso).unwrap();
            head.truncate(LABEL_PROBE_BYTES);
            assert_eq!(volume_label(&head), Some((FsType::Iso9660, "UVMKIT-CFG".into())));
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A settings volume's tree under a fresh directory.
    fn volume(name: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let root = scratch(name);
        for (file, bytes) in files {
            let path = root.join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, bytes).unwrap();
        }
        root
    }

    #[test]
    fn a_full_volume_is_read_and_merged_over_the_image_with_one_line_per_override() {
        let user_ca = ca_pem("user CA");
        let corp = ca_pem("corp root");
        let settings = format!(
            "hostname = \"vm-1\"\n[ssh]\nauthorized_keys = [\"{KEY}\"]\n\
             [[network.interfaces]]\nname = \"eth1\"\naddress = \"192.168.56.10/24\"\n\
             [[network.interfaces]]\nname = \"eth3\"\naddress = \"10.1.0.2/16\"\ngateway = \"10.1.0.1\"\n\
             [docker]\nregistry-mirrors = [\"http://10.0.2.2:5000\"]\n\
             [tls]\nclient_ca = \"client-ca.pem\"\nca_certificates = [\"certs/corp.pem\"]\n\
             [preload]\nimages = [\"images/app.tar\"]\n"
        );
        let root = volume(
            "full",
            &[
                ("uvmkit.toml", settings.as_bytes()),
                ("client-ca.pem", user_ca.as_bytes()),
                ("certs/corp.pem", corp.as_bytes()),
                ("images/app.tar", b"archive"),
            ],
        );
        let mut config = image_config();
        let image_json = "{\n  \"dns\": [\n    \"10.0.2.3\"\n  ]\n}\n";
        let loaded = read_settings_volume(&root, &config, Some(image_json)).unwrap();
        assert_eq!(loaded.client_ca.len(), 1);
        assert_eq!(loaded.client_ca[0].pem, user_ca);
        assert_eq!(loaded.ca_certificates[0].0, Path::new("certs/corp.pem"));
        // sha256("archive")
        // `printf archive | sha256sum`
        assert_eq!(
            loaded.preload[0].sha256,
            "0eb3e36bfb24dcd9bb1d1bece1531216b59539a8fde17ee80224af0653c92aa3"
        );
        assert_eq!(loaded.preload[0].path, Path::new("/run/uvmkit/settings/images/app.tar"));
        let merged = loaded.daemon_json.as_ref().unwrap();
        assert!(
            merged.text.contains("\"dns\"") && merged.text.contains("10.0.2.2:5000"),
            "{}",
            merged.text
        );

        let (lines, client_ca) = merge_into_config(&mut config, &loaded, &CommandLine::default());
        assert_eq!(
            lines,
            [
                "hostname docker -> vm-1",
                "network eth1 dhcp -> 192.168.56.10/24",
                "network eth3 10.1.0.2/16 via 10.1.0.1 (added)",
                "preload /run/uvmkit/settings/images/app.tar (added)",
                "dockerd --tlscacert /var/lib/uvmkit/identity/tls/ca.pem -> /run/uvmkit/docker-client-ca.pem \
                 (the VM's CA and CN=user CA)",
            ]
        );
        assert_eq!(config.hostname, "vm-1");
        let network = config.network.as_ref().unwrap();
        let names: Vec<_> = network.interfaces.iter().map(|i| i.name.clone().unwrap()).collect();
        assert_eq!(names, ["eth1", "eth2", "eth3"]);
        assert_eq!(
            network.interfaces[1].address.as_deref(),
            Some("10.9.0.2/24"),
            "the image's entry stays"
        );
        assert!(network.dhcp);
        let preload = config.preload.as_ref().unwrap();
        assert_eq!(
            (preload.after.as_str(), preload.socket.as_deref(), preload.command.len()),
            ("dockerd", Some(Path::new("/var/run/docker.sock")), 0)
        );
        assert_eq!(
            config.services[0].command.last().unwrap(),
            "--tlscacert=/run/uvmkit/docker-client-ca.pem"
        );
        let client_ca = client_ca.unwrap();
        assert_eq!(client_ca.vm_ca, Path::new("/var/lib/uvmkit/identity/tls/ca.pem"));

        // The command line's host name wins over the volume's.
        let mut config = image_config();
        let line = parse_command_line("uvmkit.hostname=from-cmdline");
        let (lines, _) = merge_into_config(&mut config, &loaded, &line);
        assert_eq!(lines[0], "hostname docker -> from-cmdline (kernel command line)");
        // Nothing given, nothing changed.
        let mut config = image_config();
        let (lines, client_ca) = merge_into_config(&mut config, &Loaded::default(), &CommandLine::default());
        assert!(lines.is_empty() && client_ca.is_none());
        assert_eq!(config, image_config());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_image_without_network_brings_up_only_the_interfaces_given() {
        let root = volume(
            "nonet",
            &[("uvmkit.toml", b"[[network.interfaces]]\nmac = \"52:54:00:00:00:01\"\n")],
        );
        let mut config = InitConfig::default();
        let loaded = read_settings_volume(&root, &config, None).unwrap();
        let (lines, _) = merge_into_config(&mut config, &loaded, &CommandLine::default());
        assert_eq!(lines, ["network 52:54:00:00:00:01 dhcp (added)"]);
        let network = config.network.unwrap();
        assert!(!network.dhcp);
        assert_eq!(network.interfaces.len(), 1);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_bad_volume_is_an_error_naming_the_file_and_line() {
        let config = image_config();
        type Case<'a> = (&'a str, Vec<(&'a str, &'a [u8])>, &'a str);
        let cases: Vec<Case> = vec![
            (
                "syntax",
                vec![("uvmkit.toml", b"hostname = \"vm\"\n\n[ssh]\nauthorized_keys = [\n")],
                "uvmkit.toml line 5",
            ),
            (
                "unknown",
                vec![("uvmkit.toml", b"hostname = \"vm\"\n\n\ncolour = \"red\"\n")],
                "uvmkit.toml line 4, column 1: unknown field `colour`",
            ),
            (
                "missing",
                vec![("uvmkit.toml", b"[tls]\nclient_ca = \"ca.pem\"\n")],
                "cannot read ca.pem",
            ),
            (
                "notcert",
                vec![
                    ("uvmkit.toml", b"[tls]\nca_certificates = [\"x.pem\"]\n"),
                    ("x.pem", b"hello"),
                ],
                "uvmkit.toml: [tls] ca_certificates x.pem",
            ),
            (
                "preload",
                vec![("uvmkit.toml", b"[preload]\nimages = [\"gone.tar\"]\n")],
                "uvmkit.toml: [preload] images gone.tar: cannot be opened",
            ),
            ("nofile", vec![("other.txt", b"")], "cannot read uvmkit.toml"),
            (
                "docker",
                vec![("uvmkit.toml", b"[docker]\nlog-driver = \"local\"\n")],
                "uvmkit.toml: [docker]: the image's /etc/docker/daemon.json",
            ),
            (
                "big",
                vec![("uvmkit.toml", &[b'#'; (MAX_FILE_BYTES + 1) as usize])],
                "uvmkit.toml on the settings volume is larger than",
            ),
        ];
        for (name, files, says) in cases {
            let root = volume(name, &files);
            let image_json = "{\"log-opts\": {\"labels\": \"a\"}}";
            let err = read_settings_volume(&root, &config, Some(image_json))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(says), "{name}: {err}");
            fs::remove_dir_all(&root).unwrap();
        }
        // A client CA needs a dockerd with --tlscacert.
        let root = volume(
            "notls",
            &[
                ("uvmkit.toml", b"[tls]\nclient_ca = \"ca.pem\"\n"),
                ("ca.pem", ca_pem("u").as_bytes()),
            ],
        );
        let err = read_settings_volume(&root, &InitConfig::default(), None).unwrap_err();
        assert!(matches!(err, InstanceError::NoTlsService), "{err}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_nocloud_seed_gives_hostname_and_keys() {
        let user = format!("#cloud-config\nhostname: seed-vm\nssh_authorized_keys:\n  - {KEY}\npackages: [git]\n");
        let root = volume(
            "nocloud",
            &[
                ("meta-data", b"instance-id: iid-1\nlocal-hostname: meta\n"),
                ("user-data", user.as_bytes()),
            ],
        );
        let loaded = read_nocloud_volume(&root).unwrap();
        assert_eq!(loaded.settings.hostname.as_deref(), Some("seed-vm"));
        assert_eq!(loaded.settings.ssh.as_ref().unwrap().authorized_keys, [KEY]);
        assert_eq!(
            loaded.notes,
            [
                "NoCloud seed: instance-id iid-1",
                "NoCloud seed: user-data: key packages not used"
            ]
        );
        fs::write(
            root.join("user-data"),
            "#cloud-config\nssh_authorized_keys:\n  - not a key\n",
        )
        .unwrap();
        let err = read_nocloud_volume(&root).unwrap_err().to_string();
        assert!(
            err.starts_with("NoCloud seed: uvmkit.toml: [ssh] authorized_keys entry 1"),
            "{err}"
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn keys_are_added_once_to_a_private_file() {
        let dir = scratch("keys");
        let path = dir.join(".ssh/authorized_keys");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "ssh-ed25519 AAAAimage image@build").unwrap();
        let added = add_authorized_keys(&path, &[KEY.to_string()]).unwrap();
        assert_eq!(added, [KEY]);
        assert!(add_authorized_keys(&path, &[KEY.to_string()]).unwrap().is_empty());
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("ssh-ed25519 AAAAimage image@build\n{KEY}\n")
        );
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let fresh = dir.join("root/.ssh/authorized_keys");
        add_authorized_keys(&fresh, &[KEY.to_string()]).unwrap();
        assert_eq!(fs::metadata(fresh.parent().unwrap()).unwrap().mode() & 0o777, 0o700);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn extra_cas_are_appended_to_the_trust_bundle_or_to_one_made_like_update_ca_certificates() {
        let dir = scratch("bundle");
        let corp = read_certificates(&ca_pem("corp"), "corp.pem").unwrap().remove(0);
        let extra = [(PathBuf::from("corp.pem"), corp.clone())];
        let bundle = dir.join("ca-certificates.crt");
        fs::write(&bundle, "EXISTING").unwrap();
        let text = extended_trust_bundle(&bundle, &dir.join("none"), &dir, &extra).unwrap();
        assert_eq!(text, format!("EXISTING\n{}", corp.pem));
        fs::remove_file(&bundle).unwrap();
        fs::create_dir_all(dir.join("share/mozilla")).unwrap();
        fs::write(dir.join("share/mozilla/A.crt"), "A\n").unwrap();
        fs::write(dir.join("share/mozilla/B.crt"), "B").unwrap();
        fs::write(dir.join("share/mozilla/C.crt"), "C\n").unwrap();
        fs::write(
            dir.join("conf"),
            "# comment\nmozilla/A.crt\n!mozilla/C.crt\nmozilla/B.crt\n",
        )
        .unwrap();
        let text = extended_trust_bundle(&bundle, &dir.join("conf"), &dir.join("share"), &extra).unwrap();
        assert_eq!(text, format!("A\nB\n{}", corp.pem));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_client_ca_bundle_accepts_certificates_of_both_cas() {
        let dir = scratch("clientca");
        let now = SystemTime::now();
        let vm = create_ca(&mut OsRng, "vm", now, 10).unwrap();
        let user = create_ca(&mut OsRng, "user", now, 10).unwrap();
        fs::write(dir.join("ca.pem"), &vm.cert_pem).unwrap();
        let client_ca = ClientCa {
            vm_ca: dir.join("ca.pem"),
            user: read_certificates(&user.cert_pem, "user").unwrap(),
        };
        let out = dir.join("run/bundle.pem");
        write_client_ca_bundle(&client_ca, &out).unwrap();
        let text = fs::read_to_string(&out).unwrap();
        assert_eq!(text, format!("{}{}", vm.cert_pem, user.cert_pem));
        // OpenSSL, as dockerd's Go TLS stack would, accepts a client of either CA.
        if Path::new("/usr/bin/openssl").exists() {
            let other = create_ca(&mut OsRng, "other", now, 10).unwrap();
            for (ca, accepted) in [(&vm, true), (&user, true), (&other, false)] {
                let client = issue_client_cert(&mut OsRng, ca, "client", now, 10).unwrap();
                let cert = dir.join("client.pem");
                fs::write(&cert, &client.cert_pem).unwrap();
                let ok = std::process::Command::new("openssl")
                    .args(["verify", "-purpose", "sslclient", "-CAfile"])
                    .arg(&out)
                    .arg(&cert)
                    .output()
                    .unwrap()
                    .status
                    .success();
                assert_eq!(ok, accepted);
            }
        }
        assert!(write_client_ca_bundle(
            &ClientCa {
                vm_ca: dir.join("gone.pem"),
                user: vec![]
            },
            &out
        )
        .is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
