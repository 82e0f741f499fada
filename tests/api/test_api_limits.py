"""What one upload may take (issue 30, items 3 and 6): a form's fields and headers are few and small and
every body byte counts; a malformed form is a 400; the disk keeps its free space (507); a key has at most
a few uploads at once and so many bytes a day (429); a client that stops sending is dropped (408); half
uploads are swept on a schedule, never one still being written. Each through the real app: TestClient,
the app called as an ASGI server calls it (to see how much of a body it read), or uvicorn on loopback."""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from api_helpers import age, keys, root, rss, served  # noqa: F401 (fixtures)
from fastapi.testclient import TestClient

from konspekt import uploads, webapi

KiB, MiB = 1 << 10, 1 << 20
QUIET = {"sweep_seconds": None}  # no sweeper thread left behind by apps called without a lifespan


def leftovers(root: Path) -> list[str]:
    """What an upload left: files in input/ (temp files included) and upload records."""
    return sorted(os.listdir(root / "input")) + sorted(p.name for p in uploads.lectures_dir(root).glob("*.json"))


def asgi_post(app, chunks, headers: dict[str, str], *, path: str = "/lectures", stall: bool = False,
              cut_off: bool = False) -> tuple[int, bytes, int]:
    """POST ``chunks`` to ``app`` as an ASGI server does, one ``receive()`` per chunk. Returns the status,
    the response body and how many body bytes the app pulled before it answered. ``stall``: after the
    chunks the client sends nothing more (and never ends the body); ``cut_off``: it goes away."""
    pulled = 0
    sent: list[dict] = []

    async def run() -> None:
        source = iter(chunks)

        async def receive() -> dict:
            nonlocal pulled
            chunk = next(source, None)
            if chunk is not None:
                pulled += len(chunk)
                return {"type": "http.request", "body": chunk, "more_body": True}
            if stall:
                await asyncio.sleep(3600)
            if cut_off or any(m["type"] == "http.response.start" for m in sent):
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
                 "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 80)}
        await asyncio.wait_for(app(scope, receive, send), 20)

    asyncio.run(run())
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"), pulled


def pieces(data: bytes, size: int = 64 * KiB):
    for start in range(0, len(data), size):
        yield data[start:start + size]


def part(name: str, value: bytes, filename: str | None = None, extra: bytes = b"") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return b"--B\r\nContent-Disposition: " + disposition.encode() + b"\r\n" + extra + b"\r\n" + value + b"\r\n"


FORM = {"Content-Type": "multipart/form-data; boundary=B"}


def small_fields(total: int):
    """``total`` bytes of a form of tiny fields, made as they are sent (never held whole)."""
    sent, i, buffer = 0, 0, bytearray()
    while sent < total:
        while len(buffer) < 64 * KiB:
            buffer += part(f"f{i}", b"v")
            i += 1
        chunk = bytes(buffer[:64 * KiB])
        del buffer[:64 * KiB]
        sent += len(chunk)
        yield chunk


# --- item 3: a form is a file and a few small fields --------------------------------------------------

def test_a_body_of_small_fields_is_refused_after_the_first_bytes_not_read_to_its_end(root, keys):
    app = webapi.create_app(root, keys.store, max_bytes=MiB, **QUIET)
    status, body, pulled = asgi_post(app, small_fields(16 * MiB), {"X-API-Key": keys.alice, **FORM})
    assert status == 400 and b"too many parts" in body, body
    assert pulled <= 128 * KiB, f"read {pulled} bytes of a 16 MiB form before refusing it"
    assert leftovers(root) == []


def test_a_few_fields_and_small_part_headers_only(root, keys):
    app = webapi.create_app(root, keys.store, max_bytes=MiB, **QUIET)
    file_part = part("file", b"video", "talk.mp4")
    with TestClient(app) as client:
        def send(body: bytes):
            return client.post("/lectures", content=body, headers={"X-API-Key": keys.alice, **FORM})

        nine_parts = b"".join(part(f"f{i}", b"x") for i in range(8)) + file_part + b"--B--\r\n"
        padding = b"".join(b"X-Padding-%d: %s\r\n" % (i, b"p" * 4000) for i in range(7))  # 28 KB a part
        big_headers = b"".join(part(f"f{i}", b"x", extra=padding) for i in range(3)) + file_part + b"--B--\r\n"
        epilogue = file_part + b"--B--\r\n" + b"Z" * (70 * KiB)  # after the last boundary: read, never used
        refused = [send(nine_parts), send(big_headers), send(epilogue)]
        ok = send(b"".join(part(f"f{i}", b"x" * 4000) for i in range(7)) + file_part + b"--B--\r\n")
        assert [r.status_code for r in refused] == [400, 400, 400], [r.text for r in refused]
        assert "too many parts" in refused[0].json()["detail"]
        assert "over 65536 bytes" in refused[1].json()["detail"]
        assert "over 65536 bytes" in refused[2].json()["detail"]
        assert ok.status_code == 201, ok.text  # the file and 7 fields of 4000 bytes: a form may have that
    assert sorted(os.listdir(root / "input")) == ["talk.mp4"]


