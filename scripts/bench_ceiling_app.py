"""The ceilings for /bootstrap: bare Flask apps on raw SQLite, run by bench_bootstrap.py under gunicorn.

Run with the same workers and threads as kiwispray serve, so that every figure
comes from one run on one machine:

- ``/bootstrap``: one SQLite WAL write per request (``CEILING_DB``), the bare ceiling;
- ``/boot``: the writes a boot of a known machine makes, and nothing else
  (``CEILING_SITE_DB``, a site's database): KIWIspray's own statements of the boot
  path, compiled once, in one transaction — find the host by MAC, read it and its
  MACs, rotate its bootid, append its history line — taken in turn by the writers
  of all processes as kiwispray does (a thread lock, then ``flock``). No script
  is rendered, no line logged, nothing counted: what a boot costs at the least.
"""

import fcntl
import hashlib
import os
import secrets
import sqlite3
import threading
from datetime import UTC, datetime

from flask import Flask, request

from benchlib import boot_statements

DB = os.environ["CEILING_DB"]
SITE_DB = os.environ.get("CEILING_SITE_DB")
_local = threading.local()
app = Flask(__name__)


def connection() -> sqlite3.Connection:
    if not hasattr(_local, "conn"):
        conn = sqlite3.connect(DB, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE IF NOT EXISTS boots (mac TEXT PRIMARY KEY, n INTEGER)")
        _local.conn = conn
    return _local.conn


@app.get("/bootstrap")
def bootstrap():
    mac = request.args.get("net0", "")
    connection().execute(
        "INSERT INTO boots VALUES (?, 1) ON CONFLICT(mac) DO UPDATE SET n = n + 1", (mac,)
    )
    return "#!ipxe\nexit\n", 200, {"Content-Type": "text/plain"}


# gunicorn imports this module in each worker: the lock file's descriptor is the worker's own.
BOOT = boot_statements() if SITE_DB else {}
_writers = threading.Lock()
_LOCK_FD = os.open(f"{SITE_DB}-ceiling-writer", os.O_RDWR | os.O_CREAT, 0o600) if SITE_DB else -1


def site() -> sqlite3.Connection:
    """This thread's connection to the site's database; writers take turns on the locks in ``boot``."""
    if not hasattr(_local, "site"):
        conn = sqlite3.connect(SITE_DB, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        _local.site = conn
    return _local.site


@app.get("/boot")
def boot():
    mac = request.args.get("net0", "").replace("-", ":")
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    bootid_hash = hashlib.sha256(secrets.token_hex(16).encode()).hexdigest()
    conn = site()
    with _writers:
        fcntl.flock(_LOCK_FD, fcntl.LOCK_EX)
        try:
            cursor = conn.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                found = cursor.execute(BOOT["find"], {"mac0": mac, "serial": None, "uuid": None}).fetchall()
                host_id = found[0][0]
                cursor.execute(BOOT["host"], {"host_id": host_id}).fetchone()
                cursor.execute(BOOT["macs"], {"host_id": host_id}).fetchall()
                cursor.execute(BOOT["booted"], {"host_id": host_id, "bootid_hash": bootid_hash, "now": now,
                                                "deadline": None, "address": request.remote_addr})
                cursor.execute(BOOT["event"], {"host_id": host_id, "at": now, "kind": "boot", "source": "bootstrap",
                                               "from_state": "finished", "to_state": "finished",
                                               "detail": f"mac={mac}"})
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        finally:
            fcntl.flock(_LOCK_FD, fcntl.LOCK_UN)
    return "#!ipxe\nexit\n", 200, {"Content-Type": "text/plain"}
