//! Files uvmkit leaves out of a package by default: programs a Debian package ships that the
//! host an image builds never runs (test tools, legacy shims, debugging clients). Each has the
//! reason `uvmkit inspect` prints when it leaves the file out.
//!
//! The table is applied to a `[[packages]]` entry unless the entry says `defaults = false`, and
//! a path the entry's `include` names literally (not through a glob) is always taken, so every
//! rule users wrote before the table existed still selects what it names.
//!
//! What stays, because dockerd runs it: `containerd`, `containerd-shim-runc-v2` (the only shim
//! dockerd 26 starts), `runc`, `docker-proxy` (published ports) and `docker-init` (`--init`).

/// Paths of one package left out by default, each with why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackageDefaults {
    /// The Debian package.
    pub package: &'static str,
    /// `(path in the package, why it is left out)`.
    pub leave_out: &'static [(&'static str, &'static str)],
}

/// The per-package default exclusions (Debian 12 and 13 file lists).
pub const PACKAGE_DEFAULTS: &[PackageDefaults] = &[
    PackageDefaults {
        package: "docker.io",
        leave_out: &[
            ("/usr/bin/dnet", "libnetwork's test tool; dockerd never runs it"),
            ("/usr/bin/ovrouter", "libnetwork's overlay test tool; dockerd never runs it"),
            ("/usr/bin/diagnosticClient", "libnetwork's diagnostic client; dockerd never runs it"),
        ],
    },
    PackageDefaults {
        package: "containerd",
        leave_out: &[
            (
                "/usr/bin/ctr",
                "containerd's debugging client; dockerd speaks to containerd over its socket",
            ),
            (
                "/usr/bin/containerd-shim",
                "the v1 shim (io.containerd.runtime.v1.linux), removed from containerd 2; dockerd starts containerd-shim-runc-v2",
            ),
            (
                "/usr/bin/containerd-shim-runc-v1",
                "the deprecated runc v1 shim; dockerd starts containerd-shim-runc-v2",
            ),
            ("/usr/bin/containerd-stress", "containerd's load test tool"),
        ],
    },
];

/// What the table leaves out of `package`: `(path, why)`, empty for packages it does not name.
pub fn left_out_by_default(package: &str) -> &'static [(&'static str, &'static str)] {
    PACKAGE_DEFAULTS
        .iter()
        .find(|d| d.package == package)
        .map_or(&[], |d| d.leave_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_leaves_out_what_dockerd_runs() {
        for needed in [
            "/usr/bin/containerd",
            "/usr/bin/containerd-shim-runc-v2",
            "/usr/sbin/runc",
            "/usr/bin/runc",
            "/usr/sbin/dockerd",
            "/usr/bin/docker-proxy",
            "/usr/sbin/docker-proxy",
            "/usr/bin/docker-init",
            "/usr/bin/tini-static",
        ] {
            for d in PACKAGE_DEFAULTS {
                assert!(
                    d.leave_out.iter().all(|(path, _)| *path != needed),
                    "{} leaves out {needed}",
                    d.package
                );
            }
        }
    }

    #[test]
    fn each_package_once_with_absolute_paths_and_reasons() {
        let mut names: Vec<&str> = PACKAGE_DEFAULTS.iter().map(|d| d.package).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PACKAGE_DEFAULTS.len());
        for (path, why) in PACKAGE_DEFAULTS.iter().flat_map(|d| d.leave_out) {
            assert!(path.starts_with('/') && !path.contains('*'), "{path}");
            assert!(!why.is_empty());
        }
        assert!(left_out_by_default("runc").is_empty());
        assert_eq!(left_out_by_default("containerd").len(), 4);
    }
}
