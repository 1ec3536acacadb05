"""A TCP port of this machine forwarded into a lab's network namespace.

The server of a lab listens inside its namespace, which this machine cannot reach. A
``Forward`` listens on 127.0.0.1 here and passes each connection on to an address in
the namespace: its one thread enters the namespace (``setns``; a thread's network
namespace is its own), so the sockets it opens are inside, while the listening socket,
opened before, stays outside. Nothing else of this machine's network changes.
"""

import ctypes
import os
import socket
import threading

CLONE_NEWNET = 0x40000000


def enter(namespace: str) -> None:
    """Move the calling thread into the network namespace ``namespace`` (``ip netns`` name)."""
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}")
    finally:
        os.close(fd)


class Forward:
    """127.0.0.1:``port`` here to ``address``:``target`` in ``namespace``, until ``close``."""

    def __init__(self, namespace: str, address: str, target: int, port: int):
        self.namespace, self.address, self.target = namespace, address, target
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = self.listener.getsockname()[1]
        self.listener.settimeout(0.5)
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.failure: OSError | None = None
        self.thread = threading.Thread(target=self._serve, name="forward", daemon=True)

    def start(self) -> "Forward":
        self.thread.start()
        self.ready.wait(10)
        if self.failure is not None:
            raise self.failure
        return self

    def _serve(self) -> None:
        try:
            enter(self.namespace)
        except OSError as exc:
            self.failure = exc
            self.ready.set()
            return
        self.ready.set()
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection((self.address, self.target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self.lock:
                self.open |= {client, upstream}
            threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        """Copy both ways until both have ended; then close both."""
        back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        with self.lock:
            self.open -= {client, upstream}
        client.close()
        upstream.close()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        """Copy one direction until it ends, then pass the end on."""
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        """Stop listening and cut every forwarded connection."""
        self.stopping.set()
        self.listener.close()
        self.thread.join(5)
        with self.lock:
            for sock in self.open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the threads copying from it
                except OSError:
                    pass
            self.open.clear()
