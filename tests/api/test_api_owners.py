"""The same bytes from two senders (issue 30, item 8): a key that uploads the bytes of another key's
lecture (or of a watch-folder drop) gets its own result, never the other's folder name or notes; the
same key sending its bytes again still gets its earlier notes, and the watch folder behaves as before."""

from __future__ import annotations

import json
import logging

from api_helpers import (
    age,
    client,  # noqa: F401  (fixtures)
    finish,
    keys,  # noqa: F401
    root,  # noqa: F401
)

from konspekt import inbox, registry, uploads

LECTURE = b"the bytes of one lecture"


def send(root, name, key_id, data=LECTURE):
    return uploads.receive([data], name, root, key_id, 1 << 30)


def claim(root):
    for path in (root / "input").iterdir():
        age(path)
    return inbox.claim(root, stable_seconds=1)


def process(root, claims, notes):
    """Each claim through every stage, its report and transcript saying ``notes``, then finalized."""
    for c in claims:
        for name in ("report.pdf", "transcript.txt"):
            (c.video_dir / name).write_text(notes)
        finish(c.video_dir, {s: "ok" for s in registry.lecture_names()})
        inbox.finalize(root, c.video_dir)


def manifest(root, folder):
    return json.loads((root / "output" / folder / "manifest.json").read_text())["video"]


def test_a_key_sending_another_keys_bytes_gets_its_own_notes_not_theirs(root, keys, client):
    alice, bob = {"X-API-Key": keys.alice}, {"X-API-Key": keys.bob}
    first = client.post("/lectures", content=LECTURE, headers={**alice, "X-Filename": "seminar-alice.mp4"}).json()
    process(root, claim(root), "alice's notes")
    assert client.get(f"/lectures/{first['id']}", headers=alice).json()["output"] == "output/seminar-alice"

    second = client.post("/lectures", content=LECTURE, headers={**bob, "X-Filename": "mine.mp4"}).json()
    claims = claim(root)
    seen = client.get(f"/lectures/{second['id']}", headers=bob)
    assert seen.json()["state"] == "processing"  # processed for bob, not taken for alice's lecture
    assert "seminar-alice" not in seen.text
    assert client.get(f"/lectures/{second['id']}/report.pdf", headers=bob).status_code == 404
    process(root, claims, "bob's notes")

    seen = client.get(f"/lectures/{second['id']}", headers=bob)
    assert seen.json()["state"] == "published" and seen.json()["output"] == "output/mine"
    for name in ("report.pdf", "transcript.txt"):
        assert client.get(f"/lectures/{second['id']}/{name}", headers=bob).text == "bob's notes"
    listed = client.get("/lectures", headers=bob)
    assert [x["id"] for x in listed.json()] == [second["id"]] and "seminar-alice" not in listed.text
    assert manifest(root, "mine")["uploaded_by"] == keys.bob_id
    assert manifest(root, "seminar-alice")["uploaded_by"] == keys.alice_id
    # and alice's lecture is still hers alone
    assert client.get(f"/lectures/{first['id']}/report.pdf", headers=alice).text == "alice's notes"


def test_the_same_name_and_bytes_from_another_key_go_to_a_folder_of_their_own(root):
    first = send(root, "talk.mp4", "keyA")
    process(root, claim(root), "A's notes")
    second = send(root, "talk.mp4", "keyB")
    process(root, claim(root), "B's notes")
    assert sorted(p.name for p in (root / "output").iterdir()) == ["talk", "talk (2)"]
    assert uploads.state(root, first.id)["output"] == "output/talk"
    assert uploads.state(root, second.id)["output"] == "output/talk (2)"
    assert uploads.output_file(root, second.id, "report.pdf").read_text() == "B's notes"
    assert uploads.output_file(root, first.id, "report.pdf").read_text() == "A's notes"


def test_the_same_key_sending_its_bytes_again_gets_its_earlier_notes(root, caplog):
    first = send(root, "talk.mp4", "keyA")
    process(root, claim(root), "A's notes")
    again = send(root, "talk again.mp4", "keyA")
    caplog.set_level(logging.WARNING, logger="konspekt.inbox")
    assert claim(root) == []  # archived, as before: nothing is made twice for one sender
    assert "talk again.mp4: already processed as output/talk" in caplog.text
    assert [p.name for p in (root / "output").iterdir()] == ["talk"]
    for upload in (first, again):
        now = uploads.state(root, upload.id)
        assert now["state"] == "published" and now["output"] == "output/talk"
        assert uploads.output_file(root, upload.id, "report.pdf").read_text() == "A's notes"


def test_the_watch_folder_and_a_key_never_share_a_result(root, caplog):
    (root / "input" / "talk.mp4").write_bytes(LECTURE)  # dropped into the watch folder
    process(root, claim(root), "the watch folder's notes")
    assert "uploaded_by" not in manifest(root, "talk")
    upload = send(root, "talk.mp4", "keyA")
    process(root, claim(root), "A's notes")
    now = uploads.state(root, upload.id)
    assert now["state"] == "published" and now["output"] == "output/talk (2)"
    assert uploads.output_file(root, upload.id, "report.pdf").read_text() == "A's notes"
    # a drop of those bytes again is archived as before, against the watch folder's own result
    caplog.set_level(logging.WARNING, logger="konspekt.inbox")
    (root / "input" / "talk copy.mp4").write_bytes(LECTURE)
    assert claim(root) == []
    assert "talk copy.mp4: already processed as output/talk;" in caplog.text
    # and a key's bytes dropped into the watch folder are the watch folder's, made again
    other = send(root, "other.mp4", "keyA", b"another lecture")
    process(root, claim(root), "A's other notes")
    (root / "input" / "other copy.mp4").write_bytes(b"another lecture")
    [dropped] = claim(root)
    assert dropped.uploaded_by is None and uploads.state(root, other.id)["output"] == "output/other"


def test_a_stale_note_never_makes_a_drop_count_as_a_keys(root):
    drop = root / "input" / "talk.mp4"
    drop.write_bytes(b"a drop of the watch folder")
    st = drop.stat()  # as if an upload of other bytes had had this inode before
    stale = inbox.uploader_file(root, (st.st_dev, st.st_ino))
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"upload_id": "a" * 32, "key_id": "keyA", "size": st.st_size,
                                 "sha256": "0" * 64}))
    [c] = claim(root)
    assert c.uploaded_by is None
    assert "uploaded_by" not in json.loads(inbox.record_path(c.video_dir).read_text())


def test_the_claim_takes_the_note_of_the_uploader_and_leaves_none(root):
    upload = send(root, "talk.mp4", "keyA")
    assert list((root / "api" / "uploaders").iterdir())  # written before the file had its name
    [c] = claim(root)
    assert (c.uploaded_by, c.upload_id) == ("keyA", upload.id)
    record = json.loads(inbox.record_path(c.video_dir).read_text())
    assert (record["uploaded_by"], record["upload_id"]) == ("keyA", upload.id)
    assert "uploaded_by" not in json.loads((c.video_dir / "video.json").read_text())  # not the stages' business
    assert not list((root / "api" / "uploaders").iterdir())
