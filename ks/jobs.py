"""The application's background jobs, one thread each per server process: timeouts, rules, webhooks.

``kiwispray serve`` starts them in each worker once its application is built
(``Runtime.start_jobs``); the transport (``ks.server``) knows nothing of what
they do. Commands and tests that build an application start none.
"""

import logging
import random
import threading
import time

from ks.core.errors import Unavailable
from ks.core.rules import RulesFile
from ks.fleet import operations
from ks.fleet.sender import Sender
from ks.records.counters import Metrics
from ks.records.db import Database

log = logging.getLogger(__name__)


def start(db: Database, settings, metrics: Metrics, rules: RulesFile) -> None:
    """Start the jobs of one server process: the timeout checks, the look at rules.toml, the webhook sender."""
    if settings.timeout_check_interval:
        threading.Thread(target=check_timeouts, args=(db, metrics, settings.timeout_check_interval),
                         name="ks-timeouts", daemon=True).start()
    threading.Thread(target=watch_rules, args=(rules, settings.rules_check_interval), name="ks-rules",
                     daemon=True).start()
    # Every process runs one; a lease in the database lets one of them (of all servers) deliver.
    Sender(db, settings).start()


def watch_rules(watched: RulesFile, interval: float) -> None:
    """Look at rules.toml about every ``interval`` seconds (1 for 0), for as long as the process lives.

    Registrations look too, but a worker that registers nothing between two
    changes of the file would miss the one between: then, after a change with a
    mistake, the workers would keep different "last good" rules.
    """
    while True:
        time.sleep(interval or 1.0)
        try:
            watched.current()
        except Exception:  # a file system hiccup must not end the watch for good
            log.exception("looking at %s failed; trying again in %s s", watched.path, interval or 1.0)


def check_timeouts(db: Database, metrics: Metrics, interval: float) -> None:
    """Flag overdue machines about every ``interval`` seconds, for as long as the process lives."""
    while True:
        # Jitter: the workers of one server should not all check at the same moment.
        time.sleep(interval * random.uniform(0.8, 1.2))
        try:
            flagged = operations.check_timeouts(db, "server")
        except Unavailable:  # the database reports it, once a while
            continue
        except Exception:  # a database hiccup must not end the checks for good
            log.exception("timeout check failed; trying again in %s s", interval)
            continue
        for _host_id, state in flagged:
            metrics.timeouts.labels(state=state).inc()
