"""Where a request ends (ks.core.framing): what the server's main loop receives before a thread parses it."""

import pytest

from ks.core.framing import Framing, Refused, answered_continue, header_end

MAX = 1000
HEAD = b"POST /update?id=1 HTTP/1.1\r\nHost: x\r\n"


def end_of(data: bytes) -> int | None:
    head = header_end(data)
    assert head, "the header block is complete"
    return Framing(data[:head], MAX).end(data)


@pytest.mark.parametrize(("data", "expected"), [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27),  # no body
    (b"GET / HTTP/1.0\n\nGET", 16),  # bare newlines; a pipelined request behind it
    (HEAD + b"Content-Length: 3\r\n\r\nabcGET", len(HEAD) + 24),
    (HEAD + b"content-length:  3 \r\n\r\nab", None),  # one byte still on its way
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET", len(HEAD) + 43),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n", len(HEAD) + 63),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n", None),  # the last line is missing
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nab", None),
    # What the parser refuses before it reads a body: no body to wait for.
    (HEAD + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\n", len(HEAD) + 40),
    (HEAD + b"Content-Length: -3\r\n\r\n", len(HEAD) + 22),
    (HEAD + b"Transfer-Encoding: gzip\r\n\r\n", len(HEAD) + 27),
])
def test_where_a_request_ends(data, expected):
    assert end_of(data) == expected


@pytest.mark.parametrize(("data", "status"), [
    (HEAD + b"Content-Length: 1001\r\n\r\n", "413 Content Too Large"),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n3e9\r\n", "413 Content Too Large"),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n", "400 Bad Request"),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n", "400 Bad Request"),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcXY", "400 Bad Request"),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"1" * 5000, "400 Bad Request"),
])
def test_requests_refused_before_their_body_is_read(data, status):
    with pytest.raises(Refused) as refused:
        end_of(data)
    assert refused.value.status == status


def test_a_client_that_expects_100_continue_is_told_once():
    head = HEAD + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n"
    assert Framing(head, MAX).expects_continue
    assert answered_continue(head) == HEAD + b"Content-Length: 3\r\n\r\n"
    assert not Framing(head.replace(b"HTTP/1.1", b"HTTP/1.0"), MAX).expects_continue


def test_a_chunked_body_is_read_on_from_where_the_last_look_stopped():
    framing = Framing(HEAD + b"Transfer-Encoding: chunked\r\n\r\n", MAX)
    data = bytearray(HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
    for _ in range(300):  # one byte a chunk, one look a chunk
        data += b"1\r\nx\r\n"
        assert framing.end(data) is None
    data += b"0\r\n\r\n"
    assert framing.end(data) == len(data)
    data[len(HEAD) + 30:len(HEAD) + 35] = b"ZZZZZ"  # the chunks read before are not read again
    assert framing.end(data) == len(data)
