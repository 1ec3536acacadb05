"""The history as Server-Sent Events: ``GET /api/v1/events`` (role viewer)."""

from flask import Response, request

from ks.api import bp, needs
from ks.errors import BadRequest, KSError
from ks.roles import Action
from ks.values import is_decimal
from ks.web import runtime, send_timeout, step_aside

# Seconds of silence after which a stream gets a comment line, so that proxies and clients see it alive.
HEARTBEAT = 15.0
# What a client waits before reconnecting, in milliseconds (the SSE ``retry`` field).
RETRY_MS = 3000


class TooManyStreams(KSError):
    """This server process holds as many event streams as it is set up for."""

    status = 503
    exit_code = 1


@bp.get("/events")
@needs(Action.READ)
def event_stream():
    """Every history event from now on (or after ``Last-Event-ID`` / ``?after=``) as it happens."""
    after = _after()
    ks = runtime()
    if not ks.streams.acquire(blocking=False):
        raise TooManyStreams(f"this server process already serves {ks.settings.event_streams} event streams "
                             "(KS_EVENT_STREAMS); try again later or on another server")
    try:
        start = ks.feed.start_cursor() if after is None else after
    except Exception:
        ks.streams.release()
        raise
    # From here the request only waits on the history and the network: it no longer counts
    # as running, and a client that stops reading is dropped after the send timeout.
    step_aside()
    send_timeout(ks.settings.send_timeout or None)

    def frames():
        try:
            yield f"retry: {RETRY_MS}\n: connected, after event {start}\n\n".encode()
            yield from ks.feed.follow_frames(start, heartbeat=HEARTBEAT)
        finally:
            ks.streams.release()

    response = Response(frames(), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


def _after() -> int | None:
    """Where the client resumes: ``Last-Event-ID`` (a reconnecting EventSource), else ``?after=``; None: now."""
    value = request.headers.get("Last-Event-ID") or request.args.get("after")
    if value is None or value == "":
        return None
    if not is_decimal(value) or len(value) > 19:
        raise BadRequest(f"Last-Event-ID / after must be an event id (a non-negative integer), not {value[:40]!r}")
    return int(value)
