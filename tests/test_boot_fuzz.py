"""Property-based fuzzing of the boot endpoints and /update, bounded to seconds.

Whatever a machine sends: never a 5xx, never a dropped connection; a value
that is accepted adds no line and no command to any script it lands in
(compared with the same script for a benign value); and no answer but a
machine's own /bootstrap script (or a script fetched with that very bootid)
carries a bootid.
"""

import itertools
import json
import re
import shlex

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_hostile_data import HOST_TMPL, POST_INSTALL_TMPL

from ks.app import create_app
from ks.records import migrate

from helpers import make_image
from server import ServerProcess

# Pieces that script languages care about, mixed with harmless text and any other characters.
PIECES = ["a", "Z", "0", " ", ".", "-", "_", ":", "/", "@", "=", ",", "+", "<(", ">(", "<", ">", "'", '"', "*", "?",
          "[", "]", "~", "{", "}", "!", "#", "$", "`", "\\", ";", "&", "|", "&&", "||", "\n", "\t", "\r", "\x00", "%",
          "${net0}", "$(id)", "@bootid@", "@BOOTID@", "@HOST_DATA@", "@metadata.note@", "@id@", "é", "\u2028",
          "\ufffe", "\ud800", "\udc00"]
hostile = st.one_of(st.lists(st.sampled_from(PIECES), max_size=8).map("".join), st.text(max_size=12))
url_safe = st.lists(st.sampled_from([p for p in PIECES if not 0xD800 <= ord(p[0]) <= 0xDFFF]), max_size=8).map("".join)
BOOTID = re.compile(r"[0-9a-f]{32}")
FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

_macs = itertools.count(1)


def new_mac() -> str:
    i = next(_macs)
    return f"52:54:0e:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"


@pytest.fixture
def fuzz_client(root):
    discover = make_image(root, "discover", "Discover")
    (discover / "host.tmpl").write_text(HOST_TMPL)
    (discover / "post_install.tmpl").write_text(POST_INSTALL_TMPL)
    # Every example registers new machines, all from the test client's one address: no registration limit here.
    app = create_app({"ROOT": str(root), "INITIAL_CHAIN": "discover,new", "REGISTRATIONS_PER_MINUTE": 0,
                      "REGISTRATIONS_PER_SOURCE": 0})
    migrate.upgrade(app.extensions["kiwispray"].db)
    yield app.test_client()
    app.extensions["kiwispray"].db.dispose()


def shape(script: str) -> list:
    """Per line: the shell/iPXE operators and expansions in it (words, which values may add, left out)."""
    lines = []
    for line in script.split("\n"):
        try:
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            operators = [t for t in lexer if t and set(t) <= set("();<>|&")]
        except ValueError:  # an unbalanced quote swallows what follows it
            operators = ["UNBALANCED"]
        lines.append((operators, line.count("$"), line.count("`"), line.count("#"), line.startswith(":")))
    return lines


class Machines:
    """Boots machines through a client and remembers every bootid handed out."""

    def __init__(self, client):
        self.client = client
        self.bootids: set[str] = set()

    def boot(self, mac: str | None = None, **query):
        mac = mac or new_mac()
        r = self.client.get("/bootstrap", query_string={"net0": mac, **query})
        assert r.status_code in (200, 400), (r.status_code, r.text)
        if r.status_code != 200:
            return None
        own = set(BOOTID.findall(r.text))
        assert len(own) == 1 and not own & self.bootids, "a /bootstrap script carries exactly its own, new bootid"
        self.bootids |= own
        (bootid,) = own
        for line in r.text.splitlines():
            assert bootid not in line or line.startswith("kernel "), f"bootid on the console: {line!r}"
        host_id = int(re.search(r"post-install\?id=(\d+)&", r.text).group(1))
        return host_id, bootid, r.text, mac

    def leaks(self, text: str, allowed: str | None = None) -> set[str]:
        return set(BOOTID.findall(text)) & self.bootids - {allowed}

    def scripts(self, mac: str) -> tuple[str, str]:
        """The machine's next /bootstrap script and the /post-install script of that boot."""
        host_id, bootid, script, _ = self.boot(mac)
        post = self.client.get("/post-install", query_string={"id": host_id, "bootid": bootid})
        assert post.status_code == 200, post.text
        assert not self.leaks(post.text, bootid)
        return script, post.text


