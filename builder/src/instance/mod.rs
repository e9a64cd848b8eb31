//! `uvmkit instance`: the settings volume that makes one VM of a shared image its own.
//!
//! The volume holds `uvmkit.toml` ([`uvmkit_instance_config::InstanceSettings`]) at its root
//! and the files it names (a client CA, extra CA certificates, container image archives) at
//! the relative paths it gives. It is a FAT32 volume labelled `UVMKIT-CFG` (written whole,
//! without a partition table, as raw, VHDX or VMDK: blkid finds a superfloppy's label on the
//! whole disk) or an ISO 9660 volume with that volume identifier and Rock Ridge names (for DVD
//! drives). The init finds it by that label at every boot.
//!
//! [`plan`] turns the command line (flags, or a `--settings` TOML whose relative paths are
//! resolved against its own directory, or both: flags win) into a checked [`VolumePlan`];
//! [`write`] encodes it. Output depends only on the settings, the files' bytes and the epoch:
//! every identifier derives from a hash of them, and the file appears whole or not at all
//! (a temporary file beside it, synced, renamed).
//!
//! Only portable std APIs are used here: the command runs on Linux, macOS and Windows hosts.

pub mod flags;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use uvmkit_disk::esp::{build_esp, EspError, EspFile, EspOptions};
use uvmkit_filetree::FileData;
use uvmkit_instance_config::{InstanceSettings, SettingsError, SETTINGS_FILE, VOLUME_LABEL};

pub use flags::{parse_docker_setting, parse_interface, InstanceFlags};

/// The container formats a settings volume is written as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeFormat {
    /// ISO 9660 with Rock Ridge: attach as a CD/DVD.
    Iso,
    /// The FAT volume as a sparse raw disk image.
    Raw,
    /// The FAT volume as a dynamic VHDX (Hyper-V).
    Vhdx,
    /// The FAT volume as a monolithicSparse VMDK (VMware, VirtualBox).
    Vmdk,
}

impl VolumeFormat {
    /// Every format, in the order the help text lists them.
    pub const ALL: [VolumeFormat; 4] = [
        VolumeFormat::Iso,
        VolumeFormat::Raw,
        VolumeFormat::Vhdx,
        VolumeFormat::Vmdk,
    ];

    /// The format's name on the command line (also the file extension).
    pub fn name(self) -> &'static str {
        match self {
            VolumeFormat::Iso => "iso",
            VolumeFormat::Raw => "raw",
            VolumeFormat::Vhdx => "vhdx",
            VolumeFormat::Vmdk => "vmdk",
        }
    }

    /// The format named `name` (`iso`, `raw`, `img`, `vhdx`, `vmdk`), ignoring case.
    pub fn from_name(name: &str) -> Option<VolumeFormat> {
        match name.to_ascii_lowercase().as_str() {
            "iso" => Some(VolumeFormat::Iso),
            "raw" | "img" => Some(VolumeFormat::Raw),
            "vhdx" => Some(VolumeFormat::Vhdx),
            "vmdk" => Some(VolumeFormat::Vmdk),
            _ => None,
        }
    }

    /// The format an output file's extension names, if any.
    pub fn from_path(path: &Path) -> Option<VolumeFormat> {
        VolumeFormat::from_name(path.extension()?.to_str()?)
    }
}

/// One file on the volume besides `uvmkit.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeFile {
    /// Path on the volume, `/`-separated and relative, as `uvmkit.toml` names it.
    pub path: String,
    /// Where its bytes come from on the host.
    pub source: PathBuf,
}

/// A checked volume, ready to encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumePlan {
    /// The settings as the VM will read them.
    pub settings: InstanceSettings,
    /// `uvmkit.toml`'s text.
    pub settings_text: String,
    /// The files the settings name, sorted by path.
    pub files: Vec<VolumeFile>,
}

/// What [`write`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenVolume {
    /// The output file.
    pub path: PathBuf,
    /// Its format.
    pub format: VolumeFormat,
    /// Its length in bytes.
    pub file_size: u64,
    /// The size of the disk a VM sees (the ISO's size for ISO).
    pub virtual_size: u64,
    /// Files on the volume, `uvmkit.toml` included.
    pub files: usize,
    /// sha256 of the output, hex.
    pub sha256: String,
}

