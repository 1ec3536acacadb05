"""The README's first command where a newcomer runs it: ``kiwispray serve`` in a fresh clone, a real process."""

import shutil
import socket
import subprocess
import sys

import pytest
import requests

from helpers import REPO, cli_env
from server import ServerProcess

needs_git = pytest.mark.skipif(not (REPO / ".git").exists() or shutil.which("git") is None,
                                reason="needs a git checkout of the project and git")


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A fresh clone of the project's committed tree: what a newcomer has after ``git clone``."""
    target = tmp_path_factory.mktemp("newcomer") / "kiwispray"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(target)], check=True, capture_output=True)
    return target


@needs_git
def test_serve_in_a_fresh_clone_serves_the_rendered_chain_script(clone):
    with ServerProcess(clone, in_root=True) as srv:
        script = requests.get(srv.url + "/bootstrap.ipxe", timeout=10)
        log = srv.log()
    assert script.status_code == 200
    assert "{{" not in script.text and "{%" not in script.text
    assert f"chain {srv.url}/bootstrap?net0=${{net0/mac:hexhyp}}" in script.text
    assert "no images in" in log and "image import" in log


@needs_git
def test_the_checkout_is_a_site_with_images_whose_files_git_ignores(clone):
    assert (clone / "images" / "README.md").is_file()
    (clone / "images" / "image1").mkdir()
    (clone / "images" / "image1" / "kernel").write_bytes(b"k")
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=clone, check=True,
                            capture_output=True, text=True)
    assert "images/" not in status.stdout


def test_a_port_in_use_is_one_line_naming_port(tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "ks", "serve", "--host", "127.0.0.1", "--port", str(port)],
                              env=cli_env(root), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"Error: port {port} on 127.0.0.1 is in use (another kiwispray serve?); choose another with --port"
    ]
