"""Selectors: the grammar (good and bad, with positions) and what they match, in Python and in SQL on both backends."""

import dataclasses

import pytest

from ks.core import selectors
from ks.core.errors import BadRequest, BadSelector
from ks.fleet import machines
from ks.records.models import Host, HostMac
from ks.records.record import HostRecord

PARSED = [
    # selector, [(scope, key, negated, glob pattern)]
    ("rack=4", [("either", "rack", False, "4")]),
    ("rack=4,role!=db", [("either", "rack", False, "4"), ("either", "role", True, "db")]),
    ("product=PowerEdge R640", [("either", "product", False, "PowerEdge R640")]),
    ("mac=52-54-00-AA-*", [("builtin", "mac", False, "52:54:00:aa:*")]),
    ("serial=ab?*", [("builtin", "serial", False, "AB?*")]),
    ("uuid=0E1F*", [("builtin", "uuid", False, "0e1f*")]),
    ("state=new,chain=wipe\\,image1", [("builtin", "state", False, "new"), ("builtin", "chain", False, "wipe,image1")]),
    ("label.state=x,fact.rack!=", [("label", "state", False, "x"), ("fact", "rack", True, "")]),
    ("note=a\\*b\\?c\\\\d", [("either", "note", False, "a[*]b[?]c\\d")]),
    ("site/room=b.2-1_x", [("either", "site/room", False, "b.2-1_x")]),
    ("k=a=b", [("either", "k", False, "a=b")]),
    ("k=**x", [("either", "k", False, "*x")]),
]


@pytest.mark.parametrize("text, terms", PARSED)
def test_parse(text, terms):
    parsed = selectors.parse(text)
    assert [(t.scope, t.key, t.negated, t.pattern.glob()) for t in parsed.terms] == terms
    assert str(parsed) == text


