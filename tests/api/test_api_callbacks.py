"""Callbacks: retried with exponential back-off, sent once per final state, never followed through a
redirect, never blocking the caller; each delivery within a deadline, from a small pool with a cap per
key, signed with the key's secret (issue 30, item 4). Receivers are loopback servers reached by name
on the test's network (callback_helpers.Net): no packet leaves the machine."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import socket
import stat
import textwrap
import threading
import time
from pathlib import Path

import pytest
from api_helpers import age, finish, keys, root  # noqa: F401 (fixtures)
from callback_helpers import PUBLIC, hook_factory, net  # noqa: F401 (fixtures)

from konspekt import apikeys, callbacks, cli, inbox, registry, uploads


@pytest.fixture(autouse=True)
def _network(net):  # noqa: F811 - every test here runs on the test's network
    return net


def quarantine(root, *names):  # noqa: F811
    """Claim what is in input/ and quarantine each of ``names`` (so their callbacks are due)."""
    for path in (root / "input").iterdir():
        age(path)
    claims = {c.name: c for c in inbox.claim(root, stable_seconds=1)}
    for name in names:
        finish(claims[name].video_dir, {"extract_audio": "bad_input"})
        inbox.finalize(root, claims[name].video_dir)


def test_a_500_is_retried_with_back_off_until_a_200(hook_factory):  # noqa: F811
    hook = hook_factory([500, 503, 500])
    waits = []
    assert callbacks.deliver(hook.url, {"id": "x", "state": "published"}, base_delay=0.05,
                             sleep=lambda s: (waits.append(s), time.sleep(s))) is True
    assert waits == [0.05, 0.1, 0.2]  # doubled each time
    assert [r[1] for r in hook.received] == [{"id": "x", "state": "published"}] * 4
    gaps = [b[2] - a[2] for a, b in zip(hook.received, hook.received[1:])]
    assert all(gap >= wait for gap, wait in zip(gaps, waits))


def test_it_gives_up_after_the_last_try(hook_factory, caplog):  # noqa: F811
    hook = hook_factory([500] * 10)
    assert callbacks.deliver(hook.url, {"id": "x"}, attempts=3, base_delay=0.01) is False
    assert len(hook.received) == 3 and "giving up after 3 tries" in caplog.text


def test_a_redirect_is_not_followed(hook_factory):  # noqa: F811
    target = hook_factory()
    hook = hook_factory([302] * 10, location=target.url)
    assert callbacks.deliver(hook.url, {"id": "x"}, attempts=2, base_delay=0.01) is False
    assert target.received == []


def test_a_dead_url_fails_without_raising(net):  # noqa: F811
    net.name("dead.example", PUBLIC)  # nothing answers there
    assert callbacks.deliver("http://dead.example:9/nothing-listens", {"id": "x"}, attempts=2, base_delay=0.01) is False


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://h/x", "http://", "gopher://h", "//h/x", "h/x"])
def test_only_http_urls_are_taken(url):
    with pytest.raises(ValueError):
        callbacks.check_url(url, callbacks.Policy(allow_private=True))


def test_local_and_private_addresses_are_refused_unless_allowed():
    for url in ("http://10.0.0.1/", "http://192.168.1.1/", "http://172.16.5.4:8000/x", "http://[fd00::1]/"):
        with pytest.raises(ValueError, match="private"):
            callbacks.check_url(url)
        assert callbacks.check_url(url, callbacks.Policy(allow_private=True)) == url
    for url in ("http://127.0.0.1/", "http://[::1]/", "http://169.254.169.254/", "https://localhost/"):
        with pytest.raises(ValueError):  # allowed or not: see test_api_callback_targets.py
            callbacks.check_url(url)


def test_a_finished_upload_is_called_back_once(hook_factory, root):  # noqa: F811
    hook = hook_factory([500])
    good = uploads.receive([b"good"], "good.mp4", root, "k1", 1 << 20, callback_url=hook.url)
    bad = uploads.receive([b"bad"], "bad.mp4", root, "k1", 1 << 20, callback_url=hook.url)
    silent = uploads.receive([b"silent"], "silent.mp4", root, "k1", 1 << 20)  # no URL: never called
    options = {"base_delay": 0.01}
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


def test_notify_in_background_never_blocks_the_caller(hook_factory, root):  # noqa: F811
    hook = hook_factory(delay=1.0)
    upload = uploads.receive([b"x"], "x.mp4", root, "k1", 1 << 20, callback_url=hook.url)
    quarantine(root, "x.mp4")
    started = time.monotonic()
    thread = callbacks.notify_in_background(root, upload.id)
    assert time.monotonic() - started < 0.5  # the slow server answers after 1 s
    thread.join(10)
    assert [r[1]["state"] for r in hook.received] == ["quarantined"]


# --- a deadline per delivery, a budget per callback, a pool with a cap per key -------------------

class Dripper:
    """A loopback receiver that reads the request, then answers one byte at a time, ``gap`` seconds
    apart, for ``seconds`` (a status line, then a header that never ends), then ends the answer."""

    def __init__(self, gap=0.1, seconds=8.0):
        self.requests, self.gap, self.seconds = [], gap, seconds
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn):
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            self.requests.append(request)
            until = time.monotonic() + self.seconds
            try:
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: ":
                    conn.sendall(bytes([byte]))
                    time.sleep(self.gap)
                while time.monotonic() < until:
                    conn.sendall(b"z")
                    time.sleep(self.gap)
                conn.sendall(b"\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass  # the client hung up: what a deadline does

    def close(self):
        self.server.close()


def test_a_receiver_that_drips_its_answer_is_cut_off_at_the_deadline(net):  # noqa: F811
    """A socket timeout is per read: a byte every 0.1 s never reaches it. The delivery's deadline is
    for all of it."""
    dripper = Dripper()
    try:
        net.name("drip.example", PUBLIC)
        net.route(PUBLIC, dripper.port, dripper.port)
        started = time.monotonic()
        delivered = callbacks.deliver(f"http://drip.example:{dripper.port}/hook", {"id": "x"}, attempts=1,
                                      timeout=1.0)
        took = time.monotonic() - started
        assert len(dripper.requests) == 1  # it was reached, and answered (slowly)
        assert delivered is False and took < 3.0, took
    finally:
        dripper.close()


def test_all_tries_of_one_callback_share_a_budget(net):  # noqa: F811
    net.name("dead.example", PUBLIC)  # refused at once, every time
    waits = []
    started = time.monotonic()
    assert callbacks.deliver("http://dead.example:9/x", {"id": "x"}, attempts=10, base_delay=0.2, budget=0.5,
                             sleep=lambda s: (waits.append(s), time.sleep(s))) is False
    assert waits == [0.2]  # the next wait (0.4 s) would run past the budget: it gives up instead
    assert time.monotonic() - started < 1.5


def test_a_slow_receiver_holds_one_thread_not_the_others(hook_factory, root):  # noqa: F811
    slow, fast = hook_factory(delay=2.0), hook_factory()
    stuck = uploads.receive([b"a"], "a.mp4", root, "k1", 1 << 20, callback_url=slow.url)
    other = uploads.receive([b"b"], "b.mp4", root, "k2", 1 << 20, callback_url=fast.url)
    quarantine(root, "a.mp4", "b.mp4")
    with callbacks.Pool(workers=4) as pool:
        started = time.monotonic()
        callbacks.notify_pending(root, pool=pool)
        assert time.monotonic() - started < 0.5  # the round hands them over and returns
        deadline = time.monotonic() + 5
        while not fast.received and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [r[1]["id"] for r in fast.received] == [other.id]
        assert time.monotonic() - started < 1.5  # not after the slow one (2 s)
    assert [r[1]["id"] for r in slow.received] == [stuck.id]


def test_one_key_has_at_most_per_key_callbacks_in_the_pool(hook_factory, root):  # noqa: F811
    slow, fast = hook_factory(delay=0.5), hook_factory()
    mine = [uploads.receive([n.encode()], n, root, "k1", 1 << 20, callback_url=slow.url).id
            for n in ("a.mp4", "b.mp4", "c.mp4")]
    theirs = uploads.receive([b"d"], "d.mp4", root, "k2", 1 << 20, callback_url=fast.url).id
    quarantine(root, "a.mp4", "b.mp4", "c.mp4", "d.mp4")
    with callbacks.Pool(workers=4, per_key=1) as pool:
        callbacks.notify_pending(root, pool=pool)
        callbacks.notify_pending(root, pool=pool)  # a round while k1's one is still running adds none of k1
        time.sleep(1.0)
        assert len(slow.received) == 1 and [r[1]["id"] for r in fast.received] == [theirs]
        assert len(set(callbacks.pending(root)) & set(mine)) == 2  # they wait for a later round
        for _ in range(2):
            callbacks.notify_pending(root, pool=pool)
            time.sleep(0.8)
    assert sorted(r[1]["id"] for r in slow.received) == sorted(mine) and callbacks.pending(root) == []


def test_a_round_without_a_pool_of_its_own_delivers_every_upload(hook_factory, root):  # noqa: F811
    hook = hook_factory()
    ids = {uploads.receive([n.encode()], n, root, "k1", 1 << 20, callback_url=hook.url).id
           for n in ("a.mp4", "b.mp4", "c.mp4")}
    quarantine(root, "a.mp4", "b.mp4", "c.mp4")
    callbacks.notify_pending(root)  # per key 2 at a time, all of them before it returns
    assert {r[1]["id"] for r in hook.received} == ids


# --- signatures -------------------------------------------------------------------------------------

def verify(secret: str, body: bytes, header: str, tolerance: float = 300) -> bool:
    """What a receiver does (README: Upload over HTTP, callbacks)."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - int(fields["t"])) < tolerance


