#!/usr/bin/env python3
"""Benchmark image downloads: N parallel curl downloads of one large file from `kiwispray serve` and from nginx.

Both serve the same file (page-cached first) in the same run; rounds alternate
between them. Prints wall time, aggregate MB/s and the servers' CPU seconds per
round, then the best and the spread, and kiwispray's best as a share of nginx's.
Usage:

    python scripts/bench_images.py --size-mib 1024 --parallel 16 --rounds 3
"""

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchlib import command_line, ensure_tool, free_port, group_cpu_seconds, nginx, serve, stop, wait_for

MIB = 1024 * 1024


def make_file(path: Path, size_mib: int) -> None:
    """A file of random-looking bytes (one random MiB repeated: content does not matter to sendfile)."""
    block = os.urandom(MIB)
    with open(path, "wb") as f:
        for _ in range(size_mib):
            f.write(block)
    with open(path, "rb") as f:  # into the page cache, so neither server waits for the disk
        while f.read(16 * MIB):
            pass


def download_round(curl: str, url: str, parallel: int, size: int, pgid: int) -> dict:
    """Start ``parallel`` curls at once; wall time until the last one finished, and the server's CPU."""
    cmd = [curl, "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url]
    cpu0 = group_cpu_seconds(pgid)
    t0 = time.monotonic()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(parallel)]
    outputs = [p.communicate()[0] for p in procs]
    wall = time.monotonic() - t0
    cpu = group_cpu_seconds(pgid) - cpu0
    errors = sum(out.split() != ["200", str(size)] for out in outputs)
    return {"wall": wall, "mbps": parallel * size / MIB / wall, "cpu": cpu, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="file size in MiB [1024]")
    parser.add_argument("--parallel", type=int, default=16, help="parallel downloads [16]")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server [3]")
    parser.add_argument("--workers", type=int, default=2, help="kiwispray workers and nginx worker processes [2]")
    parser.add_argument("--threads", type=int, default=32, help="kiwispray threads per worker [32]")
    args = parser.parse_args()
    curl = ensure_tool("curl")
    ensure_tool("nginx")
    size = args.size_mib * MIB
    print(f"# {command_line()}")
    print(f"# {os.cpu_count()} cores; {args.parallel} x curl of a {args.size_mib} MiB file; "
          f"kiwispray {args.workers} workers x {args.threads} threads, nginx {args.workers} workers", flush=True)
    with tempfile.TemporaryDirectory(prefix="ks-bench-images-") as tmp:
        root = Path(tmp) / "site"
        (root / "images" / "bench").mkdir(parents=True)
        make_file(root / "images" / "bench" / "disk.raw", args.size_mib)
        ks_port, nginx_port = free_port(), free_port()
        servers = {
            "kiwispray": serve(root, ks_port, "--workers", str(args.workers), "--threads", str(args.threads)),
            "nginx": nginx(root / "images", nginx_port, args.workers, Path(tmp) / "nginx"),
        }
        ports = {"kiwispray": ks_port, "nginx": nginx_port}
        results = {name: [] for name in servers}
        try:
            for name, proc in servers.items():
                wait_for(ports[name], proc)
            for i in range(args.rounds):
                for name in (servers if i % 2 == 0 else reversed(servers)):
                    url = f"http://127.0.0.1:{ports[name]}/images/bench/disk.raw"
                    r = download_round(curl, url, args.parallel, size, servers[name].pid)
                    results[name].append(r)
                    print(f"round {i + 1} {name:<10} {r['wall']:6.2f} s  {r['mbps']:7.0f} MiB/s  "
                          f"server CPU {r['cpu']:5.1f} s  errors {r['errors']}", flush=True)
        finally:
            for proc in servers.values():
                stop(proc)
    print()
    for name, rounds in results.items():
        speeds = [r["mbps"] for r in rounds]
        print(f"{name:<10} best {max(speeds):7.0f} MiB/s  median {statistics.median(speeds):7.0f}  "
              f"range {min(speeds):.0f}-{max(speeds):.0f}  server CPU per round "
              f"{statistics.median(r['cpu'] for r in rounds):.1f} s  errors {sum(r['errors'] for r in rounds)}")
    best = {name: max(r["mbps"] for r in rounds) for name, rounds in results.items()}
    median = {name: statistics.median(r["mbps"] for r in rounds) for name, rounds in results.items()}
    print(f"kiwispray / nginx: best {best['kiwispray'] / best['nginx']:.2f}, "
          f"median {median['kiwispray'] / median['nginx']:.2f}")


if __name__ == "__main__":
    main()
