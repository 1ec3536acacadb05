"""Image files: byte ranges, HEAD, conditional requests, content types, X-Accel-Redirect."""

import os

import pytest
from werkzeug.http import http_date

from ks.app import create_app
from ks.boot import files
from ks.boot.files import Answer, Validators

V = Validators(size=100, mtime=1_700_000_000, etag="1-2-64")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", (0, 10)),
        ("bytes=90-", (90, 10)),
        ("bytes=90-1000", (90, 10)),
        ("bytes=-10", (90, 10)),
        ("bytes=-1000", (0, 100)),
        ("bytes=99-99", (99, 1)),
        ("Bytes= 5-6 ", (5, 2)),
        ("bytes=5 - 6", "bad"),
        ("bytes=0-1,5-6", "whole"),
        ("bytes=100-", "bad"),
        ("bytes=100-200", "bad"),
        ("bytes=5-3", "bad"),
        ("bytes=-0", "bad"),
        ("bytes=-", "bad"),
        ("bytes=", "bad"),
        ("bytes=a-b", "bad"),
        ("bytes=0-1,x", "bad"),
        ("bytes=+1-2", "bad"),
        ("bytes 0-1", "bad"),
        ("items=0-1", None),
    ],
)
def test_byte_range(header, expected):
    assert files.byte_range(header, 100) == expected


def test_any_range_of_an_empty_file_is_unsatisfiable():
    assert files.byte_range("bytes=0-", 0) == "bad"
    assert files.byte_range("bytes=-5", 0) == "bad"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, Answer(200, 0, 100)),
        ({"Range": "bytes=10-19"}, Answer(206, 10, 10)),
        ({"Range": "bytes=200-"}, Answer(416)),
        ({"Range": "bytes=0-1,4-5"}, Answer(200, 0, 100)),
        ({"Range": "pages=1"}, Answer(200, 0, 100)),
        ({"If-None-Match": '"1-2-64"'}, Answer(304)),
        ({"If-None-Match": 'W/"1-2-64"'}, Answer(304)),
        ({"If-None-Match": '"other", "1-2-64"'}, Answer(304)),
        ({"If-None-Match": "*"}, Answer(304)),
        ({"If-None-Match": '"other"'}, Answer(200, 0, 100)),
        # If-None-Match decides alone when present, even against a matching date.
        ({"If-None-Match": '"other"', "If-Modified-Since": http_date(V.mtime)}, Answer(200, 0, 100)),
        ({"If-Modified-Since": http_date(V.mtime)}, Answer(304)),
        ({"If-Modified-Since": http_date(V.mtime + 60)}, Answer(304)),
        ({"If-Modified-Since": http_date(V.mtime - 1)}, Answer(200, 0, 100)),
        ({"If-Modified-Since": "yesterday"}, Answer(200, 0, 100)),
        ({"Range": "bytes=10-19", "If-Range": '"1-2-64"'}, Answer(206, 10, 10)),
        ({"Range": "bytes=10-19", "If-Range": 'W/"1-2-64"'}, Answer(200, 0, 100)),
        ({"Range": "bytes=10-19", "If-Range": '"other"'}, Answer(200, 0, 100)),
        ({"Range": "bytes=10-19", "If-Range": http_date(V.mtime)}, Answer(206, 10, 10)),
        ({"Range": "bytes=10-19", "If-Range": http_date(V.mtime - 1)}, Answer(200, 0, 100)),
        ({"Range": "bytes=200-", "If-Range": '"other"'}, Answer(200, 0, 100)),
    ],
)
def test_answer(headers, expected):
    assert files.answer(headers, V) == expected


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("Leap.x86_64-1.15.5.xz", files.BINARY),
        ("pxeboot.kernel", files.BINARY),
        ("initrd", files.BINARY),
        ("rescue.iso", files.BINARY),
        ("Leap.append", files.TEXT),
        ("Leap.sha256", files.TEXT),
        ("Leap.MD5", files.TEXT),
        ("host.ipxe", files.TEXT),
    ],
)
def test_content_type(name, kind):
    assert files.content_type(name) == kind


def test_window_reads_stop_at_its_end(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes(range(100)))
    with open(path, "rb", buffering=0) as f:
        f.seek(10)
        window = files.Window(f, 15)
        assert window.read(10) == bytes(range(10, 20))
        assert window.read() == bytes(range(20, 25))
        assert window.read(10) == b""


# -- through the application ---------------------------------------------------

KERNEL = b"kernel-image1"


def fetch(client, path, method="GET", **kwargs):
    """A response whose body has been read and whose file is closed."""
    r = client.open(path, method=method, **kwargs)
    r.get_data()
    r.close()
    return r


def test_whole_file_with_validators_and_type(client):
    r = fetch(client, "/images/image1/pxeboot.kernel")
    assert (r.status_code, r.data) == (200, KERNEL)
    assert r.headers["Content-Length"] == str(len(KERNEL))
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["ETag"].startswith('"') and r.headers["Last-Modified"]
    text = fetch(client, "/images/image1/Image1.append")
    assert text.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert text.data.startswith(b"rd.kiwi.install.pxe")