def test_the_readme_shows_a_receiver_how_to_verify_a_callback():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    snippet = re.search(r"```python\n( *import hashlib, hmac, time\n.*?)```", readme, re.S).group(1)
    namespace: dict = {}
    exec(textwrap.dedent(snippet), namespace)
    readme_verify, body, now = namespace["verify"], b'{"id": "x", "state": "published"}', int(time.time())
    assert readme_verify("kpcb_secret", body, callbacks.sign("kpcb_secret", body, now))
    assert not readme_verify("kpcb_secret", body + b" ", callbacks.sign("kpcb_secret", body, now))
    assert not readme_verify("kpcb_other", body, callbacks.sign("kpcb_secret", body, now))
    assert not readme_verify("kpcb_secret", body, callbacks.sign("kpcb_secret", body, now - 600))  # a replay


def test_callbacks_are_signed_with_the_keys_secret(hook_factory, root, keys):  # noqa: F811
    hook = hook_factory()
    upload = uploads.receive([b"x"], "x.mp4", root, keys.alice_id, 1 << 20, callback_url=hook.url)
    quarantine(root, "x.mp4")
    assert callbacks.notify(root, upload.id) is True
    [(_, payload, _, headers, body)] = hook.received
    secret = apikeys.callback_secret(keys.store, keys.alice_id)
    assert secret and secret != apikeys.callback_secret(keys.store, keys.bob_id)
    assert verify(secret, body, headers["X-Konspekt-Signature"])
    assert not verify(secret, body.replace(b"quarantined", b"published"), headers["X-Konspekt-Signature"])
    assert not verify(apikeys.callback_secret(keys.store, keys.bob_id), body, headers["X-Konspekt-Signature"])
    stored = json.loads(keys.store.read_text())
    assert stat.S_IMODE(keys.store.stat().st_mode) == 0o600 and secret in keys.store.read_text()
    assert all("callback_secret" not in json.dumps(k.public()) for k in apikeys.list_keys(keys.store))
    assert len(stored["keys"]) == 2


