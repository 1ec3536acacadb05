#!/usr/bin/env python3
"""Boot storm: N simulated iPXE machines run the whole boot flow at once.

Each machine: GET /bootstrap.ipxe, GET /bootstrap (as iPXE's chain sends it),
download the kernel and initrd its script names (10 MiB each by default),
GET the post-install script its kernel line names, then GET the /finish URL
that script calls. The machines are registered by a first /bootstrap and put
into the image state in the database before the clock starts.

Prints the time until every machine finished, errors (must be 0), the
servers' CPU seconds (from /proc, all processes of their process groups) and
their peak resident memory (summed, sampled every 0.2 s). With --servers 2
--database postgresql, two servers share a private PostgreSQL server and the
machines are split between them. Usage:

    python scripts/bench_storm.py --clients 1000
    python scripts/bench_storm.py --clients 1000 --servers 2 --database postgresql
"""

import argparse
import asyncio
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from benchlib import (
    REPO,
    command_line,
    free_port,
    group_cpu_seconds,
    group_pids,
    group_rss_bytes,
    serve,
    stop,
    wait_for,
)

sys.path.insert(0, str(REPO))
MIB = 1024 * 1024
IMAGE = "storm"
TIMEOUT = 600  # seconds for one request; a storm that needs longer has failed anyway


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


async def get(url: str, keep: bool = True) -> Fetch:
    """GET ``url``; raise unless the answer is a complete 200."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    transport, fetch = await loop.create_connection(lambda: Fetch(request, keep), parts.hostname, parts.port)
    try:
        await asyncio.wait_for(fetch.done, TIMEOUT)
    finally:
        transport.close()
    if fetch.status != 200 or fetch.received != fetch.length:
        raise RuntimeError(f"{url}: status {fetch.status}, {fetch.received} of {fetch.length} bytes")
    return fetch


def mac(i: int) -> str:
    return f"52-54-03-{i >> 16 & 255:02x}-{i >> 8 & 255:02x}-{i & 255:02x}"


def bootstrap_url(base: str, i: int) -> str:
    """/bootstrap as iPXE's bootstrap.ipxe chains to it (unset NICs are empty)."""
    nics = "&".join(f"net{n}={mac(i) if n == 0 else ''}" for n in range(8))
    return f"{base}/bootstrap?{nics}&dhcp_mac={mac(i)}&serial=STORM{i:06d}&uuid=&buildarch=x86_64&platform=pcbios"


async def machine(base: str, i: int) -> int:
    """The whole boot of one machine; returns the bytes it downloaded."""
    chain = (await get(f"{base}/bootstrap.ipxe")).body.decode()
    assert f"{base}/bootstrap?" in chain, chain
    script = (await get(bootstrap_url(base, i))).body.decode()
    kernel = re.search(r"^kernel --name kernel (\S+) .*razorurl=(\S+)", script, re.M)
    initrd = re.search(r"^initrd --name initrd (\S+)", script, re.M)
    if not kernel or not initrd:
        raise RuntimeError(f"machine {i} got no image script:\n{script}")
    downloaded = 0
    for url in (kernel.group(1), initrd.group(1)):
        downloaded += (await get(url, keep=False)).received
    post_install = (await get(kernel.group(2))).body.decode()
    finish = re.search(r"'(http[^']+/finish\?[^']+)'", post_install).group(1)
    await get(finish)
    return downloaded


async def storm(bases: list[str], clients: int, flow) -> tuple[int, list[str]]:
    """Run ``flow(base, i)`` for every machine at once; bytes downloaded and the errors."""
    results = await asyncio.gather(*(flow(bases[i % len(bases)], i) for i in range(clients)), return_exceptions=True)
    errors = [f"machine {i}: {r!r}" for i, r in enumerate(results) if isinstance(r, BaseException)]
    return sum(r for r in results if isinstance(r, int)), errors


async def register(base: str, i: int) -> int:
    await get(bootstrap_url(base, i))
    return 0


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


