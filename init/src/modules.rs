//! Kernel module loading: dependency order, then `finit_module(2)` one by one.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::log;
use crate::sys;
use uvmkit_init_config::ModuleSpec;

/// Something that keeps a load order from being exact; the modules are still loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderProblem {
    /// `module` depends on `dependency`, which the configuration does not list.
    MissingDependency {
        /// The dependent module.
        module: String,
        /// The unlisted module.
        dependency: String,
    },
    /// The modules depend on each other in a circle; each is loaded after the others it can be.
    Cycle {
        /// The modules on the circle, in dependency order, starting from the first one listed.
        modules: Vec<String>,
    },
    /// The same module name is listed twice; the later entry is ignored.
    Duplicate {
        /// The name.
        module: String,
    },
}

impl fmt::Display for OrderProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrderProblem::MissingDependency { module, dependency } => write!(
                f,
                "module {module} depends on {dependency}, which the image does not list; \
                 loading {module} anyway (add {dependency} to the image's modules)"
            ),
            OrderProblem::Cycle { modules } => write!(
                f,
                "modules depend on each other in a cycle ({} -> {}); loading them in listed order",
                modules.join(" -> "),
                modules.first().map(String::as_str).unwrap_or("")
            ),
            OrderProblem::Duplicate { module } => {
                write!(f, "module {module} is listed twice; using the first entry")
            }
        }
    }
}

/// The order to load modules in, as indices into the configured list, and what kept it from
/// being exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    /// Indices into the module list: every dependency before its dependents.
    pub order: Vec<usize>,
    /// Missing dependencies, cycles and duplicates found on the way.
    pub problems: Vec<OrderProblem>,
}

/// Module names treat `-` and `_` alike (the kernel does so too).
fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// Orders `modules` so that each comes after the modules it depends on.
///
/// Deterministic: ties keep the configured order. Every module appears exactly once (duplicate
/// names once, at their first entry), including those with missing dependencies or on a cycle.
pub fn load_order(modules: &[ModuleSpec]) -> LoadPlan {
    let mut problems = Vec::new();
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    for (index, module) in modules.iter().enumerate() {
        let name = normalise(&module.name);
        match by_name.entry(name) {
            std::collections::btree_map::Entry::Occupied(_) => problems.push(OrderProblem::Duplicate {
                module: module.name.clone(),
            }),
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(index);
            }
        }
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        InProgress,
        Done,
    }
    let mut marks = vec![Mark::New; modules.len()];
    let mut order = Vec::with_capacity(modules.len());

    // Depth-first post-order with an explicit stack (no recursion depth limit on bad input):
    // each frame is a module and how many of its dependencies have been looked at.
    for root in 0..modules.len() {
        if marks[root] != Mark::New || by_name.get(&normalise(&modules[root].name)) != Some(&root) {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        marks[root] = Mark::InProgress;
        while let Some(&mut (current, ref mut next_dep)) = stack.last_mut() {
            let depends = &modules[current].depends;
            if *next_dep == depends.len() {
                marks[current] = Mark::Done;
                order.push(current);
                stack.pop();
                continue;
            }
            let dependency = &depends[*next_dep];
            *next_dep += 1;
            match by_name.get(&normalise(dependency)) {
                None => problems.push(OrderProblem::MissingDependency {
                    module: modules[current].name.clone(),
                    dependency: dependency.clone(),
                }),
                Some(&dep) => match marks[dep] {
                    Mark::Done => {}
                    Mark::New => {
                        marks[dep] = Mark::InProgress;
                        stack.push((dep, 0));
                    }
                    Mark::InProgress => {
                        // A back edge: the stack from `dep` to the top is the cycle.
                        let start = stack.iter().position(|&(m, _)| m == dep).unwrap_or(0);
                        let members = stack[start..].iter().map(|&(m, _)| modules[m].name.clone()).collect();
                        problems.push(OrderProblem::Cycle { modules: members });
                    }
                },
            }
        }
    }
    LoadPlan { order, problems }
}

/// `finit_module` flags for a module file: compressed files are decompressed by the kernel.
pub fn init_flags(path: &Path) -> u32 {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    if name.ends_with(".ko.xz") || name.ends_with(".ko.zst") || name.ends_with(".ko.gz") {
        sys::MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    }
}

/// What happened to one module.
#[derive(Debug)]
pub enum LoadOutcome {
    /// The kernel loaded it.
    Loaded,
    /// It was already loaded (or built in).
    AlreadyLoaded,
    /// The driver found none of its hardware (ENODEV): a driver for another hypervisor.
    NoDevice,
    /// It could not be loaded; the message says why.
    Failed(String),
}

