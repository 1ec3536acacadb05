#!/usr/bin/env python3
"""Benchmark what enrollment rules add to a first boot: registrations with no rules, and with N rules
(the machine matching the last one, so every rule is tried, its seq counted and its hostname rendered;
or none of them), each in its own transaction on a SQLite database, as /bootstrap runs them.

    python scripts/bench_rules.py --rules 50 --machines 3000 --repeat 3

Prints the CPU time of this process per registration of each case (the best of the repeats; CPU
time, not wall-clock time, so that other work on the machine counts less; SQLite in WAL mode with
synchronous=NORMAL does not wait for the disk at a commit) and the difference to the case without
rules, and the CPU time to match one machine against the rules alone.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ks.boot import booting
from ks.core import rules, states
from ks.core.identity import Identity  # noqa: E402
from ks.records import migrate
from ks.records.db import Database  # noqa: E402

FACTS = {"manufacturer": "Dell Inc.", "product": "PowerEdge R640", "buildarch": "x86_64", "platform": "efi"}


def rules_text(count: int, last_matches: bool) -> str:
    """``count`` rules, each on a MAC prefix and a product; only the last may match the benchmark's machines."""
    blocks = []
    for i in range(count):
        prefix = "52:54:0a:*" if last_matches and i == count - 1 else f"52:54:{i + 16:02x}:*"
        blocks.append(f'[[rule]]\nname = "rack{i}"\nmatch = {{ mac = "{prefix}", product = "PowerEdge*" }}\n'
                      f'chain = "wipe,image1"\nhostname = "rack{i}-{{{{ seq }}}}"\nlabels = {{ rack = "{i}" }}\n')
    return "\n".join(blocks)


def identity(i: int) -> Identity:
    return Identity(macs=(f"52:54:0a:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",), serial=f"S{i}",
                    facts=FACTS)


def register_all(ruleset: rules.RuleSet | None, machines: int, workdir: Path) -> float:
    """Seconds per registration of ``machines`` new machines, one write_direct each."""
    db = Database(f"sqlite:///{workdir / 'bench.db'}")
    migrate.upgrade(db)
    initial = states.parse_chain("new")
    given = (lambda: ruleset) if ruleset is not None else None
    started = time.process_time()
    for i in range(machines):
        ident = identity(i)
        db.write_direct(lambda tx, ident=ident: booting.boot(tx, ident, initial, rules=given))
    elapsed = time.process_time() - started
    db.dispose()
    for leftover in workdir.glob("bench.db*"):
        leftover.unlink()
    return elapsed / machines


def match_time(ruleset: rules.RuleSet, rounds: int) -> float:
    machine = booting.machine_of(identity(1))
    started = time.process_time()
    for _ in range(rounds):
        ruleset.first_match(machine)
    return (time.process_time() - started) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=50, help="rules in the file [50]")
    parser.add_argument("--machines", type=int, default=3000, help="registrations per measurement [3000]")
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each case; the best counts [3]")
    args = parser.parse_args()
    matching = rules.parse(rules_text(args.rules, last_matches=True))
    missing = rules.parse(rules_text(args.rules, last_matches=False))
    assert matching.first_match(booting.machine_of(identity(1))).name == f"rack{args.rules - 1}"
    assert missing.first_match(booting.machine_of(identity(1))) is None
    cases = [("no rules", None), (f"{args.rules} rules, the last matches", matching),
             (f"{args.rules} rules, none matches", missing)]
    print(f"# python scripts/bench_rules.py --rules {args.rules} --machines {args.machines} --repeat {args.repeat}")
    print("# each registration: one SQLite transaction (write_direct) of booting.boot for an unknown machine")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for label, ruleset in cases:
                results.setdefault(label, []).append(register_all(ruleset, args.machines, Path(tmp)))
    base = min(results["no rules"])
    for label, _ in cases:
        best, median = min(results[label]), statistics.median(results[label])
        extra = f"   +{(best - base) * 1e3:.3f} ms" if label != "no rules" else ""
        print(f"{label:<32} {best * 1e3:7.3f} ms CPU per registration (median {median * 1e3:.3f}){extra}")
    for label, ruleset in cases[1:]:
        print(f"matching alone, {label:<24} {match_time(ruleset, 20000) * 1e6:7.1f} us CPU per machine")


if __name__ == "__main__":
    main()
