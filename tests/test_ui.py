"""The dashboard through Flask's test client: sessions, CSRF, roles, pages, actions, live events."""

import dataclasses
import html
import re
import time
import urllib.parse
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from ks.app import create_app
from ks.core import config
from ks.core.roles import Role
from ks.fleet import tokens
from ks.records.models import Host, utcnow
from ks.ui import sessions

from helpers import MAC1, MAC2, boot, bootid_of

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def make_token(db, name: str, role: Role = Role.ADMIN) -> str:
    return db.write(lambda session: tokens.create(session, name, role))


def csrf_of(client, path: str = "/ui/login") -> str:
    return CSRF.search(client.get(path).get_data(as_text=True)).group(1)


def log_in(client, token: str):
    response = client.post("/ui/login", data={"token": token, "csrf": csrf_of(client)})
    assert response.status_code == 302, response.get_data(as_text=True)
    return response


@pytest.fixture
def admin(client, db, hosts):
    log_in(client, make_token(db, "admin"))
    return client


def cookie_header(response) -> str:
    return next(v for k, v in response.headers.items() if k == "Set-Cookie" and v.startswith(sessions.COOKIE))


# -- sessions ------------------------------------------------------------------


def test_pages_need_a_session(client):
    response = client.get("/ui/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/ui/login")
    assert client.get("/ui/events").status_code == 401


def test_login_starts_a_session_cookie_httponly_samesite_on_path_ui(client, db):
    response = log_in(client, make_token(db, "a"))
    cookie = cookie_header(response)
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie
    assert make_token(db, "b") not in cookie and "ks_" not in cookie  # the token itself never travels in the cookie
    assert client.get("/ui/").status_code == 200


def test_the_cookie_is_secure_under_https(app, db):
    client = app.test_client()
    token = make_token(db, "a")
    page = client.get("/ui/login", base_url="https://localhost")
    csrf = CSRF.search(page.get_data(as_text=True)).group(1)
    response = client.post("/ui/login", data={"token": token, "csrf": csrf}, base_url="https://localhost")
    assert "Secure" in cookie_header(response)


def test_a_wrong_token_is_refused(client):
    response = client.post("/ui/login", data={"token": "ks_nope", "csrf": csrf_of(client)})
    assert response.status_code == 401
    assert "not valid" in response.get_data(as_text=True)
    assert client.get("/ui/").status_code == 302


def test_the_boot_side_and_the_api_set_no_cookie(client, token, root):
    assert "Set-Cookie" not in boot(client, MAC1).headers
    assert "Set-Cookie" not in client.get("/api/v1/hosts", headers={"Authorization": f"Bearer {token}"}).headers
    assert not (root / "kiwispray.key").exists()  # nor make the key that signs sessions


def test_logout_ends_the_session(admin):
    csrf = csrf_of(admin, "/ui/")
    response = admin.post("/ui/logout", data={"csrf": csrf})
    assert response.status_code == 302
    assert "logged out" in admin.get(response.headers["Location"]).get_data(as_text=True)
    assert admin.get("/ui/").status_code == 302


def test_a_cookie_saved_before_logout_is_refused_afterwards_by_every_process(app, client, db, hosts, root,
                                                                              database_url):
    log_in(client, make_token(db, "a"))
    saved = client.get_cookie(sessions.COOKIE, path="/ui").value
    csrf = csrf_of(client, "/ui/")
    assert client.post("/ui/logout", data={"csrf": csrf}).status_code == 302
    other = create_app({"ROOT": str(root), "DATABASE_URL": database_url})  # another worker or server
    try:
        for replay in (app.test_client(), other.test_client()):
            replay.set_cookie(sessions.COOKIE, saved, path="/ui")
            response = replay.get("/ui/")
            assert response.status_code == 302 and "/ui/login" in response.headers["Location"]
            replay.set_cookie(sessions.COOKIE, saved, path="/ui")
            action = replay.post("/ui/actions", data={"csrf": csrf, "action": "delete", "host": "1", "confirm": "1"})
            assert action.status_code == 401
        assert db.write(lambda session: session.scalar(select(func.count()).select_from(Host))) == 2
    finally:
        other.extensions["kiwispray"].db.dispose()
    log_in(client, make_token(db, "b"))  # logging in again starts a session that works
    assert client.get("/ui/").status_code == 200


def test_the_login_page_says_only_its_own_words(client):
    page = client.get("/ui/login?note=Send+your+token+to+evil.example").get_data(as_text=True)
    assert "evil.example" not in page


