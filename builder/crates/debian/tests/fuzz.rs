//! Every reader of bytes from a mirror or a package, fed mutations of valid samples and
//! random bytes (`uvmkit_testkit::fuzz`): `Packages` stanzas and relations, `Release` text,
//! `InRelease` signatures and keyrings, DEP-5 copyright files, `.deb` archives (ar, tar and
//! the three compressors) and the index decompressor. None may panic, run long or hold more
//! than its heap bound; the inputs that once did are kept below as regression cases.

use std::io::Write;

use uvmkit_debian::compression::{decompress_named, decompress_named_limited};
use uvmkit_debian::control::{parse_paragraphs, parse_relations, Paragraph};
use uvmkit_debian::copyright::declared_license;
use uvmkit_debian::deb::{control_fields, unpack_data, DebEntryKind};
use uvmkit_debian::release::parse_date;
use uvmkit_debian::signature::{check_inrelease, Keyring};
use uvmkit_debian::testing::TestSigner;
use uvmkit_debian::{DebVersion, PackageIndex, Release};
use uvmkit_testkit::fuzz::{peak_heap, Fuzz};

uvmkit_testkit::count_allocations!();

fn data(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Lossy text of fuzzed bytes: the text parsers take `&str`, as their callers give them.
fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

const PACKAGES: &str = "\
Package: docker.io
Source: docker.io (20.10.24+dfsg1-1)
Version: 20.10.24+dfsg1-1+b3
Installed-Size: 125000
Maintainer: Debian Go Packaging Team <team+pkg-go@tracker.debian.org>
Architecture: amd64
Depends: adduser, containerd (>= 1.4~), iptables, runc (>= 1.0.0~rc92~), tini (>= 0.19.0), libc6 (>= 2.34), libdevmapper1.02.1 (>= 2:1.02.97), libsystemd0
Pre-Depends: init-system-helpers (>= 1.54~)
Recommends: apparmor, ca-certificates, cgroupfs-mount | cgroup-lite, git, needrestart, xz-utils
Description: Linux container runtime
 Docker complements kernel namespacing with a high-level API.
 .
 More text.
Homepage: https://mobyproject.org
Section: admin
Priority: optional
Filename: pool/main/d/docker.io/docker.io_20.10.24+dfsg1-1+b3_amd64.deb
Size: 27000000
SHA256: 0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef

Package: mawk
Version: 1.3.4.20200120-3.1
Architecture: amd64
Multi-Arch: foreign
Provides: awk, awk-impl (= 1:1.3.4)
Pre-Depends: libc6 (>= 2.34)
Build-Depends: debhelper <!nocheck>, foo [amd64] | bar [!i386], baz:any <stage1 !cross>
Essential: yes
Priority: required
Description: Pattern scanning and text processing language
Filename: pool/main/m/mawk/mawk_1.3.4.20200120-3.1_amd64.deb
Size: 134000
SHA256: 1111111111111111111111111111111111111111111111111111111111111111
";

const DEB822_TOKENS: &[&str] = &[
    "\n",
    "\n\n",
    "\n ",
    "\n\t",
    ":",
    ": ",
    " ",
    "#",
    "\r\n",
    "Package: ",
    "Version: ",
    "Depends: ",
    "Provides: ",
    "Source: ",
    "Size: ",
    "SHA256:\n ",
    "(",
    ")",
    "[",
    "]",
    "<",
    ">",
    "!",
    "|",
    ",",
    ">=",
    "<<",
    "=",
    "~",
    "-",
    "+",
    ":any",
    "99999999999999999999999",
    "18446744073709551616",
    "4294967296",
    "\u{fffd}",
    "é",
];

fn release_texts() -> Vec<Vec<u8>> {
    let keyring = Keyring::debian_archive();
    [
        "tests/data/trixie-security.InRelease",
        "tests/data/bookworm-updates.InRelease",
    ]
    .iter()
    .map(|name| {
        let checked = check_inrelease(&data(name), &keyring, 0).unwrap();
        checked.text.into_bytes()
    })
    .collect()
}

#[test]
fn packages_index_and_relations() {
    let parsed = std::cell::Cell::new(0u64);
    Fuzz::new("packages-index")
        .dictionary(DEB822_TOKENS)
        .run(&[PACKAGES.as_bytes().to_vec()], |input| {
            if PackageIndex::parse_bytes(input).is_ok() {
                parsed.set(parsed.get() + 1);
            }
            let text = text(input);
            let _ = parse_paragraphs(&text);
            let _ = Paragraph::parse_single(&text);
            for line in text.lines() {
                let _ = parse_relations(line, Some("amd64"));
                let _ = parse_relations(line, None);
                let _ = DebVersion::parse(line);
            }
        });
    assert!(parsed.get() > 50, "only {} indices parsed", parsed.get());
}

#[test]
fn debian_versions_compare_without_panicking() {
    let seeds: Vec<Vec<u8>> = [
        "1:2.30-1~bpo12+1",
        "20.10.24+dfsg1-1+b3",
        "1.0~rc1-0.1",
        "4294967295:1-1",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    Fuzz::new("debian-version")
        .dictionary(&["~", ":", "-", "+", ".", "0", "9999999999999999999999", "a"])
        .run(&seeds, |input| {
            let (a, b) = input.split_at(input.len() / 2);
            let (a, b) = (text(a), text(b));
            if let (Ok(a), Ok(b)) = (DebVersion::parse(&a), DebVersion::parse(&b)) {
                // Policy 5.6.12 is a total order: the comparison must be antisymmetric.
                assert_eq!(a.cmp(&b), b.cmp(&a).reverse(), "{a} vs {b}");
                assert_eq!(a.cmp(&a), std::cmp::Ordering::Equal);
            }
        });
}

#[test]
fn release_files() {
    Fuzz::new("release")
        .max_len(128 << 10)
        .dictionary(DEB822_TOKENS)
        .run(&release_texts(), |input| {
            let text = text(input);
            if let Ok(release) = Release::parse(&text) {
                for field in [&release.date, &release.valid_until].into_iter().flatten() {
                    let _ = parse_date(field);
                }
                if let Some(path) = release.files.keys().next() {
                    let _ = release.fetch_path(path);
                    let _ = release.verify_file(path, b"");
                }
            }
        });
}

#[test]
fn release_dates() {
    let seeds: Vec<Vec<u8>> = [
        "Sat, 17 May 2025 09:18:25 UTC",
        "29 Feb 2024 12:00:00 +0100",
        "Mon, 07 Dec 2026 00:22:33 -0930",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    Fuzz::new("release-date")
        .dictionary(&[
            "-",
            "+",
            " ",
            ":",
            ",",
            "9223372036854775807",
            "-9223372036854775808",
            "99999999999",
            "Dec",
            "UTC",
        ])
        .run(&seeds, |input| {
            let _ = parse_date(&text(input));
        });
}

#[test]
fn inrelease_signatures() {
    let signer = TestSigner::generate(3);
    let test_keyring = Keyring::from_bytes(&signer.public_keyring_bytes()).unwrap();
    let debian = Keyring::debian_archive();
    let small = signer.clearsign("Origin: uvmkit-test\nCodename: fuzz\nSHA256:\n e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 0 main/binary-amd64/Packages\n");
    let seeds = vec![small.into_bytes(), data("tests/data/trixie-security.InRelease")];
    // Each case checks RSA and Ed25519 signatures: fewer cases than the cheap targets.
    Fuzz::new("inrelease")
        .default_cases(300)
        .max_len(96 << 10)
        .dictionary(&[
            "-----BEGIN PGP SIGNATURE-----\n",
            "-----END PGP SIGNATURE-----\n",
            "\n\n",
            "- ",
            "=",
            "Hash: SHA1\n",
            "\r\n",
        ])
        .run(&seeds, |input| {
            for keyring in [&test_keyring, &debian] {
                if let Ok(checked) = check_inrelease(input, keyring, 1_796_162_000) {
                    let _ = checked.accepted();
                }
            }
        });
}

#[test]
fn keyrings() {
    let signer = TestSigner::generate(4);
    let seeds = vec![signer.public_keyring_bytes(), data("keys/debian-archive-keyring.gpg")];
    // Each case verifies every self-signature of the keys it parses: fewer cases.
    Fuzz::new("keyring")
        .default_cases(200)
        .max_len(96 << 10)
        .run(&seeds, |input| {
            let _ = Keyring::from_bytes(input);
        });
}

const DEP5: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: demo
Source: https://example.invalid/demo

Files: *
Copyright: 2020 Someone
License: GPL-2+ with OpenSSL exception or MIT, and BSD-3-clause
 Some body text.
 .
 More.

Files: debian/*
License: Apache-2.0 and LGPL-2.1 or Artistic

License: MIT
 Permission is hereby granted...
";

#[test]
fn copyright_files() {
    let seeds = vec![
        DEP5.as_bytes().to_vec(),
        b"This is a free-form copyright file.\n".to_vec(),
    ];
    Fuzz::new("copyright")
        .dictionary(&[
            "\n",
            "\n\n",
            "\n ",
            "\n .",
            "License: ",
            "Files: ",
            " or ",
            " and ",
            " with ",
            ",",
            "+",
            "GPL-",
            "Format: copyright-format/1.0\n",
        ])
        .run(&seeds, |input| {
            let _ = declared_license(&text(input));
        });
}

/// A tar archive of `(name, type, link target, contents)` entries.
fn tar_of(items: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for &(name, kind, link, body) in items {
        let mut h = tar::Header::new_gnu();
        if !link.is_empty() {
            h.set_link_name(link).unwrap();
        }
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(body.len() as u64);
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        // Writes a GNU long-name entry first when the name needs one.
        b.append_data(&mut h, name, body).unwrap();
    }
    b.into_inner().unwrap()
}

fn compress(suffix: &str, data: &[u8]) -> Vec<u8> {
    match suffix {
        "" => data.to_vec(),
        ".gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        ".xz" => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        ".zst" => zstd::stream::encode_all(data, 3).unwrap(),
        other => panic!("no compressor for {other}"),
    }
}

fn ar_of(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut ar = ar::Builder::new(Vec::new());
    for (name, body) in members {
        let mut h = ar::Header::new(name.as_bytes().to_vec(), body.len() as u64);
        h.set_mode(0o100644);
        ar.append(&h, &body[..]).unwrap();
    }
    ar.into_inner().unwrap()
}

/// A valid `.deb` with `control.tar{control}` and `data.tar{data}`.
fn deb(control: &str, data: &str) -> Vec<u8> {
    use tar::EntryType::*;
    let control_tar = tar_of(&[
        ("./", Directory, "", b""),
        (
            "./control",
            Regular,
            "",
            b"Package: demo\nVersion: 1.0-1\nArchitecture: amd64\nDescription: demo\n more\n",
        ),
    ]);
    let long = format!("./usr/share/{}/file", "long-directory-name".repeat(8));
    let data_tar = tar_of(&[
        ("./", Directory, "", b""),
        ("./usr/", Directory, "", b""),
        ("./usr/bin/", Directory, "", b""),
        ("./usr/bin/tool", Regular, "", b"#!/bin/sh\necho hello\n"),
        ("./usr/bin/tool2", Link, "./usr/bin/tool", b""),
        ("./usr/bin/alias", Symlink, "tool", b""),
        ("./dev/null", Char, "", b""),
        ("./run/fifo", Fifo, "", b""),
        (&long, Regular, "", b"a file with a GNU long name"),
    ]);
    ar_of(&[
        ("debian-binary", b"2.0\n".to_vec()),
        (&format!("control.tar{control}"), compress(control, &control_tar)),
        (&format!("data.tar{data}"), compress(data, &data_tar)),
    ])
}

/// Everything a caller would do with a package: every entry, every byte of every file (as
/// the unpacker does, through a bounded buffer) and the control fields.
fn read_whole_deb(input: &[u8]) -> bool {
    let mut buf = [0u8; 8192];
    let _ = control_fields(input);
    unpack_data(input, &mut |entry| {
        if let DebEntryKind::File { contents, .. } = entry.kind {
            while contents.read(&mut buf)? > 0 {}
        }
        Ok(())
    })
    .is_ok()
}

#[test]
fn deb_archives() {
    let seeds = vec![
        deb("", ""),
        deb(".gz", ""),
        deb("", ".gz"),
        deb(".xz", ".xz"),
        deb(".zst", ".zst"),
    ];
    for seed in &seeds {
        unpack_data(&seed[..], &mut |_| Ok(())).expect("the seed packages unpack");
        control_fields(&seed[..]).expect("the seed packages have control fields");
    }
    let unpacked = std::cell::Cell::new(0u64);
    Fuzz::new("deb")
        .dictionary(&[
            "data.tar",
            "control.tar",
            ".gz",
            "debian-binary",
            "././@LongLink",
            "ustar",
            "0000777",
            "99999999999",
        ])
        .run(&seeds, |input| {
            if read_whole_deb(input) {
                unpacked.set(unpacked.get() + 1);
            }
        });
    // Mutations must get through ar and the compressors to the tar reader's checks.
    assert!(unpacked.get() > 50, "only {} packages unpacked", unpacked.get());
}

#[test]
fn compressed_indices() {
    let seeds = vec![
        compress(".xz", PACKAGES.as_bytes()),
        compress(".gz", PACKAGES.as_bytes()),
        compress(".zst", PACKAGES.as_bytes()),
    ];
    Fuzz::new("decompress").run(&seeds, |input| {
        for name in ["Packages.xz", "Packages.gz", "Packages.zst", "Packages"] {
            let _ = decompress_named(name, input);
        }
    });
}

/// A 64 KiB `.zst` that expands to 256 MiB: the decompressor stops at its limit instead of
/// holding all of it.
#[test]
fn decompression_bombs_stop_at_the_limit() {
    let zeros = vec![0u8; 256 << 20];
    let bomb = compress(".zst", &zeros);
    drop(zeros);
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    let err = decompress_named_limited("Packages.zst", &bomb, 1 << 20).unwrap_err();
    assert!(err.to_string().contains("more than 1 MiB"), "{err}");
    let small = compress(".zst", PACKAGES.as_bytes());
    assert_eq!(
        decompress_named_limited("Packages.zst", &small, 1 << 20).unwrap(),
        PACKAGES.as_bytes()
    );
}

/// A raw tar header block: `name`, type flag `kind`, `size` in the octal size field.
fn raw_header(name: &str, kind: u8, size: u64) -> Vec<u8> {
    let mut header = tar::Header::new_ustar();
    {
        let raw = header.as_old_mut();
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
    }
    header.set_entry_type(tar::EntryType::new(kind));
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_600_000_000);
    header.set_size(size);
    header.set_cksum();
    header.as_bytes().to_vec()
}

/// `data` padded to whole 512-byte blocks.
fn blocks(mut data: Vec<u8>) -> Vec<u8> {
    data.resize(data.len().div_ceil(512) * 512, 0);
    data
}

fn deb_with_data_tar(data_tar: &[u8]) -> Vec<u8> {
    let control_tar = tar_of(&[("./control", tar::EntryType::Regular, "", b"Package: demo\nVersion: 1\n")]);
    ar_of(&[
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar.gz", compress(".gz", &control_tar)),
        ("data.tar.zst", compress(".zst", data_tar)),
    ])
}

/// A `data.tar.zst` of a few kilobytes holding a GNU long-name entry ('L', tar(5)) of 64 MiB.
/// The tar reader keeps a long name in memory whole, so it held all 64 MiB (any size the
/// compressed stream declares); now the header is refused before its data is read.
#[test]
fn huge_tar_extension_headers_are_refused() {
    let mut data_tar = raw_header("././@LongLink", b'L', 64 << 20);
    data_tar.resize(data_tar.len() + (64 << 20), b'a');
    data_tar.extend_from_slice(&tar_of(&[("./x", tar::EntryType::Regular, "", b"x")]));
    let hostile = deb_with_data_tar(&data_tar);
    drop(data_tar);
    assert!(hostile.len() < 64 << 10, "{} bytes", hostile.len());
    let (result, held) = peak_heap(|| unpack_data(&hostile[..], &mut |_| Ok(())));
    let err = result.unwrap_err();
    assert!(
        err.to_string().contains("GNU long name or link of 67108864 bytes"),
        "{err}"
    );
    assert!(held < 8 << 20, "held {held} bytes");
    // The same for a pax extended header, and in control.tar.
    let mut pax = raw_header("./PaxHeaders/x", b'x', 16 << 20);
    pax.resize(pax.len() + (16 << 20), b'a');
    let err = unpack_data(&deb_with_data_tar(&pax)[..], &mut |_| Ok(())).unwrap_err();
    assert!(
        err.to_string().contains("pax extended header of 16777216 bytes"),
        "{err}"
    );
}

/// Long names and pax records as dpkg-deb and GNU tar write them still read, and a pax `size=`
/// record (which moves the next header) is followed: a hostile long name after it is found.
#[test]
fn tar_extensions_within_the_limits_read() {
    let long = format!("./usr/share/{}file", "directory/".repeat(30));
    let mut data_tar = raw_header("././@LongLink", b'L', long.len() as u64 + 1);
    data_tar.extend(blocks(format!("{long}\0").into_bytes()));
    data_tar.extend(raw_header("./ignored", b'0', 3));
    data_tar.extend(blocks(b"abc".to_vec()));
    let record = "size=5\n";
    let record = format!("{} {record}", record.len() + 3);
    data_tar.extend(raw_header("./PaxHeaders/y", b'x', record.len() as u64));
    data_tar.extend(blocks(record.into_bytes()));
    data_tar.extend(raw_header("./y", b'0', 0));
    data_tar.extend(blocks(b"hello".to_vec()));
    let good = data_tar.clone();
    let mut seen = Vec::new();
    unpack_data(&deb_with_data_tar(&good)[..], &mut |entry| {
        let mut body = Vec::new();
        if let DebEntryKind::File { contents, .. } = entry.kind {
            contents.read_to_end(&mut body)?;
        }
        seen.push((entry.path.to_string(), String::from_utf8_lossy(&body).into_owned()));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        seen,
        [
            (long[1..].to_string(), "abc".to_string()),
            ("/y".to_string(), "hello".to_string())
        ]
    );

    data_tar.extend(raw_header("././@LongLink", b'L', 1 << 20));
    data_tar.resize(data_tar.len() + (1 << 20), b'a');
    let err = unpack_data(&deb_with_data_tar(&data_tar)[..], &mut |_| Ok(())).unwrap_err();
    assert!(err.to_string().contains("of 1048576 bytes"), "{err}");
}

/// ar members named as GNU ar names its tables: `/5` (a long name at offset 5 of a name table
/// that does not exist) made the ar reader panic (index out of range), and `//` (the name
/// table) with a declared size of 9999999999 made it allocate 10 GB. Both are refused first.
#[test]
fn ar_extension_members_are_refused() {
    for (name, size) in [("/5", 4u64), ("//", 9_999_999_999), ("#1/9999999999", 9_999_999_999)] {
        let mut deb = b"!<arch>\n".to_vec();
        deb.extend(format!("{name:<16}{:<12}{:<6}{:<6}{:<8}{size:<10}`\n", 0, 0, 0, 100644).into_bytes());
        deb.extend_from_slice(b"2.0\n");
        let (result, held) = peak_heap(|| unpack_data(&deb[..], &mut |_| Ok(())));
        let err = result.unwrap_err().to_string();
        assert!(err.contains("GNU or BSD ar extension"), "{name}: {err}");
        assert!(held < 1 << 20, "{name}: held {held} bytes");
        assert!(control_fields(&deb[..])
            .unwrap_err()
            .to_string()
            .contains("ar extension"));
    }
    // A plain name with GNU's trailing slash is what dpkg-deb may write, and still reads.
    let mut renamed = deb(".gz", ".gz");
    assert_eq!(&renamed[8..24], b"debian-binary   ");
    renamed[8..24].copy_from_slice(b"debian-binary/  ");
    unpack_data(&renamed[..], &mut |_| Ok(())).unwrap();
}
