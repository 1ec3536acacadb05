"""``kiwispray serve``: the application under gunicorn (threads in a few worker processes)."""

import logging

from gunicorn.app.base import BaseApplication

from ks.app import create_app

log = logging.getLogger(__name__)


class Server(BaseApplication):
    """gunicorn configured from arguments instead of a config file or argv."""

    def __init__(self, settings: dict, options: dict):
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            if key in self.cfg.settings:  # newer gunicorn knows more settings
                self.cfg.set(key, value)

    def load(self):
        # Runs in each worker, which builds its own application and timeout
        # checker: engines are never shared across fork.
        from ks import timeouts

        app = create_app(self.settings)
        if self.settings["TIMEOUT_CHECK_INTERVAL"]:
            timeouts.Checker(app.extensions["kiwispray"].db, self.settings["TIMEOUT_CHECK_INTERVAL"]).start()
        return app


def run(settings: dict, host: str, port: int, workers: int, threads: int, access_log: bool) -> None:
    """Serve until SIGTERM or SIGINT; gunicorn finishes requests in flight, then exits."""
    options = {
        "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "graceful_timeout": 10,
        "timeout": 120,
        "keepalive": 5,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "kiwispray",
        # Long image downloads must not be cut by the worker timeout; gthread
        # workers notify the arbiter independently of request length.
        "sendfile": True,
        # Several servers may run on one machine; none needs gunicorn's control socket.
        "control_socket_disable": True,
    }
    Server(settings, options).run()
