import contextlib
import itertools

import pytest

from bmc import IpmiSim, RedfishSim

SIMULATORS = {"ipmi": IpmiSim, "redfish": RedfishSim}


@pytest.fixture
def start_bmc(tmp_path):
    """Start a simulated BMC: ``start_bmc("ipmi"|"redfish", power=False, **options)``."""
    numbers = itertools.count()
    with contextlib.ExitStack() as running:

        def start(kind: str, power: bool = False, **options):
            workdir = tmp_path / f"{kind}-{next(numbers)}"
            return running.enter_context(SIMULATORS[kind](workdir, power=power, **options))

        yield start
