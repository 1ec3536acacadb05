"""The ceiling for /bootstrap: a bare Flask app doing one raw SQLite WAL write per request.

Run by bench_bootstrap.py under gunicorn with the same workers and threads as
kiwispray serve, so both figures come from one run on one machine.
"""

import os
import sqlite3
import threading

from flask import Flask, request

DB = os.environ["CEILING_DB"]
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
