"""GRUB as a boot loader and the TFTP server it reads through (ks.core.tftp, ks.tftp, ks.boot.loaders).

The pure part is a table; the rest drives a real ``kiwispray serve --tftp-listen`` over UDP
with a small TFTP client as GRUB and EDK2 speak it (RRQ with blksize/tsize, lockstep ACKs).
"""

import socket
import struct
import subprocess
import sys
import time

import pytest
import requests

from ks.core import tftp

from helpers import cli_env, free_port, run_edit_host, wait_for
from server import ServerProcess

UUID = "5a1e2e00-0000-4000-8000-000000000001"
MAC = "52:54:00:00:00:01"  # as GRUB writes $net_default_mac


# -- the protocol as data -----------------------------------------------------------------------


def rrq(name: str, *options: str, mode: str = "octet") -> bytes:
    return b"\0\1" + b"".join(part.encode() + b"\0" for part in (name, mode, *options))


def test_a_read_request_is_parsed_with_its_options():
    request = tftp.parse_request(rrq("grub/grub.cfg", "BLKSIZE", "1024", "tsize", "0"))
    assert request == tftp.Request("grub/grub.cfg", {"blksize": "1024", "tsize": "0"})


@pytest.mark.parametrize(("packet", "code"), [
    (b"\0\2name\0octet\0", tftp.ACCESS_VIOLATION),  # a write
    (b"\0\3\0\1data", tftp.ILLEGAL_OPERATION),  # not a request
    (b"\0\1name\0octet", tftp.ILLEGAL_OPERATION),  # no terminating NUL
    (b"\0\1name\0octet\0blksize\0", tftp.ILLEGAL_OPERATION),  # an option without a value
    (rrq("name", mode="netascii"), tftp.ILLEGAL_OPERATION),
    (rrq("a\nb"), tftp.ACCESS_VIOLATION),
    (rrq(""), tftp.ACCESS_VIOLATION),
    (b"\0\1\xff\xfe\0octet\0", tftp.ILLEGAL_OPERATION),
    (b"\0\1" + b"a" * 3000 + b"\0octet\0", tftp.ILLEGAL_OPERATION),
    (b"\0", tftp.ILLEGAL_OPERATION),
])  # fmt: skip
def test_malformed_or_write_requests_are_refused(packet, code):
    with pytest.raises(tftp.TftpError) as refused:
        tftp.parse_request(packet)
    assert refused.value.code == code


@pytest.mark.parametrize(("options", "size", "block", "acknowledged"), [
    ({}, 100, 512, {}),
    ({"blksize": "1024", "tsize": "0"}, 100, 1024, {"blksize": "1024", "tsize": "100"}),
    ({"blksize": "1468"}, None, 1468, {"blksize": "1468"}),
    ({"blksize": "7"}, None, 512, {}),  # below RFC 2348's bound: not acknowledged
    ({"blksize": "99999"}, None, 65464, {"blksize": "65464"}),
    ({"blksize": "x"}, None, 512, {}),
    ({"tsize": "0"}, None, 512, {}),  # a size not known before sending is not promised
    ({"windowsize": "4", "timeout": "1"}, 5, 512, {}),
])  # fmt: skip
def test_options_are_negotiated_within_bounds(options, size, block, acknowledged):
    assert tftp.negotiate(options, size) == (block, acknowledged)


def test_block_numbers_wrap_as_clients_expect():
    assert tftp.data(65536, b"x")[:4] == b"\0\3\0\0"
    assert tftp.data(65537, b"x")[:4] == b"\0\3\0\1"


@pytest.mark.parametrize(("name", "asked"), [
    ("grub/grub.cfg", ("/bootstrap.grub", "")),
    ("/grub/grub.cfg", ("/bootstrap.grub", "")),
    (f"/kiwispray/boot/mac=52:54:00:00:00:01/uuid={UUID}/serial=SER 1",
     ("/bootstrap", f"net0=52%3A54%3A00%3A00%3A00%3A01&uuid={UUID}&serial=SER+1&loader=grub")),
    ("kiwispray/poll/mac=52:54:00:00:00:01/uuid=/product=R/640 (x)/platform=efi/serial=A/B",  # values holding '/'
     ("/bootstrap", "net0=52%3A54%3A00%3A00%3A00%3A01&product=R%2F640+%28x%29&platform=efi&serial=A%2FB&loader=grub"
                    "&poll=1")),
    ("kiwispray/boot/mac=52:54:00:00:00:01/uuid=/serial=",
     ("/bootstrap", "net0=52%3A54%3A00%3A00%3A00%3A01&loader=grub")),
    ("kiwispray/boot/mac=a/mac=b/bogus=1", ("/bootstrap", "net0=a%2Fmac%3Db%2Fbogus%3D1&loader=grub")),  # once each
    ("images/image1/pxeboot.kernel", ("/images/image1/pxeboot.kernel", "")),
    ("shimx64.efi", ("/boot-files/shimx64.efi", "")),
    ("//grubx64.efi", ("/boot-files/grubx64.efi", "")),
    ("kiwispray/finish/1", None),
    ("grub/x86_64-efi/command.lst", None),
    ("images/../kiwispray.db", None),
    ("images/", None),
    ("/", None),
])  # fmt: skip
def test_names_are_asked_of_the_application(name, asked):
    assert tftp.route(name) == asked


