"""The dashboard's pages: login, fleet overview, host, images, webhooks, and the live event stream."""

import json
import time
from urllib.parse import unquote, urlsplit

from flask import g, redirect, render_template, request, session, url_for

from ks import sse
from ks.boot import render
from ks.core import progress, roles, states
from ks.core.errors import BadRequest, Forbidden
from ks.core.values import is_decimal
from ks.fleet import deploys, feed, machines, present, tokens, webhooks
from ks.kiwi import inventory
from ks.power import hosts as host_power
from ks.records.record import HostRecord
from ks.ui import bp, may, sessions
from ks.web import MAX_ID, login_failed, one, origin_from_base_url, refuse_if_held_back, runtime, step_aside

PAGE_SIZES = (25, 50, 100, 200)
MAX_FILTER = 200  # characters of a filter value
HISTORY_SHOWN = 200  # newest history lines on a host page
LOG_SHOWN = 100  # newest delivery attempts of each webhook on the webhooks page
PROGRESS_EVERY = 2.0  # seconds between two progress frames of the event stream
# What the login page may say above its form (by key: a link cannot put words of its own there).
NOTES = {"expired": "your session expired; log in again", "logged-out": "logged out"}
# The overview's own query parameters: only these are carried into its links (filters, sort, size, power).
QUERY = ("state", "label", "q", "sort", "dir", "per", "power")


@bp.get("/login")
def login():
    """The login form: one field, the API token."""
    return render_template("login.html", note=NOTES.get(one("note") or ""), next=dashboard_path(one("next")))


@bp.post("/login")
def login_post():
    """Check the token; a fresh session for it, then where the operator was going."""
    refuse_if_held_back("dashboard")
    given = (request.form.get("token") or "").strip()
    found = runtime().db.write(lambda unit: _token_id(tokens.verify(unit, given)))
    if found is None:
        login_failed("dashboard")
        return render_template("login.html", error="that token is not valid (or was revoked)",
                               next=dashboard_path(request.form.get("next"))), 401
    sessions.start(session, *found)
    return redirect(dashboard_path(request.form.get("next")) or url_for("ui.overview"))


def _token_id(token) -> tuple[int, int] | None:
    return (token.id, token.sessions_ended) if token is not None else None


def dashboard_path(target: str | None) -> str | None:
    """``target`` if it is a path of the dashboard, else None.

    Never another site, never a path that leaves ``/ui/`` by ``..``, and only
    printable ASCII: no CR/LF for a header, no space or tab a browser would drop.
    """
    if not target or not all("!" <= c <= "~" for c in target) or "\\" in target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(sessions.PREFIX + "/"):
        return None
    if {".", ".."} & set(unquote(parts.path).split("/")):
        return None
    return target


@bp.post("/logout")
def logout():
    """End the session here and wherever its cookie was kept: every session of its token ends."""
    token_id = session["tid"]
    runtime().db.write(lambda unit: tokens.end_sessions(unit, token_id))
    session.clear()
    return redirect(url_for("ui.login", note="logged-out"))


def _int(name: str, default: int, low: int, high: int) -> int:
    value = one(name)
    if value is None or value == "":
        return default
    if not is_decimal(value) or not low <= int(value) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}")
    return int(value)


def _filter(name: str) -> str | None:
    value = (one(name) or "").strip()
    if len(value) > MAX_FILTER:
        raise BadRequest(f"{name} is longer than {MAX_FILTER} characters")
    return value or None


def selection() -> machines.Selection:
    """The overview's filters from the query: state, label (key=value), q (free text)."""
    state, label, text = _filter("state"), _filter("label"), _filter("q")
    if state is not None:
        states.parse_chain(state)
    pair = None
    if label is not None:
        key, equals, value = label.partition("=")
        if not equals or not key.strip():
            raise BadRequest("a label filter is key=value, e.g. rack=4")
        pair = (key.strip(), value.strip())
    return machines.Selection(state, pair, text)


