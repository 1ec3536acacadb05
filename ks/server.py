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
        # Each worker builds its own application: engines are never shared across fork.
        return create_app(self.settings)


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
        # Image downloads go out with os.sendfile (see ks.files). Do not set
        # gunicorn's "sendfile": any value given there, True included, turns it
        # off. Long downloads are not cut by "timeout": gthread workers notify
        # the arbiter from their main loop, whatever their threads are doing.
        # Several servers may run on one machine; none needs gunicorn's control socket.
        "control_socket_disable": True,
    }
    Server(settings, options).run()
