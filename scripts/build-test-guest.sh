#!/bin/sh
# Build the machine that end-to-end tests boot: Debian's amd64 kernel and a tiny
# busybox initrd whose /init brings up its NIC (e1000, or virtio-net on the Secure Boot
# machine) with DHCP, fetches the URL in
# razorurl= from the kernel command line, runs it (the post-install script, which
# calls /finish) and reboots. QEMU started with -no-reboot then exits, so every
# boot of a test machine is one QEMU run.
#
# The same kernel and initrd are also packed like a KIWI oem PXE build, so tests
# can import them as an image.
#
#   scripts/build-test-guest.sh            build into /var/cache/kiwispray-test/e2e (or $KS_E2E_CACHE)
#
# It also checks that what the tests run the machine with (QEMU, iPXE, OVMF,
# dnsmasq, PXELINUX) is there; scripts/install-system-deps.sh installs all of
# it (this script installs nothing; it downloads and unpacks Debian's kernel and
# busybox packages into its cache).
#
# Output in the cache directory:
#   guest/vmlinuz  guest/initrd.gz           the test machine
#   kiwi/                                     the same as a KIWI oem PXE build result:
#     pxeboot.$PRODUCT.kernel                 kernel,
#     pxeboot.$PRODUCT.initrd.xz              initrd,
#     $PRODUCT.append                         kernel command line,
#     $PRODUCT.xz  $PRODUCT.sha256            a placeholder disk and its checksum file
#   $PRODUCT.install.tar                      those files, packed as KIWI packs them
#
# Re-running reuses what is there, and rebuilds when this script or the files of
# scripts/test-guest/ changed.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${KS_E2E_CACHE:-/var/cache/kiwispray-test/e2e}
# KIWI names its results <image name>.<arch>-<version>.
product=KSTest.x86_64-1.0.0
guest=$cache/guest
kiwi=$cache/kiwi

say() { echo "build-test-guest: $*" >&2; }

