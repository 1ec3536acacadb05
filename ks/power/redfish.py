"""Redfish power control through sushy."""

import re

import sushy
from sushy import auth
from sushy import exceptions as sushy_errors
from sushy.connector import Connector

from ks.core.errors import BMCAuthFailed, BMCUnreachable, InvalidBMCAddress, PowerError
from ks.power.driver import BMCAddress

# One member of the Systems collection; ids such as System.Embedded.1 (Dell) or a UUID.
SYSTEM_PATH = re.compile(r"/redfish/v1/Systems/[^/?#]+/?")

STATES = {
    sushy.PowerState.ON: "on",
    sushy.PowerState.POWERING_ON: "on",
    sushy.PowerState.OFF: "off",
    sushy.PowerState.POWERING_OFF: "off",
}
# ForceRestart rather than PowerCycle: every Redfish BMC offers it (Ironic reboots
# with it too), and for a machine that boots from the network the effect is the same.
RESETS = {
    "on": sushy.ResetType.ON,
    "off": sushy.ResetType.FORCE_OFF,
    "cycle": sushy.ResetType.FORCE_RESTART,
}


class Redfish:
    """A Redfish system behind a BMC over HTTPS, open inside ``with``; the connections close on exit."""

    scheme = "redfish+https"
    default_port = 443
    transport = "https"

    @classmethod
    def check_path(cls, text: str, path: str) -> str:
        """A Redfish address names one system: its ``/redfish/v1/Systems/<id>``."""
        if not SYSTEM_PATH.fullmatch(path):
            given = text.partition(":")[0].lower()
            raise InvalidBMCAddress(
                f"Redfish address {text!r} must name one system: "
                f"{given}://host[:port]/redfish/v1/Systems/<id> (the ids are listed under /redfish/v1/Systems)"
            )
        return path.rstrip("/")

    def __init__(self, address: BMCAddress, username: str, password: str, timeout: float, verify: bool | str):
        self.address = address
        self.username, self.password = username, password
        self.base_url = f"{self.transport}://{address.netloc}"
        # One attempt: a short operation has no time for retries, and the caller may
        # repeat it (sushy reads 0 as "the default of 3 tries, 2 s apart").
        self.connector = Connector(
            self.base_url, verify=verify, server_side_retries=1,
            default_request_timeout=timeout, connect_timeout=timeout,
        )

    def __enter__(self):
        try:
            root = sushy.Sushy(
                self.base_url, auth=auth.BasicAuth(self.username, self.password), connector=self.connector
            )
            self.system = root.get_system(self.address.path)
        except sushy_errors.SushyError as error:
            self.connector.close()
            raise self._error(error) from None
        return self

    def __exit__(self, *exc_info):
        self.connector.close()

    def state(self) -> str:
        """'on', 'off' or 'unknown' (e.g. 'Paused'), from the system's PowerState."""
        # As read on entry: a session lasts one operation, so that is fresh enough.
        return STATES.get(self.system.power_state, "unknown")

    def set(self, action: str) -> None:
        """Ask for a reset of the system: 'on', 'off' or 'cycle'."""
        try:
            self.system.reset_system(RESETS[action])
        except sushy_errors.SushyError as error:
            raise self._error(error) from None

    def _error(self, error: Exception) -> PowerError:
        """Turn a sushy exception into the KIWIspray error that says what to do."""
        if "CERTIFICATE_VERIFY_FAILED" in str(error):
            return PowerError(
                f"{self.address}: the BMC's TLS certificate is not trusted; give the certificate "
                "of the CA that signed it, or turn certificate verification off for this BMC"
            )
        if isinstance(error, sushy_errors.ConnectionError):
            return BMCUnreachable(
                f"{self.address}: cannot reach the Redfish service ({error}); check the address, "
                "the port and http/https (redfish+http:// for plain HTTP)"
            )
        if isinstance(error, sushy_errors.AccessError):
            return BMCAuthFailed(
                f"{self.address}: the BMC rejected the credentials; check the BMC username and "
                "password and that the user may reset the system"
            )
        if isinstance(error, sushy_errors.ResourceNotFoundError):
            return PowerError(
                f"{self.address}: the BMC has no system {self.address.path}; "
                f"its systems are listed under {self.base_url}/redfish/v1/Systems"
            )
        return PowerError(f"{self.address}: Redfish error: {error}")


class RedfishHTTP(Redfish):
    """The same over plain HTTP (``redfish+http://``), for BMCs and simulators without TLS."""

    scheme = "redfish+http"
    default_port = 80
    transport = "http"
