//! The host agent: what the hypervisors' guest tools would do, inside the init, with no extra
//! daemons. Started after the network; each part runs in a thread of its own, only where its
//! device exists, and never delays the ready marker.
//!
//! - Hyper-V: the KVP exchange over `/dev/vmbus/hv_kvp` ([`hyperv_kvp`]): host name, OS and
//!   addresses for Hyper-V Manager and `Get-VMNetworkAdapter`. Shutdown and time sync are
//!   `hv_utils`' own (shutdown runs `/sbin/poweroff`, which is this init: see
//!   [`check_orderly_poweroff`]).
//! - VMware: guest RPC over the backdoor ([`vmware_rpc`]): `guestinfo.ip`, the soft power
//!   operations, and `guestinfo.uvmkit.*` as instance settings ([`vmware_instance_settings`]).
//! - VirtualBox: guest properties through `/dev/vboxguest` ([`vbox_guest_props`]).

pub mod guest_facts;
pub mod hyperv_kvp;
pub mod vbox_guest_props;
pub mod vmware_backdoor;
pub mod vmware_rpc;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use uvmkit_instance_config::{InstanceSettings, SshSettings};

use crate::log;
use crate::shutdown::Action;
use crate::sys;
use guest_facts::GuestFacts;
use vmware_backdoor::IoPort;

use vmware_rpc::{Channel, PowerRequest, RpcError, TcloAction, PROTOCOL_TCLO};

/// The KVP device `hv_utils` creates when the host offers the KVP integration service.
pub const HV_KVP_DEVICE: &str = "/dev/vmbus/hv_kvp";
/// The VirtualBox guest driver's device for privileged clients.
pub const VBOXGUEST_DEVICE: &str = "/dev/vboxguest";

/// How often the agents look at the addresses again (a DHCP renewal, a new lease).
const REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// The TCLO poll interval backs off from this ...
const TCLO_MIN_DELAY: Duration = Duration::from_millis(10);
/// ... to this while the VMX has nothing to say (rpcin.c: up to one second).
const TCLO_MAX_DELAY: Duration = Duration::from_secs(1);
/// How often the KVP device is opened again after it failed, before the agent gives up.
const KVP_REOPENS: usize = 5;

