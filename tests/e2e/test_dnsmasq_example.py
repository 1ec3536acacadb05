"""dnsmasq.conf.example passes ``dnsmasq --test``: as shipped, in its proxy-DHCP
variant, as the real-boot tests run it, and as ``kiwispray dnsmasq-config`` writes it."""

import subprocess

import pytest
from click.testing import CliRunner

from ks.cli.main import cli
from ks.core.dnsmasq import configure, proxy_variant

from .harness import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("guest_cache")]

EXAMPLE = REPO / "dnsmasq.conf.example"


def dnsmasq_test(conf) -> str:
    done = subprocess.run(["dnsmasq", "--test", f"--conf-file={conf}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_example_as_shipped():
    assert "syntax check OK" in dnsmasq_test(EXAMPLE)


def test_proxy_variant(tmp_path):
    text = proxy_variant(EXAMPLE.read_text())
    active = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert "dhcp-range=192.168.100.0,proxy" in active
    assert not any(line.startswith("dhcp-boot=") for line in active)
    assert sum(line.startswith("pxe-service=") for line in active) == 6
    conf = tmp_path / "proxy.conf"
    conf.write_text(text)
    assert "syntax check OK" in dnsmasq_test(conf)


def test_as_the_tests_run_it(tmp_path):
    text = configure(EXAMPLE.read_text(), "lo", "127.0.0.100,127.0.0.199,1h", str(tmp_path), ["port=0"])
    active = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert {"interface=lo", "dhcp-range=127.0.0.100,127.0.0.199,1h", f"tftp-root={tmp_path}"} <= set(active)
    conf = tmp_path / "test.conf"
    conf.write_text(text)
    assert "syntax check OK" in dnsmasq_test(conf)


@pytest.mark.parametrize("variant", [[], ["--proxy"], ["--secure-boot", "--http-boot"]])
def test_as_dnsmasq_config_writes_it(tmp_path, variant):
    conf = tmp_path / "kiwispray.conf"
    args = ["dnsmasq-config", "--interface", "lo", "--subnet", "127.0.0.0/8", "--server", "http://127.0.0.1:5000",
            "-o", str(conf), *variant]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    assert "checked: dnsmasq --test accepts it" in done.output
    assert "syntax check OK" in dnsmasq_test(conf)


def test_secure_boot_and_http_boot_variants(tmp_path):
    from ks.core.dnsmasq import http_boot_variant, secure_boot_variant

    text = http_boot_variant(secure_boot_variant(EXAMPLE.read_text()), "http://192.168.100.1:5000")
    active = [line for line in text.splitlines() if line and not line.startswith("#")]
    # UEFI x86-64 machines get shim (from KIWIspray's TFTP), BIOS ones still iPXE; dnsmasq serves no files.
    assert "dhcp-boot=tag:!ipxe,tag:efi-x86_64,shimx64.efi" in active
    assert "dhcp-boot=tag:!ipxe,tag:efi-x86_64,snponly.efi" not in active
    assert "dhcp-boot=tag:!ipxe,tag:!efi-x86_64,tag:!efi-arm64,undionly.kpxe" in active
    assert not any(line.startswith(("enable-tftp", "tftp-root")) for line in active)
    assert {"dhcp-vendorclass=set:httpboot,HTTPClient", "dhcp-option-force=tag:httpboot,60,HTTPClient",
            "dhcp-boot=tag:httpboot,http://192.168.100.1:5000/boot-files/snponly.efi"} <= set(active)
    conf = tmp_path / "secure-boot.conf"
    conf.write_text(text)
    assert "syntax check OK" in dnsmasq_test(conf)


@pytest.mark.parametrize(("args", "words"), [
    (["--proxy", "--secure-boot"], "full DHCP, not --proxy"),
    (["--http-boot"], "HTTP Boot needs the server's URL"),
])  # fmt: skip
def test_dnsmasq_config_says_what_a_variant_needs(args, words):
    done = CliRunner().invoke(cli, ["dnsmasq-config", "--interface", "lo", "--subnet", "127.0.0.0/8", *args])
    assert done.exit_code != 0 and words in done.output and "Traceback" not in done.output
