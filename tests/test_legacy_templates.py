"""An original KIWIspray site renders byte for byte as it did (bootid aside).

The fixture site (tests/fixtures/legacy-site) is written the way the original's
users write templates. Expected scripts below follow the original's rules:
``@NAME@`` replaced in order, ``@metadata.KEY@`` from the host's metadata,
``@HOST_DATA@`` an ``echo`` line per stored field (keys sorted; state is the
whole chain, the bootid is left out), and unknown placeholders left as written.
"""

import shutil

import pytest

from ks.app import create_app
from ks.boot import booting
from ks.core import states
from ks.core.identity import Identity
from ks.fleet import machines
from ks.records import migrate

from helpers import bootid_of

FIXTURE = __import__("pathlib").Path(__file__).parent / "fixtures" / "legacy-site"
UUID = "4C4C4544-0042-3510-8056-B4C04F335931"


@pytest.fixture
def legacy_client(tmp_path):
    root = tmp_path / "site"
    shutil.copytree(FIXTURE, root, symlinks=True)
    app = create_app({"ROOT": str(root)})
    db = app.extensions["kiwispray"].db
    migrate.upgrade(db)

    def register(tx):
        first = booting.register(
            tx, Identity(macs=("52:54:00:ab:cd:01", "52:54:00:ab:cd:02"), serial="SER1", uuid=UUID), ("new",), "cli"
        )
        return first.id, booting.register(tx, Identity(macs=("52:54:00:ab:cd:03",)), ("new",), "cli").id

    first, second = db.write_direct(register)

    def setup(session):
        host = machines.get_host(session, first)
        machines.set_hostname(session, host, "node01", "cli")
        machines.set_metadata(
            session, host, {"location": "rack 4", "hostname": "node01.example", "image_name": "img.xz"}, "cli"
        )
        machines.set_state(session, host, states.parse_chain("wipe,image1"), "cli")
        machines.set_state(session, machines.get_host(session, second), states.parse_chain("wipe"), "cli")

    db.write(setup)
    yield app.test_client()
    db.dispose()


def get(client, url):
    r = client.get(url, headers={"Host": "10.0.0.1:5000"})
    assert r.status_code == 200, r.text
    return r.text


def test_host_tmpl_renders_as_the_original(legacy_client):
    script = get(legacy_client, "/bootstrap?net0=52-54-00-AB-CD-01&net1=52-54-00-AB-CD-02&serial=SER1&uuid=" + UUID)
    bootid = bootid_of(script)
    assert script == (
        "#!ipxe\n"
        "set HTTP_BASE http://10.0.0.1:5000\n"
        "set HTTP_STATE ${HTTP_BASE}/images/wipe\n"
        "echo KIWIspray node 1 template wipe at rack 4\n"
        "echo host 1 is node01, serial SER1, macs 52:54:00:AB:CD:01 52:54:00:AB:CD:02\n"
        'echo * hostname: "node01"\n'
        'echo * id: "1"\n'
        'echo * macs: "52:54:00:AB:CD:01 52:54:00:AB:CD:02"\n'
        "echo * metadata: \"{'hostname': 'node01.example', 'image_name': 'img.xz', 'location': 'rack 4'}\"\n"
        'echo * serial: "SER1"\n'
        'echo * state: "wipe,image1"\n'
        f'echo * uuid: "{UUID}"\n'
        "\n"
        "kernel ${HTTP_STATE}/pxeboot.kernel rd.kiwi.install.pxe "
        f"razorurl=${{HTTP_BASE}}/post-install?id=1&bootid={bootid} rack=@metadata.rack@ @UNKNOWN@\n"
        "initrd ${HTTP_STATE}/pxeboot.initrd.xz\n"
        "boot\n"
    )


