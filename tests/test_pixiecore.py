"""Pixiecore's API mode: the JSON it parses, idempotent answers, finished machines ignored."""

import json

import pytest
from sqlalchemy import func, select

from ks.core import states
from ks.fleet import machines
from ks.records.models import Event, Host

from helpers import MAC1, boot


def pixiecore_parse(body: bytes) -> dict:
    """Decode an answer the way Pixiecore's API client does (Go's encoding/json into its struct).

    kernel: string, initrd: []string, cmdline: string or object, message: string,
    ipxe-script: string; unknown keys are ignored. Either ipxe-script or a kernel is
    required, or Pixiecore treats the answer as malformed and ignores the machine.
    """
    document = json.loads(body)
    assert isinstance(document, dict)
    typed = {"kernel": str, "message": str, "ipxe-script": str}
    for key, kind in typed.items():
        assert key not in document or isinstance(document[key], kind), key
    assert "initrd" not in document or all(isinstance(u, str) for u in document["initrd"])
    assert "cmdline" not in document or isinstance(document["cmdline"], (str, dict))
    assert document.get("ipxe-script") or document.get("kernel"), "malformed for Pixiecore"
    return document


def snapshot(db):
    with db.read() as s:
        return (
            s.scalar(select(func.count()).select_from(Host)),
            s.scalar(select(func.count()).select_from(Event)),
            list(s.scalars(select(Host.bootid_hash))),
        )


def test_unknown_machine_is_chained_into_bootstrap_and_nothing_is_written(client, db):
    before = snapshot(db)
    answers = [client.get("/pixiecore/v1/boot/52:54:00:00:00:01", headers={"Host": "10.0.0.1:5000"}) for _ in range(5)]
    assert {a.status_code for a in answers} == {200}
    assert len({a.data for a in answers}) == 1
    document = pixiecore_parse(answers[0].data)
    assert document == {"ipxe-script": "#!ipxe\nchain http://10.0.0.1:5000/bootstrap.ipxe\n"}
    assert snapshot(db) == before


def test_machine_in_an_image_state_gets_the_same_answer_every_time(client, db):
    boot(client, MAC1, serial="S1")
    db.write(lambda s: machines.set_state(s, machines.get_host(s, 1), states.parse_chain("image1"), "cli"))
    before = snapshot(db)
    answers = {client.get("/pixiecore/v1/boot/52:54:00:00:00:01").data for _ in range(5)}
    assert len(answers) == 1
    assert "bootstrap.ipxe" in pixiecore_parse(answers.pop())["ipxe-script"]
    assert snapshot(db) == before  # no bootid rotation, no history per call
    # The one /bootstrap of the boot does the rest, as without Pixiecore.
    assert "boots image image1" in boot(client, MAC1, serial="S1").text


def test_finished_machine_is_ignored(client, db):
    boot(client, MAC1)
    db.write(lambda s: machines.set_state(s, machines.get_host(s, 1), states.parse_chain("finished"), "cli"))
    r = client.get("/pixiecore/v1/boot/52-54-00-00-00-01")
    assert r.status_code == 404 and "finished" in r.json["error"]


@pytest.mark.parametrize("mac", ["nonsense", "00:00:00:00:00:00", "a" * 5000, "52:54:00:00:00:01:02"])
def test_bad_macs_are_refused(client, mac):
    r = client.get(f"/pixiecore/v1/boot/{mac}")
    assert r.status_code == 400 and r.mimetype == "application/json"
