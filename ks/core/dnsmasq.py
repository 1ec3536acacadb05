"""dnsmasq configurations made from the shipped ``dnsmasq.conf.example``.

The example is the one source: ``kiwispray dnsmasq-config`` fills in an operator's
interface and subnet (full or proxy DHCP), and the boot lab (``ks.lab``) runs it with
its own lines added. Pure text work; running ``dnsmasq --test`` is the callers'.
"""

import ipaddress
import re
from collections.abc import Sequence

from ks.core import config
from ks.core.errors import BadRequest

# The example's iPXE answer: KIWIspray on the DHCP server itself, port 5000.
DEFAULT_BOOT_URL = "http://${next-server}:5000/bootstrap.ipxe"


def example() -> str:
    """The text of the shipped dnsmasq.conf.example."""
    return config.shipped("dnsmasq.conf.example").read_text()


def configure(text: str, interface: str, dhcp_range: str | None, tftp_root: str | None,
              additions: Sequence[str] = ()) -> str:
    """The example with its active interface, dhcp-range and tftp-root lines replaced
    (None: kept), ``additions`` appended."""
    wanted = {"interface": interface, "dhcp-range": dhcp_range, "tftp-root": tftp_root}
    lines = []
    for line in text.splitlines():
        key = line.split("=", 1)[0]
        if key in wanted and wanted[key] is not None:
            line, wanted[key] = f"{key}={wanted[key]}", None
        lines.append(line)
    left = [key for key, value in wanted.items() if value is not None]
    if left:
        raise ValueError(f"dnsmasq.conf.example has no active {', '.join(left)} line")
    extra = ["", "# Additions.", *additions] if additions else []
    return "\n".join(lines + extra) + "\n"


def proxy_variant(text: str) -> str:
    """The example changed the way its comments tell: variant 1 (full DHCP) out, variant 2 (proxy DHCP) in."""
    lines, section = [], ""
    for line in text.splitlines():
        if line.startswith("# --- "):
            section = line
        if "Variant 1" in section and line.startswith(("dhcp-range=", "dhcp-boot=")):
            line = "#" + line
        elif "Variant 2" in section and re.match(r"#(dhcp-range|pxe-)", line):
            line = line[1:]
        lines.append(line)
    return "\n".join(lines) + "\n"


# The example's HTTP Boot URL, which its comment says to CHANGE.
HTTP_BOOT_URL = "http://192.168.100.1:5000/boot-files/snponly.efi"


def _sections(text: str):
    """Each line with the heading of its section (``# --- …``)."""
    section = ""
    for line in text.splitlines():
        if line.startswith("# --- "):
            section = line
        yield section, line


def tftp_off(text: str) -> str:
    """The example without dnsmasq's own TFTP server (KIWIspray's answers, or none is needed)."""
    return "\n".join("#" + line if re.match(r"(enable-tftp|tftp-root=)", line) else line
                     for line in text.splitlines()) + "\n"


def secure_boot_variant(text: str) -> str:
    """The example changed the way its comments tell for Secure Boot: UEFI x86-64 machines get shim,
    from KIWIspray's TFTP server (``--tftp-listen``), and dnsmasq's own TFTP is off."""
    lines = []
    for section, line in _sections(text):
        if "Secure Boot" in section and line.startswith("#dhcp-boot="):
            line = line[1:]
        elif line == "dhcp-boot=tag:!ipxe,tag:efi-x86_64,snponly.efi":
            line = "#" + line
        lines.append(line)
    return tftp_off("\n".join(lines))


def http_boot_variant(text: str, server: str) -> str:
    """The example with its UEFI HTTP Boot lines in, iPXE's EFI binary fetched from ``server`` (a URL)."""
    lines = []
    for section, line in _sections(text):
        if "HTTP Boot" in section and re.match(r"#(dhcp-vendorclass|dhcp-option-force|dhcp-boot)=", line):
            line = line[1:].replace(HTTP_BOOT_URL, server.rstrip("/") + "/boot-files/snponly.efi")
        lines.append(line)
    return "\n".join(lines) + "\n"


def subnet_of(cidr: str) -> ipaddress.IPv4Network:
    """An IPv4 subnet such as 192.168.100.0/24 (host bits set are allowed: 192.168.100.1/24)."""
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise BadRequest(f"{cidr!r} is not a subnet such as 192.168.100.0/24") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise BadRequest(f"{cidr}: machines boot over IPv4 here; give the IPv4 subnet of the interface")
    if network.prefixlen > 29:
        raise BadRequest(f"{cidr}: too small for a pool of addresses; give the interface's whole subnet")
    return network


def pool(network: ipaddress.IPv4Network) -> tuple[str, str]:
    """The addresses handed out in a subnet: its upper half, but the broadcast address
    (192.168.100.128 to .254 of a /24), leaving the lower half to servers and routers."""
    return str(network.network_address + network.num_addresses // 2), str(network.broadcast_address - 1)


def boot_url(server: str | None) -> str:
    """What iPXE fetches: ``<server>/bootstrap.ipxe``, or the example's URL (this machine, port 5000)."""
    if not server:
        return DEFAULT_BOOT_URL
    if not re.fullmatch(r"https?://[^\s/\"',]+/?", server):
        raise BadRequest(f"{server!r} is not a server URL such as http://192.168.100.1:5000 (scheme, host, "
                         "port, no path)")
    return server.rstrip("/") + "/bootstrap.ipxe"


def for_site(interface: str, cidr: str, proxy: bool, server: str | None, tftp_root: str | None,
             secure_boot: bool = False, http_boot: bool = False) -> str:
    """The example made for one interface and subnet, full DHCP (a pool in it) or proxy DHCP;
    with ``secure_boot`` and ``http_boot``, its variants of those names (full DHCP only)."""
    if proxy and (secure_boot or http_boot):
        raise BadRequest("the Secure Boot and HTTP Boot variants are written for full DHCP, not --proxy")
    if http_boot and not server:
        raise BadRequest("HTTP Boot needs the server's URL (--server http://ADDRESS:PORT): firmware does not "
                         "expand ${next-server}")
    if not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", interface):
        raise BadRequest(f"{interface!r} is not an interface name such as eth1")
    network = subnet_of(cidr)
    first, last = pool(network)
    if proxy:  # the active dhcp-range is then the proxy one
        text = configure(proxy_variant(example()), interface, f"{network.network_address},proxy", tftp_root)
    else:
        text = configure(example(), interface, f"{first},{last},12h", tftp_root)
    url = boot_url(server)
    if secure_boot:
        text = secure_boot_variant(text)
    if http_boot and server:
        text = http_boot_variant(text, server)
    return text.replace(DEFAULT_BOOT_URL, url) if url != DEFAULT_BOOT_URL else text
