"""Facts and enrollment rules through the boot side: what /bootstrap stores and what a rule gives a new machine."""

import dataclasses

import pytest

from ks.boot import images
from ks.core import rules
from ks.fleet import machines
from ks.records.record import HostRecord

from helpers import MAC1, MAC2, boot, bootid_of, make_image

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)

RULES = """\
[[rule]]
name = "rack4"
match = { mac = "52:54:00:04:*", product = "PowerEdge*" }
chain = "wipe,image1"
hostname = "rack4-{{ seq }}"
labels = { rack = "4", role = "db" }

[[rule]]
name = "qemu"
match = { manufacturer = "QEMU" }
hostname = "{{ facts.product | slug }}-{{ seq }}"
"""

SMBIOS = {"manufacturer": "Dell Inc.", "product": "PowerEdge R640", "asset": "A-77", "board_serial": "BS1",
          "buildarch": "x86_64", "platform": "pcbios", "chip": "82540em", "memsize": "1024", "ipxe_version": "1.21.1+"}


def record(db, host_id) -> HostRecord:
    with db.read() as s:
        return HostRecord.of(machines.get_host(s, host_id))


def history(db, host_id) -> list[tuple[str, str, str]]:
    with db.read() as s:
        return [(e.kind, e.to_state, e.detail) for e in machines.history(s, host_id)]


def bootstrap(client, *macs, **params):
    query = {f"net{i}": mac for i, mac in enumerate(macs)} | params
    return client.get("/bootstrap", query_string=query)


@pytest.fixture
def rules_file(root, app):
    """The rules above in the site's rules.toml, looked at on every registration."""
    path = rules.path_of(root)
    path.write_text(RULES)
    app.extensions["kiwispray"].rules = rules.RulesFile(path, 0, lambda: images.image_names(root))
    return path


# -- facts ---------------------------------------------------------------------------


def test_the_shipped_bootstrap_script_reports_facts(client):
    script = client.get("/bootstrap.ipxe").text
    for sent in ("&manufacturer=${manufacturer:uristring}", "&product=${product:uristring}",
                 "&asset=${asset:uristring}", "&board_serial=${board-serial:uristring}", "&buildarch=${buildarch",
                 "&platform=${platform", "&chip=${net0/chip:uristring}", "&memsize=${memsize}",
                 "&ipxe_version=${version:uristring}"):
        assert sent in script


def test_a_boot_stores_the_facts_it_reports_apart_from_metadata(client, db):
    assert bootstrap(client, MAC1, serial="S1", **SMBIOS).status_code == 200
    host = record(db, 1)
    assert host.facts == SMBIOS
    assert host.meta == {}
    assert host.document()["facts"] == SMBIOS


def test_placeholders_and_empty_facts_are_left_out_and_vendor_text_is_kept_as_data(client, db):
    r = bootstrap(client, MAC1, manufacturer="To be filled by O.E.M.", product="Standard PC (i440FX + PIIX, 1996)",
                  asset="  ", board_serial="Default string", memsize="", platform="efi", asset_tag="ignored")
    assert r.status_code == 200
    assert record(db, 1).facts == {"product": "Standard PC _i440FX + PIIX, 1996_", "platform": "efi"}
    bootstrap(client, MAC2, product="$(reboot) ${net0} `x`\n;a")
    assert record(db, 2).facts == {"product": "__reboot_ __net0_ _x___a"}


@pytest.mark.parametrize("query", [{"chip": "e1000;shell"}, {"memsize": "1 && x"}, {"ipxe_version": "${x}"},
                                   {"product": ["a", "b"]}])
def test_ipxe_own_facts_outside_the_alphabet_or_given_twice_are_refused(client, db, query):
    assert bootstrap(client, MAC1, **query).status_code == 400
    with db.read() as s:
        assert machines.list_hosts(s) == []


def test_every_boot_refreshes_the_facts_and_a_boot_without_facts_keeps_them(client, db):
    bootstrap(client, MAC1, **SMBIOS)
    bootstrap(client, MAC1, product="PowerEdge R650", platform="efi")  # e.g. a new board, UEFI now
    assert record(db, 1).facts == {"product": "PowerEdge R650", "platform": "efi"}
    updated = record(db, 1).updated_at
    boot(client, MAC1)  # an older bootstrap script: no facts at all
    boot(client, MAC1, poll=True)
    assert record(db, 1).facts == {"product": "PowerEdge R650", "platform": "efi"}
    assert record(db, 1).updated_at == updated
    assert [kind for kind, _, _ in history(db, 1)] == ["register", "boot", "boot", "boot"]