def test_a_key_from_before_signing_sends_unsigned_and_says_so_until_it_gets_a_secret(hook_factory, root, caplog,
                                                                                   capsys):  # noqa: F811
    store = apikeys.default_store(root)
    key_id, _ = apikeys.create(store, "old")
    data = json.loads(store.read_text())
    del data["keys"][0]["callback_secret"]  # as a keys.json of before
    store.write_text(json.dumps(data))
    hook = hook_factory()
    first = uploads.receive([b"x"], "x.mp4", root, key_id, 1 << 20, callback_url=hook.url)
    quarantine(root, "x.mp4")
    assert callbacks.notify(root, first.id) is True
    assert "X-Konspekt-Signature" not in hook.received[0][3]
    assert f"key {key_id} has no callback secret" in caplog.text
    assert cli.main(["keys", "--store", str(store), "list"]) == 0
    assert "callbacks unsigned" in capsys.readouterr().out
    assert cli.main(["keys", "--store", str(store), "callback-secret", key_id]) == 0
    secret = capsys.readouterr().out.strip()
    assert secret == apikeys.callback_secret(store, key_id)
    second = uploads.receive([b"y"], "y.mp4", root, key_id, 1 << 20, callback_url=hook.url)
    quarantine(root, "y.mp4")
    assert callbacks.notify(root, second.id) is True
    assert verify(secret, hook.received[1][4], hook.received[1][3]["X-Konspekt-Signature"])
    assert cli.main(["keys", "--store", str(store), "callback-secret", "0" * 16]) == 1


def test_the_cli_shows_the_callback_secret_at_creation_and_replaces_it(tmp_path, capsys):
    store = tmp_path / "keys.json"
    assert cli.main(["keys", "--store", str(store), "create", "--owner", "lab"]) == 0
    out = capsys.readouterr()
    token = out.out.strip()  # stdout: the key alone, as scripts read it
    key_id = apikeys.key_id_of(token)
    first = apikeys.callback_secret(store, key_id)
    assert first in out.err and first not in out.out
    assert cli.main(["keys", "--store", str(store), "callback-secret", key_id]) == 0
    second = capsys.readouterr().out.strip()
    assert second == apikeys.callback_secret(store, key_id) != first
    assert apikeys.verify(store, token).id == key_id  # the key itself is unchanged
    assert apikeys.revoke(store, key_id)
    assert apikeys.callback_secret(store, key_id) == second  # revoking keeps the rest of the entry
    assert cli.main(["keys", "--store", str(store), "callback-secret", key_id]) == 1  # revoked: no new secret


