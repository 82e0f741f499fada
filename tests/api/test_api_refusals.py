"""Refusals that lock out nobody else, and the smaller leaks (issue 30, items 7 and 8): the key is checked
first and failures are counted per address and key id; the page stops asking after a 401; no docs or
schema unless enabled; the page and every answer carry headers against sniffing and framing, and the
page runs no inline code; a damaged keys.json refuses everyone with one clear log line."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from api_helpers import client, keys, root  # noqa: F401 (fixtures)
from api_helpers import served as serve
from fastapi.testclient import TestClient

from konspekt import webapi

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def post(client, key, data=b"video"):
    headers = {"X-Filename": "talk.mp4"}
    if key is not None:
        headers["X-API-Key"] = key
    return client.post("/lectures", content=data, headers=headers).status_code


def wrong(key_id: str) -> str:
    return f"kp_{key_id}_{'W' * 43}"


# --- item 7 ------------------------------------------------------------------------------------------

def test_a_stale_key_behind_a_shared_address_locks_out_nobody_else(root, keys):
    """One address (a NAT): a tab that keeps sending alice's old secret is refused, then limited; every
    valid key from that address still gets in, alice's own new one too, and other ids keep their own count."""
    app = webapi.create_app(root, keys.store, max_failures=3, failure_window=60)
    with TestClient(app) as client:
        stale = [post(client, wrong(keys.alice_id)) for _ in range(4)]
        valid = [post(client, keys.bob), post(client, keys.alice)]
        bob_mistyped = post(client, wrong(keys.bob_id))
        no_key = post(client, None)
    assert stale == [401, 401, 401, 429]
    assert valid == [201, 201]
    assert bob_mistyped == 401 and no_key == 401  # counted apart from the stale tab's id


def test_scanning_many_key_ids_from_one_address_is_still_limited(root, keys):
    app = webapi.create_app(root, keys.store, max_failures=3, failure_window=60, max_address_failures=6)
    with TestClient(app) as client:
        scan = [post(client, wrong(f"{i:016x}")) for i in range(8)]
        valid = post(client, keys.alice)
    assert scan == [401] * 6 + [429] * 2  # each id is new: the address's own bucket stops it
    assert valid == 201


def test_the_limiter_counts_by_address_and_key_id():
    now = [0.0]
    limiter = webapi.FailureLimiter(max_failures=2, window=10, clock=lambda: now[0], max_address_failures=3)
    limiter.fail("10.0.0.1", "aaaa")
    limiter.fail("10.0.0.1", "aaaa")
    assert limiter.retry_after("10.0.0.1", "aaaa") == pytest.approx(5.0)
    assert limiter.retry_after("10.0.0.1", "bbbb") == 0  # another id from the same address
    assert limiter.retry_after("10.0.0.2", "aaaa") == 0  # the same id from elsewhere
    limiter.fail("10.0.0.1", "bbbb")  # the address's third: its backstop is empty
    assert limiter.retry_after("10.0.0.1", "cccc") > 0
    now[0] = 10.0
    assert limiter.retry_after("10.0.0.1", "aaaa") == 0


