#!/usr/bin/env bash
# Installs what the tests need on a Debian 12 machine: the independent readers of what uvmkit
# writes (qemu-img, xorriso, fsck.fat, e2fsck, sgdisk...), QEMU with OVMF for the boot tests,
# and the static-init target. Run as root (or through sudo). bench/footprint.sh's reference
# pipeline needs the same list (mksquashfs, cpio, zstd, objcopy, systemd's UKI stub
# /usr/lib/systemd/boot/efi/linuxx64.efi.stub in Debian 12 and 13, isolinux, mtools,
# mkfs.vfat, sgdisk, /usr/bin/time, flock).
set -euo pipefail
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
# qemu-system-x86 alone replaces a newer qemu-utils (backport) with a conflicting one; asking for
# the qemu-utils of the same version keeps qemu-img and QEMU in step.
qemu_version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
$sudo apt-get install -y -q --allow-downgrades \
  qemu-system-x86 "qemu-utils=${qemu_version}" ovmf \
  xorriso genisoimage libarchive-tools dosfstools mtools gdisk fdisk cpio zstd xz-utils e2fsprogs binutils \
  isolinux syslinux-common systemd-boot-efi squashfs-tools time util-linux python3 dpkg-dev sbsigntool osslsigncode openssh-client openssl dnsmasq-base iproute2 gpg gpgv curl \
  libxml2-utils gcc-mingw-w64-x86-64 wine wine64
if command -v rustup >/dev/null; then
  rustup target add x86_64-unknown-linux-musl \
    || echo "note: no musl target; the init is built for glibc with +crt-static instead"
  # uvmkit.exe for Windows hosts (instance, connect, env), linked with mingw-w64 and run
  # under Wine by tests/windows.rs.
  rustup target add x86_64-pc-windows-gnu \
    || echo "note: no x86_64-pc-windows-gnu target; the Windows build is not checked"
fi
# The SPDX validator the release test runs on every SBOM (a Python package, not in Debian 12).
python3 -m pip install -q --disable-pip-version-check spdx-tools 2>/dev/null \
  || echo "note: could not install spdx-tools with pip; the SBOM is then checked by the tests' own assertions only"