def test_a_revoked_token_ends_its_sessions_at_the_next_request(client, db, hosts):
    log_in(client, make_token(db, "soon-gone"))
    assert client.get("/ui/").status_code == 200
    db.write(lambda session: tokens.revoke(session, "soon-gone"))
    response = client.get("/ui/")
    assert response.status_code == 302 and "/ui/login" in response.headers["Location"]


def test_a_session_expires(app, client, db, monkeypatch):
    runtime = app.extensions["kiwispray"]
    runtime.settings = dataclasses.replace(runtime.settings, session_lifetime=60)
    log_in(client, make_token(db, "a"))
    assert client.get("/ui/").status_code == 200
    later = time.time() + 61
    monkeypatch.setattr(sessions.time, "time", lambda: later)
    response = client.get("/ui/")
    assert response.status_code == 302 and "expired" in response.headers["Location"]


def test_sessions_hold_across_processes_sharing_the_key(root, database_url, db):
    # Another worker process (or another server with the same key file) accepts the cookie.
    first = create_app({"ROOT": str(root), "DATABASE_URL": database_url})
    second = create_app({"ROOT": str(root), "DATABASE_URL": database_url})
    try:
        client = first.test_client()
        log_in(client, make_token(db, "a"))
        cookie = client.get_cookie(sessions.COOKIE, path="/ui")
        other = second.test_client()
        other.set_cookie(sessions.COOKIE, cookie.value, path="/ui")
        assert other.get("/ui/").status_code == 200
        stranger = create_app({"ROOT": str(root), "DATABASE_URL": database_url,
                               "SECRET_KEY_FILE": str(root / "other.key")})
        outsider = stranger.test_client()
        outsider.set_cookie(sessions.COOKIE, cookie.value, path="/ui")
        assert outsider.get("/ui/").status_code == 302
    finally:
        for each in (first, second):
            each.extensions["kiwispray"].db.dispose()


def test_login_goes_back_only_to_pages_of_the_dashboard(client, db):
    token = make_token(db, "a")
    for target, expected in [("/ui/images", "/ui/images"), ("https://evil.example/", "/ui/"),
                             ("//evil.example/ui/", "/ui/"), ("/api/v1/hosts", "/ui/")]:
        client.post("/ui/logout", data={"csrf": csrf_of(client)})
        response = client.post("/ui/login", data={"token": token, "csrf": csrf_of(client), "next": target})
        assert response.headers["Location"] == expected


@pytest.mark.parametrize("target", ["/ui/%0d%0aX:1", "/ui/%0aX:1", "/ui/\tx", "/ui/%7f", "///evil.example/ui/"])
def test_login_refuses_a_next_with_control_characters_or_another_host(client, db, target):
    token = make_token(db, "a")
    query = client.get(f"/ui/login?next={target}")
    assert query.status_code == 200 and "X:1" not in query.get_data(as_text=True)
    response = client.post("/ui/login", data={"token": token, "csrf": csrf_of(client),
                                              "next": urllib.parse.unquote(target)})
    assert response.status_code == 302 and response.headers["Location"] == "/ui/"
    assert "X" not in response.headers


def test_query_keys_of_the_overview_never_steer_its_links(admin):
    page = admin.get("/ui/?_method=POST&_anchor=gone&_external=1&_scheme=javascript&state=new&x=1")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    links = [link for link in re.findall(r'href="([^"]*)"', text) if link != "#main"]  # the skip link
    assert links and all(link.startswith("/ui/") for link in links), links
    assert not [link for link in links if "#gone" in link or "javascript" in link or "x=1" in link], links
    assert any("state=new" in link for link in links)  # the filters are kept


# -- CSRF and roles --------------------------------------------------------------


def test_a_post_without_the_csrf_token_is_refused(admin, db):
    response = admin.post("/ui/actions", data={"action": "set-chain", "chain": "finished", "host": "1", "confirm": "1"})
    assert response.status_code == 403
    assert "CSRF" in response.get_data(as_text=True)
    response = admin.post("/ui/actions", data={"action": "set-chain", "chain": "finished", "host": "1", "confirm": "1",
                                               "csrf": "forged"})
    assert response.status_code == 403
    with db.read() as session:
        assert session.scalar(select(Host.state).where(Host.id == 1)) == "new"


def test_the_csrf_token_may_come_as_a_header(admin):
    response = admin.post("/ui/actions", data={"action": "set-chain", "chain": "finished", "host": "1", "confirm": "1"},
                          headers={sessions.CSRF_HEADER: csrf_of(admin, "/ui/")})
    assert response.status_code == 302


