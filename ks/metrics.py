"""Prometheus metrics at ``GET /metrics``: the counters of ``ks.records.counters.Metrics`` and the host gauges.

The host gauges are read from the database at each scrape, so they are exact
whichever process or command changed a host.

Labels are state names and URL rules only: no bootid, MAC or serial.
"""

import time

from flask import Blueprint, Flask, Response, request
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from ks.fleet import machines
from ks.records.counters import Metrics
from ks.web import runtime

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


# When the application began a request, kept in its WSGI environment (cheaper to reach than ``flask.g``).
STARTED = "kiwispray.started"


def _started() -> None:
    request.environ[STARTED] = time.perf_counter()


def _observe(response: Response) -> Response:
    started = request.environ.pop(STARTED, None)
    if started is not None:
        rule = request.url_rule.rule if request.url_rule else "unmatched"
        runtime().metrics.took(rule, time.perf_counter() - started)
    return response


def init_app(app: Flask) -> None:
    """Serve /metrics and time every request."""
    app.register_blueprint(bp)
    app.before_request(_started)
    app.after_request(_observe)
