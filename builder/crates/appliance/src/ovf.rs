//! The OVF descriptor: one virtual machine and its disk, as DMTF's Open Virtualization Format
//! 1.0.0 (DSP0243) describes it, with the CIM RASD and VSSD elements (DSP0243 clause 9, CIM
//! schema 2.22) for its virtual hardware.
//!
//! What the two importers need, and what each element below is for:
//!
//! - **Both**: `References/File` naming the disk file with its size, `DiskSection/Disk` with
//!   the capacity in bytes and the format URI of a streamOptimized VMDK (the only VMDK variant
//!   OVF packages carry), one `VirtualSystem` with a `VirtualHardwareSection`, and `Item`s
//!   told apart by `rasd:ResourceType` (DSP0243 table 7 / CIM_ResourceAllocationSettingData):
//!   3 processors, 4 memory (`byte * 2^20`), 20 "other storage device" (a SATA controller,
//!   sub-type below), 17 the disk (`rasd:Parent` is the controller's `InstanceID`,
//!   `rasd:HostResource` is `ovf:/disk/ID`), 10 Ethernet with sub-type `E1000`. AHCI and E1000
//!   are the one controller and NIC both hypervisors offer and the kernel drives (`ahci`,
//!   `e1000`); VirtualBox also still reads these items (and refuses unknown sub-types) when
//!   its own machine section is present.
//! - **VMware** (ovftool, vSphere, Workstation, Fusion) validates against the DMTF schema:
//!   the `rasd:` children of an `Item` must appear in the schema's (alphabetical) order and
//!   `System` must name a virtual hardware family (`vmx-13`: ESXi 6.5, Workstation 14 and
//!   later). Its SATA controller is the sub-type `vmware.sata.ahci` (what its own exports
//!   write; VirtualBox reads it too since 7.0). The firmware comes from VMware's extension
//!   `<vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>` in the
//!   `VirtualHardwareSection`, without which the VM boots BIOS and finds no boot loader.
//! - **VirtualBox** (Main's OVF reader) ignores the `vmw:` elements and takes the firmware only
//!   from its own `vbox:Machine` extension ([`crate::vbox`]), a machine settings document that
//!   replaces the OVF items for CPUs, memory, adapters and storage. Its disk attachment names
//!   the disk by the `vbox:uuid` attribute of `DiskSection/Disk`. Both UUIDs are derived from
//!   the disk file's SHA-256, so the descriptor stays a function of its inputs.
//!
//! `ovf:required="false"` on both extensions (DSP0243 clause 9.1) lets each importer skip the
//! other's.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::vbox;

/// The virtual machine an appliance describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualMachine {
    /// Its name (the image name).
    pub name: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
}

/// The disk file an appliance carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OvfDisk {
    /// The file's name inside the package.
    pub file_name: String,
    /// The file's length in bytes.
    pub file_size: u64,
    /// The file's SHA-256 (hex), from which the VirtualBox disk and machine UUIDs derive.
    pub sha256: String,
    /// The virtual disk's capacity in bytes.
    pub capacity: u64,
}

/// The format URI of a streamOptimized VMDK (DSP0243 clause 8.3: `ovf:format` names the disk
/// format by URI; this is VMware's).
pub const VMDK_STREAM_OPTIMIZED: &str = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

/// The SATA (AHCI) controller's `rasd:ResourceSubType`, as VMware writes it.
pub const SATA_SUBTYPE: &str = "vmware.sata.ahci";

