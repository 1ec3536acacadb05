"""``kiwispray kiwi overlay``: the callback files, and the callback script run against an HTTP server.

The script runs as root (as the suite does), in a private mount namespace with a
fake /proc/cmdline.
"""

import http.server
import os
import subprocess
import threading

from click.testing import CliRunner

from ks.cli.main import cli
from ks.kiwi import overlay


def test_overlay_writes_the_script_the_unit_and_its_enable_link(tmp_path):
    result = CliRunner().invoke(cli, ["kiwi", "overlay", str(tmp_path)])
    assert result.exit_code == 0, result.output
    script = tmp_path / "root" / overlay.SCRIPT
    unit = tmp_path / "root" / "etc/systemd/system" / overlay.UNIT
    link = tmp_path / "root" / "etc/systemd/system/multi-user.target.wants" / overlay.UNIT
    assert os.access(script, os.X_OK)
    assert f"ExecStart=/{overlay.SCRIPT}" in unit.read_text()
    assert "ConditionKernelCommandLine=razorurl" in unit.read_text()
    assert f"ConditionPathExists=!{overlay.DONE}" in unit.read_text()
    assert os.readlink(link) == f"/etc/systemd/system/{overlay.UNIT}"
    assert '<package name="curl"/>' in result.output
    subprocess.run(["sh", "-n", str(script)], check=True)
    # Running it again replaces the files (the link included) without an error.
    assert CliRunner().invoke(cli, ["kiwi", "overlay", str(tmp_path)]).exit_code == 0


def test_overlay_of_a_missing_directory_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["kiwi", "overlay", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "is not a directory (a KIWI image description)" in result.output
    assert "Traceback" not in result.output


class _Scripts(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first request, then a post-install script that leaves a mark."""

    calls: list[str] = []
    mark = ""

    def do_GET(self):
        self.calls.append(self.path)
        if len(self.calls) == 1:
            self.send_error(503)
            return
        body = f"echo post-install ran; touch {self.mark}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_callback_fetches_razorurl_retries_runs_it_once_and_marks_itself_done(tmp_path):
    overlay.write(tmp_path)
    script = tmp_path / "root" / overlay.SCRIPT
    # The script's own sleep between tries, shortened for the test.
    script.write_text(script.read_text().replace("sleep 5", "sleep 0.1"))
    state = tmp_path / "state"
    state.mkdir()
    _Scripts.calls, _Scripts.mark = [], str(tmp_path / "ran")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Scripts)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/post-install?id=7&bootid=abc"
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"console=ttyS0 razorurl={url} quiet\n")
    # A private mount namespace: a fake /proc/cmdline, and /var/lib/kiwispray in the test's directory.
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c",
         'mount --bind "$1" /proc/cmdline && mkdir -p /var/lib/kiwispray && mount --bind "$2" /var/lib/kiwispray '
         '&& "$3"', "sh", str(cmdline), str(state), str(script)],
        capture_output=True, text=True, timeout=60,
    )
    server.shutdown()
    server.server_close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert _Scripts.calls == ["/post-install?id=7&bootid=abc"] * 2
    assert (tmp_path / "ran").exists()
    assert (state / "callback-done").exists()
    assert "kiwispray-callback: done" in done.stdout


def test_the_callback_without_razorurl_does_nothing(tmp_path):
    overlay.write(tmp_path)
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("console=ttyS0 root=/dev/vda3\n")
    done = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind "$1" /proc/cmdline && "$2"', "sh",
                           str(cmdline), str(tmp_path / "root" / overlay.SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0
    assert "no razorurl=" in done.stdout
