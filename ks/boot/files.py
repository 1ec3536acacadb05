"""Image files at the speed of the machine: zero-copy downloads, byte ranges, conditional requests.

``answer`` decides from the request's headers and the file's validators alone
what a GET or HEAD gets (no I/O). ``send`` builds the response: its body is the
open file, positioned at the first byte to send and announced with its
Content-Length, handed to the server's ``wsgi.file_wrapper``; ``kiwispray serve``
then sends exactly that many bytes from that offset with ``os.sendfile`` and no
Python code touches them.

Decisions (RFC 9110), documented in docs/performance.md:

- one byte range: 206; several ranges: the whole file with 200 (allowed, and
  no boot client asks for several); a range in a unit other than bytes is ignored;
- a malformed or unsatisfiable range: 416 with ``Content-Range: bytes */SIZE``;
- HEAD gets the headers GET would get, ranges included (as nginx does);
- If-None-Match (weak comparison), else If-Modified-Since: 304; If-Range with a
  strong ETag or the exact Last-Modified date, else the whole file;
- If-Match and If-Unmodified-Since are not evaluated: they guard changes, and
  nothing changes image files over HTTP.
"""

import io
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from flask import Response
from werkzeug.datastructures import EnvironHeaders, Headers
from werkzeug.http import http_date, parse_date, parse_etags, parse_if_range_header, quote_etag
from werkzeug.wsgi import wrap_file

from ks.web import SEND_TIMEOUT

# Files that are read by people and scripts; everything else (disks, kernels,
# initrds, ISOs) is bytes to the client.
TEXT_SUFFIXES = (".append", ".md5", ".sha256", ".sha512", ".packages", ".verified", ".changes",
                 ".txt", ".json", ".ipxe", ".tmpl", ".sh", ".cfg")
TEXT, BINARY = "text/plain; charset=utf-8", "application/octet-stream"
# Read size when the server cannot sendfile (TLS, HTTP/2, the test client).
READ_SIZE = 256 * 1024
_SPEC = re.compile(r"(\d*)-(\d*)")


@dataclass(frozen=True)
class Validators:
    """What identifies one version of a file: size, modification time, ETag."""

    size: int
    mtime: int
    etag: str

    @classmethod
    def of(cls, st: os.stat_result) -> "Validators":
        """Validators from ``os.stat``; the inode tells a replaced file of equal size and time apart."""
        return cls(st.st_size, int(st.st_mtime), f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}")


@dataclass(frozen=True)
class Answer:
    """The status of a file request and the bytes it sends."""

    status: int
    start: int = 0
    length: int = 0


def byte_range(header: str, size: int) -> tuple[int, int] | str | None:
    """The (start, length) a Range header asks for; "whole" for several ranges, "bad" for 416, None to ignore."""
    unit, equals, specs = header.partition("=")
    if not equals:
        return "bad"
    if unit.strip().lower() != "bytes":
        return None
    matches = [_SPEC.fullmatch(spec.strip()) for spec in specs.split(",")]
    ranges = [m for m in matches if m is not None and m.groups() != ("", "")]
    if len(ranges) != len(matches):
        return "bad"
    if len(ranges) > 1:
        return "whole"
    first, last = ranges[0].groups()
    if first == "":  # the last N bytes
        length = min(int(last), size)
        return (size - length, length) if length > 0 else "bad"
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or (last != "" and int(last) < start):
        return "bad"
    return start, end - start + 1


def answer(headers: Headers | Mapping[str, str], v: Validators) -> Answer:
    """What a GET or HEAD with these request headers gets for a file with validators ``v``."""
    if not_modified(headers, v):
        return Answer(304)
    whole = Answer(200, 0, v.size)
    header = headers.get("Range")
    if not header or not if_range_holds(headers.get("If-Range"), v):
        return whole
    wanted = byte_range(header, v.size)
    if wanted is None or wanted == "whole":
        return whole
    if wanted == "bad":
        return Answer(416)
    return Answer(206, *wanted)


def not_modified(headers: Headers | Mapping[str, str], v: Validators) -> bool:
    """If-None-Match decides when present (weak comparison), else If-Modified-Since."""
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        etags = parse_etags(if_none_match)
        return etags.star_tag or etags.contains_weak(v.etag)
    since = parse_date(headers.get("If-Modified-Since"))
    return since is not None and v.mtime <= since.timestamp()


def if_range_holds(value: str | None, v: Validators) -> bool:
    """A range is served only while If-Range names this version: a strong ETag or the exact date."""
    if value is None:
        return True
    condition = parse_if_range_header(value)
    if condition.etag is not None:
        return not value.lstrip().startswith("W/") and condition.etag == v.etag
    return condition.date is not None and int(condition.date.timestamp()) == v.mtime


def content_type(name: str) -> str:
    """text/plain for the command lines and checksums of an image, octet-stream for the rest."""
    return TEXT if name.lower().endswith(TEXT_SUFFIXES) else BINARY


