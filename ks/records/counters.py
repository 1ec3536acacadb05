"""What the application counts (``Metrics``): counters and the latency histogram, no web framework.

Counters and the latency histogram count in the process that answered. Under
``kiwispray serve`` that is one of several worker processes, so they run in
prometheus_client's multiprocess mode: ``ks.server`` makes a fresh directory
before the workers start and each worker's application builds its
``Metrics(directory)``, which keeps the counts in a file there; a scrape adds
them up. Without a directory (one process: tests, ``flask run``) they count in
memory. Nothing depends on which module is imported first. ``ks.metrics``
serves them at ``GET /metrics``.

Labels are state names and URL rules only: no bootid, MAC or serial.
"""

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, values


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
        self._latency_of: dict[str, Histogram] = {}  # see took()

    def took(self, endpoint: str, seconds: float) -> None:
        """Count a request to ``endpoint`` (a URL rule) that took ``seconds``."""
        child = self._latency_of.get(endpoint)
        if child is None:  # a URL rule's child once; labels() takes a lock and checks its values each time
            child = self._latency_of[endpoint] = self.latency.labels(endpoint=endpoint)
        child.observe(seconds)

    def counted(self) -> CollectorRegistry:
        """What a scrape shows of the counters: every worker's (from the directory), else this process's."""
        if self.directory is None:
            return self.registry
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.directory)
        return registry