/// Starts the agents whose devices exist. Returns at once.
pub fn start(hostname: &str, dhcp: bool) {
    check_orderly_poweroff();
    let facts = {
        let hostname = hostname.to_string();
        move || guest_facts::collect(&hostname, dhcp)
    };
    if Path::new(HV_KVP_DEVICE).exists() {
        let facts = facts.clone();
        spawn("hyperv-kvp", move || run_hyperv(facts));
    }
    if vmware_backdoor_version().is_some() {
        let facts = facts.clone();
        spawn("vmware-rpc", move || run_vmware(facts));
    }
    if Path::new(VBOXGUEST_DEVICE).exists() {
        spawn("vbox-props", move || run_virtualbox(facts));
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) {
    let result = thread::Builder::new().name(name.to_string()).spawn(move || {
        // A panic is logged by the hook and ends only this agent.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    });
    if let Err(err) = result {
        log!("host agent: cannot start {name}: {err}");
    }
}

/// The kernel's orderly power-off (what `hv_utils` runs on the host's shutdown request, and
/// thermal emergencies) executes `/proc/sys/kernel/poweroff_cmd`, `/sbin/poweroff`. Logs
/// whether that path leads to this init, which then acts as `poweroff` (main.rs).
pub fn check_orderly_poweroff() {
    let command = std::fs::read_to_string("/proc/sys/kernel/poweroff_cmd").unwrap_or_default();
    let command = command.trim();
    let program = command.split_whitespace().next().unwrap_or_default();
    let target = std::fs::metadata(program);
    let init = std::fs::metadata("/proc/self/exe");
    match (target, init) {
        (Ok(target), Ok(init)) if target.dev() == init.dev() && target.ino() == init.ino() => {
            log!("orderly power-off ({command}, run by the kernel for the host's shutdown request) leads to this init")
        }
        (Ok(_), Ok(_)) => log!(
            "orderly power-off runs {command}, which is not this init: a host's shutdown request may not stop the machine cleanly"
        ),
        (Err(err), _) => log!(
            "orderly power-off runs {command:?}, which cannot be found ({err}): a host's shutdown request will not stop the machine"
        ),
        (_, Err(err)) => log!("cannot check the orderly power-off command: /proc/self/exe: {err}"),
    }
}

/// Logs `what` when the reported addresses changed since the last time.
struct ReportLog {
    agent: &'static str,
    last: Option<String>,
}

impl ReportLog {
    fn new(agent: &'static str) -> ReportLog {
        ReportLog { agent, last: None }
    }

    fn reported(&mut self, what: &str) {
        if self.last.as_deref() != Some(what) {
            log!("{}: reported {what} to the host", self.agent);
            self.last = Some(what.to_string());
        }
    }
}

fn run_hyperv(facts: impl Fn() -> GuestFacts) {
    let mut report = ReportLog::new("hyperv");
    for attempt in 0..KVP_REOPENS {
        let mut device = match OpenOptions::new().read(true).write(true).open(HV_KVP_DEVICE) {
            Ok(device) => device,
            Err(err) => {
                log!("hyperv: cannot open {HV_KVP_DEVICE}: {err}; KVP off");
                return;
            }
        };
        let version = match hyperv_kvp::register(&mut device) {
            Ok(version) => version,
            Err(err) => {
                log!("hyperv: {err}; KVP off");
                return;
            }
        };
        if attempt == 0 {
            log!("hyperv: KVP registered with hv_utils (driver version {version}); answering the host's queries");
        }
        let mut responder = hyperv_kvp::KvpResponder::new(&version);
        // Ends when the device fails (hibernation resets it: hv_kvp_daemon reopens too).
        let err = hyperv_kvp::serve(&mut device, &mut responder, &facts, |what| report.reported(what))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        log!("hyperv: {err}; opening the device again");
        thread::sleep(Duration::from_secs(1 << attempt));
    }
    log!("hyperv: {HV_KVP_DEVICE} failed {KVP_REOPENS} times; KVP off");
}

/// The backdoor's version, probed once per boot (`None`: no backdoor, or no access).
pub fn vmware_backdoor_version() -> Option<u32> {
    static VERSION: OnceLock<Option<u32>> = OnceLock::new();
    *VERSION.get_or_init(|| match vmware_backdoor::probe_in_child() {
        Ok(Some(version)) => {
            log!("vmware: backdoor found (version {version})");
            Some(version)
        }
        Ok(None) => None,
        Err(err) => {
            // EPERM under kernel lockdown (Secure Boot): ioperm is refused. Worth a line only
            // where the machine is VMware; elsewhere there is nothing to miss.
            let vendor = std::fs::read_to_string("/sys/class/dmi/id/sys_vendor").unwrap_or_default();
            if crate::hypervisor::is_vmware(crate::hypervisor::cpuid_signature().as_deref(), &vendor) {
                log!("vmware: cannot access the backdoor port: {err} (kernel lockdown refuses ioperm under Secure Boot); VMware guest RPC off");
            }
            None
        }
    })
}

/// Whether the message channel failed once already: it is then not tried again, and the
/// failure is logged once.
static RPC_UNAVAILABLE: AtomicBool = AtomicBool::new(false);

fn rpc_failed(err: &RpcError) {
    if !RPC_UNAVAILABLE.swap(true, Ordering::Relaxed) {
        log!("vmware: {err}; guest RPC off");
    }
}

/// A backdoor this thread may use, if the RPC channel has not failed before.
fn rpc_port() -> Option<IoPort> {
    if RPC_UNAVAILABLE.load(Ordering::Relaxed) || vmware_backdoor_version().is_none() {
        return None;
    }
    IoPort::open().ok()
}

/// The instance settings in the VM's `guestinfo.uvmkit.*` variables (`guestinfo.uvmkit.hostname`,
/// `guestinfo.uvmkit.ssh-authorized-keys`, keys one per line), with the source for the log;
/// `None` where there is no VMware RPC or no such variable.
pub fn vmware_instance_settings() -> Option<(String, InstanceSettings)> {
    let mut port = rpc_port()?;
    let mut settings = InstanceSettings::default();
    let mut found = Vec::new();
    for name in ["hostname", "ssh-authorized-keys"] {
        let value = match vmware_rpc::guestinfo_get(&mut port, &format!("uvmkit.{name}")) {
            Ok(Some(value)) if !value.trim().is_empty() => value,
            Ok(_) => continue,
            Err(err) => {
                rpc_failed(&err);
                return None;
            }
        };
        found.push(format!("guestinfo.uvmkit.{name}"));
        match name {
            "hostname" => settings.hostname = Some(value.trim().to_string()),
            _ => {
                settings.ssh = Some(SshSettings {
                    authorized_keys: value
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(str::to_string)
                        .collect(),
                })
            }
        }
    }
    if found.is_empty() {
        return None;
    }
    Some((format!("VMware {}", found.join(", ")), settings))
}

/// Adds the VMware guestinfo settings to what the settings volume gave: the volume's host name
/// wins, SSH keys from both are used. Logged like the other sources.
pub fn add_vmware_settings(loaded: &mut crate::instance::Loaded) {
    let Some((source, settings)) = vmware_instance_settings() else {
        return;
    };
    merge_settings(loaded, source, settings);
}

/// [`add_vmware_settings`] without the backdoor.
pub fn merge_settings(loaded: &mut crate::instance::Loaded, source: String, settings: InstanceSettings) {
    loaded.source = if loaded.source.is_empty() {
        source
    } else {
        format!("{} and {source}", loaded.source)
    };
    if loaded.settings.hostname.is_none() {
        loaded.settings.hostname = settings.hostname;
    }
    if let Some(ssh) = settings.ssh {
        let keys = &mut loaded
            .settings
            .ssh
            .get_or_insert_with(SshSettings::default)
            .authorized_keys;
        for key in ssh.authorized_keys {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
}

fn run_vmware(facts: impl Fn() -> GuestFacts) {
    let Some(mut port) = rpc_port() else {
        return;
    };
    let channel = match Channel::open(&mut port, PROTOCOL_TCLO) {
        Ok(channel) => channel,
        Err(err) => return rpc_failed(&err),
    };
    log!("vmware: guest RPC channel open; answering the host's power operations");
    let announce = |port: &mut IoPort| {
        for message in vmware_rpc::announcements() {
            if let Err(err) = vmware_rpc::rpci(port, &message) {
                log!("vmware: {err}");
            }
        }
    };
    announce(&mut port);
    let mut report = ReportLog::new("vmware");
    let mut last_refresh: Option<Instant> = None;
    let mut last_result = String::new();
    let mut delay = TCLO_MIN_DELAY;
    loop {
        if last_refresh.is_none_or(|t| t.elapsed() >= REFRESH_INTERVAL) {
            last_refresh = Some(Instant::now());
            if let Some(ip) = facts().ipv4_addresses().first() {
                match vmware_rpc::guestinfo_set(&mut port, "ip", &ip.to_string()) {
                    Ok(()) => report.reported(&format!("guestinfo.ip {ip}")),
                    Err(err) => log!("vmware: cannot set guestinfo.ip: {err}"),
                }
            }
        }
        let command = match vmware_rpc::tclo_round(&mut port, &channel, &last_result) {
            Ok(command) => command,
            Err(err) => {
                log!("vmware: TCLO channel: {err}; power operations from the host off");
                return;
            }
        };
        if command.is_empty() {
            last_result.clear();
            thread::sleep(delay);
            delay = (delay * 2).min(TCLO_MAX_DELAY);
            continue;
        }
        delay = TCLO_MIN_DELAY;
        let (reply, action) = vmware_rpc::answer_tclo(&command);
        last_result = reply;
        match action {
            TcloAction::None => {}
            TcloAction::Announce => announce(&mut port),
            TcloAction::Power(request) => {
                // The reply goes out first (it is how the VMX learns the command arrived),
                // then the status, then the machine stops.
                let _ = vmware_rpc::tclo_round(&mut port, &channel, &last_result);
                last_result.clear();
                if let Err(err) = vmware_rpc::rpci(&mut port, &request.status_message()) {
                    log!("vmware: {err}");
                }
                let (what, action) = match request {
                    PowerRequest::Halt => ("power off", Action::PowerOff),
                    PowerRequest::Reboot => ("reboot", Action::Reboot),
                };
                log!("vmware: the host asked for a {what}");
                if let Err(err) = sys::kill(1, action.signal()) {
                    log!("vmware: cannot ask the init to {what}: {err}");
                }
            }
        }
    }
}

fn run_virtualbox(facts: impl Fn() -> GuestFacts) {
    let device = match OpenOptions::new().read(true).write(true).open(VBOXGUEST_DEVICE) {
        Ok(device) => device,
        Err(err) => {
            log!("virtualbox: cannot open {VBOXGUEST_DEVICE}: {err}; guest properties off");
            return;
        }
    };
    let mut props: vbox_guest_props::GuestProperties<File> = match vbox_guest_props::GuestProperties::connect(device) {
        Ok(props) => props,
        Err(err) => {
            log!("virtualbox: {err}; guest properties off");
            return;
        }
    };
    log!(
        "virtualbox: connected to the guest property service (client {})",
        props.client_id
    );
    let mut report = ReportLog::new("virtualbox");
    let mut last: Vec<(String, String)> = Vec::new();
    loop {
        let facts = facts();
        let current = vbox_guest_props::properties(&facts);
        if current != last {
            let mut ok = true;
            for (name, value) in &current {
                if let Err(err) = props.set(name, value) {
                    log!("virtualbox: {err}");
                    ok = false;
                    break;
                }
            }
            if ok {
                if let Some((_, ip)) = current.iter().find(|(name, _)| name.ends_with("/Net/0/V4/IP")) {
                    report.reported(&format!("/VirtualBox/GuestInfo/Net/0/V4/IP {ip}"));
                }
                last = current;
            }
        }
        thread::sleep(REFRESH_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::Loaded;

    #[test]
    fn vmware_settings_fill_in_after_the_volume() {
        let guestinfo = InstanceSettings {
            hostname: Some("from-vmware".into()),
            ssh: Some(SshSettings {
                authorized_keys: vec!["ssh-ed25519 AAAA vmware".into(), "ssh-ed25519 BBBB both".into()],
            }),
            ..InstanceSettings::default()
        };
        // Alone, guestinfo is the source.
        let mut alone = Loaded::default();
        merge_settings(&mut alone, "VMware guestinfo.uvmkit.hostname".into(), guestinfo.clone());
        assert_eq!(alone.source, "VMware guestinfo.uvmkit.hostname");
        assert_eq!(alone.settings.hostname.as_deref(), Some("from-vmware"));
        // With a volume, the volume's host name wins and the keys are merged once each.
        let mut with_volume = Loaded {
            source: "uvmkit.toml on /dev/sr0 (iso9660)".into(),
            settings: InstanceSettings {
                hostname: Some("from-volume".into()),
                ssh: Some(SshSettings {
                    authorized_keys: vec!["ssh-ed25519 BBBB both".into()],
                }),
                ..InstanceSettings::default()
            },
            ..Loaded::default()
        };
        merge_settings(
            &mut with_volume,
            "VMware guestinfo.uvmkit.ssh-authorized-keys".into(),
            guestinfo,
        );
        assert_eq!(
            with_volume.source,
            "uvmkit.toml on /dev/sr0 (iso9660) and VMware guestinfo.uvmkit.ssh-authorized-keys"
        );
        assert_eq!(with_volume.settings.hostname.as_deref(), Some("from-volume"));
        assert_eq!(
            with_volume.settings.ssh.unwrap().authorized_keys,
            ["ssh-ed25519 BBBB both", "ssh-ed25519 AAAA vmware"]
        );
    }
}
