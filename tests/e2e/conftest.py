"""Fixtures for real boots: the test machine (built once) and a boot lab per test."""

import os

import pytest

from .harness import Lab, prepare


@pytest.fixture(scope="session")
def guest_cache():
    """The test machine's kernel and initrd; installs QEMU, iPXE, OVMF and dnsmasq if missing."""
    if os.geteuid() != 0:
        pytest.fail("real boots need root: they create network namespaces and tap devices")
    return prepare()


@pytest.fixture
def lab(tmp_path, guest_cache):
    """A private network with dnsmasq and kiwispray serve; torn down even when the test fails."""
    lab = Lab(tmp_path, guest_cache)
    try:
        yield lab.start()
    finally:
        lab.close()
