"""Prometheus metrics at ``GET /metrics``, made by ``Metrics`` when the application is created.

Counters and the latency histogram count in the process that answered. Under
``kiwispray serve`` that is one of several worker processes, so they run in
prometheus_client's multiprocess mode: ``ks.server`` makes a fresh directory
before the workers start and each worker's application builds its
``Metrics(directory)``, which keeps the counts in a file there; a scrape adds
them up. Without a directory (one process: tests, ``flask run``) they count in
memory. Nothing depends on which module is imported first. The host gauges are
read from the database at each scrape, so they are exact whichever process or
command changed a host.

Labels are state names and URL rules only: no bootid, MAC or serial.
"""

import os
import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from ks import machines
from ks.web import runtime


class Metrics:
    """What this application counts, in its own registry (never the global one).

    With ``directory`` the counts go to this process's file there, for a scrape
    of any worker to add up (prometheus_client's multiprocess mode); it is one
    process-wide switch of the library, so a process holds at most one such
    ``Metrics`` (``kiwispray serve`` builds one per worker, after the fork).
    """

    def __init__(self, directory: str | None = None):
        self.directory = directory
        if directory is not None:
            # prometheus_client decides between in-memory and file-backed values when
            # a value is made (values.ValueClass), and finds the files' directory in the
            # environment; both are set here, before the first metric below.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
            values.ValueClass = values.MultiProcessValue()
        self.registry = CollectorRegistry()
        own = self.registry
        self.boots = Counter(
            "kiwispray_boots", "Boot decisions (polls of waiting machines excluded), by the state booted.", ["state"],
            registry=own,
        )
        self.registrations = Counter("kiwispray_registrations", "Machines registered on their first boot.",
                                     registry=own)
        self.conflicts = Counter(
            "kiwispray_conflicts", "Boots refused because the identifiers belong to several hosts.", registry=own
        )
        self.finishes = Counter("kiwispray_finishes", "Chains advanced by /finish, by the state finished.", ["state"],
                                registry=own)
        self.timeouts = Counter(
            "kiwispray_timeouts", "Hosts this server flagged failed because /finish did not come in time, by state.",
            ["state"], registry=own,
        )
        self.latency = Histogram(
            "kiwispray_request_duration_seconds", "Time to answer a request, by URL rule.", ["endpoint"], registry=own,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )

    def counted(self) -> CollectorRegistry:
        """What a scrape shows of the counters: every worker's (from the directory), else this process's."""
        if self.directory is None:
            return self.registry
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.directory)
        return registry


bp = Blueprint("metrics", __name__)


class Counted:
    """The counters and the latency histogram of ``Metrics``, as a collector of a scrape's registry."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        return self.metrics.counted().collect()


class HostGauges:
    """Hosts by current state, and failed hosts by state, read from the database."""

    def __init__(self, db):
        self.db = db

    def collect(self):
        hosts = GaugeMetricFamily("kiwispray_hosts", "Hosts by current state.", labels=["state"])
        failed = GaugeMetricFamily("kiwispray_failed_hosts", "Hosts flagged failed, waiting for a retry, by state.",
                                   labels=["state"])
        with self.db.read() as session:
            counts = machines.state_counts(session)
        for state, (total, failing) in sorted(counts.items()):
            hosts.add_metric([state], total)
            failed.add_metric([state], failing)
        yield hosts
        yield failed


@bp.get("/metrics")
def metrics():
    """Counters, latency and host gauges in Prometheus' text format (unauthenticated, no identifiers)."""
    ks = runtime()
    registry = CollectorRegistry()
    registry.register(Counted(ks.metrics))
    registry.register(HostGauges(ks.db))
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(registry), content_type=content_type)


def _started() -> None:
    g.ks_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.pop("ks_started", None)
    if started is not None:
        rule = request.url_rule.rule if request.url_rule else "unmatched"
        runtime().metrics.latency.labels(endpoint=rule).observe(time.perf_counter() - started)
    return response


def init_app(app: Flask) -> None:
    """Serve /metrics and time every request."""
    app.register_blueprint(bp)
    app.before_request(_started)
    app.after_request(_observe)
