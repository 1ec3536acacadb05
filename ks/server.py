"""``kiwispray serve``: the application under gunicorn (threads in a few worker processes)."""

import collections
import contextlib
import errno
import logging
import os
import queue
import selectors
import shutil
import socket
import ssl
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial

from gunicorn import glogging, http
from gunicorn.app.base import BaseApplication
from gunicorn.http import wsgi
from gunicorn.http.errors import NoMoreData
from gunicorn.workers import base

from ks.app import create_app
from ks.core import logs
from ks.core.config import Settings, tftp_address
from ks.core.errors import ConfigError
from ks.core.framing import MAX_HEADER_BYTES, Framing, Refused, answered_continue, header_end
from ks.core.ratelimit import TokenBucket
from ks.core.rules import RulesFile
from ks.tftp import TftpServer
from ks.web import ADMIN, BOOT, LISTENER, MAX_BODY_BYTES, SEND_TIMEOUT, STEP_ASIDE

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
# gunicorn's default access line without its own time (%(t)s): the line's time says it.
ACCESS_FORMAT = '%(h)s %(l)s %(u)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
# gunicorn's access-log atoms worth a field of their own in a JSON line.
ACCESS_FIELDS = {"remote": "h", "method": "m", "path": "U", "query": "q", "status": "s", "bytes": "B",
                 "duration_ms": "M", "user_agent": "a"}


class Server(BaseApplication):
    """gunicorn configured from arguments instead of a config file or argv."""

    def __init__(self, settings: Settings, options: dict, registrations: TokenBucket, metrics_dir: str,
                 rules_file: RulesFile | None = None):
        self.settings = settings
        self.options = options
        self.registrations = registrations
        self.metrics_dir = metrics_dir
        self.rules_file = rules_file
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            if key in self.cfg.settings:  # newer gunicorn knows more settings
                self.cfg.set(key, value)

    def load(self):
        # Runs in each worker, which builds its own application and starts its
        # background jobs: engines and threads are never shared across fork.
        app = create_app(self.settings, registrations=self.registrations, metrics_dir=self.metrics_dir,
                         rules_file=self.rules_file)
        app.extensions["kiwispray"].start_jobs()
        return app


