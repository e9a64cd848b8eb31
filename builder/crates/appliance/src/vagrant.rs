//! Vagrant boxes: a tar archive with `metadata.json` naming the provider, the provider's disk
//! (and descriptor), and a `Vagrantfile` that Vagrant merges beneath the project's own.
//!
//! - `virtualbox`: `box.ovf` and the streamOptimized VMDK it references, which the provider
//!   imports as an appliance (`VBoxManage import box.ovf`).
//! - `libvirt` (the vagrant-libvirt plugin): `box.img`, a qcow2 image, and `metadata.json`
//!   with `"format": "qcow2"` and `"virtual_size"` in GiB, rounded up, which the plugin
//!   needs to size the volume it clones.
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
use crate::ova::sha256_file;
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
    let (_, file_size) = sha256_file(vmdk)?;
    let descriptor = ovf_descriptor(
        vm,
        &OvfDisk {
            file_name: VIRTUALBOX_DISK.into(),
            file_size,
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
    # The disk holds only an EFI system partition.
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
