"""The history as Server-Sent Events: ``GET /api/v1/events`` (role viewer), the one stream of ``ks.sse``."""

from flask import g

from ks import sse
from ks.api import bp, needs
from ks.core.roles import Action


@bp.get("/events")
@needs(Action.READ)
def event_stream():
    """Every history event from now on (or after ``Last-Event-ID`` / ``?after=``), while the token lives."""
    return sse.stream(g.token_id)
