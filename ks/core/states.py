"""The per-machine state machine, pure: no Flask, no SQL.

A machine's state is a chain ``a,b,c``; the first element is what it boots now.

* ``new``       builtin: wait for an operator (polls the server, boots nothing)
* ``finished``  builtin: leave network boot, firmware boots the disk
* anything else is an image: the directory ``images/<name>/``; in the image
  ``discover`` a machine may report its MACs and metadata (/update)

Setting a state replaces the whole chain. ``/finish`` with the current bootid
removes the first element; an emptied chain becomes ``finished``. Builtins end a
chain: after ``new`` or ``finished`` nothing further could ever run.
"""

import re
from collections.abc import Mapping

from ks.core.errors import Conflict, InvalidState

NEW = "new"
FINISHED = "finished"
BUILTINS = (NEW, FINISHED)
DISCOVER = "discover"

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_NAME_LENGTH = 64
MAX_CHAIN_LENGTH = 16

Chain = tuple[str, ...]


def parse_chain(text: str) -> Chain:
    """Split ``a,b,c`` into a validated chain; InvalidState says what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidState("a state is required, e.g. 'image1' or 'wipe,image1'")
    chain = tuple(part.strip() for part in text.split(","))
    if len(chain) > MAX_CHAIN_LENGTH:
        raise InvalidState(f"a chain holds at most {MAX_CHAIN_LENGTH} states, got {len(chain)}")
    for name in chain:
        if not name:
            raise InvalidState(f"empty state name in {text!r}; separate states with single commas")
        if len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(name):
            raise InvalidState(
                f"{name[:MAX_NAME_LENGTH]!r} is not a valid state name "
                "(letters, digits, '.', '_', '-'; starting with a letter or digit)"
            )
    for name in chain[:-1]:
        if name in BUILTINS:
            raise InvalidState(f"'{name}' can only be the last state of a chain: nothing after it would ever run")
    return chain


def format_chain(chain: Chain) -> str:
    """The stored form of a chain."""
    return ",".join(chain)


def stored_chain(text: str) -> Chain:
    """A chain as stored, split without checking (it was checked when it was set)."""
    return tuple(text.split(","))


def current(chain: Chain) -> str:
    """The state a machine boots now."""
    return chain[0]


def is_image(name: str) -> bool:
    """True for states that boot an image directory."""
    return name not in BUILTINS


def check_known(chain: Chain, images: Mapping[str, str], force: bool = False, how_to_force: str = "--force") -> None:
    """Refuse image names without an image directory, or whose image cannot boot, unless forced.

    ``images``: each image of the site with why it cannot boot ("" when it can),
    see ``ks.boot.images.catalog``. ``how_to_force`` is how the one asking forces it:
    ``--force`` on the command line, ``"force": true`` in the admin API.
    """
    if force:
        return
    unknown = [name for name in chain if is_image(name) and name not in images]
    if unknown:
        known = ", ".join(sorted(images)) or "none"
        raise InvalidState(
            f"unknown image {unknown[0]!r}; known images: {known}; builtin states: {', '.join(BUILTINS)} "
            f"{force_hint(how_to_force)}"
        )
    broken = [name for name in chain if is_image(name) and images[name]]
    if broken:
        raise InvalidState(f"image {broken[0]!r} cannot boot: {images[broken[0]]} {force_hint(how_to_force)}")


# How the admin API forces a chain (its PATCH's field).
FORCE_IN_API = '"force": true'


def force_hint(how_to_force: str) -> str:
    """The end of a refusal that ``how_to_force`` overrides."""
    return f"(use {how_to_force} to set it anyway)"


def after_finish(chain: Chain) -> Chain:
    """The chain after a successful ``/finish``: the first element removed."""
    if current(chain) in BUILTINS:
        raise Conflict(f"nothing to finish: the machine is in state '{current(chain)}'")
    return chain[1:] or (FINISHED,)
