"""The site's database, opened with its listeners: the server and every command open it here.

A state change therefore has the same consequences wherever it is made (the
PXELINUX links follow it), and a command opens it without the web application.
"""

from ks.boot import pxelinux
from ks.core.config import Settings
from ks.records.db import Database


def open_database(settings: Settings) -> Database:
    """The site's database, with PXELINUX links kept up to date if configured."""
    db = Database(settings.database_url)
    pxelinux.attach(db, settings)
    return db
