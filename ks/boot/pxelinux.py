"""PXELINUX configuration links, PXE Pilot's way, for machines that boot PXELINUX over TFTP.

For each host, ``<tftp_root>/pxelinux.cfg/01-<first MAC>`` links to
``<pxelinux_config_dir>/<state>`` (``local`` when the host is ``finished``) and
every other MAC's file links to the first one. Links are replaced atomically
(a new link under a temporary name, then ``rename``), so a machine reading its
configuration never sees a missing file. Only links that point into the
configuration directory (or at another host link) are ever touched.
"""

import logging
import os
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from ks.core import states
from ks.core.config import Settings
from ks.records.db import Database
from ks.records.models import Host, HostMac

log = logging.getLogger(__name__)

LOCAL = "local"


def link_name(mac: str) -> str:
    """PXELINUX's file name for a MAC: ``01-`` and the MAC in lower case with dashes."""
    return "01-" + mac.lower().replace(":", "-")


def config_for(state_chain: str) -> str:
    """The configuration a host in this chain boots."""
    current = states.current(states.parse_chain(state_chain))
    return LOCAL if current == states.FINISHED else current


@dataclass(frozen=True)
class Change:
    """One link created, changed or removed by a sync."""

    name: str
    before: str | None
    after: str | None

    def __str__(self) -> str:
        if self.after is None:
            return f"removed {self.name} (was -> {self.before})"
        if self.before is None:
            return f"created {self.name} -> {self.after}"
        return f"changed {self.name} -> {self.after} (was -> {self.before})"


class PxeLinux:
    """The links of one TFTP root."""

    def __init__(self, tftp_root: str | Path, config_dir: str | Path):
        self.tftp_root = Path(tftp_root)
        self.link_dir = self.tftp_root / "pxelinux.cfg"
        self.config_dir = Path(config_dir) if Path(config_dir).is_absolute() else self.tftp_root / config_dir

    def wanted(self, macs: list[str], state_chain: str) -> dict[str, str]:
        """Link name -> target (relative to pxelinux.cfg/) for one host."""
        if not macs:
            return {}
        first = link_name(macs[0])
        config = os.path.relpath(self.config_dir / config_for(state_chain), self.link_dir)
        return {first: config, **{link_name(m): first for m in macs[1:]}}

    def current(self) -> dict[str, str]:
        """Our links as they are on disk now (name -> target)."""
        if not self.link_dir.is_dir():
            return {}
        found = {}
        for entry in os.scandir(self.link_dir):
            if entry.name.startswith("01-") and entry.is_symlink():
                target = os.readlink(entry.path)
                if self._ours(target):
                    found[entry.name] = target
        return found

    def _ours(self, target: str) -> bool:
        if target.startswith("01-"):
            return True
        resolved = os.path.normpath(self.link_dir / target)
        return Path(resolved).parent == Path(os.path.normpath(self.config_dir))

    def apply(self, wanted: dict[str, str], remove: AbstractSet[str] = frozenset()) -> list[Change]:
        """Make the links so; returns what changed."""
        self.link_dir.mkdir(parents=True, exist_ok=True)
        changes = []
        for name, target in wanted.items():
            path = self.link_dir / name
            before = os.readlink(path) if path.is_symlink() else None
            if before == target:
                continue
            if path.exists() and not path.is_symlink():
                log.warning("pxelinux: %s is a regular file, not replacing it", path)
                continue
            temporary = self.link_dir / f".{name}.{os.getpid()}.tmp"
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(target)
            os.replace(temporary, path)
            changes.append(Change(name, before, target))
        for name in sorted(remove - set(wanted)):
            path = self.link_dir / name
            if path.is_symlink():
                before = os.readlink(path)
                path.unlink()
                changes.append(Change(name, before, None))
        return changes

    def hosts(self, db: Database, host_ids: set[int] | None = None) -> dict[str, str]:
        """The wanted links of the given hosts (all hosts if None)."""
        wanted = {}
        with db.read() as session:
            stmt = select(Host.id, Host.state)
            if host_ids is not None:
                stmt = stmt.where(Host.id.in_(host_ids))
            chains = dict(session.execute(stmt).all())
            mac_stmt = select(HostMac.host_id, HostMac.mac).order_by(HostMac.host_id, HostMac.position)
            if host_ids is not None:
                mac_stmt = mac_stmt.where(HostMac.host_id.in_(host_ids))
            macs: dict[int, list[str]] = {}
            for host_id, mac in session.execute(mac_stmt):
                macs.setdefault(host_id, []).append(mac)
        for host_id, chain in chains.items():
            wanted.update(self.wanted(macs.get(host_id, []), chain))
        return wanted

    def update_hosts(self, db: Database, host_ids: set[int]) -> list[Change]:
        """After a commit: bring the links of these hosts up to date.

        A deleted host's MACs are no longer known, so its links are found by a full sync.
        """
        with db.read() as session:
            deleted = set(host_ids) - set(session.scalars(select(Host.id).where(Host.id.in_(host_ids))))
        changes = self.sync(db) if deleted else self.apply(self.hosts(db, host_ids))
        for change in changes:
            log.info("pxelinux: %s", change)
        return changes

    def sync(self, db: Database) -> list[Change]:
        """Repair drift: every host's links as they should be; links of unknown MACs removed."""
        wanted = self.hosts(db)
        return self.apply(wanted, remove=set(self.current()))


def from_settings(settings: Settings) -> PxeLinux | None:
    """The PXELINUX links of a site, if ``TFTP_ROOT`` is configured."""
    if not settings.tftp_root:
        return None
    return PxeLinux(settings.tftp_root, settings.pxelinux_config_dir)


def attach(db: Database, settings: Settings) -> PxeLinux | None:
    """Keep the links up to date after every committed state or MAC change."""
    pxe = from_settings(settings)
    if pxe is not None:
        db.add_listener(lambda host_ids: pxe.update_hosts(db, host_ids))
    return pxe
