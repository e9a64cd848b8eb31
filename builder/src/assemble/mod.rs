//! Assembles the image's root file tree from resolved inputs: the init and its configuration
//! ([`init_config`]), the files taken from packages ([`packages`]) with their library closure
//! ([`closure`]), the kernel's modules, the preloaded container images ([`preload`]) and the
//! files the definition adds ([`extra_files`]). Pure and deterministic: the same inputs give
//! the same tree; nothing here touches the network.

pub mod closure;
pub mod extra_files;
pub mod init_config;
pub mod os_release;
pub mod packages;
pub mod preload;

pub use extra_files::{add_extra_files, ExtraFileError};
pub use os_release::os_release;
pub use packages::LeftOut;
pub use preload::{PreloadedImage, PRELOAD_DIR};

use crate::definition::ImageDefinition;
use crate::inputs::{ModuleSelection, PackageFiles};
use closure::{ClosureError, ClosureReport};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use uvmkit_filetree::{FileData, FileTree, Node, NodeKind, TreeError, TreePath};

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
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// A `[[packages]]` entry's selection matched nothing.
    #[error(
        "package {package}: include = {include:?} matches none of its files; list them with `uvmkit inspect --files`"
    )]
    EmptySelection {
        /// The package.
        package: String,
        /// Its include globs.
        include: Vec<String>,
    },
    /// A library is missing or a program unreadable.
    #[error(transparent)]
    Closure(#[from] ClosureError),
    /// A `[[files]]` entry could not be made.
    #[error("files entry {path}: {source}")]
    ExtraFile {
        /// The entry's path in the image.
        path: TreePath,
        /// What went wrong.
        source: ExtraFileError,
    },
    /// Two entries conflict in the tree.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// A `[[services]]` program is not in the image.
    #[error(
        "service {service}: {program} is not in the image; add the package that provides it to [[packages]] \
         (and to its include list if it has one), or fix the path"
    )]
    MissingServiceProgram {
        /// The service.
        service: String,
        /// Its program.
        program: String,
    },
    /// A `[preload]` archive cannot be read.
    #[error("preload image {}: {message}; the path is relative to the definition", image.display())]
    Preload {
        /// The archive on the host.
        image: PathBuf,
        /// What reading it reported.
        message: String,
    },
}

/// The assembled tree and what went into it.
pub struct AssembledTree {
    /// The root file tree of the image (the initrd's contents).
    pub tree: FileTree,
    /// Files taken from each requested package: (name, files, bytes).
    pub package_files: Vec<(String, usize, u64)>,
    /// What the library closure added.
    pub closure: ClosureReport,
    /// Files the `[[packages]]` entries selected but the packages' defaults left out.
    pub left_out: Vec<LeftOut>,
    /// Where each non-directory entry of `tree` came from.
    pub origins: BTreeMap<TreePath, Origin>,
}

/// Where an entry of the image tree came from, for `uvmkit inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Taken from this package by its `[[packages]]` entry.
    Package(String),
    /// A library (or the ELF interpreter) a program needs, from the library closure.
    Library,
    /// The init, or a file uvmkit writes (its configuration, host name, os-release, keys).
    Uvmkit,
    /// A kernel module.
    KernelModule,
    /// A `[preload]` archive.
    Preload,
    /// A `[[files]]` entry of the definition.
    Definition,
}