def test_post_install_tmpl_and_the_hostname_self_test(legacy_client):
    bootid = bootid_of(get(legacy_client, "/bootstrap?net0=52-54-00-AB-CD-01&serial=SER1"))
    script = get(legacy_client, f"/post-install?id=1&bootid={bootid}")
    assert script == (
        "#!/bin/bash\n"
        "exec >> /dev/console 2>&1\n"
        'echo "wiping node 1 (wipe) at rack 4"\n'
        'if [ node01.example != "@metadata"."hostname@" ]; then\n'
        "\thostnamectl set-hostname node01.example\n"
        "fi\n"
        f"curl -s 'http://10.0.0.1:5000/finish?id=1&bootid={bootid}'\n"
    )
    # Without metadata.hostname both sides of the test read @metadata.hostname@ in the shell.
    bootid2 = bootid_of(get(legacy_client, "/bootstrap?net0=52-54-00-AB-CD-03"))
    script = get(legacy_client, f"/post-install?id=2&bootid={bootid2}")
    assert 'if [ @metadata.hostname@ != "@metadata"."hostname@" ]; then\n' in script
    assert 'echo "wiping node 2 (wipe) at @metadata.location@"\n' in script


def test_site_templates_and_known_host_fallback(legacy_client):
    bootid = bootid_of(get(legacy_client, "/bootstrap?net0=52-54-00-AB-CD-01"))
    legacy_client.get(f"/finish?id=1&bootid={bootid}")
    script = get(legacy_client, "/bootstrap?net0=52-54-00-AB-CD-01")
    bootid = bootid_of(script)
    assert script == (
        "#!ipxe\n"
        "set HTTP_BASE http://10.0.0.1:5000\n"
        "set HTTP_STATE ${HTTP_BASE}/images/image1\n"
        "set IMAGE_NAME img.xz\n"
        "kernel ${HTTP_STATE}/pxeboot.kernel rd.kiwi.install.image=${HTTP_STATE}/${IMAGE_NAME} "
        f"razorurl=${{HTTP_BASE}}/post-install?id=1&bootid={bootid}\n"
        "initrd ${HTTP_STATE}/pxeboot.initrd.xz\n"
        "boot\n"
    )
    script = get(legacy_client, f"/post-install?id=1&bootid={bootid}")
    assert script == (
        "#!/bin/bash\n"
        "# site-wide post-install, used by images without their own\n"
        'echo "Installed by KIWIspray using image1 state"\n'
        'echo "Repo: http://10.0.0.1:5000/image1 Node: 1"\n'
        f"curl -s 'http://10.0.0.1:5000/finish?id=1&bootid={bootid}'\n"
    )


def test_original_bootstrap_ipxe_in_site_templates_is_rendered_the_original_way(legacy_client, tmp_path):
    site = tmp_path / "site" / "templates" / "bootstrap.ipxe"
    site.write_text(
        "#!ipxe\nchain http://@SERVER_IP@:@SERVER_PORT@/bootstrap?net0=${net0/mac:hexhyp}"
        "&dhcp_mac=net0$${net0/mac:hexhyp} || goto error\n"
    )
    assert get(legacy_client, "/bootstrap.ipxe") == (
        "#!ipxe\nchain http://10.0.0.1:5000/bootstrap?net0=${net0/mac:hexhyp}"
        "&dhcp_mac=net0$${net0/mac:hexhyp} || goto error\n"
    )
    # ...and its dhcp_mac form (net0$aa-bb-…) is understood.
    assert get(legacy_client, "/bootstrap?net0=&dhcp_mac=net0$52-54-00-AB-CD-03").startswith("#!ipxe")


def test_a_copy_of_the_shipped_bootstrap_ipxe_in_site_templates_is_rendered_as_jinja2(legacy_client, tmp_path):
    from ks.core import config

    shipped = config.shipped("templates") / "bootstrap.ipxe"
    shutil.copyfile(shipped, tmp_path / "site" / "templates" / "bootstrap.ipxe")
    script = get(legacy_client, "/bootstrap.ipxe")
    assert "{{" not in script
    assert "chain http://10.0.0.1:5000/bootstrap?net0=${net0/mac:hexhyp}" in script
