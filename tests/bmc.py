"""Real BMC simulators on loopback for the power tests.

* IpmiSim:    OpenIPMI's ``ipmi_sim`` with a ``chassis_control`` program whose power is a
              file (or whatever a program given to it decides, such as a QEMU machine),
              and which logs every power change it is asked for. It can also listen
              on another address inside a network namespace of a test (``prefix``).
* RedfishSim: ``sushy-emulator --fake`` with basic auth, HTTPS by default, and its
              "external notifier" pointed at a recorder here, so that every power change
              it makes (including the Off within a ForceRestart) is seen.

Both offer the same face to tests: ``url``, ``username``, ``password``, ``verify``,
``power`` (read on the simulator side) and ``history``, the power states the simulated
machine went through since it started. Each runs in its own directory with ports
picked at run time and is ended by its pid.
"""

import contextlib
import datetime
import importlib.util
import ipaddress
import json
import shlex
import socket
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from helpers import free_port, require_command, wait_for

USERNAME, PASSWORD = "admin", "secret"


def require_sushy_tools() -> None:
    """Fail the test, saying how to get it, when sushy-tools (the ``test`` extra) is missing."""
    if importlib.util.find_spec("sushy_tools") is None:
        pytest.fail(
            "sushy-tools is missing: install the test extra (pip install -e '.[test]', as scripts/test.sh does)"
        )


@contextlib.contextmanager
def silent_udp_port():
    """A UDP port whose socket is bound but never answers: an IPMI BMC that is dead."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        yield sink.getsockname()[1]


@contextlib.contextmanager
def silent_tcp_port():
    """A TCP port that accepts connections and never answers: a Redfish BMC that hangs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.listen(16)
        yield sink.getsockname()[1]


class Simulator:
    """A simulator process in ``workdir``; a context manager that starts and ends it."""

    username, password = USERNAME, PASSWORD
    verify: bool | str = True
    prefix: list[str] = []  # a command to run the simulator through, such as ip netns exec

    def __init__(self, workdir: Path, power: bool = False):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True)
        self.initial_power = power
        self.process = None

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def _spawn(self, command: list[str]) -> None:
        """Start the process, its output going to ``log``; ``prefix`` (if any) goes in front."""
        command = [*self.prefix, *command]
        self.log = self.workdir / "process.log"
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(
                command, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )

    def _wait_ready(self, check, what: str) -> None:
        """Wait for ``check()``; fail with the process's output if it died first."""

        def ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"{what} exited with {self.process.returncode}:\n{self.log.read_text()}")
            return check()

        wait_for(ready, 20, f"{what} ready")

    def stop(self) -> None:
        """End the process by its pid."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def wait_history(self, expected: list[bool], timeout: float = 30) -> None:
        """Wait until the machine went through exactly the power states ``expected``."""

        def settled() -> bool:
            _ = self.power  # the Redfish fake applies a change that is due when it is read
            return self.history == expected

        try:
            wait_for(settled, timeout, f"power history {expected}")
        except AssertionError as error:  # the history at the end, not at the start of the wait
            raise AssertionError(f"{error}; it went through {self.history}") from None


class IpmiSim(Simulator):
    """OpenIPMI ipmi_sim, IPMI 2.0 lanplus on a loopback UDP port, or where it is told.

    ``chassis``: a function that writes another chassis program into the directory it is
    given and returns its path. That program answers ``get power`` and ``set power 0|1``
    as CHASSIS does, appends each ``set power`` to ``power.log`` in that directory, and
    decides the initial power itself (``power`` is for the default program).
    """

    LAN_CONF = """\
