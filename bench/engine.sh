#!/usr/bin/env bash
# Measures the Docker host image as a user meets it (a benchmark, not a test: it prints figures
# and checks nothing beyond what it needs to go on):
#
#   1. seconds from QEMU start to `docker version` answering over TLS (blank data disk, so this
#      is a first boot: the disk is partitioned and formatted and the identity made);
#   2. `docker run --rm IMAGE true` latency, median of several runs;
#   3. guest memory in use (MemTotal - MemAvailable) with dockerd idle, and with 10 small
#      containers running.
#
#   bench/engine.sh [RUNS]       # RUNS: docker run latency samples, default 10
#
# Needs what the boot tests need (tests/install-deps.sh) and a docker client on PATH. Set
# UVMKIT_BENCH_ACCEL=kvm where KVM works; the default is TCG. The Debian mirror comes from
# UVMKIT_DEBIAN_MIRROR or the host's apt sources, as for any build.
set -euo pipefail

runs=${1:-10}
accel=${UVMKIT_BENCH_ACCEL:-tcg}
memory_mib=${UVMKIT_BENCH_MEMORY:-2048}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/uvmkit-bench.XXXXXX")
qemu_pid=""
cleanup() {
  if [ -n "$qemu_pid" ]; then kill "$qemu_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The shipped definition with a key to log in with.
ssh-keygen -q -t ed25519 -N "" -C uvmkit-bench -f "$work/id"
cp "$root/images/docker.toml" "$work/docker.toml"
printf '\n[ssh]\nauthorized_keys = ["%s"]\n' "$(cat "$work/id.pub")" >>"$work/docker.toml"
echo "building the image..." >&2
(cd "$root" && cargo run --release --quiet -- build "$work/docker.toml" --format efi --quiet -o "$work/out")

# The container image: busybox from the image itself, imported as a one-layer rootfs. The
# initrd carries the image's tree as a squashfs in an uncompressed newc member named
# uvmkit-system.squashfs after the boot part: its body starts after the 110-byte header and
# the name, padded to 4 bytes. Debian 13 (merged /usr) ships busybox in usr/bin, Debian 12 in bin.
initrd=$work/out/docker-initrd.img
member_at=$(grep -obUaF "uvmkit-system.squashfs" "$initrd" | head -1 | cut -d: -f1)
[ -n "$member_at" ] || { echo "$initrd carries no uvmkit-system.squashfs" >&2; exit 1; }
image_at=$((member_at - 110 + (110 + 23 + 3) / 4 * 4))
mkdir -p "$work/rootfs/bin"
for path in usr/bin/busybox bin/busybox; do
  if unsquashfs -q -n -f -o "$image_at" -d "$work/busybox" "$initrd" "$path" >/dev/null 2>&1 && [ -f "$work/busybox/$path" ]; then
    cp "$work/busybox/$path" "$work/rootfs/bin/busybox"
    break
  fi
done
[ -f "$work/rootfs/bin/busybox" ] || { echo "no busybox in the system image of $initrd" >&2; exit 1; }
for applet in sh true sleep; do ln -s busybox "$work/rootfs/bin/$applet"; done
tar -C "$work/rootfs" -cf "$work/rootfs.tar" bin

truncate -s 4G "$work/data.raw"
ssh_port=$(free_port)
docker_port=$(free_port)
started=$(now)
qemu-system-x86_64 -accel "$accel" -m "$memory_mib" -smp 1 -nographic -no-reboot -nodefaults \
  -serial "file:$work/serial.log" \
  -kernel "$work/out/docker-kernel" -initrd "$work/out/docker-initrd.img" -append "console=ttyS0 quiet" \
  -drive "if=virtio,format=raw,file=$work/data.raw" \
  -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$ssh_port-:22,hostfwd=tcp:127.0.0.1:$docker_port-:2376" \
  -device virtio-net-pci,netdev=net0 </dev/null >/dev/null 2>"$work/qemu.err" &
qemu_pid=$!

ssh_opts=(-i "$work/id" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no
  -o "UserKnownHostsFile=$work/known_hosts" -o ConnectTimeout=10 -o LogLevel=ERROR)
vm() { ssh "${ssh_opts[@]}" -p "$ssh_port" root@127.0.0.1 "$@"; }
until scp "${ssh_opts[@]}" -q -r -P "$ssh_port" root@127.0.0.1:/var/lib/uvmkit/identity/tls/client "$work/tls" 2>/dev/null; do
  kill -0 "$qemu_pid" 2>/dev/null || { echo "QEMU exited; serial log:" >&2; tail -40 "$work/serial.log" >&2; exit 1; }
  sleep 0.5
done
export DOCKER_HOST="tcp://127.0.0.1:$docker_port" DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH="$work/tls" DOCKER_CONFIG="$work/docker-config"
until docker version --format '{{.Server.Version}}' >/dev/null 2>&1; do sleep 0.5; done
boot=$(since "$started")
server=$(docker version --format '{{.Server.Version}}')

docker import "$work/rootfs.tar" uvmkit-bench/busybox:1 >/dev/null
docker run --rm uvmkit-bench/busybox:1 true # the first run pays for the first-use set-up
samples=()
for _ in $(seq "$runs"); do
  t=$(now)
  docker run --rm uvmkit-bench/busybox:1 true
  samples+=("$(since "$t")")
done
median=$(printf '%s\n' "${samples[@]}" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')

in_use() { vm "awk '/^MemTotal:/ { t = \$2 } /^MemAvailable:/ { a = \$2 } END { printf \"%d\", (t - a) / 1024 }' /proc/meminfo"; }
sleep 10 # let dockerd settle after the runs
idle=$(in_use)
for i in $(seq 10); do docker run -d --name "bench-$i" uvmkit-bench/busybox:1 sleep 3600 >/dev/null; done
sleep 10
busy=$(in_use)
total=$(vm "awk '/^MemTotal:/ { printf \"%d\", \$2 / 1024 }' /proc/meminfo")

echo "docker host benchmark (accel $accel, 1 vCPU, $memory_mib MiB, dockerd $server)"
echo "  boot to docker version answering:  ${boot} s (first boot, blank 4 GiB data disk)"
echo "  docker run --rm IMAGE true:        ${median} s median of $runs (samples: ${samples[*]})"
echo "  guest memory in use, dockerd idle: ${idle} MiB of ${total} MiB"
echo "  with 10 containers running:        ${busy} MiB"
