//! Vagrant boxes: a tar archive with `metadata.json` naming the provider, the provider's disk
//! (and descriptor), and a `Vagrantfile` that Vagrant merges beneath the project's own.
//!
//! - `virtualbox`: `box.ovf` and the streamOptimized VMDK it references, which the provider
//!   imports as an appliance (`VBoxManage import box.ovf`).
//! - `libvirt` (the vagrant-libvirt plugin): `box.img`, a qcow2 image, and `metadata.json`
//!   with `"format": "qcow2"` and `"virtual_size"` in GiB, rounded up, which the plugin
//!   needs to size the volume it clones.
//! - `hyperv`: `Virtual Hard Disks/box.vhdx` and `Virtual Machines/box.xml`, the VM
//!   description Vagrant's Hyper-V provider requires ([`crate::hyperv`]): a Generation 2 VM.
//!
//! The image has no passwords and no `vagrant` user: Vagrant logs in as root with a key the
//! definition's `[ssh] authorized_keys` lets in, whose private half the user names with
//! `config.ssh.private_key_path` (or `UVMKIT_SSH_KEY`). Vagrant must not replace that key
//! (`insert_key = false`: the root file system is rebuilt on every boot, so an inserted key
//! would not survive a reboot), finds no bash (`sh`), and has no shared folder driver in the
//! guest, so the default `/vagrant` folder is off.

use std::io::Write;
use std::path::Path;

use serde_json::json;

use crate::archive::Archive;
use crate::hyperv::{vm_config, HYPERV_CONFIG, HYPERV_DISK};
use crate::ova::sha256_file;
use crate::ovf::derived_uuid;
use crate::ovf::{ovf_descriptor, OvfDisk, VirtualMachine};
use crate::Result;

const GIB: u64 = 1 << 30;

/// The VMDK's member name in a VirtualBox box (its descriptor names this file).
pub const VIRTUALBOX_DISK: &str = "box-disk001.vmdk";

/// Writes the `virtualbox` box of `vm` to `out`: `metadata.json`, `Vagrantfile`, `box.ovf`
/// and the streamOptimized VMDK at `vmdk` (`capacity` bytes virtual size).
pub fn write_virtualbox_box<W: Write>(
    out: W,
    vm: &VirtualMachine,
    vmdk: &Path,
    capacity: u64,
    mtime: u64,
) -> Result<W> {
    let (sha256, file_size) = sha256_file(vmdk)?;
    let descriptor = ovf_descriptor(
        vm,
        &OvfDisk {
            file_name: VIRTUALBOX_DISK.into(),
            file_size,
            sha256,
            capacity,
        },
    );
    let metadata = json_text(&json!({ "provider": "virtualbox" }));
    let mut archive = Archive::new(out, mtime, "Vagrant box");
    archive.add_bytes("metadata.json", metadata.as_bytes())?;
    archive.add_bytes("Vagrantfile", virtualbox_vagrantfile(vm).as_bytes())?;
    archive.add_bytes("box.ovf", descriptor.as_bytes())?;
    archive.add_file(VIRTUALBOX_DISK, vmdk)?;
    archive.finish()
}

/// Writes the `libvirt` box of `vm` to `out`: `metadata.json`, `Vagrantfile` and the qcow2
/// image at `qcow2` (`capacity` bytes virtual size) as `box.img`.
pub fn write_libvirt_box<W: Write>(out: W, vm: &VirtualMachine, qcow2: &Path, capacity: u64, mtime: u64) -> Result<W> {
    let metadata = json_text(&json!({
        "provider": "libvirt",
        "format": "qcow2",
        "virtual_size": capacity.div_ceil(GIB),
    }));
    let mut archive = Archive::new(out, mtime, "Vagrant box");
    archive.add_bytes("metadata.json", metadata.as_bytes())?;
    archive.add_bytes("Vagrantfile", libvirt_vagrantfile(vm).as_bytes())?;
    archive.add_file("box.img", qcow2)?;
    archive.finish()
}

/// Writes the `hyperv` box of `vm` to `out`: `metadata.json`, `Vagrantfile`, the VM
/// description in `Virtual Machines/` and the VHDX at `vhdx` in `Virtual Hard Disks/`.
pub fn write_hyperv_box<W: Write>(out: W, vm: &VirtualMachine, vhdx: &Path, mtime: u64) -> Result<W> {
    let (sha256, _) = sha256_file(vhdx)?;
    let channel = format!("{{{}}}", derived_uuid("hyperv-scsi", &sha256).to_uppercase());
    let config = vm_config(&xml_escape(&vm.name), vm.cpus, vm.memory_mib, &channel);
    let metadata = json_text(&json!({ "provider": "hyperv" }));
    let mut archive = Archive::new(out, mtime, "Vagrant box");
    archive.add_bytes("metadata.json", metadata.as_bytes())?;
    archive.add_bytes("Vagrantfile", hyperv_vagrantfile(vm).as_bytes())?;
    archive.add_dir("Virtual Machines")?;
    archive.add_bytes(HYPERV_CONFIG, config.as_bytes())?;
    archive.add_dir("Virtual Hard Disks")?;
    archive.add_file(HYPERV_DISK, vhdx)?;
    archive.finish()
}