BAD = [
    ("", "empty selector"),
    ("   ", "empty selector"),
    ("rack=4,,x", "selector 'rack=4,,x': empty term at position 8"),
    ("rack=4,", "selector 'rack=4,': empty term at position 8"),
    (",rack=4", "selector ',rack=4': empty term at position 1"),
    ("rack", "selector 'rack': term 'rack' has no '=' or '!=' at position 1"),
    ("rack=4,role", "term 'role' has no '=' or '!=' at position 8"),
    ("=4", "missing key before '=' at position 1"),
    ("a=1,!=4", "missing key before '!=' at position 5"),
    ("ra ck=4", "key 'ra ck' may not hold ' '"),
    ("ra ck=4", "at position 3"),
    (".rack=4", "key '.rack' may not hold '.'"),
    ("rack=4$", "value may not hold '$'"),
    ("rack=4$", "at position 7"),
    ("rack=${x}", "at position 6"),
    ("rack=é", "value may not hold 'é'"),
    ("rack=[ab]", "value may not hold '['"),
    ("hostname=n%", "value may not hold '%'"),
    ("rack=4\\", "'\\' with nothing to escape at position 7"),
    ("rack=\\$", "value may not hold '$' at position 7"),
    ("label.=x", "'label.' needs a name after it at position 1"),
    ("a" * 64 + "=1", "longer than 63 characters"),
    (",".join(f"k{i}=v" for i in range(65)), "more than 64 terms at position 375"),
    ("x=" + "y" * 5000, "is longer than 4096 characters"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_malformed_selectors_say_where(text, message):
    with pytest.raises(BadSelector) as caught:
        selectors.parse(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, BadRequest) and caught.value.status == 400 and caught.value.exit_code == 2


def test_a_selector_must_be_text():
    with pytest.raises(BadSelector, match="must be a string"):
        selectors.parse(["rack=4"])


HOSTS = [
    dict(id=1, hostname="node01", state="wipe,image1", macs=("52:54:00:00:00:01", "52:54:00:aa:00:01"), serial="SER1",
         uuid=None, labels={"rack": "4", "role": "db"},
         facts={"product": "PowerEdge R640", "manufacturer": "Dell Inc."}),
    dict(id=2, hostname="node02", state="new", macs=("52:54:00:00:00:02",), serial="SER2", uuid=None,
         labels={"rack": "4"}, facts={"product": "PowerEdge R650"}),
    dict(id=3, hostname="web03", state="image1", macs=("52:54:01:00:00:03",), serial=None, uuid=None,
         labels={"rack": "10", "product": "custom", "state": "x", "note": "a,b"},
         facts={"product": "QEMU Standard PC", "arch_x": "x86_64"}),
    dict(id=4, hostname="n_4", state="finished", macs=(), serial=None, uuid="0e1f2a3b-0000-4000-8000-000000000004",
         labels={}, facts={"rack": "4"}),
]

MATCHES = [
    ("rack=4", [1, 2, 4]),  # host 4: no label, its fact
    ("label.rack=4", [1, 2]),
    ("fact.rack=4", [4]),
    ("rack=4,role!=db", [2, 4]),
    ("role!=db", [2, 3, 4]),
    ("role=", [2, 3, 4]),
    ("role=?*", [1]),
    ("rack=1?", [3]),
    ("rack=*", [1, 2, 3, 4]),
    ("product=PowerEdge*", [1, 2]),  # host 3's label wins over its fact
    ("product=PowerEdge R640", [1]),
    ("product=custom", [3]),
    ("fact.product=QEMU*", [3]),
    ("fact.product=*PC", [3]),
    ("state=wipe", [1]),
    ("state=image1", [3]),  # host 1 boots wipe now
    ("state=*1", [3]),
    ("state!=new", [1, 3, 4]),
    ("chain=wipe\\,image1", [1]),
    ("chain=*image1", [1, 3]),
    ("label.state=x", [3]),
    ("mac=52-54-00-*", [1, 2]),
    ("mac=52:54:00:AA:00:01", [1]),
    ("mac=52:54:00:aa:00:0?", [1]),
    ("mac!=52:54:00:00:00:0?", [3, 4]),
    ("mac=*", [1, 2, 3]),
    ("serial=ser*", [1, 2]),
    ("serial!=SER1", [2, 3, 4]),
    ("serial=", [3, 4]),
    ("uuid=0E1F*", [4]),
    ("id=1", [1]),
    ("id!=2", [1, 3, 4]),
    ("id=?", [1, 2, 3, 4]),
    ("hostname=node0?", [1, 2]),
    ("hostname=n_*", [4]),  # '_' is no wildcard
    ("note=a\\,b", [3]),
    ("note=a?b", [3]),
    ("arch_x=x86?64", [3]),
    ("manufacturer=Dell Inc.", [1]),
    ("manufacturer=dell inc.", []),  # case-sensitive
    ("hostname=*,rack=4,fact.product!=*R650", [1, 4]),
    ("nothing=here", []),
]


def _records() -> list[HostRecord]:
    """HOSTS as records; every field the selectors do not read is empty."""
    blank = {f.name: None for f in dataclasses.fields(HostRecord)}
    return [HostRecord(**{**blank, "meta": {}, **h}) for h in HOSTS]


@pytest.mark.parametrize("text, expected", MATCHES)
def test_matching_in_python(text, expected):
    selector = selectors.parse(text)
    assert [h.id for h in _records() if selector.matches(h)] == expected


@pytest.fixture
def fleet(db):
    """HOSTS in the database, as the firmware (facts) and the operator (labels) left them."""

    def add(session):
        for h in HOSTS:
            macs = [HostMac(mac=m, position=i) for i, m in enumerate(h["macs"])]
            fields = {k: v for k, v in h.items() if k != "macs"}
            session.add(Host(**fields, meta={}, macs=macs))

    db.write(add)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_matching_in_sql_is_the_same(db, fleet):
    with db.read() as session:
        for text, expected in MATCHES:
            found = [h.id for h in machines.list_hosts(session, selector=selectors.parse(text))]
            assert found == expected, text
