//! Assembles the image's root file tree from resolved inputs: the init and its configuration
//! ([`init_config`]), the files taken from packages ([`packages`]) with their library closure
//! ([`closure`]), the kernel's modules, the preloaded container images ([`preload`]) and the
//! files the definition adds ([`extra_files`]). Pure and deterministic: the same inputs give
//! the same tree; nothing here touches the network.

pub mod closure;
pub mod extra_files;
pub mod init_config;
pub mod os_release;
mod packages;
pub mod preload;

pub use extra_files::{add_extra_files, ExtraFileError};
pub use os_release::os_release;
pub use preload::{PreloadedImage, PRELOAD_DIR};

use crate::definition::ImageDefinition;
use crate::inputs::{ModuleSelection, PackageFiles};
use closure::{ClosureError, ClosureReport};
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
        let (files, bytes) = packages::take_package_files(&mut tree, pkg, selection)?;
        package_files.push((pkg.name.clone(), files, bytes));
    }

    // Every dynamic program gets its libraries, before the init (static) and modules go in.
    let closure = closure::add_library_closure(&mut tree, inputs.universe).map_err(AssembleError::Closure)?;

    // Container image archives loaded on first boot.
    let preloaded = preload::add_preload_images(&mut tree, def, inputs.base_dir)?;

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

    // dockerd's settings from `[docker]` (validation refused a `[[files]]` entry for the path).
    if let Some(json) = &def.docker_daemon_json {
        tree.insert(
            &p(crate::definition::DOCKER_DAEMON_JSON),
            Node::file(FileData::inline(json.clone().into_bytes()), 0o644),
        )?;
    }

    // The definition's own files come last and win.
    extra_files::add_extra_files(&mut tree, &def.files, inputs.base_dir)
        .map_err(|(path, source)| AssembleError::ExtraFile { path, source })?;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition as config;
    use sha2::{Digest, Sha256};
    use uvmkit_filetree::NodeKind;

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
