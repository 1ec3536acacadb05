#!/usr/bin/env bash
# Build the real KIWI image that the real-install tests deploy: the Debian 12
# OEM description in tests/e2e/kiwi/, plus KIWIspray's first-boot callback
# (`kiwispray kiwi overlay`), built with Debian's kiwi-ng. It is a UEFI image
# (shim, Debian's signed GRUB and kernel) that kiwi makes a BIOS hybrid too, so
# the tests under either firmware install this one build.
#
#   scripts/build-kiwi-image.sh        prints the path of the .install.tar
#
# The result is cached outside the checkout in $KS_KIWI_CACHE (default
# /var/cache/kiwispray-test/kiwi), keyed by a hash of the description, the
# overlay, this script and the versions of kiwi and of the image's packages:
# a rerun with the same inputs prints the cached tarball at once, a changed
# input builds anew (5-20 min on 2 cores; the first build on a machine also
# downloads the packages into kiwi's cache). Needs root, and kiwi with what it
# needs: scripts/install-system-deps.sh installs them (this script installs nothing).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
description=$repo/tests/e2e/kiwi
cache=${KS_KIWI_CACHE:-/var/cache/kiwispray-test/kiwi}
name=KSKiwi
product=$name.x86_64-1.0.0

say() { echo "build-kiwi-image: $*" >&2; }

host_packages=(kiwi kiwi-systemdeps-core kiwi-systemdeps-filesystems kiwi-systemdeps-bootloaders
               debootstrap xz-utils fdisk rsync mtools dosfstools)
missing=()
for p in "${host_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "missing Debian packages: ${missing[*]}; install them with scripts/install-system-deps.sh"
    exit 1
fi

# The Debian mirror this machine's apt uses (deb822 sources, then sources.list).
mirror() {
    local url
    url=$(awk 'tolower($1) == "uris:" { uri = $2 } tolower($1) == "suites:" && / bookworm( |$)/ { print uri; exit }' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$url" ] || url=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
    [ -n "$url" ] || { say "no bookworm mirror in this machine's apt sources"; exit 1; }
    echo "$url"
}

# Inputs of the build: the description, the callback, this script, kiwi's own
# version and the versions apt would install into the image.
image_packages=$(sed -n 's/.*<package name="\([^"]*\)".*/\1/p' "$description/config.xml" | sort -u)
versions() {
    dpkg-query -W kiwi
    # shellcheck disable=SC2086
    apt-cache policy $image_packages 2>/dev/null | awk '/^[^ ]/ { p = $1 } /Candidate:/ { print p, $2 }'
}
if versions | grep -q "(none)"; then
    apt-get update -qq
fi
key=$( (cd "$repo" && find tests/e2e/kiwi -type f -o -type l | LC_ALL=C sort | xargs sha256sum;
        sha256sum ks/kiwi/overlay.py scripts/build-kiwi-image.sh; versions) | sha256sum | cut -c1-16)
out=$cache/$key
if [ -f "$out/$product.install.tar" ]; then
    say "cached: $out ($(cat "$out/build-seconds" 2>/dev/null || echo '?') s to build)"
    echo "$out/$product.install.tar"
    exit 0
fi

mkdir -p "$cache"
# One kiwi build at a time on a machine, whatever its cache: kiwi's own package
# cache (/var/cache/kiwi) takes apt's lock, and a second build fails on it.
exec 9>/run/lock/kiwispray-kiwi-build.lock
flock 9
if [ -f "$out/$product.install.tar" ]; then  # built by another run while we waited
    echo "$out/$product.install.tar"
    exit 0
fi
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'umount -R "$work/out/build/image-root" 2>/dev/null || true; umount "$work"/fat/fs-* 2>/dev/null || true; rm -rf "$work"' EXIT

url=$(mirror)
say "building $product from $url into $out (key $key)"
cp -a "$description" "$work/desc"
sed -i "s|@MIRROR@|$url|" "$work/desc/config.xml"
PYTHONPATH=$repo python3 -m ks kiwi overlay "$work/desc" >/dev/null 2>&1

# kiwi 9.24 adds the partitions with partx after sfdisk already made the kernel
# see them (EBUSY): let that step refresh them instead.
mkdir -p "$work/bin"
cat >"$work/bin/partx" <<'EOF'
#!/bin/sh
for a; do shift; [ "$a" = --add ] && a=--update; set -- "$@" "$a"; done
exec /usr/bin/partx "$@"
EOF
chmod 755 "$work/bin/partx"

# kiwi mounts the EFI partition (FAT) to fill it, and a build machine's kernel
# may have no vfat. The first mount of a FAT device mounts a tmpfs for it in
# $work/fat, filled with the partition's files (mtools reads them), and binds
# that tmpfs on the mount point; a second mount of the same device binds the
# same tmpfs, as the kernel would share one filesystem. Each unmount writes the
# tmpfs's files back into the partition with mtools before it unmounts. Every
# other mount is the real one.
mkdir -p "$work/fat"
cat >"$work/bin/mount" <<EOF
#!/bin/sh
state=$work/fat
EOF
cat >>"$work/bin/mount" <<'EOF'
dev= dir= skip=
for a; do
    if [ -n "$skip" ]; then skip=; continue; fi
    case $a in -o|-t) skip=1 ;; -*) ;; *) dev=$dir; dir=$a ;; esac