def test_a_viewer_sees_no_action_and_a_forged_post_gets_403(client, db, hosts):
    log_in(client, make_token(db, "viewer", Role.VIEWER))
    for path in ("/ui/", "/ui/hosts/1"):
        page = client.get(path).get_data(as_text=True)
        assert 'id="actions"' not in page and "action-set-chain" not in page and 'name="host"' not in page
    csrf = csrf_of(client, "/ui/")
    for action in ("set-chain", "retry", "power-cycle", "delete", "deploy"):
        response = client.post("/ui/actions", data={"action": action, "chain": "finished", "host": "1", "confirm": "1",
                                                    "csrf": csrf})
        assert response.status_code == 403, action
    with db.read() as session:
        assert session.scalar(select(Host.state).where(Host.id == 1)) == "new"


def test_an_operator_may_set_chains_but_not_delete(client, db, hosts):
    log_in(client, make_token(db, "op", Role.OPERATOR))
    page = client.get("/ui/").get_data(as_text=True)
    assert "action-set-chain" in page and "action-delete" not in page
    csrf = csrf_of(client, "/ui/")
    forged = {"action": "delete", "host": "1", "confirm": "1", "csrf": csrf}
    assert client.post("/ui/actions", data=forged).status_code == 403
    response = client.post("/ui/actions", data={"action": "set-chain", "chain": "image1", "host": "1", "confirm": "1",
                                                "csrf": csrf})
    assert response.status_code == 302


# -- actions -----------------------------------------------------------------------


def test_an_action_is_confirmed_before_it_is_done(admin, db):
    csrf = csrf_of(admin, "/ui/")
    page = admin.post("/ui/actions", data={"action": "set-chain", "chain": "image1", "host": ["1", "2"], "csrf": csrf})
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Confirm: Set chain" in text and 'name="confirm" value="1"' in text and "image1" in text
    with db.read() as session:
        assert set(session.scalars(select(Host.state))) == {"new"}
    done = admin.post("/ui/actions", data={"action": "set-chain", "chain_text": "wipe,image1", "host": ["1", "2"],
                                           "confirm": "1", "csrf": csrf, "back": "/ui/?state=new"})
    assert done.headers["Location"] == "/ui/?state=new"
    with db.read() as session:
        assert set(session.scalars(select(Host.state))) == {"wipe,image1"}
    assert "2 hosts: chain set" in admin.get("/ui/").get_data(as_text=True)


def test_an_unknown_image_is_set_with_the_box_the_refusal_names(admin, db):
    csrf = csrf_of(admin, "/ui/")
    assert 'name="force"' in admin.get("/ui/").get_data(as_text=True)
    form = {"action": "set-chain", "chain_text": "image9", "host": ["1"], "confirm": "1", "csrf": csrf}
    response = admin.post("/ui/actions", data=form)
    assert response.status_code == 400
    text = html.unescape(response.get_data(as_text=True))
    assert '(use the box "anyway" beside the chain to set it anyway)' in text and "--force" not in text
    confirm = admin.post("/ui/actions", data={**form, "confirm": "", "force": "1"}).get_data(as_text=True)
    assert 'name="force" value="1"' in confirm
    assert admin.post("/ui/actions", data={**form, "force": "1"}).status_code == 302
    with db.read() as session:
        assert session.scalar(select(Host.state).where(Host.id == 1)) == "image9"


def test_the_servers_address_alone_leads_to_the_dashboard(client):
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"] == "/ui/"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_a_bulk_action_is_all_or_nothing(admin, db):
    db.write(lambda session: session.execute(update(Host).where(Host.id == 1).values(failed_at=utcnow())))
    csrf = csrf_of(admin, "/ui/")
    response = admin.post("/ui/actions", data={"action": "retry", "host": ["1", "2"], "confirm": "1", "csrf": csrf})
    assert response.status_code == 409
    assert "host 2 has not failed" in response.get_data(as_text=True)
    with db.read() as session:
        assert session.scalar(select(Host.failed_at).where(Host.id == 1)) is not None  # host 1 kept its failure
    response = admin.post("/ui/actions", data={"action": "set-chain", "chain": "nosuchimage", "host": ["1", "2"],
                                               "confirm": "1", "csrf": csrf})
    assert response.status_code == 409 or response.status_code == 400
    response = admin.post("/ui/actions", data={"action": "retry", "host": ["1"], "confirm": "1", "csrf": csrf})
    assert response.status_code == 302
    with db.read() as session:
        assert session.scalar(select(Host.failed_at).where(Host.id == 1)) is None


