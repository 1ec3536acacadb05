#!/usr/bin/env bash
# Debian packages the test suite and benchmarks use: QEMU with iPXE and OVMF
# firmware, dnsmasq, PXELINUX, PostgreSQL, OpenIPMI's simulator, wrk, nginx, strace,
# iproute2 (network namespaces, and the neighbour table that finds BMCs by MAC);
# what scripts/build-test-guest.sh builds the test machine with (cpio, kmod, xz,
# zstd) and what scripts/build-kiwi-image.sh builds the real KIWI image with
# (kiwi and its system dependencies, debootstrap, fdisk, rsync). The build
# scripts and the tests install nothing: they stop and name this script.
# Idempotent: installs only what is missing; needs root (or sudo).
set -euo pipefail

packages=(
    qemu-system-x86 ipxe ipxe-qemu ovmf dnsmasq-base busybox-static cpio xz-utils zstd kmod
    pxelinux syslinux-common postgresql openipmi ipmitool wrk nginx-light iproute2 curl strace
    kiwi kiwi-systemdeps-core kiwi-systemdeps-filesystems kiwi-systemdeps-bootloaders debootstrap fdisk rsync
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
