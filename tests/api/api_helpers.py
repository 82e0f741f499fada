"""Helpers and fixtures of the upload API's tests: a data root, keys of two users, the app under TestClient.

The fixtures live here, not in a conftest.py: other test folders import ``conftest`` by name (the one
in tests/), and a second conftest.py would shadow it. Each test module imports the ones it uses."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from konspekt import apikeys, webapi
from konspekt.contracts import StageResult
from konspekt.layout import VideoDir, write_json


def age(path: Path, seconds: float = 60) -> None:
    """As if the file had been lying there a while: a claim takes it at once."""
    old = time.time() - seconds
    os.utime(path, (old, old))


@contextlib.contextmanager
def served(app) -> Iterator[int]:
    """``app`` under a real uvicorn on a loopback port; yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def rss() -> int:
    """This process's resident memory now (client and server both live in it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def finish(video_dir: Path, statuses: dict[str, str]) -> None:
    """Stage results, as the stages write them (``stages/<stage>.json``)."""
    video = VideoDir(video_dir)
    for stage, status in statuses.items():
        write_json(video.result_path(stage), StageResult(stage, status, message=f"{stage} said {status}"))


@dataclass
class Keys:
    store: Path
    alice: str  # the X-API-Key values
    bob: str
    alice_id: str
    bob_id: str


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for sub in ("input", "output", "processing", "processed", "failed"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    return tmp_path / "data"


@pytest.fixture
def keys(root: Path) -> Keys:
    store = apikeys.default_store(root)
    alice_id, alice = apikeys.create(store, "alice")
    bob_id, bob = apikeys.create(store, "bob")
    return Keys(store, alice, bob, alice_id, bob_id)


@pytest.fixture
def client(root: Path, keys: Keys):
    app = webapi.create_app(root, keys.store, max_bytes=1 << 20, allow_private_callbacks=True)
    with TestClient(app) as c:
        yield c
