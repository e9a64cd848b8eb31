#!/usr/bin/env bash
# The Docker host's footprint (issue 15's figures), measured on whatever `uvmkit build` writes
# for images/docker.toml. A benchmark, not a test: it prints figures and asserts none of them.
#
#   1. bytes the firmware loads before the kernel: BOOTX64.EFI on the ESP of the raw disk (the
#      ESP found from the GPT; with a UKI its .linux and .initrd sections are shown too);
#   2. the system payload, compressed: the UKI's .initrd section plus every partition of the
#      disk that is neither the ESP nor the data partition (a squashfs counts its bytes_used);
#   3. QEMU start to dockerd ready (OVMF, the raw disk on virtio, TCG by default) and to the
#      init's ready line;
#   4. guest memory in use with dockerd ready and no containers (MemTotal - MemAvailable);
#   5. the build of every format (warm cache) against a reference pipeline made of the standard
#      tools on the same tree and kernel at the same zstd level (cpio + zstd, objcopy
#      --add-section onto systemd's stub, sgdisk, mkfs.vfat --offset + mtools, mkfs.ext4 -d
#      -E offset, qemu-img convert, xorriso, sha256sum);
#   6. the rebuild after changing one [[files]] entry (efi only, and every format);
#   7. the builder's peak memory (/usr/bin/time -v) for a 64 GiB virtual disk and every format.
#
#   bench/footprint.sh
#
# Needs what the boot tests need (tests/install-deps.sh), plus mkfs.vfat, mtools, sgdisk,
# cpio, zstd, objcopy, systemd-boot-efi's stub (/usr/lib/systemd/boot/efi/linuxx64.efi.stub)
# and isolinux/syslinux-common for the reference pipeline. Takes about 10 minutes under TCG on
# two cores. UVMKIT_BENCH_ACCEL=kvm where KVM works; UVMKIT_CACHE picks the cache (default: the
# tests' cache under target/tmp when it exists, so the inputs are warm). The Debian mirror comes
# from UVMKIT_DEBIAN_MIRROR or the host's apt sources, as for any build. On a machine shared
# with other QEMU users, UVMKIT_BENCH_LOCK=FILE runs the boot under `flock FILE`.
set -euo pipefail

