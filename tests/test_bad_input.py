"""Malformed input to every endpoint gets a 4xx (or a clear script), never a 5xx."""

import pytest
from sqlalchemy import select

from ks.records.models import Host

from helpers import MAC1, boot

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)

HUGE = "9" * 400
LONG_MAC = "a" * 5000

# (method, url, form data); every answer must be a 4xx.
CASES = [
    ("GET", "/bootstrap", None),
    ("GET", "/bootstrap?net0=", None),
    ("GET", f"/bootstrap?net0={LONG_MAC}", None),
    ("GET", "/bootstrap?net0=zz-zz-zz-zz-zz-zz", None),
    ("GET", f"/bootstrap?net0={MAC1}&net0={MAC1}", None),
    ("GET", "/bootstrap?net0=%00", None),
    ("GET", f"/bootstrap?net0={MAC1}&serial=%00", None),
    ("GET", f"/bootstrap?net0={MAC1}&uuid=nonsense", None),
    ("GET", f"/bootstrap?net0={MAC1}&serial={'x' * 5000}", None),
    ("GET", "/bootstrap?serial=Not%20Specified", None),
    ("GET", "/bootstrap?dhcp_mac=net9$zz", None),
    ("GET", "/post-install", None),
    ("GET", "/post-install?id=", None),
    ("GET", "/post-install?id=abc&bootid=x", None),
    ("GET", "/post-install?id=-1&bootid=x", None),
    ("GET", "/post-install?id=0&bootid=x", None),
    ("GET", f"/post-install?id={HUGE}&bootid=x", None),
    ("GET", "/post-install?id=1&id=1&bootid=x", None),
    ("GET", "/post-install?id=1&bootid=%00", None),
    ("GET", "/post-install?id=1%00&bootid=x", None),
    ("GET", "/post-install?id=1.5", None),
    ("GET", "/post-install?id=%EF%BC%91", None),  # a full-width digit one
    ("GET", "/post-install?id=99999999&bootid=x", None),
    ("GET", "/post-install?id=1", None),
    ("GET", "/finish", None),
    ("GET", "/finish?id=x", None),
    ("GET", f"/finish?id={HUGE}", None),
    ("GET", "/finish?id=1&bootid=a&bootid=b", None),
    ("GET", "/finish?id=1&bootid=" + "f" * 5000, None),
    ("GET", "/finish?id=9223372036854775808&bootid=x", None),
    ("GET", "/state", None),
    ("GET", "/state?id=x", None),
    ("GET", "/state?id=-5", None),
    ("GET", "/state?id=42", None),
    ("POST", "/update", {}),
    ("POST", "/update?id=1", {}),
    ("POST", "/update?id=1&bootid=x", {"metadata": "{bad"}),
    ("POST", "/update?id=1&bootid=x", {"metadata": '"string"'}),
    ("POST", "/update?id=1&bootid=x", {"mac": LONG_MAC}),
    ("POST", "/update?id=1&bootid=x", {"unknown": "1"}),
    ("POST", "/update?id=x&bootid=x", {"metadata": "{}"}),
    ("POST", f"/update?id={HUGE}&bootid=x", {"metadata": "{}"}),
    ("POST", "/update?id=1&bootid=x", {"metadata": "[" * 100000 + "]" * 100000}),
    ("GET", "/update?id=1", None),
    ("POST", "/bootstrap", {}),
    ("GET", "/images/", None),
    ("GET", "/images/none/file", None),
    ("GET", "/images/" + "a/" * 2000, None),
    ("GET", "/nothing-here", None),
    ("DELETE", "/hosts", None),
]


@pytest.mark.parametrize("method, url, data", CASES, ids=[f"{m} {u[:60]}" for m, u, _ in CASES])
def test_bad_input_gets_a_4xx(client, method, url, data):
    boot(client, MAC1)  # host 1 exists, in state new
    r = client.open(url, method=method, data=data)
    assert 400 <= r.status_code < 500, (url, r.status_code, r.text[:200])
    assert "Traceback" not in r.text
    assert r.mimetype == "text/plain"


def test_bad_input_changes_nothing(client, db):
    boot(client, MAC1)
    with db.read() as s:
        before = [(h.id, h.state, h.bootid_hash, h.mac_list, h.meta) for h in s.scalars(select(Host).order_by(Host.id))]
    for method, url, data in CASES:
        client.open(url, method=method, data=data)
    with db.read() as s:
        after = [(h.id, h.state, h.bootid_hash, h.mac_list, h.meta) for h in s.scalars(select(Host).order_by(Host.id))]
    assert after == before


def test_oversized_body_is_413(client):
    r = client.post("/update?id=1&bootid=x", data={"metadata": "x" * (2 * 1024 * 1024)})
    assert r.status_code == 413
