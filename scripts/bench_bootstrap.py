#!/usr/bin/env python3
"""Benchmark /bootstrap: N known (finished) machines, 16 concurrent clients, wrk as the load.

Prints requests/s and latency percentiles for `kiwispray serve` at each number
of known machines (default 10,000 and 100,000), beside a bare Flask + gunicorn
app doing one raw SQLite write per request (the ceiling), all measured in the
same run, and SQLite's plan for each statement of the boot path (every one must
be a SEARCH through an index: a SCAN would grow with the number of machines).
With the ceiling it also measures a second bare app doing exactly the boot
path's writes of a known machine (KIWIspray's own statements in one transaction,
nothing rendered or logged: what a boot costs at the least), and GET
/bootstrap.ipxe on kiwispray's server and connections: a request that touches no
database, what the server and Flask cost apart from the boot's own work.
With ``--baseline DIR`` it also measures ``kiwispray serve`` of another checkout
(PYTHONPATH=DIR, its own migrations and code) in the same rounds, so that a
change is compared with the code before it on the same machine at the same time.
Usage:

    python scripts/bench_bootstrap.py --machines 10000 --machines 100000 --duration 15 --repeat 3
    python scripts/bench_bootstrap.py --machines 10000 --no-ceiling --baseline /tmp/ks-before
"""

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ENV, REPO, boot_statements, command_line, ensure_tool, free_port, group_cpu_seconds, stop, wait_for
from benchlib import serve as start_server

sys.path.insert(0, str(REPO))

LUA = """
math.randomseed(os.time())
request = function()
  local i = math.random(1, %(n)d)
  local mac = string.format("52-54-02-%%02x-%%02x-%%02x",
                            math.floor(i / 65536) %% 256, math.floor(i / 256) %% 256, i %% 256)
  return wrk.format("GET", "%(path)s?net0=" .. mac .. "&serial=&uuid=%(facts)s")
end
"""


CEILING = "ceiling: Flask + 1 SQLite write"
BOOT_CEILING = "Flask + the boot's writes alone"
TRIVIAL = "kiwispray /bootstrap.ipxe, no database"