accel=${UVMKIT_BENCH_ACCEL:-tcg}
memory_mib=${UVMKIT_BENCH_MEMORY:-2048}
formats=efi,iso,raw,vhdx,vmdk,vmdk-stream,qcow2
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/uvmkit-footprint.XXXXXX")
qemu_pid=""
cleanup() {
  if [ -n "$qemu_pid" ]; then kill "$qemu_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
note() { echo "$*" >&2; }

if [ -z "${UVMKIT_CACHE:-}" ] && [ -d "$root/target/tmp/uvmkit-cache" ]; then
  export UVMKIT_CACHE="$root/target/tmp/uvmkit-cache"
fi
(cd "$root" && cargo build --release --quiet --bin uvmkit)
uvmkit="$root/target/release/uvmkit"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

# The shipped definition with a key to log in with and one [[files]] entry the rebuild changes.
ssh-keygen -q -t ed25519 -N "" -C uvmkit-footprint -f "$work/id"
definition() {
  cp "$root/images/docker.toml" "$work/docker.toml"
  printf '\n[ssh]\nauthorized_keys = ["%s"]\n\n[[files]]\npath = "/etc/uvmkit-footprint"\ncontents = "%s\\n"\n' \
    "$(cat "$work/id.pub")" "$1" >>"$work/docker.toml"
}
# `/usr/bin/time -v` around a build: sets $wall (s) and $peak_kib.
timed_build() {
  local out=$1
  shift
  /usr/bin/time -v -o "$work/time.txt" "$uvmkit" build "$work/docker.toml" --quiet -o "$out" "$@" >/dev/null
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.2f", s }' "$work/time.txt")
  peak_kib=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/time.txt")
}

definition 1
note "warming the cache (fetches only what is missing)..."
"$uvmkit" build "$work/docker.toml" --quiet --format "$formats" -o "$work/warm" >/dev/null
note "building every format ($formats)..."
timed_build "$work/out" --format "$formats"
build_wall=$wall
build_peak=$peak_kib
note "rebuilding after changing one [[files]] entry..."
definition 2
timed_build "$work/rebuild-efi" --format efi
rebuild_efi=$wall
definition 3
timed_build "$work/rebuild-all" --format "$formats"
rebuild_all=$wall
note "building every format with a 64 GiB virtual disk..."
timed_build "$work/big" --format "$formats" --disk-size 64GiB
big_wall=$wall
big_peak=$peak_kib
definition 1
out=$work/out

# --- What the firmware loads, and the payload: the ESP and the other partitions of the raw disk.
raw=$out/docker.raw
declare -a part_start part_end part_code part_name
while read -r number start end _ _ code name; do
  part_start[number]=$start
  part_end[number]=$end
  part_code[number]=$code
  part_name[number]=$name
done < <(sgdisk -p "$raw" | awk '/^ +[0-9]+ +[0-9]+ +[0-9]+/')
esp=""
data=""
others=()
for n in "${!part_code[@]}"; do
  if [ "${part_code[n]}" = EF00 ]; then esp=$n
  elif [ "${part_name[n]}" = uvmkit-data ]; then data=$n
  else others+=("$n"); fi
done
[ -n "$esp" ] || { echo "no EFI system partition in $raw" >&2; exit 1; }
esp_offset=$((part_start[esp] * 512))
mcopy -n -i "$raw@@$esp_offset" ::/EFI/BOOT/BOOTX64.EFI "$work/bootx64.efi"
firmware_bytes=$(stat -c %s "$work/bootx64.efi")
mkdir -p "$work/esp"
mcopy -s -n -i "$raw@@$esp_offset" ::/ "$work/esp/"
esp_files=$(find "$work/esp" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
# objdump -h: "Idx Name Size VMA LMA File-off Algn"; sizes are hex.
section_size() { objdump -h -w "$1" | awk -v s="$2" '$2 == s { print $3 }' | { read -r hex && echo $((16#$hex)) || echo 0; }; }
uki_linux=$(section_size "$work/bootx64.efi" .linux)
uki_initrd=$(section_size "$work/bootx64.efi" .initrd)
if [ "$uki_linux" -gt 0 ]; then
  # A UKI: the firmware loads it whole, kernel and initrd inside.
  boot_chain="BOOTX64.EFI is a UKI: .linux $(mib "$uki_linux"), .initrd $(mib "$uki_initrd")"
  payload=$uki_initrd
  payload_parts=".initrd in the UKI $(mib "$uki_initrd")"
else
  # shim -> GRUB -> kernel and initrd: the firmware and the loaders read every file on the ESP
  # but MokManager and the fallback loader before the kernel starts.
  firmware_bytes=$(find "$work/esp" -type f ! -iname 'mmx64.efi' ! -iname 'fbx64.efi' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
  initrd_file=$(find "$work/esp" -type f -iname 'initrd*' -printf '%s %p\n' | sort -n | tail -1)
  payload=${initrd_file%% *}
  payload=${payload:-0}
  boot_chain="shim -> GRUB -> kernel + initrd (BOOTX64.EFI $(mib "$(stat -c %s "$work/bootx64.efi")"))"
  payload_parts="initrd on the ESP $(mib "$payload")"
fi
for n in "${others[@]}"; do
  offset=$((part_start[n] * 512))
  bytes=$(((part_end[n] - part_start[n] + 1) * 512))
  magic=$(dd if="$raw" bs=1 skip="$offset" count=4 status=none | od -An -c | tr -d ' ')
  if [ "$magic" = hsqs ]; then
    # squashfs superblock: bytes_used, a little-endian u64 at byte 40.
    bytes=$(dd if="$raw" bs=1 skip=$((offset + 40)) count=8 status=none | od -An -t u8 | tr -d ' ')
    kind=squashfs
  else
    kind="partition ${part_code[n]}"
  fi
  payload=$((payload + bytes))
  payload_parts+=", ${part_name[n]:-#$n} ($kind) $(mib "$bytes")"
done

# --- Boot: the raw disk under OVMF, as a hypervisor would start it.
if [ -n "${UVMKIT_BENCH_LOCK:-}" ]; then
  exec {lock_fd}>"$UVMKIT_BENCH_LOCK"
  flock "$lock_fd"
fi
cp --sparse=always "$raw" "$work/boot.raw"
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/vars.fd"
ssh_port=$(free_port)
started=$(now)
qemu-system-x86_64 -accel "$accel" -m "$memory_mib" -smp 1 -nographic -no-reboot -nodefaults \
  -serial "file:$work/serial.log" \
  -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
  -drive "if=pflash,format=raw,file=$work/vars.fd" \
  -drive "if=virtio,format=raw,file=$work/boot.raw" \
  -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$ssh_port-:22" -device virtio-net-pci,netdev=net0 \
  -device virtio-balloon,free-page-reporting=on </dev/null >/dev/null 2>"$work/qemu.err" &
qemu_pid=$!
wait_line() {
  local deadline=$((SECONDS + 600))
  until grep -q "$1" "$work/serial.log" 2>/dev/null; do
    kill -0 "$qemu_pid" 2>/dev/null || { echo "QEMU exited; serial log:" >&2; tail -40 "$work/serial.log" >&2; exit 1; }
    [ $SECONDS -lt $deadline ] || { echo "no '$1' within 600 s; serial log:" >&2; tail -40 "$work/serial.log" >&2; exit 1; }
    sleep 0.2
  done
}
wait_line "service dockerd ready"
dockerd_ready=$(since "$started")
wait_line "uvmkit-init: ready"
init_ready=$(since "$started")
ssh_opts=(-i "$work/id" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no
  -o "UserKnownHostsFile=$work/known_hosts" -o ConnectTimeout=10 -o LogLevel=ERROR)
vm() { ssh "${ssh_opts[@]}" -p "$ssh_port" root@127.0.0.1 "$@"; }
sleep 10 # let dockerd settle
in_use=$(vm "awk '/^MemTotal:/ { t = \$2 } /^MemAvailable:/ { a = \$2 } END { printf \"%d\", (t - a) / 1024 }' /proc/meminfo")
total=$(vm "awk '/^MemTotal:/ { printf \"%d\", \$2 / 1024 }' /proc/meminfo")
root_fs=$(vm "awk '\$2 == \"/\" { print \$3 }' /proc/mounts | tail -1")
vm poweroff >/dev/null 2>&1 || true
sleep 5
kill "$qemu_pid" 2>/dev/null || true
qemu_pid=""
if [ -n "${lock_fd:-}" ]; then flock -u "$lock_fd"; fi

# --- The reference pipeline: the same artifacts from the same tree and kernel, standard tools.
note "running the reference pipeline..."
ref=$work/ref
mkdir -p "$ref" "$work/tree" "$work/data-tree"
bsdtar -xpf "$out/docker-initrd.img" -C "$work/tree"
objcopy -O binary --only-section=.cmdline "$work/bootx64.efi" "$work/cmdline"
objcopy -O binary --only-section=.osrel "$work/bootx64.efi" "$work/osrel"
level=$(awk -F= '/^\[initrd\]/ { s = 1 } s && $1 ~ /compression_level/ { gsub(/[ "]/, "", $2); print $2; exit }' "$work/docker.toml")
level=${level:-9}
workers=$(($(nproc) < 4 ? $(nproc) : 4)) # the builder's zstd workers: min(cores, 4)
stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
esp_bytes=$(((part_end[esp] - part_start[esp] + 1) * 512))
disk_bytes=$(stat -c %s "$raw")
declare -A step
step() {
  local name=$1
  shift
  local t
  t=$(now)
  "$@"
  step[$name]=$(since "$t")
}
ref_initrd() {
  (cd "$work/tree" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) |
    zstd -q -"$level" -T"$workers" -o "$ref/docker-initrd.img"
  cp "$out/docker-kernel" "$ref/docker-kernel"
}
ref_uki() {
  # The systemd stub's documented objcopy recipe: each section after the stub's last one,
  # aligned to its SectionAlignment.
  local align end vma args=() hex size
  align=$((16#$(objdump -p "$stub" | awk '$1 == "SectionAlignment" { print $2 }')))
  end=0
  while read -r size hex; do
    [ $((16#$hex + 16#$size)) -gt "$end" ] && end=$((16#$hex + 16#$size))
  done < <(objdump -h -w "$stub" | awk '$1 ~ /^[0-9]+$/ { print $3, $4 }')
  vma=$(((end + align - 1) / align * align))
  for pair in .osrel="$work/osrel" .cmdline="$work/cmdline" .linux="$ref/docker-kernel" .initrd="$ref/docker-initrd.img"; do
    args+=(--add-section "$pair" --change-section-vma "${pair%%=*}=$(printf '0x%x' "$vma")")
    size=$(stat -c %s "${pair#*=}")
    vma=$(((vma + size + align - 1) / align * align))
  done
  objcopy "${args[@]}" "$stub" "$ref/docker.efi"
}
# The raw disk is written in place: the GPT, then each file system at its partition's offset.
ref_gpt() {
  rm -f "$ref/docker.raw"
  truncate -s "$disk_bytes" "$ref/docker.raw"
  local args=() n
  for n in "${!part_code[@]}"; do
    args+=(-n "$n:${part_start[n]}:${part_end[n]}" -t "$n:${part_code[n]}" -c "$n:${part_name[n]}")
  done
  sgdisk "${args[@]}" "$ref/docker.raw" >/dev/null
  # Any other partition (a system image) is copied from the uvmkit disk, not rebuilt.
  for n in "${others[@]}"; do
    dd if="$raw" of="$ref/docker.raw" bs=1M skip=$((part_start[n] * 512)) seek=$((part_start[n] * 512)) \
      count=$(((part_end[n] - part_start[n] + 1) * 512)) iflag=skip_bytes,count_bytes oflag=seek_bytes conv=notrunc,sparse status=none
  done
}
ref_esp() {
  mkfs.vfat -F 32 -s 1 -n ESP --offset "${part_start[esp]}" "$ref/docker.raw" $((esp_bytes / 1024)) >/dev/null
  mmd -i "$ref/docker.raw@@$esp_offset" ::/EFI ::/EFI/BOOT
  mcopy -i "$ref/docker.raw@@$esp_offset" "$ref/docker.efi" ::/EFI/BOOT/BOOTX64.EFI
}
ref_data() {
  local bytes=$(((part_end[data] - part_start[data] + 1) * 512))
  mkfs.ext4 -q -F -L uvmkit-data -d "$work/data-tree" -E offset=$((part_start[data] * 512)) \
    "$ref/docker.raw" $((bytes / 1024))k
}
ref_convert() {
  qemu-img convert -O vhdx -o subformat=dynamic "$ref/docker.raw" "$ref/docker.vhdx"
  qemu-img convert -O vmdk "$ref/docker.raw" "$ref/docker.vmdk"
  qemu-img convert -O vmdk -o subformat=streamOptimized "$ref/docker.raw" "$ref/docker-stream.vmdk"
  qemu-img convert -O qcow2 "$ref/docker.raw" "$ref/docker.qcow2"
}
ref_iso() {
  local iso=$work/isotree
  rm -rf "$iso" && mkdir -p "$iso/isolinux"
  cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$iso/isolinux/"
  printf 'DEFAULT uvmkit\nLABEL uvmkit\n  KERNEL /kernel\n  INITRD /initrd.img\n  APPEND %s\n' "$(tr -d '\0' <"$work/cmdline")" >"$iso/isolinux/isolinux.cfg"
  cp "$ref/docker-kernel" "$iso/kernel"
  cp "$ref/docker-initrd.img" "$iso/initrd.img"
  # The El Torito EFI image: a FAT image holding the UKI.
  local efi_bytes=$((($(stat -c %s "$ref/docker.efi") / 1048576 + 4) * 1048576))
  truncate -s "$efi_bytes" "$iso/efiboot.img"
  mkfs.vfat "$iso/efiboot.img" >/dev/null
  mmd -i "$iso/efiboot.img" ::/EFI ::/EFI/BOOT
  mcopy -i "$iso/efiboot.img" "$ref/docker.efi" ::/EFI/BOOT/BOOTX64.EFI
  xorriso -as mkisofs -quiet -o "$ref/docker.iso" -V UVMKIT -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin \
    -b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table \
    -eltorito-alt-boot -e efiboot.img -no-emul-boot -isohybrid-gpt-basdat "$iso" 2>/dev/null
}
ref_sums() { (cd "$ref" && sha256sum docker-kernel docker-initrd.img docker.efi docker.iso docker.raw docker.vhdx docker.vmdk docker-stream.vmdk docker.qcow2 >SHA256SUMS); }
ref_started=$(now)
step "cpio + zstd -$level -T$workers" ref_initrd
step "objcopy --add-section (UKI)" ref_uki
step "sgdisk (raw)" ref_gpt
step "mkfs.vfat + mtools (ESP)" ref_esp
step "mkfs.ext4 -d (data)" ref_data
step "qemu-img convert (vhdx, vmdk x2, qcow2)" ref_convert
step "xorriso (iso)" ref_iso
step "sha256sum (SHA256SUMS)" ref_sums
ref_wall=$(since "$ref_started")

echo "docker host footprint ($(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown), accel $accel, $memory_mib MiB, 1 vCPU)"
echo "  firmware loads before the kernel:  $(mib "$firmware_bytes") ($boot_chain; all ESP files $(mib "$esp_files"))"
echo "  system payload, compressed:        $(mib "$payload") ($payload_parts)"
echo "  QEMU start to dockerd ready:       ${dockerd_ready} s (UEFI raw disk, first boot; init ready ${init_ready} s)"
echo "  guest memory in use, dockerd idle: ${in_use} MiB of ${total} MiB (root file system: ${root_fs})"
echo "  build, every format ($formats):"
echo "    uvmkit:                          ${build_wall} s (peak $((build_peak / 1024)) MiB)"
echo "    reference pipeline:              ${ref_wall} s"
for name in "cpio + zstd -$level -T$workers" "objcopy --add-section (UKI)" "sgdisk (raw)" "mkfs.vfat + mtools (ESP)" \
  "mkfs.ext4 -d (data)" "qemu-img convert (vhdx, vmdk x2, qcow2)" "xorriso (iso)" "sha256sum (SHA256SUMS)"; do
  printf '      %-40s %s s\n' "$name" "${step[$name]}"
done
echo "    uvmkit / reference:              $(ratio "$build_wall" "$ref_wall")x"
echo "  rebuild after one [[files]] change: ${rebuild_efi} s (efi), ${rebuild_all} s (every format)"
echo "  builder peak memory, 64 GiB disk:  $((big_peak / 1024)) MiB (every format, ${big_wall} s)"