done
if [ -b "$dev" ] && [ "$(blkid -o value -s TYPE "$dev")" = vfat ]; then
    fs=$state/fs-$(realpath "$dev" | sha256sum | cut -c1-16)
    if ! mountpoint -q "$fs"; then
        mkdir -p "$fs"
        /usr/bin/mount -t tmpfs -o mode=755 tmpfs "$fs" || exit 1
        MTOOLS_SKIP_CHECK=1 mcopy -s -n -Q -m -i "$dev" '::/*' "$fs/" 2>/dev/null
    fi
    /usr/bin/mount --bind "$fs" "$dir" || exit 1
    echo "$dev" >"$state/$(realpath "$dir" | sha256sum | cut -c1-16)"
    exit 0
fi
exec /usr/bin/mount "$@"
EOF
cat >"$work/bin/umount" <<EOF
#!/bin/sh
state=$work/fat
EOF
cat >>"$work/bin/umount" <<'EOF'
dir=
for a; do case $a in -*) ;; *) dir=$a ;; esac; done
entry=$state/$(realpath "$dir" 2>/dev/null | sha256sum | cut -c1-16)
if [ -n "$dir" ] && [ -f "$entry" ]; then
    dev=$(cat "$entry")
    export MTOOLS_SKIP_CHECK=1
    for old in $(mdir -b -i "$dev" ::/ 2>/dev/null); do
        mdeltree -i "$dev" "$old" 2>/dev/null || mdel -i "$dev" "$old" || exit 1
    done
    for f in "$dir"/* "$dir"/.[!.]*; do
        [ -e "$f" ] || continue
        mcopy -s -p -Q -m -i "$dev" "$f" ::/ || exit 1
    done
    /usr/bin/umount "$@" && rm -f "$entry"
    exit
fi
exec /usr/bin/umount "$@"
EOF
chmod 755 "$work/bin/mount" "$work/bin/umount"

start=$(date +%s)
if ! PATH=$work/bin:$PATH kiwi-ng --logfile "$work/kiwi.log" --config "$work/desc/kiwi.yml" --type oem \
        system build --description "$work/desc" --target-dir "$work/out" >"$work/kiwi.out" 2>&1; then
    tail -n 40 "$work/kiwi.log" >&2 || tail -n 40 "$work/kiwi.out" >&2
    cp "$work/kiwi.log" "$cache/last-failed-build.log" 2>/dev/null || true
    say "kiwi-ng failed; the log is in $cache/last-failed-build.log"
    exit 1
fi
seconds=$(( $(date +%s) - start ))
mkdir -p "$work/result"
mv "$work/out/$product.install.tar" "$work/result/"
echo "$seconds" >"$work/result/build-seconds"
(cd "$work/out" && ls -l) >"$work/result/build-files"
rm -rf "$out"
mv "$work/result" "$out"
# Older builds of other inputs are of no further use.
find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$key" ! -name "build.*" -exec rm -rf {} +
say "built $out/$product.install.tar in $seconds s"
echo "$out/$product.install.tar"