def revision(checkout: Path) -> str:
    """The commit a checkout is at, for the record."""
    done = subprocess.run(["git", "-C", str(checkout), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    return done.stdout.strip()[:72] or "not a git checkout"


# Run with PYTHONPATH naming the checkout whose schema (migrations, models) the database gets.
POPULATE = """
import sys
from sqlalchemy import insert
from ks.records import migrate
from ks.records.db import Database
from ks.records.models import Host, HostMac, utcnow

import json
root, count, facts = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
mac = lambda i: f"52:54:02:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
db = Database(f"sqlite:///{root}/kiwispray.db")
migrate.upgrade(db)
now = utcnow()
with db.engine.begin() as conn:
    for start in range(1, count + 1, 5000):
        ids = range(start, min(start + 5000, count + 1))
        conn.execute(insert(Host), [
            {"id": i, "hostname": f"node{i}", "state": "finished", "meta": {}, "boot_finished": False,
             "created_at": now, "updated_at": now, **({"facts": facts} if facts else {})} for i in ids])
        conn.execute(insert(HostMac), [{"mac": mac(i), "host_id": i, "position": 0} for i in ids])
db.dispose()
"""


def populate(root: Path, count: int, checkout: Path = REPO, facts: dict | None = None) -> None:
    """Register `count` finished machines directly in the database (fast bulk insert), as ``checkout`` stores them."""
    subprocess.run([sys.executable, "-c", POPULATE, str(root), str(count), json.dumps(facts or {})],
                   env={**ENV, "PYTHONPATH": str(checkout)}, check=True)


# What the shipped bootstrap.ipxe reports beside the identifiers (--facts). The machines are
# registered with them already, as after their first boot: each boot compares them with what is stored.
FACTS = ("&manufacturer=Dell%20Inc.&product=PowerEdge%20R640&asset=&board_serial=CN7016&buildarch=x86_64"
         "&platform=efi&chip=&memsize=&ipxe_version=1.21.1")
STORED_FACTS = {"manufacturer": "Dell Inc.", "product": "PowerEdge R640", "board_serial": "CN7016",
                "buildarch": "x86_64", "platform": "efi", "ipxe_version": "1.21.1"}


def run_wrk(wrk: str, port: int, machines: int, clients: int, duration: int, workdir: Path,
            facts: bool = False, path: str = "/bootstrap") -> dict:
    """wrk against ``path`` for random ones of ``machines`` known machines; 0 machines: a plain GET of ``path``."""
    if machines:
        script = workdir / f"{path.strip('/')}-{machines}.lua"
        script.write_text(LUA % {"n": machines, "facts": FACTS if facts else "", "path": path})
        load = ["-s", str(script), f"http://127.0.0.1:{port}{path}"]
    else:
        load = [f"http://127.0.0.1:{port}{path}"]
    cmd = [wrk, "-t2", f"-c{clients}", f"-d{duration}s", "--latency", *load]
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


def ceiling(port: int, workers: int, threads: int, workdir: Path, site_db: Path) -> subprocess.Popen:
    """The ceilings' app (bench_ceiling_app.py) under gunicorn; ``site_db``: the site /boot writes to."""
    cmd = [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", str(workers), "--threads", str(threads),
           "-b", f"127.0.0.1:{port}", "--chdir", str(REPO / "scripts"), "--no-control-socket", "bench_ceiling_app:app"]
    env = {**ENV, "CEILING_DB": str(workdir / "ceiling.db"), "CEILING_SITE_DB": str(site_db)}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def query_plans(database: Path) -> list[str]:
    """SQLite's plan for each statement /bootstrap runs for a known machine."""
    plans = []
    with sqlite3.connect(database) as conn:
        for statement in boot_statements().values():
            steps = [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + statement, _nulls(statement))]
            plans.append(f"{' '.join(statement.split()[:2])} ...: {'; '.join(steps) or 'no lookup'}")
    return plans


def _nulls(statement: str) -> dict:
    """NULL for every :name of a statement (a plan does not depend on the values)."""
    return dict.fromkeys(re.findall(r"(?<![:\w]):(\w+)", statement))


def show(label: str, runs: list[dict]) -> dict:
    """Print the best run (by req/s), the median and every run; return the best."""
    best = max(runs, key=lambda r: r["rps"])
    median = sorted(r["rps"] for r in runs)[len(runs) // 2]
    rates = ", ".join(f"{r['rps']:.0f}" for r in runs)
    spread = f"   median {median:.0f} of runs: {rates}" if len(runs) > 1 else ""
    print(f"{label:<40} {best['rps']:>6.0f} req/s   p50 {best['p50']:6.1f} ms   p90 {best['p90']:6.1f} ms   "
          f"p99 {best['p99']:6.1f} ms   server CPU {best['cpu_ms']:.2f} ms/req   "
          f"errors {sum(r['non2xx'] + r['socket_errors'] for r in runs)}{spread}", flush=True)
    return best


def measure(wrk: str, proc: subprocess.Popen, port: int, machines: int, path: str, args, workdir: Path) -> dict:
    """One wrk run; the result also has the server's CPU ms per request."""
    cpu = group_cpu_seconds(proc.pid)
    result = run_wrk(wrk, port, machines, args.clients, args.duration, workdir, args.facts, path)
    result["cpu_ms"] = (group_cpu_seconds(proc.pid) - cpu) * 1000 / result["requests"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, action="append", help="known machines (repeatable) [10000 and 100000]")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections [16]")
    parser.add_argument("--duration", type=int, default=15, help="seconds per measurement [15]")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds; each round measures every server once, in turn; the best is shown [1]")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes [2]")
    parser.add_argument("--threads", type=int, default=32, help="threads per worker (kiwispray serve's default) [32]")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the bare Flask + SQLite ceiling")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="also measure kiwispray serve of the checkout DIR (e.g. a worktree of an older commit)")
    parser.add_argument("--facts", action="store_true",
                        help="send the facts the shipped bootstrap.ipxe reports (SMBIOS product, platform, ...)")
    args = parser.parse_args()
    baseline = args.baseline.resolve() if args.baseline else None
    if baseline is not None and not (baseline / "ks" / "__main__.py").is_file():
        parser.error(f"--baseline {args.baseline}: no KIWIspray checkout there (ks/__main__.py is missing)")
    sizes = args.machines or [10000, 100000]
    wrk = ensure_tool("wrk")
    print(f"# {command_line()}")
    print(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start, wrk -t2 -c{args.clients} "
          f"-d{args.duration}s, server: {args.workers} workers x {args.threads} threads")
    print(f"# this checkout: {REPO} ({revision(REPO)})"
          + (f"; baseline: {baseline} ({revision(baseline)})" if baseline else ""))
    # label -> (process, port, machines the load picks from, path)
    servers: dict[str, tuple[subprocess.Popen, int, int, str]] = {}
    with tempfile.TemporaryDirectory(prefix="ks-bench-") as tmp:
        workdir = Path(tmp)
        try:
            if not args.no_ceiling:
                ceiling_site = workdir / "ceiling-site"
                ceiling_site.mkdir()
                populate(ceiling_site, sizes[0], facts=STORED_FACTS if args.facts else None)
                port = free_port()
                proc = ceiling(port, args.workers, args.threads, workdir, ceiling_site / "kiwispray.db")
                servers[CEILING] = (proc, port, 10000, "/bootstrap")
                servers[BOOT_CEILING] = (proc, port, sizes[0], "/boot")
            for size in sizes:
                root = workdir / f"site-{size}"
                root.mkdir()
                t0 = time.monotonic()
                populate(root, size, facts=STORED_FACTS if args.facts else None)
                print(f"# registered {size} finished machines in {time.monotonic() - t0:.1f} s", flush=True)
                for plan in query_plans(root / "kiwispray.db"):
                    print(f"#   {plan}")
                port = free_port()
                proc = start_server(root, port, "--workers", str(args.workers), "--threads", str(args.threads))
                servers[f"kiwispray /bootstrap, {size} hosts"] = (proc, port, size, "/bootstrap")
                if size == sizes[0] and not args.no_ceiling:
                    # The same server and connections, a request that touches no database: what the
                    # transport and Flask cost, apart from the boot's own work.
                    servers[TRIVIAL] = (proc, port, 0, "/bootstrap.ipxe")
                if baseline is not None:
                    base_root = workdir / f"baseline-{size}"
                    base_root.mkdir()
                    populate(base_root, size, baseline, facts=STORED_FACTS if args.facts else None)
                    port = free_port()
                    proc = start_server(base_root, port, "--workers", str(args.workers), "--threads",
                                        str(args.threads), env={"PYTHONPATH": str(baseline)})
                    servers[f"baseline /bootstrap, {size} hosts"] = (proc, port, size, "/bootstrap")
            for proc, port, machines, path in servers.values():
                wait_for(port, proc)
                run_wrk(wrk, port, machines, args.clients, 3, workdir, args.facts, path)  # warm up
            # Rounds in turn, so that a slow spell of a shared machine hits every server alike.
            runs: dict[str, list[dict]] = {label: [] for label in servers}
            for _ in range(args.repeat):
                for label, (proc, port, machines, path) in servers.items():
                    runs[label].append(measure(wrk, proc, port, machines, path, args, workdir))
        finally:
            for proc in {proc for proc, _port, _machines, _path in servers.values()}:
                stop(proc)
    results = {label: show(label, label_runs) for label, label_runs in runs.items()}
    kiwispray = {size: results[f"kiwispray /bootstrap, {size} hosts"] for size in sizes}
    ceiling_result = results.get(CEILING)
    if ceiling_result:
        print("# share of the ceiling: "
              + ", ".join(f"{size} hosts {r['rps'] / ceiling_result['rps']:.2f}" for size, r in kiwispray.items())
              + f", /bootstrap.ipxe (no database) {results[TRIVIAL]['rps'] / ceiling_result['rps']:.2f}"
              + f", the boot's writes alone {results[BOOT_CEILING]['rps'] / ceiling_result['rps']:.2f}")
        print(f"# share of the boot's writes alone ({sizes[0]} hosts): "
              f"kiwispray /bootstrap {kiwispray[sizes[0]]['rps'] / results[BOOT_CEILING]['rps']:.2f}")
    cores = os.cpu_count()
    print(f"# CPU-bound bounds on an idle {cores}-core machine (cores / server CPU per request, wrk not counted): "
          + ", ".join(f"{label.split(':')[0]} {cores * 1000 / r['cpu_ms']:.0f} req/s" for label, r in results.items()))
    if baseline is not None:
        print("# this checkout vs the baseline, requests/s and server CPU per request (best rounds): " + ", ".join(
            f"{size} hosts {r['rps'] / results[f'baseline /bootstrap, {size} hosts']['rps']:.2f} and "
            f"{r['cpu_ms'] / results[f'baseline /bootstrap, {size} hosts']['cpu_ms']:.2f}"
            for size, r in kiwispray.items()))
    if len(sizes) > 1:
        first, last = kiwispray[sizes[0]]["rps"], kiwispray[sizes[-1]]["rps"]
        print(f"# {sizes[-1]} hosts vs {sizes[0]} hosts: {last / first:.2f} of the requests/s")


if __name__ == "__main__":
    main()
