"""The server's main loop and its threads (ks.server.Worker): how a request reaches a thread and comes back."""

import os
import queue
import select
import selectors
import socket

import pytest
from gunicorn.config import Config

from ks.server import Connection, Worker


def test_calls_queued_for_the_main_loop_wake_it_once_and_none_is_lost():
    """Threads hand work to the server's main loop through a queue and one byte in a pipe per wake, not per call."""
    worker = Worker.__new__(Worker)  # only the hand-over, not a gunicorn process
    worker.calls = queue.SimpleQueue()
    worker.wake_read, worker.wake_write = os.pipe()
    os.set_blocking(worker.wake_read, False)
    worker.woken = False
    ran = []
    try:
        for number in range(100):
            worker.call_soon(ran.append, number)
        assert os.read(worker.wake_read, 4096) == b"\0"  # a hundred calls, one wake
        worker._run_calls(worker.wake_read)
        assert ran == list(range(100))
        worker.call_soon(ran.append, 100)  # a call after the loop ran wakes it again
        assert os.read(worker.wake_read, 4096) == b"\0"
        worker._run_calls(worker.wake_read)
        assert ran == list(range(101))
    finally:
        os.close(worker.wake_read)
        os.close(worker.wake_write)


def accepting_worker(enqueued: list) -> Worker:
    """A worker with what receiving a request needs; a request received whole is recorded, not run."""
    worker = Worker.__new__(Worker)
    worker.selector = selectors.DefaultSelector()
    worker.receiving = set()
    worker.header_timeout = worker.body_timeout = 10.0
    worker.connections = 1
    worker._enqueue = enqueued.append
    return worker


@pytest.fixture
def accepted():
    """A client's socket and the server's side of its connection (as ``accept`` returns it)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        sock, address = listener.accept()
    yield client, sock, address
    client.close()
    sock.close()


def test_a_request_already_in_when_accepted_goes_to_a_thread_without_the_selector(accepted):
    client, sock, address = accepted
    client.sendall(b"GET /bootstrap.ipxe HTTP/1.1\r\nHost: x\r\n\r\n")
    assert select.select([sock], [], [], 10)[0], "the request reached the server's side"
    enqueued: list = []
    worker = accepting_worker(enqueued)
    conn = Connection(Config(), sock, address, sock.getsockname())
    worker._receive_headers(conn, 10.0, arrived=True)
    assert enqueued == [conn]
    assert bytes(conn.request).startswith(b"GET /bootstrap.ipxe ")
    assert not worker.selector.get_map() and not worker.receiving


def test_a_connection_accepted_before_its_request_waits_in_the_selector(accepted):
    client, sock, address = accepted
    enqueued: list = []
    worker = accepting_worker(enqueued)
    conn = Connection(Config(), sock, address, sock.getsockname())
    worker._receive_headers(conn, 10.0, arrived=True)
    assert enqueued == [] and conn in worker.receiving and len(worker.selector.get_map()) == 1
    client.sendall(b"GET /bootstrap.ipxe HTTP/1.1\r\nHost: x\r\n\r\n")
    for key, _ in worker.selector.select(5):
        key.data(key.fileobj)
    assert enqueued == [conn] and not worker.selector.get_map()


def test_listeners_hand_over_connections_once_their_first_bytes_are_in():
    """TCP_DEFER_ACCEPT on every listener: a new connection's request is usually read as it is accepted."""
    worker = Worker.__new__(Worker)
    with socket.create_server(("127.0.0.1", 0)) as boot, socket.create_server(("127.0.0.1", 0)) as admin:
        worker.sockets = [boot, admin]
        worker._prepare_listeners()
        for listener in (boot, admin):
            assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) > 0
            assert not listener.getblocking()
