import json
import os
import threading
import time

from konspekt import inbox
from konspekt.contracts import StageResult
from konspekt.layout import VideoDir, write_json


def data_root(tmp_path):
    for sub in ("input", "output", "processing", "processed", "failed"):
        (tmp_path / sub).mkdir()
    return tmp_path


def age(path, seconds=60):
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_claim_takes_complete_files_and_ignores_temp_ones(tmp_path):
    root = data_root(tmp_path)
    names = ["lecture one.mp4", "Лекция 'два' $(x).mkv", "-rf.webm"]
    ignored = [".hidden.mp4", "movie.mp4.part", "movie.mp4.crdownload", "~$lock.mp4", "x.tmp"]
    for name in names + ignored:
        (root / "input" / name).write_bytes(name.encode())
        age(root / "input" / name)
    claims = inbox.claim(root, stable_seconds=5)
    assert sorted(c.name for c in claims) == sorted(names)
    assert sorted(p.name for p in (root / "input").iterdir()) == sorted(ignored)
    for c in claims:
        video = VideoDir(c.video_dir)
        assert video.source.read_bytes() == c.name.encode()
        assert video.meta["sha256"] == c.sha256 and video.meta["size"] == len(c.name.encode())
        assert c.video_dir.parent.parent == root / "processing"
    assert inbox.claim(root, stable_seconds=5) == []  # each file is claimed once


def test_a_growing_file_waits_until_it_is_stable(tmp_path):
    root = data_root(tmp_path)
    target = root / "input" / "slow copy.mp4"
    stop = threading.Event()

    def writer():
        with open(target, "ab") as fh:
            while not stop.is_set():
                fh.write(b"x" * 1000)
                fh.flush()
                time.sleep(0.2)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        assert inbox.claim(root, stable_seconds=1.0, wait_seconds=2.0) == []  # still growing
    finally:
        stop.set()
        thread.join()
    size = target.stat().st_size
    claims = inbox.claim(root, stable_seconds=1.0, wait_seconds=5.0)
    assert [c.size for c in claims] == [size]


def finish(video_dir, statuses):
    video = VideoDir(video_dir)
    for stage, status in statuses.items():
        write_json(video.result_path(stage), StageResult(stage, status, message=f"{stage} said {status}"))


def test_finalize_publishes_results_and_archives_the_input(tmp_path):
    root = data_root(tmp_path)
    (root / "input" / "my talk.mp4").write_bytes(b"video bytes")
    age(root / "input" / "my talk.mp4")
    [c] = inbox.claim(root, stable_seconds=1)
    for name in ("report.pdf", "transcript.txt", "audio.wav"):
        (c.video_dir / name).write_text(name)
    finish(c.video_dir, {s: "ok" for s in inbox.STAGES})
    outcome = inbox.finalize(root, c.video_dir)
    assert outcome.status == "ok" and outcome.destination == "output/my talk"
    out = root / "output" / "my talk"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "report.pdf", "transcript.txt"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["video"]["sha256"] == c.sha256 and set(manifest["stages"]) == set(inbox.STAGES)
    [archived] = (root / "processed").rglob("my talk.mp4")
    assert archived.read_bytes() == b"video bytes"
    assert not c.video_dir.exists()


def test_a_second_drop_with_the_same_name_gets_its_own_folder(tmp_path):
    root = data_root(tmp_path)
    for content in (b"first", b"second"):
        (root / "input" / "talk.mp4").write_bytes(content)
        age(root / "input" / "talk.mp4")
        [c] = inbox.claim(root, stable_seconds=1)
        finish(c.video_dir, {s: "ok" for s in inbox.STAGES})
        inbox.finalize(root, c.video_dir, keep_byproducts=True)
    assert sorted(p.name for p in (root / "output").iterdir()) == ["talk", "talk (2)"]


def test_finalize_quarantines_a_bad_file_with_the_reason(tmp_path):
    root = data_root(tmp_path)
    (root / "input" / "broken.mp4").write_bytes(b"not a video")
    age(root / "input" / "broken.mp4")
    [c] = inbox.claim(root, stable_seconds=1)
    finish(c.video_dir, {"extract_audio": "bad_input"})
    outcome = inbox.finalize(root, c.video_dir)
    assert outcome.status == "failed" and outcome.stage == "extract_audio"
    failed = root / "failed" / "broken"
    assert (failed / "broken.mp4").read_bytes() == b"not a video"
    error = json.loads((failed / "error.json").read_text())
    assert error["reason"] == "extract_audio said bad_input" and error["stage"] == "extract_audio"
    assert not list((root / "output").iterdir())


def test_a_stage_that_never_finished_is_reported(tmp_path):
    root = data_root(tmp_path)
    (root / "input" / "a.mp4").write_bytes(b"x")
    age(root / "input" / "a.mp4")
    [c] = inbox.claim(root, stable_seconds=1)
    finish(c.video_dir, {"extract_audio": "ok", "transcribe": "ok"})
    outcome = inbox.finalize(root, c.video_dir)
    assert outcome.stage == "summarize" and "did not run to completion" in outcome.reason
    assert (root / "failed" / "a" / "a.mp4").read_bytes() == b"x"


def test_slug_and_display_names():
    assert inbox.slug("Лекция 'один' $(rm -rf ~)") == "Лекция_один_rm_-rf"
    assert inbox.slug("...") == "video"
    assert inbox.display_name("../../etc/passwd") == "_.._etc_passwd"
    assert inbox.display_name(".hidden talk") == "hidden talk"