class Connection:
    """A client's connection: its socket, its request parser, and the bytes received for the parser."""

    def __init__(self, cfg, sock, client, server):
        self.sock, self.client, self.server = sock, client, server
        self.received = bytearray()  # what the main loop received and no request has taken yet
        self.request = bytearray()  # the whole request (headers and body) handed to a thread, for the parser
        self.framing: Framing | None = None  # how the body of the request being received ends, once its headers are in
        self.deadline = float("inf")
        self.idle = False  # kept alive, no byte of its next request yet
        self.tls = False  # came through the HTTPS listener of the operator side
        self.counted = False  # holds a place among the running requests
        # The parser reads through ``recv`` below: first what the main loop received.
        self.parser = http.RequestParser(cfg, self, client)

    def recv(self, size: int) -> bytes:
        """What the parser reads: the request the main loop received whole; then the socket (never reached)."""
        if not self.request:
            return self.sock.recv(size)
        data = bytes(self.request[:size])
        del self.request[:size]
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Worker(base.Worker):
    """A worker process: a main loop that receives headers, threads that run at most ``RUNNING_REQUESTS`` requests.

    With many requests in flight, each call that releases the GIL (a SQLite
    step, a socket write, the log line: about 30 per boot) hands it to another
    of them; two at a time cost 20-35 % less CPU per boot than eight
    (docs/performance.md). Further requests wait, unread, in the main loop.
    A request that from some point on only waits on the network (an image
    download, a BMC call) steps aside through ``environ["kiwispray.step_aside"]``
    and no longer counts: downloads are bounded by the threads, not by this.

    A request is received whole in the main loop, not in a thread: a
    connection reaches a thread once its header block and its body are
    complete (``ks.core.framing`` finds where they end). One that takes longer than
    ``HEADER_TIMEOUT`` seconds for its headers, or ``BODY_TIMEOUT`` for its
    body after them, is answered 408 and closed; a body longer than the
    application accepts is answered 413 before it is read. A client that
    sends one byte a second therefore holds no thread and no running slot
    (a few such clients would otherwise stop the server). The listeners defer
    a connection until its first bytes are in (TCP_DEFER_ACCEPT), so a new
    connection's request is usually read as it is accepted, and the selector
    watches only connections whose request is not whole yet.

    Built on gunicorn's base worker class (what its documentation says a
    worker class is), its HTTP parser and its WSGI environment, which all its
    workers share; no other worker's internals.
    """

    def init_process(self):
        # Set before the base class's init_process, which ends in run().
        settings = self.app.settings
        self.running_limit = settings.running_requests
        self.header_timeout = settings.header_timeout or float("inf")
        self.body_timeout = settings.body_timeout or float("inf")
        self.running = 0
        self.waiting: collections.deque[Connection] = collections.deque()
        self.receiving: set[Connection] = set()  # connections whose request is being received
        self.connections = 0  # open connections, for worker_connections
        self.busy = 0  # connections in a thread
        # Event streams (GET /api/v1/events) hold a thread each for as long as they are open:
        # they get threads of their own, so that open streams never leave boots without one.
        self.pool = ThreadPoolExecutor(self.cfg.threads + settings.event_streams, thread_name_prefix="ks-request")
        self.tls = tls_context(settings) if settings.tls_cert else None
        self.admin_port = settings.admin_port
        self.selector = selectors.DefaultSelector()
        self.calls: queue.SimpleQueue = queue.SimpleQueue()
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        self.woken = False  # a byte is in the pipe that the main loop has not read
        self.accepting = False
        self.next_expiry = 0.0
        super().init_process()

    # -- the main loop ---------------------------------------------------------------------------

    def run(self):
        self.selector.register(self.wake_read, selectors.EVENT_READ, self._run_calls)
        self._prepare_listeners()
        tftp_server = None
        if self.app.settings.tftp_listen:
            address, port = tftp_address(self.app.settings.tftp_listen)
            tftp_server = TftpServer(self.wsgi, address, port, self.sockets[0].getsockname()[1],
                                     self.app.settings.tftp_transfers)
            self.selector.register(tftp_server.sock, selectors.EVENT_READ, lambda _sock: tftp_server.on_readable())
        self._accept_while(True)
        parent = os.getppid()
        while self.alive:
            self.notify()
            if os.getppid() != parent:
                self.log.info("Parent changed, shutting down: %s", self)
                break
            self._accept_while(self.connections < self.cfg.worker_connections)
            self._dispatch(1.0)
            self._expire()
        # Stopping: no new requests; the ones in threads finish within graceful_timeout.
        self._accept_while(False)
        for conn in list(self.receiving):
            self._drop(conn)
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while self.busy and time.monotonic() < deadline:
            self.notify()
            self._dispatch(1.0)
        self.pool.shutdown(wait=False)
        if tftp_server is not None:
            tftp_server.close()
        for listener in self.sockets:
            listener.close()

    def _prepare_listeners(self) -> None:
        """Listeners the main loop polls; each hands over a connection once its first bytes are in.

        Linux's TCP_DEFER_ACCEPT (seconds to wait for them) lets ``_accept`` read the request at
        once, without a turn through the selector; a silent connection still arrives after a second.
        """
        for listener in self.sockets:
            listener.setblocking(False)
            with contextlib.suppress(AttributeError, OSError):  # not Linux: accepted as they come
                listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)

    def _dispatch(self, timeout: float) -> None:
        try:
            events = self.selector.select(timeout)
        except InterruptedError:
            return
        for key, _ in events:
            key.data(key.fileobj)

    def _accept_while(self, enabled: bool) -> None:
        if enabled == self.accepting:
            return
        for listener in self.sockets:
            if enabled:
                self.selector.register(listener, selectors.EVENT_READ, self._accept)
            else:
                self.selector.unregister(listener)
        self.accepting = enabled

    def _accept(self, listener) -> None:
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.connections += 1
        conn = Connection(self.cfg, sock, client, listener.getsockname())
        if self.tls is not None and conn.server[1] == self.admin_port:
            return self._start_tls(conn)
        return self._receive_headers(conn, self.header_timeout, arrived=True)

    def _start_tls(self, conn: Connection) -> None:
        """Wrap the connection in TLS; the handshake runs in the main loop, bounded like the headers."""
        if self.tls is None:  # only the admin port's connections come here, and it exists only with TLS
            return self._receive_headers(conn, self.header_timeout)
        try:
            conn.sock = self.tls.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError):
            self.connections -= 1
            conn.close()
            return
        conn.tls = True
        conn.sock.setblocking(False)
        conn.deadline = time.monotonic() + self.header_timeout
        self.receiving.add(conn)
        self.selector.register(conn.sock, selectors.EVENT_READ, partial(self._on_handshake, conn))

    def _on_handshake(self, conn: Connection, _sock) -> None:
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.selector.modify(conn.sock, selectors.EVENT_READ, partial(self._on_handshake, conn))
            return None
        except ssl.SSLWantWriteError:
            self.selector.modify(conn.sock, selectors.EVENT_WRITE, partial(self._on_handshake, conn))
            return None
        except OSError:  # not TLS, or a certificate the client refused: nothing to answer
            return self._drop(conn)
        self._unwatch(conn)
        self.receiving.discard(conn)
        return self._receive_headers(conn, max(conn.deadline - time.monotonic(), 0.0))

    def _receive_headers(self, conn: Connection, wait: float, arrived: bool = False) -> None:
        """Wait in the main loop for the next request of ``conn``: headers within ``wait`` seconds, then its body.

        ``arrived``: a connection just accepted, whose first bytes are probably in (TCP_DEFER_ACCEPT):
        they are read now, and the selector watches the connection only if the request is not whole.
        """
        conn.deadline = time.monotonic() + wait
        conn.framing = None
        conn.sock.setblocking(False)  # which also ends a send timeout of the last request
        self.receiving.add(conn)
        if arrived:
            self._on_bytes(conn, None)
            if conn not in self.receiving:  # handed to a thread, or closed
                return None
        self.selector.register(conn.sock, selectors.EVENT_READ, partial(self._on_bytes, conn))
        if arrived:  # what came with it is taken already
            return None
        if conn.received:  # a pipelined request, already (partly) here
            return self._received(conn)
        if conn.tls and conn.sock.pending():  # decrypted bytes the selector cannot see
            self.call_soon(self._on_bytes, conn, None)
        return None

    def _on_bytes(self, conn: Connection, _sock) -> None:
        """Take what the client sent; once the request is complete, hand the connection to a thread."""
        if conn not in self.receiving:  # a late call for a connection already handed on
            return None
        try:
            data = conn.sock.recv(READ_SIZE)
            while conn.tls and data and conn.sock.pending():  # TLS hands out one record per call
                data += conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        except OSError:
            data = b""
        if not data:  # the client went away
            return self._drop(conn)
        if conn.idle:  # a kept-alive connection's next request: its headers have HEADER_TIMEOUT from now
            conn.idle = False
            conn.deadline = time.monotonic() + self.header_timeout
        conn.received += data
        return self._received(conn)

    def _received(self, conn: Connection) -> None:
        """Hand the request to a thread once it is complete; answer one refused before its end is read."""
        try:
            if conn.framing is None:
                head = header_end(conn.received)
                if not head:
                    if len(conn.received) > MAX_HEADER_BYTES:
                        self._drop(conn, b"431 Request Header Fields Too Large")
                    return None
                framing = Framing(conn.received[:head], MAX_BODY_BYTES)
                if framing.expects_continue:  # answered here, so the parser does not answer it again
                    conn.received[:head] = answered_continue(conn.received[:head])
                    framing.head = header_end(conn.received)
                conn.framing = framing
                conn.deadline = time.monotonic() + self.body_timeout
                end = framing.end(conn.received)
                if end is None and framing.expects_continue:  # the client waits for this before its body
                    with contextlib.suppress(OSError):
                        conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            else:
                end = conn.framing.end(conn.received)
        except Refused as refused:
            return self._drop(conn, refused.status.encode())
        if end is None:
            return None
        conn.request = conn.received[:end]
        del conn.received[:end]
        self._unwatch(conn)
        self.receiving.discard(conn)
        return self._enqueue(conn)

    def _expire(self) -> None:
        """Close the connections whose request did not come in time (kept-alive ones without a word)."""
        now = time.monotonic()
        if now < self.next_expiry:  # deadlines are kept to a quarter of a second
            return
        self.next_expiry = now + 0.25
        for conn in [c for c in self.receiving if c.deadline <= now]:
            self._drop(conn, None if conn.idle else b"408 Request Timeout")

    def _drop(self, conn: Connection, status: bytes | None = None) -> None:
        """Close a connection whose request did not arrive whole, telling the client why if it still listens."""
        self._unwatch(conn)
        self.receiving.discard(conn)
        if status:
            with contextlib.suppress(OSError, ValueError):
                conn.sock.send(b"HTTP/1.1 " + status + b"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        self.connections -= 1
        conn.close()

    def _unwatch(self, conn: Connection) -> None:
        """Stop watching ``conn`` for bytes, if the selector does (a request read as accepted never was)."""
        if conn.sock in self.selector.get_map():
            self.selector.unregister(conn.sock)

    def _enqueue(self, conn: Connection) -> None:
        """Run the request of ``conn`` in a thread, or let it wait while ``RUNNING_REQUESTS`` run."""
        if self.running_limit:
            if self.running >= self.running_limit:
                self.waiting.append(conn)
                return
            self.running += 1
            conn.counted = True
        self.busy += 1
        self.pool.submit(self._serve_then_return, conn)

    def _finished(self, conn: Connection, keep_open: bool) -> None:
        self.busy -= 1
        self._release(conn)
        if keep_open and self.alive:
            conn.idle = True
            self._receive_headers(conn, self.cfg.keepalive)
        else:
            self.connections -= 1
            conn.close()

    def _release(self, conn: Connection) -> None:
        """Stop counting the request of ``conn`` (once), and let waiting ones run."""
        if not conn.counted:
            return
        conn.counted = False
        self.running -= 1
        while self.waiting and self.running < self.running_limit:
            self._enqueue(self.waiting.popleft())

    def call_soon(self, function, *args) -> None:
        """Run ``function(*args)`` on the main loop; callable from any thread."""
        self.calls.put(partial(function, *args))
        # One byte wakes the loop for every call queued until it runs them: under load most
        # calls find the loop woken already and cost no system call.
        if not self.woken:
            self.woken = True
            with contextlib.suppress(BlockingIOError):  # a full pipe wakes the loop anyway
                os.write(self.wake_write, b"\0")

    def _run_calls(self, _fd) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.wake_read, 4096)
        # Cleared before the queue is emptied: a call queued from here on writes its own byte.
        self.woken = False
        while True:
            try:
                call = self.calls.get_nowait()
            except queue.Empty:
                return
            call()

    # -- in a thread --------------------------------------------------------------------------------

    def _serve_then_return(self, conn: Connection) -> None:
        """Answer the request of ``conn``, then give the connection back to the main loop."""
        keep_open = False
        try:
            keep_open = self._serve(conn)
        finally:
            self.call_soon(self._finished, conn, keep_open)

    def _serve(self, conn: Connection) -> bool:
        """Answer the request whose headers ``conn`` received; whether the connection stays open."""
        req = None
        try:
            conn.sock.setblocking(True)
            req = next(conn.parser)
            return self._answer(conn, req)
        except (StopIteration, NoMoreData):
            pass
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
        except Exception as exc:
            self.handle_error(req, conn.sock, conn.client, exc)
        return False

    def _answer(self, conn: Connection, req) -> bool:
        environ: dict = {}
        resp = None
        try:
            self.cfg.pre_request(self, req)
            started = datetime.now()
            resp, environ = wsgi.create(req, conn.sock, conn.client, conn.server, self.cfg)
            environ["wsgi.multithread"] = True
            environ[STEP_ASIDE] = partial(self.call_soon, self._release, conn)
            environ[SEND_TIMEOUT] = conn.sock.settimeout
            environ[LISTENER] = ADMIN if conn.tls else BOOT
            if conn.tls:
                environ["wsgi.url_scheme"] = "https"
                environ["HTTPS"] = "on"
            if not self.alive or not self.cfg.keepalive:
                resp.force_close()
            body = self.wsgi(environ, resp.start_response)
            try:
                # os.sendfile would bypass TLS: a file goes out through the TLS socket like any body.
                if isinstance(body, environ["wsgi.file_wrapper"]) and not conn.tls:
                    resp.write_file(body)
                else:
                    for chunk in body:
                        resp.write(chunk)
                resp.close()
            finally:
                self.log.access(resp, req, environ, datetime.now() - started)
                if hasattr(body, "close"):
                    body.close()
            return not resp.should_close() and _body_read(req)
        except (Exception, SystemExit):
            if resp is not None and resp.headers_sent:
                # Half an answer is on the wire: a 500 after it would corrupt it.
                self.log.exception("Error handling request")
                return False
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")


