"""The Flask application factory."""

import logging
import threading

from flask import Flask, request
from werkzeug.exceptions import HTTPException

from ks import config, feed, images
from ks.db import Database
from ks.errors import KSError
from ks.ratelimit import TokenBucket
from ks.render import Renderer
from ks.services import open_database
from ks.web import ADMIN, LISTENER, operator_side, text

log = logging.getLogger(__name__)


class Services:
    """What views need, built once per application."""

    def __init__(self, settings: dict, db: Database | None = None):
        self.settings = settings
        self.db = db or open_database(settings)
        self.renderer = Renderer(settings["ROOT"], config.shipped("templates"), settings["TEMPLATE_CHECK_INTERVAL"])
        self.deploy_timeout = images.DeployTimeouts(settings["ROOT"], settings["DEPLOY_TIMEOUT"])
        # One bucket for all worker processes of `kiwispray serve` (made before they fork), else this app's own.
        self.registrations = settings.get("REGISTRATIONS") or TokenBucket(settings["REGISTRATIONS_PER_MINUTE"])
        # The history for event streams: one poller for all of this process's streams, and at most so many of them.
        self.feed = feed.reader(self.db)
        self.streams = threading.BoundedSemaphore(settings["EVENT_STREAMS"])


def create_app(test_config: dict | None = None, db: Database | None = None) -> Flask:
    """Build the application: settings from defaults, environment, then ``test_config``."""
    app = Flask(__name__)
    settings = config.resolve(test_config)
    app.config.from_mapping(settings)
    # Boot requests are small; a larger body is refused with 413 before it is read.
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    # '/images//etc/passwd' must reach the image view (and be refused), not be redirected.
    app.url_map.merge_slashes = False
    app.extensions["kiwispray"] = Services(settings, db)

    # Imported here: ks.metrics must not be imported before ks.server has set up
    # the directory where worker processes count (see ks.metrics).
    from ks import api, boot, metrics, pixiecore

    app.register_blueprint(boot.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(pixiecore.bp)
    metrics.init_app(app)

    if settings["ADMIN_PORT"]:

        @app.before_request
        def one_side_per_port():
            # With TLS, operators and machines meet the server on different ports (ks.server).
            operator, admin_port = operator_side(request.path), request.environ.get(LISTENER) == ADMIN
            if operator and not admin_port:
                message = (f"the admin API and the dashboard are served over HTTPS on port {settings['ADMIN_PORT']} "
                           "only; this port serves booting machines")
                return api.error(message, 403) if request.path.startswith("/api/") else text(message + "\n", 403)
            if admin_port and not operator:
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
        if exc.status >= 500:
            log.error("%s", exc)
        return text(f"{exc}\n", exc.status)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if request.path.startswith(api.bp.url_prefix + "/"):
            return api.error(exc.description or exc.name, exc.code or 500)
        response = exc.get_response()
        response.set_data(f"{exc.code} {exc.name}: {exc.description}\n")
        response.mimetype = "text/plain"
        return response

    return app
