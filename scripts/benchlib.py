"""What the benchmarks in scripts/ share: ports, starting and stopping servers, what a process group costs."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
sys.path.insert(0, str(REPO / "tests"))
from helpers import free_port as free_port  # noqa: E402  (the tests' helper: the benchmarks pick ports the same way)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def wait_for(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until something accepts connections on ``port``; exit if ``proc`` dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port} after {timeout} s")


def serve(root: Path, port: int, *args: str, env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    """``kiwispray serve`` in its own process group (so its cost can be summed and it can be stopped whole)."""
    cmd = [sys.executable, "-m", "ks", "--root", str(root), "serve", "--port", str(port), *args]
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(cmd, env={**ENV, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        if log:
            out.close()


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


def group_pids(pgid: int) -> list[int]:
    """Processes whose process group is ``pgid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[2]) == pgid:
                pids.append(int(entry))
    return pids


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the living processes of a process group."""
    total = 0
    for pid in group_pids(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of the living processes of a process group, summed."""
    total = 0
    for pid in group_pids(pgid):
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
        except OSError:
            continue
    return total


NGINX_CONF = """\
daemon off;
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
{user}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        location /images/ {{ alias {images}/; }}
    }}
}}
"""


def nginx(images: Path, port: int, workers: int, tmp: Path) -> subprocess.Popen:
    """nginx serving ``images/`` as static files, the way a web server would serve a mirror."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    tmp.mkdir(parents=True, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""  # workers must read the benchmark's private tmp dir
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workers=workers, tmp=tmp, user=user, port=port, images=images.resolve()))
    return subprocess.Popen([binary, "-e", str(tmp / "error.log"), "-p", str(tmp), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)


def ensure_tool(name: str) -> str:
    """The path of a command from scripts/install-system-deps.sh, installing the packages if needed."""
    path = shutil.which(name)
    if not path:
        subprocess.run(["bash", str(REPO / "scripts" / "install-system-deps.sh")], check=True)
        path = shutil.which(name)
    if not path:
        raise SystemExit(f"{name} is not installed; run scripts/install-system-deps.sh")
    return path


def command_line() -> str:
    """How this benchmark was started, for the record."""
    return " ".join(["python", f"scripts/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def boot_statements() -> dict[str, str]:
    """The statements /bootstrap runs for a known machine, as kiwispray compiles them for SQLite (named
    parameters): find the host by one MAC, read it, read its MACs, rotate its bootid, append its history line."""
    from sqlalchemy.dialects.sqlite import dialect

    from ks.boot import booting
    from ks.records import events

    named = dialect(paramstyle="named")
    statements = {"find": booting._host_ids_by_identifiers(1), "host": booting._HOST, "macs": booting._MACS,
                  "booted": booting._BOOTED, "event": events._ADD_EVENT}
    return {name: str(statement.compile(dialect=named)) for name, statement in statements.items()}