def _body_read(req) -> bool:
    """Whether the request's body is read to its end; what the application left, up to 64 KiB, is read and dropped."""
    for _ in range(8):
        if not req.body.read(8192):
            return True
    return False


class AccessFields(logging.Filter):
    """An access line's request fields as attributes of its record, where JSON lines find them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict):
            for key, atom in ACCESS_FIELDS.items():
                setattr(record, key, record.args.get(atom))
        return True


class Logger(glogging.Logger):
    """gunicorn's error and access logs, without bootids, in the chosen format (ours, not gunicorn's)."""

    log_format = logs.TEXT

    def setup(self, cfg) -> None:
        super().setup(cfg)
        self.error_log.addFilter(logs.RedactFilter())
        self.access_log.addFilter(AccessFields())
        for handler in self.error_log.handlers + self.access_log.handlers:
            handler.setFormatter(logs.formatter(self.log_format))

    def atoms(self, resp, req, environ, request_time) -> dict:
        # The request line, the query and the environment all carry the query string.
        return {key: logs.hide_bootids(value) if isinstance(value, str) else value
                for key, value in super().atoms(resp, req, environ, request_time).items()}


class JsonLogger(Logger):
    """gunicorn's logs as JSON lines."""

    log_format = logs.JSON


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The server side of TLS for the operator side: the certificate chain and key of the settings."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use the TLS certificate {settings.tls_cert} with the key {settings.tls_key}: "
                          f"{exc.strerror or exc}") from None
    return context


