#!/usr/bin/env bash
# Build the real KIWI image that the real-install test deploys: the Debian 12
# OEM description in tests/e2e/kiwi/, plus KIWIspray's first-boot callback
# (`kiwispray kiwi overlay`), built with Debian's kiwi-ng.
#
#   scripts/build-kiwi-image.sh        prints the path of the .install.tar
#
# The result is cached outside the checkout in $KS_KIWI_CACHE (default
# /var/cache/kiwispray-test/kiwi), keyed by a hash of the description, the
# overlay, this script and the versions of kiwi and of the image's packages:
# a rerun with the same inputs prints the cached tarball at once, a changed
# input builds anew (12-25 min on 2 cores). Needs root, and kiwi with what it
# needs: scripts/install-system-deps.sh installs them (this script installs nothing).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
description=$repo/tests/e2e/kiwi
cache=${KS_KIWI_CACHE:-/var/cache/kiwispray-test/kiwi}
name=KSKiwi
product=$name.x86_64-1.0.0

say() { echo "build-kiwi-image: $*" >&2; }

host_packages=(kiwi kiwi-systemdeps-core kiwi-systemdeps-filesystems kiwi-systemdeps-bootloaders
               debootstrap xz-utils fdisk rsync)
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
exec 9>"$cache/.lock"
flock 9
if [ -f "$out/$product.install.tar" ]; then  # built by another run while we waited
    echo "$out/$product.install.tar"
    exit 0
fi
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'umount -R "$work/out/build/image-root" 2>/dev/null || true; rm -rf "$work"' EXIT

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
