"""Run Debian's cloud-init NoCloud datasource as an installed system's first boot would, print what it got.

Not a test module: ``tests/test_first_boot_real.py`` runs it with Debian's
``/usr/bin/python3`` and ``PYTHONPATH`` at the cloud-init package unpacked by
``scripts/install-system-deps.sh``. The kernel command line comes from
``DEBUG_PROC_CMDLINE`` (cloud-init's own switch); its state goes to WORKDIR.

    cloud_init_nocloud.py WORKDIR    -> one JSON object on stdout
"""

import json
import os
import sys

from cloudinit import distros, helpers, util
from cloudinit.config import schema
from cloudinit.sources import DataSourceNoCloud


def main(workdir: str) -> dict:
    paths = helpers.Paths({"cloud_dir": os.path.join(workdir, "cloud"), "run_dir": os.path.join(workdir, "run")})
    # No disks labelled cidata are looked for: the kernel line names the seed.
    system = {"datasource": {"NoCloud": {"fs_label": None}}}
    distro = distros.fetch("debian")("debian", {}, paths)
    source = DataSourceNoCloud.DataSourceNoCloudNet(system, distro, paths)
    result: dict = {"error": None}
    try:
        result["found"] = bool(source.get_data())
    except Exception as exc:  # what cloud-init's init stage would log, and boot without data
        result["found"], result["error"] = False, f"{type(exc).__name__}: {exc}"
    result["metadata"] = source.metadata
    raw = source.userdata_raw
    result["userdata_raw"] = raw.decode() if isinstance(raw, bytes) else raw
    if not result["found"]:
        return result
    result["instance_id"] = source.get_instance_id()
    result["hostname"] = source.get_hostname().hostname
    configs = []
    for part in source.get_userdata().walk():  # cloud-init's user-data processing: MIME parts by type
        if part.get_content_type() == "text/cloud-config":
            configs.append(util.load_yaml(part.get_payload(decode=True)))
    result["cloud_config"] = configs
    try:
        for config in configs:
            schema.validate_cloudconfig_schema(config, schema.get_schema(), strict=True)
        result["schema"] = "valid"
    except Exception as exc:
        result["schema"] = f"{type(exc).__name__}: {exc}"
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
