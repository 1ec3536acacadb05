"""Nothing outside images/ is served, bootids stay secret, reported values cannot inject."""

import logging

import pytest
from sqlalchemy import func, select

from ks.core import states
from ks.fleet import machines
from ks.records.models import Host

from helpers import MAC1, boot, bootid_of


def fetch(client, path, method="GET", **kwargs):
    """A response whose body has been read and whose file is closed."""
    r = client.open(path, method=method, **kwargs)
    r.get_data()
    r.close()
    return r


@pytest.fixture
def secrets_on_disk(root):
    (root / "known_hosts.json").write_text('[{"id": 1, "bootid": "s3cret"}]')
    (root / "templates").mkdir()
    (root / "templates" / "new.ipxe").write_text("#!ipxe\necho site new\n")
    outside = root.parent / "outside.txt"
    outside.write_text("outside secret")
    (root / "images" / "wipe" / "leak").symlink_to(outside)
    (root / "images" / "escape").symlink_to(root.parent)
    (root / "images" / "wipe" / "up").symlink_to("../..")
    return root


@pytest.mark.parametrize(
    "path",
    [
        "/kiwispray.db",
        "/known_hosts.json",
        "/templates/new.ipxe",
        "/images/../kiwispray.db",
        "/images/wipe/../../kiwispray.db",
        "/images/%2e%2e/kiwispray.db",
        "/images/wipe/%2e%2e/%2e%2e/known_hosts.json",
        "/images/%2E%2E%2Fkiwispray.db",
        "/images/wipe/..%2f..%2fkiwispray.db",
        "/images//etc/passwd",
        "/images/wipe/leak",
        "/images/escape/outside.txt",
        "/images/wipe/up/kiwispray.db",
        "/images/wipe/pxeboot.kernel%00.txt",
        "/images/wipe",
        "/images/wipe/",
        "/../kiwispray.db",
    ],
)
def test_nothing_outside_images_is_served(client, secrets_on_disk, path):
    r = fetch(client, path)
    assert r.status_code == 404, (path, r.status_code)
    assert b"s3cret" not in r.data and b"outside secret" not in r.data and b"SQLite" not in r.data


def test_files_inside_images_and_links_within_are_served(client, root):
    assert fetch(client, "/images/image1/pxeboot.kernel").data == b"kernel-image1"
    assert fetch(client, "/images/image1/Image1.kernel").data == b"kernel-image1"  # symlink inside the image


def test_image_files_support_range_head_and_conditional_requests(client):
    full = fetch(client, "/images/image1/pxeboot.kernel")
    assert full.headers["Content-Length"] == str(len(b"kernel-image1"))
    assert full.headers["ETag"] and full.headers["Last-Modified"]
    assert full.headers["Accept-Ranges"] == "bytes"
    head = fetch(client, "/images/image1/pxeboot.kernel", method="HEAD")
    assert head.status_code == 200 and head.data == b"" and head.headers["Content-Length"] == "13"
    part = fetch(client, "/images/image1/pxeboot.kernel", headers={"Range": "bytes=7-"})
    assert (part.status_code, part.data, part.headers["Content-Range"]) == (206, b"image1", "bytes 7-12/13")
    bad = fetch(client, "/images/image1/pxeboot.kernel", headers={"Range": "bytes=100-200"})
    assert bad.status_code == 416
    cached = fetch(client, "/images/image1/pxeboot.kernel", headers={"If-None-Match": full.headers["ETag"]})
    assert cached.status_code == 304


@pytest.mark.parametrize(
    "query",
    [
        {"net0": MAC1, "serial": "ABC\nshell"},
        {"net0": MAC1, "serial": "ABC && shell"},
        {"net0": MAC1, "serial": "ABC || shell"},
        {"net0": MAC1, "serial": "${net0/mac}"},
        {"net0": MAC1, "serial": "A\rB"},
        {"net0": MAC1, "serial": "A\x00B"},
        {"net0": MAC1, "uuid": "4c4c4544-0042-3510-8056-b4c04f335931\nshell"},
        {"net0": MAC1, "uuid": "x && shell"},
        {"net0": "52-54-00-00-00-01\nshell"},
        {"net0": MAC1, "platform": "pcbios\nshell"},
    ],
)
def test_script_text_smuggled_through_identifiers_is_refused(client, db, query):
    r = client.get("/bootstrap", query_string=query)
    assert r.status_code == 400
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Host)) == 0


def test_bootids_never_listed_nor_logged_nor_printed(client, db, caplog, root, public_hosts):
    caplog.set_level(logging.INFO)
    boot(client, MAC1, serial="S1")
    db.write(lambda s: machines.set_state(s, machines.get_host(s, 1), states.parse_chain("image1"), "cli"))
    script = boot(client, MAC1, serial="S1").text
    bootid = bootid_of(script)
    assert not any(bootid in line for line in script.splitlines() if line.startswith("echo"))
    assert bootid not in client.get("/hosts").text
    assert bootid not in caplog.text
    with db.read() as s:
        assert bootid not in (s.scalar(select(Host.bootid_hash)) or "")
    post = client.get(f"/post-install?id=1&bootid={bootid}").text
    assert not any(bootid in line for line in post.splitlines() if line.lstrip().startswith("echo"))


def test_another_hosts_data_is_not_revealed(client, db):
    boot(client, MAC1, serial="S1")
    boot(client, "52-54-00-00-00-02", serial="S2")
    r = boot(client, "52-54-00-00-00-02", serial="S2")
    assert "S1" not in r.text and "52:54:00:00:00:01" not in r.text