@bp.get("/")
def overview():
    """Counts by state (failed first) and one page of the filtered, sorted host table."""
    chosen = selection()
    sort = one("sort") or "failed"
    if sort not in machines.SORTS:
        raise BadRequest(f"sort must be one of {', '.join(machines.SORTS)}")
    descending = one("dir") == "desc"
    per = _int("per", 50, 1, max(PAGE_SIZES))
    page = _int("page", 1, 1, 10**9)
    with runtime().db.read() as unit:
        counts = machines.state_counts(unit)
        hosts, total = machines.page_hosts(unit, chosen, sort, descending, (page - 1) * per, per)
    power = {}
    if one("power") == "1":
        step_aside()  # BMCs may take seconds; boots go on meanwhile
        power = host_power.power_states(hosts, runtime().settings)
    failed = sum(f for _, f in counts.values())
    ordered = sorted(counts.items(), key=lambda item: (-item[1][1], item[0]))
    return render_template(
        "overview.html", hosts=hosts, rows=[_row(h) for h in hosts], total=total, counts=ordered, failed=failed,
        fleet=sum(n for n, _ in counts.values()), chosen=chosen, sort=sort, descending=descending, per=per, page=page,
        pages=max(1, -(-total // per)), power=power, power_shown=one("power") == "1",
        configurations=deploys.configurations(runtime().settings.root), page_sizes=PAGE_SIZES,
        query={key: value for key in QUERY if (value := one(key)) is not None},
    )


def _row(host: HostRecord) -> dict:
    return {"host": host, "progress": progress.phase(host), "macs": ", ".join(host.macs)}


@bp.get("/hosts/<int:host_id>/row")
def host_row(host_id: int):
    """One row of the overview's table, for live updates."""
    with runtime().db.read() as unit:
        host = HostRecord.of(machines.get_host(unit, host_id))
    return render_template("_row.html", row=_row(host), power={}, selectable=may(roles.Action.OPERATE.value))


@bp.get("/counts")
def counts_fragment():
    """The overview's counts, for live updates."""
    with runtime().db.read() as unit:
        counts = machines.state_counts(unit)
    ordered = sorted(counts.items(), key=lambda item: (-item[1][1], item[0]))
    return render_template("_counts.html", counts=ordered, failed=sum(f for _, f in counts.values()),
                           fleet=sum(n for n, _ in counts.values()), chosen=machines.Selection())


@bp.get("/hosts/<int:host_id>")
def host_page(host_id: int):
    """Identity, chain, metadata, labels, facts, BMC (never its password), history, and the script it would get now."""
    return render_template("host.html", **_host_context(host_id))


@bp.get("/hosts/<int:host_id>/live")
def host_live(host_id: int):
    """The changing parts of a host page, for live updates."""
    return render_template("_host_live.html", **_host_context(host_id))


def _host_context(host_id: int) -> dict:
    if not 0 < host_id <= MAX_ID:
        raise BadRequest(f"host id {host_id} is out of range")
    ks = runtime()
    with ks.db.read() as unit:
        host = HostRecord.of(machines.get_host(unit, host_id))
        events = [present.event_dict(e) for e in machines.history(unit, host_id, HISTORY_SHOWN)]
    base_url = ks.settings.base_url or render.PLACEHOLDER_URL
    where = origin_from_base_url(base_url, ks.settings.poll_interval, strict=False)
    try:
        script = render.script_now(ks.renderer, host, where)
        script_text, template = script.text, script.template
    except Exception as exc:  # a broken site template is shown, not a 500 of the page
        script_text, template = f"# cannot render: {exc}", "-"
    return {"host": host, "progress": progress.phase(host), "events": list(reversed(events)), "script": script_text,
            "template": template, "placeholder": not ks.settings.base_url,
            "configurations": deploys.configurations(ks.settings.root),
            "metadata": json.dumps(host.meta, indent=2, sort_keys=True, ensure_ascii=False)}


@bp.get("/images")
def images_page():
    """What `kiwispray image list` shows: kind, size, checksum verdict, missing files."""
    rows = inventory.describe_all(runtime().settings.root)
    return render_template("images.html", images=rows)


@bp.get("/webhooks")
def webhooks_page():
    """What `kiwispray webhook list` and `webhook log ID` show (never a secret); admins only, as the CLI is."""
    if not may(roles.Action.ADMINISTER.value):
        raise Forbidden(f"a {g.role.label} session may not see webhooks; that needs an admin role")
    with runtime().db.read() as unit:
        hooks = [(webhooks.document(hook), list(reversed(webhooks.log(unit, hook.id, LOG_SHOWN))))
                 for hook in webhooks.all_webhooks(unit)]
        newest = feed.last_id(unit)
    return render_template("webhooks.html", hooks=hooks, newest=newest, shown=LOG_SHOWN)


@bp.get("/events")
def events():
    """The event stream of ``ks.sse`` for open pages, with the progress of downloads in flight.

    ``event: progress`` frames carry ``[{"id", "phase", "percent"}]`` of the hosts
    downloading now whose progress moved, every ``PROGRESS_EVERY`` seconds at most.
    The stream ends with ``event: ended`` when the token is revoked, a logout ended
    the session or it expires (the page then asks for the token again).
    """
    downloads, lifetime = runtime().downloads, runtime().settings.session_lifetime
    started = dict(session)
    shown: dict[int, tuple] = {}  # what this stream last sent of each download
    last = time.monotonic()

    def moved() -> bytes:
        nonlocal shown, last
        now = time.monotonic()
        if now - last < PROGRESS_EVERY:
            return b""
        last = now
        moving = downloads.now()
        fresh = [m for m in moving if shown.get(m["id"]) != (m["phase"], m["percent"])]
        shown = {m["id"]: (m["phase"], m["percent"]) for m in moving}
        return f"event: progress\ndata: {json.dumps(fresh)}\n\n".encode() if fresh else b""

    def ended(token) -> bool:
        return not sessions.current(started, token.sessions_ended) or sessions.expired(started, lifetime)

    return sse.stream(session["tid"], ended=ended, extra=moved)


@bp.app_template_filter("when")
def when(value) -> str:
    """A time as operators read it in a table: 2026-12-06 14:02:11 (UTC)."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


@bp.app_template_filter("size")
def size(value: int) -> str:
    """A byte count for people: 512B, 1.5K, 48.0M."""
    return present.human_size(value)


@bp.app_template_global("describe")
def describe(phase: dict) -> str:
    return progress.describe(phase)

