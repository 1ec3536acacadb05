#!/usr/bin/env bash
# Debian packages the test suite and benchmarks use: QEMU with iPXE and OVMF
# firmware, dnsmasq, PXELINUX, PostgreSQL, OpenIPMI's simulator, wrk, nginx, strace,
# iproute2 (network namespaces, and the neighbour table that finds BMCs by MAC);
# what scripts/build-test-guest.sh builds the test machine with (cpio, kmod, xz,
# zstd) and what scripts/build-kiwi-image.sh builds the real KIWI image with
# (kiwi and its system dependencies, debootstrap, fdisk, rsync; mtools and
# dosfstools make and fill its EFI partition). The signed boot chain
# the Secure Boot tests run: shim (Microsoft-signed), Debian's signed GRUB,
# and sbsigntool to make an unsigned kernel of a signed one. The build
# scripts and the tests install nothing: they stop and name this script. The
# Python libraries Debian's cloud-init runs on: the NoCloud tests run its code with
# /usr/bin/python3 from the unpacked package (below). Chromium with its WebDriver
# (the dashboard's browser tests drive it with selenium).
# Idempotent: installs only what is missing; needs root (or sudo).
set -euo pipefail

packages=(
    qemu-system-x86 ipxe ipxe-qemu ovmf dnsmasq-base busybox-static cpio xz-utils zstd kmod
    pxelinux syslinux-common postgresql openipmi ipmitool wrk nginx-light iproute2 curl strace
    kiwi kiwi-systemdeps-core kiwi-systemdeps-filesystems kiwi-systemdeps-bootloaders debootstrap fdisk rsync
    mtools dosfstools shim-signed grub-efi-amd64-signed grub-efi-amd64-bin sbsigntool
    python3-yaml python3-jinja2 python3-jsonschema python3-requests python3-configobj python3-jsonpatch
    python3-netifaces python3-oauthlib python3-serial
    chromium chromium-driver
)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
updated=
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    $SUDO apt-get update -qq
    updated=1
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Packages whose code tests run but which are unpacked, never installed: installing
# cloud-init would enable its services on this machine, KIWI's installer module and
# Ignition are for an initrd. Each goes to $cache/<package>/ (the .deb's file tree).
cache=${KS_UNPACKED:-/var/cache/kiwispray-test/unpacked}
for p in cloud-init kiwi-dracut-oem-dump ignition; do
    [ -f "$cache/$p/.unpacked" ] && continue
    echo "unpacking $p into $cache/$p" >&2
    [ -n "$updated" ] || { $SUDO apt-get update -qq; updated=1; }
    work=$(mktemp -d)
    chmod 755 "$work"  # apt downloads as its own user where it can
    (cd "$work" && apt-get download -qq "$p")
    $SUDO rm -rf "$cache/$p"
    $SUDO mkdir -p "$cache/$p"
    $SUDO dpkg-deb -x "$work/$p"_*.deb "$cache/$p"
    $SUDO touch "$cache/$p/.unpacked"
    rm -rf "$work"
done
