"""The webhook sender: a thread in every server process; the one holding the lease delivers.

Every worker process of every ``kiwispray serve`` sharing the database runs a
``Sender``. Once per round it looks whether there are webhooks at all (a read),
and if so whether it holds the ``webhooks`` row of ``leases``: a process claims
the lease when it has expired and renews it while it delivers, so one process
of all servers delivers at a time and another takes over ``LEASE_SECONDS``
after it died. The lease is judged by the servers' clocks, which must agree
within a few seconds; if two processes ever deliver at once, receivers see an
event twice (they de-duplicate by ``X-KIWIspray-Event-Id``), never out of order.

For each webhook the holder reads the history after the webhook's cursor,
passes what does not match its kinds, and POSTs the rest one by one, oldest
first. A 2xx moves the cursor; anything else (no answer within
``WEBHOOK_TIMEOUT``, a refused connection, a non-2xx status) is logged and the
webhook waits 1, 2, 4, … at most 300 seconds before the same event is tried
again; after ``WEBHOOK_ATTEMPTS`` attempts the event is given up (logged) and
the next one is sent. Deliveries never run in a request: a dead or hanging
receiver delays only its own webhook, and the other webhooks after it in the
same round, by the timeout.
"""

import http.client
import logging
import os
import random
import secrets
import socket
import threading
import time
from datetime import timedelta
from functools import partial
from urllib.parse import urlsplit

from sqlalchemy import CursorResult, or_, update
from sqlalchemy.orm import Session

from ks.core import vault
from ks.core.config import Settings
from ks.core.errors import SecretKeyError, Unavailable
from ks.fleet import feed, webhooks
from ks.records.db import Database
from ks.records.models import Lease, Webhook, utcnow

log = logging.getLogger(__name__)

LEASE = "webhooks"
LEASE_SECONDS = 15.0
# Seconds between two rounds of a sender.
ROUND = 0.5
BATCH = 100
# Deliveries logged (and the cursor moved) in one write: fewer writes beside the boots' own.
NOTE_EVERY = 50