# -- a real server ---------------------------------------------------------------------------------


class Client:
    """A TFTP client as GRUB and EDK2 are: one request, lockstep ACKs."""

    def __init__(self, port: int, source_port: int = 0):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", source_port))
        self.sock.settimeout(5)

    def request(self, name: str, *options: str) -> None:
        self.sock.sendto(rrq(name, *options), ("127.0.0.1", self.port))

    def get(self, name: str, blksize: int | None = None) -> bytes | tuple[int, str]:
        """The file's bytes, or (error code, message)."""
        self.request(name, *(("blksize", str(blksize), "tsize", "0") if blksize else ()))
        data, expected, block = bytearray(), 1, 512
        while True:
            packet, peer = self.sock.recvfrom(70000)
            opcode = struct.unpack("!H", packet[:2])[0]
            if opcode == tftp.ERROR:
                return struct.unpack("!H", packet[2:4])[0], packet[4:-1].decode()
            if opcode == tftp.OACK:
                fields = packet[2:].split(b"\0")
                block = int(dict(zip(fields[::2], fields[1::2], strict=False)).get(b"blksize", 512))
                self.sock.sendto(b"\0\4\0\0", peer)
                continue
            number = struct.unpack("!H", packet[2:4])[0]
            if number == expected % 65536:
                data += packet[4:]
                expected += 1
            self.sock.sendto(b"\0\4" + packet[2:4], peer)
            if len(packet) - 4 < block:
                return bytes(data)

    def close(self) -> None:
        self.sock.close()


def start_tftp(root, transfers: int) -> ServerProcess:
    port = free_port(socket.SOCK_DGRAM)
    (root / "boot-files").mkdir()
    (root / "boot-files" / "shimx64.efi").write_bytes(b"MZ shim")
    (root / "boot-files" / ".hidden").write_bytes(b"secret")
    server = ServerProcess(root, "--tftp-listen", f"127.0.0.1:{port}", env={"KS_TFTP_TRANSFERS": str(transfers)})
    server.tftp_port = port  # type: ignore[attr-defined]
    return server


def fetch(port: int, name: str) -> bytes | tuple[int, str]:
    client = Client(port)
    try:
        return client.get(name)
    finally:
        client.close()


@pytest.fixture
def tftp_server(root):
    """A server whose TFTP transfers are not the point: enough of them that a finished transfer still
    releasing its slot (it does so once it has the last ACK, in its own thread) never turns one away."""
    with start_tftp(root, 16) as server:
        yield server


@pytest.fixture
def tight_tftp_server(root):
    """Two TFTP transfers in each of the two workers."""
    with start_tftp(root, 2) as server:
        yield server


def grub_boot(port: int, mac: str = MAC, ask: str = "boot", serial: str = "SER1", uuid: str = UUID) -> str:
    client = Client(port)
    try:
        answer = client.get(f"/kiwispray/{ask}/mac={mac}/uuid={uuid}/product=Standard PC (Q35)/platform=efi/"
                            f"serial={serial}", 1024)
    finally:
        client.close()
    assert isinstance(answer, bytes), answer
    return answer.decode()