@pytest.fixture
def served(root, keys):
    """The app under uvicorn on a loopback port; yields its base URL."""
    with serve(webapi.create_app(root, keys.store, max_bytes=1 << 20)) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def browser():
    """Headless Chromium (as the compose e2e uses it); skipped where it is not installed."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("chromium and chromedriver are not installed")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never try the internet
    profile = tempfile.mkdtemp(prefix="konspekt-page-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_the_page_stops_polling_after_a_401_and_asks_for_a_valid_key(served, keys, browser, caplog):
    """In Chromium, under the page's own Content-Security-Policy: a wrong key is asked about once, not
    every 5 s; the page says to enter a valid key; a valid key lists the lectures and polls again."""
    from selenium.webdriver.common.by import By

    caplog.set_level(logging.WARNING, logger="konspekt.webapi")
    sent = httpx.post(served + "/lectures", content=b"video", headers={"X-API-Key": keys.alice, "X-Filename": "a.mp4"})
    assert sent.status_code == 201
    browser.get(served + "/")
    field = browser.find_element(By.ID, "key")
    field.send_keys(wrong(keys.alice_id))
    browser.execute_script("document.getElementById('key').dispatchEvent(new Event('change'))")

    def refused() -> int:
        return caplog.text.count("refused a wrong, unknown or revoked API key")

    deadline = time.monotonic() + 10
    while refused() < 1:
        assert time.monotonic() < deadline, "the page never asked"
        time.sleep(0.1)
    message = browser.find_element(By.ID, "message")
    deadline = time.monotonic() + 5
    while "valid key" not in message.text and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "refused" in message.text and "valid key" in message.text, message.text
    time.sleep(6)  # longer than the page's 5 s poll
    assert refused() == 1, "the page kept asking with a key that was refused"

    field.clear()
    field.send_keys(keys.alice)
    browser.execute_script("document.getElementById('key').dispatchEvent(new Event('change'))")
    deadline = time.monotonic() + 10
    while not browser.find_elements(By.CSS_SELECTOR, f"tr[data-id='{sent.json()['id']}']"):  # listed
        assert time.monotonic() < deadline, browser.find_element(By.TAG_NAME, "body").text
        time.sleep(0.1)
    assert "refused" not in message.text
    console = [entry["message"] for entry in browser.get_log("browser")]
    assert not [m for m in console if "Content Security Policy" in m], console  # nothing the CSP blocked


# --- item 8 ------------------------------------------------------------------------------------------

def test_no_docs_or_schema_unless_enabled(root, keys):
    with TestClient(webapi.create_app(root, keys.store)) as client:
        assert [client.get(p).status_code for p in ("/docs", "/redoc", "/openapi.json")] == [404, 404, 404]
    with TestClient(webapi.create_app(root, keys.store, docs=True)) as client:
        assert [client.get(p).status_code for p in ("/docs", "/redoc", "/openapi.json")] == [200, 200, 200]
        assert "/lectures" in client.get("/openapi.json").json()["paths"]


def test_the_page_loads_only_its_own_files_and_is_never_framed(client, keys):
    page = client.get("/")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text and "<style>" not in page.text
    assert not re.search(r"\son[a-z]+\s*=", page.text)  # no inline event handlers either
    assert 'src="page.js"' in page.text and "http" not in page.text.split("<body>")[1]  # no other origin
    script, style = client.get("/page.js"), client.get("/page.css")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "X-API-Key" in script.text
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    for response in (script, style, client.get("/lectures", headers={"X-API-Key": keys.alice}),
                     client.get("/lectures")):
        assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("damage", ["truncated", "empty", "not a list", "an entry without a hash", "unreadable"])
def test_a_damaged_keys_file_refuses_everyone_with_one_clear_log_line(root, keys, caplog, damage):
    text = keys.store.read_text()
    keys.store.write_text({"truncated": text[:len(text) // 2], "empty": "", "not a list": '{"keys": 3}',
                           "an entry without a hash": json.dumps({"keys": [{"id": keys.alice_id}]}),
                           "unreadable": text}[damage])
    if damage == "unreadable":
        keys.store.write_bytes(b"\xff\xfe" + text.encode())  # not UTF-8
    app = webapi.create_app(root, keys.store)
    with TestClient(app) as client, caplog.at_level(logging.INFO, logger="konspekt.webapi"):
        answers = [client.get("/lectures", headers={"X-API-Key": key}) for key in (keys.alice, keys.bob, keys.alice)]
        uploaded = post(client, keys.alice)
    assert [a.status_code for a in answers] == [503] * 3 and uploaded == 503
    assert "API key file is damaged" in answers[0].json()["detail"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]  # once, not at every request
    assert str(keys.store) in errors[0].getMessage() and "konspekt keys create" in errors[0].getMessage()
    assert errors[0].exc_info is None and "Traceback" not in caplog.text
    assert os.listdir(root / "input") == []


def test_a_repaired_keys_file_lets_keys_in_again(root, keys, caplog):
    good = keys.store.read_text()
    keys.store.write_text(good[:10])
    with TestClient(webapi.create_app(root, keys.store)) as client:
        assert client.get("/lectures", headers={"X-API-Key": keys.alice}).status_code == 503
        Path(keys.store).write_text(good)
        assert client.get("/lectures", headers={"X-API-Key": keys.alice}).status_code == 200
