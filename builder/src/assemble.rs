//! Assembles the image's root file tree from resolved inputs: the init and its configuration,
//! the files taken from packages (with their library closure), the kernel's modules and the
//! files the definition adds. Pure and deterministic: the same inputs give the same tree.

use crate::closure::{self, ClosureError, ClosureReport};
use crate::config::{ExtraFile, ExtraFileKind, ImageDefinition, PackageSelection};
use crate::kernel::ModuleSelection;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use uvmkit_filetree::{FileData, FileTree, Node, NodeKind, TreeError, TreePath};
use uvmkit_init_config::{
    DataDiskSection, InitConfig, ModuleSpec, NetworkSection, PreloadImage, PreloadSection, RootMode, StaticSection,
};

/// What a package contributes when its `[[packages]]` entry gives no `include`: its programs
/// and its configuration.
pub const DEFAULT_INCLUDE: [&str; 6] = [
    "/bin/*",
    "/sbin/*",
    "/usr/bin/*",
    "/usr/sbin/*",
    "/usr/libexec/**",
    "/etc/**",
];

/// Never taken from a package: documentation, manuals, translations.
pub const ALWAYS_EXCLUDE: [&str; 6] = [
    "/usr/share/doc/**",
    "/usr/share/man/**",
    "/usr/share/info/**",
    "/usr/share/locale/**",
    "/usr/share/lintian/**",
    "/usr/share/bug/**",
];

/// One fetched package's files.
#[derive(Debug, Clone)]
pub struct PackageFiles {
    /// Package name.
    pub name: String,
    /// Version, for reports.
    pub version: String,
    /// Everything in its `data.tar`.
    pub tree: FileTree,
}

/// Everything assembly needs, already fetched and verified.
pub struct AssemblyInputs<'a> {
    /// The definition.
    pub definition: &'a ImageDefinition,
    /// Directory that relative paths in the definition start from.
    pub base_dir: &'a Path,
    /// The init binary.
    pub init: FileData,
    /// The packages named in `[[packages]]`, by name.
    pub requested: &'a [PackageFiles],
    /// All fetched packages' files merged: where libraries are looked up.
    pub universe: &'a FileTree,
    /// Kernel release (`uname -r`).
    pub kernel_release: &'a str,
    /// The modules to load, in order.
    pub modules: &'a ModuleSelection,
}

/// Why the tree could not be assembled.
#[derive(Debug)]
pub enum AssembleError {
    /// A `[[packages]]` entry's selection matched nothing.
    EmptySelection { package: String, include: Vec<String> },
    /// A library is missing or a program unreadable.
    Closure(ClosureError),
    /// A `[[files]]` entry could not be made.
    ExtraFile { path: String, message: String },
    /// Two entries conflict in the tree.
    Tree(TreeError),
    /// A `[[services]]` program is not in the image.
    MissingServiceProgram { service: String, program: String },
    /// A `[preload]` archive cannot be read.
    Preload { image: PathBuf, message: String },
}

impl fmt::Display for AssembleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AssembleError::EmptySelection { package, include } => write!(
                f,
                "package {package}: include = {include:?} matches none of its files; list them with `uvmkit inspect --files`"
            ),
            AssembleError::Closure(e) => e.fmt(f),
            AssembleError::ExtraFile { path, message } => write!(f, "files entry {path}: {message}"),
            AssembleError::Tree(e) => e.fmt(f),
            AssembleError::MissingServiceProgram { service, program } => write!(
                f,
                "service {service}: {program} is not in the image; add the package that provides it to [[packages]] \
                 (and to its include list if it has one), or fix the path"
            ),
            AssembleError::Preload { image, message } => write!(
                f,
                "preload image {}: {message}; the path is relative to the definition",
                image.display()
            ),
        }
    }
}

impl std::error::Error for AssembleError {}

impl From<TreeError> for AssembleError {
    fn from(e: TreeError) -> Self {
        AssembleError::Tree(e)
    }
}

/// The assembled tree and what went into it.
pub struct AssembledTree {
    /// The root file tree of the image (the initrd's contents).
    pub tree: FileTree,
    /// Files taken from each requested package: (name, files, bytes).
    pub package_files: Vec<(String, usize, u64)>,
    /// What the library closure added.
    pub closure: ClosureReport,
}

