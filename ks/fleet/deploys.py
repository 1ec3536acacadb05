"""Configurations and changes of many hosts: what a deploy changes, which hosts a selector picks.

Given a session, never committing: ``ks.fleet.operations`` opens the units of work.
"""

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ks.boot import images
from ks.core import states
from ks.core.errors import BadRequest, NotFound
from ks.core.selectors import Selector
from ks.fleet import select_sql
from ks.fleet.change import HostChange
from ks.records.models import Host

# Hosts one deploy may name: every one is a state change and a history line in one
# transaction, which holds the writer lock (and so every boot) until it commits.
MAX_DEPLOY_HOSTS = 1000
# Hosts one selector change may touch. The same reasoning with a larger bound: the
# hosts are found by one query rather than named one by one, and a change of 5,000
# hosts held the writer lock for 1.1 to 5.6 s on a busy 2-core machine (docs/performance.md,
# Selectors): boots wait that out, well inside SQLite's 30 s busy timeout, with room for
# a slower machine. Beyond, change the fleet in steps (by rack, by id=1*, ...).
MAX_SELECTED_HOSTS = 5000


def configurations(root: str) -> list[dict]:
    """Every state a host can be given: images (sorted), then the builtins."""
    names = sorted(images.image_names(root))
    return [{"name": n, "kind": "image"} for n in names] + [{"name": b, "kind": "builtin"} for b in states.BUILTINS]


def deploy_change(root: str, config: str, named: int) -> HostChange:
    """The change a deploy of ``config`` to ``named`` hosts makes, checked before anything is read.

    NotFound for an unknown configuration, BadRequest for more than ``MAX_DEPLOY_HOSTS`` hosts named.
    """
    if named > MAX_DEPLOY_HOSTS:
        raise BadRequest(f"{named} hosts named; a deploy takes at most {MAX_DEPLOY_HOSTS}, split it into several")
    if config not in {c["name"] for c in configurations(root)}:
        raise NotFound(f"configuration {config[:64]!r} not found; `config list` shows them")
    return HostChange.parse({}, state=config, force=True)  # a configuration is known: it was listed


def select_hosts(session: Session, selector: Selector, lock: bool = False) -> list[Host]:
    """The hosts ``selector`` matches, by id (row-locked if asked); BadRequest beyond ``MAX_SELECTED_HOSTS``."""
    condition = select_sql.where(selector, session.get_bind().dialect.name)
    count = session.scalar(select(func.count()).select_from(Host).where(condition)) or 0
    if count > MAX_SELECTED_HOSTS:
        raise BadRequest(f"selector {str(selector)[:80]!r} matches {count} hosts; one change takes at most "
                         f"{MAX_SELECTED_HOSTS}: narrow it (e.g. add rack=N) and change them in several steps")
    stmt = select(Host).where(condition).order_by(Host.id)
    return list(session.scalars(stmt.with_for_update() if lock else stmt))
