"""Uploads through a real HTTP server (uvicorn on loopback): the body is streamed, never held in memory,
and a client that goes away mid-upload leaves nothing behind."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time

import httpx
import pytest
from api_helpers import keys, root, rss, served  # noqa: F401 (fixtures)

from konspekt import uploads, webapi

MiB = 1 << 20


@pytest.fixture
def server(root, keys):
    """The app served on a loopback port; yields its base URL."""
    with served(webapi.create_app(root, keys.store, max_bytes=3 << 30)) as port:
        yield f"http://127.0.0.1:{port}"


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_client_that_goes_away_mid_upload_leaves_nothing(server, keys, root, caplog):
    caplog.set_level(logging.INFO, logger="konspekt.webapi")

    def cut_off():
        for _ in range(8):
            yield b"\1" * MiB
        raise ConnectionResetError("the uploader's network went down")

    with pytest.raises((ConnectionResetError, httpx.HTTPError)):
        httpx.post(f"{server}/lectures", content=cut_off(), timeout=30,
                   headers={"X-API-Key": keys.alice, "X-Filename": "cut.mp4"})
    # the server notices the closed connection and removes its temp file
    assert wait_until(lambda: os.listdir(root / "input") == []), os.listdir(root / "input")
    assert not list(uploads.lectures_dir(root).glob("*.json"))
    assert wait_until(lambda: "was cut off; nothing of it was kept" in caplog.text)  # the server saw part of it
    ok = httpx.post(f"{server}/lectures", content=b"whole", timeout=30,
                    headers={"X-API-Key": keys.alice, "X-Filename": "cut.mp4"})
    assert ok.status_code == 201 and ok.json()["input_name"] == "cut.mp4"  # its name was never taken


@pytest.mark.slow
def test_a_2_gb_upload_streams_with_bounded_memory(server, keys, root):
    total, chunk = 2 * 1024 * MiB, bytes(MiB)
    expected = hashlib.sha256()
    peak, stop = [rss()], threading.Event()
    baseline = peak[0]

    def sample():
        while not stop.wait(0.02):
            peak[0] = max(peak[0], rss())

    def zeros():
        for _ in range(total // MiB):
            expected.update(chunk)
            yield chunk

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        response = httpx.post(f"{server}/lectures", content=zeros(), timeout=600,
                              headers={"X-API-Key": keys.alice, "X-Filename": "big lecture.mp4"})
    finally:
        stop.set()
        sampler.join()
    seconds = time.monotonic() - started
    growth = peak[0] - baseline
    print(f"\n2 GiB upload: {seconds:.1f} s, {total / seconds / MiB:.0f} MiB/s, peak RSS growth {growth / MiB:.1f} MiB")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["size"] == total and body["sha256"] == expected.hexdigest()
    stored = root / "input" / "big lecture.mp4"
    assert stored.stat().st_size == total
    assert growth < 100 * MiB
    stored.unlink()  # 2 GiB of disk back at once