fn p(path: &str) -> TreePath {
    TreePath::new(path).expect("static path")
}

/// Builds the image's root tree.
pub fn assemble(inputs: &AssemblyInputs) -> Result<AssembledTree, AssembleError> {
    let def = inputs.definition;
    let mut tree = FileTree::new();
    for dir in [
        "/dev", "/proc", "/sys", "/run", "/tmp", "/etc", "/root", "/var", "/mnt", "/sbin", "/usr/bin",
    ] {
        tree.mkdir_all(&p(dir))?;
    }
    tree.get_mut(&p("/tmp")).unwrap().mode = 0o1777;
    tree.get_mut(&p("/root")).unwrap().mode = 0o700;
    // The kernel opens /dev/console for the init before devtmpfs is mounted.
    tree.insert(
        &p("/dev/console"),
        Node {
            kind: NodeKind::CharDevice { major: 5, minor: 1 },
            mode: 0o600,
            uid: 0,
            gid: 0,
        },
    )?;

    // Programs from packages.
    let mut package_files = Vec::new();
    for selection in &def.packages {
        let Some(pkg) = inputs.requested.iter().find(|p| p.name == selection.name) else {
            continue;
        };
        let (files, bytes) = take_package_files(&mut tree, pkg, selection)?;
        package_files.push((pkg.name.clone(), files, bytes));
    }

    // Every dynamic program gets its libraries, before the init (static) and modules go in.
    let closure = closure::add_library_closure(&mut tree, inputs.universe).map_err(AssembleError::Closure)?;

    // Container image archives loaded on first boot.
    let preloaded = add_preload_images(&mut tree, def, inputs.base_dir)?;

    // The init and the helpers that signal it.
    tree.insert(&p("/init"), Node::file(inputs.init.clone(), 0o755))?;
    tree.insert(&p("/sbin/poweroff"), Node::symlink("/init"))?;
    tree.insert(&p("/sbin/reboot"), Node::symlink("/init"))?;
    tree.insert(
        &p(uvmkit_init_config::CONFIG_PATH),
        Node::file(
            FileData::inline(init_config(def, inputs.kernel_release, inputs.modules, &preloaded)),
            0o644,
        ),
    )?;
    tree.insert(
        &p("/etc/hostname"),
        Node::file(FileData::inline(format!("{}\n", def.hostname)), 0o644),
    )?;
    tree.insert(
        &p("/etc/os-release"),
        Node::file(FileData::inline(os_release(def)), 0o644),
    )?;

    // Kernel modules.
    let modules_root =
        TreePath::new(&format!("/lib/modules/{}", inputs.kernel_release)).map_err(AssembleError::Tree)?;
    for module in &inputs.modules.modules {
        tree.insert(
            &modules_root.join(&module.path)?,
            Node::file(module.data.clone(), 0o644),
        )?;
    }

    // Keys that may log in as root over SSH (sshd is one of the definition's services).
    if let Some(ssh) = def.ssh.as_ref().filter(|s| !s.authorized_keys.is_empty()) {
        let mut keys = ssh.authorized_keys.join("\n");
        keys.push('\n');
        tree.mkdir_all(&p("/root/.ssh"))?;
        tree.get_mut(&p("/root/.ssh")).unwrap().mode = 0o700;
        tree.insert(
            &p("/root/.ssh/authorized_keys"),
            Node::file(FileData::inline(keys.into_bytes()), 0o600),
        )?;
    }

    // The definition's own files come last and win.
    add_extra_files(&mut tree, &def.files, inputs.base_dir)?;

    for service in &def.services {
        let program = &service.command[0];
        if !TreePath::new(program).is_ok_and(|path| tree.contains(&path)) {
            return Err(AssembleError::MissingServiceProgram {
                service: service.name.clone(),
                program: program.clone(),
            });
        }
    }
    Ok(AssembledTree {
        tree,
        package_files,
        closure,
    })
}

fn glob_set(globs: &[impl AsRef<str>]) -> GlobSet {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        // Validated when the definition was loaded.
        b.add(Glob::new(g.as_ref()).expect("validated glob"));
    }
    b.build().expect("validated globs")
}

