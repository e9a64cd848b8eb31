//! `NAME.spdx.json`: a software bill of materials of a build, in SPDX 2.3 JSON.
//!
//! One SPDX package per Debian package that went in (with its `.deb` sha256 and a
//! `pkg:deb/debian/...` purl whose `distro` qualifier, like the package's comment, names the
//! archive it came from) and one per artifact (with the artifact's sha256); the document
//! describes the artifacts, and each artifact contains the packages it is built from.
//! A package's `licenseDeclared` is what its machine-readable `copyright` file states
//! (`NOASSERTION` for a free-form one); every `LicenseRef-` used is declared with its text in
//! `hasExtractedLicensingInfos` (SPDX 2.3 §10).
//! Deterministic: the namespace derives from the image name and the artifact hashes, the
//! creation time from `SOURCE_DATE_EPOCH`; no mirror host name appears.

use super::report::BuildReport;
use crate::inputs::{FetchedPackage, Role, ISOLINUX_PACKAGES};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use uvmkit_debian::copyright::DeclaredLicense;

/// The SBOM's file name for image `name`.
pub fn file_name(name: &str) -> String {
    format!("{name}.spdx.json")
}

/// The SPDX 2.3 JSON document of a finished build (pretty-printed, ending in a newline).
pub fn spdx_json(report: &BuildReport, epoch: u64) -> String {
    let mut h = Sha256::new();
    h.update(report.image.as_bytes());
    let mut artifacts: Vec<_> = report.artifacts.iter().collect();
    artifacts.sort_by(|a, b| a.name.cmp(&b.name));
    for a in &artifacts {
        h.update(format!("\n{}  {}", a.sha256, a.name).as_bytes());
    }
    let namespace = format!("urn:uvmkit:spdx:{}:{}", report.image, hex::encode(h.finalize()));

    let mut packages = Vec::new();
    let mut relationships = Vec::new();
    let mut describes = Vec::new();
    for a in &artifacts {
        let id = spdx_id("Artifact", &a.name);
        packages.push(json!({
            "SPDXID": id,
            "name": a.name,
            "packageFileName": a.name,
            "versionInfo": env!("CARGO_PKG_VERSION"),
            "supplier": "NOASSERTION",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": [{ "algorithm": "SHA256", "checksumValue": a.sha256 }],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": if a.kind == "iso" || a.kind == "efi" || a.kind == "kernel" || a.kind == "initrd" { "FILE" } else { "OPERATING-SYSTEM" },
            "comment": format!("uvmkit artifact of kind {}", a.kind),
        }));
        relationships.push(
            json!({ "spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": id }),
        );
        describes.push(id.clone());
        for p in &report.packages {
            if artifact_contains(&a.kind, p) {
                relationships.push(json!({
                    "spdxElementId": id, "relationshipType": "CONTAINS", "relatedSpdxElement": spdx_id("Package-deb", &p.name),
                }));
            }
        }
    }
    for p in &report.packages {
        packages.push(deb_package(p, report.licenses.get(&p.name)));
    }
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("uvmkit image {}", report.image),
        "documentNamespace": namespace,
        "creationInfo": {
            "created": rfc3339(epoch),
            "creators": [format!("Tool: uvmkit-{}", env!("CARGO_PKG_VERSION"))],
        },
        "documentDescribes": describes,
        "packages": packages,
        "relationships": relationships,
    });
    let extracted = extracted_licenses(report);
    if !extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = Value::Array(extracted);
    }
    let mut text = serde_json::to_string_pretty(&doc).expect("JSON serialises");
    text.push('\n');
    text
}

/// Whether an artifact of `kind` holds files of `p`: the kernel artifact only the kernel; the
/// initrd the kernel's modules and the image's packages; the UKI and disks also the EFI stub;
/// the ISO everything, including ISOLINUX.
fn artifact_contains(kind: &str, p: &FetchedPackage) -> bool {
    let isolinux = ISOLINUX_PACKAGES.contains(&p.name.as_str());
    match (kind, p.role) {
        (_, Role::Kernel) => true,
        ("kernel", _) => false,
        ("initrd", role) => role != Role::Bootloader,
        ("iso", _) => true,
        (_, Role::Bootloader) => !isolinux,
        _ => true,
    }
}

/// One `hasExtractedLicensingInfos` entry per `LicenseRef-` the packages use, sorted by
/// identifier. When packages state different texts under one name, the entry holds each text
/// once, headed by the packages that state it.
fn extracted_licenses(report: &BuildReport) -> Vec<Value> {
    // id → (Debian name, text → packages stating it).
    let mut refs: BTreeMap<&str, (&str, BTreeMap<&str, Vec<&str>>)> = BTreeMap::new();
    for p in &report.packages {
        let Some(license) = report.licenses.get(&p.name) else {
            continue;
        };
        for r in &license.references {
            let entry = refs.entry(&r.id).or_insert((&r.name, BTreeMap::new()));
            entry.1.entry(&r.text).or_default().push(&p.name);
        }
    }
    refs.into_iter()
        .map(|(id, (name, texts))| {
            let text = if texts.len() == 1 {
                texts.into_keys().next().unwrap_or_default().to_string()
            } else {
                texts
                    .iter()
                    .map(|(text, pkgs)| format!("As stated in the copyright file of {}:\n{text}", pkgs.join(", ")))
                    .collect::<Vec<_>>()
                    .join("\n\n")
            };
            json!({ "licenseId": id, "extractedText": text, "name": name })
        })
        .collect()
}