/// Why a settings volume cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The settings break the contract the init reads.
    #[error("{}: {source}", origin.display())]
    Settings {
        /// The `--settings` file, or `the command line`.
        origin: PathBuf,
        /// What is wrong.
        source: SettingsError,
    },
    /// A file named by a flag or the settings cannot be read.
    #[error("cannot read {} ({what}): {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Which setting named it.
        what: String,
        /// What reading it reported.
        source: io::Error,
    },
    /// An `--ssh-key` file holds no public key line.
    #[error("{} holds no SSH public key line; pass the .pub file (ssh-keygen writes it beside the private key)", .0.display())]
    NoPublicKey(PathBuf),
    /// A flag's value cannot be understood.
    #[error("{flag} {value:?}: {reason}")]
    Flag {
        /// The flag, such as `--interface`.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong and what would work.
        reason: String,
    },
    /// Two files would land at one path on the volume.
    #[error(
        "{} and {} would both be {path} on the settings volume; rename one of them",
        first.display(),
        second.display()
    )]
    PathClash {
        /// The path on the volume.
        path: String,
        /// One host file.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
    /// No format was given and the output's extension names none.
    #[error("say which format to write: --format iso, raw, vhdx or vmdk (or end {} in .iso, .raw, .vhdx or .vmdk)", .0.display())]
    NoFormat(PathBuf),
    /// The FAT volume cannot be laid out.
    #[error("cannot lay out the FAT volume: {0}")]
    Fat(#[from] EspError),
    /// The ISO cannot be written.
    #[error("cannot write the ISO: {0}")]
    Iso(#[from] uvmkit_iso::IsoError),
    /// The disk container cannot be written.
    #[error("cannot write the disk image: {0}")]
    Disk(#[from] uvmkit_vdisk::Error),
    /// The output file cannot be written or renamed into place.
    #[error("cannot write {}: {source}; check that the directory exists and is writable", path.display())]
    Write {
        /// The output (or its temporary file).
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
}

impl InstanceError {
    /// The exit code the README documents: 2 for bad input, 4 when writing failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            InstanceError::Fat(_) | InstanceError::Iso(_) | InstanceError::Disk(_) | InstanceError::Write { .. } => 4,
            _ => 2,
        }
    }
}

/// Checks the request and works out what goes on the volume: the `--settings` file (if any)
/// with the flags applied over it, and every file it names.
pub fn plan(flags: &InstanceFlags) -> Result<VolumePlan, InstanceError> {
    // (volume path -> host file) of the files on the volume.
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut settings = InstanceSettings::default();
    let origin = flags
        .settings
        .clone()
        .unwrap_or_else(|| PathBuf::from("the command line"));
    if let Some(path) = &flags.settings {
        let text = std::fs::read_to_string(path).map_err(|source| InstanceError::Read {
            path: path.clone(),
            what: "--settings".into(),
            source,
        })?;
        settings = InstanceSettings::parse(&text).map_err(|source| InstanceError::Settings {
            origin: path.clone(),
            source,
        })?;
        // Relative paths in the file are relative to the file's own directory on the host,
        // and stay the same relative paths on the volume.
        let base = path.parent().unwrap_or(Path::new(""));
        for volume_path in named_paths(&settings) {
            let host = base.join(&volume_path);
            add_file(&mut files, slash_path(&volume_path), host)?;
        }
    }
    flags.apply(&mut settings, &mut files)?;
    settings.check().map_err(|source| InstanceError::Settings {
        origin: origin.clone(),
        source,
    })?;
    let settings_text = toml::to_string(&settings).expect("instance settings serialise to TOML");
    // What the init will read must be what was checked: parse the written text again.
    let reread = InstanceSettings::parse(&settings_text).map_err(|source| InstanceError::Settings {
        origin: origin.clone(),
        source,
    })?;
    debug_assert_eq!(reread, settings);
    // Only the files the final settings still name (a flag may have replaced one).
    let named: Vec<String> = named_paths(&settings).iter().map(|p| slash_path(p)).collect();
    let files = files
        .into_iter()
        .filter(|(path, _)| named.contains(path))
        .map(|(path, source)| VolumeFile { path, source })
        .collect();
    Ok(VolumePlan {
        settings,
        settings_text,
        files,
    })
}

/// Every volume path the settings name.
fn named_paths(settings: &InstanceSettings) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(tls) = &settings.tls {
        out.extend(tls.client_ca.iter().cloned());
        out.extend(tls.ca_certificates.iter().cloned());
    }
    if let Some(preload) = &settings.preload {
        out.extend(preload.images.iter().cloned());
    }
    out
}

/// `path` with `/` between its components, whatever the host's separator (`.` dropped).
pub(crate) fn slash_path(path: &Path) -> String {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Records that `host` goes to `path` on the volume; the same file twice is fine.
pub(crate) fn add_file(
    files: &mut BTreeMap<String, PathBuf>,
    path: String,
    host: PathBuf,
) -> Result<(), InstanceError> {
    match files.get(&path) {
        Some(existing) if *existing != host => Err(InstanceError::PathClash {
            path,
            first: existing.clone(),
            second: host,
        }),
        _ => {
            files.insert(path, host);
            Ok(())
        }
    }
}

/// The volume's contents: `uvmkit.toml` first, then the files, each with its bytes' source.
fn contents(plan: &VolumePlan) -> Result<Vec<(String, FileData)>, InstanceError> {
    let mut out = vec![(
        SETTINGS_FILE.to_string(),
        FileData::inline(plan.settings_text.clone().into_bytes()),
    )];
    for f in &plan.files {
        let data = FileData::host_file(&f.source).map_err(|source| InstanceError::Read {
            path: f.source.clone(),
            what: f.path.clone(),
            source,
        })?;
        out.push((f.path.clone(), data));
    }
    Ok(out)
}

/// The seed every identifier of the volume derives from: a hash of what is on it and the
/// epoch, so the same settings give the same bytes and different ones differ.
fn seed(contents: &[(String, FileData)], epoch: u64) -> Result<[u8; 32], InstanceError> {
    let mut hash = Sha256::new();
    hash.update(b"uvmkit instance volume\0");
    hash.update(epoch.to_le_bytes());
    for (path, data) in contents {
        hash.update(path.as_bytes());
        hash.update([0]);
        hash.update(data.len().to_le_bytes());
        match data {
            FileData::Inline(bytes) => hash.update(&bytes[..]),
            FileData::HostFile { path: host, .. } => {
                let mut file = File::open(host).map_err(|source| InstanceError::Read {
                    path: host.clone(),
                    what: path.clone(),
                    source,
                })?;
                io::copy(&mut file, &mut hash).map_err(|source| InstanceError::Read {
                    path: host.clone(),
                    what: path.clone(),
                    source,
                })?;
            }
        }
    }
    Ok(hash.finalize().into())
}

/// The FAT volume: FAT32 (the only FAT this writer makes) labelled `UVMKIT-CFG`, sized to the
/// content plus a quarter plus 4 MiB, but never below what FAT32 needs (about 33 MiB). The
/// disk formats store only the allocated parts, so the size costs little.
fn fat_volume(
    contents: &[(String, FileData)],
    seed: &[u8; 32],
    epoch: u64,
) -> Result<uvmkit_disk::SparseImage, InstanceError> {
    const MIB: u64 = 1 << 20;
    let files: Vec<EspFile> = contents
        .iter()
        .map(|(path, data)| EspFile {
            path: path.clone(),
            source: data.clone(),
        })
        .collect();
    let content: u64 = contents.iter().map(|(_, d)| d.len()).sum();
    let wanted = (content + content / 4 + 4 * MIB).div_ceil(MIB) * MIB;
    let options = |size| EspOptions {
        size_bytes: Some(size),
        volume_id: u32::from_le_bytes(seed[..4].try_into().unwrap()),
        label: VOLUME_LABEL.to_string(),
        mtime: epoch,
    };
    match build_esp(&files, &options(wanted)) {
        Err(EspError::TooSmallForFat32 { min, .. }) => Ok(build_esp(&files, &options(min))?),
        other => Ok(other?),
    }
}

/// Writes `plan` as `format` to `output`, atomically; `epoch` dates every file.
pub fn write(
    plan: &VolumePlan,
    format: VolumeFormat,
    output: &Path,
    epoch: u64,
) -> Result<WrittenVolume, InstanceError> {
    let contents = contents(plan)?;
    let seed = seed(&contents, epoch)?;
    let temp = temporary_beside(output);
    let result = write_to(&contents, &seed, format, output, &temp, epoch);
    let virtual_size = match result {
        Ok(size) => size,
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
    };
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InstanceError::Write { path, source }
    };
    // FlushFileBuffers, behind sync_all on Windows, needs a handle open for writing.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&temp)
        .and_then(|f| f.sync_all())
        .map_err(write_error(&temp))?;
    let sha256 = sha256_file(&temp).map_err(write_error(&temp))?;
    let file_size = std::fs::metadata(&temp).map_err(write_error(&temp))?.len();
    std::fs::rename(&temp, output).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        InstanceError::Write {
            path: output.to_path_buf(),
            source: e,
        }
    })?;
    Ok(WrittenVolume {
        path: output.to_path_buf(),
        format,
        file_size,
        virtual_size,
        files: contents.len(),
        sha256,
    })
}