/// Loads one module file with `finit_module(2)`.
pub fn load_module(file_path: &Path) -> LoadOutcome {
    let file = match File::open(file_path) {
        Ok(file) => file,
        Err(err) => return LoadOutcome::Failed(format!("cannot open {}: {err}", file_path.display())),
    };
    let flags = init_flags(file_path);
    match sys::finit_module(file.as_fd(), flags) {
        Ok(()) => LoadOutcome::Loaded,
        Err(err) if err.raw_os_error() == Some(libc::EEXIST) => LoadOutcome::AlreadyLoaded,
        // An image carries the drivers of every target hypervisor; the others refuse to load.
        Err(err) if err.raw_os_error() == Some(libc::ENODEV) => LoadOutcome::NoDevice,
        // EOPNOTSUPP: built without CONFIG_MODULE_DECOMPRESS; EINVAL: older than Linux 5.17,
        // which does not know the flag.
        Err(err) if flags != 0 && matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => {
            LoadOutcome::Failed(format!(
                "the kernel refused compressed module {} ({err}): loading compressed modules \
                 needs Linux 5.17 or later built with CONFIG_MODULE_DECOMPRESS; ship it \
                 uncompressed",
                file_path.display()
            ))
        }
        Err(err) => LoadOutcome::Failed(describe_failure(file_path, &err)),
    }
}

fn describe_failure(file_path: &Path, err: &io::Error) -> String {
    let hint = match err.raw_os_error() {
        Some(libc::ENOEXEC) => " (not a module for this kernel: check kernel_release)",
        Some(libc::ENOENT) => " (an unknown symbol: a dependency is missing; see dmesg)",
        Some(libc::EKEYREJECTED) | Some(libc::EKEYREVOKED) => " (signature rejected: module signing is enforced)",
        _ => "",
    };
    format!("cannot load {}: {err}{hint}", file_path.display())
}

/// Tally of a load run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadSummary {
    /// Newly loaded modules.
    pub loaded: usize,
    /// Modules already present.
    pub already: usize,
    /// Modules whose hardware is not here (drivers for another hypervisor), and the modules
    /// that depend on them.
    pub not_here: usize,
    /// Modules that failed.
    pub failed: usize,
}

