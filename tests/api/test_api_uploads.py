"""The storage side of uploads: names, atomic arrival in input/, nothing left by a cut-off upload,
and the state of an upload read from the pipeline's own folders (made with inbox's own functions)."""

from __future__ import annotations

import hashlib
import json
import os
import threading

import pytest
from api_helpers import (
    age,
    finish,
    root,  # noqa: F401  (fixtures)
)

from konspekt import inbox, registry, uploads


def chunks(data: bytes, size: int = 1000):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def send(root, name, data=b"video bytes", key="k1", max_bytes=1 << 30, **kw):
    return uploads.receive(chunks(data), name, root, key, max_bytes, **kw)


def input_names(root):
    return sorted(os.listdir(root / "input"))


CYRILLIC = "Лекция по матанализу"


@pytest.mark.parametrize(("given", "expected"), [
    ("../../etc/passwd", "passwd"),
    ("..", "upload"),
    ("/abs/path/talk.mp4", "talk.mp4"),
    ("C:\\Users\\me\\..\\talk.mp4", "talk.mp4"),
    ("a\x00b\nc.mp4", "a_b_c.mp4"),
    (f"{CYRILLIC}.mp4", f"{CYRILLIC}.mp4"),
    (".hidden.mp4", "hidden.mp4"),
    ("~$lock.mp4", "$lock.mp4"),
    ("talk.mp4.part", "talk.mp4"),
    ("talk.mp4.crdownload.tmp", "talk.mp4"),
    ("", "upload"),
])
def test_names_become_one_plain_component_the_watch_folder_takes(root, given, expected):
    upload = send(root, given)
    assert upload.input_name == expected and upload.original_name == given
    assert input_names(root) == [expected]
    assert [e.name for e in inbox.scan(root / "input")] == [expected]  # a claim would take it
    assert (root / "input" / expected).read_bytes() == b"video bytes"


def test_a_name_over_255_bytes_is_cut_on_a_character_boundary_keeping_its_extension(root):
    long = "Я" * 200 + ".mp4"  # 404 bytes of UTF-8
    first, second = send(root, long), send(root, long)
    for upload in (first, second):
        raw = upload.input_name.encode("utf-8")  # valid UTF-8: no character was cut in half
        assert len(raw) <= inbox.NAME_BYTES and upload.input_name.endswith(".mp4")
        assert inbox.fit_name(upload.input_name) == upload.input_name  # claim will not change it
    assert second.input_name.endswith(" (2).mp4") and first.input_name != second.input_name
    assert input_names(root) == sorted([first.input_name, second.input_name])


def test_a_name_in_use_is_never_overwritten(root):
    (root / "input" / "talk.mp4").write_bytes(b"the user's own file")
    upload = send(root, "talk.mp4")
    assert upload.input_name == "talk (2).mp4"
    assert (root / "input" / "talk.mp4").read_bytes() == b"the user's own file"
    assert send(root, "talk.mp4").input_name == "talk (3).mp4"


def test_concurrent_uploads_of_one_name_each_get_their_own_file(root):
    results, barrier = {}, threading.Barrier(8)

    def upload(i):
        def stream():
            barrier.wait()
            yield from chunks(f"upload {i} ".encode() * 1000)
        results[i] = uploads.receive(stream(), "same.mp4", root, "k1", 1 << 30)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = [results[i].input_name for i in range(8)]
    assert len(set(names)) == 8 and sorted(names) == input_names(root)
    for i in range(8):  # each name holds exactly its own bytes
        assert (root / "input" / names[i]).read_bytes() == f"upload {i} ".encode() * 1000


def test_an_upload_cut_off_mid_stream_leaves_nothing(root):
    def cut_off():
        yield b"x" * 100_000
        yield b"y" * 100_000
        raise ConnectionResetError("the client went away")

    with pytest.raises(ConnectionResetError):
        uploads.receive(cut_off(), "talk.mp4", root, "k1", 1 << 30)
    assert input_names(root) == []  # not even the hidden temp file
    assert not list(uploads.lectures_dir(root).glob("*.json"))


def test_an_upload_over_the_limit_leaves_nothing(root):
    with pytest.raises(uploads.TooLarge):
        send(root, "big.mp4", b"z" * 5000, max_bytes=4999)
    assert input_names(root) == []
    assert send(root, "exact.mp4", b"z" * 5000, max_bytes=5000).size == 5000  # the limit itself is allowed


def test_the_record_names_key_name_size_and_hash(root):
    upload = send(root, "../Лекция.mp4", b"abc", key="keyA", callback_url="http://example.org/hook")
    record = json.loads((root / "api" / "lectures" / f"{upload.id}.json").read_text())
    assert record["id"] == upload.id and len(upload.id) == 32
    assert record["key_id"] == "keyA" and record["original_name"] == "../Лекция.mp4"
    assert record["input_name"] == "Лекция.mp4" and record["size"] == 3
    assert record["sha256"] == hashlib.sha256(b"abc").hexdigest() and record["created"]
    assert record["callback_url"] == "http://example.org/hook"
    assert uploads.load(root, upload.id) == upload
    assert uploads.load(root, "../../etc/passwd") is None