/// The descriptor of `vm` with `disk` as its only disk, as UTF-8 XML ending in a newline.
pub fn ovf_descriptor(vm: &VirtualMachine, disk: &OvfDisk) -> String {
    let name = xml_escape(&vm.name);
    let file = xml_escape(&disk.file_name);
    let disk_uuid = derived_uuid("disk", &disk.sha256);
    let machine_uuid = derived_uuid("machine", &disk.sha256);
    let mut x = String::new();
    let mut line = |indent: usize, text: &str| {
        let _ = writeln!(x, "{:indent$}{text}", "", indent = indent * 2);
    };
    line(0, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    line(
        0,
        concat!(
            r#"<Envelope ovf:version="1.0" xml:lang="en-US""#,
            r#" xmlns="http://schemas.dmtf.org/ovf/envelope/1""#,
            r#" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1""#,
            r#" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData""#,
            r#" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData""#,
            r#" xmlns:vmw="http://www.vmware.com/schema/ovf""#,
            r#" xmlns:vbox="http://www.virtualbox.org/ovf/machine""#,
            r#" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#
        ),
    );
    // Clause 7.1: every file of the package, with its size.
    line(1, "<References>");
    line(
        2,
        &format!(
            r#"<File ovf:href="{file}" ovf:id="file1" ovf:size="{}"/>"#,
            disk.file_size
        ),
    );
    line(1, "</References>");
    // Clause 9.1: the virtual disks, capacity in bytes.
    line(1, "<DiskSection>");
    line(2, "<Info>Virtual disk information</Info>");
    line(
        2,
        &format!(
            r#"<Disk ovf:capacity="{}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="{VMDK_STREAM_OPTIMIZED}" vbox:uuid="{disk_uuid}"/>"#,
            disk.capacity
        ),
    );
    line(1, "</DiskSection>");
    // Clause 9.2: the logical network the NIC connects to; VirtualBox attaches it as NAT.
    line(1, "<NetworkSection>");
    line(2, "<Info>The logical networks the virtual machine uses</Info>");
    line(2, r#"<Network ovf:name="NAT">"#);
    line(3, "<Description>The network of the first NIC (DHCP)</Description>");
    line(2, "</Network>");
    line(1, "</NetworkSection>");
    line(1, &format!(r#"<VirtualSystem ovf:id="{name}">"#));
    line(2, "<Info>A uvmkit utility VM</Info>");
    line(2, &format!("<Name>{name}</Name>"));
    // Clause 9.6: CIM_OperatingSystem OsType 101, "Linux 64-Bit".
    line(
        2,
        r#"<OperatingSystemSection ovf:id="101" vmw:osType="otherLinux64Guest">"#,
    );
    line(3, "<Info>The guest operating system</Info>");
    line(3, "<Description>Linux 64-Bit</Description>");
    line(2, "</OperatingSystemSection>");
    // Clause 9.5 and 10: the hardware, one Item per device.
    line(2, "<VirtualHardwareSection>");
    line(3, "<Info>Virtual hardware: EFI firmware, SATA disk, E1000 NIC</Info>");
    line(3, "<System>");
    line(4, "<vssd:ElementName>Virtual Hardware Family</vssd:ElementName>");
    line(4, "<vssd:InstanceID>0</vssd:InstanceID>");
    line(
        4,
        &format!("<vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>"),
    );
    line(4, "<vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>");
    line(3, "</System>");
    let cpus = vm.cpus;
    let memory = vm.memory_mib;
    // Each item's rasd: elements in the schema's order (alphabetical).
    let items: [&[(&str, String)]; 5] = [
        &[
            ("AllocationUnits", "hertz * 10^6".into()),
            ("Description", "Number of virtual CPUs".into()),
            ("ElementName", format!("{cpus} virtual CPU(s)")),
            ("InstanceID", "1".into()),
            ("ResourceType", "3".into()),
            ("VirtualQuantity", cpus.to_string()),
        ],
        &[
            ("AllocationUnits", "byte * 2^20".into()),
            ("Description", "Memory size".into()),
            ("ElementName", format!("{memory} MB of memory")),
            ("InstanceID", "2".into()),
            ("ResourceType", "4".into()),
            ("VirtualQuantity", memory.to_string()),
        ],
        &[
            ("Address", "0".into()),
            ("Description", "SATA controller".into()),
            ("ElementName", "sataController0".into()),
            ("InstanceID", "3".into()),
            ("ResourceSubType", SATA_SUBTYPE.into()),
            ("ResourceType", "20".into()),
        ],
        &[
            ("AddressOnParent", "0".into()),
            ("ElementName", "disk0".into()),
            ("HostResource", "ovf:/disk/vmdisk1".into()),
            ("InstanceID", "4".into()),
            ("Parent", "3".into()),
            ("ResourceType", "17".into()),
        ],
        &[
            ("AddressOnParent", "0".into()),
            ("AutomaticAllocation", "true".into()),
            ("Connection", "NAT".into()),
            ("Description", "E1000 ethernet adapter on NAT".into()),
            ("ElementName", "ethernet0".into()),
            ("InstanceID", "5".into()),
            ("ResourceSubType", "E1000".into()),
            ("ResourceType", "10".into()),
        ],
    ];
    for item in items {
        line(3, "<Item>");
        for (key, value) in item {
            line(4, &format!("<rasd:{key}>{}</rasd:{key}>", xml_escape(value)));
        }
        line(3, "</Item>");
    }
    // VMware's extension for the firmware (the disk holds only an EFI system partition).
    line(
        3,
        r#"<vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>"#,
    );
    line(2, "</VirtualHardwareSection>");
    x.push_str(&vbox::machine_element(&name, cpus, memory, &machine_uuid, &disk_uuid));
    let mut line = |indent: usize, text: &str| {
        let _ = writeln!(x, "{:indent$}{text}", "", indent = indent * 2);
    };
    line(1, "</VirtualSystem>");
    line(0, "</Envelope>");
    x
}

/// A UUID for `what` (`disk`, `machine`) of the disk file whose SHA-256 is `sha256`: the first
/// 16 bytes of SHA-256("uvmkit-ovf-WHAT:" + digest) with the version and variant bits of
/// RFC 9562 section 5.8 (version 8, a custom UUID), in the lower-case form without braces.
pub fn derived_uuid(what: &str, sha256: &str) -> String {
    let hash = Sha256::digest(format!("uvmkit-ovf-{what}:{sha256}").as_bytes());
    let mut b: [u8; 16] = hash[..16].try_into().expect("16 bytes");
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// Escapes the five characters XML 1.0 (section 2.4) reserves in content and attributes.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        ovf_descriptor(
            &VirtualMachine {
                name: "docker".into(),
                cpus: 2,
                memory_mib: 2048,
            },
            &OvfDisk {
                file_name: "docker-disk1.vmdk".into(),
                file_size: 123_456,
                sha256: "00".repeat(32),
                capacity: 8 << 30,
            },
        )
    }

    #[test]
    fn names_the_file_disk_and_hardware() {
        let x = sample();
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Envelope ovf:version=\"1.0\""));
        assert!(x.contains(r#"<File ovf:href="docker-disk1.vmdk" ovf:id="file1" ovf:size="123456"/>"#));
        assert!(x.contains(r#"ovf:capacity="8589934592" ovf:capacityAllocationUnits="byte""#));
        assert!(x.contains(
            "<rasd:ResourceType>3</rasd:ResourceType>\n        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>"
        ));
        assert!(x.contains("<rasd:VirtualQuantity>2048</rasd:VirtualQuantity>"));
        assert!(x.contains("<rasd:ResourceSubType>vmware.sata.ahci</rasd:ResourceSubType>"));
        assert!(x.contains("<rasd:ResourceSubType>E1000</rasd:ResourceSubType>"));
        assert!(x.contains(r#"vmw:key="firmware" vmw:value="efi""#));
        // VirtualBox's machine names the disk by the UUID the DiskSection gives it.
        let disk_uuid = derived_uuid("disk", &"00".repeat(32));
        assert!(x.contains(&format!(r#"vbox:uuid="{disk_uuid}"/>"#)), "{x}");
        assert!(x.contains(&format!(r#"<Image uuid="{{{disk_uuid}}}"/>"#)), "{x}");
        assert!(x.contains(r#"<Firmware type="EFI"/>"#));
        assert!(x.ends_with("  </VirtualSystem>\n</Envelope>\n"));
    }

    #[test]
    fn rasd_elements_are_in_schema_order() {
        let x = sample();
        for item in x.split("<Item>").skip(1) {
            let item = &item[..item.find("</Item>").unwrap()];
            let keys: Vec<&str> = item
                .lines()
                .filter_map(|l| l.trim().strip_prefix("<rasd:"))
                .map(|l| &l[..l.find('>').unwrap()])
                .collect();
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(keys, sorted);
        }
    }

    #[test]
    fn derived_uuids_are_version_8_and_differ_by_purpose_and_disk() {
        let a = derived_uuid("disk", "ab");
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8", "{a}");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        assert_eq!(a, a.to_lowercase());
        assert_ne!(a, derived_uuid("machine", "ab"));
        assert_ne!(a, derived_uuid("disk", "ac"));
        assert_eq!(a, derived_uuid("disk", "ab"));
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(xml_escape(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
    }
}