/// Loads every configured module from `modules_dir` in dependency order, logging problems and
/// failures as it goes; never stops early.
pub fn load_all(modules: &[ModuleSpec], modules_dir: &Path) -> LoadSummary {
    let started = Instant::now();
    let plan = load_order(modules);
    for problem in &plan.problems {
        log!("{problem}");
    }
    let mut summary = LoadSummary::default();
    // Modules that did not load; a module needing one of them is not tried.
    let mut not_loaded: Vec<(&str, bool)> = Vec::new();
    for index in plan.order {
        let module = &modules[index];
        let missing = module.depends.iter().find_map(|d| {
            let d = d.replace('-', "_");
            not_loaded.iter().find(|(n, _)| n.replace('-', "_") == d).copied()
        });
        if let Some((dependency, absent_hardware)) = missing {
            if absent_hardware {
                summary.not_here += 1;
            } else {
                summary.failed += 1;
                log!(
                    "module {}: not loaded: it needs {dependency}, which failed",
                    module.name
                );
            }
            not_loaded.push((module.name.as_str(), absent_hardware));
            continue;
        }
        let file_path: PathBuf = modules_dir.join(&module.path);
        let outcome = if crate::hypervisor::refuses_this_machine(&module.name) {
            LoadOutcome::NoDevice
        } else {
            load_module(&file_path)
        };
        match outcome {
            LoadOutcome::Loaded => summary.loaded += 1,
            LoadOutcome::AlreadyLoaded => summary.already += 1,
            LoadOutcome::NoDevice => {
                summary.not_here += 1;
                not_loaded.push((module.name.as_str(), true));
                log!(
                    "module {}: no such device here (a driver for another hypervisor)",
                    module.name
                );
            }
            LoadOutcome::Failed(message) => {
                summary.failed += 1;
                not_loaded.push((module.name.as_str(), false));
                log!("module {}: {message}", module.name);
            }
        }
    }
    log!(
        "modules loaded ({}; {} already present, {} not for this machine, {} failed) in {} ms",
        summary.loaded,
        summary.already,
        summary.not_here,
        summary.failed,
        started.elapsed().as_millis()
    );
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, depends: &[&str]) -> ModuleSpec {
        ModuleSpec {
            name: name.to_string(),
            path: PathBuf::from(format!("kernel/{name}.ko")),
            depends: depends.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn names(modules: &[ModuleSpec], plan: &LoadPlan) -> Vec<String> {
        plan.order.iter().map(|&i| modules[i].name.clone()).collect()
    }

    #[test]
    fn dependencies_come_first() {
        let modules = vec![
            module("virtio_blk", &["virtio", "virtio_ring"]),
            module("virtio_pci", &["virtio_pci_modern_dev", "virtio", "virtio_ring"]),
            module("virtio_ring", &["virtio"]),
            module("virtio", &[]),
            module("virtio_pci_modern_dev", &[]),
            module("evdev", &[]),
        ];
        let plan = load_order(&modules);
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        assert_eq!(
            names(&modules, &plan),
            [
                "virtio",
                "virtio_ring",
                "virtio_blk",
                "virtio_pci_modern_dev",
                "virtio_pci",
                "evdev"
            ]
        );
    }

    #[test]
    fn every_module_appears_once_after_its_dependencies() {
        // A diamond with dash/underscore spelling differences.
        let modules = vec![
            module("d", &["b", "c"]),
            module("b", &["a-x"]),
            module("c", &["a_x"]),
            module("a_x", &[]),
        ];
        let plan = load_order(&modules);
        assert!(plan.problems.is_empty());
        let order = names(&modules, &plan);
        assert_eq!(order, ["a_x", "b", "c", "d"]);
    }

    #[test]
    fn missing_dependency_is_reported_and_module_still_loads() {
        let modules = vec![module("a", &["ghost"]), module("b", &["a"])];
        let plan = load_order(&modules);
        assert_eq!(names(&modules, &plan), ["a", "b"]);
        assert_eq!(
            plan.problems,
            [OrderProblem::MissingDependency {
                module: "a".into(),
                dependency: "ghost".into()
            }]
        );
        assert!(plan.problems[0].to_string().contains("ghost"));
    }

    #[test]
    fn cycle_is_reported_and_the_rest_still_load() {
        let modules = vec![
            module("x", &["y"]),
            module("y", &["z"]),
            module("z", &["x"]),
            module("free", &[]),
            module("user", &["x"]),
        ];
        let plan = load_order(&modules);
        assert_eq!(
            plan.problems,
            [OrderProblem::Cycle {
                modules: vec!["x".into(), "y".into(), "z".into()]
            }]
        );
        let order = names(&modules, &plan);
        assert_eq!(order.len(), 5);
        assert_eq!(order, ["z", "y", "x", "free", "user"]);
        assert!(plan.problems[0].to_string().contains("x -> y -> z -> x"));
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let modules = vec![module("a", &["a"])];
        let plan = load_order(&modules);
        assert_eq!(names(&modules, &plan), ["a"]);
        assert_eq!(
            plan.problems,
            [OrderProblem::Cycle {
                modules: vec!["a".into()]
            }]
        );
    }

    #[test]
    fn duplicates_are_reported_and_loaded_once() {
        let modules = vec![module("a", &[]), module("a", &[]), module("b", &["a"])];
        let plan = load_order(&modules);
        assert_eq!(plan.order, [0, 2]);
        assert_eq!(plan.problems, [OrderProblem::Duplicate { module: "a".into() }]);
    }

    #[test]
    fn long_chain_does_not_overflow_the_stack() {
        let modules: Vec<ModuleSpec> = (0..100_000)
            .map(|i| ModuleSpec {
                name: format!("m{i}"),
                path: PathBuf::from("x.ko"),
                depends: if i + 1 < 100_000 {
                    vec![format!("m{}", i + 1)]
                } else {
                    vec![]
                },
            })
            .collect();
        let plan = load_order(&modules);
        assert_eq!(plan.order.len(), 100_000);
        assert_eq!(plan.order[0], 99_999);
        assert!(plan.problems.is_empty());
    }

    #[test]
    fn compressed_modules_ask_the_kernel_to_decompress() {
        assert_eq!(init_flags(Path::new("kernel/a.ko")), 0);
        assert_eq!(init_flags(Path::new("kernel/a.ko.xz")), 4);
        assert_eq!(init_flags(Path::new("kernel/a.ko.zst")), 4);
        assert_eq!(init_flags(Path::new("kernel/xz.ko")), 0);
    }

    #[test]
    fn a_missing_file_is_a_failure_not_a_panic() {
        match load_module(Path::new("/nonexistent/uvmkit/x.ko")) {
            LoadOutcome::Failed(message) => assert!(message.contains("/nonexistent/uvmkit/x.ko")),
            other => panic!("unexpected {other:?}"),
        }
    }
}
