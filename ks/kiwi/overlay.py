"""The first-boot callback that a KIWI image description carries in its ``root/`` overlay.

KIWI's installer passes every kernel option that is not its own to the installed
system (``rd.kiwi.install.pass.bootparam``), so the first boot after the install
sees ``razorurl=<post-install URL>`` in ``/proc/cmdline``. The unit written here
fetches that script, runs it (the shipped one ends by calling ``/finish``) and
then disables itself; later boots from disk have no ``razorurl=`` and do nothing.
"""

from dataclasses import dataclass
from pathlib import Path

UNIT = "kiwispray-callback.service"
SCRIPT = "usr/libexec/kiwispray-callback"
DONE = "/var/lib/kiwispray/callback-done"

_SCRIPT_TEXT = """\
#!/bin/sh
# KIWIspray first-boot callback: fetch the post-install script named by
# razorurl= on the kernel command line, run it, and never run again.
set -u
url=""
for opt in $(cat /proc/cmdline); do
	case $opt in
	razorurl=*) url=${opt#razorurl=} ;;
	esac
done
if [ -z "$url" ]; then
	echo "kiwispray-callback: no razorurl= on the kernel command line; nothing to do"
	exit 0
fi
script=$(mktemp) || exit 1
trap 'rm -f "$script"' EXIT
i=0
while :; do
	if command -v curl >/dev/null 2>&1; then
		curl -fsS --connect-timeout 10 --max-time 60 -o "$script" "$url" && break
	elif command -v wget >/dev/null 2>&1; then
		wget -q -T 60 -O "$script" "$url" && break
	else
		echo "kiwispray-callback: neither curl nor wget is installed" >&2
		exit 1
	fi
	i=$((i + 1))
	if [ "$i" -ge 30 ]; then
		echo "kiwispray-callback: could not fetch the post-install script after $i tries" >&2
		exit 1
	fi
	sleep 5
done
echo "kiwispray-callback: running the post-install script"
sh "$script" || { echo "kiwispray-callback: the post-install script failed" >&2; exit 1; }
mkdir -p "$(dirname @DONE@)" && touch @DONE@
echo "kiwispray-callback: done"
""".replace("@DONE@", DONE)

_UNIT_TEXT = f"""\
[Unit]
Description=KIWIspray first-boot callback (post-install script from razorurl=)
Wants=network-online.target
After=network-online.target
ConditionKernelCommandLine=razorurl
ConditionPathExists=!{DONE}

[Service]
Type=oneshot
ExecStart=/{SCRIPT}
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class OverlayFile:
    """One file of the overlay: its path below ``root/``, its text and mode."""

    path: str
    text: str
    mode: int


FILES = (
    OverlayFile(SCRIPT, _SCRIPT_TEXT, 0o755),
    OverlayFile(f"etc/systemd/system/{UNIT}", _UNIT_TEXT, 0o644),
)
# What ``systemctl enable`` would create; KIWI copies symlinks of the overlay as they are.
ENABLE_LINK = (f"etc/systemd/system/multi-user.target.wants/{UNIT}", f"/etc/systemd/system/{UNIT}")
# The packages the script needs; either of curl and wget will do.
PACKAGES = ("curl",)


def write(description: Path) -> list[Path]:
    """Write the callback into ``description/root/`` and return the paths written."""
    if not description.is_dir():
        raise FileNotFoundError(f"{description} is not a directory (a KIWI image description)")
    root = description / "root"
    written = []
    for item in FILES:
        target = root / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item.text)
        target.chmod(item.mode)
        written.append(target)
    link, points_to = ENABLE_LINK
    target = root / link
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    target.symlink_to(points_to)
    written.append(target)
    return written