fn deb_package(p: &FetchedPackage, license: Option<&DeclaredLicense>) -> Value {
    let supplier = match p.maintainer.as_deref().map(str::trim) {
        Some(m) if !m.is_empty() => format!("Organization: {m}"),
        _ => "NOASSERTION".into(),
    };
    // purl qualifiers are sorted by key (purl specification, "qualifiers"); `distro` names
    // the archive (suite) the package was taken from, such as `bookworm-security`.
    let mut purl = format!(
        "pkg:deb/debian/{}@{}?arch={}",
        purl_escape(&p.name),
        purl_escape(&p.version),
        purl_escape(&p.architecture)
    );
    if !p.archive.is_empty() {
        purl.push_str(&format!("&distro={}", purl_escape(&p.archive)));
    }
    let from = if p.archive.is_empty() {
        String::new()
    } else {
        format!(" from {}", p.archive)
    };
    let mut v = json!({
        "SPDXID": spdx_id("Package-deb", &p.name),
        "name": p.name,
        "versionInfo": p.version,
        "supplier": supplier,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "checksums": [{ "algorithm": "SHA256", "checksumValue": p.sha256 }],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": license.map_or("NOASSERTION", |l| l.expression.as_str()),
        "copyrightText": "NOASSERTION",
        "externalRefs": [{ "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl }],
        "comment": format!("Debian package{from} ({}: {})", format!("{:?}", p.role).to_lowercase(), p.reason),
    });
    if let Some(src) = &p.source {
        v["sourceInfo"] = json!(format!("built from Debian source package {src}"));
    }
    if let Some(home) = &p.homepage {
        v["homepage"] = json!(home);
    }
    v
}

/// An SPDX identifier: `SPDXRef-` then letters, digits, `.` and `-` only (SPDX 2.3 §3.2).
fn spdx_id(kind: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean == name {
        format!("SPDXRef-{kind}-{clean}")
    } else {
        // Replaced characters could make two names equal: tell them apart by a hash.
        format!(
            "SPDXRef-{kind}-{clean}-{}",
            &hex::encode(Sha256::digest(name.as_bytes()))[..8]
        )
    }
}

/// Percent-encodes everything but the purl specification's unreserved characters.
fn purl_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `SOURCE_DATE_EPOCH` as an RFC 3339 UTC timestamp (`2023-11-14T22:13:20Z`).
fn rfc3339(epoch: u64) -> String {
    uvmkit_timestamp::CivilTime::from_unix_unsigned(epoch).rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_escapes() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(315_532_800), "1980-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(purl_escape("1:2.3+dfsg-1~b1"), "1%3A2.3%2Bdfsg-1~b1");
        assert!(spdx_id("Package-deb", "libstdc++6").starts_with("SPDXRef-Package-deb-libstdc--6-"));
        assert_ne!(spdx_id("P", "a+b"), spdx_id("P", "a-b"));
    }

    #[test]
    fn each_package_names_the_archive_it_came_from() {
        let mut p = crate::inputs::package::tests::pkg("openssl");
        p.version = "3.0.16-1~deb12u1".into();
        p.archive = "bookworm-security".into();
        let v = deb_package(&p, None);
        assert_eq!(
            v["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/openssl@3.0.16-1~deb12u1?arch=amd64&distro=bookworm-security"
        );
        assert_eq!(
            v["comment"],
            "Debian package from bookworm-security (requested: requested)"
        );
    }

    fn dep5(license: &str) -> DeclaredLicense {
        let text = format!(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: x\nLicense: {license}\n"
        );
        uvmkit_debian::copyright::declared_license(&text).unwrap()
    }

    #[test]
    fn declared_licenses_and_their_references() {
        let mut licenses = BTreeMap::new();
        licenses.insert("a".to_string(), dep5("GPL-2+ or public-domain\n Text of a."));
        licenses.insert("b".to_string(), dep5("public-domain\n Text of b."));
        licenses.insert("c".to_string(), dep5("public-domain\n Text of b."));
        let report = BuildReport {
            image: "t".into(),
            artifacts: vec![],
            packages: ["a", "b", "c", "d"]
                .into_iter()
                .map(crate::inputs::package::tests::pkg)
                .collect(),
            licenses,
            kernel_release: "6.1".into(),
            modules: vec![],
            initrd_entries: 0,
            initrd_uncompressed: 0,
            downloaded_bytes: 0,
            uki_signature: None,
            timings: vec![],
        };
        let doc: Value = serde_json::from_str(&spdx_json(&report, 0)).unwrap();
        let declared = |name: &str| {
            doc["packages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap()["licenseDeclared"]
                .clone()
        };
        assert_eq!(declared("a"), "GPL-2.0-or-later OR LicenseRef-public-domain");
        assert_eq!(declared("b"), "LicenseRef-public-domain");
        assert_eq!(declared("d"), "NOASSERTION");
        let infos = doc["hasExtractedLicensingInfos"].as_array().unwrap();
        assert_eq!(infos.len(), 1, "{infos:?}");
        assert_eq!(infos[0]["licenseId"], "LicenseRef-public-domain");
        assert_eq!(infos[0]["name"], "public-domain");
        assert_eq!(
            infos[0]["extractedText"],
            "As stated in the copyright file of a:\nText of a.\n\nAs stated in the copyright file of b, c:\nText of b."
        );
    }
}
