"""Failed logins at the dashboard and the API: logged by source address, and held back past a bound."""

import dataclasses
import http.client
import logging
import re

import pytest

from ks.app import create_app
from ks.core.ratelimit import FailedLogins, TokenBucket
from ks.fleet import tokens
from ks.records import migrate

from server import ServerProcess

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
GUESSER, OPERATOR = "10.0.0.66", "10.0.0.7"
WRONG = "ks_not-a-token-of-this-site"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_bucket_says_how_long_until_its_next_token():
    clock = Clock()
    bucket = TokenBucket(3, clock)
    assert bucket.wait() == 0
    assert [bucket.take() for _ in range(3)] == [True, True, True]
    assert bucket.wait() == pytest.approx(20)  # a token takes 20 s; waiting takes none
    clock.now += 15
    assert bucket.wait() == pytest.approx(5)
    assert TokenBucket(0).wait() == 0


def test_failed_logins_hold_back_one_source_and_report_each_once_a_minute():
    clock = Clock()
    logins = FailedLogins(3, clock)
    assert [logins.failed(GUESSER) for _ in range(3)] == [1, 0, 0]  # the first one at once, then counted
    assert logins.wait(GUESSER) == pytest.approx(20)
    assert logins.wait(OPERATOR) == 0  # other sources are not held back
    assert logins.failed(OPERATOR) == 1
    clock.now += 59
    assert logins.failed(GUESSER) == 0
    clock.now += 1
    assert logins.failed(GUESSER) == 4  # three since the first line, and this one
    assert FailedLogins(0).wait(GUESSER) == 0


def test_failed_logins_remember_a_bounded_number_of_sources():
    logins = FailedLogins(1, Clock(), kept=3)
    for i in range(10):
        logins.failed(f"10.0.1.{i}")
    assert [logins.wait(f"10.0.1.{i}") > 0 for i in (0, 6, 7, 8, 9)] == [False, False, True, True, True]


@pytest.fixture
def bounded(app):
    runtime = app.extensions["kiwispray"]
    runtime.settings = dataclasses.replace(runtime.settings, login_failures_per_minute=3)
    runtime.logins = FailedLogins(3)
    return app


def dashboard_login(app, token: str, source: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = source
    csrf = CSRF.search(client.get("/ui/login").get_data(as_text=True)).group(1)
    return client.post("/ui/login", data={"token": token, "csrf": csrf})


def api_call(app, token: str, source: str):
    return app.test_client().get("/api/v1/hosts", headers={"Authorization": f"Bearer {token}"},
                                 environ_base={"REMOTE_ADDR": source})


@pytest.mark.parametrize("attempt, ok", [(dashboard_login, 302), (api_call, 200)], ids=["dashboard", "api"])
def test_wrong_tokens_are_logged_and_held_back_past_the_bound(bounded, db, caplog, attempt, ok):
    caplog.set_level(logging.INFO)
    valid = db.write(lambda session: tokens.create(session, "operator"))
    assert [attempt(bounded, WRONG, GUESSER).status_code for _ in range(3)] == [401] * 3
    held = attempt(bounded, WRONG, GUESSER)
    assert held.status_code == 429 and 1 <= int(held.headers["Retry-After"]) <= 20
    assert attempt(bounded, valid, GUESSER).status_code == 429  # not even checked while held back
    assert attempt(bounded, valid, OPERATOR).status_code == ok  # other addresses log in meanwhile
    lines = [r.getMessage() for r in caplog.records if "failed login" in r.getMessage()]
    where = "dashboard" if attempt is dashboard_login else "API"
    assert lines == [f"1 failed login from {GUESSER} to the {where} since the last line about this address"]
    assert WRONG not in caplog.text and valid not in caplog.text


def test_the_dashboard_and_the_api_share_one_bound(bounded):
    assert [dashboard_login(bounded, WRONG, GUESSER).status_code for _ in range(3)] == [401] * 3
    assert api_call(bounded, WRONG, GUESSER).status_code == 429


def test_pxe_pilots_api_shares_the_bound(root, database_url):
    app = create_app({"ROOT": str(root), "DATABASE_URL": database_url, "PXEPILOT_API": True,
                      "LOGIN_FAILURES_PER_MINUTE": 3})
    migrate.upgrade(app.extensions["kiwispray"].db)
    try:
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = GUESSER
        wrong = {"Authorization": f"Bearer {WRONG}"}
        assert [client.get("/v1/hosts", headers=wrong).status_code for _ in range(3)] == [401] * 3
        held = client.get("/v1/hosts", headers=wrong)
        assert held.status_code == 429 and int(held.headers["Retry-After"]) >= 1
        assert api_call(app, WRONG, GUESSER).status_code == 429
    finally:
        app.extensions["kiwispray"].db.dispose()


def test_a_real_server_holds_back_a_guessing_address_and_serves_the_others(root):
    app = create_app({"ROOT": str(root)})
    migrate.upgrade(app.extensions["kiwispray"].db)
    valid = app.extensions["kiwispray"].db.write(lambda session: tokens.create(session, "operator"))
    app.extensions["kiwispray"].db.dispose()
    # One worker: each worker process keeps its own count, and which of two takes a connection is chance.
    with ServerProcess(root, "--workers", "1", env={"KS_LOGIN_FAILURES_PER_MINUTE": "3"}) as server:

        def call(token: str, source: str) -> http.client.HTTPResponse:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10,
                                                    source_address=(source, 0))
            try:
                connection.request("GET", "/api/v1/hosts", headers={"Authorization": f"Bearer {token}"})
                response = connection.getresponse()
                response.read()
                return response
            finally:
                connection.close()

        statuses = []
        for _ in range(30):
            statuses.append(call(WRONG, "127.0.0.1").status)
            if statuses[-1] == 429:
                break
        assert statuses == [401] * 3 + [429], statuses
        held = call(WRONG, "127.0.0.1")
        assert held.status == 429 and int(held.getheader("Retry-After")) >= 1
        assert call(valid, "127.0.0.2").status == 200  # another address is served meanwhile
        log = server.log()
    assert "failed login from 127.0.0.1 to the API" in log
    assert WRONG not in log and valid not in log
