#!/usr/bin/env python3
"""Benchmark the /bootstrap code path in process: no server, no network, no other process's noise.

Registers N finished machines in a SQLite database, builds the application
(``create_app``) and times requests for known machines through Flask's test
client, in rounds. With ``--baseline DIR`` another checkout (e.g. a worktree
of an older commit) is measured the same way in the same rounds, interleaved,
each checkout in its own process. Prints the CPU time (and the wall time) per
request of each round and the medians: on a shared machine the median of
interleaved rounds is what compares. ``--profile`` prints cProfile's view of
the same requests instead (function call counts do not depend on the load).
Usage:

    python scripts/bench_boot_path.py --requests 2000 --rounds 9 --baseline /tmp/ks-before
    python scripts/bench_boot_path.py --profile 3000
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Run with PYTHONPATH naming the checkout measured and KS_ROOT its site root; commands on stdin, one a line:
# "N" times N requests and answers "<cpu seconds> <wall seconds>"; "profile N" prints cProfile's statistics.
CHILD = """
import cProfile, io, pstats, sys, time
from sqlalchemy import insert
from ks.records import migrate
from ks.app import create_app
from ks.records.db import Database
from ks.records.models import Host, HostMac, utcnow

root, count = sys.argv[1], int(sys.argv[2])
mac = lambda i: f"52-54-02-{i >> 16 & 255:02x}-{i >> 8 & 255:02x}-{i & 255:02x}"
db = Database(f"sqlite:///{root}/kiwispray.db")
migrate.upgrade(db)
now = utcnow()
with db.engine.begin() as conn:
    conn.execute(insert(Host), [
        {"id": i, "hostname": f"node{i}", "state": "finished", "meta": {}, "boot_finished": False,
         "created_at": now, "updated_at": now} for i in range(1, count + 1)])
    conn.execute(insert(HostMac), [{"mac": mac(i).replace("-", ":"), "host_id": i, "position": 0}
                                   for i in range(1, count + 1)])
db.dispose()
client = create_app().test_client()
urls = [f"/bootstrap?net0={mac(i)}" for i in range(1, count + 1)]
done = 0

def run(n):
    global done
    for k in range(done, done + n):
        answer = client.get(urls[k % count])
        assert answer.status_code == 200, answer.text
    done += n

run(200)  # warm up: templates compiled, statements compiled, caches filled
print("ready", flush=True)
for line in sys.stdin:
    words = line.split()
    if words[0] == "profile":
        profile = cProfile.Profile()
        profile.runcall(run, int(words[1]))
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(words[3]).print_stats(*words[4:], int(words[2]))
        print(out.getvalue().replace("\\n", "\\n# "), flush=True)
        print("end", flush=True)
        continue
    cpu, wall = time.process_time(), time.perf_counter()
    run(int(words[0]))
    print(time.process_time() - cpu, time.perf_counter() - wall, flush=True)
"""


def revision(checkout: Path) -> str:
    done = subprocess.run(["git", "-C", str(checkout), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    return done.stdout.strip()[:72] or "not a git checkout"


def start(checkout: Path, root: Path, machines: int) -> subprocess.Popen:
    """A child process measuring ``checkout`` on a new site at ``root``, ready for commands."""
    root.mkdir()
    env = {**os.environ, "PYTHONPATH": str(checkout), "KS_ROOT": str(root)}
    env.pop("KS_DATABASE_URL", None)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(machines)], env=env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=root)
    assert child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        raise SystemExit(f"the benchmark of {checkout} did not start (exit code {child.wait()})")
    return child


def ask(child: subprocess.Popen, command: str) -> str:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(command + "\n")
    child.stdin.flush()
    return child.stdout.readline()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=1000, help="known (finished) machines [1000]")
    parser.add_argument("--requests", type=int, default=2000, help="requests per round [2000]")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; each measures every checkout once [7]")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="also measure the checkout DIR (e.g. a worktree of an older commit), interleaved")
    parser.add_argument("--profile", type=int, metavar="N",
                        help="instead: cProfile N requests of each checkout, print the top functions")
    parser.add_argument("--top", type=int, default=30, help="functions shown with --profile [30]")
    parser.add_argument("--sort", default="tottime", help="with --profile: pstats' order, e.g. cumulative [tottime]")
    parser.add_argument("--match", action="append", default=[],
                        help="with --profile: only functions whose file:line(name) matches this (repeatable)")
    args = parser.parse_args()
    checkouts = {"this checkout": REPO}
    if args.baseline is not None:
        baseline = args.baseline.resolve()
        if not (baseline / "ks" / "__main__.py").is_file():
            parser.error(f"--baseline {args.baseline}: no KIWIspray checkout there (ks/__main__.py is missing)")
        checkouts["baseline"] = baseline
    print(f"# {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
    print(f"# load average {os.getloadavg()[0]:.1f} at start; {args.machines} known machines, SQLite, "
          "Flask test client")
    for label, checkout in checkouts.items():
        print(f"# {label}: {checkout} ({revision(checkout)})")
    with tempfile.TemporaryDirectory(prefix="ks-bench-path-") as tmp:
        children = {label: start(checkout, Path(tmp) / label.replace(" ", "-"), args.machines)
                    for label, checkout in checkouts.items()}
        try:
            if args.profile:
                for label, child in children.items():
                    print(f"# --- {label}: cProfile of {args.profile} requests")
                    ask(child, f"profile {args.profile} {args.top} {args.sort} {' '.join(args.match)}")
                    assert child.stdout is not None
                    for line in child.stdout:
                        if line.strip() == "end":
                            break
                        print(line, end="")
                return
            cpu: dict[str, list[float]] = {label: [] for label in children}
            wall: dict[str, list[float]] = {label: [] for label in children}
            for number in range(args.rounds):
                # Alternate who goes first, so that neither always follows the other.
                order = list(children.items())[:: 1 if number % 2 == 0 else -1]
                for label, child in order:
                    used, took = map(float, ask(child, str(args.requests)).split())
                    cpu[label].append(used * 1e6 / args.requests)
                    wall[label].append(took * 1e6 / args.requests)
                print(f"round {number + 1}: " + ", ".join(
                    f"{label} {cpu[label][-1]:.0f} µs CPU ({wall[label][-1]:.0f} wall)" for label in children),
                    flush=True)
        finally:
            for child in children.values():
                assert child.stdin is not None
                child.stdin.close()
                child.wait()
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")
    for label in children:
        print(f"{label}: median {statistics.median(cpu[label]):.0f} µs CPU per request "
              f"(min {min(cpu[label]):.0f}), median wall {statistics.median(wall[label]):.0f} µs")
    if "baseline" in children:
        ratio = statistics.median(cpu["this checkout"]) / statistics.median(cpu["baseline"])
        print(f"this checkout / baseline, median CPU per request: {ratio:.3f}")


if __name__ == "__main__":
    main()
