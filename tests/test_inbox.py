import json
import logging
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
    again = inbox.claim(root, stable_seconds=5)  # each file is claimed once; unfinished ones are resumed
    assert all(c.adopted for c in again) and sorted(c.video_dir for c in again) == sorted(c.video_dir for c in claims)


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


MODELS = {"transcribe": "tiny.en", "summarize": "bart"}


def finish(video_dir, statuses):
    video = VideoDir(video_dir)
    for stage, status in statuses.items():
        details = {"model": MODELS[stage]} if stage in MODELS else {}
        versions = {"konspekt": "test", **({"opensmile": "2.5"} if stage == "features" else {})}
        write_json(video.result_path(stage), StageResult(stage, status, message=f"{stage} said {status}",
                                                         seconds=2.5, details=details, versions=versions))


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
    assert manifest["status"] == "ok" and manifest["models"] == {"transcribe": "tiny.en", "summarize": "bart"}
    assert manifest["seconds"]["transcribe"] == 2.5 and manifest["total_seconds"] == 2.5 * len(inbox.STAGES)
    assert manifest["versions"]["features"] == {"konspekt": "test", "opensmile": "2.5"}
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


def drop(root, name, content):
    (root / "input" / name).write_bytes(content)
    age(root / "input" / name)


def publish(root, name, content, **claim_args):
    drop(root, name, content)
    claims = inbox.claim(root, stable_seconds=1, **claim_args)
    for c in claims:
        finish(c.video_dir, {s: "ok" for s in inbox.STAGES})
        inbox.finalize(root, c.video_dir)
    return claims


def test_the_same_bytes_again_are_archived_not_processed_unless_forced(tmp_path, caplog):
    root = data_root(tmp_path)
    publish(root, "talk.mp4", b"lecture bytes")
    caplog.set_level(logging.WARNING, logger="konspekt.inbox")
    assert publish(root, "talk again.mp4", b"lecture bytes") == []
    assert "talk again.mp4: already processed as output/talk; set force=true to redo" in caplog.text
    assert sorted(p.name for p in (root / "output").iterdir()) == ["talk"]
    [archived] = (root / "processed").rglob("talk again.mp4")  # the user's copy is kept, never deleted
    assert archived.read_bytes() == b"lecture bytes"
    assert not any((root / "processing").iterdir()) and not any((root / "input").iterdir())
    assert len(publish(root, "talk.mp4", b"other bytes")) == 1  # same name, new content: processed
    [forced] = publish(root, "talk.mp4", b"lecture bytes", force=True)
    assert sorted(p.name for p in (root / "output").iterdir()) == ["talk", "talk (2)", "talk (3)"]
    assert json.loads((root / "output" / "talk (3)" / "manifest.json").read_text())["video"]["sha256"] == forced.sha256


def test_a_video_left_by_a_dead_run_is_resumed_by_the_next_claim(tmp_path, caplog):
    root = data_root(tmp_path)
    drop(root, "lecture.mp4", b"video")
    [c] = inbox.claim(root, stable_seconds=1)
    finish(c.video_dir, {"extract_audio": "ok"})  # then the run died
    caplog.set_level(logging.WARNING, logger="konspekt.inbox")
    drop(root, "next.mp4", b"another video")
    resumed, new = inbox.claim(root, stable_seconds=1)
    assert (resumed.video_dir, resumed.adopted, resumed.sha256) == (c.video_dir, True, c.sha256)
    assert new.name == "next.mp4" and not new.adopted
    assert "lecture.mp4: left in" in caplog.text and "resuming it" in caplog.text
    assert VideoDir(c.video_dir).meta["adopted"] == 1 and VideoDir(c.video_dir).result_path("extract_audio").is_file()
    assert inbox.orphans(root) == sorted([c.video_dir, new.video_dir])


def test_a_video_interrupted_again_and_again_ends_in_failed(tmp_path):
    root = data_root(tmp_path)
    drop(root, "cursed.mp4", b"video")
    inbox.claim(root, stable_seconds=1)
    for _ in range(inbox.MAX_ADOPTIONS):
        [c] = inbox.claim(root, stable_seconds=1)
        assert c.adopted
    assert inbox.claim(root, stable_seconds=1) == []
    error = json.loads((root / "failed" / "cursed" / "error.json").read_text())
    assert error["stage"] == "extract_audio" and "did not run to completion" in error["reason"]
    assert (root / "failed" / "cursed" / "cursed.mp4").read_bytes() == b"video"
    assert inbox.orphans(root) == []


def test_a_claim_that_died_halfway_is_repaired_or_removed(tmp_path):
    root = data_root(tmp_path)
    moved = root / "processing" / "c1" / "moved" / "source"  # died after the move, before video.json
    moved.mkdir(parents=True)
    (moved / "moved.mp4").write_bytes(b"video")
    (root / "processing" / "c2" / "empty" / "source").mkdir(parents=True)  # died before the move
    [c] = inbox.claim(root, stable_seconds=1)
    assert c.name == "moved.mp4" and c.adopted and c.size == 5
    assert VideoDir(c.video_dir).source.read_bytes() == b"video"
    assert not (root / "processing" / "c2").exists()
