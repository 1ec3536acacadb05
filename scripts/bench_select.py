#!/usr/bin/env python3
"""Benchmark selectors: N hosts with labels and facts in SQLite, typical selectors end to end.

Each selector is timed three ways, best of --repeat runs, in one process:
``ids`` (parse, compile to SQL, the matching ids: what a bulk change looks up),
``page`` (the count and the first 1,000 matching hosts as records: ``GET /hosts?selector=``),
``list`` (every matching host as a record: ``edit-host -l --select``) and, for the
bulk figures, one ``--dry-run`` and one real change of --change hosts (1,000 and
5,000, the most one change takes) through ``ks.fleet.operations.change_selected`` (what
``edit-host --select … -s image1`` does). Usage:

    python scripts/bench_select.py --hosts 100000 --repeat 3
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchlib import REPO, command_line

sys.path.insert(0, str(REPO))

RACKS = 50
PRODUCTS = ("PowerEdge R640", "PowerEdge R650", "ProLiant DL360", "ThinkSystem SR630")
SELECTORS = [
    "rack=4",                              # one label, 1 in 50
    "rack=4,role!=db",                     # two labels, one negated
    "product=PowerEdge R640",              # a fact, 1 in 4
    "product=PowerEdge*,rack=1?",          # a fact glob and a label glob
    "state=new",                           # the current state
    "mac=52:54:02:00:01:*",                # any MAC, a glob (256 hosts)
    "mac=52-54-02-00-12-34",               # one MAC, exact (the index)
    "serial=SER00042",                     # one serial, exact (the index)
    "hostname=node99999",                  # a name, exact (no index: a scan)
    "label.site=nowhere",                  # matches nothing
]


def mac(i: int) -> str:
    return f"52:54:02:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"


def populate(url: str, count: int) -> None:
    """``count`` hosts with a rack, a role on every third, SMBIOS facts, one MAC and a serial each."""
    from sqlalchemy import insert

    from ks.records import migrate
    from ks.records.db import Database
    from ks.records.models import Host, HostMac, utcnow

    db = Database(url)
    migrate.upgrade(db)
    now = utcnow()
    with db.engine.begin() as conn:
        for start in range(1, count + 1, 5000):
            ids = range(start, min(start + 5000, count + 1))
            conn.execute(insert(Host), [
                {"id": i, "hostname": f"node{i}", "state": "new" if i % 10 == 0 else "finished", "meta": {},
                 "serial": f"SER{i:05d}", "boot_finished": False, "created_at": now, "updated_at": now,
                 "labels": {"rack": str(i % RACKS), **({"role": "db"} if i % 3 == 0 else {})},
                 "facts": {"manufacturer": "Dell Inc.", "product": PRODUCTS[i % len(PRODUCTS)],
                           "buildarch": "x86_64", "platform": "efi"}} for i in ids])
            conn.execute(insert(HostMac), [{"mac": mac(i), "host_id": i, "position": 0} for i in ids])
    db.dispose()


def best(repeat: int, work) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=100_000, help="hosts in the database")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the best is printed")
    parser.add_argument("--change", type=int, action="append",
                        help="hosts a timed bulk change touches (repeatable; default 1000 and 5000)")
    args = parser.parse_args()

    from ks.core import selectors
    from ks.fleet import deploys, machines, operations, select_sql
    from ks.fleet.change import HostChange
    from ks.records.db import Database

    print(command_line())
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'kiwispray.db'}"
        started = time.perf_counter()
        populate(url, args.hosts)
        print(f"{args.hosts} hosts created in {time.perf_counter() - started:.1f} s")
        db = Database(url)
        print(f"{'selector':<32} {'matches':>8} {'ids ms':>8} {'page ms':>8} {'list ms':>8}")
        for text in SELECTORS:
            def ids(text=text):
                with db.read() as session:
                    return select_sql.selected_ids(session, selectors.parse(text))

            def listing(text=text):
                with db.read() as session:
                    return machines.list_hosts(session, selector=selectors.parse(text))

            def page(text=text):
                with db.read() as session:
                    selector = selectors.parse(text)
                    return (machines.count_hosts(session, selector=selector),
                            machines.list_hosts(session, selector=selector, limit=1000))

            ids_time, found = best(args.repeat, ids)
            page_time, _ = best(args.repeat, page)
            list_time, _ = best(args.repeat, listing)
            print(f"{text:<32} {len(found):>8} {ids_time * 1000:>8.1f} {page_time * 1000:>8.1f} "
                  f"{list_time * 1000:>8.1f}")

        # Bulk changes: hosts 1..N of the fleet by a label given to them first (not timed).
        from sqlalchemy import text as sql
        for count in args.change or [1000, deploys.MAX_SELECTED_HOSTS]:
            with db.engine.begin() as conn:
                conn.execute(sql("UPDATE hosts SET labels = json_set(labels, '$.batch', :b) WHERE id <= :n"),
                             {"n": count, "b": f"b{count}"})
            selector = selectors.parse(f"batch=b{count}")
            change = HostChange.parse(set(), state="wipe,image1", labels={"batch": "done"}, force=True)
            def dry_run(selector=selector, change=change):
                return operations.change_selected(db, selector, change, "bench", dry_run=True)

            dry, hosts = best(args.repeat, dry_run)
            print(f"dry run of a change of {len(hosts)} hosts: {dry * 1000:.0f} ms")
            started = time.perf_counter()
            hosts = operations.change_selected(db, selector, change, "bench")
            print(f"change of {len(hosts)} hosts (state, label, two history lines each, one transaction): "
                  f"{(time.perf_counter() - started) * 1000:.0f} ms")
        db.dispose()


if __name__ == "__main__":
    main()
