#!/usr/bin/env python3
"""Benchmark what open dashboards cost the boot path: /bootstrap throughput with and without N live event streams.

10,000 known machines boot as fast as wrk sends them (16 connections, the
load of scripts/bench_bootstrap.py); every boot writes a history line, which
every open dashboard's stream (/ui/events, logged in as an operator would be)
receives. Rounds alternate "no dashboards" and "N dashboards open" on one
server, so that a slow spell of a shared machine hits both alike; prints
requests/s of each round, the best and median of each, their ratio (target:
50 dashboards cost at most 5 %), and the server's CPU time per boot (which
includes sending every boot's event to every dashboard). Usage:

    python scripts/bench_ui_streams.py --streams 50 --duration 10 --repeat 3
"""

import argparse
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from bench_bootstrap import populate, run_wrk

from benchlib import REPO, command_line, ensure_tool, free_port, group_cpu_seconds, stop, wait_for
from benchlib import serve as start_server

sys.path.insert(0, str(REPO))


class Dashboards:
    """``count`` open /ui/events streams of one session, each read by a thread until ``close``."""

    def __init__(self, url: str, cookie: str, count: int):
        self.stop = threading.Event()
        self.received = [0] * count
        self.threads = [threading.Thread(target=self._read, args=(url, cookie, i), daemon=True) for i in range(count)]
        for thread in self.threads:
            thread.start()
        deadline = time.monotonic() + 30
        while min(self.received) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        if min(self.received) == 0:
            raise SystemExit("the event streams did not open")

    def _read(self, url: str, cookie: str, i: int) -> None:
        with requests.get(url + "/ui/events", cookies={"kiwispray_session": cookie}, stream=True,
                          timeout=(5, 30)) as response:
            response.raise_for_status()
            for chunk in response.iter_content(chunk_size=None):
                self.received[i] += len(chunk)
                if self.stop.is_set():
                    return

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)


def log_in(url: str, token: str) -> str:
    session = requests.Session()
    page = session.get(url + "/ui/login", timeout=10).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    session.post(url + "/ui/login", data={"token": token, "csrf": csrf}, timeout=10).raise_for_status()
    return session.cookies["kiwispray_session"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=50, help="open dashboards [50]")
    parser.add_argument("--machines", type=int, default=10_000, help="known machines [10000]")
    parser.add_argument("--clients", type=int, default=16, help="wrk's concurrent connections [16]")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement [10]")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of both measurements [3]")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes [2]")
    parser.add_argument("--threads", type=int, default=64,
                        help="threads per worker for requests; open streams have threads of their own "
                             "(KS_EVENT_STREAMS per worker) [64]")
    args = parser.parse_args()
    wrk = ensure_tool("wrk")
    print(f"# {command_line()}")
    print(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")

    from ks.fleet import tokens
    from ks.records.db import Database

    with tempfile.TemporaryDirectory(prefix="ks-bench-ui-") as tmp:
        workdir = Path(tmp)
        root = workdir / "site"
        root.mkdir()
        populate(root, args.machines)
        db = Database(f"sqlite:///{root / 'kiwispray.db'}")
        token = db.write(lambda session: tokens.create(session, "bench"))
        db.dispose()
        port = free_port()
        proc = start_server(root, port, "--workers", str(args.workers), "--threads", str(args.threads))
        url = f"http://127.0.0.1:{port}"
        runs: dict[str, list[float]] = {"no dashboards": [], f"{args.streams} dashboards": []}
        cpu: dict[str, list[float]] = {label: [] for label in runs}

        def measure(label: str) -> dict:
            before = group_cpu_seconds(proc.pid)
            result = run_wrk(wrk, port, args.machines, args.clients, args.duration, workdir)
            runs[label].append(result["rps"])
            cpu[label].append((group_cpu_seconds(proc.pid) - before) * 1000 / result["requests"])
            return result

        try:
            wait_for(port, proc)
            cookie = log_in(url, token)
            run_wrk(wrk, port, args.machines, args.clients, 3, workdir)  # warm up
            for _ in range(args.repeat):
                measure("no dashboards")
                open_ones = Dashboards(url, cookie, args.streams)
                try:
                    result = measure(f"{args.streams} dashboards")
                finally:
                    open_ones.close()
                per_stream = statistics.median(open_ones.received) / 1e6
                print(f"# round: {runs['no dashboards'][-1]:.0f} req/s without, {result['rps']:.0f} with "
                      f"({per_stream:.1f} MB of events to each dashboard)", flush=True)
        finally:
            stop(proc)
    for label, rates in runs.items():
        print(f"{label:<16} best {max(rates):6.0f} req/s   median {statistics.median(rates):6.0f}   "
              f"server CPU {statistics.median(cpu[label]):.2f} ms/boot (median)   "
              f"runs: {', '.join(f'{r:.0f}' for r in rates)}")
    without, with_ = statistics.median(runs["no dashboards"]), statistics.median(runs[f"{args.streams} dashboards"])
    print(f"# {args.streams} open dashboards: {with_ / without:.2f} of the /bootstrap throughput (medians); "
          f"target at least 0.95")


if __name__ == "__main__":
    main()
