"""Power control against real simulators: OpenIPMI's ipmi_sim and sushy-emulator.

Every change is checked on the simulator's side (its power file, or the power states
the Redfish fake reported to its notifier), never only through the code under test.
"""

import inspect
import socket
import time

import pytest

from ks import power
from ks.core.errors import BadRequest, BMCAuthFailed, BMCUnreachable, InvalidBMCAddress, PowerError
from ks.power import BMCAddress, PowerStatus, parse_bmc_address

from bmc import silent_tcp_port, silent_udp_port
from helpers import free_port

KINDS = ["ipmi", "redfish"]
# How much longer than its timeout a call may take: thread start-up and teardown on a
# loaded machine. A bound for correctness ("it does not hang"), not a benchmark.
SLACK = 5
TIMEOUT = 10  # seconds for a live simulator, as KS_POWER_TIMEOUT by default


def call(bmc, operation, url=None):
    """power.run against a simulator (or ``url`` on it), with its credentials."""
    return power.run(url or bmc.url, bmc.username, bmc.password, operation, timeout=TIMEOUT, verify=bmc.verify)


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("ipmi://10.0.0.5", BMCAddress("ipmi", "10.0.0.5", 623), "ipmi://10.0.0.5:623"),
        ("IPMI://BMC.Example:6230/", BMCAddress("ipmi", "bmc.example", 6230), "ipmi://bmc.example:6230"),
        ("  ipmi://[fd00::5]:624 ", BMCAddress("ipmi", "fd00::5", 624), "ipmi://[fd00::5]:624"),
        (
            "redfish://10.0.0.5/redfish/v1/Systems/1",
            BMCAddress("redfish+https", "10.0.0.5", 443, "/redfish/v1/Systems/1"),
            "redfish+https://10.0.0.5:443/redfish/v1/Systems/1",
        ),
        (
            "redfish+http://bmc:8000/redfish/v1/Systems/27946b59-9e44-4fa7-8e91-f3527a1ef094/",
            BMCAddress("redfish+http", "bmc", 8000, "/redfish/v1/Systems/27946b59-9e44-4fa7-8e91-f3527a1ef094"),
            "redfish+http://bmc:8000/redfish/v1/Systems/27946b59-9e44-4fa7-8e91-f3527a1ef094",
        ),
        (
            "redfish+https://[fd00::5]:8443/redfish/v1/Systems/System.Embedded.1",
            BMCAddress("redfish+https", "fd00::5", 8443, "/redfish/v1/Systems/System.Embedded.1"),
            "redfish+https://[fd00::5]:8443/redfish/v1/Systems/System.Embedded.1",
        ),
    ],
)
def test_parse_good_addresses(text, expected, canonical):
    address = parse_bmc_address(text)
    assert address == expected
    assert str(address) == canonical
    assert parse_bmc_address(canonical) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "a BMC address is required"),
        (None, "a BMC address is required"),
        ("10.0.0.5", "scheme must be one of"),
        ("idrac://10.0.0.5", "scheme must be one of"),
        ("http://10.0.0.5/redfish/v1/Systems/1", "scheme must be one of"),
        ("ipmi://", "names no host"),
        ("ipmi://:623", "names no host"),
        ("ipmi://admin:secret@10.0.0.5", "pass the username and password separately"),
        ("ipmi://10.0.0.5:ipmi", "[Pp]ort"),
        ("ipmi://10.0.0.5:70000", "[Pp]ort"),
        ("ipmi://10.0.0.5:0", "port 0"),
        ("ipmi://10.0.0.5/redfish/v1/Systems/1", "takes no path"),
        ("ipmi://10.0.0.5?port=624", "remove the"),
        ("redfish://10.0.0.5", "must name one system"),
        ("redfish://10.0.0.5/redfish/v1/Systems/", "must name one system"),
        ("redfish://10.0.0.5/redfish/v1/Systems/1/Bios", "must name one system"),
        ("redfish://10.0.0.5/redfish/v1/Managers/1", "must name one system"),
    ],
)
def test_parse_bad_addresses(text, message):
    with pytest.raises(InvalidBMCAddress, match=message) as caught:
        parse_bmc_address(text)
    assert caught.value.status == 400


def test_unknown_operation_and_bad_timeout_are_refused_before_any_network():
    with pytest.raises(BadRequest, match="use one of status, on, off, cycle"):
        power.run("ipmi://127.0.0.1", "admin", "secret", "reboot", timeout=TIMEOUT)
    with pytest.raises(BadRequest, match="positive number of seconds"):
        power.run("ipmi://127.0.0.1", "admin", "secret", "status", timeout=0)


