"""Configurations and deploys (a configuration given to many hosts at once), for the admin API and the CLI."""

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ks import images, machines, select_sql, states
from ks.change import HostChange
from ks.db import Database
from ks.errors import BadRequest, ChangeFailed, NotFound
from ks.models import Host
from ks.record import HostRecord
from ks.selectors import Selector
from ks.vault import Vault

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


def deploy(db: Database, root: str, config: str, refs: list[str] | None, source: str,
           selector: Selector | None = None) -> list[int]:
    """Give every host in ``refs`` (ids, MACs, names), or every one ``selector`` matches, the configuration.

    All or nothing. Returns the host ids, each once. NotFound for an unknown
    configuration or host, BadRequest for more than ``MAX_DEPLOY_HOSTS``
    references (``MAX_SELECTED_HOSTS`` selected hosts), before anything changes.
    """
    refs = refs or []
    if len(refs) > MAX_DEPLOY_HOSTS:
        raise BadRequest(f"{len(refs)} hosts named; a deploy takes at most {MAX_DEPLOY_HOSTS}, split it into several")
    if config not in {c["name"] for c in configurations(root)}:
        raise NotFound(f"configuration {config[:64]!r} not found; `config list` shows them")
    change = HostChange.parse({}, state=config, force=True)  # a configuration is known: it was listed

    if selector is None:
        return change_hosts(db, refs, change, source)

    def work(session):
        hosts = select_hosts(session, selector, lock=True)
        with session.no_autoflush:  # the rows in one flush at the end, as in change_selected
            for host in hosts:
                change.apply(session, host, source)
        return [h.id for h in hosts]

    return _refused_as_change_failed(db, work)


def change_hosts(db: Database, refs: list[str], change: HostChange, source: str,
                 vault: Vault | None = None) -> list[int]:
    """Make ``change`` to every host in ``refs`` (ids, MACs, names), all or nothing; the host ids, each once."""

    def work(session: Session) -> list[int]:
        hosts = machines.resolve_many(session, refs)
        with session.no_autoflush:  # the rows in one flush at the end, as in change_selected
            for host in hosts:
                change.apply(session, host, source, vault)
        return [h.id for h in hosts]

    return db.write(work)


def change_selected(db: Database, selector: Selector, change: HostChange, source: str, vault: Vault | None = None,
                    dry_run: bool = False) -> list[HostRecord]:
    """Apply ``change`` to every host ``selector`` matches, in one unit of work: all or nothing.

    Returns the hosts as they are after the change (with ``dry_run``: as they are
    now, nothing written). BadRequest for a change that belongs to one host or a
    selector matching more than ``MAX_SELECTED_HOSTS``; ChangeFailed when the
    database refuses part of it (nothing of the change is written then).
    """
    change.check_many()

    def work(session: Session) -> list[HostRecord]:
        hosts = select_hosts(session, selector, lock=not dry_run)
        if not dry_run:
            # The hosts' rows are written in one flush at the end (the history lines as they come):
            # no flush per host before each history line. A refusal anywhere still undoes everything.
            with session.no_autoflush:
                for host in hosts:
                    change.apply(session, host, source, vault)
            session.flush()
        return [HostRecord.of(host) for host in hosts]

    if dry_run:
        with db.read() as session:
            return work(session)
    return _refused_as_change_failed(db, work)


def select_hosts(session: Session, selector: Selector, lock: bool = False) -> list[Host]:
    """The hosts ``selector`` matches, by id (row-locked if asked); BadRequest beyond ``MAX_SELECTED_HOSTS``."""
    condition = select_sql.where(selector, session.get_bind().dialect.name)
    count = session.scalar(select(func.count()).select_from(Host).where(condition)) or 0
    if count > MAX_SELECTED_HOSTS:
        raise BadRequest(f"selector {str(selector)[:80]!r} matches {count} hosts; one change takes at most "
                         f"{MAX_SELECTED_HOSTS}: narrow it (e.g. add rack=N) and change them in several steps")
    stmt = select(Host).where(condition).order_by(Host.id)
    return list(session.scalars(stmt.with_for_update() if lock else stmt))


def _refused_as_change_failed(db: Database, work):
    """``db.write(work)``, a refusal by the database (a constraint, a trigger) as one ChangeFailed line."""
    try:
        return db.write(work)
    except sa_exc.DBAPIError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0][:200]
        raise ChangeFailed(f"the database refused the change ({reason}); nothing was changed") from None
