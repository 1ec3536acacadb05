"""BMC passwords at rest: the key outside the database, and what happens when it is lost."""

import stat

import pytest
from cryptography.fernet import Fernet

from ks.core.errors import BadRequest, ConfigError, SecretKeyError
from ks.core.vault import Vault


def test_the_key_file_is_made_0600_on_first_use_and_read_afterwards(tmp_path):
    key_file = tmp_path / "kiwispray.key"
    token = Vault("", key_file).encrypt("Clear-Pw-1")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and "Clear-Pw-1" not in token
    assert Vault("", key_file).decrypt(token) == "Clear-Pw-1"


def test_a_lost_or_replaced_key_says_what_to_do(tmp_path):
    token = Vault("", tmp_path / "a.key").encrypt("pw")
    with pytest.raises(SecretKeyError, match="missing"):
        Vault("", tmp_path / "b.key").decrypt(token)
    with pytest.raises(SecretKeyError, match="replaced"):
        Vault(Fernet.generate_key().decode(), tmp_path / "a.key").decrypt(token)
    assert not (tmp_path / "b.key").exists(), "decrypting never makes a key"


def test_an_environment_key_is_used_and_checked(tmp_path):
    key = Fernet.generate_key().decode()
    assert Vault(key, tmp_path / "unused").decrypt(Vault(key, tmp_path / "unused").encrypt("pw")) == "pw"
    assert not (tmp_path / "unused").exists()
    with pytest.raises(ConfigError, match="not a Fernet key"):
        Vault("short", tmp_path / "unused").encrypt("pw")


def test_a_password_longer_than_the_column_takes_is_refused(tmp_path):
    vault = Vault("", tmp_path / "k")
    assert len(vault.encrypt("x" * 255)) <= 1024
    with pytest.raises(BadRequest, match="255 bytes"):
        vault.encrypt("x" * 256)