@pytest.mark.parametrize("function", [power.run, power.status_many])
def test_timeouts_have_no_default_of_their_own(function):
    # KS_POWER_TIMEOUT and KS_POWER_STATUS_TIMEOUT are the one place a timeout is set.
    assert inspect.signature(function).parameters["timeout"].default is inspect.Parameter.empty


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("on", [False, True])
def test_status_reports_the_simulated_power(start_bmc, kind, on):
    bmc = start_bmc(kind, power=on)
    assert call(bmc, "status") == ("on" if on else "off")
    assert bmc.history == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("action, before", [("on", False), ("off", True)])
def test_on_and_off(start_bmc, kind, action, before):
    bmc = start_bmc(kind, power=before)
    assert call(bmc, action) == action
    bmc.wait_history([action == "on"])
    assert call(bmc, "status") == action


@pytest.mark.parametrize("kind", KINDS)
def test_cycle_turns_a_running_machine_off_and_on_again(start_bmc, kind):
    bmc = start_bmc(kind, power=True)
    assert call(bmc, "cycle") == "cycle"
    bmc.wait_history([False, True])


@pytest.mark.parametrize("kind", KINDS)
def test_cycle_of_a_machine_that_is_off_powers_it_on(start_bmc, kind):
    bmc = start_bmc(kind, power=False)
    assert call(bmc, "cycle") == "on"
    bmc.wait_history([True])


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_password_is_refused_with_a_clear_error(start_bmc, kind):
    bmc = start_bmc(kind, power=False)
    with pytest.raises(BMCAuthFailed, match="check the BMC username and password"):
        power.run(bmc.url, bmc.username, "wrong", "on", verify=bmc.verify, timeout=5)
    assert bmc.history == []
    assert not bmc.power


def test_many_exchanges_with_one_ipmi_bmc_stay_quick(start_bmc):
    # pyghmi handed a failed session to the next login with the same credentials
    # (which then hung) and slept up to a second on answers it had already received.
    bmc = start_bmc("ipmi", power=True)
    for password in [bmc.password, "wrong", "wrong", bmc.password] * 5:
        if password == bmc.password:
            assert power.run(bmc.url, bmc.username, password, "status", timeout=1) == "on"
        else:
            with pytest.raises(BMCAuthFailed):
                power.run(bmc.url, bmc.username, password, "status", timeout=1)


def test_redfish_over_plain_http(start_bmc):
    bmc = start_bmc("redfish", power=False, tls=False)
    assert bmc.url.startswith("redfish+http://")
    assert call(bmc, "on") == "on"
    bmc.wait_history([True])


def test_redfish_certificate_is_checked_unless_told_otherwise(start_bmc):
    bmc = start_bmc("redfish", power=True)
    with pytest.raises(PowerError, match="TLS certificate is not trusted"):
        power.run(bmc.url, bmc.username, bmc.password, "status", timeout=TIMEOUT, verify=True)
    assert power.run(bmc.url, bmc.username, bmc.password, "status", timeout=TIMEOUT, verify=False) == "on"


def test_redfish_unknown_system_names_where_to_look(start_bmc):
    bmc = start_bmc("redfish")
    url = bmc.url.rsplit("/", 1)[0] + "/no-such-system"
    with pytest.raises(PowerError, match="has no system /redfish/v1/Systems/no-such-system; its systems are listed"):
        call(bmc, "status", url)


@pytest.mark.parametrize(
    ("dead", "operation", "message"),
    [
        ("ipmi, socket that never answers", "status", "no answer within 2 s"),
        ("ipmi, socket that never answers", "cycle", r"power cycle may still happen"),
        ("ipmi, nothing listening", "on", "no answer within 2 s"),
        ("redfish, connection that never answers", "status", "within 2 s|timed out"),
        ("redfish, nothing listening", "off", "cannot reach the Redfish service"),
    ],
)
def test_a_bmc_that_does_not_answer_fails_within_the_timeout(dead, operation, message):
    with silent_udp_port() as silent_udp, silent_tcp_port() as silent_tcp:
        url = {
            "ipmi, socket that never answers": f"ipmi://127.0.0.1:{silent_udp}",
            "ipmi, nothing listening": f"ipmi://127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
            "redfish, connection that never answers": f"redfish://127.0.0.1:{silent_tcp}/redfish/v1/Systems/1",
            "redfish, nothing listening": f"redfish://127.0.0.1:{free_port()}/redfish/v1/Systems/1",
        }[dead]
        started = time.monotonic()
        with pytest.raises(BMCUnreachable, match=message) as caught:
            power.run(url, "admin", "secret", operation, timeout=2)
        elapsed = time.monotonic() - started
    assert elapsed < 2 + SLACK
    assert caught.value.status == 504
    assert "check the address" in str(caught.value)