# Commands (or files, given as absolute paths) and the Debian packages that
# bring them; stops, naming the packages, if any is missing.
need() {
	missing=""
	for pair in "$@"; do
		case $pair in
		/*) [ -e "${pair%%:*}" ] && continue ;;
		*) command -v "${pair%%:*}" >/dev/null 2>&1 && continue ;;
		esac
		missing="$missing ${pair#*:}"
	done
	[ -z "$missing" ] && return 0
	say "missing Debian packages:$missing; install them with scripts/install-system-deps.sh"
	exit 1
}

# Download a package into $cache/debs and unpack it into $cache/debs/<package>.
unpack() {
	mkdir -p "$cache/debs"
	if [ ! -d "$cache/debs/$1" ]; then
		say "downloading $1"
		# apt-get download knows only packages of the last 'apt-get update'.
		(cd "$cache/debs" && apt-get download -qq "$1" >&2 2>/dev/null) || {
			apt-get update -qq
			(cd "$cache/debs" && apt-get download -qq "$1" >&2)
		}
		dpkg-deb -x "$cache/debs/$1"_*.deb "$cache/debs/$1.tmp"
		mv "$cache/debs/$1.tmp" "$cache/debs/$1"
	fi
	echo "$cache/debs/$1"
}

# The concrete kernel package behind the linux-image-amd64 metapackage.
kernel_package() {
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n 1)
	if [ -z "$pkg" ]; then
		apt-get update -qq
		pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n 1)
	fi
	[ -n "$pkg" ] || { say "cannot find the kernel package of linux-image-amd64"; exit 1; }
	echo "$pkg"
}

# Copy a module and, recursively, the modules it depends on into the initrd,
# uncompressed (busybox insmod loads plain .ko files); print their load order.
add_module() {
	local name file dep
	name=$1
	file=$(find "$moddir/kernel" -name "$name.ko" -o -name "$name.ko.xz" -o -name "$name.ko.zst" | head -n 1)
	[ -n "$file" ] || { say "module $name not found in $moddir"; exit 1; }
	for dep in $(modinfo -F depends "$file" | tr ',' ' '); do
		add_module "$dep"
	done
	case $file in
	*.xz) xz -dc "$file" >"$root/lib/modules/$name.ko" ;;
	*.zst) need zstd:zstd && zstd -qdc "$file" >"$root/lib/modules/$name.ko" ;;
	*) cp "$file" "$root/lib/modules/$name.ko" ;;
	esac
	grep -qx "$name" "$root/lib/modules/order" 2>/dev/null || echo "$name" >>"$root/lib/modules/order"
}

build_guest() {
	need cpio:cpio modinfo:kmod xz:xz-utils
	kpkg=$(kernel_package)
	kdir=$(unpack "$kpkg")
	bdir=$(unpack busybox-static)
	moddir=$(echo "$kdir"/lib/modules/*)
	root=$cache/initrd.tmp
	rm -rf "$root"
	mkdir -p "$root/bin" "$root/lib/modules" "$root/etc" "$root/proc" "$root/sys" "$root/dev" "$root/tmp"
	cp "$bdir/bin/busybox" "$root/bin/busybox"
	# /init is a shell script: the kernel needs /bin/sh before busybox installs its links.
	ln -s busybox "$root/bin/sh"
	add_module e1000
	# The Secure Boot machine's NIC, and the firmware's variables (its SecureBoot one).
	add_module virtio_pci
	add_module virtio_net
	add_module efivarfs
	cp "$repo/scripts/test-guest/init" "$root/init"
	cp "$repo/scripts/test-guest/udhcpc.script" "$root/etc/udhcpc.script"
	chmod 755 "$root/init" "$root/etc/udhcpc.script"
	mkdir -p "$guest.tmp"
	(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 >"$guest.tmp/initrd.gz"
	cp "$kdir"/boot/vmlinuz-* "$guest.tmp/vmlinuz"
	echo "$kpkg" >"$guest.tmp/kernel-package"
	rm -rf "$root" "$guest"
	mv "$guest.tmp" "$guest"
	say "built $guest ($kpkg)"
}

# A KIWI oem PXE build result of the test machine: the directory and its
# install tarball, as KIWI writes them.
build_kiwi() {
	rm -rf "$kiwi.tmp"
	mkdir -p "$kiwi.tmp"
	cp "$guest/vmlinuz" "$kiwi.tmp/pxeboot.$product.kernel"
	gzip -dc "$guest/initrd.gz" | xz --check=crc32 -6 >"$kiwi.tmp/pxeboot.$product.initrd.xz"
	# The disk is never written by the test machine; it only has to be a disk
	# image with KIWI's checksum file: digest, blocks, block size of the raw disk.
	head -c $((256 * 4096)) /dev/zero >"$kiwi.tmp/disk.raw"
	echo "$(sha256sum <"$kiwi.tmp/disk.raw" | cut -d' ' -f1) 256 4096" >"$kiwi.tmp/$product.sha256"
	xz --check=crc32 <"$kiwi.tmp/disk.raw" >"$kiwi.tmp/$product.xz"
	rm "$kiwi.tmp/disk.raw"
	# KIWI's own .append names a placeholder install image; KIWIspray replaces it.
	echo "rd.kiwi.install.pxe rd.kiwi.install.image=http://example.invalid/image/$product.xz console=ttyS0 panic=10 kstag=kiwi" >"$kiwi.tmp/$product.append"
	(cd "$kiwi.tmp" && tar -cf "$product.install.tar.tmp" -- *)
	rm -rf "$kiwi"
	mv "$kiwi.tmp" "$kiwi"
	mv "$kiwi/$product.install.tar.tmp" "$cache/$product.install.tar"
	say "built $kiwi and $cache/$product.install.tar"
}

need qemu-system-x86_64:qemu-system-x86 /usr/lib/ipxe/qemu/efi-e1000.rom:ipxe-qemu \
	/usr/lib/ipxe/undionly.kpxe:ipxe /usr/lib/ipxe/snponly.efi:ipxe /usr/share/ovmf/OVMF.fd:ovmf \
	dnsmasq:dnsmasq-base ip:iproute2 \
	/usr/lib/PXELINUX/pxelinux.0:pxelinux /usr/lib/syslinux/modules/bios/ldlinux.c32:syslinux-common
mkdir -p "$cache"
# Rebuild when the files that go into the initrd changed since the last build.
stamp=$(cat "$0" "$repo/scripts/test-guest/init" "$repo/scripts/test-guest/udhcpc.script" | cksum | cut -d' ' -f1)
if [ "$(cat "$cache/stamp" 2>/dev/null)" != "$stamp" ] || [ ! -f "$guest/initrd.gz" ] || [ ! -f "$cache/$product.install.tar" ]; then
	build_guest
	build_kiwi
	echo "$stamp" >"$cache/stamp"
fi
echo "$cache"
