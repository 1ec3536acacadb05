"""The database of a site with everything that follows its commits attached.

Both the server and the commands open their database here, so a state change
has the same consequences wherever it is made.
"""

from ks import pxelinux
from ks.config import Settings
from ks.db import Database


def open_database(settings: Settings) -> Database:
    """The site's database, with PXELINUX links kept up to date if configured."""
    db = Database(settings.database_url)
    pxelinux.attach(db, settings)
    return db
