"""The installed system's cloud-init NoCloud seed: URLs, who may read it, templates, YAML safety."""

import json

import pytest
import yaml

from ks.boot import render
from ks.core import values
from ks.records.models import Event, Host

from helpers import MAC1, MAC2, boot, bootid_of

KEY1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@example.org"
KEY2 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7+/= bob"


@pytest.fixture(autouse=True)
def templates_seen_at_once(app):
    """Template edits count from the next request (the server's check interval is a setting)."""
    app.extensions["kiwispray"].renderer.check_interval = 0


def configure(api_client, token, host_id=1, **document):
    r = api_client.patch(f"/api/v1/hosts/{host_id}", json=document, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text


def kernel_words(script: str) -> list[str]:
    """The words of the iPXE ``kernel`` line."""
    line = next(line for line in script.splitlines() if line.startswith("kernel "))
    return line.split()


def seed_of(script: str) -> str:
    """The seed URL in ``ds=nocloud-net;s=<URL>`` of a rendered script."""
    (word,) = [w for w in kernel_words(script) if w.startswith("ds=")]
    prefix = "ds=nocloud-net;s="
    assert word.startswith(prefix), word
    return word[len(prefix):]


def has_seed(script: str) -> bool:
    return any(w.startswith("ds=") for w in kernel_words(script))


def path_of(url: str) -> str:
    return url[url.index("/nocloud/"):]


@pytest.fixture
def installing(client, token):
    """Host 1, named node-7 with two SSH keys, booted into image1: its boot script."""
    boot(client, MAC1)
    configure(client, token, state="image1", hostname="node-7",
              metadata={"ssh_authorized_keys": {"alice": KEY1, "bob": KEY2}, "rack": "4"})
    return boot(client, MAC1).text


# -- the YAML filter ----------------------------------------------------------------------------------------

HOSTILE = [
    "a: b", "key: value\nother: 1", "- item", "# comment", "{x: 1}", "[1, 2]", "&anchor", "*alias",
    "!!python/object/apply:os.system", "|", ">", "%TAG", "@at", "`tick", "? question", "yes", "no", "on", "null",
    "~", "1e3", "0x10", "0o17", "2026-01-01", "12:30:00", "", " padded ", 'quote " and \\ backslash', "tab\there",
    "nel\x85line", "line\u2028separator", "bom\ufeff", "emoji \U0001f600", "ctrl\x00\x1b\x7f", "'single'",
    "--- document", "... end", "a: b: c", "x, y", "ssh-ed25519 AAAA x@y: z",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_yaml_filter_keeps_a_string_one_value(value):
    text = f"first: {values.yaml_text(value)}\nlast: 1\n"
    assert "\n" not in values.yaml_text(value)
    assert yaml.safe_load(text) == {"first": value, "last": 1}
    # The same inside a list item and a flow collection.
    assert yaml.safe_load(f"items:\n  - {values.yaml_text(value)}\n") == {"items": [value]}
    assert yaml.safe_load(values.yaml_text({value: [value, {value: value}]})) == {value: [value, {value: value}]}


@pytest.mark.parametrize("value", [0, -3, 10**20, 0.1, -2.5, 1e20, 1e-5, 3.0, True, False, None,
                                   {"a": {"b": "c: d"}}, ["x", 1, None], {}, []])
def test_yaml_filter_keeps_types(value):
    assert yaml.safe_load(f"v: {values.yaml_text(value)}\n") == {"v": value}


def test_the_filter_is_a_jinja2_filter(tmp_path):
    renderer = render.Renderer(tmp_path, tmp_path)
    assert renderer.env.from_string("k: {{ v | yaml }}").render(v="a: b # c") == 'k: "a: b # c"'


# -- the seed of the current boot ---------------------------------------------------------------------------


def test_the_kernel_line_names_the_seed_of_this_boot(installing):
    bootid = bootid_of(installing)
    seed = seed_of(installing)
    assert seed == f"http://localhost:80/nocloud/1/{bootid}/"
    # One word of the kernel line (iPXE splits at spaces and takes ';' alone as a separator, KIWI's
    # installer splits at spaces and globs): no space, '?', '&', '*', '[' in it; the line still ends as before.
    word = f"ds=nocloud-net;s={seed}"
    assert word in kernel_words(installing) and not set(word) & set(" ?&*[]#$")
    line = next(line for line in installing.splitlines() if line.startswith("kernel "))
    assert line.endswith(f"razorurl=http://localhost:80/post-install?id=1&bootid={bootid} {word} || goto error")


def test_meta_data_and_user_data_for_the_current_bootid(client, installing):
    seed = path_of(seed_of(installing))
    meta = client.get(seed + "meta-data")
    assert meta.status_code == 200 and meta.mimetype == "text/plain"
    document = yaml.safe_load(meta.text)
    assert set(document) == {"instance-id", "local-hostname"}
    assert document["local-hostname"] == "node-7" and document["instance-id"].startswith("ks-1-")

    user = client.get(seed + "user-data")
    assert user.status_code == 200 and user.text.startswith("#cloud-config\n")
    assert yaml.safe_load(user.text) == {"hostname": "node-7", "ssh_authorized_keys": [KEY1, KEY2]}
    # Absent optional files are empty, not 404: cloud-init retries a 404 ten times, a second apart.
    for name in ("vendor-data", "network-config"):
        r = client.get(seed + name)
        assert r.status_code == 200 and r.text == ""


def test_reading_user_data_is_in_the_history(client, db, installing):
    client.get(path_of(seed_of(installing)) + "user-data")
    with db.read() as session:
        lines = session.query(Event).filter_by(host_id=1, kind="nocloud").all()
    assert [line.detail for line in lines] == ["user-data from shipped:user-data"]


@pytest.mark.parametrize("name", ["meta-data", "user-data", "vendor-data", "network-config"])
def test_a_wrong_or_old_bootid_gets_401_and_nothing(client, installing, name):
    old = bootid_of(installing)
    newer = boot(client, MAC1).text  # the machine booted again: the old bootid is void
    assert bootid_of(newer) != old
    for bootid in (old, "0" * 32, "x", old.upper(), old + "0"):
        r = client.get(f"/nocloud/1/{bootid}/{name}")
        assert r.status_code == 401, (bootid, r.text)
        for secret in ("node-7", "ssh-", "instance-id", "cloud-config", "ks-1-", "alice"):
            assert secret not in r.text
    assert client.get(path_of(seed_of(newer)) + name).status_code == 200


def test_unknown_hosts_files_and_malformed_ids(client, installing):
    bootid = bootid_of(installing)
    assert client.get(f"/nocloud/99/{bootid}/meta-data").status_code == 401
    for bad in ("x", "0", "-1", "1.0", "9" * 30, "%201"):
        r = client.get(f"/nocloud/{bad}/{bootid}/meta-data")
        assert r.status_code == 400, (bad, r.text)
    for name in ("meta-data.yaml", "user-data.txt", "..", "passwd", "META-DATA"):
        r = client.get(f"/nocloud/1/{bootid}/{name}")
        assert r.status_code == 404 and "node-7" not in r.text
    # Without the trailing file name there is nothing to read.
    assert client.get(f"/nocloud/1/{bootid}/").status_code == 404


def test_the_operator_reads_what_the_machine_reads(client, api, installing):
    seed = path_of(seed_of(installing))
    for name in ("meta-data", "user-data", "vendor-data", "network-config"):
        machine = client.get(seed + name)
        for ref in ("1", "node-7", "52:54:00:00:00:01"):
            operator = api.get(f"/hosts/{ref}/nocloud/{name}")
            assert operator.status_code == 200 and operator.text == machine.text
    r = client.get("/api/v1/hosts/1/nocloud/user-data")
    assert r.status_code == 401 and "node-7" not in r.text
    r = client.get("/api/v1/hosts/1/nocloud/user-data", headers={"Authorization": "Bearer ks_wrong"})
    assert r.status_code == 401 and "node-7" not in r.text
    assert api.get("/hosts/9/nocloud/user-data").status_code == 404
    assert api.get("/hosts/1/nocloud/nope").status_code == 404


def test_the_instance_id_stays_for_one_install_and_changes_with_the_next(client, api, token, installing):
    seed = path_of(seed_of(installing))

    def instance(path):
        r = client.get(path)
        assert r.status_code == 200, r.text
        return yaml.safe_load(r.text)["instance-id"]

    first = instance(seed + "meta-data")
    assert instance(seed + "meta-data") == first
    assert yaml.safe_load(api.get("/hosts/1/nocloud/meta-data").text)["instance-id"] == first
    # The installed system's first boot is a kexec of the same boot: its /finish changes nothing here.
    r = client.get("/finish", query_string={"id": 1, "bootid": bootid_of(installing)})
    assert r.status_code == 200
    configure(client, token, state="image1")  # install again: a new chain
    assert api.get("/hosts/1/nocloud/meta-data").status_code == 409  # no boot of the new chain yet
    again = boot(client, MAC1).text
    second = instance(path_of(seed_of(again)) + "meta-data")
    assert second != first and second.startswith("ks-1-")
    # Another host, another instance.
    boot(client, MAC2)
    configure(client, token, host_id=2, state="image1")
    other = instance(path_of(seed_of(boot(client, MAC2).text)) + "meta-data")
    assert other.startswith("ks-2-") and other not in (first, second)


def test_after_the_chain_ends_there_is_no_seed(client, api, token):
    boot(client, MAC1)
    configure(client, token, state="image1")
    script = boot(client, MAC1).text
    assert client.get("/finish", query_string={"id": 1, "bootid": bootid_of(script)}).status_code == 200
    # The bootid is still this boot's, but the host is now 'finished': no image, no data.
    r = client.get(path_of(seed_of(script)) + "meta-data")
    assert r.status_code == 409 and "finished" in r.text
    assert api.get("/hosts/1/nocloud/user-data").status_code == 409


# -- hostile values -----------------------------------------------------------------------------------------

SPECIALS = ["a: b", "- item", "x, y", "@host", "k=v", "a:b:c", "key: - value", "1e3", "null", "yes", "on",
            "2026-01-01", "+1", "..", "a/b", "  lead", "trail:", ": x", "- - x"]


def test_hostile_metadata_never_changes_the_yaml(client, root, token):
    (root / "templates").mkdir()
    (root / "templates" / "user-data").write_text(
        "#cloud-config\n"
        "hostname: {{ host.hostname | yaml }}\n"
        "write_files:\n"
        "  - path: /etc/kiwispray.json\n"
        "    content: {{ host | tojson | yaml }}\n"
        "bootcmd:\n"
        "{%- for key, value in host.metadata | dictsort %}\n"
        "  - [echo, {{ key | yaml }}, {{ value | yaml }}]\n"
        "{%- endfor %}\n"
        "final_message: {{ host.metadata | yaml }}\n"
        "ssh_authorized_keys: {{ ssh_authorized_keys | yaml }}\n"
    )
    metadata = {f"k{i}": value for i, value in enumerate(SPECIALS)}
    metadata.update({"a: b": "- c", "ssh_authorized_keys": "ssh-ed25519 AAAA key: - x, y"})
    boot(client, MAC1)
    configure(client, token, state="image1", hostname="n-1.x", metadata=metadata)
    script = boot(client, MAC1).text
    document = yaml.safe_load(client.get(path_of(seed_of(script)) + "user-data").text)
    assert list(document) == ["hostname", "write_files", "bootcmd", "final_message", "ssh_authorized_keys"]
    assert document["hostname"] == "n-1.x"
    assert document["bootcmd"] == [["echo", k, v] for k, v in sorted(metadata.items())]
    assert document["final_message"] == metadata
    assert document["ssh_authorized_keys"] == ["ssh-ed25519 AAAA key: - x, y"]
    assert json.loads(document["write_files"][0]["content"])["metadata"] == metadata


def test_values_stored_around_the_checks_stay_data(client, db, root, token):
    # Facts and labels (or metadata written into the database directly) may hold anything.
    (root / "templates").mkdir()
    (root / "templates" / "user-data").write_text(
        "#cloud-config\nlabels: {{ host.labels | yaml }}\nfacts: {{ host.facts | yaml }}\n"
        "meta: {{ host.metadata | yaml }}\nlast: 1\n"
    )
    boot(client, MAC1)
    configure(client, token, state="image1")
    hostile = {"rack": 'x"\n- y: {z}\n#', "role": "db\nruncmd: [reboot]", "{": "}"}

    def store(session):
        host = session.get(Host, 1)
        host.labels, host.facts, host.meta = dict(hostile), {"product": "R640\r\nhostname: evil"}, dict(hostile)

    db.write(store)
    document = yaml.safe_load(client.get(path_of(seed_of(boot(client, MAC1).text)) + "user-data").text)
    assert list(document) == ["labels", "facts", "meta", "last"]
    assert set(document["labels"]) == {"rack", "role", "_"} and document["last"] == 1
    assert all("\n" not in value for value in document["labels"].values())
    assert document["facts"] == {"product": "R640__hostname: evil"}


# -- templates ----------------------------------------------------------------------------------------------


def test_lookup_image_then_site_then_shipped(client, root, token):
    boot(client, MAC1)
    configure(client, token, state="image1", hostname="node-1")
    seed = path_of(seed_of(boot(client, MAC1).text))
    assert client.get(seed + "user-data").text.startswith("#cloud-config\nhostname: \"node-1\"")
    (root / "templates").mkdir()
    (root / "templates" / "user-data").write_text("#cloud-config\nfrom: site\n")
    network = "version: 2\nethernets: {id0: {match: {name: 'e*'}, dhcp4: true}}\n"
    (root / "templates" / "network-config").write_text(network)
    assert yaml.safe_load(client.get(seed + "user-data").text) == {"from": "site"}
    (root / "images" / "image1" / "user-data").write_text("#cloud-config\nfrom: image {{ state }}\n")
    (root / "images" / "image1" / "vendor-data").write_text("#cloud-config\nvendor: {{ host.id }}\n")
    assert yaml.safe_load(client.get(seed + "user-data").text) == {"from": "image image1"}
    assert yaml.safe_load(client.get(seed + "vendor-data").text) == {"vendor": 1}
    assert yaml.safe_load(client.get(seed + "network-config").text)["version"] == 2
    # The image's files stay private.
    assert client.get("/images/image1/user-data").status_code == 404
    assert client.get("/images/image1/vendor-data").status_code == 404


def test_an_empty_user_data_turns_nocloud_off(client, root, token):
    boot(client, MAC1)
    configure(client, token, state="image1")
    with_seed = boot(client, MAC1).text
    assert seed_of(with_seed)
    (root / "images" / "image1" / "user-data").write_text("\n  \n")
    script = boot(client, MAC1).text
    assert not has_seed(script)
    r = client.get(f"/nocloud/1/{bootid_of(script)}/meta-data")
    assert r.status_code == 404 and "no user-data" in r.text
    # The other image keeps the shipped default; a site-wide empty file turns it off everywhere.
    configure(client, token, state="wipe")
    assert has_seed(boot(client, MAC1).text)
    (root / "templates").mkdir()
    (root / "templates" / "user-data").write_text("")
    assert not has_seed(boot(client, MAC1).text)


def test_a_broken_template_is_the_operators_to_fix(client, root, token):
    boot(client, MAC1)
    configure(client, token, state="image1")
    (root / "images" / "image1" / "user-data").write_text("#cloud-config\n{% if %}\n")
    script = boot(client, MAC1).text
    r = client.get(path_of(seed_of(script)) + "user-data")
    assert r.status_code == 500 and "images/image1/user-data" in r.text