name "ksbmc"
set_working_mc 0x20
  startlan 1
    addr {address} {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid {guid}
  endlan
  chassis_control "{program}"
  user 2 true "{username}" "{password}" admin 10 none md2 md5 straight
"""
    EMULATION = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
"""
    # ipmi_sim runs "PROG get power" (expects "power:0|1") and "PROG set power 0|1";
    # a power cycle is "set power 0", then "set power 1" a moment later.
    CHASSIS = """\
#!/bin/sh
cd {workdir}
case "$1 $2" in
    "get power") echo "power:$(cat power)" ;;
    "set power") echo "$3" > power; echo "$3" >> power.log ;;
esac
"""

    # Exits 0 once ipmi_sim answers an RMCP presence ping (ASF, what `ipmiping` sends): its port is
    # bound before it has read its emulation file and entered its loop, and a BMC that takes
    # packets without answering yet makes the first exchange of a test wait for a retransmission.
    # A separate process, so that it can also run inside another namespace.
    PING_CHECK = (
        "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.5); "
        "s.sendto(bytes.fromhex('0600ff06000011be80010000'), (sys.argv[1], int(sys.argv[2]))); "
        "sys.exit(0 if s.recv(512)[8] == 0x40 else 1)"
    )

    def __init__(self, workdir: Path, power: bool = False, address: str = "127.0.0.1", port: int | None = None,
                 prefix: list[str] = (), chassis=None):
        """``prefix`` runs ipmi_sim through a command, e.g. ``["ip", "netns", "exec", NS]``."""
        super().__init__(workdir, power)
        self.address, self.port, self.prefix = address, port, list(prefix)
        self.chassis = chassis

    def start(self) -> None:
        """Write the configuration and run ipmi_sim until it answers on its UDP port."""
        binary = require_command("ipmi_sim", "openipmi")
        self.port = self.port or free_port(socket.SOCK_DGRAM)
        self.url = f"ipmi://{self.address}:{self.port}"
        (self.workdir / "power.log").write_text("")
        if self.chassis:
            self.program = self.chassis(self.workdir)
        else:
            (self.workdir / "power").write_text("1\n" if self.initial_power else "0\n")
            self.program = self.workdir / "chassis"
            self.program.write_text(self.CHASSIS.format(workdir=shlex.quote(str(self.workdir))))
            self.program.chmod(0o755)
        (self.workdir / "lan.conf").write_text(self.LAN_CONF.format(
            address=self.address, port=self.port, guid=uuid.uuid4().hex, program=self.program,
            username=self.username, password=self.password,
        ))
        (self.workdir / "bmc.emu").write_text(self.EMULATION)
        (self.workdir / "state").mkdir()
        # -n: no console, which ipmi_sim otherwise insists on having.
        self._spawn([binary, "-c", "lan.conf", "-f", "bmc.emu", "-s", "state", "-n"])
        self._wait_ready(self._answers, "ipmi_sim")

    def _answers(self) -> bool:
        check = [*self.prefix, sys.executable, "-c", self.PING_CHECK, self.address, str(self.port)]
        return subprocess.run(check, stderr=subprocess.DEVNULL).returncode == 0

    @property
    def power(self) -> bool:
        """The chassis power as the simulator's chassis program reports it."""
        answer = subprocess.run([self.program, "get", "power"], capture_output=True, text=True, check=True)
        return answer.stdout.strip() == "power:1"

    @property
    def history(self) -> list[bool]:
        """Every power state the BMC set, in order."""
        return [line == "1" for line in (self.workdir / "power.log").read_text().split()]


class RedfishSim(Simulator):
    """sushy-emulator's fake driver: one system, basic auth, HTTPS unless ``tls=False``."""

    def __init__(self, workdir: Path, power: bool = False, tls: bool = True):
        super().__init__(workdir, power)
        self.tls = tls
        self.system = str(uuid.uuid4())
        self.notified: list[dict] = []
        self.recorder = None

    def start(self) -> None:
        """Write the configuration and run sushy-emulator until it answers."""
        require_sushy_tools()
        import bcrypt  # comes with sushy-tools

        self._start_recorder()
        self.port = free_port()
        scheme = "https" if self.tls else "http"
        self.base_url = f"{scheme}://127.0.0.1:{self.port}"
        # redfish:// means HTTPS: the plain form is the one to exercise.
        self.url = f"redfish{'' if self.tls else '+http'}://127.0.0.1:{self.port}/redfish/v1/Systems/{self.system}"
        hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()
        (self.workdir / "htpasswd").write_text(f"{self.username}:{hashed}\n")
        settings = {
            # Its own state: the fake driver otherwise keeps systems in /tmp across runs.
            "SUSHY_EMULATOR_STATE_DIR": str(self.workdir / "state"),
            "SUSHY_EMULATOR_AUTH_FILE": str(self.workdir / "htpasswd"),
            "EXTERNAL_NOTIFICATION_URL": f"http://127.0.0.1:{self.recorder.server_port}/",
            "SUSHY_EMULATOR_FAKE_SYSTEMS": [{
                "uuid": self.system,
                "name": "ks-fake",
                "power_state": "On" if self.initial_power else "Off",
                "external_notifier": True,
                "nics": [{"mac": "52:54:00:12:34:56", "ip": "127.0.0.2"}],
            }],
        }
        (self.workdir / "emulator.conf").write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()))
        command = [sys.executable, "-m", "sushy_tools.emulator.main", "--config", "emulator.conf",
                   "--fake", "-i", "127.0.0.1", "-p", str(self.port)]
        if self.tls:
            self.verify = str(self_signed_certificate(self.workdir))
            command += ["--ssl-certificate", "cert.pem", "--ssl-key", "key.pem"]
        self._spawn(command)
        self._wait_ready(self._answers, "sushy-emulator")

    def _answers(self) -> bool:
        try:
            return requests.get(f"{self.base_url}/redfish/v1/", verify=self.verify, timeout=2).ok
        except requests.ConnectionError:
            return False

    def _start_recorder(self) -> None:
        """An HTTP server that keeps each system document the emulator PUTs at it."""
        notified = self.notified

        class Recorder(BaseHTTPRequestHandler):
            def do_PUT(self):
                notified.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.recorder = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
        threading.Thread(target=self.recorder.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """End the emulator by its pid and the recorder."""
        super().stop()
        if self.recorder:
            self.recorder.shutdown()
            self.recorder.server_close()

    @property
    def power(self) -> bool:
        """The system's PowerState as the emulator reports it (a read applies due changes)."""
        answer = requests.get(
            f"{self.base_url}/redfish/v1/Systems/{self.system}",
            auth=(self.username, self.password), verify=self.verify, timeout=5,
        )
        answer.raise_for_status()
        return answer.json()["PowerState"] == "On"

    @property
    def history(self) -> list[bool]:
        """Every power state the system changed to, in order."""
        states, last = [], self.initial_power
        for system in list(self.notified):
            now = system["power_state"] == "On"
            if now != last:
                states.append(now)
                last = now
        return states


def self_signed_certificate(directory: Path) -> Path:
    """Write ``cert.pem``/``key.pem`` for 127.0.0.1; the certificate is its own CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ks-test-bmc")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    path = directory / "cert.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path
