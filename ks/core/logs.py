"""How ``kiwispray serve`` logs: text for people (the default) or one JSON object per line.

Both formats stamp every line, KIWIspray's and the HTTP server's alike, with one
kind of time: ISO 8601 in UTC with milliseconds. JSON lines carry ``time``,
``level``, ``logger`` and ``message``, plus the structured fields a record
carries as attributes: what a log call passes in ``extra`` (boot decisions:
``event``, ``host_id``, ``state``, ``template``) and, on access lines, the
request's fields (``ks.server`` sets them). Bootids never reach a log: the
access log shows them as ``bootid=-``, in both formats, however the client
spelled the parameter's name (``boot%69d=`` is ``bootid=`` to the application
too), and the bootid segment of a NoCloud seed or Ignition URL as ``/nocloud/<id>/-/``;
the server's own messages, which may quote a raw request line, are
redacted the same way and cut short.
"""

import json
import logging
import re
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from urllib.parse import unquote_plus

TEXT, JSON = "text", "json"
TEXT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"

# Query parameters whose values never reach a log, compared by their decoded name in any case.
SECRET_PARAMS = frozenset({"bootid"})
# name=value in a query string, a request line or a message quoting one.
_PARAM = re.compile(r"(?<![^?&;\s\"'])([^=&;?/\s\"']+)=([^&;\s\"']*)")
# /<segment>/<id>/<secret>, looked for at every '/' (a URL's host may come first).
_PATH = re.compile(r"(?=/([^/\s?\"']+)/([^/\s?\"']+)/([^/\s?\"']+))")
# Paths that carry a bootid as their third segment (ks.boot.views's NoCloud seed and Ignition config), by their
# decoded first segment.
SECRET_PATHS = frozenset({"nocloud", "ignition"})
# Longest server message logged whole; a raw request line can be kilobytes of anything.
MAX_MESSAGE = 512
# Attributes every LogRecord has; anything else came in through ``extra`` or a filter (ks.server's access fields).
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def hide_bootids(text: str) -> str:
    """The text with every bootid (``bootid=``, ``/nocloud/<id>/<bootid>``, however encoded) replaced by ``-``."""
    text = _PARAM.sub(_hide, text)
    secrets = [match.span(3) for match in _PATH.finditer(text) if _decoded(match.group(1)) in SECRET_PATHS]
    for start, end in reversed(secrets):
        text = text[:start] + "-" + text[end:]
    return text


def _decoded(name: str) -> str:
    for _ in range(3):  # a name encoded twice is not the parameter, but costs nothing to hide
        name = unquote_plus(name)
    return name.strip().lower()


def _hide(match: re.Match) -> str:
    return f"{match.group(1)}=-" if _decoded(match.group(1)) in SECRET_PARAMS else match.group(0)


class RedactFilter(logging.Filter):
    """The server's error log: messages without secret parameters, at most ``MAX_MESSAGE`` characters."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = hide_bootids(record.getMessage())
        if len(message) > MAX_MESSAGE:
            message = f"{message[:MAX_MESSAGE]}... ({len(message)} characters)"
        record.msg, record.args = message, ()
        return True


def timestamp(record: logging.LogRecord) -> str:
    """When the record was made: ISO 8601, UTC, milliseconds (``2026-11-22T00:07:00.259+00:00``)."""
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` lines with the same timestamps as the JSON lines."""

    def __init__(self):
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt=None) -> str:
        return timestamp(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        document.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of a log format."""
    return JsonFormatter() if log_format == JSON else TextFormatter()


def setup(log_format: str) -> None:
    """Send our own records to stderr, as text or JSON.

    A record then skips what no line shows: the source file and line of the
    call (a walk up the stack for each record), the thread and the
    multiprocessing process (the logging HOWTO's "Optimization").
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


class Throttle:
    """Whether a repeated message is logged now: once per ``seconds`` and key, with the count held back since.

    A flood (refused streams, a database that refuses work, failed logins) then
    writes one line a while that says how many there were, instead of a line each.
    With ``kept``, at most so many keys are remembered, the least recently seen
    forgotten first (keys a client chooses, such as its address); 0: all.
    """

    def __init__(self, seconds: float, clock=time.monotonic, kept: int = 0):
        self.seconds = seconds
        self.clock = clock
        self.kept = kept
        # key: (when its last line was written, held back since), the most recently seen last
        self._last: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def due(self, key: str) -> int | None:
        """None: hold this one back (it is counted); else log it now, saying how many were held back before it."""
        with self._lock:
            now = self.clock()
            said, held = self._last.pop(key, (None, 0))
            while self.kept and len(self._last) >= self.kept:
                self._last.popitem(last=False)
            if said is not None and now - said < self.seconds:
                self._last[key] = (said, held + 1)
                return None
            self._last[key] = (now, 0)
            return held
