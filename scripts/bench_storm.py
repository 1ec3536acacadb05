#!/usr/bin/env python3
"""Boot storm: N machines, new or known, run the whole boot flow, against the floor of the same client.

Each machine, from its own address (127.x.y.z) and with a new connection per
request as iPXE makes them: GET /bootstrap.ipxe, GET /bootstrap (as iPXE's
chain sends it), download the kernel and initrd its script names (4 MiB each by
default), GET the post-install script its kernel line names, GET the /finish
URL that script calls, and GET /bootstrap again (its next boot). --concurrency
machines are under way at any moment.

Three modes, interleaved in each round (each round starts with another one):
the floor (the same client fetching only the same kernels and initrds from
nginx, as fast as loopback and the client go), fresh machines (unknown: the
server registers them, with its default settings, straight into the image
state) and known machines (the same ones, put back into the image state by the
database as an operator would); with --modes ...,scripts also as many requests
as a flow makes to views, all of GET /bootstrap.ipxe (what a request costs with
no database and no file), and with files the floor's requests sent to kiwispray
instead of nginx. Prints each round, then the median of each mode
and its ratio to the floor, machines turned away by the registration bounds,
errors (must be 0), the servers' CPU seconds (from /proc, all processes of their
process groups), and per request kind the median and p99 latency and its share
of the summed latency. With --servers 2 --database postgresql, two servers share
a private PostgreSQL server and the machines are split between them. Usage:

    python scripts/bench_storm.py --clients 500 --rounds 5
    python scripts/bench_storm.py --clients 2000 --servers 2 --database postgresql
"""

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from benchlib import (
    REPO,
    command_line,
    ensure_tool,
    free_port,
    group_cpu_seconds,
    nginx,
    serve,
    stop,
    wait_for,
)

sys.path.insert(0, str(REPO))
MIB = 1024 * 1024
IMAGE = "storm"
TIMEOUT = 600  # seconds for one request; a storm that needs longer has failed anyway
DYNAMIC = 5  # requests of a machine's flow that are not image files


class Fetch(asyncio.BufferedProtocol):
    """One HTTP/1.1 GET on its own connection; the body is counted, and kept only if asked."""

    def __init__(self, request: bytes, keep: bool):
        self.request = request
        self.keep = keep
        self.buffer = memoryview(bytearray(256 * 1024))  # received into, never copied again
        self.head = bytearray()
        self.status = 0
        self.length = -1
        self.received = 0
        self.body = bytearray()
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        transport.write(self.request)

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        data = self.buffer[:nbytes]
        if not self.status:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.head[:end].decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    self.length = int(value)
            data = memoryview(self.head)[end + 4:]
        self.received += len(data)
        if self.keep:
            self.body += data

    def eof_received(self):
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("connection closed"))


async def get(url: str, source: str, keep: bool = True) -> Fetch:
    """GET ``url`` from the address ``source``; raise unless the answer is a complete 200."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    transport, fetch = await loop.create_connection(lambda: Fetch(request, keep), parts.hostname, parts.port,
                                                    local_addr=(source, 0))
    try:
        await asyncio.wait_for(fetch.done, TIMEOUT)
    finally:
        transport.close()
    if fetch.status != 200 or fetch.received != fetch.length:
        raise RuntimeError(f"{url}: status {fetch.status}, {fetch.received} of {fetch.length} bytes")
    return fetch


def mac(i: int) -> str:
    return f"52-54-03-{i >> 16 & 255:02x}-{i >> 8 & 255:02x}-{i & 255:02x}"


def address(i: int) -> str:
    """Machine ``i``'s own address, as its DHCP lease would give it: all of 127/8 is loopback on Linux."""
    return f"127.{10 + i // 62500}.{i // 250 % 250 + 1}.{i % 250 + 1}"


def bootstrap_url(base: str, i: int) -> str:
    """/bootstrap as iPXE's bootstrap.ipxe chains to it (unset NICs are empty)."""
    nics = "&".join(f"net{n}={mac(i) if n == 0 else ''}" for n in range(8))
    return f"{base}/bootstrap?{nics}&dhcp_mac={mac(i)}&serial=STORM{i:06d}&uuid=&buildarch=x86_64&platform=pcbios"


