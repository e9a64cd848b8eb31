//! `uvmkit build`: definition → inputs → file tree → initrd → UKI → disks and ISO → artifacts,
//! `SHA256SUMS` and `manifest.json`. One straight line; each encoder lives in its own crate.

use crate::artifacts::{write_atomically, Artifact, ArtifactDir};
use crate::assemble::{self, AssemblyInputs};
use crate::config::{Format, LoadedDefinition};
use crate::inputs::{self, FetchedPackage, InputOptions, ResolvedInputs};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;
use uvmkit_disk::esp::{build_esp, EspFile, EspOptions};
use uvmkit_disk::guid::Guid;
use uvmkit_disk::layout::{build_disk, room_for_last, DiskLayout, PartitionSpec};
use uvmkit_disk::SparseImage;
use uvmkit_filetree::{FileData, FileTree};

/// The init binary, built from `init/` and embedded by `build.rs`.
pub static INIT_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/uvmkit-init"));

/// The label the init looks for to find its data partition.
pub use uvmkit_init_config::DATA_LABEL;

/// Default `SOURCE_DATE_EPOCH` (1980-01-01, the FAT epoch): builds are reproducible even when
/// the variable is not set.
pub const DEFAULT_EPOCH: u64 = 315_532_800;

/// Options of one build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Where artifacts go.
    pub out_dir: PathBuf,
    /// Which artifacts to write.
    pub formats: Vec<Format>,
    /// Virtual disk size (raw, VHDX, VMDK).
    pub disk_size: u64,
    /// Timestamp for every file and volume date.
    pub epoch: u64,
    /// Input resolution options.
    pub inputs: InputOptions,
}

/// Why a build failed; the variant decides the exit code.
#[derive(Debug)]
pub enum BuildError {
    /// Fetching or verifying inputs failed.
    Inputs(inputs::InputError),
    /// Assembling or encoding failed.
    Build(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Inputs(e) => e.fmt(f),
            BuildError::Build(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for BuildError {}

fn fail(what: &str) -> impl Fn(String) -> BuildError + Copy + '_ {
    move |e| BuildError::Build(format!("{what}: {e}"))
}

/// A phase and how long it took.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// Phase name.
    pub phase: String,
    /// Seconds.
    pub seconds: f64,
}

/// What a build produced.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// Image name.
    pub image: String,
    /// Published artifacts.
    pub artifacts: Vec<Artifact>,
    /// Every input package.
    pub packages: Vec<FetchedPackage>,
    /// The license each package declares (machine-readable `copyright` files only), by name.
    #[serde(skip)]
    pub licenses: std::collections::BTreeMap<String, uvmkit_debian::copyright::DeclaredLicense>,
    /// Kernel release.
    pub kernel_release: String,
    /// Modules the init loads.
    pub modules: Vec<String>,
    /// Files in the initrd.
    pub initrd_entries: usize,
    /// Uncompressed bytes in the initrd.
    pub initrd_uncompressed: u64,
    /// Bytes downloaded.
    pub downloaded_bytes: u64,
    /// Phase timings.
    pub timings: Vec<Timing>,
}

/// Prints one line per phase with its duration (to stderr, so `--json` output stays clean).
struct Phases {
    start: Instant,
    last: Instant,
    quiet: bool,
    timings: Vec<Timing>,
}

impl Phases {
    fn new(quiet: bool) -> Self {
        let now = Instant::now();
        Phases {
            start: now,
            last: now,
            quiet,
            timings: Vec::new(),
        }
    }
    fn done(&mut self, phase: &str, detail: impl fmt::Display) {
        let now = Instant::now();
        let secs = (now - self.last).as_secs_f64();
        self.last = now;
        self.timings.push(Timing {
            phase: phase.to_string(),
            seconds: secs,
        });
        if !self.quiet {
            eprintln!(
                "[{:6.1}s] {phase}: {detail} ({secs:.1}s)",
                (now - self.start).as_secs_f64()
            );
        }
    }
}

/// Formats a byte count for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A 32-byte seed for identifiers (disk GUIDs, VHDX and VMDK ids, FAT volume ids), derived
/// from everything that defines the image: different images get different identifiers, the
/// same inputs the same ones.
fn identity_seed(loaded: &LoadedDefinition, inputs: &ResolvedInputs, epoch: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(loaded.source_text.as_bytes());
    for p in &inputs.packages {
        h.update(p.sha256.as_bytes());
    }
    h.update(INIT_BINARY);
    h.update(epoch.to_le_bytes());
    h.finalize().into()
}

