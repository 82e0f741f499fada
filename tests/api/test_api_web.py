"""The HTTP API under TestClient: keys, other users' lectures, uploads (raw and multipart), limits, downloads."""

from __future__ import annotations

import json
import logging
import os
from urllib.parse import quote

import pytest
from api_helpers import age, client, finish, keys, root  # noqa: F401 (fixtures)
from fastapi.testclient import TestClient

from konspekt import apikeys, inbox, registry, webapi


def post(client, key, data=b"video bytes", name="talk.mp4", **params):
    headers = {"X-Filename": quote(name)} if name is not None else {}
    if key is not None:
        headers["X-API-Key"] = key
    return client.post("/lectures", content=data, headers=headers, params=params)


def everything_in(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "api" not in p.parts)


def publish(root, name="talk.mp4"):
    """The watch folder's own claim and finalize, with every stage ok."""
    age(root / "input" / name)
    [c] = inbox.claim(root, stable_seconds=1)
    for output in ("report.pdf", "report.json", "transcript.txt"):
        (c.video_dir / output).write_text(f"{output} of {name}")
    finish(c.video_dir, {s: "ok" for s in registry.lecture_names()})
    return inbox.finalize(root, c.video_dir)


def test_no_wrong_or_revoked_key_is_401(client, keys, root):
    assert post(client, None).status_code == 401
    assert post(client, "kp_0000000000000000_" + "A" * 43).status_code == 401
    assert post(client, keys.alice + "x").status_code == 401
    assert client.get("/lectures", headers={"X-API-Key": "admin"}).status_code == 401
    apikeys.revoke(keys.store, keys.bob_id)
    assert post(client, keys.bob).status_code == 401  # revoked while the server runs: refused at once
    assert post(client, keys.alice).status_code == 201
    assert everything_in(root) == ["input/talk.mp4"]  # only the good key's upload arrived


def test_an_upload_is_waiting_and_only_its_key_sees_it(client, keys, root):
    name = "Лекция 1: введение.mp4"  # sent percent-encoded: header values are ASCII
    response = post(client, keys.alice, b"lecture", name=name)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["state"] == "waiting" and body["input_name"] == name and body["size"] == 7
    assert response.headers["location"] == f"/lectures/{body['id']}"
    assert (root / "input" / name).read_bytes() == b"lecture"
    record = json.loads((root / "api" / "lectures" / f"{body['id']}.json").read_text())
    assert record["key_id"] == keys.alice_id and record["original_name"] == name

    alice, bob = {"X-API-Key": keys.alice}, {"X-API-Key": keys.bob}
    assert client.get(f"/lectures/{body['id']}", headers=alice).json()["state"] == "waiting"
    assert [x["id"] for x in client.get("/lectures", headers=alice).json()] == [body["id"]]
    # Bob is told it does not exist (404), the same as an id nobody has
    assert client.get(f"/lectures/{body['id']}", headers=bob).status_code == 404
    assert client.get(f"/lectures/{'f' * 32}", headers=bob).status_code == 404
    assert client.get(f"/lectures/{body['id']}/report.pdf", headers=bob).status_code == 404
    assert client.get("/lectures", headers=bob).json() == []
    assert client.get(f"/lectures/{body['id']}", headers={"X-API-Key": keys.bob + "x"}).status_code == 401


def test_the_notes_are_downloaded_once_published(client, keys, root):
    alice = {"X-API-Key": keys.alice}
    upload_id = post(client, keys.alice).json()["id"]
    assert client.get(f"/lectures/{upload_id}/report.pdf", headers=alice).status_code == 404  # not yet
    publish(root)
    state = client.get(f"/lectures/{upload_id}", headers=alice).json()
    assert state["state"] == "published" and state["downloads"] == ["report.json", "report.pdf", "transcript.txt"]
    pdf = client.get(f"/lectures/{upload_id}/report.pdf", headers=alice)
    assert pdf.status_code == 200 and pdf.content == b"report.pdf of talk.mp4"
    assert pdf.headers["content-type"] == "application/pdf"
    for name in ("manifest.json", "..%2Fmanifest.json", "..%2F..%2Fapi%2Fkeys.json", "transcript.vtt"):
        assert client.get(f"/lectures/{upload_id}/{name}", headers=alice).status_code == 404, name
    assert client.get(f"/lectures/{upload_id}/report.pdf", headers={"X-API-Key": keys.bob}).status_code == 404


def test_multipart_with_a_callback_url(client, keys, root):
    response = client.post("/lectures", headers={"X-API-Key": keys.alice},
                           files={"file": ("../../вебинар.webm", b"multipart bytes", "video/webm")},
                           data={"callback_url": "http://93.184.216.34:9/hook"})  # kept, not called here
    assert response.status_code == 201, response.text
    assert response.json()["input_name"] == "вебинар.webm"
    assert (root / "input" / "вебинар.webm").read_bytes() == b"multipart bytes"
    record = json.loads((root / "api" / "lectures" / f"{response.json()['id']}.json").read_text())
    assert record["callback_url"] == "http://93.184.216.34:9/hook"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x", "gopher://x", "http://", "javascript:1"])