class Sender:
    """Delivers history events to webhooks while this process holds the lease."""

    def __init__(self, db: Database, settings: Settings, round_seconds: float = ROUND):
        self.db = db
        self.timeout = settings.webhook_timeout
        self.max_attempts = settings.webhook_attempts
        self.vault = vault.of(settings)
        self.round_seconds = round_seconds
        self.holder = f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"
        self.holding = False
        self.lease_until = 0.0  # monotonic time until which this process surely holds the lease
        self.settle = feed.settle_time(db.engine.dialect.name)
        self.cursors: dict[int, feed.Cursor] = {}

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="ks-webhooks", daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        while True:
            time.sleep(self.round_seconds * random.uniform(0.8, 1.2))
            try:
                self.round()
            except Unavailable:  # the database reports it, once a while
                time.sleep(5)
            except Exception:  # a database hiccup must not end deliveries for good
                log.exception("webhook round failed; trying again in 5 s")
                time.sleep(5)

    def round(self) -> int:
        """Deliver what is due to every webhook, if this process holds the lease; how many were delivered."""
        with self.db.read() as session:
            hooks = [(h.id, h.url, h.kinds, h.secret, h.delivered_id, h.attempts, h.next_attempt_at)
                     for h in webhooks.all_webhooks(session)]
        if not hooks or not self.hold():
            return 0
        return sum(self.serve(*hook) for hook in hooks)

    def hold(self) -> bool:
        """Whether this process holds the lease, claiming or renewing it when needed (a write only then)."""
        if time.monotonic() < self.lease_until:
            return True
        now = utcnow()
        with self.db.read() as session:
            lease = session.get(Lease, LEASE)
            if lease is not None:
                if lease.holder == self.holder and lease.expires_at - now > timedelta(seconds=LEASE_SECONDS / 2):
                    self.lease_until = time.monotonic() + (lease.expires_at - now).total_seconds() - LEASE_SECONDS / 2
                    return True
                if lease.holder != self.holder and lease.expires_at > now:
                    self.holding = False
                    return False
        claimed = time.monotonic()
        held = self.db.write(self._claim)
        if held:
            self.lease_until = claimed + LEASE_SECONDS / 2
        if held and not self.holding:
            log.info("this process (%s) now delivers webhook events", self.holder)
        self.holding = held
        return held

    def _claim(self, session: Session) -> bool:
        now = utcnow()
        until = now + timedelta(seconds=LEASE_SECONDS)
        result: CursorResult = session.execute(  # type: ignore[assignment]
            update(Lease).where(Lease.name == LEASE, or_(Lease.holder == self.holder, Lease.expires_at <= now))
            .values(holder=self.holder, expires_at=until).execution_options(synchronize_session=False))
        if result.rowcount:
            return True
        if session.get(Lease, LEASE) is None:
            session.add(Lease(name=LEASE, holder=self.holder, expires_at=until))
            return True
        return False

    def serve(self, webhook_id: int, url: str, kinds: str, stored_secret: str, delivered: int, attempts: int,
              next_attempt_at) -> int:
        """Deliver the due events of one webhook in order, up to the first failure; how many were delivered."""
        if next_attempt_at is not None and next_attempt_at > utcnow():
            return 0
        cursor = self.cursors.get(webhook_id)
        if cursor is None or cursor.after != delivered:
            cursor = self.cursors[webhook_id] = feed.Cursor(delivered, self.settle)
        with self.db.read() as session:
            ready = cursor.take(feed.events_after(session, delivered, BATCH))
        if not ready:
            return 0
        try:
            secret: str | None = self.vault.decrypt(stored_secret)
            why = ""
        except SecretKeyError as exc:
            secret, why = None, str(exc).replace("BMC password", "webhook secret")
        passed = delivered
        attempts_made: list[tuple[int, int, int | None, str]] = []  # event id, attempt, status, error
        sent = 0
        for event in ready:
            if not webhooks.wants(kinds, event["kind"]):
                passed = event["id"]
                continue
            if not self.hold():
                break
            attempts += 1
            status, error = self.post(url, webhook_id, event, secret) if secret is not None else (None, why)
            ok = status is not None and 200 <= status < 300
            done = ok or attempts >= self.max_attempts
            if not ok and done:
                error = f"gave up after {attempts} attempts: {error}"
            attempts_made.append((event["id"], attempts, status, error))
            if not ok:
                log.warning("webhook %d: event %d, attempt %d: %s", webhook_id, event["id"], attempts, error)
            if not done:
                break
            passed = event["id"]
            attempts = 0
            sent += ok
            if len(attempts_made) >= NOTE_EVERY:  # the cursor moves in steps: a crash repeats at most one
                if not self.db.write(partial(self._note, webhook_id, attempts_made, passed, 0)):
                    self.cursors.pop(webhook_id, None)  # removed meanwhile
                    return sent
                attempts_made = []
        if (attempts_made or passed != delivered) and not self.db.write(
                partial(self._note, webhook_id, attempts_made, passed, attempts)):
            self.cursors.pop(webhook_id, None)
            return sent
        cursor.after = passed
        return sent

    @staticmethod
    def _note(webhook_id: int, attempts_made: list[tuple[int, int, int | None, str]], passed: int, failing: int,
              session: Session) -> bool:
        """Log the attempts, move the cursor to ``passed``; ``failing``: failed attempts at the next event."""
        hook = session.get(Webhook, webhook_id)
        if hook is None:
            return False
        for event_id, attempt, status, error in attempts_made:
            webhooks.record_attempt(session, webhook_id, event_id, attempt, status, error)
        if attempts_made:
            session.flush()
            webhooks.prune(session, webhook_id)
        hook.delivered_id = max(hook.delivered_id, passed)
        hook.attempts = failing
        hook.next_attempt_at = utcnow() + webhooks.backoff(failing) if failing else None
        return True

    def post(self, url: str, webhook_id: int, event: dict, secret: str) -> tuple[int | None, str]:
        """POST one event; the receiver's status (None: no answer) and what went wrong ("" for a 2xx)."""
        payload = webhooks.body(event)
        parts = urlsplit(url)
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = kind(parts.hostname or "", parts.port, timeout=self.timeout)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            headers = webhooks.headers(webhook_id, event, secret, payload)
            connection.request("POST", target, body=payload, headers=headers)
            response = connection.getresponse()
            response.read(64 * 1024)
            if 200 <= response.status < 300:
                return response.status, ""
            return response.status, f"HTTP {response.status} {response.reason}"[:200]
        except (OSError, http.client.HTTPException) as exc:
            return None, (str(exc) or type(exc).__name__)[:200]
        finally:
            connection.close()
