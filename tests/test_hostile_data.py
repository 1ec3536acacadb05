"""A hostile client on the boot network, and hostile or careless operators, against a real server.

Every value a machine or an operator supplies must stay data in every script:
refused with a 4xx (or exit 1) that changes nothing when it is outside the
alphabet of ``ks.core.values``, and rendered as text when it is inside it (even when
it spells a placeholder). Values stored before these checks existed must not
crash a render or a listing, nor reach a script raw.
"""

import itertools
import json
import re
import socket
import subprocess
import sys

import pytest
import requests
from sqlalchemy import text

from ks.fleet import tokens
from ks.records import migrate
from ks.records.db import Database
from ks.records.models import Host, HostMac

from helpers import cli_env, make_image, run_edit_host
from server import ServerProcess

pytestmark = pytest.mark.e2e

HOST_TMPL = """#!ipxe
echo host @id@ is @hostname@, serial @serial@
@HOST_DATA@
echo location @metadata.location@
kernel http://@SERVER_IP@:@SERVER_PORT@/images/@state@/pxeboot.kernel razorurl=http://@SERVER_IP@:@SERVER_PORT@/post-install?id=@id@&bootid=@bootid@
boot
"""
# The original's style: placeholders unquoted in bash.
POST_INSTALL_TMPL = """#!/bin/bash
if [ @metadata.hostname@ != "@metadata"."hostname@" ]; then
\thostnamectl set-hostname @metadata.hostname@
fi
echo note: @metadata.note@ @metadata.x@
curl -s 'http://@SERVER_IP@:@SERVER_PORT@/finish?id=@id@&bootid=@bootid@'
"""

_macs = itertools.count(1)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile") / "site"
    root.mkdir()
    make_image(root, "image1")
    discover = make_image(root, "discover", "Discover")
    (discover / "host.tmpl").write_text(HOST_TMPL)
    (discover / "post_install.tmpl").write_text(POST_INSTALL_TMPL)
    db = Database(f"sqlite:///{root / 'kiwispray.db'}")
    migrate.upgrade(db)
    token = db.write(lambda session: tokens.create(session, "hostile"))
    db.dispose()
    # Its tests register many machines, all from this test's one address: no bound on one address's.
    with ServerProcess(root, "--discover", "--registrations-per-source", "0") as srv:
        yield root, srv, token


@pytest.fixture
def root(site):
    return site[0]


@pytest.fixture
def srv(site):
    return site[1]


def new_mac() -> str:
    i = next(_macs)
    return f"52-54-0a-00-{i >> 8 & 255:02x}-{i & 255:02x}"


def boot(srv, mac):
    r = requests.get(srv.url + "/bootstrap", params={"net0": mac}, timeout=10)
    assert r.status_code == 200, r.text
    host_id = int(re.search(r"post-install\?id=(\d+)&", r.text).group(1))
    bootid = re.search(r"bootid=([0-9a-f]{32})", r.text).group(1)
    return host_id, bootid, r.text


def snapshot(root, host_id):
    db = Database(f"sqlite:///{root / 'kiwispray.db'}")
    try:
        with db.read() as session:
            host = session.get(Host, host_id)
            return host.hostname, host.state, host.meta, host.mac_list, host.serial, host.bootid_hash
    finally:
        db.dispose()


def host_count(root) -> int:
    db = Database(f"sqlite:///{root / 'kiwispray.db'}")
    try:
        with db.read() as session:
            return session.query(Host).count()
    finally:
        db.dispose()


SHELL_AND_IPXE = [
    "node07 <(touch X)", "a>/path", "a<b", "a>b", ">(touch X)", "it's", 'say "hi"', "a*", "a?", "[ab]", "~root",
    "{a,b}", "a}", "!!", "#comment", "line\nbreak", "tab\there", "${net0}", "$(id)", "`id`", "a;b", "a&b", "a|b",
    "a\\b", "a\rb", "(x)", "a%b", "é", "\u202e", "\uff1c",
]
JSON_ESCAPES = [r"\ud800", r"\udbff", r"\udc00", r"\udfff", r"\u0000", r"\u001b", r"\u007f", r"\ufffe", r"\uffff",
                r"\ufdd0", r"\u2028", r"\u0085"]