/// The image's root tree from resolved inputs and the embedded init.
pub fn assemble_image(
    loaded: &LoadedDefinition,
    inputs: &ResolvedInputs,
) -> Result<assemble::AssembledTree, assemble::AssembleError> {
    assemble::assemble(&AssemblyInputs {
        definition: &loaded.definition,
        base_dir: &loaded.base_dir,
        init: FileData::inline(INIT_BINARY.to_vec()),
        requested: &inputs.requested,
        universe: &inputs.universe,
        kernel_release: &inputs.kernel.release,
        modules: &inputs.modules,
    })
}

/// Runs a whole build.
pub fn build(loaded: &LoadedDefinition, opts: &BuildOptions) -> Result<BuildReport, BuildError> {
    let def = &loaded.definition;
    let mut phases = Phases::new(opts.inputs.quiet);
    let inputs = inputs::resolve(def, &loaded.base_dir, &opts.inputs).map_err(BuildError::Inputs)?;
    phases.done(
        "inputs",
        format!(
            "{} packages, kernel {}, {} modules, {} downloaded",
            inputs.packages.len(),
            inputs.kernel.release,
            inputs.modules.modules.len(),
            human_bytes(inputs.downloaded_bytes)
        ),
    );

    let assembled = assemble_image(loaded, &inputs).map_err(|e| BuildError::Build(e.to_string()))?;
    let tree = &assembled.tree;
    phases.done(
        "file tree",
        format!(
            "{} entries, {} of files, {} libraries added",
            tree.len(),
            human_bytes(tree.total_file_bytes()),
            assembled.closure.added.len()
        ),
    );

    let mut out = ArtifactDir::create(&opts.out_dir).map_err(|e| BuildError::Build(e.to_string()))?;
    let name = &def.name;
    let seed = identity_seed(loaded, &inputs, opts.epoch);

    // The initrd.
    let initrd_name = format!("{name}-initrd.img");
    let initrd_path = out.staging_path(&initrd_name);
    let initrd_stats = {
        let file = File::create(&initrd_path).map_err(|e| fail("initrd")(e.to_string()))?;
        let mut w = BufWriter::new(file);
        let compression = match def.initrd.compression_level {
            0 => uvmkit_initrd::Compression::None,
            level => uvmkit_initrd::Compression::zstd(level),
        };
        let options = uvmkit_initrd::InitrdOptions {
            mtime: opts.epoch,
            compression,
            segments: vec![],
        };
        let stats = uvmkit_initrd::write_initrd(tree, &options, &mut w).map_err(|e| fail("initrd")(e.to_string()))?;
        w.flush().map_err(|e| fail("initrd")(e.to_string()))?;
        stats
    };
    phases.done(
        "initrd",
        format!(
            "{} entries, {} → {}",
            initrd_stats.entries,
            human_bytes(initrd_stats.uncompressed_bytes),
            human_bytes(initrd_stats.compressed_bytes)
        ),
    );

    // The UKI: every bootable format carries it.
    let uki_name = format!("{name}.efi");
    let uki_path = out.staging_path(&uki_name);
    let uki_layout;
    {
        let stub = inputs
            .uki_stub
            .read_all()
            .map_err(|e| fail("EFI stub")(e.to_string()))?;
        let osrel = os_release_for_uki(def);
        let uname = inputs.kernel.release.clone();
        let linux = match &inputs.kernel.image {
            FileData::HostFile { path, .. } => uvmkit_uki::SectionData::File(path),
            FileData::Inline(bytes) => uvmkit_uki::SectionData::Bytes(bytes),
        };
        let sections = uvmkit_uki::UkiSections {
            osrel: osrel.as_bytes(),
            cmdline: def.cmdline.as_bytes(),
            uname: Some(uname.as_bytes()),
            initrd: Some(uvmkit_uki::SectionData::File(&initrd_path)),
            linux,
        };
        let mut w = BufWriter::new(File::create(&uki_path).map_err(|e| fail("UKI")(e.to_string()))?);
        uki_layout = uvmkit_uki::write_uki(&stub, &sections, &mut w).map_err(|e| fail("UKI")(e.to_string()))?;
        w.flush().map_err(|e| fail("UKI")(e.to_string()))?;
    }
    let uki = FileData::host_file(&uki_path).map_err(|e| fail("UKI")(e.to_string()))?;
    phases.done("UKI", human_bytes(uki.len()));

    let disk_formats: Vec<Format> = opts.formats.iter().copied().filter(|f| f.is_disk()).collect();
    if !disk_formats.is_empty() {
        let esp = build_esp(
            &[EspFile {
                path: "EFI/BOOT/BOOTX64.EFI".into(),
                source: uki.clone(),
            }],
            &EspOptions {
                size_bytes: None,
                volume_id: u32::from_le_bytes(seed[..4].try_into().unwrap()),
                label: "EFI".into(),
                mtime: opts.epoch,
            },
        )
        .map_err(|e| fail("EFI system partition")(e.to_string()))?;
        let data_tree = data_partition_tree(loaded)?;
        let data_size = room_for_last(opts.disk_size, &[esp.size()]).map_err(|e| fail("disk layout")(e.to_string()))?;
        let data = uvmkit_ext4::build_ext4(
            &data_tree,
            &uvmkit_ext4::Ext4Options {
                size_bytes: data_size,
                label: DATA_LABEL.into(),
                uuid: Guid::derive(&seed, "data-fs-uuid").0,
                hash_seed: Guid::derive(&seed, "data-fs-hash-seed").0,
                mtime: opts.epoch as u32,
                // Image files read as zeros where nothing is written: the kernel need not zero the
                // inode tables on first mount (which would also grow a dynamic VHDX).
                assume_zeroed: true,
                ..uvmkit_ext4::Ext4Options::default()
            },
        )
        .map_err(|e| fail("data partition (ext4)")(e.to_string()))?;
        let layout = DiskLayout {
            size_bytes: opts.disk_size,
            seed,
            partitions: vec![
                PartitionSpec {
                    name: "EFI system partition".into(),
                    type_guid: Guid::EFI_SYSTEM,
                    content: esp,
                },
                PartitionSpec {
                    name: DATA_LABEL.into(),
                    type_guid: Guid::LINUX_FILESYSTEM,
                    content: data,
                },
            ],
        };
        let (disk, _placed) = build_disk(&layout).map_err(|e| fail("disk layout")(e.to_string()))?;
        phases.done(
            "disk layout",
            format!(
                "{} virtual, {} allocated",
                human_bytes(disk.size()),
                human_bytes(disk.allocated_bytes())
            ),
        );
        for format in disk_formats {
            write_disk(&mut out, &disk, format, def, name, seed).map_err(fail(format.name()))?;
            let a = out.published().last().unwrap().clone();
            phases.done(
                format.name(),
                format!("{} ({} on disk)", a.name, human_bytes(a.allocated)),
            );
        }
    }

    if opts.formats.contains(&Format::Iso) {
        write_iso(
            &mut out,
            &inputs,
            def,
            (&uki, &uki_layout),
            &initrd_path,
            seed,
            opts.epoch,
        )?;
        let a = out.published().last().unwrap().clone();
        phases.done("iso", format!("{} ({})", a.name, human_bytes(a.size)));
    }

    if opts.formats.contains(&Format::Efi) {
        out.publish(&uki_name, "efi")
            .map_err(|e| fail("publish")(e.to_string()))?;
        let kernel_name = format!("{name}-kernel");
        let mut kernel_bytes = inputs.kernel.image.open().map_err(|e| fail("kernel")(e.to_string()))?;
        let mut f = File::create(out.staging_path(&kernel_name)).map_err(|e| fail("kernel")(e.to_string()))?;
        std::io::copy(&mut kernel_bytes, &mut f).map_err(|e| fail("kernel")(e.to_string()))?;
        drop(f);
        out.publish(&kernel_name, "kernel")
            .map_err(|e| fail("publish")(e.to_string()))?;
        out.publish(&initrd_name, "initrd")
            .map_err(|e| fail("publish")(e.to_string()))?;
        phases.done("efi", format!("{uki_name}, {kernel_name}, {initrd_name}"));
    }

    let report = BuildReport {
        image: name.clone(),
        artifacts: out.published().to_vec(),
        packages: inputs.packages.clone(),
        licenses: inputs.licenses.clone(),
        kernel_release: inputs.kernel.release.clone(),
        modules: inputs.modules.modules.iter().map(|m| m.name.clone()).collect(),
        initrd_entries: initrd_stats.entries as usize,
        initrd_uncompressed: initrd_stats.uncompressed_bytes,
        downloaded_bytes: inputs.downloaded_bytes,
        timings: phases.timings.clone(),
    };
    let manifest = crate::manifest::manifest_json(loaded, &report, opts.epoch);
    write_atomically(&opts.out_dir.join("manifest.json"), manifest.as_bytes())
        .map_err(|e| fail("manifest.json")(e.to_string()))?;
    write_atomically(&opts.out_dir.join("SHA256SUMS"), out.sha256sums().as_bytes())
        .map_err(|e| fail("SHA256SUMS")(e.to_string()))?;
    let sbom = crate::sbom::spdx_json(&report, opts.epoch);
    write_atomically(&opts.out_dir.join(crate::sbom::file_name(name)), sbom.as_bytes())
        .map_err(|e| fail("SBOM")(e.to_string()))?;
    Ok(report)
}

