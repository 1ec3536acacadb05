"""Every failure KIWIspray reports, under one base class.

Each subclass carries a message that tells the reader what to do, the HTTP
status views answer with (``status``, see ``ks.app`` and ``ks.api``) and the
exit status of a command that fails with it (``exit_code``, see ``ks.cli.common``).
"""


class KSError(Exception):
    """Base class of all KIWIspray errors."""

    status = 400
    exit_code = 1

    def headers(self) -> dict[str, str]:
        """HTTP headers an answer to this error carries besides its status (none but for a few)."""
        return {}


class BadRequest(KSError):
    """Input that is malformed: a bad id, MAC, JSON document or value."""

    status = 400


class BadSelector(BadRequest):
    """A selector that does not follow the grammar (``ks.core.selectors``): a usage error on the command line."""

    exit_code = 2


class Unauthorized(KSError):
    """A bootid that is missing, wrong or outdated."""

    status = 401


class TooManyLogins(KSError):
    """This address failed to log in too often of late: it tries again after ``retry_after`` seconds."""

    status = 429

    def __init__(self, retry_after: int):
        super().__init__(f"too many failed logins from this address; try again in {retry_after} s")
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Forbidden(KSError):
    """Something this server is set up not to reveal."""

    status = 403


class NotFound(KSError):
    """An id, host, image or file that does not exist."""

    status = 404


class UnsupportedMediaType(KSError):
    """A request body in a format the endpoint does not read."""

    status = 415


class Conflict(KSError):
    """A request that does not fit the machine's current state or identity."""

    status = 409


class InvalidState(BadRequest):
    """A state chain that is malformed or names an unknown image."""


class ChangeFailed(Conflict):
    """A change of many hosts that the database refused part-way; nothing of it was written."""


class IdentityConflict(Conflict):
    """Identifiers reported by one machine belong to two different hosts."""

    def __init__(self, message: str, host_ids: list[int]):
        super().__init__(message)
        self.host_ids = host_ids


class Unavailable(KSError):
    """The database cannot take the request now; the same request succeeds later, nothing of it was written."""

    status = 503
    exit_code = 75  # EX_TEMPFAIL: try again later


class DiskFull(Unavailable):
    """The file system under the database is full (SQLite's SQLITE_FULL, PostgreSQL's disk_full)."""


class DatabaseUnreachable(Unavailable):
    """The database server closed the connection or refuses new ones (restarted, shutting down)."""


class ConfigError(KSError):
    """A setting that cannot work, such as a root directory that does not exist."""


class SecretKeyError(KSError):
    """The key that encrypts BMC passwords is missing or is not the one they were encrypted with."""

    status = 500


class ImageError(KSError):
    """An image that cannot be imported or checked: a bad source, a missing file."""


class ImageExists(ImageError):
    """An import would overwrite an existing image without being asked to."""

    status = 409


class DownloadFailed(ImageError):
    """A source URL that cannot be fetched completely."""


class UnsafeArchive(ImageError):
    """An archive member that would land outside the image directory or is no plain file."""


class ChecksumMismatch(ImageError):
    """An image whose uncompressed disk does not match the build's checksum file."""


class InvalidBMCAddress(BadRequest):
    """A BMC address that is not ipmi://… or redfish://… in the Metal3 convention."""


class PowerError(KSError):
    """A BMC that answered but refused or failed a power operation."""

    # The request was fine; the BMC behind this service failed (as an HTTP gateway).
    status = 502


class BMCAuthFailed(PowerError):
    """A BMC that rejected the username or password it was given."""


class BMCUnreachable(PowerError):
    """A BMC that gave no answer within the timeout."""

    status = 504


class BMCNotFound(PowerError):
    """A BMC given by MAC that is in no neighbour table entry, even after a sweep of its subnets."""


class RulesError(KSError):
    """An enrollment rules file with mistakes; ``problems`` holds one line per mistake, each naming its position."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class TooManyStreams(KSError):
    """A server process that holds as many event streams (the API's and the dashboard's) as it is set up for."""

    status = 503
