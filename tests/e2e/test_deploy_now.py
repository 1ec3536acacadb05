"""The "deploy now" gesture end to end: ``edit-host -i 1 -s image1 --reboot`` alone
reinstalls an installed, running machine through its BMC.

The BMC is OpenIPMI's ipmi_sim whose chassis program powers a real test machine:
``set power 1`` starts its QEMU, ``set power 0`` kills it by its PID, ``get power``
says whether it runs (see Machine.chassis_program). A guest reboot keeps the power
on, as on hardware, so after its installation the machine boots again by itself,
and KIWIspray sends it to its disk.
"""

import json
import re

import pytest

from .harness import shows_bootid
from helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

INSTALLED = re.escape("host 1 (not-set) is installed; booting from the next device")


def test_deploy_now_reinstalls_a_running_machine(lab, start_bmc):
    machine = lab.machine("bios")
    bmc = start_bmc("ipmi", chassis=machine.chassis_program)
    lab.register(machine)
    lab.edit_host("-i", "1", "-s", "finished")
    lab.edit_host("-i", "1", "--bmc", bmc.url, "--bmc-user", bmc.username, env={"KS_BMC_PASSWORD": bmc.password})

    # An installed machine, powered on through its BMC, boots from its disk.
    lab.edit_host("-i", "1", "--power", "on")
    machine.powered(bmc.workdir, 1).wait_for(INSTALLED, timeout=180)
    assert "power on" in lab.edit_host("-i", "1", "--power", "status").stderr

    # Deploy now: the state, then a power cycle. ipmi_sim powers off at once and on
    # a second later; the new power-on is a fresh boot that installs image1.
    done = lab.edit_host("-i", "1", "-s", "image1", "--reboot")
    assert "host 1: power cycled, now on" in done.stderr
    bmc.wait_history([True, False, True])
    run = machine.powered(bmc.workdir, 2)
    run.wait_for("KSGUEST: post-install ok", timeout=240)
    # The installed system rebooted (the power stayed on) and went to its disk.
    run.wait_for(f"(?s)KSGUEST: rebooting.*{INSTALLED}", timeout=180)
    assert "boots image image1" in run.text
    assert not shows_bootid(run.text)  # loglevel=4 of the generic template

    lab.edit_host("-i", "1", "--power", "off")
    bmc.wait_history([True, False, True, False])
    # The chassis program records "set power 0" before it kills QEMU, and it answers
    # ipmi_sim after at most a second even if QEMU (half a gigabyte to tear down) has
    # not gone by then: on a loaded machine the power still reads "on" for a moment
    # after the BMC acknowledged "off", as on real hardware. Wait for the power to be
    # off, then ask through KIWIspray.
    wait_for(lambda: not bmc.power, 30, "the machine powered off")
    assert "power off" in lab.edit_host("-i", "1", "--power", "status").stderr

    events = json.loads(lab.edit_host("-i", "1", "--history", "--json").stdout)
    steps = [(e["kind"], e["to"] or e["detail"]) for e in events if e["kind"] != "edit"]
    assert steps == [
        ("register", "new"),
        ("boot", "new"),  # lab.register
        ("state", "finished"),
        ("power", "on sent"),
        ("boot", "finished"),
        ("state", "image1"),
        ("power", "cycle sent"),
        ("boot", "image1"),
        ("post-install", "image1"),
        ("finish", "finished"),
        ("boot", "finished"),
        ("power", "off sent"),
    ]
