//! Memory and disk space given back to the host, proven in QEMU (TCG) on the Docker host
//! (`images/docker.toml` with the test's SSH key and `[memory] zram = "25%"`), in one VM:
//!
//! - Disk: the data disk is a qcow2 file attached with `discard=unmap` (virtio-blk). A container
//!   writes 1 GiB, the file's allocation grows by about that; the container is removed, and the
//!   allocation falls back by most of it (the init mounts the data file system with `discard`).
//! - Balloon: with `-device virtio-balloon,free-page-reporting=on` the init logs the
//!   `virtio_balloon` driver bound with free page reporting on, and the device's agreed feature
//!   bits in sysfs (read over SSH) have VIRTIO_BALLOON_F_REPORTING set.
//! - zram: `/proc/swaps` lists `/dev/zram0` at 25% of MemTotal, and the init logged it.
//!
//! The guest's memory in use with dockerd ready is printed (a figure, not asserted).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const READY: &str = "uvmkit-init: ready";
/// Boot to the ready marker under TCG on a loaded two-core machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const MEMORY_MIB: u32 = 2048;
const TEST_IMAGE: &str = "uvmkit-test/busybox:1";
/// What the container writes and then gives back.
const FILL_MIB: u64 = 1024;

/// The image: the shipped Docker definition with the test's key and a zram swap device.
struct Built {
    kernel: PathBuf,
    initrd: PathBuf,
    ssh_key: PathBuf,
    image_archive: PathBuf,
}

fn build(dir: &Path) -> Built {
    let ssh_key = dir.join("id_ed25519");
    let public = ssh_keygen(&ssh_key, "uvmkit-reclaim-test");
    let mut text = std::fs::read_to_string(repo_root().join("images/docker.toml")).unwrap();
    if !text.contains("\n[memory]") {
        text.push_str("\n[memory]\nzram = \"25%\"\n");
    }
    text.push_str(&format!("\n[ssh]\nauthorized_keys = [{:?}]\n", public.trim()));
    let definition = dir.join("docker.toml");
    std::fs::write(&definition, text).unwrap();
    let out = dir.join("out");
    let started = Instant::now();
    uvmkit_ok(&[
        "build",
        definition.to_str().unwrap(),
        "--format",
        "efi",
        "--quiet",
        "-o",
        out.to_str().unwrap(),
    ]);
    eprintln!("image built in {:.1}s", started.elapsed().as_secs_f64());
    let initrd = out.join("docker-initrd.img");
    let init_toml = dir.join("extracted");
    std::fs::create_dir_all(&init_toml).unwrap();
    extract_from_initrd(&initrd, &init_toml, &["usr/bin/busybox", "etc/uvmkit/init.toml"]);
    let config = std::fs::read_to_string(init_toml.join("etc/uvmkit/init.toml")).unwrap();
    assert!(
        config.contains("[memory]\nzram = \"25%\""),
        "init.toml carries no zram size:\n{config}"
    );
    assert!(
        config.contains("name = \"zram\""),
        "the zram module is not in the image"
    );
    assert!(
        config.contains("name = \"virtio_balloon\""),
        "virtio_balloon is not in the image"
    );
    let image_archive = dir.join("busybox.tar");
    write_busybox_archive(
        &init_toml.join("usr/bin/busybox"),
        &["sh", "dd", "sync", "ls", "du"],
        TEST_IMAGE,
        &image_archive,
    );
    Built {
        kernel: out.join("docker-kernel"),
        initrd,
        ssh_key,
        image_archive,
    }
}

/// The qcow2 file's allocation on the host (`qemu-img info` actual-size: blocks in use).
fn allocated(qcow2: &Path) -> u64 {
    let (ok, text) = run("qemu-img", &["info", "-U", "--output=json", qcow2.to_str().unwrap()]);
    assert!(ok, "qemu-img info: {text}");
    let info: serde_json::Value = serde_json::from_str(&text).unwrap();
    info["actual-size"].as_u64().expect("actual-size in qemu-img info")
}

struct Vm {
    guest: Guest,
    reach: Reach,
}

impl Vm {
    fn ssh(&mut self, command: &str) -> String {
        self.reach.ssh(&mut self.guest, command)
    }

    fn client_bundle(&mut self) -> PathBuf {
        self.reach.fetch_client_bundle(&mut self.guest)
    }

    fn docker(&mut self, bundle: &Path, args: &[&str]) -> String {
        self.reach.docker(&mut self.guest, Path::new("docker"), bundle, args)
    }
}

fn mib(bytes: u64) -> u64 {
    bytes >> 20
}

