"""Dashboard sessions: a signed cookie that names an API token, a CSRF token, and an age.

The cookie (``kiwispray_session``, path ``/ui``) is signed with a key derived
from the site's secret key (``ks.core.vault``), so every worker process and every
server sharing the key file or ``KS_SECRET_KEY`` accepts it. It holds the id of
the token the operator logged in with (never the token), the token's count of
logouts when the session started, the session's CSRF token and when it
started; it is HttpOnly, SameSite=Lax, and Secure when the request came over
HTTPS. Each request looks the token up again: a revoked token ends its
sessions at once, a logout (which counts up the token's ``sessions_ended`` in
the database) ends every session of its token, a saved copy of the cookie
included, and a session older than ``KS_SESSION_LIFETIME`` asks for the token
again.
"""

import hashlib
import hmac
import secrets
import time

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer

from ks.core import vault

PREFIX = "/ui"
COOKIE = "kiwispray_session"
PURPOSE = "kiwispray dashboard sessions"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
ENDED = "ended"  # the token's count of logouts when the session started


def current(session, sessions_ended: int) -> bool:
    """Whether no logout has ended ``session`` since it started (its token's count is ``sessions_ended``)."""
    return session.get(ENDED, 0) == sessions_ended


class DashboardSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, only under /ui, with the site's derived key and lifetime."""

    salt = "kiwispray-ui"

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer:
        settings = app.extensions["kiwispray"].settings
        return URLSafeTimedSerializer(vault.of(settings).derive(PURPOSE), salt=self.salt, serializer=self.serializer,
                                      signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256})

    def open_session(self, app: Flask, request):
        # The boot side and the API never read a cookie (nor the key file for one).
        if not _under_ui(request.path):
            return None
        return super().open_session(app, request)

    def save_session(self, app: Flask, session, response) -> None:
        if not _under_ui(request.path):
            return
        super().save_session(app, session, response)

    def get_cookie_name(self, app: Flask) -> str:
        return COOKIE

    def get_cookie_path(self, app: Flask) -> str:
        return PREFIX

    def get_cookie_httponly(self, app: Flask) -> bool:
        return True

    def get_cookie_samesite(self, app: Flask) -> str:
        return "Lax"

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure


def _under_ui(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def start(session, token_id: int, ended: int) -> None:
    """A fresh session for the token with id ``token_id`` whose logouts are ``ended`` so far.

    Nothing of the session before it is kept.
    """
    session.clear()
    session.permanent = True
    session["tid"] = token_id
    session[ENDED] = ended
    session["t0"] = int(time.time())
    session[CSRF_FIELD] = secrets.token_urlsafe(32)


def csrf_token(session) -> str:
    """The session's CSRF token, made on first use (the login form has one too)."""
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return session[CSRF_FIELD]


def csrf_ok(session, sent: str | None) -> bool:
    """Whether ``sent`` is the session's CSRF token (constant-time)."""
    expected = session.get(CSRF_FIELD)
    return bool(expected and sent) and hmac.compare_digest(str(expected), str(sent))


def expired(session, lifetime: int) -> bool:
    """Whether the session started more than ``lifetime`` seconds ago."""
    started = session.get("t0")
    return not isinstance(started, int) or time.time() - started > lifetime