/// Encodes the volume into `temp`; returns the virtual size.
fn write_to(
    contents: &[(String, FileData)],
    seed: &[u8; 32],
    format: VolumeFormat,
    output: &Path,
    temp: &Path,
    epoch: u64,
) -> Result<u64, InstanceError> {
    let create = || {
        File::create(temp).map_err(|source| InstanceError::Write {
            path: temp.to_path_buf(),
            source,
        })
    };
    let flush_error = |source| InstanceError::Write {
        path: temp.to_path_buf(),
        source,
    };
    match format {
        VolumeFormat::Iso => {
            let files: Vec<uvmkit_iso::IsoFile> = contents
                .iter()
                .map(|(path, data)| uvmkit_iso::IsoFile {
                    path: path.clone(),
                    data: data.clone(),
                    mode: 0o644,
                })
                .collect();
            let options = uvmkit_iso::IsoOptions {
                volume_id: VOLUME_LABEL.to_string(),
                epoch: epoch as i64,
                seed: *seed,
                hybrid: false,
            };
            let mut out = BufWriter::new(create()?);
            let stats = uvmkit_iso::write_iso(&files, None, None, &options, &mut out)?;
            out.flush().map_err(flush_error)?;
            Ok(stats.bytes)
        }
        VolumeFormat::Raw => {
            let image = fat_volume(contents, seed, epoch)?;
            Ok(uvmkit_vdisk::write_raw(&image, temp)?.virtual_size)
        }
        VolumeFormat::Vhdx => {
            let image = fat_volume(contents, seed, epoch)?;
            let options = uvmkit_vdisk::VhdxOptions {
                block_size: 1 << 20,
                fixed: false,
                seed: *seed,
            };
            let mut out = create()?;
            Ok(uvmkit_vdisk::write_vhdx(&image, &options, &mut out)?.virtual_size)
        }
        VolumeFormat::Vmdk => {
            let image = fat_volume(contents, seed, epoch)?;
            let options = uvmkit_vdisk::VmdkOptions {
                seed: *seed,
                extent_file_name: output
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("instance.vmdk")
                    .to_string(),
                ..uvmkit_vdisk::VmdkOptions::default()
            };
            let mut out = create()?;
            Ok(uvmkit_vdisk::write_vmdk_sparse(&image, &options, &mut out)?.virtual_size)
        }
    }
}

