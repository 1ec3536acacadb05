"""The server's main loop and its threads (ks.server.Worker): how finished work is handed back."""

import os
import queue

from ks.server import Worker


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
