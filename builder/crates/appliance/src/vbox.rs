//! VirtualBox's own machine description inside the OVF (`vbox:Machine`, namespace
//! `http://www.virtualbox.org/ovf/machine`), which is the only place VirtualBox reads the
//! firmware type from when it imports an appliance.
//!
//! What VirtualBox's importer does with it (VirtualBox sources, `Main/xml/ovfreader.cpp`,
//! `Main/src-server/ApplianceImplImport.cpp`, `Main/xml/Settings.cpp`,
//! `Main/xml/VirtualBox-settings.xsd`):
//!
//! - the OVF reader looks for a child `Machine` of the `VirtualSystem` with the prefix `vbox`
//!   (the prefix itself, not only the namespace, is what it matches), and the importer then
//!   builds the machine from it instead of from the OVF items: CPU count, memory, firmware,
//!   network adapters and storage controllers come from here;
//! - the settings reader needs `uuid` and `name` on `Machine`, and a `Hardware` child; the
//!   `version` attribute names the settings format the element is written in. `1.16` (the
//!   format of VirtualBox 5.1 to 6.1) keeps the firmware at `Hardware/Firmware` and the storage
//!   controllers at `Machine/StorageControllers`, which every reader since then still reads
//!   (format 1.20 moved CPU and chipset settings under `Platform`, for 1.20 files only);
//! - each hard disk attachment names its medium by `Image/@uuid`, and the importer looks that
//!   UUID up among the OVF `Disk` elements' `vbox:uuid` attributes (compared as the plain
//!   lower-case form, without braces); a disk without a match fails the import ("contains a
//!   medium attachment for the disk image ... but the OVF describes no such image"). The
//!   imported disk gets a new UUID, so one appliance imports any number of times;
//! - a network adapter is enabled only when it is listed here (`enabled="true"`); since
//!   format 1.16 an adapter without `type` is an `Am79C973`, so the E1000 (`82540EM`) is named;
//!   a missing MAC address is generated on import, which keeps this text deterministic.

use std::fmt::Write as _;

/// The settings format version the machine is written in (VirtualBox 5.1 to 6.1; read by
/// every later version).
pub const SETTINGS_VERSION: &str = "1.16";

/// VirtualBox's guest OS type for 64-bit Linux without a more precise distribution.
pub const OS_TYPE: &str = "Linux_64";

/// The name of the storage controller the disk is attached to, in VirtualBox.
pub const SATA_CONTROLLER: &str = "SATA";

/// The `vbox:Machine` element for a machine called `name` with `cpus` CPUs, `memory_mib` MiB
/// of memory, EFI firmware, one E1000 adapter on NAT, and the disk `disk_uuid` on port 0 of an
/// AHCI controller; `machine_uuid` identifies the machine. Lines are indented for a child of
/// `VirtualSystem` (two levels).
pub(crate) fn machine_element(name: &str, cpus: u32, memory_mib: u64, machine_uuid: &str, disk_uuid: &str) -> String {
    let mut x = String::new();
    let mut line = |indent: usize, text: &str| {
        let _ = writeln!(x, "{:indent$}{text}", "", indent = indent * 2);
    };
    line(
        2,
        &format!(
            r#"<vbox:Machine ovf:required="false" version="{SETTINGS_VERSION}" uuid="{{{machine_uuid}}}" name="{name}" OSType="{OS_TYPE}" snapshotFolder="Snapshots">"#
        ),
    );
    line(
        3,
        "<ovf:Info>Complete VirtualBox machine configuration in VirtualBox format</ovf:Info>",
    );
    line(3, "<Hardware>");
    line(4, &format!(r#"<CPU count="{cpus}">"#));
    line(5, r#"<PAE enabled="true"/>"#);
    line(5, r#"<LongMode enabled="true"/>"#);
    line(4, "</CPU>");
    line(4, &format!(r#"<Memory RAMSize="{memory_mib}"/>"#));
    // The disk holds only an EFI system partition: without this VirtualBox boots its BIOS.
    line(4, r#"<Firmware type="EFI"/>"#);
    line(4, "<Boot>");
    line(5, r#"<Order position="1" device="HardDisk"/>"#);
    line(5, r#"<Order position="2" device="None"/>"#);
    line(5, r#"<Order position="3" device="None"/>"#);
    line(5, r#"<Order position="4" device="None"/>"#);
    line(4, "</Boot>");
    line(4, "<BIOS>");
    line(5, r#"<IOAPIC enabled="true"/>"#);
    line(4, "</BIOS>");
    line(4, "<Network>");
    line(5, r#"<Adapter slot="0" enabled="true" type="82540EM">"#);
    line(6, "<NAT/>");
    line(5, "</Adapter>");
    line(4, "</Network>");
    line(4, r#"<RTC localOrUTC="UTC"/>"#);
    line(3, "</Hardware>");
    line(3, "<StorageControllers>");
    line(
        4,
        &format!(
            r#"<StorageController name="{SATA_CONTROLLER}" type="AHCI" PortCount="1" useHostIOCache="false" Bootable="true">"#
        ),
    );
    line(
        5,
        r#"<AttachedDevice type="HardDisk" hotpluggable="false" port="0" device="0">"#,
    );
    line(6, &format!(r#"<Image uuid="{{{disk_uuid}}}"/>"#));
    line(5, "</AttachedDevice>");
    line(4, "</StorageController>");
    line(3, "</StorageControllers>");
    line(2, "</vbox:Machine>");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_firmware_disk_and_adapter() {
        let m = machine_element(
            "docker",
            2,
            2048,
            "11111111-2222-8333-8444-555555555555",
            "aaaaaaaa-bbbb-8ccc-8ddd-eeeeeeeeeeee",
        );
        assert!(m.starts_with(
            "    <vbox:Machine ovf:required=\"false\" version=\"1.16\" uuid=\"{11111111-2222-8333-8444-555555555555}\" name=\"docker\" OSType=\"Linux_64\""
        ));
        assert!(m.contains("<Firmware type=\"EFI\"/>"));
        assert!(m.contains("<CPU count=\"2\">"));
        assert!(m.contains("<Memory RAMSize=\"2048\"/>"));
        assert!(m.contains("<Image uuid=\"{aaaaaaaa-bbbb-8ccc-8ddd-eeeeeeeeeeee}\"/>"));
        assert!(m.contains("<Adapter slot=\"0\" enabled=\"true\" type=\"82540EM\">"));
        assert!(m.ends_with("    </vbox:Machine>\n"));
    }
}
