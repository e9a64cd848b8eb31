#!/usr/bin/env bash
# The Docker host's footprint (issue 15's figures), measured on what `uvmkit build` writes for
# images/docker.toml. A benchmark: it prints figures and asserts none of them (tests/footprint.rs
# runs it in quick mode and checks the sizes and the root file system, never a timing).
#
#   1. bytes the firmware loads before the kernel starts, from the raw disk's ESP: the UKI, or
#      shim -> GRUB -> kernel + boot initrd (every ESP file but MokManager and the fallback);
#   2. the system payload, compressed: the boot initrd plus the `uvmkit-system` partition's
#      squashfs (its bytes_used);
#   3. QEMU start to "service dockerd ready" (OVMF, the raw disk on virtio, TCG by default),
#      split into the time before the kernel and the init's own timeline from the serial log;
#   4. guest memory in use with dockerd ready and no containers (MemTotal - MemAvailable), with
#      a breakdown (/proc/meminfo and the largest processes' RSS) and the root file system type;
#   5. the build of every format (warm cache) against a reference pipeline of standard tools on
#      the same tree and kernel with the same compression (mksquashfs, cpio + zstd, objcopy onto
#      systemd's stub, sgdisk, mkfs.vfat + mtools, mkfs.ext4 -d, qemu-img convert, xorriso,
#      sha256sum);
#   6. the rebuild after changing one [[files]] entry (efi only, and every format);
#   7. the builder's peak memory (/usr/bin/time -v) for a 64 GiB virtual disk and every format.
#
#   bench/footprint.sh [--quick] [--figures FILE]
#
# --quick (or UVMKIT_BENCH_QUICK=1) builds only the raw disk, once, and boots it: figures 1 to 4
# and the build time of the raw disk; 5 to 7 are skipped. --figures FILE also writes
# the figures as `name=value` lines, for tests/footprint.rs.
#
# Needs what tests/install-deps.sh installs: QEMU with OVMF, squashfs-tools, gdisk, mtools,
# dosfstools, cpio, zstd, binutils, systemd-boot-efi, isolinux, syslinux-common, xorriso,
# qemu-utils, e2fsprogs, time, openssh-client and python3. Takes 10 to 30 minutes under TCG on
# two cores (quick: about 3 after the first build). Settings, all optional:
#   UVMKIT_BIN             the uvmkit binary (default: `cargo build --release`, then target/release/uvmkit)
#   UVMKIT_CACHE           the input cache (default: the tests' cache under target/tmp when it exists)
#   UVMKIT_BENCH_ACCEL     QEMU's accelerator (default tcg; kvm where KVM works)
#   UVMKIT_BENCH_MEMORY    guest memory in MiB (default 2048)
#   UVMKIT_BENCH_LOCK      a file: the boot runs under `flock` on it (a machine shared with other QEMU users)
#   UVMKIT_BENCH_BOOT_TIMEOUT, UVMKIT_BENCH_BUILD_TIMEOUT   seconds (default 600 and 900)
# The Debian mirror comes from UVMKIT_DEBIAN_MIRROR or the host's apt sources, as for any build.
set -euo pipefail

