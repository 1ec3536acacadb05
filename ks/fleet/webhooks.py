"""Webhooks: receivers of history events, what each delivery carries, and the delivery log.

A webhook keeps a cursor, the last event id it passed, into the history
(``events``): the history itself is the durable outbox. An event is written
once, by the boot path or an operator's change, in the same transaction as the
change it records, and nothing else is written for webhooks then; the sender
(``ks.fleet.sender``) reads the history after each webhook's cursor, delivers in id
order and moves the cursor only after the receiver answered 2xx (or the event
was given up). A restart or a crash resumes from the stored cursor: at least
once, in order. One consequence: a deleted host's history goes with it, and
its events not yet delivered are not delivered.
"""

import hashlib
import hmac
import json
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy import delete, desc, select
from sqlalchemy.orm import Session

from ks import __version__
from ks.core.errors import BadRequest, NotFound
from ks.core.vault import Vault
from ks.fleet import feed
from ks.records.events import EventKind
from ks.records.models import Event, Webhook, WebhookDelivery

# Names an operator may give besides the history's kinds: ``failed`` is a ``timeout`` line
# (the deploy deadline passed and the machine was flagged failed).
ALIASES = {"failed": EventKind.TIMEOUT.value}
KINDS = tuple(kind.value for kind in EventKind)
MAX_URL = 2048
# Attempts kept in the log of each webhook; older ones are dropped.
LOG_KEPT = 1000
SIGNATURE = "X-KIWIspray-Signature"
EVENT_ID = "X-KIWIspray-Event-Id"
EVENT_KIND = "X-KIWIspray-Event"
WEBHOOK_ID = "X-KIWIspray-Webhook"
# Seconds before the next attempt after the n-th failed one: 1, 2, 4, … at most MAX_BACKOFF.
MAX_BACKOFF = 300


def parse_url(url: str) -> str:
    """An http:// or https:// URL with a host; BadRequest otherwise."""
    if not isinstance(url, str) or len(url) > MAX_URL or any(c.isspace() or ord(c) < 32 for c in url):
        raise BadRequest(f"a webhook URL is http:// or https:// and at most {MAX_URL} characters without spaces")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018  (raises on a port that is no number)
    except ValueError:
        raise BadRequest(f"{url[:80]!r} has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"{url[:80]!r} is not an http:// or https:// URL with a host, e.g. https://ci.example/hook")
    return url


def parse_kinds(text: str | None) -> tuple[str, ...]:
    """``boot,finish,failed``: history kinds (and ``failed``); empty or None: every kind."""
    if not text:
        return ()
    kinds = []
    for word in (w.strip().lower() for w in text.split(",")):
        kind = ALIASES.get(word, word)
        if kind not in KINDS:
            raise BadRequest(f"{word[:32]!r} is not an event kind; choose from {', '.join((*KINDS, *ALIASES))}")
        if kind not in kinds:
            kinds.append(kind)
    return tuple(kinds)


def add(session: Session, url: str, kinds: tuple[str, ...], secret: str | None, vault: Vault) -> tuple[Webhook, str]:
    """A new webhook for the events from now on; returns it and its secret (made up when not given)."""
    if secret is not None and not 16 <= len(secret) <= 128:
        raise BadRequest("a webhook secret is 16 to 128 characters long")
    secret = secret or secrets.token_urlsafe(32)
    hook = Webhook(url=parse_url(url), kinds=",".join(kinds), secret=vault.encrypt(secret),
                   delivered_id=feed.last_id(session), attempts=0)
    session.add(hook)
    session.flush()
    return hook, secret


def all_webhooks(session: Session) -> list[Webhook]:
    """Every webhook, oldest first."""
    return list(session.scalars(select(Webhook).order_by(Webhook.id)))


def get(session: Session, webhook_id: int) -> Webhook:
    """The webhook ``webhook_id``; NotFound otherwise."""
    hook = session.get(Webhook, webhook_id)
    if hook is None:
        raise NotFound(f"no webhook {webhook_id}; `kiwispray webhook list` shows them")
    return hook


def remove(session: Session, webhook_id: int) -> Webhook:
    """Remove a webhook and its delivery log; nothing more is sent to it."""
    hook = get(session, webhook_id)
    session.delete(hook)
    return hook


def document(hook: Webhook) -> dict:
    """A webhook as JSON, without its secret."""
    return {"id": hook.id, "url": hook.url, "events": hook.kinds.split(",") if hook.kinds else [],
            "delivered_id": hook.delivered_id, "attempts": hook.attempts,
            "next_attempt_at": hook.next_attempt_at.isoformat() if hook.next_attempt_at else None,
            "created_at": hook.created_at.isoformat()}


def log(session: Session, webhook_id: int | None = None, limit: int = 50) -> list[dict]:
    """The newest ``limit`` attempts (of one webhook, or all), oldest first.

    ``kind`` is the event's kind, None when the event is gone with its host.
    """
    stmt = (select(WebhookDelivery, Event.kind).outerjoin(Event, Event.id == WebhookDelivery.event_id)
            .order_by(desc(WebhookDelivery.id)).limit(limit))
    if webhook_id is not None:
        get(session, webhook_id)
        stmt = stmt.where(WebhookDelivery.webhook_id == webhook_id)
    return [{"id": d.id, "webhook": d.webhook_id, "at": d.at.isoformat(), "event_id": d.event_id, "kind": kind,
             "attempt": d.attempt, "status": d.status, "error": d.error}
            for d, kind in reversed(list(session.execute(stmt)))]


def wants(hook_kinds: str, kind: str) -> bool:
    """Whether a webhook with ``hook_kinds`` (comma-separated, empty: all) wants events of ``kind``."""
    return not hook_kinds or kind in hook_kinds.split(",")


def body(event: dict) -> bytes:
    """What a delivery POSTs: the event's JSON document, as the history API shows it."""
    return json.dumps(event, sort_keys=True).encode()


def signature(secret: str, payload: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the body with the webhook's secret."""
    return "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def headers(webhook_id: int, event: dict, secret: str, payload: bytes) -> dict[str, str]:
    """The headers of one delivery: the signature, the event's id (to de-duplicate) and kind."""
    return {"Content-Type": "application/json", "User-Agent": f"kiwispray/{__version__}",
            SIGNATURE: signature(secret, payload), EVENT_ID: str(event["id"]), EVENT_KIND: event["kind"],
            WEBHOOK_ID: str(webhook_id)}


def backoff(attempts: int) -> timedelta:
    """The wait after ``attempts`` failed attempts at one event."""
    return timedelta(seconds=min(2 ** (attempts - 1), MAX_BACKOFF))


def record_attempt(session: Session, webhook_id: int, event_id: int, attempt: int, status: int | None,
                   error: str) -> None:
    """Log one attempt."""
    session.add(WebhookDelivery(webhook_id=webhook_id, event_id=event_id, attempt=attempt, status=status,
                                error=error[:255]))


def prune(session: Session, webhook_id: int) -> None:
    """Keep the newest LOG_KEPT attempts of a webhook in its log."""
    oldest = session.scalar(select(WebhookDelivery.id).where(WebhookDelivery.webhook_id == webhook_id)
                            .order_by(desc(WebhookDelivery.id)).offset(LOG_KEPT).limit(1))
    if oldest is not None:
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id,
                                                      WebhookDelivery.id <= oldest))
