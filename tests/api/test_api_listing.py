"""What listing costs (issue 30, item 5): ``GET /lectures`` reads the same files however many lectures
others have in ``output/`` and ``failed/``, reads ``processing/`` once, reads only the key's own records,
and comes a page at a time. Reads are counted, not timed (bench/api_listing.py has the times)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path

import pytest
from api_helpers import (
    age,
    client,  # noqa: F401  (fixtures)
    finish,
    keys,  # noqa: F401
    root,  # noqa: F401
)
from fastapi.testclient import TestClient

from konspekt import apikeys, inbox, registry, uploads, webapi
from konspekt.layout import write_json

NEXT = re.compile(r'<([^>]+)>; rel="next"')


class Reads:
    """Files opened and folders listed under ``root`` while counting."""

    def __init__(self, monkeypatch, root: Path) -> None:
        self.root, self.paths = str(root), []
        opened, scandir, listdir = io.open, os.scandir, os.listdir

        def counted(real):
            def call(path=".", *args, **kwargs):
                if str(path).startswith(self.root):
                    self.paths.append(str(path))
                return real(path, *args, **kwargs)
            return call

        monkeypatch.setattr(io, "open", counted(opened))
        monkeypatch.setattr(os, "scandir", counted(scandir))
        monkeypatch.setattr(os, "listdir", counted(listdir))

    def of(self, pattern: str) -> list[str]:
        return [p for p in self.paths if re.search(pattern, p)]


def make_root(base: Path) -> Path:
    for sub in ("input", "output", "processing", "processed", "failed"):
        (base / sub).mkdir(parents=True)
    return base


def claim(root):
    for path in (root / "input").iterdir():
        age(path)
    return inbox.claim(root, stable_seconds=1)


def others(root: Path, count: int) -> None:
    """``count`` lectures of other people in output/ and as many in failed/, as the pipeline leaves them."""
    for i in range(count):
        digest = hashlib.sha256(f"other {i}".encode()).hexdigest()
        write_json(root / "output" / f"other {i}" / "manifest.json",
                   {"video": {"name": f"other {i}.mp4", "sha256": digest, "claimed_at": "2099-01-01"}})
        write_json(root / "failed" / f"bad {i}" / "error.json",
                   {"file": f"bad {i}.mp4", "sha256": digest, "reason": "not a video", "claimed_at": "2099-01-01"})


def a_key_in_every_state(root: Path, key_id: str) -> None:
    """Two published, one quarantined, one processing, one waiting, one removed by hand."""
    for i in range(4):
        uploads.receive([f"lecture {i}".encode()], f"lecture {i}.mp4", root, key_id, 1 << 20)
    done, bad, busy, gone = claim(root)
    finish(done.video_dir, {s: "ok" for s in registry.lecture_names()})
    finish(bad.video_dir, {"extract_audio": "bad_input"})
    for c in (done, bad):
        inbox.finalize(root, c.video_dir)
    inbox._discard(gone.video_dir)
    uploads.receive([b"lecture 0"], "again.mp4", root, key_id, 1 << 20)  # its bytes again: archived, published
    claim(root)
    uploads.receive([b"lecture 5"], "waiting.mp4", root, key_id, 1 << 20)


@pytest.mark.parametrize("api", ["list", "state"])
def test_the_reads_of_a_list_do_not_grow_with_the_outputs_of_others(tmp_path, monkeypatch, api):
    counts, answers = {}, {}
    for count in (10, 1000):
        root = make_root(tmp_path / str(count))
        key_id, key = apikeys.create(apikeys.default_store(root), "lecturer")
        a_key_in_every_state(root, key_id)
        others(root, count)
        with TestClient(webapi.create_app(root)) as client:
            listed = client.get("/lectures", headers={"X-API-Key": key}).json()  # any one-time work done
            ids = [x["id"] for x in listed]
            with monkeypatch.context() as patch:
                reads = Reads(patch, root)
                if api == "list":
                    answer = [x["status"] for x in client.get("/lectures", headers={"X-API-Key": key}).json()]
                else:
                    answer = [uploads.state(root, i) for i in ids]
        counts[count] = len(reads.paths)
        answers[count] = sorted((s["state"], s.get("output") or s.get("failed")) for s in answer)
        assert not reads.of(r"/(output|failed)/(other|bad) "), reads.of(r"/(output|failed)/(other|bad) ")[:5]
    assert answers[10] == answers[1000] == sorted([
        ("published", "output/lecture 0"), ("published", "output/lecture 0"), ("quarantined", "failed/lecture 1"),
        ("processing", None), ("unknown", None), ("waiting", None)])
    assert counts[10] == counts[1000], counts


def test_processing_is_read_once_for_the_whole_list(root, keys, client):
    for i in range(6):
        uploads.receive([f"lecture {i}".encode()], f"lecture {i}.mp4", root, keys.alice_id, 1 << 20)
    assert len(claim(root)) == 6
    client.get("/lectures", headers={"X-API-Key": keys.alice})
    with pytest.MonkeyPatch.context() as patch:
        reads = Reads(patch, root)
        listed = client.get("/lectures", headers={"X-API-Key": keys.alice}).json()
    assert [x["status"]["state"] for x in listed] == ["processing"] * 6
    records = reads.of(r"/processing/[^/]+/\.[^/]+\.json$")  # the claims' records
    assert len(records) == len(set(records)) == 6, records


def test_a_keys_list_reads_only_its_own_records(root, keys, client):
    for i in range(30):
        uploads.receive([f"bob {i}".encode()], f"bob {i}.mp4", root, keys.bob_id, 1 << 20)
    mine = [uploads.receive([f"alice {i}".encode()], f"alice {i}.mp4", root, keys.alice_id, 1 << 20).id
            for i in range(3)]
    with pytest.MonkeyPatch.context() as patch:
        reads = Reads(patch, root)
        listed = client.get("/lectures", headers={"X-API-Key": keys.alice}).json()
    assert sorted(x["id"] for x in listed) == sorted(mine)
    assert sorted(Path(p).stem for p in reads.of(r"/api/lectures/[0-9a-f]+\.json$")) == sorted(mine)


def test_the_list_comes_a_page_at_a_time_newest_first(root, keys, client):
    alice = {"X-API-Key": keys.alice}
    sent = [client.post("/lectures", content=f"v{i}".encode(), headers={**alice, "X-Filename": f"{i}.mp4"}).json()["id"]
            for i in range(5)]
    bobs = client.post("/lectures", content=b"b", headers={"X-API-Key": keys.bob, "X-Filename": "b.mp4"}).json()["id"]
    pages, url = [], "/lectures?limit=2"
    while url:
        response = client.get(url, headers=alice)
        assert response.status_code == 200, response.text
        pages.append([x["id"] for x in response.json()])
        found = NEXT.search(response.headers.get("link", ""))
        url = found.group(1) if found else ""
    assert pages == [sent[4:2:-1], sent[2:0:-1], sent[:1]]
    assert [x["id"] for x in client.get("/lectures", headers=alice).json()] == sent[::-1]  # 50 by default
    for bad in ("limit=0", f"limit={webapi.MAX_PAGE + 1}", "limit=x"):
        assert client.get(f"/lectures?{bad}", headers=alice).status_code == 422, bad
    for cursor in (bobs, "f" * 32, "../x"):  # another key's lecture is no cursor, as an id nobody has
        response = client.get(f"/lectures?cursor={cursor}", headers=alice)
        assert response.status_code == 400 and bobs not in response.text


def test_lectures_finished_before_the_notes_are_still_found(root, keys, client):
    """A data root of the version before: no notes of outcomes, no lists per key, manifests without ids."""
    alice = {"X-API-Key": keys.alice}
    sent = [client.post("/lectures", content=data, headers={**alice, "X-Filename": name}).json()["id"]
            for name, data in (("good.mp4", b"good"), ("bad.mp4", b"bad"))]
    bad, good = claim(root)  # claimed by name
    finish(good.video_dir, {s: "ok" for s in registry.lecture_names()})
    finish(bad.video_dir, {"extract_audio": "bad_input"})
    for c in (good, bad):
        inbox.finalize(root, c.video_dir)
    for path in (root / "output" / "good" / "manifest.json", root / "failed" / "bad" / "error.json"):
        data = json.loads(path.read_text())
        for facts in (data.get("video", data), data):
            for k in ("upload_id", "uploaded_by"):
                facts.pop(k, None)
        path.write_text(json.dumps(data))
    for folder in ("outcomes", "by-key"):
        for path in sorted((root / "api" / folder).iterdir()):
            path.unlink()
        (root / "api" / folder).rmdir()
    listed = client.get("/lectures", headers=alice).json()
    # listed from the records (uploads within one second come in no particular order)
    assert {x["id"]: x["status"]["state"] for x in listed} == {sent[0]: "published", sent[1]: "quarantined"}
    assert client.get(f"/lectures/{sent[0]}/report.pdf", headers=alice).status_code == 404  # none made here
    assert client.get(f"/lectures/{sent[0]}", headers=alice).json()["output"] == "output/good"
    # found once by name, then noted: the next look is one read
    assert json.loads(inbox.outcome_file(root, sent[0]).read_text())["output"] == "output/good"
    assert json.loads(inbox.outcome_file(root, sent[1]).read_text())["failed"] == "failed/bad"


def test_finalize_goes_on_when_the_note_cannot_be_written(root, caplog):
    upload = uploads.receive([b"lecture"], "talk.mp4", root, "keyA", 1 << 20)
    (root / "api" / "outcomes").write_text("not a folder")  # every note fails
    [c] = claim(root)
    finish(c.video_dir, {s: "ok" for s in registry.lecture_names()})
    assert inbox.finalize(root, c.video_dir).destination == "output/talk"
    assert f"could not note the outcome of upload {upload.id}" in caplog.text
    now = uploads.state(root, upload.id)  # found by its name instead
    assert now["state"] == "published" and now["output"] == "output/talk"