#[test]
fn memory_and_disk_space_go_back_to_the_host() {
    if !have("qemu-img") || !have("docker") || !have("unsquashfs") {
        panic!("the reclaim test needs qemu-img, docker and unsquashfs (tests/install-deps.sh)");
    }
    let dir = test_dir("reclaim");
    let b = build(&dir);

    let data = dir.join("data.qcow2");
    let (ok, text) = run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", data.to_str().unwrap(), "8G"],
    );
    assert!(ok, "qemu-img create: {text}");
    let (ssh_port, docker_port) = (free_port(), free_port());
    let args: Vec<String> = [
        "-kernel",
        b.kernel.to_str().unwrap(),
        "-initrd",
        b.initrd.to_str().unwrap(),
        "-append",
        "console=ttyS0 quiet",
        "-drive",
        &format!("if=none,id=data,format=qcow2,discard=unmap,file={}", data.display()),
        "-device",
        "virtio-blk-pci,drive=data",
        "-device",
        "virtio-balloon,free-page-reporting=on",
        "-netdev",
        &format!("user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22,hostfwd=tcp:127.0.0.1:{docker_port}-:2376"),
        "-device",
        "virtio-net-pci,netdev=net0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let guest = Guest::start_with_memory(&dir, MEMORY_MIB, &args);
    let mut vm = Vm {
        guest,
        reach: Reach {
            key: b.ssh_key.clone(),
            dir: dir.clone(),
            ssh_port,
            docker_port,
        },
    };
    let ready = vm.guest.wait_for(READY, BOOT_TIMEOUT);
    eprintln!("ready after {ready:.1}s from QEMU start");
    let log = vm.guest.log();

    // The balloon: bound, and the host's free page reporting agreed to.
    let balloon_line = log
        .lines()
        .find(|l| l.contains("memory: balloon virtio_balloon on virtio"))
        .unwrap_or_else(|| vm.guest.fail("the init logged no virtio_balloon"))
        .to_string();
    assert!(
        balloon_line.contains("free page reporting on"),
        "free page reporting is not on: {balloon_line}"
    );
    // One 0/1 character per feature bit; VIRTIO_BALLOON_F_REPORTING is bit 5.
    let bits = vm.ssh("for d in /sys/bus/virtio/drivers/virtio_balloon/virtio*; do cat $d/features; done");
    assert_eq!(bits.lines().count(), 1, "one balloon device expected: {bits:?}");
    assert_eq!(
        bits.as_bytes().get(5),
        Some(&b'1'),
        "reporting bit not agreed: {bits:?}"
    );

    // zram: on, at a quarter of the guest's memory.
    assert!(
        log.contains("memory: zram swap /dev/zram0 of"),
        "no zram line on the console:\n{log}"
    );
    let swaps = vm.ssh("cat /proc/swaps");
    let mem_total_kib: u64 = vm
        .ssh("awk '/^MemTotal:/ { print $2 }' /proc/meminfo")
        .trim()
        .parse()
        .unwrap();
    let zram = swaps
        .lines()
        .find(|l| l.starts_with("/dev/zram0"))
        .unwrap_or_else(|| panic!("/dev/zram0 is not in /proc/swaps:\n{swaps}"));
    let fields: Vec<&str> = zram.split_whitespace().collect();
    let size_kib: u64 = fields[2].parse().unwrap();
    let want_kib = mem_total_kib / 4;
    // /proc/swaps counts the pages after the header page.
    assert!(
        size_kib <= want_kib && size_kib + 16 >= want_kib,
        "zram0 is {size_kib} KiB, not a quarter of {mem_total_kib} KiB:\n{swaps}"
    );
    assert_eq!(fields[4], "100", "zram priority: {zram}");

    // The figure: memory in use with dockerd ready and no containers.
    let in_use = vm.ssh(
        "awk '/^MemTotal:/ { t = $2 } /^MemAvailable:/ { a = $2 } END { printf \"%d\", (t - a) / 1024 }' /proc/meminfo",
    );
    eprintln!(
        "guest memory in use, dockerd ready, no containers: {in_use} MiB of {} MiB",
        mem_total_kib / 1024
    );

    // The disk: the data file system is mounted with discard, on a disk that accepts it.
    assert!(
        log.contains("online discard on: freed blocks are returned to the host"),
        "the data disk is not mounted with discard:\n{log}"
    );
    let mounts = vm.ssh("grep ' /var/lib/uvmkit-data ' /proc/mounts");
    assert!(mounts.contains("discard"), "no discard in /proc/mounts: {mounts}");

    let bundle = vm.client_bundle();
    vm.docker(&bundle, &["load", "-i", b.image_archive.to_str().unwrap()]);
    vm.ssh("sync");
    let before = allocated(&data);
    let started = Instant::now();
    vm.docker(
        &bundle,
        &[
            "run",
            "--name",
            "fill",
            TEST_IMAGE,
            "sh",
            "-c",
            &format!("dd if=/dev/urandom of=/fill bs=1M count={FILL_MIB} 2>/dev/null && sync && ls -l /fill"),
        ],
    );
    vm.ssh("sync");
    let filled = allocated(&data);
    eprintln!(
        "container wrote {FILL_MIB} MiB in {:.1}s; qcow2 allocation {} MiB -> {} MiB",
        started.elapsed().as_secs_f64(),
        mib(before),
        mib(filled)
    );
    assert!(
        filled >= before + (FILL_MIB - 64) * (1 << 20),
        "the qcow2 file did not grow by the {FILL_MIB} MiB written: {} MiB -> {} MiB",
        mib(before),
        mib(filled)
    );

    vm.docker(&bundle, &["rm", "fill"]);
    // ext4 discards an extent once the transaction that freed it commits; sync commits it.
    vm.ssh("sync");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut after = allocated(&data);
    while after > before + 128 * (1 << 20) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        vm.ssh("sync");
        after = allocated(&data);
    }
    eprintln!(
        "after docker rm: qcow2 allocation {} MiB (was {} MiB with the file, {} MiB before)",
        mib(after),
        mib(filled),
        mib(before)
    );
    assert!(
        after + (FILL_MIB - 128) * (1 << 20) <= filled,
        "the qcow2 file kept its allocation after the container was removed: {} MiB -> {} MiB",
        mib(filled),
        mib(after)
    );
}
