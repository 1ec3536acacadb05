"""Metrics are made with the application: multiprocess mode whatever was imported first."""

import subprocess
import sys
import textwrap

from helpers import REPO

# Runs in a fresh interpreter: multiprocess mode is a process-wide switch of prometheus_client.
PROGRAM = textwrap.dedent("""
    import sys
    import prometheus_client            # imported long before the directory exists
    import ks.app, ks.records.counters, ks.metrics, ks.server
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    metrics = ks.records.counters.Metrics(sys.argv[1])
    metrics.boots.labels(state="new").inc(3)
    metrics.latency.labels(endpoint="/bootstrap").observe(0.01)
    # What another worker's scrape reads: the files in the directory, not this process's memory.
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=sys.argv[1])
    print(registry.get_sample_value("kiwispray_boots_total", {"state": "new"}),
          registry.get_sample_value("kiwispray_request_duration_seconds_count", {"endpoint": "/bootstrap"}))
""")


def test_metrics_with_a_directory_count_in_its_files_whatever_was_imported_first(tmp_path):
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3.0", "1.0"]
    assert sorted(p.name.split("_")[0] for p in tmp_path.glob("*.db")) == ["counter", "histogram"]


def test_metrics_without_a_directory_count_in_memory(tmp_path):
    from ks.records.counters import Metrics

    first, second = Metrics(), Metrics()
    first.boots.labels(state="new").inc()
    assert first.registry.get_sample_value("kiwispray_boots_total", {"state": "new"}) == 1
    assert second.registry.get_sample_value("kiwispray_boots_total", {"state": "new"}) is None