fn take_package_files(
    tree: &mut FileTree,
    pkg: &PackageFiles,
    selection: &PackageSelection,
) -> Result<(usize, u64), AssembleError> {
    let include: Vec<String> = selection
        .include
        .clone()
        .unwrap_or_else(|| DEFAULT_INCLUDE.iter().map(|s| s.to_string()).collect());
    let include_set = glob_set(&include);
    let mut exclude: Vec<String> = ALWAYS_EXCLUDE.iter().map(|s| s.to_string()).collect();
    exclude.extend(selection.exclude.iter().cloned());
    let exclude_set = glob_set(&exclude);
    let (mut files, mut bytes) = (0usize, 0u64);
    for (path, node) in pkg.tree.iter() {
        if matches!(node.kind, NodeKind::Directory) {
            continue;
        }
        let text = path.to_string();
        if !include_set.is_match(&text) || exclude_set.is_match(&text) {
            continue;
        }
        // Keep the directory modes the package gives its parents.
        let mut ancestors = Vec::new();
        let mut cur = path.parent();
        while let Some(dir) = cur {
            if dir.is_root() || tree.contains(&dir) {
                break;
            }
            cur = dir.parent();
            ancestors.push(dir);
        }
        for dir in ancestors.into_iter().rev() {
            let node = pkg
                .tree
                .get(&dir)
                .cloned()
                .filter(|n| n.kind == NodeKind::Directory)
                .unwrap_or_else(Node::directory);
            tree.insert(&dir, node)?;
        }
        let node = match &node.kind {
            // A hard link whose target was not selected becomes a copy of the file.
            NodeKind::HardLink(target) if !tree.contains(target) => {
                pkg.tree.get(target).cloned().unwrap_or_else(|| node.clone())
            }
            _ => node.clone(),
        };
        if let NodeKind::File(d) = &node.kind {
            bytes += d.len();
        }
        tree.insert(path, node)?;
        files += 1;
    }
    if files == 0 {
        return Err(AssembleError::EmptySelection {
            package: pkg.name.clone(),
            include,
        });
    }
    Ok((files, bytes))
}

/// Adds `[[files]]`-style entries to `tree`, relative paths resolved against `base_dir`.
pub fn add_extra_files(tree: &mut FileTree, files: &[ExtraFile], base_dir: &Path) -> Result<(), AssembleError> {
    for f in files {
        let err = |message: String| AssembleError::ExtraFile {
            path: f.path.clone(),
            message,
        };
        let path = TreePath::new(&f.path).map_err(|e| err(e.to_string()))?;
        let node = |kind: NodeKind, default_mode: u32| Node {
            kind,
            mode: f.mode.unwrap_or(default_mode),
            uid: f.uid,
            gid: f.gid,
        };
        match f.kind() {
            ExtraFileKind::Contents(text) => tree.insert(
                &path,
                node(NodeKind::File(FileData::inline(text.as_bytes().to_vec())), 0o644),
            )?,
            ExtraFileKind::Symlink(target) => tree.insert(
                &path,
                Node {
                    kind: NodeKind::Symlink(target.to_string()),
                    mode: 0o777,
                    uid: f.uid,
                    gid: f.gid,
                },
            )?,
            ExtraFileKind::Mkdir => {
                tree.mkdir_all(&path)?;
                *tree.get_mut(&path).unwrap() = node(NodeKind::Directory, 0o755);
            }
            ExtraFileKind::Source(src) => {
                let src = base_dir.join(src);
                let meta = std::fs::metadata(&src).map_err(|e| err(format!("source {}: {e}", src.display())))?;
                if !meta.is_file() {
                    return Err(err(format!(
                        "source {} is not a regular file (use `directory` for a tree)",
                        src.display()
                    )));
                }
                let exec = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0;
                let data = FileData::host_file(&src).map_err(|e| err(format!("source {}: {e}", src.display())))?;
                tree.insert(&path, node(NodeKind::File(data), if exec { 0o755 } else { 0o644 }))?;
            }
            ExtraFileKind::Directory(src) => {
                let src = base_dir.join(src);
                add_host_directory(tree, &path, &src, f)
                    .map_err(|e| err(format!("directory {}: {e}", src.display())))?;
            }
        }
    }
    Ok(())
}

