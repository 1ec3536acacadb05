"""Template lookup: which file serves a state, and how soon a change is seen."""

import os

import pytest

from ks import config, render


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