class TurnedAway(Exception):
    """The server asked an unknown machine to come back later (the registration bounds)."""


class Flow:
    """What each request of one mode cost: seconds per request kind, over all machines."""

    def __init__(self):
        self.seconds: dict[str, list[float]] = {}

    async def get(self, kind: str, url: str, source: str, keep: bool = True) -> Fetch:
        t0 = time.monotonic()
        fetch = await get(url, source, keep)
        self.seconds.setdefault(kind, []).append(time.monotonic() - t0)
        return fetch

    async def machine(self, base: str, i: int) -> int:
        """The whole boot of one machine, and its next /bootstrap; returns the bytes it downloaded."""
        source = address(i)
        chain = (await self.get("bootstrap.ipxe", f"{base}/bootstrap.ipxe", source)).body.decode()
        assert f"{base}/bootstrap?" in chain, chain
        script = (await self.get("/bootstrap", bootstrap_url(base, i), source)).body.decode()
        kernel = re.search(r"^kernel --name kernel (\S+) .*razorurl=(\S+)", script, re.M)
        initrd = re.search(r"^initrd --name initrd (\S+)", script, re.M)
        if not kernel or not initrd:
            if "not registered" in script:
                raise TurnedAway(i)
            raise RuntimeError(f"machine {i} got no image script:\n{script}")
        downloaded = 0
        for kind, url in (("kernel", kernel.group(1)), ("initrd", initrd.group(1))):
            downloaded += (await self.get(kind, url, source, keep=False)).received
        post_install = (await self.get("/post-install", kernel.group(2), source)).body.decode()
        finish = re.search(r"'(http[^']+/finish\?[^']+)'", post_install).group(1)
        await self.get("/finish", finish, source)
        await self.get("next /bootstrap", bootstrap_url(base, i), source)
        return downloaded

    async def scripts(self, base: str, i: int) -> int:
        """As many requests as a machine's flow makes to views, all of the cheapest (no database, no file)."""
        for _ in range(DYNAMIC):
            await self.get("bootstrap.ipxe", f"{base}/bootstrap.ipxe", address(i))
        return 0

    async def floor(self, base: str, i: int) -> int:
        """What the same client needs for the same files from nginx: the floor of the flow."""
        downloaded = 0
        for kind, name in (("kernel", "pxeboot.kernel"), ("initrd", "pxeboot.initrd.xz")):
            downloaded += (await self.get(kind, f"{base}/images/{IMAGE}/{name}", address(i), keep=False)).received
        return downloaded


async def storm(bases: list[str], machines: range, concurrency: int, flow) -> tuple[int, int, list[str]]:
    """Run ``flow(base, i)`` for every machine, ``concurrency`` at once; bytes, machines turned away, errors."""
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        async with slots:
            return await flow(bases[i % len(bases)], i)

    results = await asyncio.gather(*(one(i) for i in machines), return_exceptions=True)
    away = sum(isinstance(r, TurnedAway) for r in results)
    errors = [f"machine {i}: {r!r}" for i, r in zip(machines, results, strict=True)
              if isinstance(r, BaseException) and not isinstance(r, TurnedAway)]
    return sum(r for r in results if isinstance(r, int)), away, errors


def make_site(root: Path, file_mib: int) -> None:
    image = root / "images" / IMAGE
    image.mkdir(parents=True)
    block = os.urandom(MIB)
    for name in ("pxeboot.kernel", "pxeboot.initrd.xz"):
        with open(image / name, "wb") as f:
            for _ in range(file_mib):
                f.write(block)
    (image / "Storm.xz").write_bytes(b"disk")
    (image / "Storm.append").write_text("rd.kiwi.install.pxe console=ttyS0\n")