def test_discover_reports_more_facts_and_boots_keep_them(root, db, client, app):
    runtime = app.extensions["kiwispray"]
    runtime.settings = dataclasses.replace(runtime.settings, initial_chain="discover,new")
    make_image(root, "discover")
    bootid = bootid_of(bootstrap(client, MAC1, product="R640").text)
    r = client.post(f"/update?id=1&bootid={bootid}", data={"fact.cpu": "Intel(R) Xeon(R) Gold 6130",
                                                           "fact.disks": "2", "fact.product": "PowerEdge R640"})
    assert r.status_code == 200, r.text
    assert record(db, 1).facts == {"product": "PowerEdge R640", "cpu": "Intel_R_ Xeon_R_ Gold 6130", "disks": "2"}
    assert history(db, 1)[-1] == ("update", None, "fact.cpu fact.disks fact.product")
    for data, message in [({"fact.Bad": "x"}, "cannot name a fact"), ({"fact.serial": "x"}, "identifier"),
                          ({"fact.cpu": ["a", "b"]}, "given 2 times"), ({"facts": "{}"}, "unknown field 'facts'")]:
        r = client.post(f"/update?id=1&bootid={bootid}", data=data)
        assert r.status_code == 400 and message in r.text, (data, r.text)
    bootstrap(client, MAC1, product="R650", platform="efi")
    assert record(db, 1).facts == {"product": "R650", "platform": "efi", "cpu": "Intel_R_ Xeon_R_ Gold 6130",
                                   "disks": "2"}


# -- enrollment rules ---------------------------------------------------------------------


def test_a_matching_rule_gives_a_new_machine_its_chain_hostname_and_labels(client, db, rules_file):
    script = bootstrap(client, "52-54-00-04-00-01", serial="S1", product="PowerEdge R640").text
    assert "host 1 (rack4-1)" in script or "rack4-1" in script
    host = record(db, 1)
    assert (host.state, host.hostname, host.labels) == ("wipe,image1", "rack4-1", {"rack": "4", "role": "db"})
    assert host.facts == {"product": "PowerEdge R640"}
    (register, booted) = history(db, 1)
    assert register == ("register", "wipe,image1", "mac=52:54:00:04:00:01 serial=S1; rule rack4 (seq 1)")
    assert booted[0] == "boot"

    bootstrap(client, "52-54-00-04-00-02", product="PowerEdge R740")
    bootstrap(client, "52-54-00-09-00-01", manufacturer="QEMU", product="Standard PC (Q35 + ICH9, 2009)")
    assert [(h.hostname, h.state) for h in (record(db, 2), record(db, 3))] == [
        ("rack4-2", "wipe,image1"), ("standard-pc-q35-ich9-2009-1", "new")]
    assert history(db, 3)[0][2].endswith("; rule qemu (seq 1)")


def test_no_matching_rule_gives_the_initial_chain(client, db, rules_file):
    bootstrap(client, "52-54-00-04-00-01", product="ProLiant")  # the MAC fits rack4, the product does not
    host = record(db, 1)
    assert (host.state, host.hostname, host.labels) == ("new", "not-set", {})
    assert history(db, 1)[0] == ("register", "new", "mac=52:54:00:04:00:01")


def test_rules_apply_to_new_machines_only(client, db, rules_file):
    boot(client, "52-54-00-04-00-01")  # registered before it reported its product
    bootstrap(client, "52-54-00-04-00-01", product="PowerEdge R640")
    host = record(db, 1)
    assert (host.state, host.hostname, host.facts) == ("new", "not-set", {"product": "PowerEdge R640"})


def test_a_hostname_the_template_gets_wrong_for_a_machine_is_left_and_the_history_says_why(client, db, rules_file,
                                                                                           caplog):
    bootstrap(client, MAC1, manufacturer="QEMU")  # no product: "-1"
    host = record(db, 1)
    assert (host.hostname, host.state) == ("not-set", "new")
    detail = history(db, 1)[0][2]
    assert "rule qemu (seq 1); hostname template gave '-1', not a hostname, hostname left not-set" in detail
    assert "enrolled by rule qemu: hostname template gave '-1'" in caplog.text


def test_a_rules_file_with_mistakes_under_the_server_keeps_the_last_good_rules(client, db, rules_file, caplog):
    bootstrap(client, "52-54-00-04-00-01", product="PowerEdge R640")
    rules_file.write_text(RULES.replace('chain = "wipe,image1"', 'chain = "wipe,image9"'))
    bootstrap(client, "52-54-00-04-00-02", product="PowerEdge R640")
    assert (record(db, 2).hostname, record(db, 2).state) == ("rack4-2", "wipe,image1")
    assert "has mistakes; the previous 2 rules stay in force" in caplog.text
    assert "rules.toml:4: rule 1 'rack4', chain: unknown image 'image9'" in caplog.text
    rules_file.write_text(RULES.replace('"rack4-{{ seq }}"', '"r4-{{ seq }}"'))
    bootstrap(client, "52-54-00-04-00-03", product="PowerEdge R640")
    assert record(db, 3).hostname == "r4-3"  # the counter belongs to the rule's name


def test_a_machine_without_a_mac_is_refused_before_any_rule_counts(client, db, rules_file):
    assert bootstrap(client, product="PowerEdge R640").status_code == 400
    bootstrap(client, "52-54-00-04-00-01", product="PowerEdge R640")
    assert record(db, 1).hostname == "rack4-1"