@given(note=hostile, key=hostile, extra=hostile)
@example(note="node07 <(touch X)", key="", extra="")  # the cases found by hand, always tried
@example(note="n", key="x", extra="a>/path")
@example(note="@bootid@", key="", extra="@HOST_DATA@")
@FUZZ
def test_update_never_fails_and_what_it_accepts_stays_data(fuzz_client, note, key, extra):
    machines = Machines(fuzz_client)
    victim, benign = machines.boot(), machines.boot()
    documents = {"note": note, "hostname": note, "location": note, "x": extra}
    if key:
        documents[key] = extra
    body = json.dumps(documents)  # \ud800 and friends travel as JSON escapes
    r = fuzz_client.post(f"/update?id={victim[0]}&bootid={victim[1]}", data={"metadata": body})
    assert r.status_code in (200, 400), (r.status_code, r.text)
    assert not machines.leaks(r.text)
    if r.status_code != 200:
        return
    safe = {k: "x" for k in documents}
    assert fuzz_client.post(f"/update?id={benign[0]}&bootid={benign[1]}",
                            data={"metadata": json.dumps(safe)}).status_code == 200
    for script, benign_script in zip(machines.scripts(victim[3]), machines.scripts(benign[3]), strict=True):
        assert shape(script) == shape(benign_script), (script, benign_script)


@given(serial=url_safe, uuid=url_safe, platform=url_safe, net1=url_safe)
@example(serial="S1 <(touch X)", uuid="", platform="", net1="")
@FUZZ
def test_bootstrap_never_fails_and_what_it_accepts_stays_data(fuzz_client, serial, uuid, platform, net1):
    machines = Machines(fuzz_client)
    booted = machines.boot(serial=serial, uuid=uuid, platform=platform, net1=net1)
    if booted is None:
        return
    # A serial of its own: a serial already known, reported with a new MAC, is a conflict.
    benign = machines.boot(serial=f"X{next(_macs)}", uuid="", platform="efi")
    assert shape(booted[2]) == shape(benign[2])


@given(
    path=st.sampled_from(["/post-install", "/finish", "/state", "/update", "/bootstrap", "/hosts"]),
    host_id=st.one_of(st.integers(-2, 5).map(str), url_safe),
    bootid=st.one_of(url_safe, st.sampled_from(["own", "other"])),
    repeat=st.booleans(),
)
@FUZZ
def test_no_answer_but_the_machines_own_carries_a_bootid(fuzz_client, path, host_id, bootid, repeat):
    machines = Machines(fuzz_client)
    first, second = machines.boot(), machines.boot()
    if bootid in ("own", "other"):
        host_id, bootid = str(first[0]), (first if bootid == "own" else second)[1]
    query = [("id", host_id), ("bootid", bootid)] * (2 if repeat else 1)
    method = fuzz_client.post if path == "/update" else fuzz_client.get
    r = method(path, query_string=query)
    assert r.status_code < 500 and r.status_code in (200, 400, 401, 403, 404, 409), (r.status_code, r.text)
    own = first[1] if path == "/post-install" and bootid == first[1] and not repeat else None
    assert not machines.leaks(r.text, own)


@pytest.mark.e2e
@given(note=hostile, serial=url_safe)
@settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_a_real_server_answers_every_hostile_request(real_server, note, serial):
    srv = real_server
    r = requests.get(srv.url + "/bootstrap", params={"net0": new_mac(), "serial": serial}, timeout=10)
    assert r.status_code in (200, 400), r.text
    if r.status_code == 200:
        host_id = int(re.search(r"post-install\?id=(\d+)&", r.text).group(1))
        bootid = BOOTID.search(r.text).group()
        u = requests.post(srv.url + "/update", params={"id": host_id, "bootid": bootid},
                          data={"metadata": json.dumps({"note": note})}, timeout=10)
        assert u.status_code in (200, 400), u.text
        post = requests.get(srv.url + "/post-install", params={"id": host_id, "bootid": bootid}, timeout=10)
        assert post.status_code == 200 and len(post.text.splitlines()) == len(POST_INSTALL_TMPL.splitlines())


@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz") / "site"
    root.mkdir()
    discover = make_image(root, "discover", "Discover")
    (discover / "host.tmpl").write_text(HOST_TMPL)
    (discover / "post_install.tmpl").write_text(POST_INSTALL_TMPL)
    with ServerProcess(root, "--discover") as srv:
        yield srv