def test_power_needs_a_bmc_on_every_selected_host(admin):
    csrf = csrf_of(admin, "/ui/")
    response = admin.post("/ui/actions", data={"action": "power-on", "host": ["1"], "confirm": "1", "csrf": csrf})
    assert response.status_code == 409
    assert "without a BMC: 1" in response.get_data(as_text=True)


def test_delete_from_the_host_page_goes_back_to_the_fleet(admin, db):
    csrf = csrf_of(admin, "/ui/hosts/2")
    response = admin.post("/ui/actions", data={"action": "delete", "host": "2", "confirm": "1", "csrf": csrf,
                                               "back": "/ui/hosts/2"})
    assert response.headers["Location"] == "/ui/"
    with db.read() as session:
        assert list(session.scalars(select(Host.id))) == [1]


@pytest.mark.parametrize("form, status", [
    ({"action": "explode", "host": "1"}, 400),
    ({"action": "retry"}, 400),
    ({"action": "retry", "host": "x"}, 400),
    ({"action": "retry", "host": "99", "confirm": "1"}, 404),
    ({"action": "set-chain", "host": "1"}, 400),
    ({"action": "set-chain", "chain_text": "a,,b", "host": "1"}, 400),
])
def test_bad_forms_get_a_clear_4xx(admin, form, status):
    response = admin.post("/ui/actions", data={**form, "csrf": csrf_of(admin, "/ui/")})
    assert response.status_code == status
    assert "<h1>Error" in response.get_data(as_text=True)


# -- pages -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_the_overview_counts_filters_sorts_and_pages(admin, client, db):
    for i in range(3, 8):
        boot(client, f"52-54-00-00-01-{i:02x}", serial=f"SER{i}")
    db.write(lambda session: session.execute(update(Host).where(Host.id == 5).values(
        failed_at=utcnow(), state="image1", labels={"rack": "4"}, hostname="web5")))
    page = admin.get("/ui/").get_data(as_text=True)
    assert 'id="count-failed">1<' in page and 'id="count-all">7<' in page
    assert page.index('id="host-5"') < page.index('id="host-1"')  # failed first
    page = admin.get("/ui/?label=rack%3D4").get_data(as_text=True)
    assert 'id="host-5"' in page and 'id="host-1"' not in page
    page = admin.get("/ui/?q=web").get_data(as_text=True)
    assert 'id="host-5"' in page and 'id="host-1"' not in page
    page = admin.get("/ui/?q=52-54-00-00-00-02").get_data(as_text=True)  # MAC3's host by part of its MAC
    assert 'id="host-2"' in page and 'id="host-1"' not in page
    page = admin.get("/ui/?state=image1").get_data(as_text=True)
    assert re.findall(r'id="host-(\d+)"', page) == ["5"]
    page = admin.get("/ui/?sort=id&dir=desc&per=2&page=2").get_data(as_text=True)
    assert re.findall(r'id="host-(\d+)"', page) == ["5", "4"]
    assert "page 2 of 4" in page
    for bad in ("?sort=evil", "?per=0", "?page=x", "?label=nokey", "?state=a,,b", "?q=" + "x" * 300):
        assert admin.get("/ui/" + bad).status_code == 400, bad


def test_the_host_page_shows_the_script_but_never_a_bootid_or_the_bmc_password(admin, client, db, root):
    csrf = csrf_of(admin, "/ui/")
    form = {"action": "set-chain", "chain": "image1", "host": "1", "confirm": "1", "csrf": csrf}
    admin.post("/ui/actions", data=form)
    script = boot(client, MAC1, serial="SER1").get_data(as_text=True)
    bootid = bootid_of(script)
    from ks.core import vault
    from ks.fleet.change import HostChange

    change = HostChange.parse(set(), bmc={"address": "ipmi://10.0.0.9", "username": "root", "password": "s3cret-pw"})
    keys = vault.of(config.resolve({"ROOT": str(root)}))
    db.write(lambda session: change.apply(session, session.get(Host, 1), "test", keys))
    page = admin.get("/ui/hosts/1").get_data(as_text=True)
    assert "BOOTID" in page and bootid not in page
    assert "ipmi://10.0.0.9" in page and "s3cret-pw" not in page
    assert "kernel" in page and "image1" in page
    assert "history" in page.lower() and "boot" in page