@contextlib.contextmanager
def metrics_directory():
    """A fresh directory for the workers' metrics (ks.records.counters.Metrics); removed when the server stops."""
    path = tempfile.mkdtemp(prefix="kiwispray-metrics-")
    owner = os.getpid()
    try:
        yield path
    finally:
        # Workers leave gunicorn's arbiter through here too, after their fork;
        # only the process that made the directory removes it.
        if os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)


def in_use(host: str, port: int) -> bool:
    """Whether another socket listens on ``host:port`` already, as gunicorn would find when it binds.

    Any other trouble with the address is left to gunicorn to report.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (OSError, IndexError):
        return False
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn: a TIME_WAIT is no user
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def run(
    settings: Settings, host: str, port: int, workers: int, threads: int, access_log: bool, log_format: str = logs.TEXT,
    rules_file: RulesFile | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT; gunicorn finishes requests in flight, then exits.

    ``rules_file``: the enrollment rules as read (and checked) before the workers fork.
    """
    ports = [port, settings.admin_port] if settings.admin_port else [port]
    if settings.tls_cert:
        tls_context(settings)  # a wrong file stops the server now, not each worker later
    options = {
        # The boot side (plain HTTP, for iPXE); with TLS, the operator side's HTTPS port too (see Worker).
        "bind": [f"[{host}]:{p}" if ":" in host else f"{host}:{p}" for p in ports],
        "workers": workers,
        "threads": threads,
        "worker_class": "ks.server.Worker",
        "graceful_timeout": 10,
        "timeout": 120,
        "keepalive": 5,
        "accesslog": "-" if access_log else None,
        "access_log_format": ACCESS_FORMAT,
        "errorlog": "-",
        "loglevel": "info",
        "logger_class": JsonLogger if log_format == logs.JSON else Logger,
        "proc_name": "kiwispray",
        # Image downloads go out with os.sendfile (see ks.boot.files). Do not set
        # gunicorn's "sendfile": any value given there, True included, turns it
        # off. Long downloads are not cut by "timeout": the worker notifies
        # the arbiter from its main loop, whatever its threads are doing.
        # Several servers may run on one machine; none needs gunicorn's control socket.
        "control_socket_disable": True,
    }
    # Made before the workers fork, so that they all draw from it.
    registrations = TokenBucket(settings.registrations_per_minute, shared=True)
    with metrics_directory() as path:
        log.info("metrics of the worker processes are kept in %s until the server stops", path)
        Server(settings, options, registrations, path, rules_file).run()
