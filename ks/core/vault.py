"""BMC passwords at rest: encrypted with Fernet (AES-128-CBC and HMAC-SHA256) under a key kept outside the database.

The key is ``KS_SECRET_KEY`` if set, else the file ``kiwispray.key`` in the site
root (``KS_SECRET_KEY_FILE`` moves it), created mode 0600 the first time a
password is stored. A copy of the database alone does not reveal a password.
"""

import functools
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from ks.core.config import Settings
from ks.core.errors import BadRequest, ConfigError, SecretKeyError

KEY_FILE = "kiwispray.key"
# Longest secret stored: its token (228 characters) fits the 255 of the column.
MAX_SECRET_BYTES = 255


class Vault:
    """Encrypts and decrypts short secrets with the site's key."""

    def __init__(self, key: str, key_file: Path):
        self.key = key
        self.key_file = key_file
        self._derived: dict[str, bytes] = {}  # the key file is read once per process

    def encrypt(self, secret: str) -> str:
        """The stored form of ``secret``; creates the key file if there is no key yet."""
        if len(secret.encode()) > MAX_SECRET_BYTES:
            raise BadRequest(f"the password is longer than {MAX_SECRET_BYTES} bytes")
        return self._fernet(create=True).encrypt(secret.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        """The secret stored as ``token``; SecretKeyError if the key is missing or another one."""
        try:
            return self._fernet(create=False).decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise SecretKeyError(
                f"a stored BMC password cannot be decrypted with the key from {self._where()}; "
                "was the key replaced? Restore it, or set the BMC's password again"
            ) from None

    def derive(self, purpose: str) -> bytes:
        """A key for ``purpose`` (signing dashboard sessions) derived from the site's key; makes the key file if needed.

        Every process and server sharing the key (``KS_SECRET_KEY`` or the key file)
        derives the same one; the site's key itself is never used for two things.
        """
        derived = self._derived.get(purpose)
        if derived is None:
            key = self.key or _read_key(self.key_file, create=True)
            if not key:  # created above when missing; an empty file is no key
                raise ConfigError(f"the secret key in {self.key_file} is empty; remove the file to get a new one")
            derived = self._derived[purpose] = hmac.new(key.encode(), purpose.encode(), hashlib.sha256).digest()
        return derived

    def _where(self) -> str:
        return "KS_SECRET_KEY" if self.key else str(self.key_file)

    def _fernet(self, create: bool) -> Fernet:
        key = self.key or _read_key(self.key_file, create)
        if key is None:
            raise SecretKeyError(
                f"the key file {self.key_file} that encrypts BMC passwords is missing; restore it or set KS_SECRET_KEY"
            )
        try:
            return Fernet(key)
        except ValueError:
            raise ConfigError(
                f"the key in {self._where()} is not a Fernet key (44 characters of URL-safe base64); "
                "make one with python3 -c "
                '"from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
            ) from None


def _read_key(path: Path, create: bool) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        if not create:
            return None
    key = Fernet.generate_key().decode("ascii")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(key + "\n")
    return key


@functools.lru_cache(maxsize=16)
def _vault(key: str, key_file: str) -> Vault:
    return Vault(key, Path(key_file))


def of(settings: Settings) -> Vault:
    """The vault of a site's settings."""
    key_file = settings.secret_key_file or str(Path(settings.root) / KEY_FILE)
    return _vault(settings.secret_key, key_file)
