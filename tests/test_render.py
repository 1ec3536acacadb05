"""Template lookup: which file serves a state, and how soon a change is seen."""

import os

import pytest

from ks.boot import render
from ks.core import config


@pytest.fixture
def clock(monkeypatch):
    """A monotonic clock the test moves by hand."""
    now = [1000.0]
    monkeypatch.setattr(render.time, "monotonic", lambda: now[0])
    return now


def test_a_new_or_edited_template_serves_once_the_check_interval_passed(tmp_path, clock):
    renderer = render.Renderer(tmp_path, config.shipped("templates"), check_interval=1.0)
    site_template = tmp_path / "templates" / "finished.ipxe"
    assert renderer.find("host", "finished")[2] == "shipped:finished.ipxe"

    site_template.parent.mkdir()
    site_template.write_text("#!ipxe\necho {{ host.id }} first\n")
    clock[0] += 0.5
    assert renderer.find("host", "finished")[2] == "shipped:finished.ipxe"
    clock[0] += 0.6
    assert renderer.find("host", "finished")[2] == "templates/finished.ipxe"
    assert renderer.render("host", "finished", {"host": {"id": 7}}, list).text == "#!ipxe\necho 7 first\n"

    site_template.write_text("#!ipxe\necho {{ host.id }} second, longer\n")
    os.utime(site_template, ns=(0, 1))  # a different mtime, whatever the file system's resolution
    assert renderer.render("host", "finished", {"host": {"id": 7}}, list).text == "#!ipxe\necho 7 first\n"
    clock[0] += 1.1
    assert renderer.render("host", "finished", {"host": {"id": 7}}, list).text == "#!ipxe\necho 7 second, longer\n"

    site_template.unlink()
    clock[0] += 1.1
    assert renderer.find("host", "finished")[2] == "shipped:finished.ipxe"


def test_with_no_check_interval_every_lookup_looks_at_the_files(tmp_path, clock):
    renderer = render.Renderer(tmp_path, config.shipped("templates"), check_interval=0)
    assert renderer.find("host", "finished")[2] == "shipped:finished.ipxe"
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "finished.tmpl").write_text("#!ipxe\necho @HOST@\n")
    assert renderer.find("host", "finished")[1:] == (render.LEGACY, "templates/finished.tmpl")
    assert renderer.render("host", "finished", {}, lambda: [("HOST", 3)]).text == "#!ipxe\necho 3\n"


def _kernel_words(script: str) -> list[str]:
    return next(line for line in script.splitlines() if line.startswith("kernel ")).split()


def test_a_value_in_a_kernel_line_stays_one_argument(app, client, db, root):
    from ks.core import states
    from ks.fleet import machines

    from helpers import MAC1, boot

    app.extensions["kiwispray"].renderer.check_interval = 0  # template edits count from the next request
    image = root / "images" / "image1"
    (image / "host.ipxe").write_text(
        "#!ipxe\necho {{ host.facts.product.split() | map('ipxe') | join(' ') }}\n"
        "kernel k product={{ host.facts.product | ipxe }} serial={{ host.serial | ipxe }}"
        " rack={{ host.metadata.rack | ipxe }}\nboot\n"
    )
    boot(client, MAC1)

    def setup(session):
        host = machines.get_host(session, 1)
        machines.set_metadata(session, host, {"rack": "4 init=/bin/sh"}, "cli")
        machines.set_state(session, host, states.parse_chain("image1"), "cli")

    db.write(setup)
    r = client.get("/bootstrap?net0=52-54-00-00-00-01&serial=S1%20init%3D%2Fbin%2Fsh"
                   "&product=R640%20init%3D%2Fbin%2Fsh")
    assert r.status_code == 200, r.text
    assert _kernel_words(r.text) == ["kernel", "k", "product=R640_init=/bin/sh", "serial=S1_INIT=/BIN/SH",
                                     "rack=4_init=/bin/sh"]
    assert "echo R640 init=/bin/sh\n" in r.text  # an echo line shows the words

    # A legacy template: the same value is one argument wherever iPXE would split it, words on echo lines.
    (image / "host.ipxe").unlink()
    (image / "host.tmpl").write_text(
        "#!ipxe\necho at @metadata.rack@, serial @serial@\nset rack @metadata.rack@\n"
        "kernel k serial=@serial@ rack=@metadata.rack@ macs=@macs@\nboot\n"
    )
    r = client.get("/bootstrap?net0=52-54-00-00-00-01&serial=S1%20init%3D%2Fbin%2Fsh")
    assert "echo at 4 init=/bin/sh, serial S1 INIT=/BIN/SH\n" in r.text
    assert "set rack 4_init=/bin/sh\n" in r.text
    assert _kernel_words(r.text) == ["kernel", "k", "serial=S1_INIT=/BIN/SH", "rack=4_init=/bin/sh",
                                     "macs=52:54:00:00:00:01"]