/// A hidden temporary file beside `path` (same directory, so the rename stays on one file
/// system), named by this process.
fn temporary_beside(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("volume"),
        std::process::id()
    ))
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut hash = Sha256::new();
    io::copy(&mut File::open(path)?, &mut hash)?;
    Ok(hex::encode(hash.finalize()))
}

/// `bytes` for people: `512 B`, `33.0 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_names_and_extensions() {
        for f in VolumeFormat::ALL {
            assert_eq!(VolumeFormat::from_name(f.name()), Some(f));
        }
        assert_eq!(
            VolumeFormat::from_path(Path::new("a/vm1.VHDX")),
            Some(VolumeFormat::Vhdx)
        );
        assert_eq!(VolumeFormat::from_path(Path::new("vm1.img")), Some(VolumeFormat::Raw));
        assert_eq!(VolumeFormat::from_path(Path::new("vm1")), None);
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(33 << 20), "33.0 MiB");
    }

    #[test]
    fn volume_paths_use_slashes() {
        assert_eq!(slash_path(Path::new("./certs/corp.pem")), "certs/corp.pem");
        let mut files = BTreeMap::new();
        add_file(&mut files, "a.pem".into(), "x/a.pem".into()).unwrap();
        add_file(&mut files, "a.pem".into(), "x/a.pem".into()).unwrap();
        let err = add_file(&mut files, "a.pem".into(), "y/a.pem".into()).unwrap_err();
        assert!(err.to_string().contains("would both be a.pem"), "{err}");
    }
}