def deep(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


REFUSED_UPDATES = (
    [pytest.param({"metadata": json.dumps({"hostname": v})}, 400, id=f"value-{v!r}") for v in SHELL_AND_IPXE]
    + [pytest.param({"metadata": json.dumps({v: "x"})}, 400, id=f"key-{v!r}") for v in ["$(id)", "a b<", "k\n", ""]]
    + [pytest.param({"metadata": '{"a": "x' + e + 'y"}'}, 400, id=f"escape-{e}") for e in JSON_ESCAPES]
    + [pytest.param({"metadata": '{"' + e + '": 1}'}, 400, id=f"key-escape-{e}") for e in JSON_ESCAPES[:4]]
    + [
        pytest.param({"metadata": deep(9)}, 400, id="depth-9"),
        pytest.param({"metadata": deep(950)}, 400, id="depth-950"),
        pytest.param({"metadata": json.dumps({f"k{i}": "x" * 1000 for i in range(17)})}, 400, id="size-17k"),
        pytest.param({"metadata": [json.dumps({f"a{i}": "x" * 1000 for i in range(9)}),
                                   json.dumps({f"b{i}": "x" * 1000 for i in range(9)})]}, 400, id="merged-size"),
        pytest.param({"metadata": json.dumps({"a": "x" * 1025})}, 400, id="value-length"),
        pytest.param({"metadata": json.dumps({"k" * 65: "x"})}, 400, id="key-length"),
        pytest.param({"metadata": '{"a": ["x"]}'}, 400, id="list"),
        pytest.param({"metadata": '{"a": 1e400}'}, 400, id="infinite"),
        pytest.param({"mac": [f"52:54:0b:00:00:{i:02x}" for i in range(17)]}, 400, id="17-macs"),
        pytest.param({"mac": "01:00:5e:00:00:01"}, 400, id="multicast-mac"),
        pytest.param({"mac": "33-33-00-00-00-01"}, 400, id="ipv6-multicast-mac"),
        pytest.param({"mac": "ff:ff:ff:ff:ff:ff"}, 400, id="broadcast-mac"),
        pytest.param({"mac": "00:00:00:00:00:00"}, 400, id="zero-mac"),
        pytest.param({"mac": "52:54:00:00:00:01\nshell"}, 400, id="mac-newline"),
    ]
)


@pytest.mark.parametrize("form, status", REFUSED_UPDATES)
def test_update_refuses_values_that_scripts_could_run_and_changes_nothing(root, srv, form, status):
    host_id, bootid, _ = boot(srv, new_mac())
    before = snapshot(root, host_id)
    script = requests.get(srv.url + "/post-install", params={"id": host_id, "bootid": bootid}, timeout=10).text
    r = requests.post(srv.url + "/update", params={"id": host_id, "bootid": bootid}, data=form, timeout=10)
    assert r.status_code == status, r.text
    assert r.text.strip() and "Traceback" not in r.text
    assert snapshot(root, host_id) == before
    assert requests.get(srv.url + "/post-install", params={"id": host_id, "bootid": bootid}, timeout=10).text == script


RAW_BODIES = [
    b"metadata=%7B%22hostname%22%3A%22node07%20%3C(touch%20X)%22%7D",  # percent-encoded <(
    b"metadata=%7B%22x%22%3A%22a%3E%2Fpath%22%7D",
    b"metadata=%7B%22a%22%3A%22%C0%AF%22%7D",  # overlong '/'
    b"metadata=%7B%22a%22%3A%22%ED%A0%80%22%7D",  # a surrogate encoded in UTF-8
    b"metadata=%7B%22a%22%3A%22%FF%FE%22%7D",
    b'metadata={"a":"\xc0\xaf"}',
    b'metadata={"a":"\xff"}',
    b"metadata=%7B%22a%22%3A%22%24%7Bnet0%7D%22%7D",
    b"mac=01%3A00%3A5e%3A00%3A00%3A01",
]


@pytest.mark.parametrize("body", RAW_BODIES, ids=lambda b: b.decode("latin-1"))
def test_update_refuses_other_encodings_of_the_same(root, srv, body):
    host_id, bootid, _ = boot(srv, new_mac())
    before = snapshot(root, host_id)
    r = requests.post(srv.url + f"/update?id={host_id}&bootid={bootid}", data=body,
                      headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
    assert r.status_code == 400, r.text
    assert snapshot(root, host_id) == before


@pytest.mark.parametrize(
    "kwargs",
    [
        {"json": {"metadata": {"rack": "4"}}},
        {"data": b'{"metadata": {"rack": "4"}}', "headers": {"Content-Type": "text/plain"}},
        {"data": b"metadata=%7B%7D", "headers": {"Content-Type": "application/octet-stream"}},
    ],
    ids=["json", "text", "octet-stream"],
)
def test_update_with_a_body_that_is_no_form_is_415_not_a_silent_success(root, srv, kwargs):
    host_id, bootid, _ = boot(srv, new_mac())
    before = snapshot(root, host_id)
    r = requests.post(srv.url + "/update", params={"id": host_id, "bootid": bootid}, timeout=10, **kwargs)
    assert r.status_code == 415, r.text
    assert "form" in r.text
    assert snapshot(root, host_id) == before


def test_sixteen_macs_in_all_and_not_one_more(root, srv):
    host_id, bootid, _ = boot(srv, new_mac())
    url = srv.url + "/update"
    params = {"id": host_id, "bootid": bootid}
    macs = [f"52:54:0c:00:{host_id:02x}:{i:02x}" for i in range(15)]
    assert requests.post(url, params=params, data={"mac": macs}, timeout=10).status_code == 200
    assert len(snapshot(root, host_id)[3]) == 16
    r = requests.post(url, params=params, data={"mac": f"52:54:0c:01:{host_id:02x}:00"}, timeout=10)
    assert r.status_code == 400 and "at most 16" in r.text
    assert len(snapshot(root, host_id)[3]) == 16


PLACEHOLDER_SPELLINGS = ["@bootid@", "@BOOTID@", "@HOST_DATA@", "@host_data@", "@metadata.hostname@", "@SERVER_IP@",
                         "@id@", "@bootid", "a@bootid@b", "@metadata@"]


@pytest.mark.parametrize("value", PLACEHOLDER_SPELLINGS)
def test_a_value_spelling_a_placeholder_stays_text(root, srv, value):
    host_id, bootid, _ = boot(srv, new_mac())
    r = requests.post(srv.url + "/update", params={"id": host_id, "bootid": bootid},
                      data={"metadata": json.dumps({"note": value, "location": value})}, timeout=10)
    assert r.status_code == 200, r.text
    mac = snapshot(root, host_id)[3][0]
    _, bootid, script = boot(srv, mac)
    assert f'echo * metadata: "{{\'location\': \'{value}\', \'note\': \'{value}\'}}"' in script
    assert f"echo location {value}\n" in script
    assert [line for line in script.splitlines() if bootid in line] == [
        line for line in script.splitlines() if line.startswith("kernel ")
    ]
    post = requests.get(srv.url + "/post-install", params={"id": host_id, "bootid": bootid}, timeout=10).text
    assert f"echo note: {value} @metadata.x@\n" in post
    assert [line for line in post.splitlines() if bootid in line] == [post.splitlines()[-1]]


BAD_IDENTIFIERS = (
    [pytest.param(f"serial={requests.utils.quote(v)}", id=f"serial-{v!r}") for v in SHELL_AND_IPXE]
    + [pytest.param(f"uuid=4c4c4544-0042-3510-8056-b4c04f335931{requests.utils.quote(v)}", id=f"uuid-{v!r}")
       for v in ["<(x)", "'", "\nreboot"]]
    + [pytest.param(f"serial={raw}", id=f"serial-raw-{raw}") for raw in
       ["%FF", "%C0%AF", "%ED%A0%80", "%ED%B0%80", "%00", "A%0AB", "%24%7Bnet0%7D", "A%3E%2Fpath", "%EF%BF%BE"]]
    + [pytest.param(f"platform={v}", id=f"platform-{v}") for v in ["efi%3Bshell", "a%3C(x)"]]
)


@pytest.mark.parametrize("query", BAD_IDENTIFIERS)
def test_bootstrap_refuses_identifiers_outside_the_alphabet_and_registers_nothing(root, srv, query):
    count = host_count(root)
    r = requests.get(srv.url + f"/bootstrap?net0={new_mac()}&{query}", timeout=10)
    assert r.status_code == 400, r.text
    assert host_count(root) == count


@pytest.mark.parametrize("mac", ["01-00-5e-00-00-01", "03-00-00-00-00-01", "ff-ff-ff-ff-ff-ff", "00-00-00-00-00-00"])
def test_bootstrap_refuses_group_and_null_macs(root, srv, mac):
    count = host_count(root)
    assert requests.get(srv.url + "/bootstrap", params={"net0": mac}, timeout=10).status_code == 400
    assert host_count(root) == count


def raw_request(srv, request_line: bytes) -> bytes:
    """Send bytes that no HTTP library would; return the whole answer (the connection must not just drop)."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(request_line + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("raw", [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"<(touch X)", b"'\"*"])
def test_raw_bytes_in_the_query_get_a_4xx_answer(root, srv, raw):
    count = host_count(root)
    answer = raw_request(srv, b"GET /bootstrap?net0=" + new_mac().encode() + b"&serial=" + raw + b" HTTP/1.1")
    assert re.match(rb"HTTP/1\.[01] 4\d\d ", answer), answer[:200]
    assert host_count(root) == count


OPERATOR_VALUES = ["node07 <(touch X)", "a\nb", "${net0}", "x'y", "\ud800", "a;reboot"]


@pytest.mark.parametrize("value", OPERATOR_VALUES)
def test_the_admin_api_refuses_the_same_values_all_or_nothing(root, srv, site, value):
    host_id, _, _ = boot(srv, new_mac())
    before = snapshot(root, host_id)
    headers = {"Authorization": f"Bearer {site[2]}", "Content-Type": "application/json"}
    for body in ({"state": "image1", "metadata": {"hostname": value}}, {"state": "image1", "hostname": value},
                 {"metadata": {"a": {"b": value}}}):
        r = requests.patch(srv.url + f"/api/v1/hosts/{host_id}", data=json.dumps(body), headers=headers, timeout=10)
        assert r.status_code == 400, r.text
        assert r.json()["error"]
    assert snapshot(root, host_id) == before


@pytest.mark.parametrize("value", [v for v in OPERATOR_VALUES if "\ud800" not in v])
def test_edit_host_refuses_the_same_values(root, srv, value):
    host_id, _, _ = boot(srv, new_mac())
    before = snapshot(root, host_id)
    # A metadata value is refused by what values may hold; a hostname by the one hostname rule.
    for args, says in ((["-m", json.dumps({"hostname": value})], "may hold only"),
                       (["-s", "image1", "-n", value], "is not a hostname")):
        r = run_edit_host(root, "-i", str(host_id), *args, check=False)
        assert r.returncode == 1, r
        assert says in r.stderr and "Traceback" not in r.stderr
    for macs in (",".join(f"52:54:0d:00:00:{i:02x}" for i in range(17)), "01:00:5e:00:00:01"):
        r = run_edit_host(root, "-i", str(host_id), "--set-macs", macs, check=False)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r
    assert snapshot(root, host_id) == before


def store_directly(root, meta: str, **fields) -> int:
    """A host written straight into the database: what older versions accepted, or a manual edit."""
    db = Database(f"sqlite:///{root / 'kiwispray.db'}")
    try:
        def add(session):
            host = Host(state="discover", boot_finished=False, meta={}, **fields)
            host.macs = [HostMac(mac=new_mac().replace("-", ":"), position=0)]
            session.add(host)
            session.flush()
            session.execute(text("UPDATE hosts SET metadata = :meta WHERE id = :id"), {"meta": meta, "id": host.id})
            return host.id
        return db.write(add)
    finally:
        db.dispose()


def kiwispray(root, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ks", *args], env=cli_env(root), capture_output=True, text=True)


STORED = {  # metadata as JSON text, as it lies in the database
    "lone surrogate": {"meta": '{"a": "\\ud800", "hostname": "ok"}'},
    "shell syntax": {"hostname": "n<(touch X)", "serial": "S'1\"",
                     "meta": json.dumps({"hostname": "node07 <(touch X)", "note": "a>/path", "x": ["y"]})},
    "bad key": {"meta": '{"k$(id)": "v", "\\udc80": "w"}'},
    "950 deep": {"meta": deep(950)},
}


@pytest.mark.parametrize("fields", list(STORED.values()), ids=list(STORED))
def test_stored_values_never_crash_a_render_or_listing_nor_reach_a_script_raw(root, srv, site, fields):
    host_id = store_directly(root, **{"hostname": "not-set", **fields})
    mac = snapshot(root, host_id)[3][0]
    r = requests.get(srv.url + "/bootstrap", params={"net0": mac}, timeout=10)
    assert r.status_code == 200, r.text
    bootid = re.search(r"bootid=([0-9a-f]{32})", r.text).group(1)
    post = requests.get(srv.url + "/post-install", params={"id": host_id, "bootid": bootid}, timeout=10)
    assert post.status_code == 200, post.text
    for script in (r.text, post.text):
        assert not set(script) & set("<>\"`$;|") - set(HOST_TMPL + POST_INSTALL_TMPL)
        assert "<(" not in script and "\ufffd" not in script and "[" not in script.replace("[ ", "").replace(" ]", "")
    assert len(post.text.splitlines()) == len(POST_INSTALL_TMPL.splitlines())
    assert f"host {host_id} holds values that scripts cannot carry" in srv.log()
    for args in (["render", "-i", str(host_id)], ["render", "-i", str(host_id), "--post-install"]):
        done = kiwispray(root, *args)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    for args in (
        ["-l"],
        ["-ll"],
        ["-lll"],
        ["--json"],
        ["-i", str(host_id), "-lll"],
        ["-i", str(host_id), "-s", "image1"],
        ["-i", str(host_id), "--history"],
    ):
        done = run_edit_host(root, *args, check=False)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr)
    assert snapshot(root, host_id)[1] == "image1"
    assert requests.get(srv.url + f"/api/v1/hosts/{host_id}", headers={"Authorization": f"Bearer {site[2]}"},
                        timeout=10).status_code == 200
