"""``kiwispray serve``: the application under gunicorn (threads in a few worker processes)."""

import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

from gunicorn.app.base import BaseApplication

from ks import logs, timeouts
from ks.app import create_app
from ks.db import Database

log = logging.getLogger(__name__)


class Server(BaseApplication):
    """gunicorn configured from arguments instead of a config file or argv."""

    def __init__(self, settings: dict, options: dict):
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            if key in self.cfg.settings:  # newer gunicorn knows more settings
                self.cfg.set(key, value)

    def load(self):
        # Runs in each worker, which builds its own application and timeout
        # checks: engines are never shared across fork.
        app = create_app(self.settings)
        interval = self.settings["TIMEOUT_CHECK_INTERVAL"]
        if interval:
            db = app.extensions["kiwispray"].db
            threading.Thread(target=check_timeouts, args=(db, interval), name="ks-timeouts", daemon=True).start()
        return app


def check_timeouts(db: Database, interval: float) -> None:
    """Flag overdue machines about every ``interval`` seconds, for as long as the worker lives."""
    from ks import metrics  # in the worker: it must wait for the metrics directory

    while True:
        # Jitter: the workers of one server should not all check at the same moment.
        time.sleep(interval * random.uniform(0.8, 1.2))
        try:
            flagged = timeouts.check(db, "server")
        except Exception:  # a database hiccup must not end the checks for good
            log.exception("timeout check failed; trying again in %s s", interval)
            continue
        for _host_id, state in flagged:
            metrics.TIMEOUTS.labels(state=state).inc()


@contextmanager
def metrics_directory():
    """A fresh directory where the workers keep their metrics; removed when the server stops."""
    if "prometheus_client" in sys.modules:
        # Its metrics would already count in memory, invisible to the other workers.
        raise RuntimeError("prometheus_client was imported before the metrics directory was set up")
    path = tempfile.mkdtemp(prefix="kiwispray-metrics-")
    owner = os.getpid()
    # prometheus_client reads this when a worker creates its metrics (ks.metrics).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    try:
        yield path
    finally:
        # Workers leave gunicorn's arbiter through here too, after their fork;
        # only the process that made the directory removes it.
        if os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)


def run(
    settings: dict, host: str, port: int, workers: int, threads: int, access_log: bool, log_format: str = logs.TEXT
) -> None:
    """Serve until SIGTERM or SIGINT; gunicorn finishes requests in flight, then exits."""
    options = {
        "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "graceful_timeout": 10,
        "timeout": 120,
        "keepalive": 5,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        "logger_class": logs.gunicorn_logger(log_format),
        "proc_name": "kiwispray",
        # Image downloads go out with os.sendfile (see ks.files). Do not set
        # gunicorn's "sendfile": any value given there, True included, turns it
        # off. Long downloads are not cut by "timeout": gthread workers notify
        # the arbiter from their main loop, whatever their threads are doing.
        # Several servers may run on one machine; none needs gunicorn's control socket.
        "control_socket_disable": True,
    }
    with metrics_directory() as path:
        log.info("metrics of the worker processes are kept in %s until the server stops", path)
        Server({**settings, "METRICS_DIR": path}, options).run()