def test_the_images_page_lists_images_with_their_checksum_verdict(admin):
    page = admin.get("/ui/images").get_data(as_text=True)
    assert "<td>image1</td>" in page and "<td>wipe</td>" in page
    assert 'class="checksum' in page


WEBHOOK_SECRET = "a webhook secret of 32 characters"


def add_webhook(app, db, url: str = "https://ci.example/hook?x=<b>") -> int:
    """A webhook for finish and timeout events, and three attempts at the first two events of the history."""
    from ks.core import vault
    from ks.fleet import webhooks
    from ks.records.models import Event

    keys = vault.of(app.extensions["kiwispray"].settings)

    def work(session):
        hook, _ = webhooks.add(session, url, ("finish", "timeout"), WEBHOOK_SECRET, keys)
        first, second = session.scalars(select(Event.id).order_by(Event.id).limit(2))
        webhooks.record_attempt(session, hook.id, first, 1, None, "connection refused")
        webhooks.record_attempt(session, hook.id, first, 2, 200, "")
        webhooks.record_attempt(session, hook.id, second, 1, 503, "HTTP 503")
        return hook.id

    return db.write(work)


def rows_of(page: str, table_id: str) -> list[list[str]]:
    body = page[page.index(f'id="{table_id}"'):]
    body = body[body.index("<tbody>"):body.index("</tbody>")]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def test_the_webhooks_page_lists_webhooks_and_their_deliveries_newest_first(app, admin, db):
    from ks.records.models import Event, Webhook

    hook_id = add_webhook(app, db)
    page = admin.get("/ui/webhooks").get_data(as_text=True)
    assert 'id="nav-webhooks"' in page
    [hook] = rows_of(page, "webhooks")
    assert hook[1] == "https://ci.example/hook?x=&lt;b&gt;" and hook[2] == "finish, timeout"
    with db.read() as session:
        first, second = [(e.id, e.kind) for e in session.scalars(select(Event).order_by(Event.id).limit(2))]
        stored_secret = session.get(Webhook, hook_id).secret
        newest = session.scalar(select(func.max(Event.id)))
    assert hook[3] == str(newest) and hook[4] == "ok"  # the cursor: the newest event when it was added
    attempts = rows_of(page, f"deliveries-{hook_id}")
    assert [row[1:] for row in attempts] == [
        [str(second[0]), second[1], "503", "1", "HTTP 503"],
        [str(first[0]), first[1], "200", "2", "-"],
        [str(first[0]), first[1], "-", "1", "connection refused"],
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", attempts[0][0])
    assert WEBHOOK_SECRET not in page and stored_secret not in page


def test_the_webhooks_page_shows_a_failing_webhook_and_at_most_the_newest_attempts(app, admin, db):
    from ks.fleet import webhooks
    from ks.records.models import Webhook
    from ks.ui.views import LOG_SHOWN

    hook_id = add_webhook(app, db)
    gone = 10**9  # an event gone with its host: no kind

    def fail(session):
        for attempt in range(1, LOG_SHOWN + 3):
            webhooks.record_attempt(session, hook_id, gone, attempt, 500, f"HTTP 500 #{attempt}")
        session.execute(update(Webhook).where(Webhook.id == hook_id).values(
            attempts=LOG_SHOWN + 2, next_attempt_at=utcnow() + timedelta(minutes=5)))

    db.write(fail)
    page = admin.get("/ui/webhooks").get_data(as_text=True)
    [hook] = rows_of(page, "webhooks")
    assert hook[4].startswith(f"failing: {LOG_SHOWN + 2} failed attempts at event ") and "next at 20" in hook[4]
    attempts = rows_of(page, f"deliveries-{hook_id}")
    assert len(attempts) == LOG_SHOWN
    assert attempts[0][1:] == [str(gone), "-", "500", str(LOG_SHOWN + 2), f"HTTP 500 #{LOG_SHOWN + 2}"]
    assert attempts[-1][4] == "3"


def test_the_webhooks_page_without_webhooks(admin):
    page = admin.get("/ui/webhooks").get_data(as_text=True)
    assert "No webhooks yet" in page


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR])
def test_only_admins_see_webhooks(app, client, db, hosts, role):
    add_webhook(app, db)
    log_in(client, make_token(db, role.label, role))
    page = client.get("/ui/").get_data(as_text=True)
    assert 'id="nav-webhooks"' not in page and "/ui/webhooks" not in page
    response = client.get("/ui/webhooks")
    assert response.status_code == 403
    text = response.get_data(as_text=True)
    assert "needs an admin role" in text and "ci.example" not in text and WEBHOOK_SECRET not in text