fn os_release_for_uki(def: &crate::config::ImageDefinition) -> String {
    format!(
        "NAME=\"uvmkit\"\nID=uvmkit\nPRETTY_NAME=\"uvmkit {}\"\nVARIANT_ID={}\nVERSION_ID={}\n",
        def.name,
        def.name,
        env!("CARGO_PKG_VERSION")
    )
}

/// The data partition's files (`[disk] data_files`).
fn data_partition_tree(loaded: &LoadedDefinition) -> Result<FileTree, BuildError> {
    let mut tree = FileTree::new();
    assemble::add_extra_files(&mut tree, &loaded.definition.disk.data_files, &loaded.base_dir)
        .map_err(|e| BuildError::Build(format!("[disk] data_files: {e}")))?;
    Ok(tree)
}

fn write_disk(
    out: &mut ArtifactDir,
    disk: &SparseImage,
    format: Format,
    def: &crate::config::ImageDefinition,
    name: &str,
    seed: [u8; 32],
) -> Result<(), String> {
    let file_name = match format {
        Format::Raw => format!("{name}.raw"),
        Format::Vhdx => format!("{name}.vhdx"),
        Format::Vmdk => format!("{name}.vmdk"),
        Format::VmdkStream => format!("{name}-stream.vmdk"),
        Format::Efi | Format::Iso => unreachable!("not a disk format"),
    };
    let path = out.staging_path(&file_name);
    match format {
        Format::Raw => {
            uvmkit_vdisk::write_raw(disk, &path).map_err(|e| e.to_string())?;
        }
        _ => {
            let mut f = File::create(&path).map_err(|e| e.to_string())?;
            match format {
                Format::Vhdx => {
                    let o = uvmkit_vdisk::VhdxOptions {
                        block_size: def.disk.vhdx_block_size as u32,
                        fixed: def.disk.vhdx_fixed,
                        seed,
                    };
                    uvmkit_vdisk::write_vhdx(disk, &o, &mut f).map_err(|e| e.to_string())?;
                }
                Format::Vmdk => {
                    let o = uvmkit_vdisk::VmdkOptions {
                        seed,
                        extent_file_name: file_name.clone(),
                        ..uvmkit_vdisk::VmdkOptions::default()
                    };
                    uvmkit_vdisk::write_vmdk_sparse(disk, &o, &mut f).map_err(|e| e.to_string())?;
                }
                _ => {
                    let o = uvmkit_vdisk::VmdkOptions {
                        seed,
                        extent_file_name: file_name.clone(),
                        ..uvmkit_vdisk::VmdkOptions::default()
                    };
                    let mut w = BufWriter::new(&mut f);
                    uvmkit_vdisk::write_vmdk_stream(disk, &o, &mut w).map_err(|e| e.to_string())?;
                    w.flush().map_err(|e| e.to_string())?;
                }
            }
        }
    }
    out.publish(&file_name, format.name()).map_err(|e| e.to_string())?;
    Ok(())
}

