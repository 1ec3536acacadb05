"""``kiwispray serve --tftp-listen``: TFTP read requests answered by the application.

Each worker process binds the TFTP address (``SO_REUSEPORT``: the kernel spreads
clients over the workers) and its main loop hands each read request to a transfer
thread. A transfer asks the worker's own WSGI application for the name's path
(``ks.core.tftp.route``) as a GET from the client's address, as if it had come over
HTTP — the same boot decision, history, registration bounds and download records —
and sends the answer's body in lockstep blocks from a socket of its own (RFC 1350),
with ``blksize`` and ``tsize`` (RFC 2348, 2349). A client that stops acknowledging is
given up after ``RETRIES`` resends; at most ``KS_TFTP_TRANSFERS`` transfers run in a
worker, a request beyond gets an error and its client asks again.
"""

import errno
import io
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from ks.core import tftp
from ks.web import LISTENER, TFTP

log = logging.getLogger(__name__)

TIMEOUT = 1.0  # seconds to wait for an ACK before sending the block again
RETRIES = 5  # resends of one block before the transfer is given up
MAX_PACKET = 65536


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def bind(address: str, port: int) -> socket.socket:
    """The TFTP socket of a worker: shared by the workers (``SO_REUSEPORT``), non-blocking."""
    sock = socket.socket(_family(address), socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def check(address: str, port: int) -> str:
    """Why ``kiwispray serve`` could not answer TFTP at ``address:port``; "" when it can."""
    with socket.socket(_family(address), socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, port))
        except PermissionError:
            return f"TFTP port {port} needs root (or CAP_NET_BIND_SERVICE); choose a port above 1023 with --tftp-listen"
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (f"TFTP port {port} on {address} is in use (dnsmasq's enable-tftp on that address?); "
                        "turn the other server off there or choose another --tftp-listen")
            return f"cannot answer TFTP at {address}:{port}: {exc.strerror}"
    return ""