quick=${UVMKIT_BENCH_QUICK:-0}
figures_file=""
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --figures)
      [ $# -ge 2 ] || { echo "footprint: --figures needs a file name" >&2; exit 2; }
      figures_file=$2
      shift
      ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "footprint: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

accel=${UVMKIT_BENCH_ACCEL:-tcg}
memory_mib=${UVMKIT_BENCH_MEMORY:-2048}
boot_timeout=${UVMKIT_BENCH_BOOT_TIMEOUT:-600}
build_timeout=${UVMKIT_BENCH_BUILD_TIMEOUT:-900}
if [ "$quick" = 1 ]; then formats=raw; else formats=efi,iso,raw,vhdx,vmdk,vmdk-stream,qcow2; fi
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/uvmkit-footprint.XXXXXX")
qemu_pid=""
cleanup() {
  if [ -n "$qemu_pid" ]; then kill "$qemu_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'echo "footprint: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

fail() { echo "footprint: $*" >&2; exit 1; }
note() { echo "footprint: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
figure() { if [ -n "$figures_file" ]; then echo "$1=$2" >>"$figures_file"; fi; }

# --- What must be installed, checked before anything runs.
ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.fd
ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd
tools=(qemu-system-x86_64 sgdisk mcopy objdump ssh ssh-keygen python3 flock timeout unsquashfs zstd)
if [ "$quick" != 1 ]; then
  tools+=(mksquashfs cpio objcopy mkfs.vfat mmd mkfs.ext4 qemu-img xorriso sha256sum)
  [ -x /usr/bin/time ] || fail "/usr/bin/time is missing (Debian: apt-get install time; or tests/install-deps.sh)"
fi
missing=()
for tool in "${tools[@]}"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
[ ${#missing[@]} -eq 0 ] || fail "missing tools: ${missing[*]} (tests/install-deps.sh installs them)"
for file in "$ovmf_code" "$ovmf_vars"; do [ -e "$file" ] || fail "$file is missing (Debian: apt-get install ovmf)"; done
if [ "$quick" != 1 ]; then
  # systemd's UKI stub: /usr/lib/systemd/boot/efi in Debian 12 and 13 (systemd-boot-efi).
  stub=""
  for candidate in /usr/lib/systemd/boot/efi/linuxx64.efi.stub $(find /usr/lib -name linuxx64.efi.stub 2>/dev/null); do
    if [ -e "$candidate" ]; then stub=$candidate; break; fi
  done
  [ -n "$stub" ] || fail "systemd's linuxx64.efi.stub is missing (Debian: apt-get install systemd-boot-efi)"
  for file in /usr/lib/ISOLINUX/isolinux.bin /usr/lib/ISOLINUX/isohdpfx.bin /usr/lib/syslinux/modules/bios/ldlinux.c32; do
    [ -e "$file" ] || fail "$file is missing (Debian: apt-get install isolinux syslinux-common)"
  done
fi

if [ -z "${UVMKIT_CACHE:-}" ] && [ -d "$root/target/tmp/uvmkit-cache" ]; then
  export UVMKIT_CACHE="$root/target/tmp/uvmkit-cache"
fi
if [ -n "${UVMKIT_BIN:-}" ]; then
  uvmkit=$UVMKIT_BIN
else
  (cd "$root" && cargo build --release --quiet --bin uvmkit)
  uvmkit="$root/target/release/uvmkit"
fi
[ -x "$uvmkit" ] || fail "$uvmkit is not an executable uvmkit"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

# The shipped definition with a key to log in with and one [[files]] entry the rebuild changes.
ssh-keygen -q -t ed25519 -N "" -C uvmkit-footprint -f "$work/id"
definition() {
  cp "$root/images/docker.toml" "$work/docker.toml"
  printf '\n[ssh]\nauthorized_keys = ["%s"]\n\n[[files]]\npath = "/etc/uvmkit-footprint"\ncontents = "%s\\n"\n' \
    "$(cat "$work/id.pub")" "$1" >>"$work/docker.toml"
}
build() {
  local out=$1
  shift
  timeout "$build_timeout" "$uvmkit" build "$work/docker.toml" --quiet -o "$out" "$@" >"$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log" >&2; fail "uvmkit build $* failed or took over $build_timeout s (output above)"; }
}
# A build under `/usr/bin/time -v` (wall clock alone without it): sets $wall (s) and $peak_kib.
timed_build() {
  local out=$1
  shift
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -v -o "$work/time.txt" timeout "$build_timeout" "$uvmkit" build "$work/docker.toml" --quiet -o "$out" "$@" \
      >"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; fail "uvmkit build $* failed or took over $build_timeout s (output above)"; }
    # time -v measures its child, `timeout`; the largest RSS of the waited-for tree is uvmkit's.
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.2f", s }' "$work/time.txt")
    peak_kib=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/time.txt")
  else
    local t
    t=$(now)
    build "$out" "$@"
    wall=$(since "$t")
    peak_kib=0
  fi
  note "  $wall s, peak $((peak_kib / 1024)) MiB"
}

definition 1
if [ "$quick" = 1 ]; then
  note "building $formats..."
  timed_build "$work/out" --format "$formats"
  build_wall=$wall
  build_peak=$peak_kib
else
  note "warming the cache (fetches only what is missing)..."
  build "$work/warm" --format "$formats"
  rm -rf "$work/warm"
  note "building every format ($formats)..."
  timed_build "$work/out" --format "$formats"
  build_wall=$wall
  build_peak=$peak_kib
  note "rebuilding after changing one [[files]] entry..."
  definition 2
  timed_build "$work/rebuild-efi" --format efi
  rebuild_efi=$wall
  rm -rf "$work/rebuild-efi"
  definition 3
  timed_build "$work/rebuild-all" --format "$formats"
  rebuild_all=$wall
  rm -rf "$work/rebuild-all"
  note "building every format with a 64 GiB virtual disk..."
  timed_build "$work/big" --format "$formats" --disk-size 64GiB
  big_wall=$wall
  big_peak=$peak_kib
  rm -rf "$work/big"
  definition 1
fi
out=$work/out
raw=$out/docker.raw
initrd=$out/docker-initrd.img
[ -s "$raw" ] || fail "the build wrote no docker.raw in $out"
[ "$quick" = 1 ] || [ -s "$initrd" ] || fail "the build wrote no docker-initrd.img in $out"

# --- The raw disk's partitions: the ESP, the system image, the data partition.
declare -a part_start part_end part_code part_name
while read -r number start end _ _ code name; do
  part_start[number]=$start
  part_end[number]=$end
  part_code[number]=$code
  part_name[number]=$name
done < <(sgdisk -p "$raw" | awk '/^ +[0-9]+ +[0-9]+ +[0-9]+/')
esp="" system="" data=""
for n in "${!part_code[@]}"; do
  case ${part_code[n]}:${part_name[n]} in
    EF00:*) esp=$n ;;
    *:uvmkit-system) system=$n ;;
    *:uvmkit-data) data=$n ;;
    *) fail "partition $n of $raw (${part_code[n]} '${part_name[n]}') is none the benchmark knows" ;;
  esac
