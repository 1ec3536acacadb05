"""The dashboard in a real browser (Debian's chromium through chromium-driver) against a real ``kiwispray serve``.

Nothing is downloaded at run time: selenium is pointed at /usr/bin/chromedriver
and /usr/bin/chromium (SE_OFFLINE keeps selenium-manager from looking for
others), and axe-core is the copy committed under tests/vendor/axe-core
(scripts/vendor-axe-core.sh). Screenshots go to ``$KS_TEST_ARTEFACTS`` if set,
else to ``screenshots/`` in the test's temporary directory; the path is printed.
"""

import http.client
import os
import threading
import time
from pathlib import Path

import pytest
import requests

from ks.core import config, vault
from ks.core.roles import Role
from ks.fleet import tokens, webhooks
from ks.records import migrate
from ks.records.db import Database

from helpers import MAC1, MAC2, bootid_of, make_image, require_command, run_edit_host, wait_for
from server import ServerProcess

pytestmark = pytest.mark.e2e

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
DISK_SIZE = 48 * 1024 * 1024  # far more than the loopback socket buffers hold
MACHINE_ADDRESS = "127.0.0.2"  # the installing machine: downloads are told apart by the client's address
CHUNK, PAUSE = 256 * 1024, 0.05  # the slow client: about 5 MB/s


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> Path:
    where = Path(os.environ.get("KS_TEST_ARTEFACTS") or tmp_path_factory.mktemp("screenshots"))
    where.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the dashboard: {where}")
    return where


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A real server with two images (image1's disk large), a token of each role, and a webhook with a log."""
    base = tmp_path_factory.mktemp("ui")
    root = base / "site"
    root.mkdir()
    make_image(root, "wipe", "Wipe")
    make_image(root, "image1")
    with open(root / "images" / "image1" / "Image1.xz", "wb") as disk:
        disk.truncate(DISK_SIZE)
    db = Database(f"sqlite:///{root / 'kiwispray.db'}")
    migrate.upgrade(db)
    made = {role: db.write(lambda session, role=role: tokens.create(session, role.label, role)) for role in Role}
    keys = vault.of(config.resolve({"ROOT": str(root)}))
    db.write(lambda session: add_webhook(session, keys))
    db.dispose()
    with ServerProcess(root) as server:
        yield {"root": root, "server": server, "tokens": made}


def add_webhook(session, keys) -> None:
    """A webhook for ``import`` events (none happen here: the server sends it nothing), with a delivery log."""
    hook, _ = webhooks.add(session, "https://ci.example/kiwispray", ("import",), None, keys)
    webhooks.record_attempt(session, hook.id, 1, 1, None, "connection refused")
    webhooks.record_attempt(session, hook.id, 1, 2, 200, "")


@pytest.fixture
def browser(tmp_path, monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = require_command("chromium", "chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,1000"):
        options.add_argument(flag)
    service = Service(executable_path=require_command("chromedriver", "chromium-driver"),
                      log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def log_in(driver, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/ui/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login").click()
    wait_for(lambda: driver.find_elements(By.ID, "logout"), 15, "the dashboard after logging in")


def boot_from(server: ServerProcess, address: str, mac: str, serial: str) -> str:
    """GET /bootstrap as iPXE would, from ``address`` (a loopback address); returns the script."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10, source_address=(address, 0))
    try:
        connection.request("GET", f"/bootstrap?net0={mac}&serial={serial}")
        response = connection.getresponse()
        assert response.status == 200
        return response.read().decode()
    finally:
        connection.close()


def slow_download(server: ServerProcess, address: str, path: str, done: dict) -> None:
    """Read the image's disk slowly, as an installer on a slow link would."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60, source_address=(address, 0))
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        total = 0
        while chunk := response.read(CHUNK):
            total += len(chunk)
            time.sleep(PAUSE)
        done["bytes"] = total
    finally:
        connection.close()


def text_of(driver, css: str) -> str:
    """The text of the first element matching ``css`` now (read in one step: live updates replace elements)."""
    return driver.execute_script("const e = document.querySelector(arguments[0]);"
                                 "return e ? e.textContent.replace(/\\s+/g, ' ').trim() : '';", css)


def test_an_operator_session_from_login_to_logout(site, browser, artefacts):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    server, root = site["server"], site["root"]
    # A boot flow through the real server creates the hosts the dashboard shows.
    boot_from(server, "127.0.0.1", MAC1, "WEB1")
    boot_from(server, MACHINE_ADDRESS, MAC2, "WEB2")
    log_in(browser, server.url, site["tokens"][Role.ADMIN])
    browser.save_screenshot(str(artefacts / "overview.png"))
    assert browser.find_element(By.ID, "host-1") and browser.find_element(By.ID, "host-2")
    assert "WEB" not in text_of(browser, "#host-1 .chain")

    # Set a chain from the dashboard; edit-host -l shows it.
    browser.find_element(By.ID, "select-1").click()
    Select(browser.find_element(By.ID, "chain")).select_by_value("wipe")
    browser.find_element(By.ID, "action-set-chain").click()
    wait_for(lambda: browser.find_elements(By.ID, "confirm"), 15, "the confirmation page")
    browser.save_screenshot(str(artefacts / "confirm.png"))
    browser.find_element(By.ID, "confirm").click()
    wait_for(lambda: "host 1: chain set" in browser.page_source, 15, "the change's message")
    listed = run_edit_host(root, "-l").stdout.splitlines()
    assert listed[1].split()[:3] == ["1", "not-set", "wipe"], listed

    # Host 2 installs image1: its progress bar moves while a slow client downloads the disk.
    run_edit_host(root, "-i", "2", "-s", "image1")
    script = boot_from(server, MACHINE_ADDRESS, MAC2, "WEB2")
    bootid = bootid_of(script)
    browser.get(server.url + "/ui/")
    wait_for(lambda: text_of(browser, "#live") == "live", 15, "the live updates")
    wait_for(lambda: "booted" in text_of(browser, "#host-2 .progress-cell"), 15, "host 2 booted")
    browser.execute_script("window.kiwisprayNotReloaded = true;")
    done: dict = {}
    reader = threading.Thread(target=slow_download, args=(server, MACHINE_ADDRESS, "/images/image1/Image1.xz", done))
    reader.start()
    seen = set()
    shot = False
    deadline = time.monotonic() + 60
    while reader.is_alive() and time.monotonic() < deadline:
        value = browser.execute_script("const b = document.querySelector('#host-2 progress');"
                                       "return b ? b.value : null;")
        if value is not None:
            value = int(value)
            if 0 < value < 100:
                seen.add(value)
                if not shot and len(seen) >= 2:
                    browser.save_screenshot(str(artefacts / "progress.png"))
                    shot = True
        time.sleep(0.2)
    reader.join(60)
    assert done.get("bytes") == DISK_SIZE
    assert len(seen) >= 2, f"the bar showed {sorted(seen)} while the disk went out"
    wait_for(lambda: text_of(browser, "#host-2 .progress-cell") == "downloaded", 15, "host 2 downloaded")

    # The installed system calls back; the page shows host 2 finished without a reload.
    requests.get(server.url + "/post-install", params={"id": 2, "bootid": bootid}, timeout=10).raise_for_status()
    wait_for(lambda: "post-install fetched" in text_of(browser, "#host-2 .progress-cell"), 15, "post-install")
    requests.get(server.url + "/finish", params={"id": 2, "bootid": bootid}, timeout=10).raise_for_status()
    wait_for(lambda: text_of(browser, "#host-2 .chain") == "finished", 15, "host 2 finished")
    assert text_of(browser, "#host-2 .progress-cell") == "finished"
    assert browser.execute_script("return window.kiwisprayNotReloaded === true;")
    browser.save_screenshot(str(artefacts / "finished.png"))
    # A machine seen for the first time is announced (and counted) without a reload.
    boot_from(server, "127.0.0.1", "52-54-00-00-00-07", "WEB7")
    wait_for(lambda: "1 new host registered" in text_of(browser, "#new-hosts"), 15, "the new host's note")
    wait_for(lambda: text_of(browser, "#count-all") == "3", 15, "the counts")

    # The host page follows live too.
    browser.get(server.url + "/ui/hosts/1")
    wait_for(lambda: text_of(browser, "#live") == "live", 15, "the live updates")
    boot_from(server, "127.0.0.1", MAC1, "WEB1")
    wait_for(lambda: "booted" in text_of(browser, "#host-progress"), 15, "host 1's page shows its boot")
    assert "BOOTID" in text_of(browser, "#script")
    # The kernel line, hundreds of characters long, is shown whole: wrapped, nothing to scroll to.
    assert "razorurl=" in text_of(browser, "#script")
    assert browser.execute_script("const e = document.getElementById('script');"
                                  "return e.scrollWidth <= e.clientWidth;"), "the script is cut at the right"
    browser.save_screenshot(str(artefacts / "host.png"))

    browser.find_element(By.ID, "logout").click()
    wait_for(lambda: browser.find_elements(By.ID, "token"), 15, "the login page")
    browser.get(server.url + "/ui/")
    assert browser.find_elements(By.ID, "token"), "after logging out the dashboard asks for the token again"


def test_a_viewer_sees_no_actions_and_cannot_post_any(site, browser, artefacts):
    from selenium.webdriver.common.by import By

    server = site["server"]
    boot_from(server, "127.0.0.1", MAC1, "WEB1")
    log_in(browser, server.url, site["tokens"][Role.VIEWER])
    for path in ("/ui/", "/ui/hosts/1"):
        browser.get(server.url + path)
        assert not browser.find_elements(By.ID, "nav-webhooks")
        assert not browser.find_elements(By.ID, "actions")
        assert not browser.find_elements(By.CSS_SELECTOR, 'input[name="host"], button[name="action"]')
    browser.save_screenshot(str(artefacts / "viewer.png"))
    # The viewer's own session, cookie and CSRF token, forging the form the page does not offer.
    cookie = browser.get_cookie("kiwispray_session")["value"]
    csrf = browser.find_element(By.TAG_NAME, "body").get_attribute("data-csrf")
    forged = requests.post(server.url + "/ui/actions", cookies={"kiwispray_session": cookie}, timeout=10,
                           data={"action": "set-chain", "chain": "image1", "host": "1", "confirm": "1", "csrf": csrf},
                           allow_redirects=False)
    assert forged.status_code == 403
    no_csrf = requests.post(server.url + "/ui/actions", cookies={"kiwispray_session": cookie}, timeout=10,
                            data={"action": "set-chain", "chain": "image1", "host": "1", "confirm": "1"},
                            allow_redirects=False)
    assert no_csrf.status_code == 403


def axe_violations(driver) -> list[dict]:
    driver.execute_script(AXE.read_text())
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations), e => done([{id: 'axe-error',"
        " impact: 'critical', description: String(e), nodes: []}]));"
    )


def test_no_serious_or_critical_accessibility_violations(site, browser, artefacts):
    server = site["server"]
    boot_from(server, "127.0.0.1", MAC1, "WEB1")
    found = {}
    browser.get(server.url + "/ui/login")
    found["login"] = axe_violations(browser)
    log_in(browser, server.url, site["tokens"][Role.ADMIN])
    for name, path in (("overview", "/ui/"), ("host", "/ui/hosts/1"), ("images", "/ui/images"),
                       ("webhooks", "/ui/webhooks")):
        browser.get(server.url + path)
        found[name] = axe_violations(browser)
        if name == "webhooks":
            assert "ci.example/kiwispray" in text_of(browser, "#webhooks") and text_of(browser, "#deliveries-1")
            browser.save_screenshot(str(artefacts / "webhooks.png"))
    bad = {page: [(v["id"], v["impact"], v["description"], [n.get("target") for n in v["nodes"]][:3])
                  for v in violations if v["impact"] in ("serious", "critical")]
           for page, violations in found.items()}
    assert bad == {page: [] for page in found}, bad
    assert set(found) == {"login", "overview", "host", "images", "webhooks"}