class TftpServer:
    """Read requests on one socket, each answered from ``app`` in a transfer thread."""

    def __init__(self, app: Callable, address: str, port: int, http_port: int, transfers: int):
        self.app = app
        self.address, self.port, self.http_port = address, port, http_port
        self.sock = bind(address, port)
        self.slots = threading.BoundedSemaphore(transfers)
        self.pool = ThreadPoolExecutor(transfers, thread_name_prefix="ks-tftp")
        host = f"[{address}]" if ":" in address else address
        self.host_header = f"{host}:{http_port}"

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self) -> None:
        """Take the read requests waiting on the socket (called by the worker's main loop)."""
        while True:
            try:
                packet, peer = self.sock.recvfrom(MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error of an earlier send; nothing to answer
                log.debug("tftp socket: %s", exc)
                return
            if not self.slots.acquire(blocking=False):
                self._send_error(self.sock, peer, tftp.NOT_DEFINED, "server busy, try again")
                continue
            self.pool.submit(self._transfer, packet, peer)

    def close(self) -> None:
        self.sock.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- one transfer ----------------------------------------------------------------------------

    def _transfer(self, packet: bytes, peer) -> None:
        try:
            with socket.socket(self.sock.family, socket.SOCK_DGRAM) as sock:
                sock.bind((self.address, 0))
                sock.settimeout(TIMEOUT)
                self._answer(sock, packet, peer)
        except Exception:
            log.exception("tftp transfer to %s failed", peer[0])
        finally:
            self.slots.release()

    def _answer(self, sock: socket.socket, packet: bytes, peer) -> None:
        try:
            request = tftp.parse_request(packet)
        except tftp.TftpError as exc:
            self._send_error(sock, peer, exc.code, str(exc))
            return
        routed = tftp.route(request.name)
        if routed is None:  # GRUB's optional files (grub/x86_64-efi/*.lst) every boot: not worth a line each
            log.debug("tftp %s from %s: not found", request.name, peer[0])
            self._send_error(sock, peer, tftp.NOT_FOUND, "file not found")
            return
        status, headers, body = self._ask(routed, peer)
        try:
            if not status.startswith("200"):
                reason = b"".join(body).decode("utf-8", "replace").strip().splitlines()
                log.info("tftp %s from %s: %s", request.name, peer[0], status)
                self._send_error(sock, peer, tftp.NOT_FOUND, reason[0] if reason else status)
                return
            length = headers.get("content-length")
            size = int(length) if length and length.isdigit() else None
            started = time.monotonic()
            sent = self._send(sock, peer, request, size, body)
            if sent is not None:
                log.info("tftp sent %s to %s (%d bytes, %.1f s)", request.name, peer[0], sent,
                         time.monotonic() - started, extra={"event": "tftp", "remote": peer[0]})
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def _ask(self, routed: tuple[str, str], peer) -> tuple[str, dict[str, str], Iterable[bytes]]:
        """The application's answer to a GET of ``routed`` (path, query) from ``peer``."""
        path, query = routed
        environ = {
            "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path.encode("utf-8").decode("latin-1"),
            "QUERY_STRING": query, "SERVER_NAME": self.address, "SERVER_PORT": str(self.http_port),
            "SERVER_PROTOCOL": "HTTP/1.0", "HTTP_HOST": self.host_header, "HTTP_USER_AGENT": "TFTP",
            "REMOTE_ADDR": peer[0], "REMOTE_PORT": str(peer[1]), "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
            "wsgi.multiprocess": True, "wsgi.run_once": False, LISTENER: TFTP,
        }  # fmt: skip
        answer: dict = {}

        def start_response(status, response_headers, exc_info=None):
            answer["status"] = status
            answer["headers"] = {k.lower(): v for k, v in response_headers}

        body = self.app(environ, start_response)
        return answer["status"], answer["headers"], body

    def _send(self, sock: socket.socket, peer, request: tftp.Request, size: int | None,
              body: Iterable[bytes]) -> int | None:
        """Send ``body`` in blocks; the bytes sent, None when the client went away or refused."""
        block_size, accepted = tftp.negotiate(request.options, size)
        if accepted and not self._exchange(sock, peer, tftp.oack(accepted), 0):
            return None
        chunks = iter(body)
        pending, number, sent, done = bytearray(), 1, 0, False
        while not done:
            while len(pending) < block_size:
                chunk = next(chunks, None)
                if chunk is None:
                    break
                pending += chunk
            payload = bytes(pending[:block_size])
            del pending[:block_size]
            done = len(payload) < block_size
            if not self._exchange(sock, peer, tftp.data(number, payload), number):
                return None
            sent += len(payload)
            number += 1
        return sent

    def _exchange(self, sock: socket.socket, peer, packet: bytes, number: int) -> bool:
        """Send ``packet`` until ``peer`` acknowledges block ``number`` (mod 65536); False if it never does."""
        for _ in range(RETRIES + 1):
            sock.sendto(packet, peer)
            deadline = time.monotonic() + TIMEOUT
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    reply, source = sock.recvfrom(MAX_PACKET)
                except TimeoutError:
                    break
                if source != peer:  # RFC 1350: another port is told, the transfer goes on
                    self._send_error(sock, source, 5, "unknown transfer ID")
                    continue
                try:
                    acked = tftp.parse_ack(reply)
                except ValueError:
                    continue
                if acked is None:  # the client gave up (an ERROR packet)
                    return False
                if acked == number % 65536:
                    return True
                # An older block's ACK (a duplicate): keep waiting for this one.
        log.info("tftp: %s stopped acknowledging, transfer given up", peer[0])
        return False

    @staticmethod
    def _send_error(sock: socket.socket, peer, code: int, message: str) -> None:
        try:
            sock.sendto(tftp.error(code, message), peer)
        except OSError:
            pass