class Sampler(threading.Thread):
    """Peak of the summed resident memory of some process groups."""

    def __init__(self, pgids: list[int]):
        super().__init__(daemon=True)
        self.pgids = pgids
        self.peak = 0
        self.running = True

    def run(self):
        while self.running:
            self.peak = max(self.peak, sum(group_rss_bytes(g) for g in self.pgids))
            time.sleep(0.2)


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


def set_image_state(url: str, clients: int) -> None:
    """Put every registered machine into the storm's image state, as an operator would."""
    from sqlalchemy import update

    from ks.records.db import Database
    from ks.records.models import Host

    db = Database(url)
    count = db.write(lambda s: s.execute(update(Host).values(state=IMAGE)).rowcount)
    assert count == clients, f"{count} hosts registered, expected {clients}"
    db.dispose()


def finished_hosts(url: str) -> int:
    """How many machines the database knows as finished."""
    from sqlalchemy import func, select

    from ks.records.db import Database
    from ks.records.models import Host

    db = Database(url)
    with db.read() as session:
        count = session.scalar(select(func.count()).select_from(Host).where(Host.state == "finished"))
    db.dispose()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000, help="simulated machines [1000]")
    parser.add_argument("--file-mib", type=int, default=10, help="size of kernel and of initrd in MiB [10]")
    parser.add_argument("--servers", type=int, default=1, help="kiwispray serve processes [1]")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite", help="[sqlite]")
    parser.add_argument("--workers", type=int, default=2, help="workers per server [2]")
    parser.add_argument("--threads", type=int, default=32, help="threads per worker [32]")
    args = parser.parse_args()
    if args.servers > 1 and args.database == "sqlite":
        parser.error("several servers need --database postgresql")
    print(f"# {command_line()}")
    print(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; {args.clients} machines, "
          f"kernel and initrd {args.file_mib} MiB each; {args.servers} server(s) x {args.workers} workers x "
          f"{args.threads} threads on {args.database}", flush=True)
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
        try:
            for n in range(args.servers):  # one after the other: each migrates the database on start
                port = free_port()
                # 1,000 machines register within seconds: no registration limit here.
                proc = serve(root, port, "--workers", str(args.workers), "--threads", str(args.threads),
                             "--registrations-per-minute", "0", env=env, log=Path(tmp) / f"serve-{n}.log")
                wait_for(port, proc)
                servers.append((proc, f"http://127.0.0.1:{port}"))
            bases = [base for _, base in servers]
            _, errors = asyncio.run(storm(bases, args.clients, register))
            if errors:
                raise SystemExit("registration failed:\n" + "\n".join(errors[:10]))
            set_image_state(url, args.clients)
            pgids = [proc.pid for proc, _ in servers]
            cpu0 = sum(group_cpu_seconds(g) for g in pgids)
            db_cpu0 = postgres_cpu(postgres) if postgres else 0.0
            sampler = Sampler(pgids)
            sampler.start()
            t0 = time.monotonic()
            downloaded, errors = asyncio.run(storm(bases, args.clients, machine))
            wall = time.monotonic() - t0
            sampler.running = False
            sampler.join()
            cpu = sum(group_cpu_seconds(g) for g in pgids) - cpu0
            db_cpu = postgres_cpu(postgres) - db_cpu0 if postgres else None
            processes = sum(len(group_pids(g)) for g in pgids)
        finally:
            for proc, _ in servers:
                stop(proc)
        finished = finished_hosts(url)
        if postgres:
            postgres.stop()
    for line in errors[:10]:
        print(f"# error: {line}")
    print(f"machines finished        {finished} of {args.clients}")
    print(f"time until all finished  {wall:.1f} s")
    print(f"errors                   {len(errors)}")
    print(f"downloaded               {downloaded / MIB:.0f} MiB ({downloaded / MIB / wall:.0f} MiB/s)")
    print(f"server CPU               {cpu:.1f} s ({processes} processes)")
    if db_cpu is not None:
        print(f"PostgreSQL CPU           {db_cpu:.1f} s")
    print(f"peak server memory (RSS) {sampler.peak / MIB:.0f} MiB")


if __name__ == "__main__":
    main()
