"""IPMI 2.0 (lanplus) power control through pyghmi."""

import socket
import threading
from collections import defaultdict

from pyghmi import exceptions as pyghmi_errors
from pyghmi.ipmi import command

from ks.core.errors import BMCAuthFailed, BMCUnreachable, InvalidBMCAddress, PowerError
from ks.power import _pyghmi
from ks.power.driver import BMCAddress

# Chassis Control (IPMI 2.0, 28.3): netfn chassis, command 2, one data byte.
CHASSIS_NETFN, CHASSIS_CONTROL = 0x00, 0x02
CONTROL = {"off": 0x00, "on": 0x01, "cycle": 0x02}

# Words in pyghmi's login errors that mean "wrong username, password or privilege".
AUTH_WORDS = ("password", "name", "unauthorized", "privilege")

# pyghmi shares one session per BMC and credentials within a process, so two
# exchanges with one BMC at once would log each other out: one at a time.
_bmc_locks: defaultdict[tuple[str, int], threading.Lock] = defaultdict(threading.Lock)


class IPMI:
    """An IPMI session with a BMC, open inside ``with``: login on entry, logout on exit."""

    scheme = "ipmi"
    default_port = 623

    @classmethod
    def check_path(cls, text: str, path: str) -> str:
        """An IPMI address has no path."""
        if path not in ("", "/"):
            raise InvalidBMCAddress(f"IPMI address {text!r} takes no path; use ipmi://host[:port]")
        return ""

    def __init__(self, address: BMCAddress, username: str, password: str, timeout: float, verify: bool | str):
        # ``verify`` is for TLS, which IPMI over LAN does not use.
        self.address = address
        self.username, self.password = username, password
        self.timeout = timeout
        self.lock = _bmc_locks[address.host, address.port]

    def __enter__(self):
        # Bounded, so that a thread abandoned after its timeout never acts later.
        if not self.lock.acquire(timeout=self.timeout):
            raise BMCUnreachable(f"{self.address}: still busy with an earlier exchange that gets no answer")
        try:
            _pyghmi.forget_dead_sessions()
            self.command = command.Command(
                bmc=self.address.host, userid=self.username, password=self.password, port=self.address.port
            )
        except BaseException as error:
            self.lock.release()
            if isinstance(error, (pyghmi_errors.IpmiException, OSError)):
                raise self._error(error) from None
            if isinstance(error, AttributeError) and "errormsg" in str(error):
                # pyghmi marks a session broken before it records why when another
                # thread's login to the same BMC fails at the same moment.
                raise BMCAuthFailed(
                    f"{self.address}: the IPMI session could not be established (the BMC gave no reason); "
                    "check the BMC username and password, the address and that IPMI over LAN is enabled"
                ) from None
            raise
        return self

    def __exit__(self, *exc_info):
        # pyghmi would keep the session alive for the life of the process; logging
        # out frees one of the few session slots a BMC has (often four or five).
        try:
            self.command.ipmi_session.logout()
        except Exception:  # noqa: BLE001 - a failed logout must not hide the result
            pass
        finally:
            self.lock.release()

    def state(self) -> str:
        """'on' or 'off', as the chassis reports it."""
        try:
            return self.command.get_power()["powerstate"]
        except pyghmi_errors.IpmiException as error:
            raise self._error(error) from None

    def set(self, action: str) -> None:
        """Send a Chassis Control command: 'on', 'off' or 'cycle'."""
        # A raw command because pyghmi has no power cycle: its "boot" is a hard reset.
        try:
            answer = self.command.raw_command(
                netfn=CHASSIS_NETFN, command=CHASSIS_CONTROL, data=[CONTROL[action]]
            )
        except pyghmi_errors.IpmiException as error:
            raise self._error(error) from None
        if "error" in answer:
            raise PowerError(f"{self.address}: the BMC refused power {action}: {answer['error']}")

    def _error(self, error: Exception) -> PowerError:
        """Turn a pyghmi or socket exception into the KIWIspray error that says what to do."""
        if isinstance(error, socket.gaierror):
            return BMCUnreachable(f"{self.address}: cannot resolve the host name ({error.strerror})")
        if isinstance(error, OSError):
            return BMCUnreachable(f"{self.address}: {error}")
        message = str(error.args[0]) if error.args and error.args[0] else ""
        if any(word in message.lower() for word in AUTH_WORDS):
            return BMCAuthFailed(
                f"{self.address}: the BMC rejected the login ({message}); "
                "check the BMC username and password and that the user may control power"
            )
        if not message or "no longer connected" in message:
            return BMCUnreachable(
                f"{self.address}: no IPMI answer; check the address and port, that the BMC "
                "is on the network, and that IPMI over LAN is enabled on it"
            )
        return PowerError(f"{self.address}: IPMI error: {message}")