def test_a_callback_url_that_is_not_http_is_refused(client, keys, root, url):
    assert post(client, keys.alice, callback_url=url).status_code == 400
    multipart = client.post("/lectures", headers={"X-API-Key": keys.alice},
                            files={"file": ("a.mp4", b"bytes")}, data={"callback_url": url})
    assert multipart.status_code == 400
    assert everything_in(root) == []


def test_private_callback_addresses_are_refused_by_default(root, keys):
    app = webapi.create_app(root, keys.store)
    with TestClient(app) as client:
        for url in ("http://127.0.0.1:2375/containers/create", "http://localhost/x", "http://10.1.2.3/",
                    "http://169.254.169.254/latest/meta-data"):
            assert post(client, keys.alice, callback_url=url).status_code == 400, url
    assert everything_in(root) == []


def test_an_upload_over_the_limit_is_413_and_leaves_nothing(client, keys, root):
    big = b"z" * ((1 << 20) + 1)  # the client fixture allows 1 MiB
    assert post(client, keys.alice, big).status_code == 413  # said up front by Content-Length

    def no_length():  # sent chunked: the limit is found while streaming
        yield big[:600_000]
        yield big[600_000:]

    assert post(client, keys.alice, no_length()).status_code == 413
    multipart = client.post("/lectures", headers={"X-API-Key": keys.alice}, files={"file": ("a.mp4", big)})
    assert multipart.status_code == 413
    assert os.listdir(root / "input") == [] and everything_in(root) == []
    assert post(client, keys.alice, b"z" * (1 << 20)).status_code == 201  # the limit itself is fine


def test_a_name_is_required_and_cleaned(client, keys, root):
    assert post(client, keys.alice, name=None).status_code == 400
    assert post(client, keys.alice, name="../../../etc/cron.d/x").json()["input_name"] == "x"
    assert post(client, keys.alice, name="a\x00b.mp4").json()["input_name"] == "a_b.mp4"
    assert post(client, keys.alice, name=".bashrc").json()["input_name"] == "bashrc"
    long = post(client, keys.alice, name="Ж" * 300 + ".mkv").json()["input_name"]
    assert len(long.encode()) <= 255 and long.endswith(".mkv")
    by_query = client.post("/lectures", content=b"q", params={"filename": "по запросу.mp4"},
                           headers={"X-API-Key": keys.alice})
    assert by_query.json()["input_name"] == "по запросу.mp4"
    assert sorted(os.listdir(root / "input")) == sorted(["x", "a_b.mp4", "bashrc", long, "по запросу.mp4"])


def test_refused_keys_are_logged_without_the_secret_and_rate_limited(root, keys, caplog):
    app = webapi.create_app(root, keys.store, max_failures=3, failure_window=60)
    wrong = f"kp_{keys.alice_id}_{'W' * 43}"
    with TestClient(app) as client, caplog.at_level(logging.WARNING, logger="konspekt.webapi"):
        codes = [post(client, wrong).status_code for _ in range(3)]
        limited = post(client, wrong)
        right_key = post(client, keys.alice)  # the key is checked first: a valid one is never refused
    assert codes == [401, 401, 401]
    assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 21
    assert right_key.status_code == 201
    log = caplog.text
    assert log.count("refused a wrong, unknown or revoked API key") == 3 and keys.alice_id in log
    assert "W" * 43 not in log and keys.alice.split("_", 2)[2] not in log


def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(root, keys):
    """`airflow api-server --proxy-headers` puts uvicorn's ProxyHeadersMiddleware in front of every app, the
    plugin's too: with the proxy trusted (FORWARDED_ALLOW_IPS), the limit counts each X-Forwarded-For client."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    app = webapi.create_app(root, keys.store, max_failures=2, failure_window=60)
    wrong = f"kp_{keys.alice_id}_{'W' * 43}"
    with TestClient(ProxyHeadersMiddleware(app, trusted_hosts="*")) as client:
        def send(key, address):
            return client.post("/lectures", content=b"video", headers={
                "X-API-Key": key, "X-Filename": "talk.mp4", "X-Forwarded-For": address}).status_code

        guesser = [send(wrong, "203.0.113.7") for _ in range(3)]
        lecturer = send(keys.alice, "198.51.100.20")
    assert guesser == [401, 401, 429]
    assert lecturer == 201  # the guesser behind the same proxy did not lock the lecturer out


def test_the_bucket_refills():
    now = [0.0]
    limiter = webapi.FailureLimiter(max_failures=2, window=10, clock=lambda: now[0])
    limiter.fail("a")
    limiter.fail("a")
    assert limiter.retry_after("a") == pytest.approx(5.0) and limiter.retry_after("b") == 0
    now[0] = 5.0
    assert limiter.retry_after("a") == 0  # one failure's worth came back
    limiter.fail("a")
    assert limiter.retry_after("a") > 0