/// Copies a host directory below `dest`, in sorted order; owners come from the entry, modes
/// from the host's permission bits (or the entry's mode, for the top directory).
fn add_host_directory(tree: &mut FileTree, dest: &TreePath, src: &Path, f: &ExtraFile) -> Result<(), String> {
    tree.mkdir_all(dest).map_err(|e| e.to_string())?;
    if let Some(node) = tree.get_mut(dest) {
        node.mode = f.mode.unwrap_or(0o755);
        node.uid = f.uid;
        node.gid = f.gid;
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(src)
        .map_err(|e| e.to_string())?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    entries.sort();
    for entry in entries {
        let name = entry
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{} has a name that is not UTF-8", entry.display()))?;
        let target = dest.join(name).map_err(|e| e.to_string())?;
        let meta = std::fs::symlink_metadata(&entry).map_err(|e| format!("{}: {e}", entry.display()))?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
        let kind = if meta.is_dir() {
            let sub = ExtraFile {
                mode: Some(mode),
                ..f.clone()
            };
            add_host_directory(tree, &target, &entry, &sub)?;
            continue;
        } else if meta.file_type().is_symlink() {
            NodeKind::Symlink(
                std::fs::read_link(&entry)
                    .map_err(|e| e.to_string())?
                    .to_string_lossy()
                    .into_owned(),
            )
        } else if meta.is_file() {
            NodeKind::File(FileData::host_file(&entry).map_err(|e| e.to_string())?)
        } else {
            return Err(format!(
                "{} is neither a file, a directory nor a symbolic link",
                entry.display()
            ));
        };
        let mode = if matches!(kind, NodeKind::Symlink(_)) {
            0o777
        } else {
            mode
        };
        tree.insert(
            &target,
            Node {
                kind,
                mode,
                uid: f.uid,
                gid: f.gid,
            },
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Where `[preload]` archives go in the image.
pub const PRELOAD_DIR: &str = "/usr/share/uvmkit/preload";

/// A container image archive in the image, as the init's `[preload]` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreloadedImage {
    /// Its path inside the image.
    pub path: String,
    /// The sha256 of its bytes: names the marker the init leaves once it is loaded.
    pub sha256: String,
}

/// Adds the `[preload]` archives under [`PRELOAD_DIR`] and returns them with their hashes.
fn add_preload_images(
    tree: &mut FileTree,
    def: &ImageDefinition,
    base_dir: &Path,
) -> Result<Vec<PreloadedImage>, AssembleError> {
    let Some(preload) = &def.preload else {
        return Ok(Vec::new());
    };
    let mut images = Vec::new();
    for image in &preload.images {
        let host = base_dir.join(image);
        let error = |message: String| AssembleError::Preload {
            image: host.clone(),
            message,
        };
        let mut file = std::fs::File::open(&host).map_err(|e| error(e.to_string()))?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(|e| error(e.to_string()))?;
        let name = Path::new(image)
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| error("the file name must be UTF-8".into()))?;
        let path = format!("{PRELOAD_DIR}/{name}");
        tree.mkdir_all(&p(PRELOAD_DIR))?;
        let data = FileData::host_file(&host).map_err(|e| error(e.to_string()))?;
        tree.insert(&TreePath::new(&path)?, Node::file(data, 0o644))?;
        images.push(PreloadedImage {
            path,
            sha256: hex::encode(hasher.finalize()),
        });
    }
    Ok(images)
}

/// `/etc/uvmkit/init.toml`: what the init needs to know, in the types both sides share.
pub fn init_config(
    def: &ImageDefinition,
    kernel_release: &str,
    modules: &ModuleSelection,
    preloaded: &[PreloadedImage],
) -> String {
    // `config::validate` has checked every address of the definition.
    let ipv4 = |text: &String| -> Ipv4Addr { text.parse().expect("validated IPv4 address") };
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
        network: def.network.as_ref().map(|network| NetworkSection {
            dhcp: network.dhcp,
            timeout: network.timeout,
            static_v4: network.static_v4.as_ref().map(|s| StaticSection {
                address: s.address.clone(),
                gateway: s.gateway.as_ref().map(ipv4),
                dns: s.dns.iter().map(ipv4).collect(),
            }),
        }),
        data_disk: def.data_disk.as_ref().map(|data| DataDiskSection {
            format_blank: data.format_blank,
            binds: data.binds.iter().map(PathBuf::from).collect(),
            identity: data.identity,
        }),
        services: def.services.clone(),
        preload: def.preload.as_ref().map(|preload| PreloadSection {
            after: preload.service.clone(),
            command: preload.command.clone(),
            images: preloaded
                .iter()
                .map(|image| PreloadImage {
                    path: image.path.clone().into(),
                    sha256: image.sha256.clone(),
                })
                .collect(),
        }),
    };
    let text = toml::to_string(&config).expect("the init configuration serializes as TOML");
    format!("# Written by uvmkit build; read by the init (PID 1) at boot.\n{text}")
}

fn os_release(def: &ImageDefinition) -> String {
    format!(
        "NAME=\"uvmkit\"\nID=uvmkit\nPRETTY_NAME=\"uvmkit {name}\"\nVARIANT_ID={name}\nVERSION_ID={version}\n",
        name = def.name,
        version = env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn definition(text: &str) -> ImageDefinition {
        config::parse(text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn default_selection_takes_programs_and_config_not_docs() {
        let mut pkg = FileTree::new();
        for (path, mode) in [
            ("/usr/bin/tool", 0o755),
            ("/etc/tool.conf", 0o644),
            ("/usr/share/doc/tool/README", 0o644),
            ("/usr/lib/x/data", 0o644),
        ] {
            pkg.insert(&p(path), Node::file(FileData::inline(b"#!/bin/sh\n".to_vec()), mode))
                .unwrap();
        }
        let def = definition("name = \"t\"\n[[packages]]\nname = \"tool\"\n[[files]]\npath = \"/etc/motd\"\ncontents = \"hi\"\nmode = 0o600\n");
        let requested = vec![PackageFiles {
            name: "tool".into(),
            version: "1".into(),
            tree: pkg.clone(),
        }];
        let init = FileData::inline(b"init".to_vec());
        let modules = ModuleSelection::default();
        let out = assemble(&AssemblyInputs {
            definition: &def,
            base_dir: Path::new("."),
            init,
            requested: &requested,
            universe: &pkg,
            kernel_release: "6.1.0-x",
            modules: &modules,
        })
        .unwrap();
        let t = &out.tree;
        assert!(t.contains(&p("/usr/bin/tool")) && t.contains(&p("/etc/tool.conf")));
        assert!(!t.contains(&p("/usr/share/doc/tool/README")) && !t.contains(&p("/usr/lib/x/data")));
        assert_eq!(t.get(&p("/etc/motd")).unwrap().mode, 0o600);
        assert_eq!(t.get(&p("/dev/console")).unwrap().st_mode(), 0o020600);
        assert_eq!(
            t.get(&p("/sbin/poweroff")).unwrap().kind,
            NodeKind::Symlink("/init".into())
        );
        assert_eq!(out.package_files, vec![("tool".to_string(), 2, 20)]);
        let cfg = match &t.get(&p("/etc/uvmkit/init.toml")).unwrap().kind {
            NodeKind::File(d) => String::from_utf8(d.read_all().unwrap()).unwrap(),
            _ => unreachable!(),
        };
        assert!(cfg.contains("kernel_release = \"6.1.0-x\""), "{cfg}");
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

    /// Assembles `def` with one package holding `/usr/bin/tool`, from `base_dir`.
    fn assemble_with_tool(def: &ImageDefinition, base_dir: &Path) -> Result<AssembledTree, AssembleError> {
        let mut pkg = FileTree::new();
        pkg.insert(
            &p("/usr/bin/tool"),
            Node::file(FileData::inline(b"#!/bin/sh\n".to_vec()), 0o755),
        )
        .unwrap();
        let requested = vec![PackageFiles {
            name: "tool".into(),
            version: "1".into(),
            tree: pkg.clone(),
        }];
        let modules = ModuleSelection::default();
        assemble(&AssemblyInputs {
            definition: def,
            base_dir,
            init: FileData::inline(b"init".to_vec()),
            requested: &requested,
            universe: &pkg,
            kernel_release: "6.1",
            modules: &modules,
        })
    }

    fn file_text(tree: &FileTree, path: &str) -> String {
        match &tree.get(&p(path)).unwrap().kind {
            NodeKind::File(d) => String::from_utf8(d.read_all().unwrap()).unwrap(),
            other => panic!("{path} is {other:?}"),
        }
    }

    #[test]
    fn services_keys_and_preloaded_images_reach_the_image_and_the_init() {
        let dir = std::env::temp_dir().join(format!("uvmkit-assemble-preload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("app.tar"), b"archive bytes").unwrap();
        let def = definition(
            r#"name = "t"
[[packages]]
name = "tool"
[[services]]
name = "tool"
command = ["/usr/bin/tool", "--serve"]
env = { MODE = "fast" }
ready = { tcp = 8080 }
restart = "always"
rlimits = { nofile = 4096, core = "unlimited" }
directories = ["/run/tool"]
[ssh]
authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnly+a+test user@host"]
[preload]
service = "tool"
images = ["app.tar"]
"#,
        );
        let out = assemble_with_tool(&def, &dir).unwrap();
        let t = &out.tree;
        assert_eq!(file_text(t, "/usr/share/uvmkit/preload/app.tar"), "archive bytes");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(t.get(&p("/root/.ssh")).unwrap().mode, 0o700);
        assert_eq!(t.get(&p("/root/.ssh/authorized_keys")).unwrap().mode, 0o600);
        assert_eq!(
            file_text(t, "/root/.ssh/authorized_keys"),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnly+a+test user@host\n"
        );
        let config: toml::Value = toml::from_str(&file_text(t, "/etc/uvmkit/init.toml")).unwrap();
        let service = &config["services"][0];
        assert_eq!(service["name"].as_str(), Some("tool"));
        assert_eq!(service["command"][1].as_str(), Some("--serve"));
        assert_eq!(service["env"]["MODE"].as_str(), Some("fast"));
        assert_eq!(service["ready"]["tcp"].as_integer(), Some(8080));
        assert_eq!(service["restart"].as_str(), Some("always"));
        assert_eq!(service["rlimits"]["nofile"].as_integer(), Some(4096));
        assert_eq!(service["rlimits"]["core"].as_str(), Some("unlimited"));
        assert_eq!(service["directories"][0].as_str(), Some("/run/tool"));
        assert_eq!(
            service["ready_timeout"].as_integer(),
            Some(120),
            "defaults are written out"
        );
        let preload = &config["preload"];
        assert_eq!(preload["after"].as_str(), Some("tool"));
        assert_eq!(preload["command"][0].as_str(), Some("/usr/bin/docker"));
        assert_eq!(
            preload["images"][0]["path"].as_str(),
            Some("/usr/share/uvmkit/preload/app.tar")
        );
        // sha256("archive bytes")
        let expected = hex::encode(Sha256::digest(b"archive bytes"));
        assert_eq!(preload["images"][0]["sha256"].as_str(), Some(expected.as_str()));
    }

    #[test]
    fn a_service_program_missing_from_the_image_is_named() {
        let def = definition(
            "name = \"t\"\n[[packages]]\nname = \"tool\"\n[[services]]\nname = \"sshd\"\ncommand = [\"/usr/sbin/sshd\", \"-D\"]\n",
        );
        let e = assemble_with_tool(&def, Path::new(".")).err().unwrap().to_string();
        assert!(e.contains("service sshd: /usr/sbin/sshd is not in the image"), "{e}");
        let def = definition(
            "name = \"t\"\n[[packages]]\nname = \"tool\"\n[[services]]\nname = \"tool\"\ncommand = [\"/usr/bin/tool\"]\n[preload]\nservice = \"tool\"\nimages = [\"missing.tar\"]\n",
        );
        let e = assemble_with_tool(&def, Path::new("/nonexistent"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("preload image /nonexistent/missing.tar"), "{e}");
    }

    #[test]
    fn an_include_that_matches_nothing_is_an_error() {
        let def = definition("name = \"t\"\n[[packages]]\nname = \"tool\"\ninclude = [\"/nothing/*\"]\n");
        let requested = vec![PackageFiles {
            name: "tool".into(),
            version: "1".into(),
            tree: FileTree::new(),
        }];
        let modules = ModuleSelection::default();
        let e = assemble(&AssemblyInputs {
            definition: &def,
            base_dir: Path::new("."),
            init: FileData::inline(vec![]),
            requested: &requested,
            universe: &FileTree::new(),
            kernel_release: "x",
            modules: &modules,
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("package tool") && e.contains("/nothing/*"), "{e}");
    }
}
