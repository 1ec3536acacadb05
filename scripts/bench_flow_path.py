#!/usr/bin/env python3
"""Benchmark a machine's whole flow in process, per request kind: no server, no network, no files.

N machines, first unknown (registered straight into the image state), then the
same ones known again: GET /bootstrap.ipxe, /bootstrap, /post-install, /finish
and the next /bootstrap through Flask's test client, each request's CPU time
(``time.process_time``) added to its kind. With ``--baseline DIR`` another
checkout (e.g. a worktree of an older commit) is measured the same way, each
checkout in its own process, in interleaved rounds; the medians are printed.
What a request costs in the application itself: ``bench_storm.py`` shows what
the server, the network and the files add. Usage:

    python scripts/bench_flow_path.py --machines 300 --rounds 5 --baseline /tmp/ks-before
"""

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Run with PYTHONPATH naming the checkout measured; prints one line per mode: "<mode>\t<kind>=<ms>;...".
CHILD = """
import atexit, re, shutil, sys, tempfile, time
from pathlib import Path
from ks.core import config
from ks.records import migrate
from ks.app import create_app
sys.path.insert(0, sys.argv[2])
import bench_storm

count = int(sys.argv[1])
root = Path(tempfile.mkdtemp(prefix="ks-bench-flow-")) / "site"
atexit.register(shutil.rmtree, root.parent, True)
bench_storm.make_site(root, 1)
settings = {"ROOT": str(root), "INITIAL_CHAIN": bench_storm.IMAGE, "REGISTRATIONS_PER_MINUTE": 0}
if "REGISTRATIONS_PER_SOURCE" in {d.name for d in config.declarations()}:  # all machines have one address here
    settings["REGISTRATIONS_PER_SOURCE"] = 0
app = create_app(settings)
migrate.upgrade(app.extensions["kiwispray"].db)
client = app.test_client()
cpu = {}

def get(kind, url):
    start = time.process_time()
    answer = client.get(re.sub(r"^http://localhost(:80)?", "", url))
    cpu[kind] = cpu.get(kind, 0.0) + time.process_time() - start
    assert answer.status_code == 200, (url, answer.status_code)
    return answer.text

def flow(i):
    get("bootstrap.ipxe", "/bootstrap.ipxe")
    script = get("/bootstrap", bench_storm.bootstrap_url("", i))
    post_install = get("/post-install", re.search(r"^kernel .*razorurl=(\\S+)", script, re.M).group(1))
    get("/finish", re.search(r"'(http[^']+/finish\\?[^']+)'", post_install).group(1))
    get("next /bootstrap", bench_storm.bootstrap_url("", i))

for i in range(count, count + 20):  # warm up: templates compiled, statements prepared
    flow(i)
for mode in ("fresh", "known"):
    if mode == "known":
        bench_storm.set_image_state(f"sqlite:///{root}/kiwispray.db", range(count))
    cpu.clear()
    for i in range(count):
        flow(i)
    print(mode, ";".join(f"{kind}={1000 * seconds / count:.3f}" for kind, seconds in cpu.items()), sep="\t")
"""


def measure(checkout: Path, machines: int) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    # In the checkout: ``python -c`` puts the working directory first on the path.
    child = subprocess.run([sys.executable, "-c", CHILD, str(machines), str(REPO / "scripts")], env=env,
                           cwd=checkout, capture_output=True, text=True)
    if child.returncode:
        raise SystemExit(f"{checkout}: {child.stderr}")
    out = child.stdout
    result = {}
    for line in out.splitlines():
        mode, pairs = line.split("\t")
        result[mode] = {kind: float(ms) for kind, ms in (pair.rsplit("=", 1) for pair in pairs.split(";"))}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=300, help="machines per round [300]")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds [5]")
    parser.add_argument("--baseline", type=Path, help="another checkout, measured in the same rounds")
    args = parser.parse_args()
    checkouts = {"this": REPO, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    print(f"# python scripts/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}")
    print(f"# load average {os.getloadavg()[0]:.1f} at start; CPU ms per request, median of {args.rounds} rounds")
    runs: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in checkouts}
    for _ in range(args.rounds):
        for name, checkout in checkouts.items():
            runs[name].append(measure(checkout, args.machines))
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")
    for name, done in runs.items():
        for mode in done[0]:
            kinds = {kind: statistics.median(r[mode][kind] for r in done) for kind in done[0][mode]}
            print(f"{name:<8} {mode:<5} " + "  ".join(f"{kind} {ms:.2f}" for kind, ms in kinds.items())
                  + f"  | a machine {sum(kinds.values()):.2f}")


if __name__ == "__main__":
    main()
