"""``kiwispray serve``: the application under gunicorn (threads in a few worker processes)."""

import collections
import contextlib
import errno
import logging
import os
import random
import selectors
import shutil
import sys
import tempfile
import threading
import time
from functools import partial

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import TConn, ThreadWorker

from ks import logs, timeouts
from ks.app import create_app
from ks.db import Database
from ks.ratelimit import TokenBucket
from ks.web import STEP_ASIDE

log = logging.getLogger(__name__)

# A header block longer than this is refused (431) before it reaches gunicorn's parser.
MAX_HEADER_BYTES = 64 * 1024
READ_SIZE = 64 * 1024


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


class Worker(ThreadWorker):
    """gunicorn's gthread worker that runs at most ``RUNNING_REQUESTS`` requests at once.

    With many requests in flight, each call that releases the GIL (a SQLite
    step, a socket write, the log line: about 30 per boot) hands it to another
    of them; two at a time cost 20-35 % less CPU per boot than eight
    (docs/performance.md). Further requests wait, unread, in the main loop.
    A request that from some point on only waits on the network (an image
    download, a BMC call) steps aside through ``environ["kiwispray.step_aside"]``
    and no longer counts: downloads are bounded by the threads, not by this.

    A request's headers are received in the main loop, not in a thread:
    gunicorn hands a connection to a thread as soon as its first byte arrives,
    and a client that then sends one byte a second would hold that thread for
    as long as it likes (a few dozen such clients stop the server). Here a
    connection reaches a thread once its header block is complete, and one
    that takes longer than ``HEADER_TIMEOUT`` seconds for it is closed.
    """

    def init_process(self):
        # Set before the base class's init_process, which ends in the main loop.
        self.running_limit = self.app.settings["RUNNING_REQUESTS"]
        self.running = 0
        self.waiting: collections.deque = collections.deque()
        self.local = threading.local()
        self.header_timeout = self.app.settings["HEADER_TIMEOUT"]
        # Connections whose headers are being received -> deadline; in the order
        # they started, which is the order of their deadlines.
        self.receiving: dict[TConn, float] = {}
        super().init_process()

    def load_wsgi(self):
        super().load_wsgi()
        app = self.wsgi

        def with_step_aside(environ, start_response):
            environ[STEP_ASIDE] = getattr(self.local, "step_aside", None)
            return app(environ, start_response)

        self.wsgi = with_step_aside

    def accept(self, listener):
        if self.cfg.is_ssl or getattr(self.cfg, "http2_cleartext", "off") != "off":
            # TLS and HTTP/2 negotiation happen in a thread first, as gunicorn does them.
            return super().accept(listener)
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return None
        self.nr_conns += 1
        self._receive_headers(TConn(self.cfg, sock, client, listener.getsockname()))

    def on_client_socket_readable(self, conn, client):
        # The next request of a kept-alive connection: its headers too are received here.
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._receive_headers(conn)

    def _receive_headers(self, conn):
        conn.ks_received = bytearray()
        self.receiving[conn] = time.monotonic() + self.header_timeout if self.header_timeout else float("inf")
        conn.sock.setblocking(False)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_header_bytes, conn))

    def _on_header_bytes(self, conn, _sock):
        """Take what the client sent; once the header block is complete, hand the connection to a thread."""
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            return self._drop(conn)
        received = conn.ks_received
        received += data
        if b"\r\n\r\n" not in received and b"\n\n" not in received:
            if len(received) > MAX_HEADER_BYTES:
                self._drop(conn, b"431 Request Header Fields Too Large")
            return None
        self.poller.unregister(conn.sock)
        del self.receiving[conn]
        conn.init()  # the parser, on a blocking socket (a no-op for a kept-alive connection)
        conn.parser.unreader.unread(bytes(received))
        conn.data_ready = True
        conn.ks_received = None
        return self.enqueue_req(conn)

    def _drop(self, conn, status: bytes | None = None):
        """Close a connection whose headers did not arrive, telling the client why if it still listens."""
        self.poller.unregister(conn.sock)
        del self.receiving[conn]
        if status:
            with contextlib.suppress(OSError):
                conn.sock.send(b"HTTP/1.1 " + status + b"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self):
        super().murder_pending()
        now = time.monotonic()
        while self.receiving:
            conn, deadline = next(iter(self.receiving.items()))
            if deadline > now and self.alive:  # a stopping worker answers no new requests
                break
            self._drop(conn, b"408 Request Timeout")

    def enqueue_req(self, conn):
        if not self.running_limit or not conn.initialized:
            # Over TLS a new connection is handled as gunicorn does, uncounted: its
            # headers are received in the thread, and must not hold a place meanwhile.
            return super().enqueue_req(conn)
        if self.running >= self.running_limit:
            self.waiting.append(conn)
            return None
        self.running += 1
        conn.ks_counted = True
        return super().enqueue_req(conn)

    def handle(self, conn):
        self.local.step_aside = partial(self.method_queue.defer, self._release, conn)
        try:
            return super().handle(conn)
        finally:
            self.local.step_aside = None

    def finish_request(self, conn, fs):
        self._release(conn)
        super().finish_request(conn, fs)

    def _release(self, conn):
        """Stop counting the request of ``conn`` (once), and let waiting ones run; on the main loop."""
        if not getattr(conn, "ks_counted", False):
            return
        conn.ks_counted = False
        self.running -= 1
        while self.waiting and self.running < self.running_limit:
            self.enqueue_req(self.waiting.popleft())


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


@contextlib.contextmanager
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
        "worker_class": "ks.server.Worker",
        "graceful_timeout": 10,
        "timeout": 120,
        "keepalive": 5,
        "accesslog": "-" if access_log else None,
        "access_log_format": logs.ACCESS_FORMAT,
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
    # Made before the workers fork, so that they all draw from it.
    registrations = TokenBucket(settings["REGISTRATIONS_PER_MINUTE"], shared=True)
    with metrics_directory() as path:
        log.info("metrics of the worker processes are kept in %s until the server stops", path)
        Server({**settings, "METRICS_DIR": path, "REGISTRATIONS": registrations}, options).run()
