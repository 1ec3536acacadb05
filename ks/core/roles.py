"""Who may do what: the role of an API token or dashboard session, and the role each kind of action needs.

The API and the dashboard ask the same question, ``allows(role, action)``, of
the same table, so a role means one thing everywhere.
"""

from enum import IntEnum, StrEnum

from ks.core.errors import BadRequest


class Role(IntEnum):
    """A token's role; each includes what the ones below it may do."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        """The role as operators write it: viewer, operator, admin."""
        return self.name.lower()


class Action(StrEnum):
    """What a request does, as far as roles are concerned."""

    READ = "read"  # listings, a host, its history, images, the event stream
    OPERATE = "operate"  # states, hostnames, metadata, labels, retries, deploys, power
    ADMINISTER = "administer"  # tokens, BMC credentials, deleting hosts, webhooks


NEEDS = {Action.READ: Role.VIEWER, Action.OPERATE: Role.OPERATOR, Action.ADMINISTER: Role.ADMIN}
# Tokens made before roles existed could do everything, and still can.
DEFAULT = Role.ADMIN
NAMES = tuple(role.label for role in Role)


def parse_role(text: str) -> Role:
    """``viewer``, ``operator`` or ``admin``; BadRequest naming the choices otherwise."""
    for role in Role:
        if role.label == text:
            return role
    raise BadRequest(f"{str(text)[:32]!r} is not a role; choose one of {', '.join(NAMES)}")


def allows(role: Role, action: Action) -> bool:
    """Whether ``role`` may do ``action``."""
    return role >= NEEDS[action]


def needed(action: Action) -> Role:
    """The least role that may do ``action``."""
    return NEEDS[action]