done
[ -n "$esp" ] || fail "no EFI system partition in $raw"
[ -n "$system" ] || fail "no uvmkit-system partition in $raw (the system image)"
part_bytes() { echo $(((part_end[$1] - part_start[$1] + 1) * 512)); }
esp_offset=$((part_start[esp] * 512))
system_offset=$((part_start[system] * 512))

# --- What the firmware loads before the kernel, and the payload.
mkdir -p "$work/esp"
mcopy -s -n -i "$raw@@$esp_offset" ::/ "$work/esp/"
bootx64=$(find "$work/esp" -ipath '*/efi/boot/bootx64.efi' | head -1)
[ -n "$bootx64" ] || fail "the ESP of $raw holds no EFI/BOOT/BOOTX64.EFI"
bootx64_bytes=$(stat -c %s "$bootx64")
esp_files=$(find "$work/esp" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
# objdump -h: "Idx Name Size VMA LMA File-off Algn"; sizes are hex.
section_size() { objdump -h -w "$1" | awk -v s="$2" '$2 == s { print $3 }' | { read -r hex && echo $((16#$hex)) || echo 0; }; }
uki_linux=$(section_size "$bootx64" .linux)
if [ "$uki_linux" -gt 0 ]; then
  # A UKI: the firmware loads it whole, kernel and boot initrd inside.
  uki_initrd=$(section_size "$bootx64" .initrd)
  firmware_bytes=$bootx64_bytes
  boot_chain="BOOTX64.EFI is a UKI: .linux $(mib "$uki_linux"), .initrd $(mib "$uki_initrd")"
  boot_initrd_bytes=$uki_initrd
else
  # shim -> GRUB -> kernel and initrd: the firmware and the loaders read every file on the ESP
  # but MokManager and the fallback loader before the kernel starts.
  firmware_bytes=$(find "$work/esp" -type f ! -iname 'mmx64.efi' ! -iname 'fbx64.efi' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
  esp_initrd=$(find "$work/esp" -type f -iname 'initrd*' | head -1)
  esp_kernel=$(find "$work/esp" -type f -iname 'vmlinuz*' | head -1)
  [ -n "$esp_initrd" ] && [ -n "$esp_kernel" ] || fail "the ESP of $raw holds neither a UKI nor a kernel and an initrd"
  boot_initrd_bytes=$(stat -c %s "$esp_initrd")
  boot_chain="shim $(mib "$bootx64_bytes") -> GRUB $(mib "$(find "$work/esp" -type f -iname 'grubx64.efi' -printf '%s' | head -1)") -> kernel $(mib "$(stat -c %s "$esp_kernel")") + boot initrd $(mib "$boot_initrd_bytes")"
fi
[ "$(dd if="$raw" bs=1 skip="$system_offset" count=4 status=none)" = hsqs ] || fail "the uvmkit-system partition of $raw does not start with a squashfs superblock"
# squashfs superblock: bytes_used, a little-endian u64 at byte 40.
system_bytes=$(dd if="$raw" bs=1 skip=$((system_offset + 40)) count=8 status=none | od -An -t u8 | tr -d ' ')
payload=$((boot_initrd_bytes + system_bytes))
unsquashfs -s -o "$system_offset" "$raw" >"$work/squashfs-info.txt" 2>&1 || { cat "$work/squashfs-info.txt" >&2; fail "unsquashfs cannot read the system image of $raw"; }
compressor=$(awk '$1 == "Compression" { print $2 }' "$work/squashfs-info.txt")
block_size=$(awk '$1 == "Block" && $2 == "size" { print $3 }' "$work/squashfs-info.txt")
compression_level=$(awk '/compression-level/ { print $2 }' "$work/squashfs-info.txt")

# --- Boot: the raw disk under OVMF, as a hypervisor would start it.
if [ -n "${UVMKIT_BENCH_LOCK:-}" ]; then
  exec {lock_fd}>"$UVMKIT_BENCH_LOCK"
  note "waiting for the QEMU lock $UVMKIT_BENCH_LOCK..."
  flock -w 3600 "$lock_fd" || fail "could not take the lock $UVMKIT_BENCH_LOCK within an hour"
fi
note "booting the raw disk (UEFI, $accel)..."
cp --sparse=always "$raw" "$work/boot.raw"
cp "$ovmf_vars" "$work/vars.fd"
ssh_port=$(free_port)
started=$(now)
qemu-system-x86_64 -accel "$accel" -m "$memory_mib" -smp 1 -nographic -no-reboot -nodefaults \
  -serial "file:$work/serial.log" \
  -drive "if=pflash,format=raw,readonly=on,file=$ovmf_code" \
  -drive "if=pflash,format=raw,file=$work/vars.fd" \
  -drive "if=virtio,format=raw,file=$work/boot.raw" \
  -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$ssh_port-:22" -device virtio-net-pci,netdev=net0 \
  -device virtio-balloon,free-page-reporting=on </dev/null >/dev/null 2>"$work/qemu.err" &
qemu_pid=$!
boot_deadline=$((SECONDS + boot_timeout))
boot_failed() {
  echo "--- serial log (last 40 lines) ---" >&2
  tail -40 "$work/serial.log" >&2 || true
  cat "$work/qemu.err" >&2 || true
  fail "$1"
}
wait_line() {
  until grep -aq "$1" "$work/serial.log" 2>/dev/null; do
    kill -0 "$qemu_pid" 2>/dev/null || boot_failed "QEMU exited before '$1'"
    [ $SECONDS -lt $boot_deadline ] || boot_failed "no '$1' within $boot_timeout s of QEMU's start"
    sleep 0.2
  done
}
wait_line "service dockerd ready"
dockerd_ready=$(since "$started")
wait_line "uvmkit-init: ready"
init_ready=$(since "$started")
ssh_opts=(-i "$work/id" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no
  -o "UserKnownHostsFile=$work/known_hosts" -o ConnectTimeout=20 -o LogLevel=ERROR)
vm() { timeout 120 ssh "${ssh_opts[@]}" -p "$ssh_port" root@127.0.0.1 "$@"; }
until vm true 2>/dev/null; do
  [ $SECONDS -lt $boot_deadline ] || boot_failed "SSH on port $ssh_port did not answer within $boot_timeout s of QEMU's start"
  sleep 2
done
sleep 10 # let dockerd settle
# One pass over /proc in the guest (busybox sh and awk): meminfo in KiB, every process's RSS
# (VmRSS, RssAnon, RssFile, RssShmem in KiB), the root's file system type.
vm sh -s >"$work/guest.txt" <<'EOF' || boot_failed "the memory figures could not be read over SSH"
awk '{ sub(":", "", $1); print "meminfo", $1, $2 }' /proc/meminfo
for s in /proc/[0-9]*/status; do
  awk '$1 == "Name:" { n = $2 } $1 == "Pid:" { p = $2 } $1 == "VmRSS:" { r = $2 } $1 == "RssAnon:" { a = $2 }
       $1 == "RssFile:" { f = $2 } $1 == "RssShmem:" { h = $2 }
       END { if (r != "") print "rss", p, n, r, a, f, h }' "$s" 2>/dev/null
done
awk '$2 == "/" { t = $3 } END { print "rootfs", t }' /proc/mounts
EOF
vm poweroff >/dev/null 2>&1 || true
for _ in $(seq 1 50); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.2; done
kill "$qemu_pid" 2>/dev/null || true
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=""
if [ -n "${lock_fd:-}" ]; then flock -u "$lock_fd"; fi

kib() { awk -v k="$1" '$1 == "meminfo" && $2 == k { print $3 }' "$work/guest.txt"; }
total_kib=$(kib MemTotal)
available_kib=$(kib MemAvailable)
[ -n "$total_kib" ] && [ -n "$available_kib" ] || fail "the guest's /proc/meminfo gave no MemTotal or MemAvailable"
in_use=$(((total_kib - available_kib) / 1024))
total=$((total_kib / 1024))
root_fs=$(awk '$1 == "rootfs" { print $2 }' "$work/guest.txt")
# The init's lines: "uvmkit-init: [SECS.mmm] MESSAGE", SECS since the kernel started.
stamp_of() { grep -ao "uvmkit-init: \[[0-9.]*\] $1" "$work/serial.log" | head -1 | sed -n 's/^uvmkit-init: \[\([0-9.]*\)\].*/\1/p'; }
dockerd_stamp=$(stamp_of "service dockerd ready")
before_kernel=$(awk -v w="$dockerd_ready" -v s="${dockerd_stamp:-0}" 'BEGIN { printf "%.2f", w - s }')

# --- The reference pipeline: the same artifacts from the same tree and kernel, standard tools.
if [ "$quick" != 1 ]; then
  note "running the reference pipeline..."
  [ -n "${esp_initrd:-}" ] || fail "the reference pipeline rebuilds only a shim -> GRUB ESP; this ESP boots a UKI"
  ref=$work/ref
  mkdir -p "$ref" "$work/data-tree" "$work/boot-tree"
  # The tree: the system image unpacked (squashfs), and the boot initrd's tree from the
  # published initrd split where its system member begins (tests/common's split_initrd):
  # the compressed boot part, zero padding to 4 bytes, then a newc header naming the image.
  unsquashfs -q -n -d "$work/tree" -o "$system_offset" "$raw" >/dev/null || fail "unsquashfs cannot unpack the system image of $raw"
  member_at=$(grep -obUaF "uvmkit-system.squashfs" "$initrd" | head -1 | cut -d: -f1)
  [ -n "$member_at" ] || fail "$initrd carries no uvmkit-system.squashfs member"
  header_at=$((member_at - 110))
  [ "$(dd if="$initrd" bs=1 skip="$header_at" count=6 status=none)" = 070701 ] || fail "no newc header before the system member of $initrd"
  boot_len=""
  for pad in 0 1 2 3; do
    if head -c $((header_at - pad)) "$initrd" | zstd -q -t 2>/dev/null; then boot_len=$((header_at - pad)); break; fi
  done
  [ -n "$boot_len" ] || fail "the part of $initrd before the system member is no zstd stream"
  # The boot initrd is several archives in a row (the base, the kernel modules, /init); cpio
  # reads one, so the decompressed stream is cut at each TRAILER!!! first.
  head -c "$boot_len" "$initrd" | zstd -q -d >"$work/boot.cpio" || fail "cannot decompress the boot initrd of $initrd"
  python3 - "$work/boot.cpio" <<'SPLIT' || fail "the boot initrd of $initrd is no sequence of newc archives"
import sys
path = sys.argv[1]
data = open(path, "rb").read()
pos, count = 0, 0
while pos < len(data):
    if data[pos:pos + 6] != b"070701":
        if data[pos] != 0:
            sys.exit(f"no newc header at byte {pos}")
        pos += 1  # the zero padding between archives
        continue
    start = pos
    while True:
        if data[pos:pos + 6] != b"070701":
            sys.exit(f"no newc header at byte {pos}")
        filesize, namesize = int(data[pos + 54:pos + 62], 16), int(data[pos + 94:pos + 102], 16)
        name = data[pos + 110:pos + 110 + namesize - 1]
        pos = (pos + 110 + namesize + 3) & ~3
        pos = (pos + filesize + 3) & ~3
        if name == b"TRAILER!!!":
            break
    open(f"{path}.{count}", "wb").write(data[start:pos])
    count += 1
SPLIT
  for archive in "$work"/boot.cpio.*; do
    (cd "$work/boot-tree" && cpio -idm --quiet --no-absolute-filenames <"$archive") || fail "cannot unpack the boot initrd of $initrd"
  done
  objcopy -O binary --only-section=.cmdline "$out/docker.efi" "$work/cmdline"
  objcopy -O binary --only-section=.osrel "$out/docker.efi" "$work/osrel"
  objcopy -O binary --only-section=.uname "$out/docker.efi" "$work/uname"
  cmdline=$(tr -d '\0' <"$work/cmdline")
  level=$(awk -F= '/^\[initrd\]/ { s = 1 } s && $1 ~ /compression_level/ { gsub(/[ "]/, "", $2); print $2; exit }' "$work/docker.toml")
  level=${level:-9} # the builder's default ([initrd] compression_level)
  workers=$(($(nproc) < 4 ? $(nproc) : 4)) # the builder's zstd workers: min(cores, 4)
  # mksquashfs takes every timestamp from SOURCE_DATE_EPOCH (set above), as uvmkit does.
  squashfs_args=(-comp "$compressor" -b "$block_size" -no-fragments -no-duplicates -no-xattrs -noappend -quiet)
  if grep -q "is not exportable" "$work/squashfs-info.txt"; then squashfs_args+=(-no-exports); fi
  # No compressor options in the superblock: the compressor's defaults (zstd: level 15).
  if [ -n "$compression_level" ]; then squashfs_args+=(-Xcompression-level "$compression_level"); fi
  declare -A step
  steps=()
  step() {
    local name=$1 t
    shift
    t=$(now)
    "$@" || fail "reference step '$name' failed"
    step[$name]=$(since "$t")
    steps+=("$name")
  }
  ref_system() {
    mksquashfs "$work/tree" "$ref/system.squashfs" "${squashfs_args[@]}" >/dev/null
  }
  # The boot initrd (cpio + zstd), and the published one: it with the system image appended as
  # an uncompressed newc member on a 4-byte boundary.
  ref_initrd() {
    (cd "$work/boot-tree" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet --reproducible) |
      zstd -q -"$level" -T"$workers" -o "$ref/boot-initrd.img"
    cp "$ref/boot-initrd.img" "$ref/docker-initrd.img"
    truncate -s $((($(stat -c %s "$ref/boot-initrd.img") + 3) / 4 * 4)) "$ref/docker-initrd.img"
    mkdir -p "$work/member"
    ln -f "$ref/system.squashfs" "$work/member/uvmkit-system.squashfs"
    (cd "$work/member" && echo uvmkit-system.squashfs | cpio -o -H newc --quiet --reproducible) >>"$ref/docker-initrd.img"
    cp "$out/docker-kernel" "$ref/docker-kernel"
  }
  ref_uki() {
    # The systemd stub's documented objcopy recipe: each section after the stub's last one,
    # aligned to its SectionAlignment.
    local align end vma args=() hex size pair
    align=$((16#$(objdump -p "$stub" | awk '$1 == "SectionAlignment" { print $2 }')))
    end=0
    while read -r size hex; do
      [ $((16#$hex + 16#$size)) -gt "$end" ] && end=$((16#$hex + 16#$size))
    done < <(objdump -h -w "$stub" | awk '$1 ~ /^[0-9]+$/ { print $3, $4 }')
    vma=$(((end + align - 1) / align * align))
    for pair in .osrel="$work/osrel" .cmdline="$work/cmdline" .uname="$work/uname" .initrd="$ref/docker-initrd.img" .linux="$ref/docker-kernel"; do
      args+=(--add-section "$pair" --change-section-vma "${pair%%=*}=$(printf '0x%x' "$vma")")
      size=$(stat -c %s "${pair#*=}")
      vma=$(((vma + size + align - 1) / align * align))
    done
    objcopy "${args[@]}" "$stub" "$ref/docker.efi"
  }
  ref_gpt() {
    rm -f "$ref/docker.raw"
    truncate -s "$(stat -c %s "$raw")" "$ref/docker.raw"
    local args=() n end
    for n in "${!part_code[@]}"; do
      end=${part_end[n]}
      # The system partition as long as mksquashfs's image needs, up to the next partition.
      if [ "$n" = "$system" ]; then end=$((part_start[n] + ($(stat -c %s "$ref/system.squashfs") + 511) / 512 - 1)); fi
      if [ -n "$data" ] && [ "$n" = "$system" ] && [ "$end" -ge "${part_start[data]}" ]; then
        echo "mksquashfs's image does not fit before the data partition" >&2
        return 1
      fi
      args+=(-n "$n:${part_start[n]}:$end" -t "$n:${part_code[n]}" -c "$n:${part_name[n]}")
    done
    sgdisk "${args[@]}" "$ref/docker.raw" >/dev/null
    dd if="$ref/system.squashfs" of="$ref/docker.raw" bs=1M seek="$system_offset" oflag=seek_bytes conv=notrunc status=none
  }
  # The ESP as uvmkit lays it out: shim, GRUB and MokManager (Debian's signed binaries, copied),
  # grub.cfg, the kernel and the boot initrd.
  ref_esp() {
    mkfs.vfat -F 32 -s 1 -n EFI --offset "${part_start[esp]}" "$ref/docker.raw" $(($(part_bytes "$esp") / 1024)) >/dev/null
    cp "$ref/boot-initrd.img" "$esp_initrd"
    mcopy -s -i "$ref/docker.raw@@$esp_offset" "$work/esp"/* ::/
  }
  ref_data() {
    mkfs.ext4 -q -F -L uvmkit-data -d "$work/data-tree" -E offset=$((part_start[data] * 512)) \
      "$ref/docker.raw" $(($(part_bytes "$data") / 1024))k
  }
  ref_convert() {
    qemu-img convert -O vhdx -o subformat=dynamic "$ref/docker.raw" "$ref/docker.vhdx"
    qemu-img convert -O vmdk "$ref/docker.raw" "$ref/docker.vmdk"
    qemu-img convert -O vmdk -o subformat=streamOptimized "$ref/docker.raw" "$ref/docker-stream.vmdk"
    qemu-img convert -O qcow2 "$ref/docker.raw" "$ref/docker.qcow2"
  }
  # The ISO as uvmkit lays it out: isolinux for BIOS; for UEFI an El Torito FAT image with
  # shim -> GRUB -> kernel + the initrd that carries the system image.
  ref_iso() {
    local iso=$work/isotree efi_bytes
    rm -rf "$iso" && mkdir -p "$iso/isolinux" "$iso/boot" "$iso/EFI/debian"
    cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$iso/isolinux/"
    printf 'DEFAULT uvmkit\nPROMPT 0\nTIMEOUT 0\nLABEL uvmkit\n  KERNEL /boot/vmlinuz\n  APPEND initrd=/boot/initrd.img %s\n' "$cmdline" >"$iso/isolinux/isolinux.cfg"
    cp "$ref/docker-kernel" "$iso/boot/vmlinuz"
    cp "$ref/docker-initrd.img" "$iso/boot/initrd.img"
    cp "$(find "$work/esp" -ipath '*/efi/debian/grub.cfg' | head -1)" "$iso/EFI/debian/grub.cfg"
    efi_bytes=$((($(du -sb "$work/esp" | cut -f1) + $(stat -c %s "$ref/docker-initrd.img") + 8 * 1048576) / 1048576 * 1048576))
    truncate -s "$efi_bytes" "$work/efi.img"
    mkfs.vfat -n UVMKIT_EFI "$work/efi.img" >/dev/null
    cp "$ref/docker-initrd.img" "$esp_initrd"
    mcopy -s -i "$work/efi.img" "$work/esp"/* ::/
    cp "$work/efi.img" "$iso/boot/efi.img"
    xorriso -as mkisofs -quiet -o "$ref/docker.iso" -V DOCKER -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin \
      -b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table \
      -eltorito-alt-boot -e boot/efi.img -no-emul-boot -isohybrid-gpt-basdat "$iso" 2>/dev/null
  }
  ref_sums() { (cd "$ref" && sha256sum docker-kernel docker-initrd.img docker.efi docker.iso docker.raw docker.vhdx docker.vmdk docker-stream.vmdk docker.qcow2 >SHA256SUMS); }
  ref_started=$(now)
  step "mksquashfs -comp $compressor -b $block_size${compression_level:+ -Xcompression-level $compression_level}" ref_system
  step "cpio + zstd -$level -T$workers (initrd)" ref_initrd
  step "objcopy --add-section (UKI)" ref_uki
  step "sgdisk + dd (GPT, system partition)" ref_gpt
  step "mkfs.vfat + mtools (ESP)" ref_esp
  step "mkfs.ext4 -d (data)" ref_data
  step "qemu-img convert (vhdx, vmdk x2, qcow2)" ref_convert
  step "mkfs.vfat + mtools + xorriso (iso)" ref_iso
  step "sha256sum (SHA256SUMS)" ref_sums
  ref_wall=$(since "$ref_started")
  ref_system_bytes=$(stat -c %s "$ref/system.squashfs")
fi

# --- The report.
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "docker host footprint ($commit, accel $accel, $memory_mib MiB, 1 vCPU$([ "$quick" = 1 ] && echo ", quick"))"
echo "  firmware loads before the kernel:  $(mib "$firmware_bytes") ($boot_chain; all ESP files $(mib "$esp_files"))"
echo "  system payload, compressed:        $(mib "$payload") (boot initrd $(mib "$boot_initrd_bytes"), uvmkit-system squashfs $(mib "$system_bytes"): $compressor, block $block_size${compression_level:+, level $compression_level})"
echo "  QEMU start to dockerd ready:       ${dockerd_ready} s (UEFI raw disk; before the kernel ${before_kernel} s, kernel start to dockerd ready ${dockerd_stamp:-?} s; init ready ${init_ready} s)"
echo "  guest memory in use, dockerd idle: ${in_use} MiB of ${total} MiB (MemTotal - MemAvailable; root file system: ${root_fs:-unknown})"
echo "  memory breakdown (/proc/meminfo, MiB):"
for key in MemFree MemAvailable Buffers Cached Mapped Unevictable AnonPages Shmem Slab SReclaimable SUnreclaim KernelStack PageTables VmallocUsed Percpu; do
  value=$(kib "$key")
  if [ -n "$value" ]; then printf '      %-14s %8.1f\n' "$key" "$(awk -v v="$value" 'BEGIN { print v / 1024 }')"; fi
done
echo "  largest processes (RSS = anon + file + shmem, MiB):"
awk '$1 == "rss" { printf "%s %s %s %s %s %s\n", $4, $2, $3, $5, $6, $7 }' "$work/guest.txt" | sort -rn | head -8 |
  while read -r rss pid name anon file shmem; do
    awk -v r="$rss" -v p="$pid" -v n="$name" -v a="$anon" -v f="$file" -v s="$shmem" \
      'BEGIN { printf "      %-14s pid %-5s %7.1f = %6.1f + %6.1f + %5.1f\n", n, p, r / 1024, a / 1024, f / 1024, s / 1024 }'
  done
echo "  init timeline (s since the kernel started, + since the line before; serial log):"
{ grep -ao 'uvmkit-init: \[[0-9.]*\] .*' "$work/serial.log" || true; } | tr -d '\r' |
  awk '{ match($0, /\[[0-9.]+\]/); t = substr($0, RSTART + 1, RLENGTH - 2); m = substr($0, RSTART + RLENGTH + 1)
         if (length(m) > 100) m = substr(m, 1, 97) "..."
         if (!done) printf "      %8.3f  +%6.3f  %s\n", t, t - last, m; last = t
         if (m ~ /^service dockerd ready/) done = 1 }' # reads to the end: an early exit is a SIGPIPE upstream
echo "  build ($formats): ${build_wall} s, peak $((build_peak / 1024)) MiB"
if [ "$quick" != 1 ]; then
  echo "  reference pipeline (same tree and kernel, standard tools): ${ref_wall} s"
  for name in "${steps[@]}"; do printf '      %-52s %6s s\n' "$name" "${step[$name]}"; done
  echo "    uvmkit / reference:              $(ratio "$build_wall" "$ref_wall")x"
  echo "    system image: uvmkit $(mib "$system_bytes"), mksquashfs $(mib "$ref_system_bytes")"
  echo "  rebuild after one [[files]] change: ${rebuild_efi} s (efi), ${rebuild_all} s (every format)"
  echo "  builder peak memory, 64 GiB disk:  $((big_peak / 1024)) MiB (every format, ${big_wall} s)"
fi

figure firmware_bytes "$firmware_bytes"
figure bootx64_bytes "$bootx64_bytes"
figure boot_initrd_bytes "$boot_initrd_bytes"
figure system_image_bytes "$system_bytes"
figure payload_bytes "$payload"
figure dockerd_ready_seconds "$dockerd_ready"
figure memory_in_use_mib "$in_use"
figure memory_total_mib "$total"
figure root_fs "${root_fs:-unknown}"
figure build_seconds "$build_wall"
figure build_peak_kib "$build_peak"
if [ "$quick" != 1 ]; then
  figure reference_seconds "$ref_wall"
  figure rebuild_efi_seconds "$rebuild_efi"
  figure rebuild_all_seconds "$rebuild_all"
  figure big_disk_peak_kib "$big_peak"
fi