/// Records `origin` for every non-directory entry of `tree` that has none yet.
fn claim(origins: &mut BTreeMap<TreePath, Origin>, tree: &FileTree, origin: Origin) {
    for (path, node) in tree.iter() {
        if node.kind != NodeKind::Directory && !origins.contains_key(path) {
            origins.insert(path.clone(), origin.clone());
        }
    }
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

    let mut origins = BTreeMap::new();
    claim(&mut origins, &tree, Origin::Uvmkit);

    // Programs from packages.
    let mut package_files = Vec::new();
    let mut left_out = Vec::new();
    for selection in &def.packages {
        let Some(pkg) = inputs.requested.iter().find(|p| p.name == selection.name) else {
            continue;
        };
        let taken = packages::take_package_files(&mut tree, pkg, selection)?;
        package_files.push((pkg.name.clone(), taken.files, taken.bytes));
        left_out.extend(taken.left_out);
        for path in taken.paths {
            origins.entry(path).or_insert_with(|| Origin::Package(pkg.name.clone()));
        }
    }

    // Every dynamic program gets its libraries, before the init (static) and modules go in.
    let closure = closure::add_library_closure(&mut tree, inputs.universe).map_err(AssembleError::Closure)?;
    claim(&mut origins, &tree, Origin::Library);

    // Container image archives loaded on first boot.
    let preloaded = preload::add_preload_images(&mut tree, def, inputs.base_dir)?;
    claim(&mut origins, &tree, Origin::Preload);

    // The init and the helpers that signal it.
    tree.insert(&p("/init"), Node::file(inputs.init.clone(), 0o755))?;
    tree.insert(&p("/sbin/poweroff"), Node::symlink("/init"))?;
    tree.insert(&p("/sbin/reboot"), Node::symlink("/init"))?;
    tree.insert(
        &p(uvmkit_init_config::CONFIG_PATH),
        Node::file(
            FileData::inline(init_config::init_config(
                def,
                inputs.kernel_release,
                inputs.modules,
                &preloaded,
            )),
            0o644,
        ),
    )?;
    tree.insert(
        &p("/etc/hostname"),
        Node::file(FileData::inline(format!("{}\n", def.hostname)), 0o644),
    )?;
    tree.insert(
        &p("/etc/os-release"),
        Node::file(FileData::inline(os_release::os_release(def)), 0o644),
    )?;

    claim(&mut origins, &tree, Origin::Uvmkit);

    // Kernel modules.
    let modules_root =
        TreePath::new(&format!("/lib/modules/{}", inputs.kernel_release)).map_err(AssembleError::Tree)?;
    for module in &inputs.modules.modules {
        tree.insert(
            &modules_root.join(&module.path)?,
            Node::file(module.data.clone(), 0o644),
        )?;
    }

    claim(&mut origins, &tree, Origin::KernelModule);

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

    // dockerd's settings from `[docker]` (validation refused a `[[files]]` entry for the path).
    if let Some(json) = &def.docker_daemon_json {
        tree.insert(
            &p(crate::definition::DOCKER_DAEMON_JSON),
            Node::file(FileData::inline(json.clone().into_bytes()), 0o644),
        )?;
    }

    claim(&mut origins, &tree, Origin::Uvmkit);

    // The definition's own files come last and win.
    extra_files::add_extra_files(&mut tree, &def.files, inputs.base_dir)
        .map_err(|(path, source)| AssembleError::ExtraFile { path, source })?;
    for file in &def.files {
        let below: Vec<TreePath> = tree.descendants(&file.path).map(|(path, _)| path.clone()).collect();
        for path in below.into_iter().chain([file.path.clone()]) {
            if tree.get(&path).is_some_and(|n| n.kind != NodeKind::Directory) {
                origins.insert(path, Origin::Definition);
            }
        }
    }
    origins.retain(|path, _| tree.contains(path));

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
        left_out,
        origins,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition as config;
    use sha2::{Digest, Sha256};
    use uvmkit_filetree::NodeKind;

    fn definition(text: &str) -> ImageDefinition {
        config::parse(text, Path::new("t.toml")).unwrap()
    }

    /// containerd as Debian ships it (scripts stand in for the programs: no ELF closure).
    fn containerd_package() -> PackageFiles {
        let mut tree = FileTree::new();
        for name in [
            "containerd",
            "containerd-shim",
            "containerd-shim-runc-v1",
            "containerd-shim-runc-v2",
            "containerd-stress",
            "ctr",
        ] {
            let data = FileData::inline(format!("#!/bin/sh\n# {name}\n").into_bytes());
            tree.insert(&p(&format!("/usr/bin/{name}")), Node::file(data, 0o755))
                .unwrap();
        }
        PackageFiles {
            name: "containerd".into(),
            version: "1.7.24".into(),
            tree,
        }
    }

    /// The programs of containerd that `entry` (a `[[packages]]` table) puts in the image,
    /// and the paths the defaults left out.
    fn containerd_programs(entry: &str) -> (Vec<String>, Vec<String>) {
        let def = definition(&format!("name = \"t\"\n[[packages]]\nname = \"containerd\"\n{entry}"));
        let requested = vec![containerd_package()];
        let modules = ModuleSelection::default();
        let out = assemble(&AssemblyInputs {
            definition: &def,
            base_dir: Path::new("."),
            init: FileData::inline(b"init".to_vec()),
            requested: &requested,
            universe: &requested[0].tree,
            kernel_release: "6.1.0-x",
            modules: &modules,
        })
        .unwrap();
        let programs = out
            .tree
            .children(&p("/usr/bin"))
            .map(|(path, _)| path.file_name().to_string())
            .collect();
        for (path, origin) in &out.origins {
            if path.as_str().starts_with("/usr/bin/c") {
                assert_eq!(origin, &Origin::Package("containerd".into()), "{path}");
            }
        }
        (programs, out.left_out.into_iter().map(|l| l.path).collect())
    }

    #[test]
    fn package_defaults_leave_out_test_tools_and_legacy_shims() {
        let (programs, left_out) = containerd_programs("");
        assert_eq!(programs, ["containerd", "containerd-shim-runc-v2"]);
        assert_eq!(
            left_out,
            [
                "/usr/bin/containerd-shim",
                "/usr/bin/containerd-shim-runc-v1",
                "/usr/bin/containerd-stress",
                "/usr/bin/ctr"
            ]
        );
        // A glob does not bring them back; naming the path does, and only that path.
        let (programs, _) = containerd_programs("include = [\"/usr/bin/*\"]\n");
        assert_eq!(programs, ["containerd", "containerd-shim-runc-v2"]);
        let (programs, left_out) = containerd_programs("include = [\"/usr/bin/*\", \"/usr/bin/ctr\"]\n");
        assert_eq!(programs, ["containerd", "containerd-shim-runc-v2", "ctr"]);
        assert!(!left_out.contains(&"/usr/bin/ctr".to_string()) && left_out.len() == 3);
        // `defaults = false` keeps everything the entry selects.
        let (programs, left_out) = containerd_programs("defaults = false\n");
        assert_eq!(programs.len(), 6);
        assert!(left_out.is_empty());
        // The user's own exclude still applies with the defaults off.
        let (programs, _) = containerd_programs("defaults = false\nexclude = [\"/usr/bin/ctr\"]\n");
        assert_eq!(programs.len(), 5);
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
        // Through the engine's API by default: no command.
        assert_eq!(preload["socket"].as_str(), Some("/var/run/docker.sock"));
        assert!(preload.get("command").is_none());
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