fn write_iso(
    out: &mut ArtifactDir,
    inputs: &ResolvedInputs,
    def: &crate::config::ImageDefinition,
    (uki, uki_layout): (&FileData, &uvmkit_uki::UkiLayout),
    initrd_path: &std::path::Path,
    seed: [u8; 32],
    epoch: u64,
) -> Result<(), BuildError> {
    let isolinux = inputs
        .isolinux
        .as_ref()
        .ok_or_else(|| BuildError::Build("ISO: the isolinux packages were not fetched".into()))?;
    let err = fail("ISO");
    // The El Torito EFI image: a small FAT holding the UKI as the removable-media boot path.
    let efi_img = build_esp(
        &[EspFile {
            path: "EFI/BOOT/BOOTX64.EFI".into(),
            source: uki.clone(),
        }],
        &EspOptions {
            size_bytes: Some(fat_size_for(uki.len())),
            volume_id: u32::from_le_bytes(seed[4..8].try_into().unwrap()),
            label: "UVMKIT_EFI".into(),
            mtime: epoch,
        },
    )
    .map_err(|e| fail("ISO EFI image")(e.to_string()))?;
    let cfg = format!(
        "DEFAULT uvmkit\nPROMPT 0\nTIMEOUT 0\nLABEL uvmkit\n  KERNEL /boot/vmlinuz\n  APPEND initrd=/boot/initrd.img {}\n",
        def.cmdline
    );
    let bytes = |d: &FileData| d.read_all().map_err(|e| fail("ISO")(e.to_string()));
    let initrd = FileData::host_file(initrd_path).map_err(|e| err(e.to_string()))?;
    // The BIOS path reads the kernel and initrd from ISO 9660; the UEFI path reads the UKI
    // from the FAT image, which holds the same bytes as its .linux and .initrd sections. Both
    // are 4 KiB-aligned in the FAT image, so the ISO 9660 records point at them: stored once.
    let aliases = shared_boot_files(&efi_img, uki, uki_layout, &inputs.kernel.image, &initrd);
    let mut files = vec![
        uvmkit_iso::IsoFile {
            path: "isolinux/isolinux.cfg".into(),
            data: FileData::inline(cfg.into_bytes()),
            mode: 0o644,
        },
        uvmkit_iso::IsoFile {
            path: "isolinux/ldlinux.c32".into(),
            data: isolinux.ldlinux_c32.clone(),
            mode: 0o644,
        },
    ];
    if aliases.is_empty() {
        log::warn!(
            "ISO: the UKI's sections are not 2 KiB-aligned in the EFI image; storing the kernel and initrd twice"
        );
        files.push(uvmkit_iso::IsoFile {
            path: "boot/vmlinuz".into(),
            data: inputs.kernel.image.clone(),
            mode: 0o644,
        });
        files.push(uvmkit_iso::IsoFile {
            path: "boot/initrd.img".into(),
            data: initrd,
            mode: 0o644,
        });
    }
    let bios = uvmkit_iso::BiosBoot {
        isolinux_bin: bytes(&isolinux.isolinux_bin)?,
        isohdpfx: bytes(&isolinux.isohdpfx)?,
        path: "isolinux/isolinux.bin".into(),
    };
    let efi = uvmkit_iso::EfiBoot {
        image: uvmkit_iso::BootImage::Sparse(efi_img),
        path: "boot/efi.img".into(),
    };
    let volume_id = def
        .iso
        .volume_label
        .clone()
        .unwrap_or_else(|| def.name.to_ascii_uppercase().replace(['-', '.'], "_"));
    let opts = uvmkit_iso::IsoOptions {
        volume_id,
        epoch: epoch as i64,
        seed,
        hybrid: true,
    };
    let name = format!("{}.iso", def.name);
    let mut w = BufWriter::new(File::create(out.staging_path(&name)).map_err(|e| err(e.to_string()))?);
    uvmkit_iso::write_iso_with_aliases(&files, Some(&bios), Some(&efi), &aliases, &opts, &mut w)
        .map_err(|e| err(e.to_string()))?;
    w.flush().map_err(|e| err(e.to_string()))?;
    drop(w);
    out.publish(&name, "iso").map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// ISO 9660 records for `/boot/vmlinuz` and `/boot/initrd.img` that point into the EFI image
/// where the UKI's `.linux` and `.initrd` sections lie; empty when they are not where a 2 KiB
/// ISO block can point (then the files are stored separately).
fn shared_boot_files(
    efi_img: &SparseImage,
    uki: &FileData,
    layout: &uvmkit_uki::UkiLayout,
    kernel: &FileData,
    initrd: &FileData,
) -> Vec<uvmkit_iso::EfiAlias> {
    let FileData::HostFile { path: uki_path, .. } = uki else {
        return vec![];
    };
    let Some(uki_start) = efi_img.extents().find_map(|e| match &e.data {
        uvmkit_disk::ExtentData::HostFile { path, offset: 0, len } if path == uki_path && *len == uki.len() => {
            Some(e.offset)
        }
        _ => None,
    }) else {
        return vec![];
    };
    let mut aliases = Vec::new();
    for (section, iso_path, data) in [
        (".linux", "boot/vmlinuz", kernel),
        (".initrd", "boot/initrd.img", initrd),
    ] {
        let Some(s) = layout.sections.iter().find(|s| s.name == section) else {
            return vec![];
        };
        let offset = uki_start + u64::from(s.file_offset);
        if offset % uvmkit_iso::SECTOR != 0 || u64::from(s.raw_size) < data.len() {
            return vec![];
        }
        aliases.push(uvmkit_iso::EfiAlias {
            path: iso_path.into(),
            offset,
            len: data.len(),
            mode: 0o644,
        });
    }
    aliases
}

/// A FAT image just large enough for `payload` bytes (FAT32 needs at least 65525 clusters).
fn fat_size_for(payload: u64) -> u64 {
    let want = payload + payload / 16 + (4 << 20);
    let mib = want.div_ceil(1 << 20).max(34);
    mib << 20
}
