"""The first boot's data as the real cloud-init and Ignition read it, from a real ``kiwispray serve``.

The generic KIWI template's kernel line goes through KIWI's own installer code
(``kiwi-dump-reboot-system.sh`` of Debian's kiwi-dracut-oem-dump, with kexec
stubbed) to the command line of the installed system's first boot; Debian's
cloud-init then runs its NoCloud datasource with that command line
(``tests/cloud_init_nocloud.py``) and validates what it got against its own
schema, and Debian's Ignition runs its fetch stage with it (``/proc/cmdline``
bound over in a private mount namespace) and ``ignition-validate``. The
packages are unpacked by scripts/install-system-deps.sh.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import requests

from helpers import bootid_of, run_edit_host
from server import ServerProcess, mac

pytestmark = pytest.mark.e2e

UNPACKED = Path(os.environ.get("KS_UNPACKED", "/var/cache/kiwispray-test/unpacked"))
CLOUD_INIT = UNPACKED / "cloud-init"
KIWI_REBOOT = UNPACKED / "kiwi-dracut-oem-dump/usr/lib/dracut/modules.d/99kiwi-dump-reboot/kiwi-dump-reboot-system.sh"
IGNITION = UNPACKED / "ignition/usr/lib/dracut/modules.d/30ignition/ignition"
IGNITION_VALIDATE = UNPACKED / "ignition/usr/bin/ignition-validate"
DEBIAN_PYTHON = "/usr/bin/python3"
DRIVER = Path(__file__).with_name("cloud_init_nocloud.py")
KEY1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@example.org"
KEY2 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7+/= bob"

IGNITION_CONFIG = """{
  "ignition": {"version": "3.3.0"},
  "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": {{ ssh_authorized_keys | tojson }}}]},
  "storage": {"files": [{"path": "/etc/hostname", "mode": 420, "overwrite": true,
                         "contents": {"source": {{ ("data:," ~ (host.hostname | urlencode)) | tojson }}}}]}
}
"""

# What KIWI's script needs from dracut and kiwi-lib, and a kexec that writes down its command line.
KIWI_STUBS = """
getargbool() { local word; for word in $(cat /proc/cmdline); do [ "$word" = "$2" ] && return 0; done; return 1; }
initialize() { :; }
bool() { echo "$1"; }
report_and_quit() { echo "$*" >&2; exit 1; }
get_selected_disk() { :; }
run_dialog() { :; }
"""
KEXEC = """#!/bin/sh
[ "$1" = "--help" ] && { echo "usage: kexec"; exit 0; }
while [ $# -gt 0 ]; do
    [ "$1" = "--command-line" ] && printf '%s' "$2" > "$KEXEC_COMMAND_LINE"
    shift
done
"""


@pytest.fixture(scope="module")
def unpacked():
    for path in (CLOUD_INIT / "usr/bin/cloud-init", KIWI_REBOOT, IGNITION, IGNITION_VALIDATE, Path(DEBIAN_PYTHON)):
        if not path.exists():
            pytest.fail(f"{path} is missing: run scripts/install-system-deps.sh (it unpacks cloud-init, Ignition and "
                        "KIWI's installer module, and installs the Python libraries cloud-init needs)")


@pytest.fixture(scope="module")
def server(tmp_path_factory, unpacked):
    root = tmp_path_factory.mktemp("nocloud") / "site"
    (root / "images" / "image1").mkdir(parents=True)
    image = root / "images" / "image1"
    (image / "pxeboot.kernel").write_bytes(b"kernel")
    (image / "pxeboot.initrd.xz").write_bytes(b"initrd")
    (image / "Image1.xz").write_bytes(b"disk")
    (image / "Image1.append").write_text("rd.kiwi.install.pxe rd.kiwi.install.image=http://x/i.xz console=ttyS0\n")
    (image / "config.ign").write_text(IGNITION_CONFIG)
    with ServerProcess(root, "--access-log") as srv:
        yield srv


def install(server, number: int, hostname: str | None, metadata: dict) -> str:
    """Register test machine ``number``, give it image1 (and a name, metadata); its install boot's script."""
    query = {"net0": mac(number)}
    assert requests.get(server.url + "/bootstrap", params=query, timeout=10).status_code == 200
    args = ["--mac", mac(number), "-s", "image1", "-m", json.dumps(metadata)] + (["-n", hostname] if hostname else [])
    run_edit_host(server.root, *args)
    r = requests.get(server.url + "/bootstrap", params=query, timeout=10)
    assert r.status_code == 200 and "boots image image1" in r.text, r.text
    return r.text


def host_id_of(script: str) -> int:
    """The host id in a script's post-install URL."""
    return int(re.search(r"post-install\?id=(\d+)&", script).group(1))


def kernel_command_line(script: str) -> str:
    """The kernel's command line as iPXE builds it: the words after the kernel's URL, up to '||'."""
    line = next(line for line in script.splitlines() if line.startswith("kernel "))
    words = line.split()
    return " ".join(words[3:words.index("||")])


def through_kiwi(command_line: str, tmp_path: Path) -> str:
    """The command line KIWI's installer kexecs the installed system with (its own script, run as root)."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "kexec").write_text(KEXEC)
    (tmp_path / "bin" / "kexec").chmod(0o755)
    (tmp_path / "cmdline").write_text(command_line + "\n")
    wrapper = tmp_path / "installer.sh"
    wrapper.write_text(KIWI_STUBS + f". {KIWI_REBOOT}\n")
    passed = tmp_path / "passed"
    # /proc/cmdline is the installer's: a private mount namespace shows it ours.
    subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount --bind {tmp_path / 'cmdline'} /proc/cmdline && exec bash {wrapper}"],
        env={**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "KEXEC_COMMAND_LINE": str(passed)},
        cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60,
    )
    return passed.read_text()


def cloud_init(command_line: str, workdir: Path) -> dict:
    """What Debian's cloud-init NoCloud datasource gets on a first boot with this kernel command line."""
    workdir.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(workdir), "LANG": "C.UTF-8",
           "PYTHONPATH": str(CLOUD_INIT / "usr/lib/python3/dist-packages"), "DEBUG_PROC_CMDLINE": command_line}
    done = subprocess.run([DEBIAN_PYTHON, str(DRIVER), str(workdir)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def cloud_init_schema(path: Path) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(CLOUD_INIT / "usr/lib/python3/dist-packages")}
    return subprocess.run([DEBIAN_PYTHON, str(CLOUD_INIT / "usr/bin/cloud-init"), "schema", "--config-file", str(path)],
                          env=env, capture_output=True, text=True, timeout=120)


def test_cloud_init_gets_the_hostname_and_keys(server, tmp_path):
    script = install(server, 1, "node-7", {"ssh_authorized_keys": {"alice": KEY1, "bob": KEY2}})
    bootid, host_id = bootid_of(script), host_id_of(script)
    passed = through_kiwi(kernel_command_line(script), tmp_path)
    seed = f"{server.url}/nocloud/{host_id}/{bootid}/"
    assert f"ds=nocloud-net;s={seed}" in passed.split()  # one word, as the template wrote it
    assert not [word for word in passed.split() if word.startswith("rd.kiwi.")]

    got = cloud_init(passed, tmp_path / "first")
    assert got["found"] and got["error"] is None
    assert got["metadata"]["seedfrom"] == seed
    assert got["metadata"]["local-hostname"] == "node-7" and got["hostname"] == "node-7"
    assert got["instance_id"].startswith(f"ks-{host_id}-")
    assert got["cloud_config"] == [{"hostname": "node-7", "ssh_authorized_keys": [KEY1, KEY2]}]
    assert got["schema"] == "valid"
    # cloud-init run once more in the same boot (by hand: `cloud-init clean; cloud-init init`) is the same instance.
    assert cloud_init(passed, tmp_path / "again")["instance_id"] == got["instance_id"]
    log = server.log()
    assert f"nocloud host={host_id} state=image1 file=user-data template=shipped:user-data" in log
    assert f"/nocloud/{host_id}/-/meta-data" in log and bootid not in log  # the access log hides the seed's bootid


def test_cloud_init_schema_accepts_the_shipped_default(server, tmp_path):
    cases = {"full": install(server, 2, "node-2", {"ssh_authorized_keys": KEY1}),
             "bare": install(server, 3, None, {"rack": "4"})}
    for name, script in cases.items():
        seed = kernel_command_line(script).split("ds=nocloud-net;s=")[1].split()[0]
        user_data = requests.get(seed + "user-data", timeout=10)
        assert user_data.status_code == 200
        (tmp_path / name).write_text(user_data.text)
        done = cloud_init_schema(tmp_path / name)
        assert done.returncode == 0 and "Valid cloud-config" in done.stdout, (name, user_data.text, done.stdout,
                                                                               done.stderr)
    # The check can fail: a value of the wrong type is refused.
    (tmp_path / "wrong").write_text("#cloud-config\nhostname: [not, a, string]\n")
    assert cloud_init_schema(tmp_path / "wrong").returncode != 0


def test_an_old_bootid_gets_401_and_cloud_init_gets_nothing(server, tmp_path):
    script = install(server, 4, "node-4", {"ssh_authorized_keys": KEY2})
    old_line = kernel_command_line(script)
    newer = requests.get(server.url + "/bootstrap", params={"net0": mac(4)}, timeout=10).text
    assert bootid_of(newer) != bootid_of(script)

    got = cloud_init(old_line, tmp_path / "old")
    assert not got["found"] and "401" in got["error"]
    assert got["userdata_raw"] is None
    assert "local-hostname" not in got["metadata"] and "instance-id" not in got["metadata"]
    assert "node-4" not in json.dumps(got) and "ssh-rsa" not in json.dumps(got)
    # The boot that is current still reads it.
    assert cloud_init(kernel_command_line(newer), tmp_path / "new")["metadata"]["local-hostname"] == "node-4"


def ignition_fetch(command_line: str, workdir: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """Ignition's fetch stage (platform metal: the URL comes from /proc/cmdline) on a first boot with this line."""
    workdir.mkdir()
    (workdir / "cmdline").write_text(command_line + "\n")
    cache = workdir / "ignition.json"
    stage = (f"{IGNITION} -platform metal -stage fetch -log-to-stdout -fetch-timeout 10s "
             f"-config-cache {cache} -state-file {workdir / 'state'} -neednet {workdir / 'neednet'}")
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount --bind {workdir / 'cmdline'} /proc/cmdline && exec {stage}"],
        capture_output=True, text=True, timeout=300, cwd=workdir,
    )
    return done, cache


def test_ignition_fetches_the_config_of_this_boot(server, tmp_path):
    script = install(server, 5, "node-5", {"ssh_authorized_keys": KEY1})
    passed = through_kiwi(kernel_command_line(script), tmp_path)
    url = f"{server.url}/ignition/{host_id_of(script)}/{bootid_of(script)}/config.ign"
    assert f"ignition.config.url={url}" in passed.split()

    done, cache = ignition_fetch(passed, tmp_path / "first")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f'parsed url from cmdline: "{url}"' in done.stdout
    config = json.loads(cache.read_text())  # as Ignition parsed and cached it
    assert config["passwd"]["users"] == [{"name": "core", "sshAuthorizedKeys": [KEY1]}]
    assert config["storage"]["files"][0]["contents"]["source"] == "data:,node-5"
    served = tmp_path / "served.ign"
    served.write_text(requests.get(url, timeout=10).text)
    validated = subprocess.run([str(IGNITION_VALIDATE), str(served)], capture_output=True, text=True, timeout=60)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    # The check can fail.
    served.write_text('{"ignition": {"version": "3.3.0"}, "passwd": {"users": [{"name": 7}]}}')
    assert subprocess.run([str(IGNITION_VALIDATE), str(served)], capture_output=True, timeout=60).returncode != 0

    # A later boot voids this one's bootid: Ignition gets nothing.
    requests.get(server.url + "/bootstrap", params={"net0": mac(5)}, timeout=10)
    done, cache = ignition_fetch(passed, tmp_path / "old")
    assert done.returncode != 0 and not cache.exists()
    assert "401" in done.stdout or "Unauthorized" in done.stdout, done.stdout
    assert f"/ignition/{host_id_of(script)}/-/config.ign" in server.log() and bootid_of(script) not in server.log()
