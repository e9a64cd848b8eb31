//! The OVA package (DSP0243 1.0.0 clause 5.3): one ustar archive holding the OVF descriptor
//! first, then the disk it references, then the manifest of both files' SHA-256 digests
//! (clause 5.1: `SHA256(file)= hex` lines), which VMware checks on import and VirtualBox
//! verifies when present.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::archive::Archive;
use crate::ovf::{ovf_descriptor, OvfDisk, VirtualMachine};
use crate::{Error, Result};

/// The names of an OVA's three members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OvaLayout {
    /// The OVF descriptor (`NAME.ovf`).
    pub descriptor: String,
    /// The streamOptimized VMDK (`NAME-disk1.vmdk`).
    pub disk: String,
    /// The manifest (`NAME.mf`: the descriptor's name with `.mf`, as clause 5.1 requires).
    pub manifest: String,
}

impl OvaLayout {
    /// The members of image `name`'s OVA.
    pub fn for_image(name: &str) -> OvaLayout {
        OvaLayout {
            descriptor: format!("{name}.ovf"),
            disk: format!("{name}-disk1.vmdk"),
            manifest: format!("{name}.mf"),
        }
    }
}

/// Writes the OVA of `vm` to `out`: the descriptor, the streamOptimized VMDK at `vmdk` (of
/// `capacity` bytes virtual size) and the manifest, each member stamped `mtime`.
pub fn write_ova<W: Write>(
    out: W,
    vm: &VirtualMachine,
    layout: &OvaLayout,
    vmdk: &Path,
    capacity: u64,
    mtime: u64,
) -> Result<W> {
    let (disk_sha256, file_size) = sha256_file(vmdk)?;
    let descriptor = ovf_descriptor(
        vm,
        &OvfDisk {
            file_name: layout.disk.clone(),
            file_size,
            sha256: disk_sha256.clone(),
            capacity,
        },
    );
    let manifest = format!(
        "SHA256({})= {}\nSHA256({})= {disk_sha256}\n",
        layout.descriptor,
        hex::encode(Sha256::digest(descriptor.as_bytes())),
        layout.disk,
    );
    let mut archive = Archive::new(out, mtime, "OVA");
    archive.add_bytes(&layout.descriptor, descriptor.as_bytes())?;
    archive.add_file(&layout.disk, vmdk)?;
    archive.add_bytes(&layout.manifest, manifest.as_bytes())?;
    archive.finish()
}

/// The SHA-256 (hex) and length of the file at `path`.
pub(crate) fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let read_error = |source| Error::ReadDisk {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_error)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(read_error)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uvmkit_testkit::ScratchDir;

    #[test]
    fn members_come_in_order_and_the_manifest_matches() {
        let dir = ScratchDir::new("appliance-ova");
        let vmdk = dir.path().join("disk.vmdk");
        std::fs::write(&vmdk, b"KDMV and some grains").unwrap();
        let vm = VirtualMachine {
            name: "m".into(),
            cpus: 1,
            memory_mib: 512,
        };
        let layout = OvaLayout::for_image("m");
        let bytes = write_ova(Vec::new(), &vm, &layout, &vmdk, 1 << 30, 0).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut members = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_str().unwrap().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            members.push((name, data));
        }
        let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["m.ovf", "m-disk1.vmdk", "m.mf"]);
        assert_eq!(members[1].1, b"KDMV and some grains");
        let manifest = String::from_utf8(members[2].1.clone()).unwrap();
        let ovf_digest = hex::encode(Sha256::digest(&members[0].1));
        let disk_digest = hex::encode(Sha256::digest(&members[1].1));
        assert_eq!(
            manifest,
            format!("SHA256(m.ovf)= {ovf_digest}\nSHA256(m-disk1.vmdk)= {disk_digest}\n")
        );
        let ovf = String::from_utf8(members[0].1.clone()).unwrap();
        assert!(
            ovf.contains(r#"ovf:href="m-disk1.vmdk" ovf:id="file1" ovf:size="20""#),
            "{ovf}"
        );
        // Same inputs, same bytes.
        assert_eq!(bytes, write_ova(Vec::new(), &vm, &layout, &vmdk, 1 << 30, 0).unwrap());
    }
}