fn json_text(value: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("JSON serialises");
    text.push('\n');
    text
}

/// The SSH and folder settings every provider shares.
fn common_settings(vm: &VirtualMachine) -> String {
    format!(
        r#"# The box's defaults; Vagrant merges this file beneath the project's Vagrantfile, whose
# settings win.
#
# {name} has no passwords and no vagrant user: root logs in with a key listed in the image
# definition's [ssh] authorized_keys. Point Vagrant at its private half, in your Vagrantfile:
#   config.ssh.private_key_path = "~/.ssh/id_ed25519"
# or in the environment: UVMKIT_SSH_KEY=~/.ssh/id_ed25519 vagrant up
Vagrant.configure("2") do |config|
  config.ssh.username = "root"
  config.ssh.private_key_path = ENV["UVMKIT_SSH_KEY"] if ENV["UVMKIT_SSH_KEY"]
  # The root file system is rebuilt on every boot: a key Vagrant inserted would be gone.
  config.ssh.insert_key = false
  config.ssh.shell = "sh"
  # No shared folder driver in the guest.
  config.vm.synced_folder ".", "/vagrant", disabled: true
"#,
        name = vm.name
    )
}

/// The `virtualbox` box's Vagrantfile: CPUs, memory and EFI firmware (the OVF's firmware
/// setting is VMware's, which VirtualBox does not read).
fn virtualbox_vagrantfile(vm: &VirtualMachine) -> String {
    format!(
        r#"{common}
  config.vm.provider "virtualbox" do |vb|
    vb.cpus = {cpus}
    vb.memory = {memory}
    # The disk holds only an EFI system partition. box.ovf's VirtualBox machine section
    # already says EFI; this keeps it so on VirtualBox versions that import without it.
    vb.customize ["modifyvm", :id, "--firmware", "efi"]
    # No guest additions in the image.
    vb.check_guest_additions = false
    vb.functional_vboxsf = false
  end
end
"#,
        common = common_settings(vm),
        cpus = vm.cpus,
        memory = vm.memory_mib,
    )
}

/// The `hyperv` box's Vagrantfile: CPUs and memory, and how to boot with Secure Boot on.
fn hyperv_vagrantfile(vm: &VirtualMachine) -> String {
    format!(
        r#"{common}
  # A Generation 2 VM with Secure Boot off. The disk also boots with Secure Boot on, through
  # shim, under the template that trusts the Microsoft UEFI CA (not Hyper-V's default
  # "Microsoft Windows" one, which is the only one Vagrant can set). With the VM off:
  #   Set-VMFirmware -VMName NAME -EnableSecureBoot On `
  #     -SecureBootTemplate MicrosoftUEFICertificateAuthority
  config.vm.provider "hyperv" do |hv|
    hv.cpus = {cpus}
    hv.memory = {memory}
  end
end
"#,
        common = common_settings(vm),
        cpus = vm.cpus,
        memory = vm.memory_mib,
    )
}

/// The `libvirt` box's Vagrantfile: CPUs, memory, virtio devices and UEFI firmware.
fn libvirt_vagrantfile(vm: &VirtualMachine) -> String {
    format!(
        r#"{common}
  config.vm.provider :libvirt do |lv|
    lv.cpus = {cpus}
    lv.memory = {memory}
    lv.machine_type = "q35"
    lv.disk_bus = "virtio"
    lv.nic_model_type = "virtio"
    # The disk holds only an EFI system partition: boot OVMF. These are the combined
    # code-and-variables builds distributions ship (a ROM image, as `loader` loads it); set
    # lv.loader in your Vagrantfile when yours lives elsewhere.
    firmware = [
      "/usr/share/ovmf/OVMF.fd",
      "/usr/share/OVMF/OVMF.fd",
      "/usr/share/qemu/OVMF.fd",
      "/usr/share/edk2/ovmf/OVMF.fd",
      "/usr/share/edk2-ovmf/x64/OVMF.fd",
    ].find {{ |path| File.exist?(path) }}
    lv.loader = firmware if firmware
  end
end
"#,
        common = common_settings(vm),
        cpus = vm.cpus,
        memory = vm.memory_mib,
    )
}

