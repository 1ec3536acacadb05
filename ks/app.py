"""The Flask application factory."""

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from flask import Flask, redirect, request, url_for
from werkzeug.exceptions import HTTPException

from ks import api, metrics, ui
from ks.api import pxepilot
from ks.boot import pixiecore
from ks.boot import views as boot
from ks.core import config
from ks.core.config import Settings
from ks.core.errors import KSError, Unavailable
from ks.core.ratelimit import TokenBucket
from ks.core.rules import RulesFile
from ks.records.db import Database
from ks.runtime import Runtime
from ks.ui.sessions import DashboardSessions
from ks.web import ADMIN, LISTENER, MAX_BODY_BYTES, operator_side, text

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | Mapping[str, Any] | None = None,
    db: Database | None = None,
    registrations: TokenBucket | None = None,
    metrics_dir: str | None = None,
    rules_file: RulesFile | None = None,
) -> Flask:
    """Build the application with ``settings``, or settings from defaults, environment, then these overrides.

    ``registrations`` is a bucket shared by several processes, ``metrics_dir``
    where they count, ``rules_file`` the enrollment rules as read before they
    forked (all made by ``kiwispray serve``).
    """
    app = Flask(__name__)
    if not isinstance(settings, Settings):
        settings = config.resolve(settings)
    # Boot requests are small; a larger body is refused with 413 before it is read.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    # '/images//etc/passwd' must reach the image view (and be refused), not be redirected.
    app.url_map.merge_slashes = False
    app.extensions["kiwispray"] = Runtime(settings, db, registrations, metrics_dir, rules_file)

    if settings.pxepilot_api:  # first: its GET /hosts is the one served (config refuses --public-hosts with it)
        app.register_blueprint(pxepilot.bp)
    app.register_blueprint(boot.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(pixiecore.bp)
    app.register_blueprint(ui.bp)
    app.session_interface = DashboardSessions()
    app.permanent_session_lifetime = timedelta(seconds=settings.session_lifetime)
    metrics.init_app(app)

    @app.get("/")
    def front_door():
        """The server's address alone, as an operator types it: the dashboard."""
        return redirect(url_for("ui.overview"))

    if settings.admin_port:

        @app.before_request
        def one_side_per_port():
            # With TLS, operators and machines meet the server on different ports (ks.server). PXE Pilot's
            # routes are on both: tokens over HTTPS, a machine's own 'local' deploy over plain HTTP.
            operator, admin_port = operator_side(request.path), request.environ.get(LISTENER) == ADMIN
            if operator and not admin_port:
                message = (f"the admin API and the dashboard are served over HTTPS on port {settings.admin_port} "
                           "only; this port serves booting machines")
                return api.error(message, 403) if request.path.startswith("/api/") else text(message + "\n", 403)
            if admin_port and not operator and not (settings.pxepilot_api and pxepilot.serves(request.path)):
                return text(f"{request.path[:200]} is served to booting machines over plain HTTP on the boot port, "
                            "not on the HTTPS admin port\n", 404)
            return None

    @app.after_request
    def no_body_no_type(response):
        # Flask gives every response a Content-Type, text/html by default; a
        # 204 has no content to have a type.
        if response.status_code == 204:
            response.headers.pop("Content-Type", None)
        return response

    @app.errorhandler(KSError)
    def ks_error(exc: KSError):
        if exc.status >= 500 and not isinstance(exc, Unavailable):  # the database reports those, once a while
            log.error("%s", exc)
        return text(f"{exc}\n", exc.status)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if request.path.startswith(f"{api.bp.url_prefix}/"):
            return api.error(exc.description or exc.name, exc.code or 500)
        response = exc.get_response()
        response.set_data(f"{exc.code} {exc.name}: {exc.description}\n")
        response.mimetype = "text/plain"
        return response

    return app
