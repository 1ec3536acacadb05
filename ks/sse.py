"""The one event stream: the history as Server-Sent Events, which ``/api/v1/events`` and ``/ui/events`` both wrap.

A stream costs boots nothing and is bounded the same way whoever opens it:

- at most ``KS_EVENT_STREAMS`` are open in a server process, the API's and the
  dashboard's together; one more is answered 503 (``TooManyStreams``), and the
  server keeps that many threads for streams beyond ``--threads``;
- it steps aside (``ks.web.step_aside``): an open stream holds no running slot;
- a client that stops reading is dropped after ``KS_SEND_TIMEOUT`` seconds;
- it follows the process's one poller (``ks.fleet.feed.Poller.follow_frames``): a frame
  is made once per event for all streams;
- every ``RECHECK`` seconds it looks its token up again: a revoked token (or, for
  the dashboard, an expired or logged-out session) ends it with ``event: ended``.
"""

import logging
import time
from collections.abc import Callable, Iterator

from flask import Response, request

from ks.core.errors import BadRequest, TooManyStreams
from ks.core.logs import Throttle
from ks.core.values import is_decimal
from ks.fleet import tokens
from ks.records.models import ApiToken
from ks.web import runtime, send_timeout, step_aside

# Seconds of silence after which a stream gets a comment line, so that proxies and clients see it alive.
log = logging.getLogger(__name__)
# Refused streams are logged once a minute per process, with how many there were.
_REFUSALS = Throttle(60.0)
HEARTBEAT = 15.0
# What a client waits before reconnecting, in milliseconds (the SSE ``retry`` field).
RETRY_MS = 3000
# Seconds between two looks at a stream's token: a revoked token's stream ends within about this time.
RECHECK = 10.0
# Seconds a stream waits for events before it checks its token and sends what its view adds.
TICK = 1.0
ENDED = b"event: ended\ndata: {}\n\n"


def resume_point() -> int | None:
    """Where the client resumes: ``Last-Event-ID`` (a reconnecting EventSource), else ``?after=``; None: now."""
    value = request.headers.get("Last-Event-ID") or request.args.get("after")
    if value is None or value == "":
        return None
    if not is_decimal(value) or len(value) > 19:
        raise BadRequest(f"Last-Event-ID / after must be an event id (a non-negative integer), not {value[:40]!r}")
    return int(value)


def stream(token_id: int, ended: Callable[[ApiToken], bool] = lambda token: False,
           extra: Callable[[], bytes] = lambda: b"") -> Response:
    """The history after the resume point (or from now on) for the reader holding the token ``token_id``.

    ``ended`` is asked with the token, every ``RECHECK`` seconds: True ends the stream (the dashboard's
    session expired or was logged out). ``extra`` is asked at most every ``TICK`` seconds for frames its view adds (the
    dashboard's download progress); empty: none.
    """
    after = resume_point()
    ks = runtime()
    if not ks.streams.acquire(blocking=False):
        held = _REFUSALS.due("streams")
        if held is not None:  # a flood of streams writes a line a minute, not one each
            more = f" ({held} more since the last report)" if held else ""
            log.warning("event stream refused: %s are open in this process (KS_EVENT_STREAMS)%s",
                        ks.settings.event_streams, more, extra={"event": "streams"})
        raise TooManyStreams(f"this server process already serves {ks.settings.event_streams} event streams "
                             "(KS_EVENT_STREAMS, the API's and the dashboard's together); "
                             "try again later or on another server")
    try:
        start = ks.feed.start_cursor() if after is None else after
    except Exception:
        ks.streams.release()
        raise
    # From here the request only waits on the history and the network: it no longer counts
    # as running, and a client that stops reading is dropped after the send timeout.
    step_aside()
    send_timeout(ks.settings.send_timeout or None)

    def live() -> bool:
        try:
            with ks.db.read() as unit:
                token = tokens.live(unit, token_id)
                return token is not None and not ended(token)
        except Exception:  # the database is away for a moment: the next look decides
            return True

    def frames() -> Iterator[bytes]:
        try:
            yield f"retry: {RETRY_MS}\n: connected, after event {start}\n\n".encode()
            sent = checked = time.monotonic()
            for chunk in ks.feed.follow_frames(start, wake=TICK):
                now = time.monotonic()
                if now - checked >= RECHECK:
                    checked = now
                    if not live():
                        yield ENDED
                        return
                chunk += extra()
                if not chunk and now - sent >= HEARTBEAT:
                    chunk = b": heartbeat\n\n"
                if chunk:
                    sent = now
                    yield chunk
        finally:
            ks.streams.release()

    response = Response(frames(), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response