/// Escapes the characters XML 1.0 reserves in element content.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use uvmkit_testkit::ScratchDir;

    fn members(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().to_str().unwrap().to_string();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, data)
            })
            .collect()
    }

    fn vm() -> VirtualMachine {
        VirtualMachine {
            name: "docker".into(),
            cpus: 4,
            memory_mib: 3072,
        }
    }

    #[test]
    fn virtualbox_box_holds_metadata_vagrantfile_ovf_and_disk() {
        let dir = ScratchDir::new("appliance-vbox");
        let vmdk = dir.path().join("d.vmdk");
        std::fs::write(&vmdk, vec![7u8; 1000]).unwrap();
        let bytes = write_virtualbox_box(Vec::new(), &vm(), &vmdk, 2 << 30, 5).unwrap();
        let m = members(&bytes);
        let names: Vec<&str> = m.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["metadata.json", "Vagrantfile", "box.ovf", "box-disk001.vmdk"]);
        let metadata: serde_json::Value = serde_json::from_slice(&m[0].1).unwrap();
        assert_eq!(metadata, json!({ "provider": "virtualbox" }));
        let vagrantfile = String::from_utf8(m[1].1.clone()).unwrap();
        assert!(vagrantfile.contains("config.ssh.username = \"root\""));
        assert!(vagrantfile.contains("vb.cpus = 4\n    vb.memory = 3072\n"));
        assert!(vagrantfile.contains("\"--firmware\", \"efi\""));
        let ovf = String::from_utf8(m[2].1.clone()).unwrap();
        assert!(ovf.contains(r#"ovf:href="box-disk001.vmdk" ovf:id="file1" ovf:size="1000""#));
        assert_eq!(m[3].1, vec![7u8; 1000]);
    }

    #[test]
    fn hyperv_box_holds_metadata_vagrantfile_config_and_disk_in_their_directories() {
        let dir = ScratchDir::new("appliance-hyperv");
        let vhdx = dir.path().join("d.vhdx");
        std::fs::write(&vhdx, b"vhdxfile").unwrap();
        let bytes = write_hyperv_box(Vec::new(), &vm(), &vhdx, 5).unwrap();
        let m = members(&bytes);
        let names: Vec<&str> = m.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "metadata.json",
                "Vagrantfile",
                "Virtual Machines/",
                "Virtual Machines/box.xml",
                "Virtual Hard Disks/",
                "Virtual Hard Disks/box.vhdx"
            ]
        );
        let metadata: serde_json::Value = serde_json::from_slice(&m[0].1).unwrap();
        assert_eq!(metadata, json!({ "provider": "hyperv" }));
        let vagrantfile = String::from_utf8(m[1].1.clone()).unwrap();
        assert!(vagrantfile.contains("hv.cpus = 4\n    hv.memory = 3072\n"));
        assert!(vagrantfile.contains("MicrosoftUEFICertificateAuthority"));
        let config = String::from_utf8(m[3].1.clone()).unwrap();
        assert!(config.contains(r#"<name type="string">docker</name>"#), "{config}");
        assert!(config.contains(r#"<count type="integer">4</count>"#), "{config}");
        assert_eq!(m[5].1, b"vhdxfile");
        // Same disk, same bytes.
        assert_eq!(bytes, write_hyperv_box(Vec::new(), &vm(), &vhdx, 5).unwrap());
    }

    #[test]
    fn libvirt_box_holds_metadata_vagrantfile_and_image() {
        let dir = ScratchDir::new("appliance-libvirt");
        let img = dir.path().join("d.qcow2");
        std::fs::write(&img, b"QFI\xfb").unwrap();
        // 2 GiB and one byte round up to 3.
        let bytes = write_libvirt_box(Vec::new(), &vm(), &img, (2 << 30) + 512, 5).unwrap();
        let m = members(&bytes);
        let names: Vec<&str> = m.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["metadata.json", "Vagrantfile", "box.img"]);
        let metadata: serde_json::Value = serde_json::from_slice(&m[0].1).unwrap();
        assert_eq!(
            metadata,
            json!({ "provider": "libvirt", "format": "qcow2", "virtual_size": 3 })
        );
        let vagrantfile = String::from_utf8(m[1].1.clone()).unwrap();
        assert!(vagrantfile.contains("lv.cpus = 4\n    lv.memory = 3072\n"));
        assert!(vagrantfile.contains("config.ssh.insert_key = false"));
        assert!(vagrantfile.contains("].find { |path| File.exist?(path) }"));
        assert_eq!(m[2].1, b"QFI\xfb");
    }
}
