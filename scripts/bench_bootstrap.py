#!/usr/bin/env python3
"""Benchmark /bootstrap: N known (finished) machines, 16 concurrent clients, wrk as the load.

Prints requests/s and latency percentiles for `kiwispray serve`, and the same for
a bare Flask + gunicorn app doing one raw SQLite write per request (the ceiling),
measured in the same run. Usage:

    python scripts/bench_bootstrap.py --machines 10000 --machines 100000 --duration 15
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LUA = """
math.randomseed(os.time())
request = function()
  local i = math.random(1, %(n)d)
  local mac = string.format("52-54-02-%%02x-%%02x-%%02x", math.floor(i / 65536) %% 256, math.floor(i / 256) %% 256, i %% 256)
  return wrk.format("GET", "/bootstrap?net0=" .. mac .. "&serial=&uuid=")
end
"""


def mac(i: int) -> str:
    return f"52:54:02:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if not path:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL)
        path = shutil.which("wrk")
    return path


def populate(root: Path, count: int, url: str | None = None) -> None:
    """Register `count` finished machines directly in the database (fast bulk insert)."""
    from sqlalchemy import insert

    from ks import migrate
    from ks.db import Database
    from ks.models import Host, HostMac, utcnow

    db = Database(url or f"sqlite:///{root / 'kiwispray.db'}")
    migrate.upgrade(db)
    now = utcnow()
    with db.engine.begin() as conn:
        for start in range(1, count + 1, 5000):
            ids = range(start, min(start + 5000, count + 1))
            conn.execute(insert(Host), [
                {"id": i, "hostname": f"node{i}", "state": "finished", "meta": {}, "boot_finished": False,
                 "created_at": now, "updated_at": now} for i in ids])
            conn.execute(insert(HostMac), [{"mac": mac(i), "host_id": i, "position": 0} for i in ids])
    db.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def run_wrk(wrk: str, port: int, machines: int, clients: int, duration: int, workdir: Path) -> dict:
    script = workdir / f"bootstrap-{machines}.lua"
    script.write_text(LUA % {"n": machines})
    cmd = [wrk, "-t2", f"-c{clients}", f"-d{duration}s", "--latency", "-s", str(script),
           f"http://127.0.0.1:{port}/bootstrap"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> dict:
    def latency(label):
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50": latency(50), "p90": latency(90), "p99": latency(99),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
    }


def serve(root: Path, port: int, workers: int, threads: int, env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ks", "--root", str(root), "serve", "--port", str(port),
           "--workers", str(workers), "--threads", str(threads)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def ceiling(port: int, workers: int, threads: int, env: dict, workdir: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", str(workers), "--threads", str(threads),
           "-b", f"127.0.0.1:{port}", "--chdir", str(REPO / "scripts"), "--no-control-socket", "bench_ceiling_app:app"]
    env = {**env, "CEILING_DB": str(workdir / "ceiling.db")}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def show(label: str, r: dict) -> None:
    print(f"{label:<34} {r['rps']:>9.0f} req/s   p50 {r['p50']:6.1f} ms   p90 {r['p90']:6.1f} ms   "
          f"p99 {r['p99']:6.1f} ms   errors {r['non2xx'] + r['socket_errors']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, action="append", help="known machines (repeatable) [10000]")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections [16]")
    parser.add_argument("--duration", type=int, default=15, help="seconds per measurement [15]")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes [2]")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker [8]")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the bare Flask + SQLite ceiling")
    args = parser.parse_args()
    sizes = args.machines or [10000]
    wrk = ensure_wrk()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    print(f"# {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
    print(f"# {os.cpu_count()} cores, wrk -t2 -c{args.clients} -d{args.duration}s, "
          f"server: {args.workers} workers x {args.threads} threads")
    with tempfile.TemporaryDirectory(prefix="ks-bench-") as tmp:
        workdir = Path(tmp)
        if not args.no_ceiling:
            port = free_port()
            proc = ceiling(port, args.workers, args.threads, env, workdir)
            try:
                wait_for(port, proc)
                run_wrk(wrk, port, 1000, args.clients, 3, workdir)  # warm-up
                show("ceiling: Flask + 1 SQLite write", run_wrk(wrk, port, 10000, args.clients, args.duration, workdir))
            finally:
                stop(proc)
        for size in sizes:
            root = workdir / f"site-{size}"
            root.mkdir()
            t0 = time.monotonic()
            populate(root, size)
            print(f"# registered {size} finished machines in {time.monotonic() - t0:.1f} s", flush=True)
            port = free_port()
            proc = serve(root, port, args.workers, args.threads, env)
            try:
                wait_for(port, proc)
                run_wrk(wrk, port, size, args.clients, 3, workdir)  # warm-up
                show(f"kiwispray /bootstrap, {size} hosts", run_wrk(wrk, port, size, args.clients, args.duration, workdir))
            finally:
                stop(proc)


if __name__ == "__main__":
    main()
