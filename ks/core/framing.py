"""Where a request ends in the bytes a client sent: its header block, then its body (pure, no I/O).

The server's main loop receives a whole request — headers and body — before a
thread parses it, so that a client that sends slowly holds no thread. This
module only finds the request's end; the HTTP parser still reads and checks
the request itself, and refuses what is malformed there (a 400).
"""

import re

# A header block longer than this is refused (431).
MAX_HEADER_BYTES = 64 * 1024
# A chunk-size line (with extensions) longer than this is refused (400).
MAX_CHUNK_LINE = 4096
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_CONTINUE = re.compile(rb"\r?\n[Ee][Xx][Pp][Ee][Cc][Tt][ \t]*:[ \t]*100-continue[ \t]*(?=\r?\n)")


class Refused(Exception):
    """A request answered by the main loop without reading further: its status line, e.g. ``413 Content Too Large``."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


def header_end(data: bytes | bytearray) -> int:
    """Where the first header block in ``data`` ends (0: not yet complete)."""
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := data.find(sep)) >= 0]
    return min(ends, default=0)


class Framing:
    """How the body of one request is delimited, read from its header block."""

    def __init__(self, head: bytes | bytearray, max_body: int):
        self.head = len(head)
        self.length = 0  # Content-Length; 0 for no body
        self.chunked = False
        self.expects_continue = False
        lengths, codings = set(), []
        lines = bytes(head).decode("latin-1").splitlines()
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                continue
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                lengths.add(value)
            elif name == "transfer-encoding":
                codings += [c.strip().lower() for c in value.split(",")]
            elif name == "expect" and value.lower() == "100-continue":
                self.expects_continue = lines[0].rstrip().endswith("HTTP/1.1")
        if codings:
            # The parser refuses anything but a body chunked last (and Content-Length beside it), before any body.
            self.chunked = codings[-1] == "chunked" and not lengths
        elif len(lengths) == 1 and (value := lengths.pop()).isdigit():
            self.length = int(value)
            if self.length > max_body:
                raise Refused("413 Content Too Large")
        # Several or malformed lengths: the parser refuses the header block before any body.
        self.max_body = max_body
        # Where the chunks read so far end, and their body bytes: each look goes on from there, so a
        # body sent in many small pieces is read once, not once per piece.
        self._chunks: tuple[int, int] | None = None

    def end(self, data: bytes | bytearray) -> int | None:
        """Where the request that starts ``data`` ends; None while its body is still on its way."""
        if not self.chunked:
            end = self.head + self.length
            return end if len(data) >= end else None
        return self._chunked_end(data)

    def _chunked_end(self, data: bytes | bytearray) -> int | None:
        pos, body = self._chunks or (self.head, 0)
        while True:
            line_end = data.find(b"\n", pos, pos + MAX_CHUNK_LINE)
            if line_end < 0:
                if len(data) - pos >= MAX_CHUNK_LINE:
                    raise Refused("400 Bad Request")
                return None
            size_text = bytes(data[pos:line_end]).split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_text):
                raise Refused("400 Bad Request")
            size = int(size_text, 16)
            pos = line_end + 1
            if size == 0:
                return self._trailers_end(data, pos)
            body += size
            if body > self.max_body:
                raise Refused("413 Content Too Large")
            pos += size
            if len(data) < pos + 2:
                return None
            if data[pos:pos + 2] == b"\r\n":
                pos += 2
            elif data[pos:pos + 1] == b"\n":
                pos += 1
            else:
                raise Refused("400 Bad Request")
            self._chunks = (pos, body)

    @staticmethod
    def _trailers_end(data: bytes | bytearray, pos: int) -> int | None:
        while True:
            line_end = data.find(b"\n", pos)
            if line_end < 0:
                if len(data) - pos > MAX_HEADER_BYTES:
                    raise Refused("431 Request Header Fields Too Large")
                return None
            if not data[pos:line_end].strip():
                return line_end + 1
            pos = line_end + 1


def answered_continue(head: bytes | bytearray) -> bytes:
    """The header block without its ``Expect: 100-continue``, once the main loop has sent the 100 itself."""
    return _CONTINUE.sub(b"", bytes(head), count=1)
