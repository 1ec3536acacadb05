#!/usr/bin/env bash
# Debian packages the test suite and benchmarks use: QEMU with iPXE and OVMF
# firmware, dnsmasq, PXELINUX, PostgreSQL, OpenIPMI's simulator, wrk, nginx, strace,
# iproute2 (network namespaces, and the neighbour table that finds BMCs by MAC),
# Chromium with its WebDriver (the dashboard's browser tests drive it with selenium).
# Idempotent: installs only what is missing; needs root (or sudo).
set -euo pipefail

packages=(
    qemu-system-x86 ipxe ipxe-qemu ovmf dnsmasq-base busybox-static cpio xz-utils
    pxelinux syslinux-common postgresql openipmi ipmitool wrk nginx-light iproute2 curl strace
    chromium chromium-driver
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