def test_a_machine_goes_through_its_states_with_grub_over_tftp(tftp_server, root):
    port = tftp_server.tftp_port
    client = Client(port)
    config = client.get("grub/grub.cfg", 1024)
    assert isinstance(config, bytes)
    assert b"smbios --type 1 --get-uuid 8 --set ks_uuid" in config
    assert b'source "/kiwispray/$ks_ask/mac=$net_default_mac/uuid=$ks_uuid/manufacturer=' in config

    # Unknown: registered, and told to wait (its loop asks again).
    script = grub_boot(port)
    assert 'state new."' in script and "edit-host -i 1 -s IMAGE" in script
    run_edit_host(root, "-i", "1", "-s", "image1,finished")

    # In an image: GRUB loads the kernel and the initrd by path over TFTP; the callbacks are HTTP URLs.
    script = grub_boot(port)
    assert "if linux /images/image1/pxeboot.kernel loglevel=4 " in script
    assert "if initrd /images/image1/pxeboot.initrd.xz; then" in script
    assert f"rd.kiwi.install.image={tftp_server.url}/images/image1/Image1.xz" in script
    assert f"'razorurl={tftp_server.url}/post-install?id=1&bootid=" in script
    kernel = client.get("/images/image1/pxeboot.kernel", 1024)
    assert kernel == (root / "images" / "image1" / "pxeboot.kernel").read_bytes()

    bootid = script.split("bootid=")[1][:32]
    assert requests.get(f"{tftp_server.url}/finish", params={"id": 1, "bootid": bootid}, timeout=5).ok
    finished = grub_boot(port)
    assert "is installed; booting from the next device.\"" in finished
    assert "chainloader /EFI/BOOT/grubx64.efi" in finished
    history = run_edit_host(root, "-i", "1", "--history").stdout
    assert "finish" in history and history.count("boot") >= 3, history
    client.close()


def test_what_is_not_a_boot_file_is_not_sent(tftp_server, root):
    client = Client(tftp_server.tftp_port)
    (root / "images" / "image1" / "host.grub").write_text("secret template\n")
    assert client.get("shimx64.efi") == b"MZ shim"
    for name in ("../kiwispray.db", "images/image1/host.grub", "images/image1/../../kiwispray.db", ".hidden",
                 "kiwispray.db", "grub/x86_64-efi/command.lst", "api/v1/hosts"):
        answer = client.get(name)
        assert isinstance(answer, tuple) and answer[0] == tftp.NOT_FOUND, (name, answer)
    # A write, and a malformed packet, get errors; the server goes on.
    client.sock.sendto(b"\0\2kiwispray.db\0octet\0", ("127.0.0.1", tftp_server.tftp_port))
    packet, _ = client.sock.recvfrom(1000)
    assert packet[:4] == b"\0\5\0\2"
    client.sock.sendto(b"\0\1garbage", ("127.0.0.1", tftp_server.tftp_port))
    packet, _ = client.sock.recvfrom(1000)
    assert packet[:4] == b"\0\5\0\4"
    assert client.get("shimx64.efi") == b"MZ shim"
    # The same files over HTTP, for UEFI HTTP Boot.
    assert requests.get(f"{tftp_server.url}/boot-files/shimx64.efi", timeout=5).content == b"MZ shim"
    for name in (".hidden", "missing.efi", "..%2Fkiwispray.db"):
        assert requests.get(f"{tftp_server.url}/boot-files/{name}", timeout=5).status_code == 404
    client.close()


def test_block_numbers_roll_over_in_a_long_transfer(tftp_server, root):
    """More than 65,535 blocks (small ones, to stay quick): the numbers wrap to 0 and the file arrives whole."""
    data = bytes(range(256)) * 2200  # 563,200 bytes: 70,400 blocks of 8
    (root / "images" / "image1" / "big.bin").write_bytes(data)
    client = Client(tftp_server.tftp_port)
    assert client.get("images/image1/big.bin", blksize=8) == data
    client.close()


def test_clients_that_stop_acknowledging_hold_no_slot_for_long(tight_tftp_server):
    """Two transfers (KS_TFTP_TRANSFERS=2 in each worker) whose clients never ACK: further requests are told
    'busy' at most while they are resent, HTTP answers meanwhile, and then TFTP serves again."""
    port = tight_tftp_server.tftp_port
    silent = [Client(port) for _ in range(8)]  # two workers, two slots each: more than all of them
    for client in silent:
        client.request("shimx64.efi")
    answers = []
    for client in silent:
        packet, _ = client.sock.recvfrom(1000)
        answers.append(packet[:4])
    assert b"\0\5\0\0" in answers  # busy: an error, not a silence
    held = answers.count(b"\0\3\0\1")  # transfers that sent their first block and wait for its ACK
    assert 2 <= held <= 4
    assert requests.get(f"{tight_tftp_server.url}/bootstrap.ipxe", timeout=5).ok
    started = time.monotonic()
    wait_for(lambda: tight_tftp_server.log().count("stopped acknowledging, transfer given up") == held, timeout=30,
             what="the silent transfers given up")
    assert time.monotonic() - started < 15
    for _ in range(6):  # every worker serves again (a "busy" only while a transfer that just ended lets go)
        wait_for(lambda: fetch(port, "shimx64.efi") == b"MZ shim", timeout=10, what="shimx64.efi")
    for client in silent:
        client.close()


