//! Host folders: the `[[shares]]` the hypervisor offers (9p and virtiofs tags, VirtualBox
//! shared folders, SMB shares), mounted at boot after the network is up. A share the
//! hypervisor does not offer is logged and boot goes on.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::time::Instant;

use uvmkit_init_config::{ShareKind, ShareSection};

use crate::log;
use crate::sys;

/// `mount -o` words that are `mount(2)` flags rather than file system data
/// (`MS_*` in include/uapi/linux/mount.h).
const FLAG_OPTIONS: [(&str, libc::c_ulong); 6] = [
    ("ro", libc::MS_RDONLY),
    ("nosuid", libc::MS_NOSUID),
    ("nodev", libc::MS_NODEV),
    ("noexec", libc::MS_NOEXEC),
    ("noatime", libc::MS_NOATIME),
    ("rw", 0),
];

/// The `mount(2)` flags and data string for `share`: the type's defaults, then its own
/// options; an option naming a key the defaults set replaces the default.
pub fn mount_options(share: &ShareSection) -> (libc::c_ulong, String) {
    let key = |option: &str| option.split('=').next().unwrap_or_default().to_string();
    let mut flags = 0;
    let mut data: Vec<String> = share
        .kind
        .default_options()
        .iter()
        .filter(|d| !share.options.iter().any(|o| key(o) == key(d)))
        .map(|d| d.to_string())
        .collect();
    for option in &share.options {
        match FLAG_OPTIONS.iter().find(|(name, _)| name == option) {
            Some((_, flag)) => flags |= flag,
            None => data.push(option.clone()),
        }
    }
    (flags, data.join(","))
}

/// What a failed mount most likely means, for the log.
pub fn explain(kind: ShareKind, err: &io::Error) -> &'static str {
    match (kind, err.raw_os_error()) {
        (_, Some(libc::ENODEV)) => "the kernel lacks this file system: the image needs its module",
        (ShareKind::NineP | ShareKind::Virtiofs | ShareKind::Vboxsf, Some(libc::ENOENT | libc::EINVAL)) => {
            "the hypervisor offers no share by that name"
        }
        (ShareKind::Cifs, Some(libc::EACCES | libc::EPERM)) => "the server refused the credentials",
        (ShareKind::Cifs, Some(libc::EHOSTUNREACH | libc::ETIMEDOUT | libc::ECONNREFUSED)) => {
            "the server cannot be reached"
        }
        _ => "",
    }
}

/// The share modules of the image that no `[[shares]]` entry needs: the boot skips them (cifs
/// alone takes most of a second to load under emulation).
pub fn unneeded_modules(shares: &[ShareSection]) -> Vec<&'static str> {
    ShareKind::ALL
        .into_iter()
        .filter(|kind| !shares.iter().any(|share| share.kind == *kind))
        .flat_map(|kind| kind.modules().iter().copied())
        .collect()
}

/// Mounts every share, logging each result.
pub fn mount_all(shares: &[ShareSection]) {
    for share in shares {
        let started = Instant::now();
        let (flags, data) = mount_options(share);
        let made = DirBuilder::new().recursive(true).mode(0o755).create(&share.path);
        let result = made.and_then(|()| {
            sys::mount(
                Some(&share.source),
                &share.path,
                Some(share.kind.fs_type()),
                flags,
                Some(&data).filter(|d| !d.is_empty()).map(String::as_str),
            )
        });
        let fs = share.kind.fs_type();
        match result {
            Ok(()) => log!(
                "share {} ({fs}) mounted on {} in {} ms",
                share.source,
                share.path.display(),
                started.elapsed().as_millis()
            ),
            Err(err) => {
                let why = explain(share.kind, &err);
                log!(
                    "share {} ({fs}) not mounted on {}: {err}{}{why}; going on without it",
                    share.source,
                    share.path.display(),
                    if why.is_empty() { "" } else { ": " }
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(kind: ShareKind, options: &[&str]) -> ShareSection {
        ShareSection {
            source: "work".into(),
            path: "/mnt/work".into(),
            kind,
            options: options.iter().map(|o| o.to_string()).collect(),
        }
    }

    #[test]
    fn only_the_modules_of_shares_in_use_load() {
        assert_eq!(unneeded_modules(&[]), ["9p", "9pnet_virtio", "vboxsf", "cifs"]);
        let nine_p = share(ShareKind::NineP, &[]);
        assert_eq!(unneeded_modules(&[nine_p]), ["vboxsf", "cifs"]);
        let every: Vec<ShareSection> = ShareKind::ALL.into_iter().map(|k| share(k, &[])).collect();
        assert!(unneeded_modules(&every).is_empty());
    }

    #[test]
    fn nine_p_gets_virtio_transport_and_9p2000_l() {
        assert_eq!(
            mount_options(&share(ShareKind::NineP, &[])),
            (0, "trans=virtio,version=9p2000.L,msize=524288".to_string())
        );
    }

    #[test]
    fn own_options_replace_defaults_and_flags_become_flags() {
        let (flags, data) = mount_options(&share(
            ShareKind::NineP,
            &["ro", "msize=1048576", "cache=loose", "nosuid"],
        ));
        assert_eq!(flags, libc::MS_RDONLY | libc::MS_NOSUID);
        assert_eq!(data, "trans=virtio,version=9p2000.L,msize=1048576,cache=loose");
        let (flags, data) = mount_options(&share(ShareKind::Cifs, &["guest", "vers=3.1.1", "rw"]));
        assert_eq!((flags, data.as_str()), (0, "guest,vers=3.1.1"));
        assert_eq!(mount_options(&share(ShareKind::Virtiofs, &[])), (0, String::new()));
    }

    #[test]
    fn failures_are_explained_by_type() {
        let err = |code| io::Error::from_raw_os_error(code);
        assert!(explain(ShareKind::NineP, &err(libc::ENOENT)).contains("no share"));
        assert!(explain(ShareKind::Vboxsf, &err(libc::ENODEV)).contains("module"));
        assert!(explain(ShareKind::Cifs, &err(libc::EACCES)).contains("credentials"));
        assert_eq!(explain(ShareKind::Cifs, &err(libc::ENOENT)), "");
    }
}
