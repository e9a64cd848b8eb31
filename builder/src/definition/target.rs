//! The closed sets a definition chooses from: the hypervisors an image must boot under and the
//! artifact formats it is written as.

use serde::Deserialize;

/// A hypervisor the image must boot under; selects kernel modules and required options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Microsoft Hyper-V (VMBus storage and network, Generation 2 UEFI).
    Hyperv,
    /// VMware Workstation, Fusion and ESXi (pvscsi, LSI Logic, vmxnet3, e1000).
    Vmware,
    /// Oracle VirtualBox (AHCI, e1000, virtio-net).
    Virtualbox,
    /// QEMU/KVM and cloud-hypervisor (virtio).
    Qemu,
}

impl Target {
    /// All targets, in a fixed order.
    pub const ALL: [Target; 4] = [Target::Hyperv, Target::Vmware, Target::Virtualbox, Target::Qemu];

    /// The lowercase name used in definitions and in `kernel-config/`.
    pub fn name(self) -> &'static str {
        match self {
            Target::Hyperv => "hyperv",
            Target::Vmware => "vmware",
            Target::Virtualbox => "virtualbox",
            Target::Qemu => "qemu",
        }
    }

    /// Parses a target name as the command line gives it.
    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// An artifact format `uvmkit build` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `NAME.efi` (UKI), `NAME-kernel` and `NAME-initrd.img`.
    Efi,
    /// `NAME.iso`, hybrid BIOS/UEFI.
    Iso,
    /// `NAME.raw`, a sparse GPT disk.
    Raw,
    /// `NAME.vhdx`, Hyper-V.
    Vhdx,
    /// `NAME.vmdk`, monolithicSparse.
    Vmdk,
    /// `NAME-stream.vmdk`, streamOptimized.
    VmdkStream,
    /// `NAME.qcow2`, QEMU/KVM (libvirt, Lima, podman machine).
    Qcow2,
    /// `NAME.ova`, an OVF appliance for VMware and VirtualBox.
    Ova,
    /// `NAME-virtualbox.box`, a Vagrant box for the `virtualbox` provider.
    VagrantVirtualbox,
    /// `NAME-libvirt.box`, a Vagrant box for the `libvirt` provider.
    VagrantLibvirt,
    /// `NAME-hyperv.box`, a Vagrant box for the `hyperv` provider (Generation 2).
    VagrantHyperv,
}

impl Format {
    /// Every format, in the order they are built.
    pub const ALL: [Format; 11] = [
        Format::Efi,
        Format::Iso,
        Format::Raw,
        Format::Vhdx,
        Format::Vmdk,
        Format::VmdkStream,
        Format::Qcow2,
        Format::Ova,
        Format::VagrantVirtualbox,
        Format::VagrantLibvirt,
        Format::VagrantHyperv,
    ];

    /// The name used in definitions and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Efi => "efi",
            Format::Iso => "iso",
            Format::Raw => "raw",
            Format::Vhdx => "vhdx",
            Format::Vmdk => "vmdk",
            Format::VmdkStream => "vmdk-stream",
            Format::Qcow2 => "qcow2",
            Format::Ova => "ova",
            Format::VagrantVirtualbox => "vagrant-virtualbox",
            Format::VagrantLibvirt => "vagrant-libvirt",
            Format::VagrantHyperv => "vagrant-hyperv",
        }
    }

    /// Parses a format name as the command line gives it.
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// True for the formats that hold a GPT disk (as a disk image or inside a package).
    pub fn is_disk(self) -> bool {
        !matches!(self, Format::Efi | Format::Iso)
    }

    /// True for the packages that carry a disk image with a description of the VM around it
    /// (an OVA, Vagrant boxes).
    pub fn is_package(self) -> bool {
        matches!(
            self,
            Format::Ova | Format::VagrantVirtualbox | Format::VagrantLibvirt | Format::VagrantHyperv
        )
    }

    /// True for the Vagrant boxes, which need a login key (`[ssh] authorized_keys`).
    pub fn is_vagrant_box(self) -> bool {
        matches!(
            self,
            Format::VagrantVirtualbox | Format::VagrantLibvirt | Format::VagrantHyperv
        )
    }

    /// Every format's name, comma-separated, for messages.
    pub fn names() -> String {
        Format::ALL.map(Format::name).join(", ")
    }
}