class Window:
    """``length`` bytes of an open file from its current offset, as ``wsgi.file_wrapper`` takes it.

    The server sends from ``fileno()``'s offset for Content-Length bytes with
    ``os.sendfile``; a server that cannot reads instead, and ``read`` stops at the
    end of the window rather than at the end of the file.
    """

    def __init__(self, file, length: int, on_close: Callable[[int, float], None] | None = None,
                 progress: Callable[[int], None] | None = None):
        self.file = file
        self.progress = progress
        self.start = file.tell()
        self.sent = 0  # how far a sendfile or read got, for on_close
        self.remaining = length
        self.on_close = on_close
        self.opened = time.monotonic()

    def fileno(self) -> int:
        if self.progress is not None:  # counted as it goes: the server reads, see ``read``
            raise io.UnsupportedOperation("a counted download is sent in chunks")
        return self.file.fileno()

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes, never past the window."""
        size = self.remaining if size < 0 else min(size, self.remaining)
        data = self.file.read(size) if size else b""
        self.remaining -= len(data)
        self.sent += len(data)
        if self.progress is not None:
            self.progress(self.sent)
        return data

    def seek(self, offset: int) -> int:
        """Where ``socket.sendfile`` (the server's) got: it seeks past the last byte it sent, even on an error."""
        self.sent = offset - self.start
        return self.file.seek(offset)

    def close(self) -> None:
        """Close the file; ``on_close(bytes sent, seconds)`` learns how far the download got."""
        self.file.close()
        if self.on_close is not None:
            self.on_close(self.sent, time.monotonic() - self.opened)


def send(environ: dict, path: Path, send_timeout: float | None = None,
         on_close: Callable[[int, int, float], None] | None = None,
         track: Callable[[int], Callable[[int], None] | None] | None = None) -> Response:
    """The response to a GET or HEAD of ``path`` (already checked to be a servable file).

    ``on_close(bytes sent, file size, seconds)`` is called when a GET of the whole
    file ends, complete or not. ``track(file size)``, asked when a GET of the whole
    file starts, may return ``progress(bytes sent)``: the file then goes out in
    chunks of ``READ_SIZE`` read by the server (not zero-copy), each counted.
    """
    file = open(path, "rb", buffering=0)
    try:
        v = Validators.of(os.fstat(file.fileno()))
        result = answer(EnvironHeaders(environ), v)
        if result.length and environ["REQUEST_METHOD"] != "HEAD":
            file.seek(result.start)
            _limit_stall(environ, send_timeout)
            done = counted = None
            if on_close is not None and result.status == 200:
                def done(sent: int, seconds: float) -> None:
                    on_close(sent, v.size, seconds)
            if track is not None and result.status == 200:
                counted = track(v.size)
            # PEP 3333's wsgi.file_wrapper takes any object with read() (and uses fileno());
            # werkzeug's annotation asks for a whole IO[bytes], which a window of a file is not.
            body = wrap_file(environ, Window(file, result.length, done, counted), READ_SIZE)  # type: ignore[arg-type]
            return respond(result, v, path.name, body)
    except BaseException:
        file.close()
        raise
    file.close()  # the answer has no body
    return respond(result, v, path.name)


def respond(result: Answer, v: Validators, name: str, body=None) -> Response:
    """The response for ``result``; ``body``, a file wrapper, goes to the server untouched."""
    headers = {"ETag": quote_etag(v.etag), "Last-Modified": http_date(v.mtime),
               "Accept-Ranges": "bytes", "Cache-Control": "no-cache"}
    if result.status == 416:
        headers["Content-Range"] = f"bytes */{v.size}"
        return Response(
            f"416 Range Not Satisfiable: the file has {v.size} bytes\n", 416, headers, mimetype="text/plain"
        )
    if result.status == 304:
        return Response(status=304, headers=headers)
    headers["Content-Type"] = content_type(name)
    headers["Content-Length"] = str(result.length)
    if result.status == 206:
        headers["Content-Range"] = f"bytes {result.start}-{result.start + result.length - 1}/{v.size}"
    return Response(body, result.status, headers, direct_passthrough=body is not None)


def _limit_stall(environ: dict, seconds: float | None) -> None:
    # Each download holds one server thread until its last byte is sent. A
    # machine powered off mid-download (or a client that stops reading) would
    # hold it for TCP's retransmission limit, a quarter of an hour; with a
    # timeout, a send that makes no progress for this long ends the connection.
    # The limit ends with the request (see ks.web.SEND_TIMEOUT).
    limit = environ.get(SEND_TIMEOUT)
    if limit is not None and seconds:
        limit(seconds)


def accel_redirect(prefix: str, relative: str) -> Response:
    """An empty answer that tells nginx to send ``<prefix>/<relative>`` itself (X-Accel-Redirect)."""
    headers = {"X-Accel-Redirect": f"{prefix.rstrip('/')}/{quote(relative)}"}
    return Response(status=200, headers=headers, content_type=content_type(relative))

