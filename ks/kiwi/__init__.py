"""Importing and checking KIWI build results, without any user interface.

* ``sources``   fetch a URL, tell a directory, tar archive and ISO apart, unpack safely
* ``checksum``  KIWI's ``<P>.md5|sha256|sha512`` files and the streamed check of ``<P>.xz``
* ``live``      kernel and initrd out of a live ISO (pycdlib, no mounts)
* ``importer``  ``images/<name>/`` built in a scratch directory, then renamed into place
* ``inventory`` what an image directory is and what it lacks (``image list|check``)

Long steps report through a *progress* callable: ``progress(label, total)``
returns a context manager whose value has ``update(nbytes)``; ``total`` is
None when the size is unknown. ``click.progressbar`` fits; ``silent`` is the
default.
"""

from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from ks.boot import images

CHUNK = 1024 * 1024
# Imports name the boot files as ks.boot.images looks for them first, so that the
# generic template finds them whatever KIWI called them.
KERNEL, INITRD = images.KERNEL_NAMES[0], images.INITRD_NAMES[0]


class Bar(Protocol):
    """What a progress context manager yields."""

    def update(self, n_steps: int) -> None: ...


Progress = Callable[[str, int | None], AbstractContextManager[Bar]]


class _NoBar:
    def update(self, n_steps: int) -> None:
        pass


@contextmanager
def silent(label: str, total: int | None):
    """A progress callable that shows nothing."""
    yield _NoBar()
