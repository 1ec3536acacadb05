"""One validated change of a host, as the API, ``edit-host``, ``kiwispray host set`` and deploys make it.

``HostChange.parse`` checks everything before anything is written; ``apply``
writes it in the caller's unit of work, in one fixed order.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session

from ks import power
from ks.core import states
from ks.core.errors import BadRequest
from ks.core.identity import normalize_mac
from ks.core.roles import Action
from ks.core.values import check_hostname, check_labels, check_metadata
from ks.core.vault import Vault
from ks.fleet import machines, timeouts
from ks.records.models import Host

# ``bmc`` not given (None removes the BMC).
UNCHANGED = object()
BMC_FIELDS = {"address", "username", "password"}


@dataclass(frozen=True)
class HostChange:
    """What changes of one host; None (or False) for what stays as it is. ``bmc={}`` removes the BMC."""

    chain: states.Chain | None = None
    hostname: str | None = None
    metadata: dict | None = None
    macs: tuple[str, ...] | None = None
    bmc: dict | None = None
    retry: bool = False
    delete: bool = False
    # Label updates: {key: value} sets, {key: None} removes; other labels stay.
    labels: dict[str, str | None] | None = None

    @property
    def needs(self) -> Action:
        """What the change does as far as roles are concerned: BMC credentials and deleting administer."""
        return Action.ADMINISTER if self.delete or self.bmc is not None else Action.OPERATE

    @classmethod
    def parse(cls, known_images: Mapping[str, str], *, state=None, hostname=None, metadata=None, macs=None,
              bmc=UNCHANGED, force: bool = False, how_to_force: str = "--force", retry: bool = False,
              delete: bool = False, labels=None) -> "HostChange":
        """Validate a change: ``state`` a chain (text or list of names) of images that boot, unless ``force``.

        ``known_images``: the site's images, each with why it cannot boot ("" when it can; ``ks.boot.images.catalog``).

        ``labels``: ``{key: value or None}`` (see ``ks.core.values.check_labels``).
        """
        chain = None
        if state is not None:
            if isinstance(state, list) and all(isinstance(s, str) for s in state):
                state = states.format_chain(tuple(state))
            if not isinstance(state, str):
                raise BadRequest("state must be a chain like 'wipe,image1' or a list of state names")
            chain = states.parse_chain(state)
            states.check_known(chain, known_images, force, how_to_force=how_to_force)
        if hostname is not None:
            check_hostname(hostname)
        if metadata is not None:
            check_metadata(metadata)
        if macs is not None:
            macs = tuple(dict.fromkeys(normalize_mac(m) for m in macs))
            machines.check_mac_count(len(macs))
        if labels is not None:
            labels = dict(check_labels(labels))
        return cls(chain, hostname, metadata, macs, None if bmc is UNCHANGED else parse_bmc(bmc), retry, delete,
                   labels)

    def check_many(self, names: dict[str, str] | None = None) -> None:
        """BadRequest unless the change makes sense for many hosts at once (a selector's).

        A hostname, MACs and a BMC belong to one machine, and deleting by pattern
        is one typo away from deleting the fleet. ``names``: how the caller calls
        each field (``{"hostname": "-n"}``), for the message.
        """
        names = names or {}
        for field, given in (("hostname", self.hostname is not None), ("macs", self.macs is not None),
                             ("bmc", self.bmc is not None), ("delete", self.delete)):
            if given:
                raise BadRequest(f"{names.get(field, field)} belongs to one host and cannot be given with a "
                                 "selector; change that host by its id")

    def apply(self, session: Session, host: Host, source: str, vault: Vault | None = None) -> None:
        """Write the change, each part recorded in the host's history; ``vault`` encrypts a BMC password."""
        if self.delete:
            machines.delete_host(session, host)
            return
        if self.retry:
            timeouts.retry(session, host, source)
        if self.chain is not None:
            machines.set_state(session, host, self.chain, source)
        if self.hostname is not None:
            machines.set_hostname(session, host, self.hostname, source)
        if self.metadata is not None:
            machines.set_metadata(session, host, self.metadata, source)
        if self.labels:
            machines.set_labels(session, host, self.labels, source)
        if self.macs is not None:
            machines.set_macs(session, host, list(self.macs), source)
        if self.bmc is not None:
            if vault is None:
                raise ValueError("a BMC change is applied with the site's vault (it encrypts the password)")
            machines.set_bmc(session, host, self.bmc or None, source, vault)


def parse_bmc(value) -> dict:
    """``{"address", "username", "password"}`` (strings; the address a BMC URL), or None/{} to remove the BMC."""
    if value is None:
        return {}
    if not isinstance(value, dict) or set(value) - BMC_FIELDS or "address" not in value:
        raise BadRequest("bmc must be null or {\"address\": URL, \"username\": ..., \"password\": ...}")
    if not all(isinstance(v, str) for v in value.values()):
        raise BadRequest("bmc address, username and password must be strings")
    power.parse_bmc_address(value["address"])
    return value
