"""How ``kiwispray serve`` logs: text for people (the default) or one JSON object per line.

Both formats stamp every line, KIWIspray's and gunicorn's alike, with one kind
of time: ISO 8601 in UTC with milliseconds. JSON lines carry ``time``,
``level``, ``logger`` and ``message``, plus the
structured fields a log call passes in ``extra`` (boot decisions: ``event``,
``host_id``, ``state``, ``template``) and, for gunicorn's access log, the
request's fields. Bootids never reach a log: the access log shows them as
``bootid=-``, in both formats, however the client spelled the parameter's name
(``boot%69d=`` is ``bootid=`` to the application too); gunicorn's own messages,
which may quote a raw request line, are redacted the same way and cut short.
"""

import json
import logging
import re
from datetime import datetime, timezone
from urllib.parse import unquote_plus

from gunicorn import glogging

TEXT, JSON = "text", "json"
TEXT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
# gunicorn's default access line without its own time (%(t)s): the line's time says it.
ACCESS_FORMAT = '%(h)s %(l)s %(u)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

# Query parameters whose values never reach a log, compared by their decoded name in any case.
SECRET_PARAMS = frozenset({"bootid"})
# name=value in a query string, a request line or a message quoting one.
_PARAM = re.compile(r"(?<![^?&;\s\"'])([^=&;?/\s\"']+)=([^&;\s\"']*)")
# Longest gunicorn message logged whole; a raw request line can be kilobytes of anything.
MAX_MESSAGE = 512
# Attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# gunicorn's access-log atoms worth a field of their own.
_ACCESS_FIELDS = {"remote": "h", "method": "m", "path": "U", "query": "q", "status": "s", "bytes": "B",
                  "duration_ms": "M", "user_agent": "a"}


def hide_bootids(text: str) -> str:
    """The text with the value of every secret parameter (``bootid=``, however encoded) replaced by ``-``."""
    return _PARAM.sub(_hide, text)


def _hide(match: re.Match) -> str:
    name = match.group(1)
    for _ in range(3):  # a name encoded twice is not the parameter, but costs nothing to hide
        name = unquote_plus(name)
    return f"{match.group(1)}=-" if name.strip().lower() in SECRET_PARAMS else match.group(0)


class RedactFilter(logging.Filter):
    """gunicorn's error log: messages without secret parameters, at most ``MAX_MESSAGE`` characters."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = hide_bootids(record.getMessage())
        if len(message) > MAX_MESSAGE:
            message = f"{message[:MAX_MESSAGE]}... ({len(message)} characters)"
        record.msg, record.args = message, ()
        return True


def timestamp(record: logging.LogRecord) -> str:
    """When the record was made: ISO 8601, UTC, milliseconds (``2026-11-22T00:07:00.259+00:00``)."""
    return datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")


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
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            document.update({key: record.args.get(atom) for key, atom in _ACCESS_FIELDS.items()})
        document.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of a log format."""
    return JsonFormatter() if log_format == JSON else TextFormatter()


def setup(log_format: str) -> None:
    """Send our own records to stderr, as text or JSON."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


class GunicornLogger(glogging.Logger):
    """gunicorn's error and access logs, without bootids, in the chosen format (ours, not gunicorn's)."""

    log_format = TEXT

    def setup(self, cfg) -> None:
        super().setup(cfg)
        self.error_log.addFilter(RedactFilter())
        for handler in self.error_log.handlers + self.access_log.handlers:
            handler.setFormatter(formatter(self.log_format))

    def atoms(self, resp, req, environ, request_time) -> dict:
        # The request line, the query and the environment all carry the query string.
        return {key: hide_bootids(value) if isinstance(value, str) else value
                for key, value in super().atoms(resp, req, environ, request_time).items()}


class JsonGunicornLogger(GunicornLogger):
    """gunicorn's logs as JSON lines."""

    log_format = JSON


def gunicorn_logger(log_format: str) -> type[GunicornLogger]:
    """The gunicorn ``logger_class`` for a log format."""
    return JsonGunicornLogger if log_format == JSON else GunicornLogger
