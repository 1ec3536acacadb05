"""A client of the admin API, for ``kiwispray --server URL``."""

import requests

from ks.core.errors import KSError


class RemoteError(KSError):
    """The server refused a request or could not be reached; ``document`` is the server's answer, if any."""

    def __init__(self, message: str, document: dict | None = None):
        super().__init__(message)
        self.document = document


def server_url(given: str) -> str:
    """``--server`` as a URL: ``http://`` put in front when no scheme is given, the trailing ``/`` taken off."""
    url = given.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("http", "https") or url.endswith("://"):
        raise RemoteError(f"--server {given!r} is not a server's URL; give http://HOST:PORT or https://HOST:PORT")
    return url


def why(exc: BaseException) -> str:
    """What went wrong with a connection, in a few words: the innermost OS error (``connection refused``)."""
    seen: set[int] = set()
    found: OSError | None = None
    todo: list[object] = [exc]
    while todo:
        error = todo.pop(0)
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, OSError) and error.strerror:
            found = error
        todo += [*error.args, getattr(error, "reason", None), error.__cause__, error.__context__]
    if found is not None:
        return str(found.strerror).lower()
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


class Remote:
    """The admin API of one server, authenticated with a bearer token."""

    def __init__(self, url: str, token: str, timeout: float = 30):
        self.server = server_url(url)
        self.base = self.server + "/api/v1"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout

    def call(self, method: str, path: str, **kwargs):
        """One request; the JSON answer, None for 204, RemoteError with the server's sentence otherwise."""
        try:
            response = self.session.request(method, self.base + path, timeout=self.timeout, **kwargs)
        except requests.Timeout:
            raise RemoteError(f"cannot reach {self.server}: no answer within {self.timeout:g} s") from None
        except requests.RequestException as exc:
            raise RemoteError(f"cannot reach {self.server}: {why(exc)}") from None
        if response.status_code == 204:
            return None
        try:
            document = response.json()
        except ValueError:
            raise RemoteError(
                f"{self.base}{path} answered {response.status_code} without JSON; is it a KIWIspray server?"
            ) from None
        if response.status_code >= 400:
            raise RemoteError(f"server: {document.get('error', response.reason)} ({response.status_code})", document)
        return document

    def hosts(self, power: bool = False, selector: str | None = None) -> list[dict]:
        """Every host, or those ``selector`` matches (all pages)."""
        found, offset = [], 0
        while True:
            params = {"limit": 10000, "offset": offset, "power": "1" if power else "0"}
            if selector is not None:
                params["selector"] = selector
            page = self.call("GET", "/hosts", params=params)
            found += page["hosts"]
            offset += len(page["hosts"])
            if not page["hosts"] or offset >= page["total"]:
                return found

    def host(self, ref: str) -> dict:
        return self.call("GET", f"/hosts/{ref}")

    def patch(self, ref: str, changes: dict) -> dict:
        return self.call("PATCH", f"/hosts/{ref}", json=changes)

    def patch_selected(self, selector: str, changes: dict, dry_run: bool = False) -> dict:
        """The same change for every host ``selector`` matches: ``{"hosts": [...], "total": n, "dry_run": b}``."""
        params = {"selector": selector, "dry_run": "1" if dry_run else "0"}
        return self.call("PATCH", "/hosts", params=params, json=changes)

    def power(self, ref: str, action: str) -> dict:
        return self.call("POST", f"/hosts/{ref}/power", json={"action": action})

    def configurations(self) -> list[dict]:
        return self.call("GET", "/configurations")["configurations"]

    def deploy(self, config: str, entries: list[dict], reboot: bool, selector: str | None = None) -> None:
        document = {"selector": selector} if selector is not None else {"hosts": entries}
        self.call("PUT", f"/configurations/{config}/deploy", json={**document, "reboot": reboot})

    def discover(self) -> dict:
        """Sweep the server's BMC subnets, then where its BMCs given by MAC are."""
        self.call("PATCH", "/discovery")
        return self.call("GET", "/discovery")
