//! What a kernel must provide, per feature and per hypervisor (`kernel-config/*.toml`), and
//! the check of a kernel's `.config` against it.
//!
//! The files are compiled in, so a released `uvmkit` carries them.

use super::target::Target;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

/// The embedded `kernel-config/` files, by feature name.
const FILES: [(&str, &str); 7] = [
    ("base", include_str!("../../../kernel-config/base.toml")),
    ("hyperv", include_str!("../../../kernel-config/hyperv.toml")),
    ("vmware", include_str!("../../../kernel-config/vmware.toml")),
    ("virtualbox", include_str!("../../../kernel-config/virtualbox.toml")),
    ("qemu", include_str!("../../../kernel-config/qemu.toml")),
    ("containers", include_str!("../../../kernel-config/containers.toml")),
    ("zram", include_str!("../../../kernel-config/zram.toml")),
];

/// One `kernel-config/NAME.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    /// File stem: `base`, a target name, or a feature such as `containers`.
    #[serde(skip)]
    pub name: String,
    /// One line saying what it is for.
    pub description: String,
    /// `CONFIG_X` → allowed values: `"y"` (built in) or `"ym"` (built in or module).
    pub options: BTreeMap<String, String>,
    /// Modules to load.
    pub modules: FeatureModules,
}

/// The `[modules]` table of a feature.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureModules {
    /// Module names to load at boot.
    pub load: Vec<String>,
    /// Of those, the ones the boot initrd carries to find and mount the system image (storage
    /// controllers, disk and CD drivers, loop, squashfs, overlay); their `depends` come along.
    #[serde(default)]
    pub boot: Vec<String>,
}

fn all() -> &'static [Feature] {
    static ALL: OnceLock<Vec<Feature>> = OnceLock::new();
    ALL.get_or_init(|| {
        FILES
            .iter()
            .map(|(name, text)| {
                let mut f: Feature = toml::from_str(text)
                    .unwrap_or_else(|e| panic!("kernel-config/{name}.toml is malformed (a build-time bug): {e}"));
                f.name = name.to_string();
                f
            })
            .collect()
    })
}

/// The feature named `name`, if there is one.
pub fn feature(name: &str) -> Option<&'static Feature> {
    all()
        .iter()
        .find(|f| f.name == name && Target::from_name(name).is_none() && name != "base")
}

/// Names usable in a definition's `features`.
pub fn feature_names() -> Vec<&'static str> {
    all()
        .iter()
        .map(|f| f.name.as_str())
        .filter(|n| *n != "base" && Target::from_name(n).is_none())
        .collect()
}

/// The features an image selects: `base`, its targets, then its named features.
pub fn selected(targets: &[Target], features: &[String]) -> Vec<&'static Feature> {
    let mut names: Vec<&str> = vec!["base"];
    names.extend(targets.iter().map(|t| t.name()));
    names.extend(features.iter().map(String::as_str));
    let mut out: Vec<&'static Feature> = Vec::new();
    for name in names {
        if let Some(f) = all().iter().find(|f| f.name == name) {
            if !out.iter().any(|o| o.name == f.name) {
                out.push(f);
            }
        }
    }
    out
}

/// The module names the boot initrd needs for `features` (every `[modules] boot` list).
pub fn boot_modules(features: &[&Feature]) -> Vec<String> {
    let mut names: Vec<String> = features.iter().flat_map(|f| f.modules.boot.iter().cloned()).collect();
    names.sort();
    names.dedup();
    names
}

/// A kernel option the kernel lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingOption {
    /// `CONFIG_...`.
    pub option: String,
    /// What the feature needs: `y`, or `y or m`.
    pub wanted: String,
    /// What the kernel has (`m`, or `not set`).
    pub found: String,
    /// The features needing it.
    pub needed_by: Vec<String>,
}

impl fmt::Display for MissingOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {}, {} needs {}",
            self.option,
            self.found,
            self.needed_by.join(" and "),
            self.wanted
        )
    }
}

/// Parses `.config` text into option → value (`y`, `m`, a string or number).
pub fn parse_kconfig(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("CONFIG_"))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Checks a kernel `.config` against the features; returns every option that falls short,
/// sorted by name.
pub fn check(kconfig_text: &str, features: &[&Feature]) -> Vec<MissingOption> {
    let config = parse_kconfig(kconfig_text);
    let mut missing: BTreeMap<String, MissingOption> = BTreeMap::new();
    for feature in features {
        for (option, allowed) in &feature.options {
            let found = config.get(option).map(String::as_str).unwrap_or("n");
            let ok = (found == "y" && allowed.contains('y')) || (found == "m" && allowed.contains('m'));
            if !ok {
                let entry = missing.entry(option.clone()).or_insert_with(|| MissingOption {
                    option: option.clone(),
                    wanted: if allowed.contains('m') {
                        "y or m".into()
                    } else {
                        "y (built in)".into()
                    },
                    found: if found == "n" { "not set".into() } else { found.into() },
                    needed_by: vec![],
                });
                entry.needed_by.push(feature.name.clone());
            }
        }
    }
    missing.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_files_parse_and_name_features() {
        assert_eq!(all().len(), FILES.len());
        assert_eq!(feature_names(), ["containers", "zram"]);
        assert!(feature("containers").is_some());
        assert!(feature("hyperv").is_none(), "targets are not features");
        let sel = selected(&[Target::Qemu, Target::Hyperv], &["containers".into()]);
        let names: Vec<&str> = sel.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["base", "qemu", "hyperv", "containers"]);
    }

    #[test]
    fn boot_modules_are_loaded_modules_of_the_same_file() {
        for f in all() {
            for name in &f.modules.boot {
                assert!(
                    f.modules.load.contains(name),
                    "{}: boot module {name} is not in load",
                    f.name
                );
            }
        }
        let sel = selected(&[Target::Qemu, Target::Hyperv], &["containers".into()]);
        let boot = boot_modules(&sel);
        for name in ["squashfs", "overlay", "loop", "sd_mod", "virtio_blk", "hv_storvsc"] {
            assert!(boot.iter().any(|b| b == name), "{name} missing from {boot:?}");
        }
        assert!(
            !boot.iter().any(|b| b == "e1000"),
            "network drivers stay out of the boot initrd"
        );
    }

    #[test]
    fn check_reports_missing_and_module_only_options() {
        let features = selected(&[Target::Qemu], &[]);
        let mut text = String::from("# comment\n");
        for f in &features {
            for (o, allowed) in &f.options {
                text.push_str(&format!("{o}={}\n", if allowed.contains('m') { "m" } else { "y" }));
            }
        }
        assert!(check(&text, &features).is_empty());
        let text = text
            .replace("CONFIG_DEVTMPFS=y\n", "# CONFIG_DEVTMPFS is not set\n")
            .replace("CONFIG_TMPFS=y", "CONFIG_TMPFS=m");
        let missing = check(&text, &features);
        let names: Vec<&str> = missing.iter().map(|m| m.option.as_str()).collect();
        assert_eq!(names, ["CONFIG_DEVTMPFS", "CONFIG_TMPFS"]);
        assert_eq!(
            missing[0].to_string(),
            "CONFIG_DEVTMPFS is not set, base needs y (built in)"
        );
        assert_eq!(missing[1].found, "m");
    }
}
