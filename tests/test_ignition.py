"""The installed system's Ignition config: the kernel argument, who may read it, JSON safety."""

import json

import pytest

from ks.records.models import Event

from helpers import MAC1, boot, bootid_of

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@example.org"
CONFIG = """{
  "ignition": {"version": "3.3.0"},
  "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": {{ ssh_authorized_keys | tojson }}}]},
  "storage": {"files": [{"path": "/etc/hostname", "mode": 420, "overwrite": true,
                         "contents": {"source": {{ ("data:," ~ (host.hostname | urlencode)) | tojson }}}}]},
  "kiwispray": {{ host.metadata | tojson }}
}
"""


@pytest.fixture(autouse=True)
def templates_seen_at_once(app):
    app.extensions["kiwispray"].renderer.check_interval = 0


@pytest.fixture
def auth(token):
    return {"Authorization": f"Bearer {token}"}


def configure(client, auth, **document):
    r = client.patch("/api/v1/hosts/1", json=document, headers=auth)
    assert r.status_code == 200, r.text


def ignition_url(script: str) -> str | None:
    line = next(line for line in script.splitlines() if line.startswith("kernel "))
    found = [w for w in line.split() if w.startswith("ignition.config.url=")]
    return found[0].partition("=")[2] if found else None


def path_of(url: str) -> str:
    return url[url.index("/ignition/"):]


@pytest.fixture
def with_config(root):
    (root / "images" / "image1" / "config.ign").write_text(CONFIG)


def test_no_template_no_argument(client, auth):
    boot(client, MAC1)
    configure(client, auth, state="image1")
    script = boot(client, MAC1).text
    assert ignition_url(script) is None
    assert client.get(f"/ignition/1/{bootid_of(script)}/config.ign").status_code == 404
    assert client.get("/api/v1/hosts/1/ignition", headers=auth).status_code == 404


def test_the_config_of_the_current_boot(client, db, auth, with_config):
    boot(client, MAC1)
    metadata = {"ssh_authorized_keys": KEY, "note": 'a: b, - c'}
    configure(client, auth, state="image1", hostname="node-7", metadata=metadata)
    script = boot(client, MAC1).text
    url = ignition_url(script)
    assert url == f"http://localhost:80/ignition/1/{bootid_of(script)}/config.ign"
    r = client.get(path_of(url))
    assert r.status_code == 200 and r.mimetype == "application/json"
    document = r.json
    assert document["passwd"]["users"] == [{"name": "core", "sshAuthorizedKeys": [KEY]}]
    assert document["storage"]["files"][0]["contents"]["source"] == "data:,node-7"
    assert document["kiwispray"] == metadata
    operator = client.get("/api/v1/hosts/node-7/ignition", headers=auth)
    assert operator.status_code == 200 and operator.text == r.text
    with db.read() as session:
        assert [e.detail for e in session.query(Event).filter_by(host_id=1, kind="ignition")] == [
            "config from images/image1/config.ign"]


def test_a_wrong_or_old_bootid_gets_401_and_nothing(client, auth, with_config):
    boot(client, MAC1)
    configure(client, auth, state="image1", hostname="node-7", metadata={"ssh_authorized_keys": KEY})
    old = ignition_url(boot(client, MAC1).text)
    newer = ignition_url(boot(client, MAC1).text)
    for url in (old, old.replace("/1/", "/1/0"), path_of(old).replace(old.split("/")[-2], "0" * 32)):
        r = client.get(path_of(url))
        assert r.status_code == 401 and "node-7" not in r.text and "ssh-" not in r.text
    assert client.get(path_of(newer)).status_code == 200
    assert client.get("/api/v1/hosts/1/ignition").status_code == 401
    assert client.get("/ignition/x/abc/config.ign").status_code == 400
    assert client.get(f"/ignition/9/{newer.split('/')[-2]}/config.ign").status_code == 401


def test_values_stay_json_data(client, db, auth, root):
    (root / "images" / "image1" / "config.ign").write_text(
        '{"ignition": {"version": "3.3.0"}, "labels": {{ host.labels | tojson }}, "facts": {{ host.facts | tojson }}}'
    )
    boot(client, MAC1)
    configure(client, auth, state="image1")
    from ks.records.models import Host

    def store(session):
        host = session.get(Host, 1)
        host.labels = {"rack": '4", "evil": {"x": 1}, "y": "', "<script>": "</script>"}
        host.facts = {"product": "R640\n}"}

    db.write(store)
    document = client.get(path_of(ignition_url(boot(client, MAC1).text))).json
    assert set(document) == {"ignition", "labels", "facts"}
    assert set(document["labels"]) == {"rack", "_script_"}
    assert document["facts"] == {"product": "R640__"}


def test_a_template_that_renders_no_json_object_is_the_operators_to_fix(client, auth, root):
    boot(client, MAC1)
    configure(client, auth, state="image1")
    for text in ('{"ignition": {{ host.id }', "[1, 2]", "{% if %}"):
        (root / "images" / "image1" / "config.ign").write_text(text)
        script = boot(client, MAC1).text  # the machine still boots
        r = client.get(path_of(ignition_url(script)))
        assert r.status_code == 500 and "images/image1/config.ign" in r.text, text


def test_the_template_is_private_and_the_site_wide_one_counts(client, auth, root):
    (root / "templates").mkdir()
    (root / "templates" / "config.ign").write_text('{"ignition": {"version": "3.3.0"}, "from": "site"}')
    boot(client, MAC1)
    configure(client, auth, state="wipe")
    script = boot(client, MAC1).text
    assert json.loads(client.get(path_of(ignition_url(script))).text)["from"] == "site"
    (root / "images" / "wipe" / "config.ign").write_text('{"ignition": {"version": "3.3.0"}, "from": "image"}')
    assert client.get(path_of(ignition_url(script))).json["from"] == "image"
    assert client.get("/images/wipe/config.ign").status_code == 404
    # An empty one turns it off for the image.
    (root / "images" / "wipe" / "config.ign").write_text("")
    assert ignition_url(boot(client, MAC1).text) is None