def test_status_many_marks_a_dead_bmc_without_waiting_for_it(start_bmc):
    ipmi = start_bmc("ipmi", power=True)
    redfish = start_bmc("redfish", power=False)
    with silent_udp_port() as dead_port:
        targets = [
            (ipmi.url, ipmi.username, ipmi.password),
            (redfish.url, redfish.username, redfish.password),
            (f"ipmi://127.0.0.1:{dead_port}", "admin", "secret"),
            ("ipmi:/missing-slash", "admin", "secret"),
            (ipmi.url, ipmi.username, "wrong"),
            (ipmi.url, ipmi.username, ipmi.password),
        ]
        started = time.monotonic()
        # 5 s: a loaded machine can make a live exchange queued behind the wrong-password
        # one take a few seconds; the dead BMC still costs only this one timeout.
        results = power.status_many(targets, timeout=5, verify=redfish.verify)
        elapsed = time.monotonic() - started
    assert elapsed < 5 + SLACK
    assert [result.state for result in results] == ["on", "off", "unknown", "unknown", "unknown", "on"]
    assert results[0] == results[-1] == PowerStatus("on")
    # pyghmi's own give-up (about 5 s) may come first: either way the BMC did not answer.
    assert "no answer within 5 s" in results[2].error or "no IPMI answer" in results[2].error
    assert "names no host" in results[3].error
    assert "username and password" in results[4].error
    assert power.status_many([], timeout=5) == []


def test_a_login_that_pyghmi_marks_broken_without_a_reason_is_a_login_failure(monkeypatch):
    """pyghmi sometimes raises AttributeError('errormsg') when concurrent logins to one BMC fail."""
    from ks.power import ipmi

    def broken(**_):
        raise AttributeError("'Session' object has no attribute 'errormsg'")

    monkeypatch.setattr(ipmi.command, "Command", broken)
    result = power.status_many([("ipmi://127.0.0.1:1", "admin", "wrong")], timeout=2)
    assert result[0].state == "unknown"
    assert "username and password" in result[0].error and "errormsg" not in result[0].error


class FakeBMC:
    """A whole power driver, as a new one is written: one class, and one line in schemes.DRIVERS."""

    scheme = "fake"
    default_port = 7
    power = "off"  # the machine's, shared by every session as a chassis is
    sent: list[str] = []

    @classmethod
    def check_path(cls, text, path):
        if path not in ("", "/"):
            raise InvalidBMCAddress(f"fake address {text!r} takes no path")
        return ""

    def __init__(self, address, username, password, timeout, verify):
        self.address, self.password = address, password

    def __enter__(self):
        if self.password != "secret":
            raise BMCAuthFailed(f"{self.address}: check the BMC username and password")
        return self

    def __exit__(self, *exc_info):
        pass

    def state(self):
        return FakeBMC.power

    def set(self, action):
        FakeBMC.sent.append(action)
        FakeBMC.power = "off" if action == "off" else "on"


def test_a_new_driver_is_one_class_and_one_line_in_the_registry(monkeypatch, client, root, cli_runner):
    from ks.cli.edit_host import edit_host
    from ks.power import schemes

    monkeypatch.setitem(schemes.DRIVERS, "fake", FakeBMC)
    monkeypatch.setattr(FakeBMC, "sent", [])
    assert str(parse_bmc_address("FAKE://bmc-7/")) == "fake://bmc-7:7"
    with pytest.raises(InvalidBMCAddress, match="takes no path"):
        parse_bmc_address("fake://bmc-7/x")
    client.get("/bootstrap", query_string={"net0": "52-54-00-00-00-01"})

    def edit(*args, env=None):
        r = cli_runner.invoke(edit_host, ["--root", str(root), "-i", "1", *args], env=env)
        assert r.exit_code == 0, r.output
        return r.output

    edit("--bmc", "fake://bmc-7", "--bmc-user", "admin", env={"KS_BMC_PASSWORD": "secret"})
    assert "host 1: power on" in edit("--power", "on")
    assert "host 1: power cycled, now on" in edit("-s", "image1", "--reboot")
    assert FakeBMC.sent == ["on", "cycle"]
    assert "BMC:       fake://bmc-7  power: on" in edit("-ll")
    history = edit("--history")
    assert "on sent" in history and "cycle sent" in history
