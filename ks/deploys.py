"""Configurations and deploys (a configuration given to many hosts at once), for the admin API and the CLI."""

from ks import images, machines, states
from ks.change import HostChange
from ks.db import Database
from ks.errors import BadRequest, NotFound

# Hosts one deploy may name: every one is a state change and a history line in one
# transaction, which holds the writer lock (and so every boot) until it commits.
MAX_DEPLOY_HOSTS = 1000


def configurations(root: str) -> list[dict]:
    """Every state a host can be given: images (sorted), then the builtins."""
    names = sorted(images.image_names(root))
    return [{"name": n, "kind": "image"} for n in names] + [{"name": b, "kind": "builtin"} for b in states.BUILTINS]


def deploy(db: Database, root: str, config: str, refs: list[str], source: str) -> list[int]:
    """Give every host in ``refs`` (ids, MACs, names) the configuration; all or nothing.

    Returns the host ids, each once. NotFound for an unknown configuration or host,
    BadRequest for more than ``MAX_DEPLOY_HOSTS`` references, before anything changes.
    """
    if len(refs) > MAX_DEPLOY_HOSTS:
        raise BadRequest(f"{len(refs)} hosts named; a deploy takes at most {MAX_DEPLOY_HOSTS}, split it into several")
    if config not in {c["name"] for c in configurations(root)}:
        raise NotFound(f"configuration {config[:64]!r} not found; `config list` shows them")
    change = HostChange.parse(set(), state=config, force=True)  # a configuration is known: it was listed

    def work(session):
        hosts = machines.resolve_many(session, refs)
        for host in hosts:
            change.apply(session, host, source)
        return [h.id for h in hosts]

    return db.write(work)
