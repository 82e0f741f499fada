"""Callbacks: retried with exponential back-off against a loopback server, sent once per final state,
never followed through a redirect, never blocking the caller."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from api_helpers import age, finish, keys, root  # noqa: F401 (fixtures)

from konspekt import callbacks, inbox, registry, uploads


class Hook:
    """A loopback HTTP server answering POSTs with the given statuses in turn (then 200)."""

    def __init__(self, statuses=(), delay=0.0, location=None):
        self.statuses, self.delay, self.received = list(statuses), delay, []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append((self.path, json.loads(body), time.monotonic()))
                time.sleep(hook.delay)
                status = hook.statuses.pop(0) if hook.statuses else 200
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook_factory():
    made = []

    def make(*args, **kwargs):
        made.append(Hook(*args, **kwargs))
        return made[-1]

    yield make
    for hook in made:
        hook.close()


def test_a_500_is_retried_with_back_off_until_a_200(hook_factory):
    hook = hook_factory([500, 503, 500])
    waits = []
    assert callbacks.deliver(hook.url, {"id": "x", "state": "published"}, base_delay=0.05,
                             sleep=lambda s: (waits.append(s), time.sleep(s))) is True
    assert waits == [0.05, 0.1, 0.2]  # doubled each time
    assert [r[1] for r in hook.received] == [{"id": "x", "state": "published"}] * 4
    gaps = [b[2] - a[2] for a, b in zip(hook.received, hook.received[1:])]
    assert all(gap >= wait for gap, wait in zip(gaps, waits))


def test_it_gives_up_after_the_last_try(hook_factory, caplog):
    hook = hook_factory([500] * 10)
    assert callbacks.deliver(hook.url, {"id": "x"}, attempts=3, base_delay=0.01) is False
    assert len(hook.received) == 3 and "giving up after 3 tries" in caplog.text


def test_a_redirect_is_not_followed(hook_factory):
    target = hook_factory()
    hook = hook_factory([302] * 10, location=target.url)
    assert callbacks.deliver(hook.url, {"id": "x"}, attempts=2, base_delay=0.01) is False
    assert target.received == []


def test_a_dead_url_fails_without_raising():
    assert callbacks.deliver("http://127.0.0.1:9/nothing-listens", {"id": "x"}, attempts=2, base_delay=0.01) is False


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://h/x", "http://", "gopher://h", "//h/x", "h/x"])
def test_only_http_urls_are_taken(url):
    with pytest.raises(ValueError):
        callbacks.check_url(url, allow_private=True)


def test_local_and_private_addresses_are_refused_unless_allowed():
    for url in ("http://127.0.0.1/", "http://[::1]/", "http://10.0.0.1/", "http://192.168.1.1/",
                "http://169.254.169.254/", "https://localhost/"):
        with pytest.raises(ValueError):
            callbacks.check_url(url)
        assert callbacks.check_url(url, allow_private=True) == url


def test_a_finished_upload_is_called_back_once(hook_factory, root):
    hook = hook_factory([500])
    good = uploads.receive([b"good"], "good.mp4", root, "k1", 1 << 20, callback_url=hook.url)
    bad = uploads.receive([b"bad"], "bad.mp4", root, "k1", 1 << 20, callback_url=hook.url)
    silent = uploads.receive([b"silent"], "silent.mp4", root, "k1", 1 << 20)  # no URL: never called
    options = {"allow_private": True, "base_delay": 0.01}
    assert callbacks.notify(root, good.id, **options) is None  # waiting: nothing to say yet
    for path in (root / "input").iterdir():
        age(path)
    claims = {c.name: c for c in inbox.claim(root, stable_seconds=1)}
    finish(claims["good.mp4"].video_dir, {s: "ok" for s in registry.lecture_names()})
    (claims["good.mp4"].video_dir / "report.pdf").write_text("pdf")
    finish(claims["bad.mp4"].video_dir, {"extract_audio": "bad_input"})
    for c in claims.values():
        inbox.finalize(root, c.video_dir)
    assert callbacks.pending(root) == sorted([good.id, bad.id])
    callbacks.notify_pending(root, **options)
    assert callbacks.pending(root) == []
    got = {r[1]["id"]: r[1] for r in hook.received}
    assert len(hook.received) == 3  # good: 500, then 200; bad: 200
    assert got[good.id]["state"] == "published" and got[good.id]["downloads"] == ["report.pdf"]
    assert got[bad.id]["state"] == "quarantined" and got[bad.id]["reason"] == "extract_audio said bad_input"
    assert silent.id not in got
    assert callbacks.notify(root, good.id, **options) is None  # told already: never twice
    assert uploads.load(root, good.id).notified["published"]["delivered"] is True


def test_notify_in_background_never_blocks_the_caller(hook_factory, root):
    hook = hook_factory(delay=1.0)
    upload = uploads.receive([b"x"], "x.mp4", root, "k1", 1 << 20, callback_url=hook.url)
    age(root / "input" / "x.mp4")
    [c] = inbox.claim(root, stable_seconds=1)
    finish(c.video_dir, {"extract_audio": "bad_input"})
    inbox.finalize(root, c.video_dir)
    started = time.monotonic()
    thread = callbacks.notify_in_background(root, upload.id, allow_private=True)
    assert time.monotonic() - started < 0.5  # the slow server answers after 1 s
    thread.join(10)
    assert [r[1]["state"] for r in hook.received] == ["quarantined"]


def test_the_server_calls_back_from_its_own_thread(hook_factory, root, keys):
    from fastapi.testclient import TestClient

    from konspekt import webapi

    hook = hook_factory()
    app = webapi.create_app(root, keys.store, allow_private_callbacks=True, callback_poll_seconds=0.05,
                            callback_options={"base_delay": 0.01})
    with TestClient(app) as client:
        response = client.post("/lectures", content=b"talk", params={"callback_url": hook.url},
                               headers={"X-API-Key": keys.alice, "X-Filename": "talk.mp4"})
        assert response.status_code == 201
        age(root / "input" / "talk.mp4")
        [c] = inbox.claim(root, stable_seconds=1)
        finish(c.video_dir, {"extract_audio": "bad_input"})
        inbox.finalize(root, c.video_dir)
        deadline = time.monotonic() + 10
        while not hook.received and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [(r[1]["id"], r[1]["state"]) for r in hook.received] == [(response.json()["id"], "quarantined")]


def test_a_start_that_failed_is_tried_again_at_the_next_request(root, keys, monkeypatch):
    """A failed start (the data folder briefly unreadable, say) must not leave the server without its poller."""
    from fastapi.testclient import TestClient

    from konspekt import webapi

    app = webapi.create_app(root, keys.store, callback_poll_seconds=30)
    real_sweep, calls = uploads.sweep_temps, []

    def sweep_failing_once(data_root):
        calls.append(data_root)
        if len(calls) == 1:
            raise PermissionError("input/ is not readable yet")
        return real_sweep(data_root)

    monkeypatch.setattr(uploads, "sweep_temps", sweep_failing_once)
    with pytest.raises(PermissionError):
        app.state.start_background()  # what the api-server's start runs
    assert not any(t.name == "konspekt-callbacks" for t in threading.enumerate())
    client = TestClient(app)  # no lifespan: as when mounted into the api-server
    try:
        assert client.get("/lectures", headers={"X-API-Key": keys.alice}).status_code == 200
        assert len(calls) == 2 and any(t.name == "konspekt-callbacks" for t in threading.enumerate())
    finally:
        app.state.stop_background()


def test_the_poller_outlives_a_failed_round(root, monkeypatch, caplog):
    from konspekt import webapi

    rounds = []

    def notify_pending(data_root, **options):
        rounds.append(data_root)
        if len(rounds) == 1:
            raise OSError("the shared folder went away for a moment")

    monkeypatch.setattr(callbacks, "notify_pending", notify_pending)
    stop = threading.Event()
    poller = threading.Thread(target=webapi._poll_callbacks, args=(root, 0.01, stop, {}), daemon=True)
    poller.start()
    deadline = time.monotonic() + 10
    while len(rounds) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    poller.join(5)
    assert len(rounds) >= 3 and "went away for a moment" in caplog.text
