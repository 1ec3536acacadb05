"""A token bucket: at most N events a minute, bursts of up to N. Pure, apart from the clock.

``kiwispray serve`` makes one in shared memory before it starts its worker
processes, so that all of them draw from the same bucket (see ks.server).
"""

import multiprocessing
import threading
import time
from contextlib import AbstractContextManager
from typing import Any


class TokenBucket:
    """``per_minute`` tokens, refilled evenly over each minute; 0 means no limit."""

    def __init__(self, per_minute: int, clock=time.monotonic, shared: bool = False):
        self.per_minute = per_minute
        self.clock = clock
        # A process-shared or a thread lock: both are context managers (their types are unrelated).
        self._lock: AbstractContextManager[Any]
        if shared:  # inherited by processes forked from this one
            self._state = multiprocessing.RawArray("d", [per_minute, clock()])
            self._lock = multiprocessing.Lock()
        else:
            self._state = [float(per_minute), clock()]
            self._lock = threading.Lock()

    def take(self) -> bool:
        """Take one token if there is one: True if the event may happen now."""
        if not self.per_minute:
            return True
        with self._lock:
            now = self.clock()
            tokens = min(self.per_minute, self._state[0] + (now - self._state[1]) * self.per_minute / 60)
            self._state[1] = now
            if tokens < 1:
                self._state[0] = tokens
                return False
            self._state[0] = tokens - 1
            return True