def test_every_body_byte_counts_against_the_limit_not_only_the_file_s(root, keys):
    app = webapi.create_app(root, keys.store, max_bytes=MiB, **QUIET)
    # a file just under the limit, plus fields: the body is over it. Chunked, so no Content-Length says so.
    body = part("note", b"x" * 3000) + part("file", b"v" * (MiB - 1000), "talk.mp4") + b"--B--\r\n"
    status, detail, _ = asgi_post(app, pieces(body), {"X-API-Key": keys.alice, **FORM})
    assert status == 413, detail
    assert leftovers(root) == []


@pytest.mark.parametrize(("content_type", "body"), [
    ("multipart/form-data; boundary=B", b"this is not a form at all"),
    ("multipart/form-data; boundary=B", b"--B\r\nContent Disposition broken\r\n\r\nx\r\n--B--\r\n"),
    ("multipart/form-data; boundary=" + "b" * 300, b"--" + b"b" * 300 + b"\r\n"),  # longer than the parser takes
    ("multipart/form-data; boundary=B", part("file", b"half a vid", "talk.mp4")[:-8]),  # truncated
    ("multipart/form-data; boundary=B", b"--B--\r\n"),  # no file at all
])
def test_a_malformed_form_is_a_400_with_a_plain_message(root, keys, content_type, body):
    app = webapi.create_app(root, keys.store, max_bytes=MiB, **QUIET)
    with TestClient(app) as client:  # a 500 would raise here: TestClient re-raises the server's exceptions
        response = client.post("/lectures", content=body, headers={"X-API-Key": keys.alice,
                                                                   "Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert "Traceback" not in response.text and response.json()["detail"]
    assert leftovers(root) == []


def open_upload(port: int, key: str, head: dict[str, str] | None = None) -> socket.socket:
    """A POST /lectures whose headers are sent, and no body yet."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    lines = {"Host": "127.0.0.1", "X-API-Key": key, "X-Filename": "slow.mp4", **(head or {})}
    sock.sendall(("POST /lectures HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in lines.items())
                  + "\r\n").encode())
    return sock


def status_of(sock: socket.socket) -> int:
    answer = sock.recv(65536)
    return int(answer.split(b" ", 2)[1])


def test_a_16_mib_form_of_small_fields_costs_the_server_no_memory(root, keys):
    """uvicorn on loopback: the server answers after the first bytes, and its memory does not grow with the body."""
    app = webapi.create_app(root, keys.store, max_bytes=MiB)
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            peak[0] = max(peak[0], rss())

    with served(app) as port:
        sock = open_upload(port, keys.alice, {**FORM, "Transfer-Encoding": "chunked"})
        baseline = peak[0] = rss()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        sent = 0
        try:
            for chunk in small_fields(16 * MiB):
                if select.select([sock], [], [], 0)[0]:  # answered: a client stops sending
                    break
                try:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                except OSError:  # the server closed the connection: as good as an answer
                    break
                sent += len(chunk)
            else:
                sock.sendall(b"0\r\n\r\n")  # read to its end: the body ends
            status = status_of(sock)
        finally:
            stop.set()
            sampler.join()
            sock.close()
    growth = peak[0] - baseline
    print(f"\nrefused a form of small fields after {sent / KiB:.0f} KiB sent; peak RSS growth {growth / MiB:.1f} MiB")
    assert status == 400
    # How much the client got to send says little: the kernel's socket buffers take up to tcp_rmem + tcp_wmem
    # (36 MiB on some machines) unread. What the app read is counted in the ASGI test above.
    assert growth < 8 * MiB
    assert leftovers(root) == []


# --- item 6: disk, uploads at once, bytes a day, idle clients, half uploads ---------------------------

def test_an_upload_that_would_leave_the_disk_short_is_507_and_keeps_nothing(root, keys, monkeypatch):
    free = [10 * MiB]
    monkeypatch.setattr(uploads, "free_bytes", lambda folder: free[0], raising=False)  # the disk, as others fill it
    app = webapi.create_app(root, keys.store, max_bytes=100 * MiB, min_free_bytes=8 * MiB, **QUIET)

    def filling_up():  # another process fills the disk while this upload is written
        yield b"a" * (MiB // 2)
        free[0] = 9 * MiB
        yield b"b" * MiB  # the first write to disk (1.5 MiB): 9 - 1.5 < 8

    with TestClient(app) as client:
        headers = {"X-API-Key": keys.alice, "X-Filename": "talk.mp4"}
        up_front = client.post("/lectures", content=b"x" * (3 * MiB), headers=headers)  # 10 - 3 < 8: no byte read
        meanwhile = client.post("/lectures", content=filling_up(), headers=headers)
        assert leftovers(root) == []
        free[0] = 100 * MiB
        fine = client.post("/lectures", content=b"x" * (3 * MiB), headers=headers)
    assert up_front.status_code == 507 and "disk space" in up_front.json()["detail"]
    assert meanwhile.status_code == 507
    assert fine.status_code == 201


def test_a_full_disk_while_writing_is_no_space_and_leaves_nothing(root, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    incoming = uploads.Incoming(root, "talk.mp4", "k1", MiB)
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(uploads.NoSpace), incoming:
        incoming.write(b"bytes")
    assert leftovers(root) == []


def test_a_key_has_at_most_so_many_uploads_at_once_in_every_process(root, keys):
    app = webapi.create_app(root, keys.store, max_bytes=MiB, max_concurrent_uploads=2)

    def post(key: str, port: int) -> httpx.Response:
        return httpx.post(f"http://127.0.0.1:{port}/lectures", content=b"whole", timeout=10,
                          headers={"X-API-Key": key, "X-Filename": "quick.mp4"})

    with served(app) as port:
        slow = [open_upload(port, keys.alice, {"Content-Length": "20"}) for _ in range(2)]
        for sock in slow:
            sock.sendall(b"0123456789")  # half of each body: both in flight
        deadline = time.monotonic() + 10
        while len(os.listdir(root / "input")) < 2:
            assert time.monotonic() < deadline, os.listdir(root / "input")
            time.sleep(0.02)
        third = post(keys.alice, port)
        other_key = post(keys.bob, port)
        slow[0].sendall(b"0123456789")  # one of them ends
        assert status_of(slow[0]) == 201
        after_one_ended = post(keys.alice, port)
        for sock in slow:
            sock.close()
    assert third.status_code == 429 and int(third.headers["retry-after"]) > 0, third.text
    assert "uploads in flight" in third.json()["detail"]
    assert other_key.status_code == 201 and after_one_ended.status_code == 201


HOLD_SLOTS = """
import sys
from konspekt import uploads
held = [uploads.take_slot(sys.argv[1], sys.argv[2], 2) for _ in range(2)]
print("held", flush=True)
sys.stdin.read()
"""


def test_slots_held_by_another_worker_process_count_too(root, keys):
    """The api-server may run several worker processes: a key's uploads in flight are counted across them."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_SLOTS, str(root), keys.alice_id],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        app = webapi.create_app(root, keys.store, max_bytes=MiB, max_concurrent_uploads=2, **QUIET)
        with TestClient(app) as client:
            headers = {"X-API-Key": keys.alice, "X-Filename": "talk.mp4"}
            busy = client.post("/lectures", content=b"v", headers=headers)
            holder.stdin.close()  # the other process ends: the kernel lets go of its locks
            holder.wait(10)
            free = client.post("/lectures", content=b"v", headers=headers)
    finally:
        holder.kill()
        holder.wait()
    assert busy.status_code == 429 and free.status_code == 201


def test_a_key_may_send_so_many_bytes_a_day_counted_whether_kept_or_not(root, keys):
    app = webapi.create_app(root, keys.store, max_bytes=MiB, max_bytes_per_day=1000, **QUIET)
    with TestClient(app) as client:
        def post(content, key=keys.alice):
            return client.post("/lectures", content=content, headers={"X-API-Key": key, "X-Filename": "t.mp4"})

        first = post(b"a" * 600)
        announced = post(b"b" * 600)  # Content-Length says it: refused before a byte is read

        def chunked():
            yield b"c" * 300
            yield b"c" * 300

        streamed = post(chunked())  # no length: refused once past the 400 left
        other_key = post(b"d" * 600, keys.bob)
    assert first.status_code == 201 and other_key.status_code == 201
    assert announced.status_code == 429 and announced.headers["retry-after"] == "3600", announced.text
    assert streamed.status_code == 429
    assert sorted(os.listdir(root / "input")) == ["t (2).mp4", "t.mp4"]
    assert uploads.bytes_today(root, keys.alice_id) == 1200  # the refused upload's 600 bytes count too
    assert uploads.bytes_today(root, keys.alice_id, now=time.time() + 24 * 3600) == 0  # a day later


def test_a_cut_off_upload_s_bytes_count_for_the_day(root, keys):
    app = webapi.create_app(root, keys.store, max_bytes=MiB, max_bytes_per_day=1000, **QUIET)
    status, _, pulled = asgi_post(app, [b"x" * 700], {"X-API-Key": keys.alice, "X-Filename": "t.mp4"},
                                  cut_off=True)
    assert status == 400 and pulled == 700
    assert uploads.bytes_today(root, keys.alice_id) == 700
    assert leftovers(root) == []


def test_a_client_that_stops_sending_is_dropped_and_leaves_nothing(root, keys):
    app = webapi.create_app(root, keys.store, max_bytes=MiB, idle_timeout=0.5, **QUIET)
    started = time.monotonic()
    status, body, _ = asgi_post(app, [b"x" * 1000], {"X-API-Key": keys.alice, "X-Filename": "t.mp4"}, stall=True)
    assert status == 408 and b"nothing arrived for 0.5 s" in body
    assert time.monotonic() - started < 10
    assert leftovers(root) == []


def test_a_client_that_stops_sending_is_dropped_by_the_real_server(root, keys):
    app = webapi.create_app(root, keys.store, max_bytes=MiB, idle_timeout=0.5, max_concurrent_uploads=1)
    with served(app) as port:
        sock = open_upload(port, keys.alice, {"Content-Length": "1000"})
        sock.sendall(b"x" * 10)  # ... and then nothing
        sock.settimeout(5)
        try:
            status = status_of(sock)
        except TimeoutError:
            status = None  # still waiting for the body
        finally:
            sock.close()
        again = httpx.post(f"http://127.0.0.1:{port}/lectures", content=b"whole", timeout=10,
                           headers={"X-API-Key": keys.alice, "X-Filename": "t.mp4"})
    assert status == 408
    assert again.status_code == 201  # its slot is free again
    assert sorted(os.listdir(root / "input")) == ["t.mp4"]


def test_the_sweep_never_takes_an_upload_still_being_written(root):
    writing = uploads.Incoming(root, "slow.mp4", "k1", MiB)  # in flight, however slowly: it holds its lock
    writing.write(b"first bytes")
    left = root / "input" / f"{uploads.TEMP_PREFIX}{'0' * 32}{uploads.TEMP_SUFFIX}"  # its writer is gone
    left.write_bytes(b"half")
    for path in (writing.tmp, left):
        age(path, 3600)
    assert uploads.sweep_temps(root, older_than=600) == [left]
    writing.write(b" and the rest")
    upload = writing.commit()
    assert (root / "input" / upload.input_name).read_bytes() == b"first bytes and the rest"


def test_half_uploads_are_swept_on_a_schedule(root, keys):
    app = webapi.create_app(root, keys.store, max_bytes=MiB, sweep_seconds=0.3)
    with TestClient(app):
        left = root / "input" / f"{uploads.TEMP_PREFIX}{'1' * 32}{uploads.TEMP_SUFFIX}"
        left.write_bytes(b"half")  # after the start: only a later sweep can take it
        age(left, 60)
        deadline = time.monotonic() + 10
        while left.exists():
            assert time.monotonic() < deadline, "not swept"
            time.sleep(0.05)


def test_the_settings_reach_the_api(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "dags"))
    from konspekt_dags.settings import Settings

    for name, value in {"MIN_FREE_GB": "3", "API_MAX_CONCURRENT_UPLOADS": "4", "API_MAX_GB_PER_DAY": "7",
                        "API_IDLE_TIMEOUT_SECONDS": "30", "API_DOCS": "true"}.items():
        monkeypatch.setenv(f"KONSPEKT_{name}", value)
    settings = Settings()
    assert (settings.min_free_gb, settings.api_max_concurrent_uploads, settings.api_max_gb_per_day,
            settings.api_idle_timeout_seconds, settings.api_docs) == (3, 4, 7, 30, True)
    for name in ("MIN_FREE_GB", "API_MAX_CONCURRENT_UPLOADS", "API_MAX_GB_PER_DAY", "API_IDLE_TIMEOUT_SECONDS",
                 "API_DOCS"):
        monkeypatch.delenv(f"KONSPEKT_{name}")
    defaults = Settings()
    assert (defaults.min_free_gb, defaults.api_max_concurrent_uploads, defaults.api_max_gb_per_day,
            defaults.api_idle_timeout_seconds, defaults.api_docs) == (2, 2, 50, 60, False)

