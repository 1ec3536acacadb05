"""images/<name>/kiwispray.toml: an image's own deploy timeout, and what a broken file does."""

import logging

import pytest

from ks.boot import images


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, 3600),
        ("deploy_timeout = 5400\n", 5400),
        ("deploy_timeout = 0  # no limit\n", 0),
        ("# nothing about timeouts\n", 3600),
    ],
)
def test_deploy_timeout(root, content, expected):
    if content is not None:
        (root / "images" / "image1" / images.SETTINGS_FILE).write_text(content)
    assert images.deploy_timeout(root, "image1", 3600) == expected


@pytest.mark.parametrize("content", ["deploy_timeout = \n", "deploy_timeout = -5\n", 'deploy_timeout = "1h"\n',
                                     "deploy_timeout = true\n", b"\xff\xfe"])
def test_a_broken_file_is_reported_and_the_default_applies(root, caplog, content):
    path = root / "images" / "image1" / images.SETTINGS_FILE
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with caplog.at_level(logging.WARNING, "ks.boot.images"):
        assert images.deploy_timeout(root, "image1", 3600) == 3600
    assert str(path) in caplog.text


def test_the_boot_path_reads_each_file_at_most_every_ttl_seconds(root):
    timeouts = images.DeployTimeouts(root, 3600, ttl=60)
    assert timeouts("image1") == 3600
    (root / "images" / "image1" / images.SETTINGS_FILE).write_text("deploy_timeout = 60\n")
    assert timeouts("image1") == 3600  # cached
    assert images.DeployTimeouts(root, 3600, ttl=0)("image1") == 60


def test_an_image_is_read_again_when_its_directory_or_append_changes(tmp_path):
    """``images.load`` keeps what it read while the directory and its .append are unchanged."""
    import os
    import time

    from ks.boot import images

    directory = tmp_path / "images" / "img"
    directory.mkdir(parents=True)
    (directory / "P.append").write_text("console=ttyS0\n")
    (directory / "P.xz").write_bytes(b"disk")
    old = time.time() - 10
    for path in (directory / "P.append", directory):
        os.utime(path, (old, old))
    first = images.load(tmp_path, "img")
    assert first is not None and first.kernel is None and first.append == "console=ttyS0"
    assert images.load(tmp_path, "img") is first  # kept

    (directory / "pxeboot.kernel").write_bytes(b"kernel")  # the directory changes
    second = images.load(tmp_path, "img")
    assert second is not first and second.kernel == "pxeboot.kernel"
    (directory / "pxeboot.kernel").write_bytes(b"kernel")
    assert images.load(tmp_path, "img").kernel == "pxeboot.kernel"  # a fresh change: read every time

    os.utime(directory, (old, old))
    third = images.load(tmp_path, "img")
    (directory / "P.append").write_text("console=ttyS1\n")  # in place: the directory's time stays
    os.utime(directory, (old, old))
    assert images.load(tmp_path, "img").append == "console=ttyS1"
    assert third.append == "console=ttyS0"
    (directory / "pxeboot.kernel").unlink()
    assert images.load(tmp_path, "img").kernel is None
