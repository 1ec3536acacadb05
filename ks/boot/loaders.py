"""The boot loaders KIWIspray answers, each in one place: iPXE and GRUB.

A loader is what runs on the machine and asks the server what to do. Both ask the same
question — "here is my MAC, serial and UUID" — and get the same decision (``booting.boot``);
they differ in how they ask and in the language of the answer:

========  ======================================  ==========================================
          iPXE                                    GRUB (Secure Boot: shim, then signed GRUB)
========  ======================================  ==========================================
asks      HTTP: ``/bootstrap.ipxe``, then         TFTP (``ks.tftp``): ``grub/grub.cfg``, then
          ``/bootstrap?net0=…&serial=…&uuid=…``   ``kiwispray/boot/mac=…/uuid=…/…/serial=…``,
                                                  which the TFTP server asks the application
                                                  as ``/bootstrap?…&loader=grub``
reports   every NIC's MAC, serial, UUID, facts    the boot NIC's MAC, serial, UUID and SMBIOS facts
waits     the answer chains ``poll_url`` again    the first configuration's loop asks again
templates ``X.ipxe`` (Jinja2), ``X.tmpl``         ``X.grub`` (Jinja2), ``X.grub.tmpl``
          (the original's ``@VAR@``)              (``@VAR@``)
kernel    by URL (HTTP)                           by path on the TFTP server (``image.path``)
========  ======================================  ==========================================

Values reach both languages through the same filter (``values.ipxe_text``, in templates
``ipxe`` or ``grub``): the safe alphabet holds none of GRUB's metacharacters either
(``$ ; & | < > { } ' "``), and a space becomes ``_``, so a value stays one inert word.
URLs that hold ``&`` or ``;`` (the callback URLs) are single-quoted in GRUB templates.

PXELINUX is not a loader of this kind: it asks no server, it reads files, and KIWIspray
writes them when a host's state changes (``ks.boot.pxelinux``).
"""

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from ks.core.errors import BadRequest
from ks.core.identity import Identity


@dataclass(frozen=True)
class Loader:
    """One boot loader's way of asking and the names of its templates."""

    name: str  # as in ``?loader=`` and ``kiwispray render --loader``
    suffix: str  # a Jinja2 template's: ``new.ipxe``, ``images/X/host.grub``
    legacy_suffix: str  # the original's ``@VAR@`` kind: ``X.tmpl``, ``X.grub.tmpl``

    def own_templates(self, image_dir: Path, site: Path, state: str) -> tuple[Path, ...]:
        """The boot templates made for ``state`` alone, first one found wins."""
        return (image_dir / f"host{self.suffix}", image_dir / f"host{self.legacy_suffix}",
                site / f"{state}{self.suffix}", site / f"{state}{self.legacy_suffix}")  # fmt: skip

    def poll_url(self, base_url: str, ident: Identity) -> str:
        """Where a waiting machine asks again (iPXE chains it; GRUB's loop asks on its own)."""
        query = {f"net{i}": mac.replace(":", "-") for i, mac in enumerate(ident.macs)}
        query.update({k: v for k, v in (("serial", ident.serial), ("uuid", ident.uuid)) if v})
        query["poll"] = "1"
        if self is not IPXE:
            query["loader"] = self.name
        return f"{base_url}/bootstrap?{urlencode(query)}"


IPXE = Loader("ipxe", ".ipxe", ".tmpl")
GRUB = Loader("grub", ".grub", ".grub.tmpl")
LOADERS = {loader.name: loader for loader in (IPXE, GRUB)}


def named(name: str | None) -> Loader:
    """The loader called ``name`` (None: iPXE); BadRequest for another name."""
    if name is None:
        return IPXE
    try:
        return LOADERS[name]
    except KeyError:
        raise BadRequest(f"unknown loader {name!r}: one of {', '.join(LOADERS)}") from None