def test_state_follows_the_file_through_the_pipeline(root):
    upload = send(root, "talk.mp4", b"good lecture")
    assert uploads.state(root, upload.id)["state"] == "waiting"
    age(root / "input" / "talk.mp4")
    [c] = inbox.claim(root, stable_seconds=1)
    now = uploads.state(root, upload.id)
    assert now["state"] == "processing" and now["stage"] == "extract_audio" and now["stages_done"] == []
    finish(c.video_dir, {"extract_audio": "ok"})
    now = uploads.state(root, upload.id)
    assert now["stage"] == "transcribe" and now["stages_done"] == ["extract_audio"]
    for name in ("report.pdf", "transcript.txt", "transcript.srt"):
        (c.video_dir / name).write_text(name)
    finish(c.video_dir, {s: "ok" for s in registry.lecture_names()})
    assert inbox.finalize(root, c.video_dir).destination == "output/talk"
    now = uploads.state(root, upload.id)
    assert now["state"] == "published" and now["output"] == "output/talk"
    assert now["files"] == ["manifest.json", "report.pdf", "transcript.srt", "transcript.txt"]
    assert now["downloads"] == ["report.pdf", "transcript.srt", "transcript.txt"]
    path = uploads.output_file(root, upload.id, "report.pdf")
    assert path is not None and path.read_text() == "report.pdf"


def test_a_held_video_is_still_processing_with_the_reason(root):
    upload = send(root, "a.mp4", b"held lecture")
    age(root / "input" / "a.mp4")
    [c] = inbox.claim(root, stable_seconds=1)
    finish(c.video_dir, {"extract_audio": "ok", "transcribe": "error"})
    assert inbox.finalize(root, c.video_dir).status == "held"
    now = uploads.state(root, upload.id)
    assert now["state"] == "processing" and now["stage"] == "transcribe"
    assert now["held"]["stage"] == "transcribe" and "transcribe said error" in now["held"]["reason"]


def test_a_bad_file_is_quarantined_with_the_reason(root):
    upload = send(root, "broken.mp4", b"not a video")
    age(root / "input" / "broken.mp4")
    [c] = inbox.claim(root, stable_seconds=1)
    finish(c.video_dir, {"extract_audio": "bad_input"})
    inbox.finalize(root, c.video_dir)
    now = uploads.state(root, upload.id)
    assert now == {**now, "state": "quarantined", "failed": "failed/broken", "stage": "extract_audio",
                   "reason": "extract_audio said bad_input"}
    assert uploads.output_file(root, upload.id, "report.pdf") is None


def test_a_file_refused_at_claim_time_is_found_in_failed_by_its_inode(root):
    upload = send(root, "huge.mp4", b"0123456789")
    age(root / "input" / "huge.mp4")
    assert inbox.claim(root, stable_seconds=1, max_bytes=5) == []  # error.json holds no sha256 then
    now = uploads.state(root, upload.id)
    assert now["state"] == "quarantined" and "over the limit" in now["reason"]


def test_a_new_file_under_a_reused_name_is_not_mistaken_for_an_old_upload(root):
    first = send(root, "talk.mp4", b"first")
    age(root / "input" / "talk.mp4")
    [c] = inbox.claim(root, stable_seconds=1)
    second = send(root, "talk.mp4", b"second")  # the name is free again: another upload takes it
    assert second.input_name == "talk.mp4"
    assert uploads.state(root, first.id)["state"] == "processing"
    assert uploads.state(root, second.id)["state"] == "waiting"
    inbox._discard(c.video_dir)  # removed by hand: the first upload is nowhere now
    assert uploads.state(root, first.id)["state"] == "unknown"


def test_output_file_takes_only_allowed_names_and_no_link_out(root, tmp_path):
    upload = send(root, "talk.mp4", b"lecture")
    age(root / "input" / "talk.mp4")
    [c] = inbox.claim(root, stable_seconds=1)
    (c.video_dir / "report.pdf").write_text("pdf")
    (c.video_dir / "transcript.txt").write_text("text")
    finish(c.video_dir, {s: "ok" for s in registry.lecture_names()})
    inbox.finalize(root, c.video_dir)
    out = root / "output" / "talk"
    for name in ("manifest.json", "../talk/report.pdf", "report.pdf/..", "/etc/passwd", "audio.wav", ""):
        assert uploads.output_file(root, upload.id, name) is None, name
    assert uploads.output_file(root, upload.id, "transcript.vtt") is None  # allowed, but not there
    secret = tmp_path / "secret.txt"
    secret.write_text("another user's notes")
    (out / "transcript.txt").unlink()
    (out / "transcript.txt").symlink_to(secret)  # a link planted in the output folder
    assert uploads.output_file(root, upload.id, "transcript.txt") is None
    assert uploads.output_file(root, upload.id, "report.pdf") == out.resolve() / "report.pdf"


def test_old_temp_files_of_a_killed_server_are_swept(root):
    old = root / "input" / f"{uploads.TEMP_PREFIX}{'a' * 32}{uploads.TEMP_SUFFIX}"
    fresh = root / "input" / f"{uploads.TEMP_PREFIX}{'b' * 32}{uploads.TEMP_SUFFIX}"
    for path in (old, fresh):
        path.write_bytes(b"half")
    assert inbox.scan(root / "input") == []  # the watch folder never sees them
    age(old, 2 * 24 * 3600)
    assert uploads.sweep_temps(root) == [old]
    assert input_names(root) == [fresh.name]
