"""JSON log lines and bootids kept out of logs."""

import json
import logging

import pytest

from ks import server
from ks.core import logs


def record(name="ks.boot.views", msg="boot host=%d", args=(1,), **extra):
    r = logging.makeLogRecord({"name": name, "msg": msg, "args": args, "levelname": "INFO", "levelno": 20})
    r.__dict__.update(extra)
    return r


def test_a_json_line_has_the_standard_fields_and_the_structured_ones():
    line = logs.JsonFormatter().format(record(event="boot", host_id=1, state="image1", template="shipped:kiwi.ipxe"))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["level"] == "INFO" and doc["logger"] == "ks.boot.views" and doc["message"] == "boot host=1"
    assert doc["time"].endswith("+00:00")
    assert (doc["event"], doc["host_id"], doc["state"], doc["template"]) == ("boot", 1, "image1", "shipped:kiwi.ipxe")


def test_an_access_line_gets_the_request_fields():
    atoms = {
        "h": "127.0.0.1",
        "m": "GET",
        "U": "/finish",
        "q": "id=1&bootid=-",
        "s": "200",
        "B": 12,
        "M": 3,
        "a": "curl",
    }
    line = record("gunicorn.access", "%(m)s %(U)s", atoms)
    assert server.AccessFields().filter(line)
    doc = json.loads(logs.JsonFormatter().format(line))
    assert doc["message"] == "GET /finish"
    assert (doc["method"], doc["path"], doc["status"], doc["duration_ms"]) == ("GET", "/finish", "200", 3)


def test_an_exception_is_one_field_on_the_same_line():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        r = record(exc_info=sys.exc_info())
    line = logs.JsonFormatter().format(r)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exception"]


def test_bootids_are_hidden():
    assert logs.hide_bootids("GET /finish?id=1&bootid=0123abcd HTTP/1.1") == "GET /finish?id=1&bootid=- HTTP/1.1"
    assert logs.hide_bootids("/post-install?bootid=ab&id=2") == "/post-install?bootid=-&id=2"


@pytest.mark.parametrize(
    "name", ["boot%69d", "boot%49d", "BOOTID", "Boot%49D", "%62ootid", "%62%6f%6f%74%69%64", "boot%2569d"]
)
def test_bootids_are_hidden_whatever_the_spelling_of_the_name(name):
    assert logs.hide_bootids(f"GET /finish?id=1&{name}=0123abcd HTTP/1.1") == f"GET /finish?id=1&{name}=- HTTP/1.1"


@pytest.mark.parametrize("segment", ["nocloud", "NoCloud", "%6eocloud", "%256eocloud", "no%63loud", "ignition"])
@pytest.mark.parametrize("before", ["GET ", '"GET ', "s=http://10.0.0.1:5000", ""])
def test_the_bootid_of_a_nocloud_seed_url_is_hidden(segment, before):
    line = f"{before}/{segment}/12/0123abcd/user-data HTTP/1.1"
    assert logs.hide_bootids(line) == f"{before}/{segment}/12/-/user-data HTTP/1.1"
    assert logs.hide_bootids(f"{before}/{segment}/12/0123abcd") == f"{before}/{segment}/12/-"
    # Other paths keep their segments.
    kernel = "GET /images/image1/pxeboot.kernel HTTP/1.1"
    assert logs.hide_bootids(kernel) == kernel


def test_gunicorn_messages_are_redacted_and_cut():
    record = logging.makeLogRecord({"msg": "Invalid request from ip=%s: 'GET /finish?bootid=s3cret%s'",
                                    "args": ("127.0.0.1", "x" * 5000)})
    logs.RedactFilter().filter(record)
    assert "s3cret" not in record.getMessage() and len(record.getMessage()) < 600


def test_a_throttle_says_a_repeated_message_once_a_while_with_how_many_were_held_back():
    from ks.core.logs import Throttle

    now = [0.0]
    throttle = Throttle(60, clock=lambda: now[0])
    assert throttle.due("streams") == 0  # the first one is said
    assert [throttle.due("streams") for _ in range(5)] == [None] * 5
    assert throttle.due("other") == 0  # each key on its own
    now[0] = 60.0
    assert throttle.due("streams") == 5  # said again, with the five held back since
    assert throttle.due("streams") is None


def test_a_throttle_with_kept_forgets_the_least_recently_seen_keys():
    from ks.core.logs import Throttle

    throttle = Throttle(60, clock=lambda: 0.0, kept=2)
    assert [throttle.due(k) for k in ("a", "b", "a", "c")] == [0, 0, None, 0]  # "b" forgotten for "c"
    assert throttle.due("b") == 0 and throttle.due("a") == 0  # ("a" forgotten for "b")
