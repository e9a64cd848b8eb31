//! Which hypervisor the machine runs on, for the few modules that fail to load elsewhere with
//! an error that does not say "no such device".

/// The hypervisor signature in CPUID leaf 0x40000000 (EBX, ECX, EDX): `VMwareVMware`,
/// `Microsoft Hv`, `KVMKVMKVM`, `TCGTCGTCGTCG`, `VBoxVBoxVBox`; `None` without the
/// hypervisor bit (CPUID.1:ECX[31]).
pub fn cpuid_signature() -> Option<String> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        // CPUID is always available on x86_64.
        let features = __cpuid(1);
        if features.ecx & (1 << 31) == 0 {
            return None;
        }
        let leaf = __cpuid(0x4000_0000);
        let mut bytes = Vec::with_capacity(12);
        for word in [leaf.ebx, leaf.ecx, leaf.edx] {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        Some(String::from_utf8_lossy(&bytes).trim_end_matches('\0').to_string())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Whether KVM's signature (`KVMKVMKVM\0\0\0`) is at one of the hypervisor CPUID bases
/// 0x40000000..0x40010000 in steps of 0x100, where `kvm_para_available()` looks for it (KVM
/// with Hyper-V enlightenments puts it at 0x40000100).
pub fn is_kvm() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        if __cpuid(1).ecx & (1 << 31) == 0 {
            return false;
        }
        (0x4000_0000u32..0x4001_0000).step_by(0x100).any(|base| {
            let leaf = __cpuid(base);
            let mut bytes = Vec::with_capacity(12);
            for word in [leaf.ebx, leaf.ecx, leaf.edx] {
                bytes.extend_from_slice(&word.to_le_bytes());
            }
            bytes == b"KVMKVMKVM\0\0\0"
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the kernel takes this machine for VMware (`arch/x86/kernel/cpu/vmware.c`
/// `vmware_platform`: the CPUID signature, or the DMI vendor on old VMs without one).
pub fn is_vmware(signature: Option<&str>, dmi_sys_vendor: &str) -> bool {
    match signature {
        Some(signature) => signature == "VMwareVMware",
        None => dmi_sys_vendor.trim().starts_with("VMware"),
    }
}

/// Whether `module` is one that refuses to load anywhere but its hypervisor with an error
/// other than ENODEV, on a machine that is not that hypervisor: `ptp_vmw`'s init returns -1
/// (EPERM) unless `x86_hyper_type` is VMware (`drivers/ptp/ptp_vmw.c`), `ptp_kvm`'s
/// EOPNOTSUPP without KVM (`drivers/ptp/ptp_kvm_x86.c`); they would read as a failure, a
/// lockdown refusal or a compressed module the kernel cannot load.
pub fn refuses_this_machine(module: &str) -> bool {
    match module.replace('-', "_").as_str() {
        "ptp_kvm" => !is_kvm(),
        "ptp_vmw" => {
            let vendor = std::fs::read_to_string("/sys/class/dmi/id/sys_vendor").unwrap_or_default();
            !is_vmware(cpuid_signature().as_deref(), &vendor)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmware_is_told_by_cpuid_or_dmi() {
        assert!(is_vmware(Some("VMwareVMware"), "QEMU"));
        assert!(!is_vmware(Some("TCGTCGTCGTCG"), "VMware, Inc."));
        assert!(!is_vmware(Some("Microsoft Hv"), ""));
        assert!(is_vmware(None, "VMware, Inc.\n"));
        assert!(!is_vmware(None, "QEMU\n"));
    }

    #[test]
    fn only_the_hypervisor_ptp_modules_are_judged() {
        assert!(!refuses_this_machine("e1000"));
        assert_eq!(refuses_this_machine("ptp_kvm"), !is_kvm());
        // This test machine is not VMware.
        let vendor = std::fs::read_to_string("/sys/class/dmi/id/sys_vendor").unwrap_or_default();
        if !is_vmware(cpuid_signature().as_deref(), &vendor) {
            assert!(refuses_this_machine("ptp_vmw"));
            assert!(refuses_this_machine("ptp-vmw"));
        }
    }
}
