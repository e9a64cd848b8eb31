//! The host agent (init/src/host_agent) in a booted guest, as far as QEMU can show it.
//!
//! QEMU emulates VMware's backdoor port with `-machine vmport=on` (GETVERSION and a few other
//! commands, not the guest RPC message channel): the init must find the backdoor there and not
//! with `vmport=off`, and when the message channel does not answer it must say so once and go
//! on. Hyper-V's VMBus and VirtualBox's VMMDev have no QEMU model: their agents must stay
//! silent here (their protocols are tested against byte-exact messages in the init's unit
//! tests). Both boots also check the kernel's orderly power-off path (what hv_utils runs on a
//! host shutdown request) and that the hypervisor PTP modules the image carries load or step
//! aside without a failure.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const READY: &str = "uvmkit-init: ready";
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the agents get after the ready marker to log what they found.
const SETTLE: Duration = Duration::from_secs(5);

/// The minimal image with DHCP, built once for both boots.
fn built() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let dir = test_dir("guest-build");
        let stock = std::fs::read_to_string(repo_root().join("images/minimal.toml")).unwrap();
        let definition = dir.join("minimal.toml");
        std::fs::write(&definition, format!("{stock}\n[network]\ndhcp = true\ntimeout = 30\n")).unwrap();
        let out = dir.join("out");
        let started = Instant::now();
        uvmkit_ok(&[
            "build",
            definition.to_str().unwrap(),
            "--format",
            "efi",
            "--quiet",
            "-o",
            out.to_str().unwrap(),
        ]);
        eprintln!("minimal with DHCP built in {:.1}s", started.elapsed().as_secs_f64());
        out
    })
}

/// Boots the image directly with `-machine pc,vmport=SETTING` and one NIC; returns the serial
/// log a few seconds after the ready marker.
fn boot(name: &str, vmport: &str) -> String {
    let out = built();
    let dir = test_dir(name);
    let args: Vec<String> = [
        "-machine",
        &format!("pc,vmport={vmport}"),
        "-kernel",
        out.join("minimal-kernel").to_str().unwrap(),
        "-initrd",
        out.join("minimal-initrd.img").to_str().unwrap(),
        "-append",
        "console=ttyS0 quiet",
        "-nic",
        "user,model=virtio-net-pci",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut guest = Guest::start(&dir, &args);
    let ready = guest.wait_for(READY, BOOT_TIMEOUT);
    std::thread::sleep(SETTLE);
    eprintln!("{name}: ready after {ready:.1}s");
    guest.log()
}

fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

/// What every boot must show, whatever vmport says.
fn check_common(name: &str, log: &str) {
    // hv_utils runs /proc/sys/kernel/poweroff_cmd for the host's shutdown request; in the
    // running root (which the kernel's helpers share with PID 1) it must be this init.
    assert_eq!(
        lines_with(
            log,
            "orderly power-off (/sbin/poweroff, run by the kernel for the host's shutdown request) leads to this init"
        )
        .len(),
        1,
        "{name}: the orderly power-off path does not lead to the init:\n{log}"
    );
    // ptp_kvm is in the image and steps aside without KVM (TCG); ptp_vmw is skipped off VMware.
    for module in ["ptp_kvm", "ptp_vmw"] {
        assert_eq!(
            lines_with(log, &format!("module {module}: no such device here")).len(),
            1,
            "{name}: {module} not in the image or not handled as absent hardware:\n{log}"
        );
    }
    let modules = lines_with(log, "modules loaded").join("\n");
    assert!(
        modules.contains(" 0 failed)"),
        "{name}: a module failed: {modules}\n{log}"
    );
    // No VMBus and no VMMDev under QEMU: those agents stay silent.
    for agent in ["hyperv:", "virtualbox:"] {
        assert!(
            lines_with(log, agent).is_empty(),
            "{name}: {agent} logged without its device:\n{log}"
        );
    }
}

#[test]
fn vmware_backdoor_is_found_with_vmport_on_and_its_rpc_degrades_once() {
    let on = std::thread::spawn(|| boot("guest-vmport-on", "on"));
    let off = boot("guest-vmport-off", "off");
    let on = on.join().unwrap();

    check_common("vmport=on", &on);
    let found = lines_with(&on, "vmware: backdoor found (version ");
    assert_eq!(found.len(), 1, "vmport=on: the backdoor was not found once:\n{on}");
    let degraded = lines_with(&on, "vmware: the backdoor's message channel does not open");
    assert_eq!(
        degraded.len(),
        1,
        "vmport=on: the RPC failure is not logged exactly once:\n{on}"
    );
    assert!(degraded[0].contains("guest RPC off"), "{}", degraded[0]);
    // Nothing else from the VMware agent: no guestinfo, no TCLO loop, no retries.
    let vmware = lines_with(&on, "vmware:");
    assert_eq!(
        vmware.len(),
        2,
        "vmport=on: unexpected VMware lines:\n{}",
        vmware.join("\n")
    );
    eprintln!("vmport=on:\n  {}\n  {}", found[0].trim(), degraded[0].trim());

    check_common("vmport=off", &off);
    let vmware = lines_with(&off, "vmware:");
    assert!(
        vmware.is_empty(),
        "vmport=off: VMware lines without a backdoor:\n{}",
        vmware.join("\n")
    );
}