# --- records and logs -------------------------------------------------------------------------------

def test_upload_records_are_readable_by_the_server_only(root):  # noqa: F811
    folder = uploads.lectures_dir(root)
    folder.mkdir(parents=True)
    os.chmod(folder, 0o755)  # a folder of before
    upload = uploads.receive([b"x"], "x.mp4", root, "k1", 1 << 20, callback_url="https://hooks.example.org/t0ken")
    record = uploads.record_file(root, upload.id)
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_the_server_calls_back_from_its_own_thread(hook_factory, root, keys):  # noqa: F811
    from fastapi.testclient import TestClient

    from konspekt import webapi

    hook = hook_factory()
    app = webapi.create_app(root, keys.store, callback_poll_seconds=0.05, callback_options={"base_delay": 0.01})
    with TestClient(app) as client:
        response = client.post("/lectures", content=b"talk", headers={
            "X-API-Key": keys.alice, "X-Filename": "talk.mp4", "X-Callback-URL": hook.url})
        assert response.status_code == 201
        assert uploads.load(root, response.json()["id"]).callback_url == hook.url
        quarantine(root, "talk.mp4")
        deadline = time.monotonic() + 10
        while not hook.received and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [(r[1]["id"], r[1]["state"]) for r in hook.received] == [(response.json()["id"], "quarantined")]
    secret = apikeys.callback_secret(keys.store, keys.alice_id)
    assert verify(secret, hook.received[0][4], hook.received[0][3]["X-Konspekt-Signature"])


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_the_callback_url_stays_out_of_the_access_logs(net, root, keys, monkeypatch):  # noqa: F811
    """Old clients send ?callback_url=, which access logs print with the path: uvicorn's, and Airflow's
    own (its api-server logs through HttpAccessLogMiddleware instead). Neither sees it; the upload keeps it."""
    import httpx
    import structlog
    import uvicorn
    from airflow.api_fastapi.common.http_access_log import HttpAccessLogMiddleware
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Mount

    from konspekt import webapi

    net.name("hooks.example.org", PUBLIC)
    url = "https://hooks.example.org/notify?token=s3cret-t0ken"
    api = webapi.create_app(root, keys.store)
    server_app = Starlette(routes=[Mount("/konspekt", api)], middleware=[Middleware(HttpAccessLogMiddleware)])
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(server_app, log_config=None, access_log=True, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    access_log, uvicorn_access = Lines(), logging.getLogger("uvicorn.access")  # Airflow's logging stops its propagation
    monkeypatch.setattr(uvicorn_access, "handlers", [access_log])
    monkeypatch.setattr(uvicorn_access, "level", logging.INFO)
    try:
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        with structlog.testing.capture_logs() as airflow_log:
            response = httpx.post(f"http://127.0.0.1:{sock.getsockname()[1]}/konspekt/lectures",
                                  params={"callback_url": url, "filename": "talk.mp4"}, content=b"talk",
                                  headers={"X-API-Key": keys.alice})
            time.sleep(0.2)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert response.status_code == 201, response.text
    assert uploads.load(root, response.json()["id"]).callback_url == url  # taken from the query, as before
    access = access_log.lines
    assert access and all("/konspekt/lectures" in line for line in access)
    assert not any("t0ken" in line or "hooks.example" in line for line in access), access
    requests = [e for e in airflow_log if e.get("event") == "request finished"]
    assert requests and "filename=talk.mp4" in requests[0]["query"]
    assert not any("t0ken" in json.dumps(e) or "hooks.example" in json.dumps(e) for e in airflow_log), airflow_log


# --- the poller -------------------------------------------------------------------------------------

def test_a_start_that_failed_is_tried_again_at_the_next_request(root, keys, monkeypatch):  # noqa: F811
    """A failed start (the data folder briefly unreadable, say) must not leave the server without its poller."""
    from fastapi.testclient import TestClient

    from konspekt import webapi

    app = webapi.create_app(root, keys.store, callback_poll_seconds=30)
    real_sweep, calls = uploads.sweep_temps, []

    def sweep_failing_once(data_root, *args):
        calls.append(data_root)
        if len(calls) == 1:
            raise PermissionError("input/ is not readable yet")
        return real_sweep(data_root, *args)

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


def test_the_poller_outlives_a_failed_round(root, monkeypatch, caplog):  # noqa: F811
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
