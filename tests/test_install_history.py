"""What an installation leaves in the machine's history: the image download and the callback."""

import pytest

from ks.core import states
from ks.fleet import machines

from helpers import MAC1, MAC2, boot, bootid_of

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)

DISK = "/images/image1/Image1.xz"


@pytest.fixture
def image(root):
    disk = root / "images" / "image1" / "Image1.xz"
    disk.write_bytes(b"x" * 300_000)  # more than one read of the server's file wrapper
    return disk


def set_state(db, host_id, text):
    db.write(lambda s: machines.set_state(s, machines.get_host(s, host_id), states.parse_chain(text), "cli"))


def history(db, host_id):
    with db.read() as s:
        return [(e.kind, e.to_state, e.detail) for e in machines.history(s, host_id)]


def download(client, address: str, whole: bool = True):
    response = client.get(DISK, environ_base={"REMOTE_ADDR": address}, buffered=False)
    body = iter(response.response)
    data = b"".join(body) if whole else next(body)
    response.close()
    return response, data


def test_the_download_of_the_disk_is_recorded_for_the_machine_that_booted_from_that_address(client, db, image):
    boot(client, MAC1, serial="SER1")
    set_state(db, 1, "image1")
    client.get("/bootstrap", query_string={"net0": MAC1, "serial": "SER1"}, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    response, data = download(client, "10.1.2.3")
    assert response.status_code == 200 and len(data) == 300_000
    kind, state, detail = history(db, 1)[-1]
    assert (kind, state) == ("download", "image1")
    assert detail.startswith("Image1.xz: 300000 of 300000 bytes in ") and detail.endswith(" to 10.1.2.3")


def test_an_interrupted_download_says_how_far_it_got(client, db, image):
    client.get("/bootstrap", query_string={"net0": MAC1}, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    set_state(db, 1, "image1")
    client.get("/bootstrap", query_string={"net0": MAC1}, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    download(client, "10.1.2.3", whole=False)
    kind, _, detail = history(db, 1)[-1]
    assert kind == "download"
    assert "of 300000 bytes" in detail and "incomplete" in detail
    assert not detail.startswith("Image1.xz: 300000 ")


@pytest.mark.parametrize("case", ["other address", "other image", "not the disk", "an initrd.xz", "a range"])
def test_downloads_that_belong_to_no_installation_are_not_recorded(client, db, image, case):
    client.get("/bootstrap", query_string={"net0": MAC1}, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    set_state(db, 1, "wipe,new" if case == "other image" else "image1")
    client.get("/bootstrap", query_string={"net0": MAC1}, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    before = history(db, 1)
    if case == "not the disk":
        client.get("/images/image1/pxeboot.kernel", environ_base={"REMOTE_ADDR": "10.1.2.3"}).close()
    elif case == "an initrd.xz":  # ends in .xz, and is not the disk
        client.get("/images/image1/pxeboot.initrd.xz", environ_base={"REMOTE_ADDR": "10.1.2.3"}).close()
    elif case == "a range":
        client.get(DISK, headers={"Range": "bytes=0-99"}, environ_base={"REMOTE_ADDR": "10.1.2.3"}).close()
    else:
        download(client, "10.9.9.9" if case == "other address" else "10.1.2.3")
    assert history(db, 1) == before


def test_the_callback_is_recorded_when_the_post_install_script_is_fetched(client, db, image):
    boot(client, MAC2)
    set_state(db, 1, "image1")
    bootid = bootid_of(boot(client, MAC2).text)
    assert client.get("/post-install", query_string={"id": 1, "bootid": bootid}).status_code == 200
    kind, state, detail = history(db, 1)[-1]
    assert (kind, state) == ("post-install", "image1")
    assert "template" in detail
    # A wrong bootid records nothing.
    assert client.get("/post-install", query_string={"id": 1, "bootid": "0" * 32}).status_code == 401
    assert history(db, 1)[-1][0] == "post-install" and len(history(db, 1)) == 5