def test_values_from_machines_are_escaped(admin, client, db):
    db.write(lambda session: session.execute(update(Host).where(Host.id == 1).values(
        hostname="<script>alert(1)</script>", labels={"<b>": "<i>"})))
    for path in ("/ui/", "/ui/hosts/1", "/ui/hosts/1/row"):
        page = admin.get(path).get_data(as_text=True)
        assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_pages_forbid_framing_and_foreign_scripts(admin):
    response = admin.get("/ui/")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"


def test_the_pages_listen_for_every_kind_of_history_line(admin):
    from ks.records.events import EventKind

    response = admin.get("/ui/static/ui.js")
    script = response.get_data(as_text=True)
    response.close()
    assert 'getAttribute("data-kinds")' in script and not re.search(r'\[\s*"register"', script)  # no list of its own
    for path in ("/ui/", "/ui/hosts/1"):
        kinds = re.search(r'data-kinds="([^"]*)"', admin.get(path).get_data(as_text=True))
        assert kinds is not None and kinds.group(1).split() == [str(kind) for kind in EventKind], path


def test_the_event_stream_sends_new_history_lines(admin, client):
    response = admin.get("/ui/events")
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    chunks = iter(response.response)
    assert next(chunks).startswith(b"retry:")
    boot(client, MAC2, serial="SER2")
    text = ""
    deadline = time.monotonic() + 10
    while "event: boot" not in text and time.monotonic() < deadline:
        chunk = next(chunks)
        text += chunk.decode() if isinstance(chunk, bytes) else chunk
    response.close()
    assert "event: boot" in text and '"host_id": 2' in text


def test_session_lifetime_setting_is_checked(root):
    from ks.core.errors import ConfigError

    with pytest.raises(ConfigError):
        create_app({"ROOT": str(root), "SESSION_LIFETIME": 5})


def test_the_session_cookie_carries_its_lifetime(app, client, db):
    response = log_in(client, make_token(db, "a"))
    assert "Expires=" in cookie_header(response)
    assert app.permanent_session_lifetime == timedelta(seconds=8 * 3600)


def test_deploy_now_sets_the_chain_and_power_cycles_through_the_bmc(admin, db, app, start_bmc):
    from ks.core import vault
    from ks.fleet import machines
    from ks.fleet.change import HostChange

    bmc = start_bmc("ipmi", power=False)
    change = HostChange.parse(set(), bmc={"address": bmc.url, "username": bmc.username, "password": bmc.password})
    keys = vault.of(app.extensions["kiwispray"].settings)
    db.write(lambda session: change.apply(session, session.get(Host, 1), "test", keys))
    csrf = csrf_of(admin, "/ui/hosts/1")
    response = admin.post("/ui/actions", data={"action": "deploy", "chain": "image1", "host": "1", "confirm": "1",
                                               "csrf": csrf, "back": "/ui/hosts/1"})
    assert response.status_code == 302, response.get_data(as_text=True)
    bmc.wait_history([True])  # it was off: a cycle powers it on
    with db.read() as session:
        assert session.get(Host, 1).state == "image1"
        lines = [(e.kind, e.source) for e in machines.history(session, 1)]
    assert ("state", "ui") in lines and ("power", "ui") in lines
    assert "chain set and power cycle sent" in admin.get("/ui/hosts/1").get_data(as_text=True)
    # Powering a selection with a host that has no BMC powers none of them.
    response = admin.post("/ui/actions", data={"action": "power-off", "host": ["1", "2"], "confirm": "1", "csrf": csrf})
    assert response.status_code == 409
    assert bmc.history == [True]


@pytest.mark.parametrize("end", ["revoke", "logout"])
def test_a_revoked_token_or_a_logout_ends_the_open_event_stream(admin, db, monkeypatch, end):
    from ks import sse

    monkeypatch.setattr(sse, "RECHECK", 0.0)
    monkeypatch.setattr(sse, "TICK", 0.05)
    response = admin.get("/ui/events")
    chunks = iter(response.response)
    assert next(chunks).startswith(b"retry:")
    if end == "revoke":
        db.write(lambda session: tokens.revoke(session, "admin"))
    else:
        assert admin.post("/ui/logout", data={"csrf": csrf_of(admin, "/ui/")}).status_code == 302
    text = b""
    deadline = time.monotonic() + 10
    for chunk in chunks:
        text += chunk
        if b"event: ended" in text or time.monotonic() > deadline:
            break
    response.close()
    assert b"event: ended" in text
