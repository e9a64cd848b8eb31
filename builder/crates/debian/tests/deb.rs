//! `.deb` reading: archives built in memory (well-formed and hostile) and, when present, real
//! Debian packages cross-checked with `dpkg-deb`.

use std::io::Write;
use std::process::Command;

use uvmkit_debian::deb::{control_fields, unpack_data, DebEntry, DebEntryKind, DebError};

/// What a test sees of one entry.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    path: String,
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
}

fn collect(deb: &[u8]) -> Result<Vec<Seen>, DebError> {
    let mut seen = Vec::new();
    unpack_data(deb, &mut |e: DebEntry<'_>| {
        let kind = match e.kind {
            DebEntryKind::Dir => "dir".to_string(),
            DebEntryKind::File { size, contents } => {
                let mut data = Vec::new();
                contents.read_to_end(&mut data)?;
                assert_eq!(data.len() as u64, size);
                format!("file {}", String::from_utf8_lossy(&data))
            }
            DebEntryKind::Symlink(t) => format!("symlink {t}"),
            DebEntryKind::HardLink(t) => format!("hardlink {t}"),
            DebEntryKind::CharDev { major, minor } => format!("char {major},{minor}"),
            DebEntryKind::BlockDev { major, minor } => format!("block {major},{minor}"),
            DebEntryKind::Fifo => "fifo".to_string(),
        };
        seen.push(Seen {
            path: e.path.to_string(),
            kind,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
        });
        Ok(())
    })?;
    Ok(seen)
}

/// One tar entry to write with a raw, unchecked name (the tar crate's path setters refuse the
/// hostile names these tests need).
struct Item<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: &'a str,
    data: &'a [u8],
    mode: u32,
}

fn item<'a>(name: &'a str, kind: tar::EntryType, link: &'a str, data: &'a [u8]) -> Item<'a> {
    let mode = if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    };
    Item {
        name,
        kind,
        link,
        data,
        mode,
    }
}