def postgres_cpu(server) -> float:
    """CPU seconds of the PostgreSQL server: the postmaster, its living children and the ones it reaped."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    ticks = 0
    for pid in [postmaster, *map(int, children)]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
        if pid == postmaster:
            ticks += int(fields[13]) + int(fields[14])  # cutime, cstime: backends that have exited
    return ticks / os.sysconf("SC_CLK_TCK")


def _serials(machines: range):
    from ks.records.models import Host

    return Host.serial >= f"STORM{machines.start:06d}", Host.serial < f"STORM{machines.stop:06d}"


def set_image_state(url: str, machines: range) -> None:
    """Put these (finished) machines back into the storm's image state, as an operator would."""
    from sqlalchemy import update

    from ks.records.db import Database
    from ks.records.models import Host

    db = Database(url)
    count = db.write(lambda s: s.execute(update(Host).where(*_serials(machines)).values(state=IMAGE)).rowcount)
    assert count == len(machines), f"{count} hosts known, expected {len(machines)}"
    db.dispose()


def finished_hosts(url: str, machines: range) -> int:
    """How many of these machines the database knows as finished."""
    from sqlalchemy import func, select

    from ks.records.db import Database
    from ks.records.models import Host

    db = Database(url)
    with db.read() as session:
        count = session.scalar(select(func.count()).select_from(Host).where(Host.state == "finished",
                                                                             *_serials(machines)))
    db.dispose()
    return count


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class Run:
    """One timed storm of one mode: its wall time, what went wrong, its costs and its requests."""

    def __init__(self, mode: str):
        self.mode, self.flow = mode, Flow()
        self.wall = self.cpu = self.db_cpu = 0.0
        self.away, self.errors, self.finished, self.downloaded = 0, [], 0, 0


def timed(mode: str, bases: list[str], machines: range, concurrency: int, pgids: list[int],
          postgres=None) -> Run:
    run = Run(mode)
    flow = {"floor": run.flow.floor, "files": run.flow.floor, "scripts": run.flow.scripts}.get(mode, run.flow.machine)
    cpu0 = sum(group_cpu_seconds(g) for g in pgids)
    db_cpu0 = postgres_cpu(postgres) if postgres else 0.0
    t0 = time.monotonic()
    run.downloaded, run.away, run.errors = asyncio.run(storm(bases, machines, concurrency, flow))
    run.wall = time.monotonic() - t0
    run.cpu = sum(group_cpu_seconds(g) for g in pgids) - cpu0
    run.db_cpu = postgres_cpu(postgres) - db_cpu0 if postgres else 0.0
    return run


