#!/usr/bin/env python3
"""Benchmark what events out cost /bootstrap: open event streams, and webhooks that hang or answer.

Against one `kiwispray serve` with N known (finished) machines, wrk boots them
as fast as 16 connections allow, in rounds that take turns:

- throughput with 0 and with S (default 50) open `GET /api/v1/events` streams, each
  of which receives every boot's event (a dashboard watching a boot storm);
- latency with no webhook, a webhook whose receiver accepts and never answers
  (hanging), and one that answers 200 at once (every event delivered).

The streams are read by one thread of this process with a selector, so that
reading them costs the machine little beside the server. Usage:

    python scripts/bench_events.py --duration 10 --repeat 3
"""

import argparse
import os
import selectors
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench_bootstrap import populate, run_wrk

from benchlib import command_line, ensure_tool, free_port, group_cpu_seconds, stop, wait_for
from benchlib import serve as start_server


class Streams:
    """``count`` open event streams, read and dropped by one thread."""

    def __init__(self, port: int, token: str, count: int):
        self.selector = selectors.DefaultSelector()
        self.socks = []
        self.received = 0
        request = (f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                   "Accept: text/event-stream\r\n\r\n").encode()
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(request)
            first = sock.recv(65536)
            if not first.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"the event stream was refused: {first[:200]!r}")
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            self.socks.append(sock)
        self.running = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while self.running:
            for key, _ in self.selector.select(0.2):
                try:
                    self.received += len(key.fileobj.recv(1 << 20))
                except BlockingIOError:
                    pass

    def close(self) -> None:
        self.running = False
        self.thread.join()
        for sock in self.socks:
            sock.close()


class Receiver:
    """A webhook receiver on loopback that hangs (accepts, never answers) or answers 200 at once."""

    def __init__(self, hang: bool):
        self.port = free_port()
        self.deliveries = 0
        if hang:
            self.listener = socket.create_server(("127.0.0.1", self.port), backlog=64)
            self.held: list[socket.socket] = []
            threading.Thread(target=self._hold, daemon=True).start()
            return
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.deliveries += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _hold(self) -> None:
        while True:
            sock, _ = self.listener.accept()
            self.held.append(sock)
            self.deliveries += 0  # never answered


def site_db(root: Path):
    from ks.records.db import Database

    return Database(f"sqlite:///{root / 'kiwispray.db'}")


def add_webhook(root: Path, url: str) -> int:
    from ks.core import config, vault
    from ks.fleet import webhooks

    db = site_db(root)
    try:
        settings = config.resolve({"ROOT": str(root)})
        return db.write(lambda s: webhooks.add(s, url, (), "a-benchmark-secret-0123456789", vault.of(settings))[0].id)
    finally:
        db.dispose()


def remove_webhook(root: Path, webhook_id: int) -> None:
    from ks.fleet import webhooks

    db = site_db(root)
    try:
        db.write(lambda s: webhooks.remove(s, webhook_id))
    finally:
        db.dispose()


def measure(wrk: str, proc: subprocess.Popen, port: int, args, workdir: Path) -> dict:
    cpu = group_cpu_seconds(proc.pid)
    result = run_wrk(wrk, port, args.machines, args.clients, args.duration, workdir)
    result["cpu_ms"] = (group_cpu_seconds(proc.pid) - cpu) * 1000 / result["requests"]
    return result


def show(label: str, runs: list[dict]) -> dict:
    """Print the median run (by req/s) and every run's rate; return the median."""
    ordered = sorted(runs, key=lambda r: r["rps"])
    median = ordered[len(ordered) // 2]
    rates = ", ".join(f"{r['rps']:.0f}" for r in runs)
    print(f"{label:<38} median {median['rps']:>6.0f} req/s (runs: {rates})   "
          f"p50 {median['p50']:6.1f} ms   p90 {median['p90']:6.1f} ms   p99 {median['p99']:6.1f} ms   "
          f"server CPU {median['cpu_ms']:.2f} ms/req   errors {sum(r['non2xx'] + r['socket_errors'] for r in runs)}",
          flush=True)
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=10000, help="known machines [10000]")
    parser.add_argument("--streams", type=int, default=50, help="open event streams [50]")
    parser.add_argument("--clients", type=int, default=16, help="wrk's concurrent connections [16]")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement [10]")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each measures every case once, in turn [3]")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes [2]")
    parser.add_argument("--only", choices=["streams", "webhooks"], help="measure only one of the two")
    args = parser.parse_args()
    wrk = ensure_tool("wrk")
    print(f"# {command_line()}")
    print(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start, wrk -t2 -c{args.clients} "
          f"-d{args.duration}s, server: {args.workers} workers, {args.machines} finished machines")
    with tempfile.TemporaryDirectory(prefix="ks-bench-events-") as tmp:
        workdir = Path(tmp)
        root = workdir / "site"
        root.mkdir()
        populate(root, args.machines)
        from ks.core.roles import Role
        from ks.fleet import tokens

        db = site_db(root)
        token = db.write(lambda s: tokens.create(s, "bench", Role.VIEWER))
        db.dispose()
        port = free_port()
        proc = start_server(root, port, "--workers", str(args.workers), log=workdir / "serve.log")
        try:
            wait_for(port, proc)
            run_wrk(wrk, port, args.machines, args.clients, 3, workdir)  # warm up
            runs: dict[str, list[dict]] = {}
            for _ in range(args.repeat):
                if args.only != "webhooks":
                    runs.setdefault("0 event streams", []).append(measure(wrk, proc, port, args, workdir))
                    streams = Streams(port, token, args.streams)
                    try:
                        time.sleep(1)
                        result = measure(wrk, proc, port, args, workdir)
                        result["stream_bytes"] = streams.received
                    finally:
                        streams.close()
                    runs.setdefault(f"{args.streams} event streams", []).append(result)
                if args.only != "streams":
                    runs.setdefault("no webhook", []).append(measure(wrk, proc, port, args, workdir))
                    for label, hang in (("webhook, receiver hangs", True), ("webhook, receiver answers 200", False)):
                        receiver = Receiver(hang)
                        hook = add_webhook(root, f"http://127.0.0.1:{receiver.port}/hook")
                        time.sleep(1)
                        result = measure(wrk, proc, port, args, workdir)
                        result["deliveries"] = receiver.deliveries
                        remove_webhook(root, hook)
                        runs.setdefault(label, []).append(result)
        finally:
            stop(proc)
    medians = {label: show(label, label_runs) for label, label_runs in runs.items()}
    if "0 event streams" in medians:
        base, loaded = medians["0 event streams"], medians[f"{args.streams} event streams"]
        per_run = [f"{b['rps'] and (1 - s['rps'] / b['rps']) * 100:+.1f}"
                   for b, s in zip(runs["0 event streams"], runs[f"{args.streams} event streams"], strict=True)]
        print(f"# {args.streams} streams cost {(1 - loaded['rps'] / base['rps']) * 100:.1f} % of the throughput "
              f"(medians; per round: {', '.join(per_run)} %); the streams received "
              f"{sum(r['stream_bytes'] for r in runs[f'{args.streams} event streams']) / 1e6:.1f} MB of events")
    if "no webhook" in medians:
        answered = runs["webhook, receiver answers 200"]
        print(f"# the answering receiver got {sum(r['deliveries'] for r in answered)} deliveries in "
              f"{len(answered) * args.duration} s of boots")


if __name__ == "__main__":
    main()
