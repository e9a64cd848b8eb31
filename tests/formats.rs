//! qcow2, OVA and Vagrant boxes of `images/minimal.toml` (with a login key and `[vm]`
//! settings): one build of every package format, read back by independent tools (`qemu-img`,
//! `tar`, `sha256sum`, `xmllint`), the qcow2 booted under OVMF, and a rebuild that must repeat
//! every byte.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

const READY: &str = "uvmkit-init: ready";
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const FORMATS: &str = "raw,qcow2,ova,vagrant-virtualbox,vagrant-libvirt";
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

/// Checks an OVF descriptor with xmllint and against the disk file it references.
fn check_descriptor(ovf: &Path, vmdk: &Path) {
    if have("xmllint") {
        let (ok, text) = run("xmllint", &["--noout", ovf.to_str().unwrap()]);
        assert!(ok, "xmllint --noout {}: {text}", ovf.display());
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
        "<rasd:ResourceSubType>AHCI</rasd:ResourceSubType>",
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
fn vagrant_boxes_without_a_login_key_are_refused() {
    let out = test_dir("formats-no-key");
    let image = repo_root().join("images/minimal.toml");
    for format in ["vagrant-virtualbox", "vagrant-libvirt"] {
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
