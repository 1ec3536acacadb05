"""Install progress: the phase of a machine's current boot, and how often a download's progress is written.

The phase is derived from the host record alone (one row: listings of
thousands of hosts read nothing else):

    booted -> downloading n % -> downloaded -> post-install fetched -> finished, or failed

``failed`` when the deadline check flagged the host; ``finished`` once the
boot called /finish (or the host is in ``finished``); ``waiting`` for a host
that boots no image now (``new``) or has not booted since its chain was set.
The download's bytes are written by ``Throttle``: at most every few seconds
or every 10 %, never per chunk; a restart loses at most the newest percentage.
"""

import time
from collections.abc import Callable

from ks.core import states

WAITING, BOOTED, DOWNLOADING, DOWNLOADED, POST_INSTALL, FINISHED, FAILED = (
    "waiting", "booted", "downloading", "downloaded", "post-install fetched", "finished", "failed")
PHASES = (WAITING, BOOTED, DOWNLOADING, DOWNLOADED, POST_INSTALL, FINISHED, FAILED)
SCHEMA = {"progress": {
    "type": "object", "required": ["phase", "percent"],
    "description": "How far the current boot got: " + ", ".join(PHASES),
    "properties": {"phase": {"type": "string", "enum": list(PHASES)},
                   "percent": {"type": "integer", "minimum": 0, "maximum": 100, "nullable": True}},
}}
# A download's progress is written when this many seconds or this share of the file passed since the last write.
WRITE_EVERY_SECONDS = 3.0
WRITE_EVERY_PERCENT = 10


def phase(host) -> dict:
    """``{"phase": ..., "percent": ...}`` of a ``HostRecord`` (ks.records.record; percent None where meaningless)."""
    current = host.current
    if host.failed:
        return {"phase": FAILED, "percent": None}
    if current == states.FINISHED or host.boot_finished:
        return {"phase": FINISHED, "percent": 100}
    booted = host.last_boot_at is not None and (host.chain_set_at is None or host.last_boot_at >= host.chain_set_at)
    if not states.is_image(current) or not booted:
        return {"phase": WAITING, "percent": None}
    if host.post_install_at is not None:
        return {"phase": POST_INSTALL, "percent": 100}
    if host.download_size:
        if host.download_sent >= host.download_size:
            return {"phase": DOWNLOADED, "percent": 100}
        return {"phase": DOWNLOADING, "percent": min(99, host.download_sent * 100 // host.download_size)}
    return {"phase": BOOTED, "percent": 0}


def describe(progress: dict) -> str:
    """A phase as people read it: ``downloading 42 %``."""
    if progress["phase"] == DOWNLOADING:
        return f"{DOWNLOADING} {progress['percent']} %"
    return progress["phase"]


class Throttle:
    """Calls ``write(sent)`` for a download of ``size`` bytes: first at once, then every few seconds or 10 %."""

    def __init__(self, size: int, write: Callable[[int], None], seconds: float = WRITE_EVERY_SECONDS,
                 percent: int = WRITE_EVERY_PERCENT, clock: Callable[[], float] = time.monotonic):
        self.size = size
        self.write = write
        self.seconds = seconds
        self.step = max(1, size * percent // 100)
        self.clock = clock
        self.written: int | None = None
        self.at = 0.0

    def __call__(self, sent: int) -> None:
        now = self.clock()
        if self.written is None or sent - self.written >= self.step or now - self.at >= self.seconds:
            self.written, self.at = sent, now
            self.write(sent)