def report(runs: dict[str, list[Run]], clients: int) -> None:
    floor = statistics.median(r.wall for r in runs["floor"])
    print(f"\nmedian of {len(runs['floor'])} rounds, each figure also as a ratio to the floor:")
    names = {"floor": f"floor: nginx, the same client, {2 * clients} files",
             "fresh": "fresh machines: register + whole flow", "known": "known machines: whole flow",
             "scripts": f"{DYNAMIC} x bootstrap.ipxe a machine", "files": "the floor's files from kiwispray"}
    for mode, done in runs.items():
        wall = statistics.median(r.wall for r in done)
        line = f"  {names[mode]:<42} {wall:6.2f} s {wall / floor:5.2f}x"
        if mode in ("floor", "scripts", "files"):
            line += f"  {'nginx' if mode == 'floor' else 'server'} CPU {statistics.median(r.cpu for r in done):.1f} s"
        elif mode != "floor":
            line += (f"  turned away {sum(r.away for r in done)}, errors {sum(len(r.errors) for r in done)}, "
                     f"finished {min(r.finished for r in done)} of {clients}, "
                     f"server CPU {statistics.median(r.cpu for r in done):.1f} s")
            if any(r.db_cpu for r in done):
                line += f", PostgreSQL CPU {statistics.median(r.db_cpu for r in done):.1f} s"
        print(line)
    print("\nper request kind, all rounds: median and p99 latency (ms), share of the summed latency")
    for mode, done in runs.items():
        seconds: dict[str, list[float]] = {}
        for r in done:
            for kind, values in r.flow.seconds.items():
                seconds.setdefault(kind, []).extend(values)
        total = sum(sum(v) for v in seconds.values()) or 1.0
        print(f"  {mode}: " + "; ".join(
            f"{kind} {1000 * quantile(v, 0.5):.0f}/{1000 * quantile(v, 0.99):.0f} ({100 * sum(v) / total:.0f} %)"
            for kind, v in seconds.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=500, help="simulated machines [500]")
    parser.add_argument("--concurrency", type=int, default=64, help="machines booting at the same moment [64]")
    parser.add_argument("--file-mib", type=int, default=4, help="size of kernel and of initrd in MiB [4]")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of floor, fresh and known, interleaved [3]")
    parser.add_argument("--modes", default="floor,fresh,known",
                        help="which of floor,fresh,known,scripts,files (the floor always) [floor,fresh,known]")
    parser.add_argument("--servers", type=int, default=1, help="kiwispray serve processes [1]")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite", help="[sqlite]")
    parser.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                        help="one more argument for kiwispray serve (repeat it; default settings otherwise)")
    args = parser.parse_args()
    modes = ["floor", *(m for m in args.modes.split(",") if m in ("fresh", "known", "scripts", "files"))]
    if args.servers > 1 and args.database == "sqlite":
        parser.error("several servers need --database postgresql")
    workers = 2
    print(f"# {command_line()}")
    print(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; {args.clients} machines, "
          f"{args.concurrency} at once, each from its own address, a new connection per request; kernel and "
          f"initrd {args.file_mib} MiB each; {args.servers} server(s) on {args.database}, default settings"
          f"{' and ' + ' '.join(args.serve_arg) if args.serve_arg else ''}; nginx {workers} workers", flush=True)
    ensure_tool("nginx")
    runs: dict[str, list[Run]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="ks-bench-storm-") as tmp:
        root = Path(tmp) / "site"
        make_site(root, args.file_mib)
        postgres = None
        env = {}
        if args.database == "postgresql":
            sys.path.insert(0, str(REPO / "tests"))
            from pg import PostgresServer

            postgres = PostgresServer(free_port()).start()
            env["KS_DATABASE_URL"] = url = postgres.new_database()
        else:
            url = f"sqlite:///{root / 'kiwispray.db'}"
        servers = []
        floor_port = free_port()
        front = nginx(root / "images", floor_port, workers, Path(tmp) / "nginx")
        try:
            wait_for(floor_port, front)
            for n in range(args.servers):  # one after the other: each migrates the database on start
                port = free_port()
                # Unknown machines register straight into the image: a fresh machine runs the whole flow.
                proc = serve(root, port, "--initial-chain", IMAGE, *args.serve_arg, env=env,
                             log=Path(tmp) / f"serve-{n}.log")
                wait_for(port, proc)
                servers.append((proc, f"http://127.0.0.1:{port}"))
            bases = [base for _, base in servers]
            pgids = [proc.pid for proc, _ in servers]
            for number in range(args.rounds):
                machines = range(number * args.clients, (number + 1) * args.clients)
                if "known" in modes and "fresh" not in modes:  # the known machines must be registered before
                    asyncio.run(storm(bases, machines, args.concurrency, Flow().machine))
                    set_image_state(url, machines)
                # Interleaved: each round starts with another mode, and known machines come after fresh ones.
                order = modes[number % len(modes):] + modes[:number % len(modes)]
                if "fresh" in order and "known" in order and order.index("known") < order.index("fresh"):
                    order.remove("known")
                    order.append("known")
                results = []
                for mode in order:
                    if mode == "known" and "fresh" in modes:  # the machines the fresh storm just finished
                        set_image_state(url, machines)
                    run = timed(mode, [f"http://127.0.0.1:{floor_port}"] if mode == "floor" else bases, machines,
                                args.concurrency, [front.pid] if mode == "floor" else pgids, postgres)
                    if mode in ("fresh", "known"):
                        run.finished = finished_hosts(url, machines)
                    runs[mode].append(run)
                    outcome = f" turned away {run.away} errors {len(run.errors)}" if mode in ("fresh", "known") else ""
                    results.append(f"{mode} {run.wall:.2f} s (CPU {run.cpu:.1f} s){outcome}")
                    for line in run.errors[:5]:
                        print(f"# error: {line}")
                print(f"round {number + 1}: " + ", ".join(results), flush=True)
        finally:
            for proc, _ in servers:
                stop(proc)
            stop(front)
            if postgres:
                postgres.stop()
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")
    report(runs, args.clients)


if __name__ == "__main__":
    main()
