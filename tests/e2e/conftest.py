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
def start_lab(tmp_path, guest_cache):
    """Start a lab with Lab's options: ``start_lab(settings=…, dnsmasq=…)``; torn down even when the test fails."""
    labs = []

    def start(**options) -> Lab:
        labs.append(Lab(tmp_path, guest_cache, **options))
        return labs[-1].start()

    try:
        yield start
    finally:
        for lab in labs:
            lab.close()


@pytest.fixture
def lab(start_lab):
    """A private network with dnsmasq and kiwispray serve."""
    return start_lab()
