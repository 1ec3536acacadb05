#!/usr/bin/env python3
"""Benchmark the dashboard's fleet overview: server time per page with 10,000 hosts (target: under 200 ms).

Fills a fresh SQLite site with N hosts (a mix of states, some failed, some
downloading, labels and two MACs each), logs in, and times the overview as
operators use it: the first page (failed first), sorted by hostname, page 100,
filtered by state, by label and by free text, 200 per page. The time is the
application's (Flask's WSGI call through to the rendered page, in this
process): what a request costs the server, without the network. Prints the
median and the 95th percentile of the wall time of each, and the median CPU
time (which depends less on what else runs on the machine). Usage:

    python scripts/bench_ui.py --hosts 10000 --repeat 30
"""

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import REPO

sys.path.insert(0, str(REPO))

PAGES = [
    ("first page (failed first)", "/ui/"),
    ("sorted by hostname", "/ui/?sort=hostname"),
    ("sorted by last boot, descending", "/ui/?sort=last_boot&dir=desc"),
    ("page 100", "/ui/?sort=id&page=100"),
    ("state filter", "/ui/?state=image1"),
    ("label filter", "/ui/?label=rack%3D7"),
    ("free text (part of a name)", "/ui/?q=node12"),
    ("free text (part of a MAC)", "/ui/?q=52-54-02-00-1"),
    ("200 per page", "/ui/?per=200"),
]


def mac(i: int, n: int) -> str:
    return f"52:54:0{2 + n}:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"


def populate(root: Path, count: int) -> None:
    from datetime import timedelta

    from sqlalchemy import insert

    from ks.records import migrate
    from ks.records.db import Database
    from ks.records.models import Host, HostMac, utcnow

    db = Database(f"sqlite:///{root / 'kiwispray.db'}")
    migrate.upgrade(db)
    now = utcnow()
    chains = ["finished", "image1", "new", "wipe,image1", "image1,finished"]
    with db.engine.begin() as conn:
        for start in range(1, count + 1, 5000):
            ids = range(start, min(start + 5000, count + 1))
            conn.execute(insert(Host), [{
                "id": i, "hostname": f"node{i}", "serial": f"S{i:06d}", "state": chains[i % len(chains)],
                "meta": {"rack": str(i % 40)}, "labels": {"rack": str(i % 40), "role": "worker"}, "facts": {},
                "boot_finished": False, "created_at": now, "updated_at": now,
                "last_boot_at": now - timedelta(seconds=i), "last_seen_at": now,
                "failed_at": now if i % 97 == 0 else None,
                "download_sent": (i * 7919) % 1000 if i % 13 == 0 else 0,
                "download_size": 1000 if i % 13 == 0 else None,
            } for i in ids])
            conn.execute(insert(HostMac), [{"mac": mac(i, n), "host_id": i, "position": n}
                                           for i in ids for n in (0, 1)])
    db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000, help="hosts in the database (default 10000)")
    parser.add_argument("--repeat", type=int, default=30, help="requests per page (default 30)")
    args = parser.parse_args()

    from ks.app import create_app
    from ks.fleet import tokens

    with tempfile.TemporaryDirectory(prefix="kiwispray-bench-ui-") as tmp:
        root = Path(tmp)
        (root / "images" / "image1").mkdir(parents=True)
        (root / "images" / "wipe").mkdir(parents=True)
        started = time.perf_counter()
        populate(root, args.hosts)
        print(f"{args.hosts} hosts written in {time.perf_counter() - started:.1f} s (SQLite, {root})")
        app = create_app({"ROOT": str(root)})
        db = app.extensions["kiwispray"].db
        token = db.write(lambda session: tokens.create(session, "bench"))
        client = app.test_client()
        page = client.get("/ui/login").get_data(as_text=True)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        assert client.post("/ui/login", data={"token": token, "csrf": csrf}).status_code == 302
        print(f"{'page':<34} {'median ms':>10} {'p95 ms':>8} {'CPU ms':>7} {'rows':>5}")
        worst = 0.0
        for name, path in PAGES:
            times, cpu = [], []
            for _ in range(args.repeat + 2):
                begin, begin_cpu = time.perf_counter(), time.process_time()
                response = client.get(path)
                times.append((time.perf_counter() - begin) * 1000)
                cpu.append((time.process_time() - begin_cpu) * 1000)
                assert response.status_code == 200, (path, response.status_code)
            times, cpu = sorted(times[2:]), sorted(cpu[2:])  # the first two warm the caches
            rows = response.get_data(as_text=True).count('data-host="')
            p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
            worst = max(worst, p95)
            median, median_cpu = statistics.median(times), statistics.median(cpu)
            print(f"{name:<34} {median:>10.1f} {p95:>8.1f} {median_cpu:>7.1f} {rows:>5}")
        load = os.getloadavg()[0]
        print(f"slowest p95: {worst:.1f} ms (target: under 200 ms per page); load average {load:.1f}")
        db.dispose()


if __name__ == "__main__":
    main()
