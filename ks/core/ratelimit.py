"""Token buckets: at most N events a minute, bursts of up to N. Pure, apart from the clock.

``kiwispray serve`` makes the registrations' bucket in shared memory before it
starts its worker processes, so that all of them draw from the same bucket (see
ks.server). ``FailedLogins`` keeps one bucket per source address of failed
logins, in each process.
"""

import multiprocessing
import threading
import time
from collections import OrderedDict
from contextlib import AbstractContextManager
from typing import Any

from ks.core.logs import Throttle


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
            tokens = self._tokens(now)
            self._state[1] = now
            if tokens < 1:
                self._state[0] = tokens
                return False
            self._state[0] = tokens - 1
            return True

    def wait(self) -> float:
        """Seconds until there is a token (0: there is one now); takes none."""
        if not self.per_minute:
            return 0.0
        with self._lock:
            tokens = self._tokens(self.clock())
        return max(0.0, (1 - tokens) * 60 / self.per_minute)

    def _tokens(self, now: float) -> float:
        return min(self.per_minute, self._state[0] + (now - self._state[1]) * self.per_minute / 60)


class FailedLogins:
    """Failed logins by source address: a ``TokenBucket`` of ``per_minute`` each, and what to log of them.

    A source that has used up its bucket waits (``wait``) before its next
    attempt is even checked; other sources are not affected. The log gets one
    line per source at most every ``report_every`` seconds, with the count of
    failures since the last one (``failed``). At most ``kept`` sources are
    remembered, the least recently failed forgotten first. 0 means no limit.
    """

    def __init__(self, per_minute: int, clock=time.monotonic, report_every: float = 60.0, kept: int = 4096):
        self.per_minute = per_minute
        self.clock = clock
        self.report_every = report_every
        self.kept = kept
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._reports = Throttle(report_every, clock, kept)
        self._lock = threading.Lock()

    def wait(self, source: str) -> float:
        """Seconds ``source`` must wait before its next attempt is checked (0: it may try now)."""
        with self._lock:
            bucket = self._buckets.get(source)
        return bucket.wait() if bucket is not None else 0.0

    def failed(self, source: str) -> int:
        """Count a failed (or held back) attempt of ``source``: how many failures to log now, 0 for none yet."""
        with self._lock:
            bucket = self._buckets.pop(source, None)
            if bucket is None:
                bucket = TokenBucket(self.per_minute, self.clock)
                while len(self._buckets) >= self.kept:
                    self._buckets.popitem(last=False)
            self._buckets[source] = bucket  # the most recent last
            bucket.take()
        held = self._reports.due(source)
        return 0 if held is None else held + 1