fn tar_of(items: &[Item<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for it in items {
        let mut h = tar::Header::new_gnu();
        {
            let raw = h.as_old_mut();
            raw.name = [0; 100];
            raw.name[..it.name.len()].copy_from_slice(it.name.as_bytes());
            raw.linkname = [0; 100];
            raw.linkname[..it.link.len()].copy_from_slice(it.link.as_bytes());
        }
        h.set_entry_type(it.kind);
        h.set_mode(it.mode);
        h.set_uid(0);
        h.set_gid(if it.name.contains("games") { 60 } else { 0 });
        h.set_mtime(1_600_000_000);
        h.set_size(it.data.len() as u64);
        if matches!(it.kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_cksum();
        b.append(&h, it.data).unwrap();
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

fn deb_of(data_suffix: &str, data_items: &[Item<'_>]) -> Vec<u8> {
    let control = b"Package: demo\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: Nobody <n@example.invalid>\nDescription: demo\n more\n";
    let control_tar = tar_of(&[
        item("./", tar::EntryType::Directory, "", b""),
        item("./control", tar::EntryType::Regular, "", control),
    ]);
    let members: Vec<(String, Vec<u8>)> = vec![
        ("debian-binary".into(), b"2.0\n".to_vec()),
        ("control.tar.xz".into(), compress(".xz", &control_tar)),
        (
            format!("data.tar{data_suffix}"),
            compress(data_suffix, &tar_of(data_items)),
        ),
    ];
    let mut ar = ar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = ar::Header::new(name.into_bytes(), data.len() as u64);
        h.set_mode(0o100644);
        ar.append(&h, &data[..]).unwrap();
    }
    ar.into_inner().unwrap()
}

fn good_items() -> Vec<Item<'static>> {
    use tar::EntryType::*;
    let mut setuid = item("./usr/bin/su", Regular, "", b"#!su");
    setuid.mode = 0o4755;
    vec![
        item("./", Directory, "", b""),
        item("./usr/", Directory, "", b""),
        item("./usr/bin/", Directory, "", b""),
        item("./usr/bin/tool", Regular, "", b"hello"),
        setuid,
        item("./usr/bin/tool2", Link, "./usr/bin/tool", b""),
        item("./usr/bin/alias", Symlink, "tool", b""),
        item("./usr/lib/abs", Symlink, "/etc/passwd", b""),
        item("./usr/games/", Directory, "", b""),
        item("./dev/null", Char, "", b""),
        item("./dev/sda", Block, "", b""),
        item("./run/fifo", Fifo, "", b""),
        item("./usr/share/doc/../doc/x", Regular, "", b"inside"),
        item("/opt/absolute-but-inside", Regular, "", b"a"),
    ]
}

#[test]
fn reads_every_entry_kind_in_every_compression() {
    for suffix in ["", ".gz", ".xz", ".zst"] {
        let deb = deb_of(suffix, &good_items());
        let seen = collect(&deb).unwrap_or_else(|e| panic!("data.tar{suffix}: {e}"));
        let summary: Vec<String> = seen.iter().map(|s| format!("{} {}", s.path, s.kind)).collect();
        assert_eq!(
            summary,
            [
                "/ dir",
                "/usr dir",
                "/usr/bin dir",
                "/usr/bin/tool file hello",
                "/usr/bin/su file #!su",
                "/usr/bin/tool2 hardlink /usr/bin/tool",
                "/usr/bin/alias symlink tool",
                "/usr/lib/abs symlink /etc/passwd",
                "/usr/games dir",
                "/dev/null char 1,3",
                "/dev/sda block 1,3",
                "/run/fifo fifo",
                "/usr/share/doc/x file inside",
                "/opt/absolute-but-inside file a",
            ],
            "data.tar{suffix}"
        );
        assert_eq!(seen[4].mode, 0o4755);
        assert_eq!(seen[8].gid, 60);
    }
}

#[test]
fn control_fields_come_from_control_tar() {
    let deb = deb_of(".xz", &good_items());
    let control = control_fields(&deb[..]).unwrap();
    assert_eq!(control.get("Package"), Some("demo"));
    assert_eq!(control.get("Version"), Some("1.0-1"));
    assert_eq!(control.get("Description"), Some("demo\nmore"));
}

fn assert_unsafe(items: &[Item<'_>], what: &str) {
    let deb = deb_of(".gz", items);
    match collect(&deb) {
        Err(DebError::UnsafePath { entry, reason }) => {
            println!("{what}: refused {entry:?}: {reason}");
        }
        other => panic!("{what}: expected UnsafePath, got {other:?}"),
    }
}

#[test]
fn hostile_archives_are_refused() {
    use tar::EntryType::*;
    assert_unsafe(&[item("../etc/passwd", Regular, "", b"x")], "parent escape");
    assert_unsafe(
        &[item("./usr/../../etc/passwd", Regular, "", b"x")],
        "nested parent escape",
    );
    assert_unsafe(
        &[item("/../etc/shadow", Regular, "", b"x")],
        "absolute with parent escape",
    );
    assert_unsafe(
        &[
            item("./evil", Symlink, "/etc", b""),
            item("./evil/passwd", Regular, "", b"x"),
        ],
        "file through a symlink",
    );
    assert_unsafe(
        &[
            item("./a/", Directory, "", b""),
            item("./a/evil", Symlink, "../../..", b""),
            item("./a/evil/x/y", Directory, "", b""),
        ],
        "directory through a nested symlink",
    );
    assert_unsafe(
        &[
            item("./evil", Symlink, "/etc", b""),
            item("./evil/../x", Regular, "", b"x"),
        ],
        "dot-dot after a symlink",
    );
    assert_unsafe(
        &[item("./link", Link, "../../etc/shadow", b"")],
        "hard link outside the root",
    );
    assert_unsafe(
        &[item("./link", Link, "./later", b""), item("./later", Regular, "", b"x")],
        "hard link forward",
    );
    assert_unsafe(
        &[item("./d/", Directory, "", b""), item("./link", Link, "./d", b"")],
        "hard link to a directory",
    );
    assert_unsafe(
        &[
            item("./evil", Symlink, "/etc", b""),
            item("./link", Link, "./evil/passwd", b""),
        ],
        "hard link through a symlink",
    );
    assert_unsafe(&[item("./", Symlink, "/", b"")], "root replaced by a symlink");
}

#[test]
fn malformed_packages_are_refused() {
    assert!(matches!(
        unpack_data(&b"not an ar archive"[..], &mut |_| Ok(())),
        Err(DebError::NotADeb(_))
    ));
    let mut ar = ar::Builder::new(Vec::new());
    ar.append(&ar::Header::new(b"debian-binary".to_vec(), 4), &b"3.0\n"[..])
        .unwrap();
    let deb = ar.into_inner().unwrap();
    assert!(matches!(
        unpack_data(&deb[..], &mut |_| Ok(())),
        Err(DebError::NotADeb(_))
    ));
    let mut ar = ar::Builder::new(Vec::new());
    ar.append(&ar::Header::new(b"debian-binary".to_vec(), 4), &b"2.0\n"[..])
        .unwrap();
    ar.append(&ar::Header::new(b"data.tar.bz2".to_vec(), 3), &b"BZh"[..])
        .unwrap();
    let deb = ar.into_inner().unwrap();
    assert!(matches!(
        unpack_data(&deb[..], &mut |_| Ok(())),
        Err(DebError::UnsupportedCompression(_))
    ));
    // Corrupt compressed data is an I/O error, not a panic.
    let mut deb = deb_of(".xz", &good_items());
    let n = deb.len();
    deb[n - 40..n - 20].fill(0x55);
    assert!(collect(&deb).is_err());
}

#[test]
fn sink_errors_stop_unpacking() {
    let deb = deb_of("", &good_items());
    let mut count = 0;
    let err = unpack_data(&deb[..], &mut |_| {
        count += 1;
        if count == 3 {
            return Err(DebError::sink("disk full"));
        }
        Ok(())
    })
    .unwrap_err();
    assert_eq!(count, 3);
    assert_eq!(err.to_string(), "disk full");
}

/// Real packages from the directory `UVMKIT_TEST_DEB_DIR` names (skipped when unset): our entry list must
/// match `dpkg-deb --contents`, and file sizes must add up.
#[test]
fn real_debs_match_dpkg_deb() {
    let dir = std::path::PathBuf::from(std::env::var_os("UVMKIT_TEST_DEB_DIR").unwrap_or_default());
    let dir = dir.as_path();
    let Ok(read_dir) = std::fs::read_dir(dir) else {
        println!(
            "note: {} is absent; skipping the real-package comparison",
            dir.display()
        );
        return;
    };
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        println!("note: dpkg-deb is not installed; skipping the real-package comparison");
        return;
    }
    let mut debs: Vec<_> = read_dir
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort();
    for deb in debs {
        let started = std::time::Instant::now();
        let mut ours = Vec::new();
        let mut bytes = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        unpack_data(std::fs::File::open(&deb).unwrap(), &mut |e| {
            let suffix = match e.kind {
                DebEntryKind::Dir => "/",
                DebEntryKind::File { contents, .. } => {
                    loop {
                        let n = contents.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        bytes += n as u64;
                    }
                    ""
                }
                _ => "",
            };
            ours.push(if e.path.is_root() {
                "/".to_string()
            } else {
                format!("{}{suffix}", e.path)
            });
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{}: {e}", deb.display()));
        let elapsed = started.elapsed();
        let out = Command::new("dpkg-deb").arg("--contents").arg(&deb).output().unwrap();
        assert!(out.status.success());
        let listing = String::from_utf8(out.stdout).unwrap();
        let mut theirs = Vec::new();
        let mut their_bytes = 0u64;
        for line in listing.lines() {
            // drwxr-xr-x root/root 0 2024-01-01 00:00 ./usr/bin/ [-> target | link to x]
            let fields: Vec<&str> = line.split_whitespace().collect();
            let name = fields[5];
            if line.starts_with('-') && !line.contains(" link to ") {
                their_bytes += fields[2].parse::<u64>().unwrap();
            }
            let normal = name.trim_start_matches('.');
            theirs.push(if normal.is_empty() {
                "/".to_string()
            } else {
                normal.to_string()
            });
        }
        assert_eq!(ours, theirs, "{}", deb.display());
        assert_eq!(bytes, their_bytes, "{}", deb.display());
        let control = control_fields(std::fs::File::open(&deb).unwrap()).unwrap();
        println!(
            "{}: {} entries, {} bytes of files, package {} {}, streamed in {:.2?}",
            deb.file_name().unwrap().to_string_lossy(),
            ours.len(),
            bytes,
            control.get("Package").unwrap(),
            control.get("Version").unwrap(),
            elapsed
        );
    }
}