def test_head_has_the_headers_of_get_and_no_body(client):
    get = fetch(client, "/images/image1/pxeboot.kernel")
    head = fetch(client, "/images/image1/pxeboot.kernel", method="HEAD")
    assert (head.status_code, head.data) == (200, b"")
    for name in ("Content-Length", "Content-Type", "ETag", "Last-Modified", "Accept-Ranges"):
        assert head.headers[name] == get.headers[name]
    part = fetch(client, "/images/image1/pxeboot.kernel", method="HEAD", headers={"Range": "bytes=0-5"})
    assert (part.status_code, part.data, part.headers["Content-Length"]) == (206, b"", "6")
    assert part.headers["Content-Range"] == f"bytes 0-5/{len(KERNEL)}"


@pytest.mark.parametrize(
    ("header", "body", "content_range"),
    [
        ("bytes=0-5", KERNEL[:6], "bytes 0-5/13"),
        ("bytes=7-", KERNEL[7:], "bytes 7-12/13"),
        ("bytes=-6", KERNEL[-6:], "bytes 7-12/13"),
        ("bytes=12-100", KERNEL[12:], "bytes 12-12/13"),
    ],
)
def test_single_range(client, header, body, content_range):
    r = fetch(client, "/images/image1/pxeboot.kernel", headers={"Range": header})
    assert (r.status_code, r.data, r.headers["Content-Range"]) == (206, body, content_range)
    assert r.headers["Content-Length"] == str(len(body))


@pytest.mark.parametrize("header", ["bytes=13-", "bytes=100-200", "bytes=5-3", "bytes=-0", "bytes=x-1", "bytes"])
def test_invalid_or_unsatisfiable_range_is_416(client, header):
    r = fetch(client, "/images/image1/pxeboot.kernel", headers={"Range": header})
    assert r.status_code == 416
    assert r.headers["Content-Range"] == "bytes */13"
    assert KERNEL not in r.data


def test_several_ranges_get_the_whole_file(client):
    r = fetch(client, "/images/image1/pxeboot.kernel", headers={"Range": "bytes=0-1,5-6"})
    assert (r.status_code, r.data) == (200, KERNEL)


def test_conditional_requests(client):
    full = fetch(client, "/images/image1/pxeboot.kernel")
    etag, modified = full.headers["ETag"], full.headers["Last-Modified"]
    for headers in ({"If-None-Match": etag}, {"If-Modified-Since": modified}):
        cached = fetch(client, "/images/image1/pxeboot.kernel", headers=headers)
        assert (cached.status_code, cached.data) == (304, b"")
        assert cached.headers["ETag"] == etag and "Content-Length" not in cached.headers
    assert fetch(client, "/images/image1/pxeboot.kernel", headers={"If-None-Match": '"old"'}).status_code == 200
    resumed = fetch(client, "/images/image1/pxeboot.kernel", headers={"Range": "bytes=7-", "If-Range": etag})
    assert (resumed.status_code, resumed.data) == (206, KERNEL[7:])
    changed = fetch(client, "/images/image1/pxeboot.kernel", headers={"Range": "bytes=7-", "If-Range": '"old"'})
    assert (changed.status_code, changed.data) == (200, KERNEL)


def test_replacing_a_file_changes_its_etag(client, root):
    before = fetch(client, "/images/image1/pxeboot.kernel").headers["ETag"]
    kernel = root / "images" / "image1" / "pxeboot.kernel"
    stat = kernel.stat()
    replacement = kernel.with_name("new")
    replacement.write_bytes(b"kernel-IMAGE1")  # same size, same time, other content
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    replacement.replace(kernel)
    r = fetch(client, "/images/image1/pxeboot.kernel", headers={"If-None-Match": before})
    assert (r.status_code, r.data) == (200, b"kernel-IMAGE1")


def test_empty_file(client, root):
    (root / "images" / "image1" / "empty").write_bytes(b"")
    r = fetch(client, "/images/image1/empty")
    assert (r.status_code, r.data, r.headers["Content-Length"]) == (200, b"", "0")
    assert fetch(client, "/images/image1/empty", headers={"Range": "bytes=0-"}).status_code == 416


@pytest.fixture
def accel_client(root, database_url):
    app = create_app({"ROOT": str(root), "DATABASE_URL": database_url, "X_ACCEL_REDIRECT": "/_images/"})
    yield app.test_client()
    app.extensions["kiwispray"].db.dispose()


def test_x_accel_redirect_names_the_checked_file(accel_client, root):
    (root / "images" / "image1" / "odd name?.iso").write_bytes(b"iso")
    r = fetch(accel_client, "/images/image1/pxeboot.kernel")
    assert (r.status_code, r.data) == (200, b"")
    assert r.headers["X-Accel-Redirect"] == "/_images/image1/pxeboot.kernel"
    # A link inside the image is resolved here, so nginx never follows one.
    assert (
        fetch(accel_client, "/images/image1/Image1.kernel").headers["X-Accel-Redirect"]
        == "/_images/image1/pxeboot.kernel"
    )
    assert (
        fetch(accel_client, "/images/image1/odd%20name%3F.iso").headers["X-Accel-Redirect"]
        == "/_images/image1/odd%20name%3F.iso"
    )


@pytest.mark.parametrize(
    "path", ["/images/../kiwispray.db", "/images/image1/missing", "/images//etc/passwd", "/images/image1"]
)
def test_x_accel_redirect_keeps_the_path_rules(accel_client, path):
    r = fetch(accel_client, path)
    assert r.status_code == 404 and "X-Accel-Redirect" not in r.headers


def test_x_accel_redirect_prefix_must_be_a_path(root):
    from ks.core.errors import ConfigError

    with pytest.raises(ConfigError, match="must be a path"):
        create_app({"ROOT": str(root), "X_ACCEL_REDIRECT": "_images"})
