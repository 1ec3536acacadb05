"""Prometheus metrics at ``GET /metrics``.

Counters and the latency histogram count in the process that answered. Under
``kiwispray serve`` that is one of several worker processes, so they run in
prometheus_client's multiprocess mode: ``ks.server`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before any worker imports
this module, each worker keeps its counts in a file there, and a scrape adds
them up. The host gauges are read from the database at each scrape, so they
are exact whichever process or command changed a host.

Labels are state names and URL rules only: no bootid, MAC or serial.
"""

import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from ks import machines
from ks.web import services

# Our own registry rather than the global one: it holds only what we count, and
# the global one's process metrics would mean nothing summed over workers.
_OWN = CollectorRegistry()

BOOTS = Counter("kiwispray_boots", "Boot decisions (polls of waiting machines excluded), by the state booted.",
                ["state"], registry=_OWN)
REGISTRATIONS = Counter("kiwispray_registrations", "Machines registered on their first boot.", registry=_OWN)
CONFLICTS = Counter(
    "kiwispray_conflicts", "Boots refused because the identifiers belong to several hosts.", registry=_OWN
)
FINISHES = Counter("kiwispray_finishes", "Chains advanced by /finish, by the state finished.", ["state"], registry=_OWN)
TIMEOUTS = Counter(
    "kiwispray_timeouts",
    "Hosts this server flagged failed because /finish did not come in time, by state.",
    ["state"],
    registry=_OWN,
)
LATENCY = Histogram(
    "kiwispray_request_duration_seconds", "Time to answer a request, by URL rule.", ["endpoint"], registry=_OWN,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

bp = Blueprint("metrics", __name__)


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


class _Own:
    """This process's counters, for a process that serves alone (tests, one worker without a directory)."""

    def collect(self):
        return _OWN.collect()


@bp.get("/metrics")
def metrics():
    """Counters, latency and host gauges in Prometheus' text format (unauthenticated, no identifiers)."""
    ks = services()
    registry = CollectorRegistry()
    directory = ks.metrics_dir
    if directory:
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_Own())
    registry.register(HostGauges(ks.db))
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(registry), content_type=content_type)


def _started() -> None:
    g.ks_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.pop("ks_started", None)
    if started is not None:
        rule = request.url_rule.rule if request.url_rule else "unmatched"
        LATENCY.labels(endpoint=rule).observe(time.perf_counter() - started)
    return response


def init_app(app: Flask) -> None:
    """Serve /metrics and time every request."""
    app.register_blueprint(bp)
    app.before_request(_started)
    app.after_request(_observe)