def test_one_source_inventing_macs_is_bounded_over_tftp_too(tftp_server):
    answers = [grub_boot(tftp_server.tftp_port, mac=f"52:54:00:aa:00:{i:02x}", serial=f"S{i}", uuid="")
               for i in range(12)]
    assert sum("state new." in a for a in answers) == 10  # KS_REGISTRATIONS_PER_SOURCE
    assert "too many new machines" in answers[-1] and "set ks_next=boot" in answers[-1]


def test_grub_templates_keep_values_inert(client, db, root):
    """Hostnames, metadata and serials reach GRUB scripts as one word without GRUB's metacharacters."""
    from ks.boot import loaders, render
    from ks.core import config, states
    from ks.fleet import machines
    from ks.records.record import HostRecord


    images = root / "images" / "image1"
    (images / "host.grub").write_text(
        "echo {{ host.metadata.rack | grub }}\nlinux /k rack={{ host.metadata.rack | grub }}\n"
    )
    (images / "host.grub.tmpl").write_text("unused: host.grub comes first\n")
    client.get("/bootstrap?net0=52-54-00-00-00-01&serial=S1")

    def setup(session):
        host = machines.get_host(session, 1)
        machines.set_metadata(session, host, {"rack": "4; reboot $x {y} 'q' \"z\" a&b|c<d>e"}, "cli")
        machines.set_state(session, host, states.parse_chain("image1"), "cli")

    db.write(setup)
    r = client.get("/bootstrap?net0=52-54-00-00-00-01&serial=S1&loader=grub")
    assert r.status_code == 200
    rack = r.text.split("rack=")[1].strip()
    assert not set(rack) & set(";${}'\"&|<> "), rack
    # The original's @VAR@ kind for GRUB: the same rule.
    (images / "host.grub").unlink()
    (images / "host.grub.tmpl").write_text("linux /k rack=@metadata.rack@ host=@HOST@\n")
    with db.read() as session:
        host = HostRecord.of(machines.get_host(session, 1))
    where = render.Origin("http://10.0.0.1:5000", "10.0.0.1", 5000)
    renderer = render.Renderer(root, config.shipped("templates"))
    text = render.script_now(renderer, host, where, loader=loaders.GRUB).text
    assert text.startswith("linux /k rack=") and " host=1\n" in text
    assert not set(text.split("rack=")[1].split(" host=")[0]) & set(";${}'\"&|<> ")
    # A loader the server does not know is a 400, not an iPXE script.
    assert client.get("/bootstrap?net0=52-54-00-00-00-01&loader=pxelinux").status_code == 400


def test_render_shows_grubs_script(cli_runner, root, client):
    from ks.cli.main import cli


    client.get("/bootstrap?net0=52-54-00-00-00-01&serial=S1")
    result = cli_runner.invoke(cli, ["--root", str(root), "render", "-i", "1", "--loader", "grub",
                                     "--base-url", "http://10.0.0.1:5000"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "state new." in result.output and "#!ipxe" not in result.output
    result = cli_runner.invoke(cli, ["--root", str(root), "render", "-i", "1", "--loader", "grub", "--state", "image1",
                                     "--base-url", "http://10.0.0.1:5000"])  # fmt: skip
    assert "if linux /images/image1/pxeboot.kernel" in result.output
    assert "template: shipped:kiwi.grub" in result.output


def test_serve_names_a_tftp_port_in_use(root):
    port = free_port(socket.SOCK_DGRAM)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", port))
        result = subprocess.run([sys.executable, "-m", "ks", "serve", "--port", str(free_port()), "--tftp-listen",
                                 f"127.0.0.1:{port}"], env=cli_env(root), capture_output=True, text=True,
                                timeout=30)  # fmt: skip
    assert result.returncode == 1
    assert f"TFTP port {port} on 127.0.0.1 is in use" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "ks", "serve", "--tftp-listen", "nowhere:69"], env=cli_env(root),
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode != 0 and "is not ADDRESS[:PORT]" in result.stderr
