"""What an application's views reach (``Runtime``), and the background jobs it starts under a server."""

import threading

from ks import jobs
from ks.boot import images
from ks.boot.render import Renderer
from ks.core import config, rules
from ks.core.config import Settings
from ks.core.ratelimit import FailedLogins, TokenBucket
from ks.fleet import feed
from ks.fleet.sitedb import open_database
from ks.records.counters import Metrics
from ks.records.db import Database


class Runtime:
    """What views need, built once per application (``ks.app.create_app``); views reach it as ``ks.web.runtime()``."""

    def __init__(self, settings: Settings, db: Database | None = None, registrations: TokenBucket | None = None,
                 metrics_dir: str | None = None, rules_file: rules.RulesFile | None = None):
        self.settings = settings
        self.db = db or open_database(settings)
        self.renderer = Renderer(settings.root, config.shipped("templates"), settings.template_check_interval)
        self.deploy_timeout = images.DeployTimeouts(settings.root, settings.deploy_timeout)
        # The enrollment rules, re-read when rules.toml changes: `kiwispray serve` read them before its
        # workers forked (and refused to start on a mistake), so each worker starts with the good ones.
        root = settings.root
        self.rules = rules_file or rules.RulesFile(
            rules.path_of(root), settings.rules_check_interval, lambda: images.image_names(root)
        )
        self.rules.current()
        # One bucket for all worker processes of `kiwispray serve` (made before they fork), else this app's own.
        self.registrations = registrations or TokenBucket(settings.registrations_per_minute)
        # Failed logins by source address (the dashboard's and the API's together), in this process.
        self.logins = FailedLogins(settings.login_failures_per_minute)
        # Counted in the directory shared by the worker processes of `kiwispray serve`, else in memory.
        self.metrics = Metrics(metrics_dir)
        # The history for event streams (the API's and the dashboard's): one poller for all of this
        # process's streams, and at most so many of them at once.
        self.feed = feed.reader(self.db)
        self.downloads = feed.Downloads(self.db)  # what the dashboard's streams add: the progress of downloads
        self.streams = threading.BoundedSemaphore(settings.event_streams)

    def start_jobs(self) -> None:
        """Start this process's background jobs (``ks.jobs``); ``kiwispray serve`` calls it in each worker."""
        jobs.start(self.db, self.settings, self.metrics, self.rules)
