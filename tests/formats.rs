//! qcow2, OVA and Vagrant boxes of `images/minimal.toml` (with a login key and `[vm]`
//! settings): one build of every package format, read back by independent tools (`qemu-img`,
//! `tar`, `sha256sum`, `xmllint`), the qcow2 booted under OVMF, and a rebuild that must repeat
//! every byte.
//!
//! No copy of the DMTF OVF envelope schema (DSP8023) comes in a Debian or PyPI package (the
//! Common OVF Tool ships none either), so the descriptors are checked with `xmllint` for
//! well-formedness and against [`OVF_REQUIREMENTS`]: each element and attribute VMware's and
//! VirtualBox's importers need, with the reason, evaluated by `xmllint --xpath`.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

const READY: &str = "uvmkit-init: ready";
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const FORMATS: &str = "raw,vhdx,qcow2,ova,vagrant-virtualbox,vagrant-libvirt,vagrant-hyperv";
/// A public key in the form `[ssh] authorized_keys` takes; nothing logs in with it here.
const PUBLIC_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHV2bWtpdC1mb3JtYXRzLXRlc3Qta2V5LW9ubHktZm9ybQ uvmkit-test";
const DISK_SIZE: u64 = 2 << 30;

/// `images/minimal.toml` with a login key, 1 CPU and 1 GiB, written as `name.toml` into `dir`,
/// plus `extra` lines under `[disk]`.
fn definition(dir: &Path, extra_disk: &str) -> PathBuf {
    let mut text = std::fs::read_to_string(repo_root().join("images/minimal.toml")).unwrap();
    text = text.replace("[disk]\n", &format!("[disk]\n{extra_disk}"));
    text.push_str(&format!(
        "\n[vm]\ncpus = 1\nmemory = \"1GiB\"\n\n[ssh]\nauthorized_keys = [{PUBLIC_KEY:?}]\n"
    ));
    let path = dir.join("minimal.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn build_into(name: &str, extra_disk: &str, formats: &str) -> PathBuf {
    let dir = test_dir(name);
    let def = definition(&dir, extra_disk);
    let out = dir.join("out");
    let log = uvmkit_ok(&[
        "build",
        def.to_str().unwrap(),
        "--format",
        formats,
        "-o",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    eprintln!("{log}");
    out
}

/// The output directory of the one build most tests share.
fn built() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| build_into("formats-build", "", FORMATS))
}

fn artifact(name: &str) -> PathBuf {
    let p = built().join(name);
    assert!(p.exists(), "{} was not written", p.display());
    p
}

/// `tar -tf`: the member names in archive order.
fn tar_members(archive: &Path) -> Vec<String> {
    let (ok, text) = run("tar", &["-tf", archive.to_str().unwrap()]);
    assert!(ok, "tar -tf {}: {text}", archive.display());
    text.lines().map(str::to_string).collect()
}

/// Extracts `archive` into a fresh directory `name` with `tar -xf`.
fn untar(archive: &Path, name: &str) -> PathBuf {
    let dir = test_dir(name);
    let (ok, text) = run("tar", &["-xf", archive.to_str().unwrap(), "-C", dir.to_str().unwrap()]);
    assert!(ok, "tar -xf {}: {text}", archive.display());
    dir
}

fn qemu_img_check(path: &Path, format: &str) {
    let (ok, text) = run("qemu-img", &["check", "-f", format, path.to_str().unwrap()]);
    assert!(
        ok && text.contains("No errors were found") && !text.contains("leaked"),
        "qemu-img check {}: {text}",
        path.display()
    );
}

/// `qemu-img compare` against the shared build's raw disk.
fn qemu_img_compare_raw(path: &Path, format: &str) {
    qemu_img_compare(path, format, &artifact("minimal.raw"));
}

fn qemu_img_compare(path: &Path, format: &str, raw: &Path) {
    let (ok, text) = run(
        "qemu-img",
        &[
            "compare",
            "-f",
            format,
            "-F",
            "raw",
            path.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    assert!(
        ok && text.contains("identical"),
        "qemu-img compare {} raw: {text}",
        path.display()
    );
}

fn qemu_img_info(path: &Path, format: &str) -> serde_json::Value {
    let (ok, text) = run(
        "qemu-img",
        &["info", "--output=json", "-f", format, path.to_str().unwrap()],
    );
    assert!(ok, "qemu-img info {}: {text}", path.display());
    serde_json::from_str(&text).unwrap()
}

/// The value of attribute `attr` in the first element of `xml` that starts with `element`.
fn attribute<'a>(xml: &'a str, element: &str, attr: &str) -> &'a str {
    let start = xml.find(element).unwrap_or_else(|| panic!("no {element} in:\n{xml}"));
    let tag = &xml[start..start + xml[start..].find('>').unwrap()];
    let key = format!("{attr}=\"");
    let at = tag.find(&key).unwrap_or_else(|| panic!("no {attr} in {tag}")) + key.len();
    &tag[at..at + tag[at..].find('"').unwrap()]
}

/// What an OVF descriptor must hold for VMware and VirtualBox to import it as a VM that
/// boots EFI from its disk: an XPath (prefixes `ovf`, `rasd`, `vssd`, `vmw`, `vbox`; the
/// unprefixed children of `vbox:Machine` are in the OVF namespace, as VirtualBox writes them)
/// that must be true, and why.
const OVF_REQUIREMENTS: &[(&str, &str)] = &[
    (
        "/ovf:Envelope",
        "DSP0243 8.1: the root is Envelope in the OVF 1.x namespace; VirtualBox refuses any other \
         root and takes the OVF version from the namespace",
    ),
    (
        "/ovf:Envelope/ovf:References/ovf:File[@ovf:id and @ovf:href and @ovf:size > 0]",
        "DSP0243 7.1: every file of the package with its size; VirtualBox needs ovf:href, VMware \
         checks the size",
    ),
    (
        "/ovf:Envelope/ovf:DiskSection/ovf:Disk[@ovf:diskId and @ovf:capacity > 0 and \
         @ovf:format = 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized']",
        "DSP0243 9.1: VirtualBox refuses a Disk without diskId, format or capacity; the format URI \
         is how both pick the VMDK reader",
    ),
    (
        "/ovf:Envelope/ovf:DiskSection/ovf:Disk[@ovf:fileRef = /ovf:Envelope/ovf:References/ovf:File/@ovf:id]",
        "the Disk's fileRef names a File (VirtualBox: cannot find References/File element)",
    ),
    (
        "/ovf:Envelope/ovf:NetworkSection/ovf:Network[@ovf:name = \
         /ovf:Envelope/ovf:VirtualSystem/ovf:VirtualHardwareSection/ovf:Item[rasd:ResourceType = 10]/rasd:Connection]",
        "DSP0243 9.2: the network a NIC connects to is listed at the envelope level",
    ),
    (
        "/ovf:Envelope/ovf:VirtualSystem[@ovf:id]/ovf:OperatingSystemSection[@ovf:id]",
        "VirtualBox refuses an OperatingSystemSection without ovf:id (the CIM OS type)",
    ),
    (
        "/ovf:Envelope/ovf:VirtualSystem/ovf:VirtualHardwareSection/ovf:System/vssd:VirtualSystemType[starts-with(., 'vmx-')]",
        "VMware imports only virtual hardware families it knows (vmx-NN)",
    ),
    (
        "/ovf:Envelope/ovf:VirtualSystem/ovf:VirtualHardwareSection/ovf:Item[rasd:ResourceType = 3 and rasd:VirtualQuantity = 1]",
        "CPUs, from [vm] cpus",
    ),
    (
        "/ovf:Envelope/ovf:VirtualSystem/ovf:VirtualHardwareSection/ovf:Item[rasd:ResourceType = 4 and \
         rasd:AllocationUnits = 'byte * 2^20' and rasd:VirtualQuantity = 1024]",
        "memory, from [vm] memory; VirtualBox refuses allocation units it does not know",
    ),
    (
        "/ovf:Envelope/ovf:VirtualSystem/ovf:VirtualHardwareSection/ovf:Item[rasd:ResourceType = 20 and \
         rasd:ResourceSubType = 'vmware.sata.ahci' and rasd:InstanceID]",
        "the SATA (AHCI) controller under the sub-type VMware writes; VirtualBox (7.0 and later) \
         reads it as AHCI and needs its InstanceID",
    ),
    (
        "/ovf:Envelope/ovf:VirtualSystem/ovf:VirtualHardwareSection/ovf:Item[rasd:ResourceType = 17 and \
         rasd:HostResource = concat('ovf:/disk/', /ovf:Envelope/ovf:DiskSection/ovf:Disk/@ovf:diskId) and \
         rasd:Parent = ../ovf:Item[rasd:ResourceType = 20]/rasd:InstanceID]",
        "the disk drive on that controller, holding the Disk (VirtualBox: invalid parent / invalid \
         host resource)",
    ),
    (
        "/ovf:Envelope/ovf:VirtualSystem/ovf:VirtualHardwareSection/ovf:Item[rasd:ResourceType = 10 and \
         rasd:ResourceSubType = 'E1000']",
        "a NIC both hypervisors emulate and the kernel drives (e1000)",
    ),
    (
        "/ovf:Envelope/ovf:VirtualSystem/ovf:VirtualHardwareSection/vmw:Config[@ovf:required = 'false' and \
         @vmw:key = 'firmware' and @vmw:value = 'efi']",
        "VMware boots BIOS unless this says efi; the disk has only an EFI system partition",
    ),
    (
        "/ovf:Envelope/ovf:VirtualSystem/vbox:Machine[@ovf:required = 'false' and @uuid and @name and @version]",
        "VirtualBox's machine description: its settings reader needs uuid and name, version names \
         the settings format",
    ),
    (
        "/ovf:Envelope/ovf:VirtualSystem/vbox:Machine/ovf:Hardware/ovf:Firmware[@type = 'EFI']",
        "VirtualBox takes the firmware only from here",
    ),
    (
        "/ovf:Envelope/ovf:VirtualSystem/vbox:Machine/ovf:Hardware[ovf:CPU/@count = 1 and ovf:Memory/@RAMSize = 1024]",
        "VirtualBox takes CPUs and memory from its machine when present",
    ),
    (
        "/ovf:Envelope/ovf:VirtualSystem/vbox:Machine/ovf:Hardware/ovf:Network/ovf:Adapter[@enabled = 'true' and \
         @type = '82540EM' and ovf:NAT]",
        "VirtualBox enables only the adapters listed here (an E1000 on NAT)",
    ),
    (
        "/ovf:Envelope/ovf:VirtualSystem/vbox:Machine/ovf:StorageControllers/ovf:StorageController[@type = 'AHCI']/\
         ovf:AttachedDevice[@type = 'HardDisk']/ovf:Image[@uuid = concat('{', /ovf:Envelope/ovf:DiskSection/ovf:Disk/@vbox:uuid, '}')]",
        "VirtualBox attaches the OVF disk whose vbox:uuid the machine's attachment names; a \
         mismatch fails the import",
    ),
];

/// `expr` with each `prefix:Name` and `@prefix:name` spelled as a local-name and namespace
/// test, since `xmllint --xpath` has no way to bind prefixes.
fn xpath_without_prefixes(expr: &str) -> String {
    const NAMESPACES: [(&str, &str); 5] = [
        ("ovf", "http://schemas.dmtf.org/ovf/envelope/1"),
        (
            "rasd",
            "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
        ),
        (
            "vssd",
            "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData",
        ),
        ("vmw", "http://www.vmware.com/schema/ovf"),
        ("vbox", "http://www.virtualbox.org/ovf/machine"),
    ];
    let mut out = String::new();
    let mut rest = expr;
    'scan: while !rest.is_empty() {
        for (prefix, uri) in NAMESPACES {
            let token = format!("{prefix}:");
            // A prefixed name starts after a step, predicate or operator, never inside a word
            // or a string (the string 'ovf:/disk/...' has no name after its colon).
            let at_boundary = out.is_empty() || out.ends_with(['/', '[', '@', ' ', '(', '=', ',']);
            if at_boundary && rest.starts_with(&token) {
                let name_len = rest[token.len()..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len() - token.len());
                if name_len > 0 {
                    let name = &rest[token.len()..token.len() + name_len];
                    let attribute = out.ends_with('@');
                    if attribute {
                        out.pop();
                        out.push_str(&format!("@*[local-name()='{name}' and namespace-uri()='{uri}']"));
                    } else {
                        out.push_str(&format!("*[local-name()='{name}' and namespace-uri()='{uri}']"));
                    }
                    rest = &rest[token.len() + name_len..];
                    continue 'scan;
                }
            }
        }
        let c = rest.chars().next().unwrap();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The OVF requirements `ovf` does not meet, each as "XPath: why".
fn unmet_ovf_requirements(ovf: &Path) -> Vec<String> {
    OVF_REQUIREMENTS
        .iter()
        .filter_map(|(expr, why)| {
            let query = format!("boolean({})", xpath_without_prefixes(expr));
            let (ok, text) = run("xmllint", &["--xpath", &query, ovf.to_str().unwrap()]);
            assert!(ok, "xmllint --xpath {query}: {text}");
            (text.trim() != "true").then(|| format!("{expr}: {why}"))
        })
        .collect()
}

/// Checks an OVF descriptor with xmllint and against the disk file it references.
fn check_descriptor(ovf: &Path, vmdk: &Path) {
    if have("xmllint") {
        let (ok, text) = run("xmllint", &["--noout", ovf.to_str().unwrap()]);
        assert!(ok, "xmllint --noout {}: {text}", ovf.display());
        let unmet = unmet_ovf_requirements(ovf);
        assert!(
            unmet.is_empty(),
            "{} lacks what VMware or VirtualBox need:\n{}",
            ovf.display(),
            unmet.join("\n")
        );
    }
    let xml = std::fs::read_to_string(ovf).unwrap();
    let vmdk_name = vmdk.file_name().unwrap().to_str().unwrap();
    assert_eq!(attribute(&xml, "<File ", "ovf:href"), vmdk_name);
    assert_eq!(
        attribute(&xml, "<File ", "ovf:size").parse::<u64>().unwrap(),
        std::fs::metadata(vmdk).unwrap().len(),
        "the descriptor's file size"
    );
    let capacity: u64 = attribute(&xml, "<Disk ", "ovf:capacity").parse().unwrap();
    assert_eq!(capacity, DISK_SIZE);
    let info = qemu_img_info(vmdk, "vmdk");
    assert_eq!(info["virtual-size"], capacity, "{info}");
    assert_eq!(
        info["format-specific"]["data"]["create-type"], "streamOptimized",
        "{info}"
    );
    // [vm] cpus = 1, memory = 1GiB, and the hardware both importers take.
    for needle in [
        "<rasd:ResourceType>3</rasd:ResourceType>\n        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>",
        "<rasd:ResourceType>4</rasd:ResourceType>\n        <rasd:VirtualQuantity>1024</rasd:VirtualQuantity>",
        "<rasd:ResourceSubType>vmware.sata.ahci</rasd:ResourceSubType>",
        "<rasd:ResourceSubType>E1000</rasd:ResourceSubType>",
        "<rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>",
        r#"vmw:key="firmware" vmw:value="efi""#,
    ] {
        assert!(xml.contains(needle), "{} lacks {needle:?}:\n{xml}", ovf.display());
    }
    qemu_img_check(vmdk, "vmdk");
    qemu_img_compare_raw(vmdk, "vmdk");
}

#[test]
fn every_artifact_is_in_the_checksums_and_the_manifest() {
    let out = built();
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    let names = [
        ("minimal.raw", "raw"),
        ("minimal.qcow2", "qcow2"),
        ("minimal.ova", "ova"),
        ("minimal-virtualbox.box", "vagrant-virtualbox"),
        ("minimal-libvirt.box", "vagrant-libvirt"),
        ("minimal-hyperv.box", "vagrant-hyperv"),
    ];
    for (name, _) in names {
        assert!(
            sums.contains(&format!("  {name}\n")),
            "{name} missing from SHA256SUMS:\n{sums}"
        );
    }
    let (ok, text) = run(
        "sh",
        &["-c", &format!("cd {} && sha256sum -c SHA256SUMS", out.display())],
    );
    assert!(ok, "sha256sum -c: {text}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let artifacts = manifest["artifacts"].as_array().unwrap();
    for (name, kind) in names {
        assert!(
            artifacts.iter().any(|a| a["name"] == name && a["kind"] == kind),
            "{name} ({kind}) missing from manifest.json: {manifest}"
        );
    }
    let sbom = std::fs::read_to_string(out.join("minimal.spdx.json")).unwrap();
    assert!(sbom.contains("\"minimal.ova\""), "the SBOM lists the OVA");
    // The packages' scratch disks are gone.
    for entry in std::fs::read_dir(out).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(!name.starts_with('.'), "leftover {name}");
    }
}

#[test]
fn qcow2_passes_qemu_img_check_and_matches_raw() {
    if !have("qemu-img") {
        return;
    }
    let qcow2 = artifact("minimal.qcow2");
    qemu_img_check(&qcow2, "qcow2");
    qemu_img_compare_raw(&qcow2, "qcow2");
    let info = qemu_img_info(&qcow2, "qcow2");
    assert_eq!(info["virtual-size"], DISK_SIZE, "{info}");
    assert_eq!(info["cluster-size"], 65536, "{info}");
    // compat 1.1 is version 3.
    assert_eq!(info["format-specific"]["data"]["compat"], "1.1", "{info}");
    let len = std::fs::metadata(&qcow2).unwrap().len();
    assert!(len < 512 << 20, "the qcow2 holds {len} bytes: more than its data");
}

#[test]
fn compressed_qcow2_passes_qemu_img_check_and_is_smaller() {
    if !have("qemu-img") {
        return;
    }
    // Another definition text gives other disk identifiers: compare with its own raw disk.
    let out = build_into("formats-compressed", "qcow2_compressed = true\n", "raw,qcow2");
    let compressed = out.join("minimal.qcow2");
    let (ok, text) = run(
        "qemu-img",
        &["check", "--output=json", "-f", "qcow2", compressed.to_str().unwrap()],
    );
    assert!(ok, "qemu-img check: {text}");
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["check-errors"], 0, "{report}");
    assert!(
        report.get("leaks").is_none() && report.get("corruptions").is_none(),
        "{report}"
    );
    assert!(report["compressed-clusters"].as_u64().unwrap() > 0, "{report}");
    qemu_img_compare(&compressed, "qcow2", &out.join("minimal.raw"));
    let plain = std::fs::metadata(artifact("minimal.qcow2")).unwrap().len();
    let small = std::fs::metadata(&compressed).unwrap().len();
    eprintln!("qcow2: {plain} bytes plain, {small} compressed");
    assert!(small < plain, "compressed {small} bytes, plain {plain}");
    std::fs::remove_dir_all(out.parent().unwrap()).unwrap();
}

#[test]
fn qcow2_boots_under_ovmf() {
    let qcow2 = artifact("minimal.qcow2");
    let dir = test_dir("formats-boot-qcow2");
    let mut args = ovmf_args(&dir);
    args.extend([
        "-drive".to_string(),
        format!("if=virtio,format=qcow2,file={},snapshot=on", qcow2.display()),
    ]);
    let mut guest = Guest::start(&dir, &args);
    let t = guest.wait_for(READY, BOOT_TIMEOUT);
    eprintln!("minimal.qcow2: ready after {t:.1}s");
    assert!(
        guest.log().contains("uvmkit-data"),
        "the init did not report the data partition"
    );
}

#[test]
fn ova_holds_descriptor_disk_and_a_manifest_that_checks() {
    if !have("qemu-img") {
        return;
    }
    let ova = artifact("minimal.ova");
    assert_eq!(tar_members(&ova), ["minimal.ovf", "minimal-disk1.vmdk", "minimal.mf"]);
    let (ok, verbose) = run("tar", &["-tvf", ova.to_str().unwrap(), "--numeric-owner"]);
    assert!(ok, "tar -tvf: {verbose}");
    assert!(
        verbose.lines().all(|l| l.starts_with("-rw-r--r-- 0/0")),
        "members are root-owned 0644 files:\n{verbose}"
    );
    let dir = untar(&ova, "formats-ova");
    // Each manifest line, SHA256(file)= digest, checked by sha256sum.
    let manifest = std::fs::read_to_string(dir.join("minimal.mf")).unwrap();
    let mut sums = String::new();
    for line in manifest.lines() {
        let (file, digest) = line
            .strip_prefix("SHA256(")
            .and_then(|l| l.split_once(")= "))
            .unwrap_or_else(|| panic!("manifest line {line:?}"));
        sums.push_str(&format!("{digest}  {file}\n"));
    }
    assert_eq!(sums.lines().count(), 2, "{manifest}");
    std::fs::write(dir.join("sums"), sums).unwrap();
    let (ok, text) = run("sh", &["-c", &format!("cd {} && sha256sum -c sums", dir.display())]);
    assert!(ok && text.matches(": OK").count() == 2, "sha256sum -c: {text}");
    check_descriptor(&dir.join("minimal.ovf"), &dir.join("minimal-disk1.vmdk"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn virtualbox_box_holds_metadata_vagrantfile_descriptor_and_disk() {
    if !have("qemu-img") {
        return;
    }
    let vbox = artifact("minimal-virtualbox.box");
    assert_eq!(
        tar_members(&vbox),
        ["metadata.json", "Vagrantfile", "box.ovf", "box-disk001.vmdk"]
    );
    let dir = untar(&vbox, "formats-vbox");
    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(metadata, serde_json::json!({ "provider": "virtualbox" }));
    let vagrantfile = std::fs::read_to_string(dir.join("Vagrantfile")).unwrap();
    for needle in [
        "config.ssh.username = \"root\"",
        "config.ssh.insert_key = false",
        "vb.cpus = 1\n",
        "vb.memory = 1024\n",
        "[\"modifyvm\", :id, \"--firmware\", \"efi\"]",
    ] {
        assert!(
            vagrantfile.contains(needle),
            "Vagrantfile lacks {needle:?}:\n{vagrantfile}"
        );
    }
    check_descriptor(&dir.join("box.ovf"), &dir.join("box-disk001.vmdk"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn libvirt_box_holds_metadata_vagrantfile_and_a_qcow2() {
    if !have("qemu-img") {
        return;
    }
    let libvirt = artifact("minimal-libvirt.box");
    assert_eq!(tar_members(&libvirt), ["metadata.json", "Vagrantfile", "box.img"]);
    let dir = untar(&libvirt, "formats-libvirt");
    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(
        metadata,
        serde_json::json!({ "provider": "libvirt", "format": "qcow2", "virtual_size": 2 })
    );
    let vagrantfile = std::fs::read_to_string(dir.join("Vagrantfile")).unwrap();
    for needle in [
        "config.ssh.username = \"root\"",
        "lv.cpus = 1\n",
        "lv.memory = 1024\n",
        "lv.loader",
    ] {
        assert!(
            vagrantfile.contains(needle),
            "Vagrantfile lacks {needle:?}:\n{vagrantfile}"
        );
    }
    let image = dir.join("box.img");
    qemu_img_check(&image, "qcow2");
    qemu_img_compare_raw(&image, "qcow2");
    // The same bytes as the qcow2 artifact: one writer, one definition.
    assert!(
        std::fs::read(&image).unwrap() == std::fs::read(artifact("minimal.qcow2")).unwrap(),
        "box.img differs from minimal.qcow2"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_ovf_checker_names_what_a_descriptor_lacks() {
    if !have("xmllint") {
        return;
    }
    let dir = untar(&artifact("minimal.ova"), "formats-ovf-checker");
    let good = std::fs::read_to_string(dir.join("minimal.ovf")).unwrap();
    assert_eq!(unmet_ovf_requirements(&dir.join("minimal.ovf")), Vec::<String>::new());
    // Without either firmware setting, and with VirtualBox's disk attachment pointing at
    // another disk, the checker names those three requirements and no other.
    let disk_uuid = attribute(&good, "<Disk ", "vbox:uuid");
    let broken = good
        .replace(r#"<Firmware type="EFI"/>"#, "")
        .replace(
            r#"vmw:key="firmware" vmw:value="efi""#,
            r#"vmw:key="firmware" vmw:value="bios""#,
        )
        .replace(
            &format!("<Image uuid=\"{{{disk_uuid}}}\"/>"),
            "<Image uuid=\"{00000000-0000-8000-8000-000000000001}\"/>",
        );
    let path = dir.join("broken.ovf");
    std::fs::write(&path, broken).unwrap();
    let unmet = unmet_ovf_requirements(&path);
    assert_eq!(unmet.len(), 3, "{unmet:#?}");
    assert!(unmet[0].contains("vmw:Config"), "{unmet:#?}");
    assert!(unmet[1].contains("ovf:Firmware[@type = 'EFI']"), "{unmet:#?}");
    assert!(unmet[2].contains("ovf:Image[@uuid"), "{unmet:#?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hyperv_box_holds_metadata_vagrantfile_vm_description_and_a_vhdx() {
    if !have("qemu-img") {
        return;
    }
    let hyperv = artifact("minimal-hyperv.box");
    assert_eq!(
        tar_members(&hyperv),
        [
            "metadata.json",
            "Vagrantfile",
            "Virtual Machines/",
            "Virtual Machines/box.xml",
            "Virtual Hard Disks/",
            "Virtual Hard Disks/box.vhdx"
        ]
    );
    let dir = untar(&hyperv, "formats-hyperv");
    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(metadata, serde_json::json!({ "provider": "hyperv" }));
    let vagrantfile = std::fs::read_to_string(dir.join("Vagrantfile")).unwrap();
    for needle in [
        "config.ssh.username = \"root\"",
        "config.vm.provider \"hyperv\" do |hv|",
        "hv.cpus = 1\n",
        "hv.memory = 1024\n",
        "-SecureBootTemplate MicrosoftUEFICertificateAuthority",
    ] {
        assert!(
            vagrantfile.contains(needle),
            "Vagrantfile lacks {needle:?}:\n{vagrantfile}"
        );
    }
    // What Vagrant's New-VagrantVMXML reads from the description, asked of xmllint by the
    // paths that script uses.
    let config = dir.join("Virtual Machines/box.xml");
    if have("xmllint") {
        let (ok, text) = run("xmllint", &["--noout", config.to_str().unwrap()]);
        assert!(ok, "xmllint --noout: {text}");
        for (query, expected) in [
            ("string(/configuration/properties/subtype)", "1"),
            ("string(/configuration/properties/name)", "minimal"),
            ("string(/configuration/settings/processors/count)", "1"),
            ("string(//boot/device0)", "HardDrive"),
            ("string(//secure_boot_enabled)", "False"),
            ("string(//memory/Bank/size)", "1024"),
            ("string(//memory/Bank/dynamic_memory_enabled)", "False"),
            ("count(//*[starts-with(name(.),'controller')])", "1"),
            (
                "boolean(//*[starts-with(name(.),'controller')]/../ChannelInstanceGuid)",
                "true",
            ),
            ("string(//*[starts-with(name(.),'controller')]/*[pathname]/type)", "VHD"),
            // PowerShell reads an element's #text only when it has attributes.
            ("count(/configuration//*[not(*) and not(@type)])", "0"),
        ] {
            let (ok, text) = run("xmllint", &["--xpath", query, config.to_str().unwrap()]);
            assert!(
                ok && text.trim() == expected,
                "{query}: {text:?}, expected {expected:?}"
            );
        }
    }
    let vhdx = dir.join("Virtual Hard Disks/box.vhdx");
    qemu_img_check(&vhdx, "vhdx");
    qemu_img_compare_raw(&vhdx, "vhdx");
    assert!(
        std::fs::read(&vhdx).unwrap() == std::fs::read(artifact("minimal.vhdx")).unwrap(),
        "box.vhdx differs from minimal.vhdx"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn vagrant_boxes_without_a_login_key_are_refused() {
    let out = test_dir("formats-no-key");
    let image = repo_root().join("images/minimal.toml");
    for format in ["vagrant-virtualbox", "vagrant-libvirt", "vagrant-hyperv"] {
        let result = uvmkit(&[
            "build",
            image.to_str().unwrap(),
            "--format",
            format,
            "-o",
            out.to_str().unwrap(),
            "--quiet",
        ]);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{format}: {stderr}");
        assert!(
            stderr.contains(format) && stderr.contains("[ssh] authorized_keys"),
            "{format}: {stderr}"
        );
    }
    assert!(
        std::fs::read_dir(&out).unwrap().next().is_none(),
        "a refused build wrote nothing"
    );
}

#[test]
fn a_second_build_gives_identical_bytes() {
    let first = std::fs::read_to_string(built().join("SHA256SUMS")).unwrap();
    let out = build_into("formats-rebuild", "", FORMATS);
    let second = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    assert_eq!(first, second, "artifacts differ between two builds");
    let m1 = std::fs::read(built().join("manifest.json")).unwrap();
    let m2 = std::fs::read(out.join("manifest.json")).unwrap();
    assert!(m1 == m2, "manifest.json differs between two builds");
    std::fs::remove_dir_all(out.parent().unwrap()).unwrap();
}
