//! The VM description a Vagrant box for the `hyperv` provider carries in `Virtual Machines/`.
//!
//! Vagrant's Hyper-V provider refuses a box without a configuration file there (`.xml`, or
//! `.vmcx` where the host supports it: `plugins/providers/hyperv/action/import.rb`, "Failed to
//! locate box configuration path"). A `.vmcx` is Hyper-V's binary format and goes through
//! `Import-VM`; an `.xml` does not: `New-VagrantVMXML` (`scripts/utils/VagrantVM/VagrantVM.psm1`)
//! reads a handful of values from it with PowerShell's XML adapter and creates a new VM with
//! `New-VM`, then attaches the box's disk. This module writes exactly those values, in the
//! layout of Hyper-V's XML configuration (Windows Server 2012 R2):
//!
//! - `configuration/properties/subtype`: the generation minus one (`1`: Generation 2, UEFI);
//! - `configuration/properties/name`: the VM name unless the Vagrantfile sets `vmname`;
//! - `//boot/device0`: `HardDrive`, so the VM boots its disk (`-BootDevice VHD`);
//! - `//secure_boot_enabled`: `False`. Vagrant can only switch Secure Boot on with the VM's
//!   default template, "Microsoft Windows", which does not trust the Microsoft third-party
//!   UEFI CA that signs shim; the disk boots with Secure Boot only under the "Microsoft UEFI
//!   Certificate Authority" template, set by hand after `vagrant up` (see the Vagrantfile);
//! - a controller element whose parent has a `ChannelInstanceGuid` child is a SCSI controller
//!   (Generation 2 VMs have no IDE), and each of its drives with `type` `VHD` and a `pathname`
//!   becomes `Add-VMHardDiskDrive -ControllerType SCSI` with the box's disk (the path itself
//!   is not used);
//! - `configuration/settings/processors/count` and `//memory/Bank` (`size`, `limit`,
//!   `reservation` in MiB, `dynamic_memory_enabled`): CPUs and static memory.
//!
//! Every value element carries a `type` attribute, as Hyper-V writes them: PowerShell reads
//! an element's text through its `#text` property only when the element has attributes
//! (an element without any is read as a plain string, whose `#text` is empty).

use std::fmt::Write as _;

/// The member name of the configuration inside the box.
pub const HYPERV_CONFIG: &str = "Virtual Machines/box.xml";
/// The member name of the disk inside the box.
pub const HYPERV_DISK: &str = "Virtual Hard Disks/box.vhdx";

/// Hyper-V's class id of the synthetic SCSI controller, the element that holds its
/// controllers in the XML configuration.
const SCSI_CONTROLLER_CLASS: &str = "_83F8638B-8DCA-4152-9EDA-2CA8B33039B4_";

/// The configuration of a Generation 2 VM called `name` (XML-escaped) with `cpus` CPUs,
/// `memory_mib` MiB of static memory, Secure Boot off and one disk on SCSI controller 0;
/// `channel` is the controller's instance GUID (braced).
pub(crate) fn vm_config(name: &str, cpus: u32, memory_mib: u64, channel: &str) -> String {
    let mut x = String::new();
    let mut line = |indent: usize, text: &str| {
        let _ = writeln!(x, "{:indent$}{text}", "", indent = indent * 2);
    };
    line(0, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    line(0, "<configuration>");
    line(1, "<properties>");
    line(2, &format!(r#"<name type="string">{name}</name>"#));
    line(
        2,
        r#"<notes type="string">A uvmkit utility VM. Secure Boot: turn it on with the "Microsoft UEFI Certificate Authority" template.</notes>"#,
    );
    line(2, r#"<subtype type="integer">1</subtype>"#);
    line(1, "</properties>");
    line(1, "<settings>");
    line(2, "<processors>");
    line(3, &format!(r#"<count type="integer">{cpus}</count>"#));
    line(2, "</processors>");
    line(1, "</settings>");
    line(1, "<boot>");
    line(2, r#"<device0 type="string">HardDrive</device0>"#);
    line(1, "</boot>");
    line(1, r#"<secure_boot_enabled type="bool">False</secure_boot_enabled>"#);
    line(1, "<memory>");
    line(2, "<Bank>");
    line(
        3,
        r#"<dynamic_memory_enabled type="bool">False</dynamic_memory_enabled>"#,
    );
    line(3, &format!(r#"<limit type="integer">{memory_mib}</limit>"#));
    line(3, &format!(r#"<reservation type="integer">{memory_mib}</reservation>"#));
    line(3, &format!(r#"<size type="integer">{memory_mib}</size>"#));
    line(2, "</Bank>");
    line(1, "</memory>");
    line(1, &format!("<{SCSI_CONTROLLER_CLASS}>"));
    line(
        2,
        &format!(r#"<ChannelInstanceGuid type="string">{channel}</ChannelInstanceGuid>"#),
    );
    line(2, "<controller0>");
    line(3, "<drive0>");
    line(4, r#"<pathname type="string">box.vhdx</pathname>"#);
    line(4, r#"<type type="string">VHD</type>"#);
    line(3, "</drive0>");
    line(2, "</controller0>");
    line(1, &format!("</{SCSI_CONTROLLER_CLASS}>"));
    line(0, "</configuration>");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_vagrant_reads() {
        let x = vm_config("docker", 2, 2048, "{01234567-89ab-8cde-8f01-23456789abcd}");
        for needle in [
            r#"<subtype type="integer">1</subtype>"#,
            r#"<name type="string">docker</name>"#,
            r#"<count type="integer">2</count>"#,
            r#"<size type="integer">2048</size>"#,
            r#"<device0 type="string">HardDrive</device0>"#,
            r#"<secure_boot_enabled type="bool">False</secure_boot_enabled>"#,
            "<ChannelInstanceGuid type=\"string\">{01234567-89ab-8cde-8f01-23456789abcd}</ChannelInstanceGuid>\n    <controller0>",
            r#"<type type="string">VHD</type>"#,
        ] {
            assert!(x.contains(needle), "no {needle:?} in:\n{x}");
        }
        // Only the one controller element: Vagrant takes every element named controller*.
        assert_eq!(x.matches("<controller").count(), 1);
    }
}
