"""``kiwispray demo`` end to end, as an operator runs it: a machine goes new, image1,
finished, its disk; the dashboard is reachable from this machine while it runs, and
nothing is left behind. Prints the demo's wall time."""

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ks.lab.lab import PACKAGE_PARENT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600), pytest.mark.usefixtures("guest_cache")]


def test_demo_installs_a_machine_and_cleans_up(tmp_path):
    started = time.monotonic()
    lines, login = [], None
    with subprocess.Popen(
        [sys.executable, "-m", "ks", "demo", "--port", "0"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(PACKAGE_PARENT)},
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            url = re.search(r"dashboard: (http://127\.0\.0\.1:\d+/ui/)", line)
            if url:  # reachable from this machine, outside the namespace, while the demo runs
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(url.group(1) + "login", timeout=10) as answer:
                    login = (answer.status, answer.read().decode())
        try:
            process.wait(60)
        finally:
            if process.poll() is None:
                process.terminate()  # the demo cleans up on SIGTERM
                process.wait(60)
    output = "\n".join(lines)
    print(f"kiwispray demo: {time.monotonic() - started:.0f} s wall time")
    assert process.returncode == 0, output
    assert login is not None and login[0] == 200 and "token" in login[1].lower(), output
    steps = [
        r"history: register +-> new",
        r"host 1 is new",
        r"edit-host -i 1 -s image1",
        r"history: state +-> image1",
        r"history: post-install +-> image1",
        r"history: finish +-> finished",
        r"history: boot +-> finished",
        r"host 1 is installed; booting from the next device",
        r"cleaned up: namespace ks-demo-\d+-\d+ deleted",
        r"done in \d+ s: the machine went new -> image1 -> finished -> its disk",
    ]
    at = 0
    for step in steps:  # in this order
        found = re.compile(step).search(output, at)
        assert found, f"{step!r} missing after position {at}:\n{output}"
        at = found.end()
    namespace = re.search(r"namespace (ks-demo-\d+-\d+) deleted", output).group(1)
    assert namespace not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    workdir = re.search(r"making a site in (\S+)/site", output).group(1)
    assert not Path(workdir).exists()
