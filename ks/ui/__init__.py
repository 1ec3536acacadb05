"""The dashboard under /ui/: server-rendered pages for operators, a little JavaScript, live updates by SSE.

Who may see and do what is the API's table (``ks.core.roles.allows``): a session
carries the role of the token it was opened with, looked up on every request.
Views are thin: they parse a form or query, call the domain modules
(``ks.fleet.machines``, ``ks.fleet.change``, ``ks.power.hosts``, ``ks.kiwi.inventory``,
``ks.boot.render``) in one unit of work, and render a template of
``ks/ui/templates``.
"""

import logging

from flask import Blueprint, Response, g, redirect, render_template, request, session, url_for

from ks.core import roles
from ks.core.errors import KSError, TooManyStreams, Unavailable
from ks.fleet import tokens
from ks.records.events import EventKind
from ks.ui import sessions
from ks.web import runtime

log = logging.getLogger(__name__)
bp = Blueprint("ui", __name__, url_prefix=sessions.PREFIX, template_folder="templates",
               static_folder="static", static_url_path="/static")
OPEN = {"ui.login", "ui.login_post", "ui.static"}  # what needs no session
SOURCE = "ui"  # how the history records changes made here
# Every kind of history line, as the page's script listens for them (``data-kinds`` of each page).
EVENT_KINDS = " ".join(EventKind)


@bp.before_request
def authenticate():
    """Every page but the login needs a live session; every POST its CSRF token."""
    if request.method == "POST":
        sent = request.form.get(sessions.CSRF_FIELD) or request.headers.get(sessions.CSRF_HEADER)
        if not sessions.csrf_ok(session, sent):
            return page_error("this form is stale or was not sent from the dashboard (no valid CSRF token); "
                              "reload the page and try again", 403)
    if request.endpoint in OPEN:
        return None
    token = None
    if "tid" in session:
        if sessions.expired(session, runtime().settings.session_lifetime):
            session.clear()
            return _to_login("expired")
        with runtime().db.read() as unit:
            token = live_token(unit, session)
    if token is None:
        session.pop("tid", None)
        if request.method == "GET" and request.endpoint != "ui.events":
            return _to_login(None)
        return page_error("log in first: your session ended or the token was revoked", 401)
    g.token_name, g.role = token
    return None


def live_token(unit, session) -> tuple[str, roles.Role] | None:
    """The name and role of the session's token if it is not revoked and no logout ended the session."""
    token = tokens.live(unit, session["tid"])
    if token is None or not sessions.current(session, token.sessions_ended):
        return None
    return token.name, tokens.role_of(token)


def _to_login(note: str | None):
    """To the login page, and back here afterwards; ``note`` a key of ``views.NOTES``."""
    target = url_for("ui.login", next=request.full_path if request.method == "GET" else None, note=note)
    return redirect(target)


def may(action: str) -> bool:
    """Whether this session's role may do ``action`` (a ``ks.core.roles.Action`` value); templates ask it too."""
    role = g.get("role")
    return role is not None and roles.allows(role, roles.Action(action))


@bp.app_template_global("csrf_token")
def csrf_token() -> str:
    return sessions.csrf_token(session)


@bp.context_processor
def who():
    return {"role": g.get("role"), "token_name": g.get("token_name"), "may": may, "event_kinds": EVENT_KINDS}


def page_error(message: str, status: int) -> Response:
    """An error as a page of the dashboard."""
    return Response(render_template("error.html", message=message, status=status), status, mimetype="text/html")


@bp.errorhandler(KSError)
def ks_error(exc: KSError):
    # The database reports its refusals, and the stream its own, once a while.
    if exc.status >= 500 and not isinstance(exc, (Unavailable, TooManyStreams)):
        log.error("%s", exc)
    response = page_error(str(exc), exc.status)
    response.headers.update(exc.headers())
    return response


@bp.after_request
def headers(response: Response) -> Response:
    # Pages of an operator's session: never cached, never framed, scripts only from here.
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'")
    return response


from ks.ui import actions, views  # noqa: E402,F401  (routes register on bp)
