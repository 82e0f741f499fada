import json
import logging
import os
import stat
import threading
import time

from konspekt import inbox, registry
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
    finish(c.video_dir, {s: "ok" for s in registry.lecture_names()})
    outcome = inbox.finalize(root, c.video_dir)
    assert outcome.status == "ok" and outcome.destination == "output/my talk"
    out = root / "output" / "my talk"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "report.pdf", "transcript.txt"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["video"]["sha256"] == c.sha256 and set(manifest["stages"]) == set(registry.lecture_names())
    assert manifest["status"] == "ok" and manifest["models"] == {"transcribe": "tiny.en", "summarize": "bart"}
    assert manifest["seconds"]["transcribe"] == 2.5 and manifest["total_seconds"] == 2.5 * len(registry.lecture_names())
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
        finish(c.video_dir, {s: "ok" for s in registry.lecture_names()})
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


def test_a_stage_that_never_finished_is_held_then_reported(tmp_path):
    root = data_root(tmp_path)
    (root / "input" / "a.mp4").write_bytes(b"x")
    age(root / "input" / "a.mp4")
    [c] = inbox.claim(root, stable_seconds=1)
    finish(c.video_dir, {"extract_audio": "ok", "transcribe": "ok"})
    outcome = inbox.finalize(root, c.video_dir)  # not the file's fault: kept for a later run
    # the first stage in the registry's order without a result (features runs beside transcribe)
    assert outcome.status == "held" and outcome.stage == "features" and "did not run to completion" in outcome.reason
    assert VideoDir(c.video_dir).source.read_bytes() == b"x" and not any((root / "failed").iterdir())
    outcome = inbox.finalize(root, c.video_dir, give_up=True)
    assert outcome.status == "failed" and "fix the file" not in outcome.hint
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
        finish(c.video_dir, {s: "ok" for s in registry.lecture_names()})
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
    assert json.loads(inbox.record_path(c.video_dir).read_text())["adopted"] == 1 and VideoDir(c.video_dir).result_path("extract_audio").is_file()
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


def test_finalize_trusts_only_its_own_record_not_the_container_writable_folder(tmp_path):
    root = data_root(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    drop(root, "talk.mp4", b"video")
    [c] = inbox.claim(root, stable_seconds=1)
    finish(c.video_dir, {s: "ok" for s in registry.lecture_names()})
    # What a compromised stage container could write into its own folder:
    write_json(c.video_dir / "video.json", {"name": "../../../secret.txt", "source": str(secret)})
    write_json(c.video_dir / "finalize.json", {"status": "ok", "destination": "../config"})
    (c.video_dir / "report.pdf").symlink_to(secret)  # a deliverable's name, pointing outside
    (c.video_dir / "plugin.py").write_text("import os")  # not a deliverable
    (c.video_dir / "transcript.txt").write_text("words")
    outcome = inbox.finalize(root, c.video_dir)
    assert (outcome.status, outcome.destination, outcome.name) == ("ok", "output/talk", "talk.mp4")
    out = root / "output" / "talk"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "transcript.txt"]
    assert secret.read_text() == "not yours" and not (root / "config").exists()
    assert json.loads((out / "manifest.json").read_text())["video"]["name"] == "talk.mp4"
    assert (root / "processed" / c.video_dir.parent.name / "talk.mp4").read_bytes() == b"video"


def test_a_record_that_points_outside_is_refused(tmp_path):
    root = data_root(tmp_path)
    drop(root, "talk.mp4", b"video")
    [c] = inbox.claim(root, stable_seconds=1)
    record = json.loads(inbox.record_path(c.video_dir).read_text())
    for bad in ({"name": "../x.mp4"}, {"plan": {"status": "ok", "destination": "output/../../config"}}):
        write_json(inbox.record_path(c.video_dir), {**record, **bad})
        try:
            inbox.finalize(root, c.video_dir)
        except ValueError:
            continue
        raise AssertionError(f"{bad} was accepted")
    assert VideoDir(c.video_dir).source.read_bytes() == b"video"


def test_a_file_swapped_for_a_symlink_after_the_listing_is_not_followed(tmp_path, monkeypatch):
    root = data_root(tmp_path)
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"someone else's")
    link = root / "input" / "lecture.mp4"
    link.symlink_to(secret)
    os.utime(link, (time.time() - 60,) * 2, follow_symlinks=False)
    # the listing saw a regular file; by the time of the rename it is a symlink
    monkeypatch.setattr(inbox, "scan", lambda folder: [inbox.Entry(link, "lecture.mp4")] if link.is_symlink() else [])
    assert inbox.claim(root, stable_seconds=1) == []
    moved = root / "failed" / "lecture" / "lecture.mp4"
    assert moved.is_symlink() and os.readlink(moved) == str(secret)  # the link itself, never its target
    assert secret.read_bytes() == b"someone else's"
    assert "symbolic link" in json.loads((root / "failed" / "lecture" / "error.json").read_text())["reason"]
    assert not any((root / "processing").iterdir())


def test_symlinks_pipes_and_folders_dropped_into_input(tmp_path):
    root = data_root(tmp_path)
    inp = root / "input"
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"not to be read")
    (inp / "link.mp4").symlink_to(outside)
    (inp / "linked folder").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(inp / "pipe.mp4")
    (inp / "course" / "week 1").mkdir(parents=True)
    (inp / "course" / "intro.mp4").write_bytes(b"intro")
    (inp / "course" / "week 1" / "talk.mp4").write_bytes(b"talk")
    (inp / "course" / "week 1" / "more.mp4.part").write_bytes(b"still copying")
    (inp / "deep" / "a" / "b").mkdir(parents=True)
    (inp / "deep" / "a" / "b" / "x.mp4").write_bytes(b"x")
    (inp / "empty").mkdir()
    for path in inp.rglob("*"):
        if not path.is_symlink():
            age(path)
    claims = inbox.claim(root, stable_seconds=1)
    assert sorted(c.name for c in claims) == ["course - intro.mp4", "course - week 1 - talk.mp4"]
    assert {c.name: VideoDir(c.video_dir).source.read_bytes() for c in claims} == {
        "course - intro.mp4": b"intro", "course - week 1 - talk.mp4": b"talk"}
    failed = {p.name: json.loads((p / "error.json").read_text())["reason"] for p in (root / "failed").iterdir()}
    assert "symbolic link" in failed["link"] and "symbolic link" in failed["linked folder"]
    assert "not a regular file" in failed["pipe"] and "nested" in failed["deep - a - b"]
    assert (root / "failed" / "link" / "link.mp4").is_symlink() and outside.read_bytes() == b"not to be read"
    assert stat.S_ISFIFO((root / "failed" / "pipe" / "pipe.mp4").lstat().st_mode)
    # what is left: the download still running, in its folder; the emptied folders are gone
    assert sorted(str(p.relative_to(inp)) for p in inp.rglob("*")) == [
        "course", "course/week 1", "course/week 1/more.mp4.part", "deep", "deep/a", "empty"]
    assert inbox.ready_entries(inp, stable_seconds=1) == []  # nothing there wakes the sensor again


def test_the_sensor_wakes_only_for_what_claim_would_take(tmp_path):
    root = data_root(tmp_path)
    inp = root / "input"
    for name in (".hidden.mp4", "movie.mp4.part", "x.crdownload", "~$lock.mp4"):
        (inp / name).write_bytes(b"x")
    (inp / "folder with nothing").mkdir()
    (inp / "folder with a download").mkdir()
    (inp / "folder with a download" / "a.mp4.part").write_bytes(b"x")
    assert not inbox.has_work(root, stable_seconds=0)
    (inp / "fresh.mp4").write_bytes(b"being copied")
    assert not inbox.has_work(root, stable_seconds=60)  # still changing: claim would not take it yet
    assert inbox.has_work(root, stable_seconds=0)


NOT_UTF8 = os.fsdecode(b"lecture \xff\xfe latin1 caf\xe9.mp4")
LONG = "л" * 125 + ".mp4"  # 254 bytes: at the file system's limit


def test_names_that_are_not_utf8_too_long_or_alike_are_each_processed(tmp_path):
    root = data_root(tmp_path)
    names = [NOT_UTF8, LONG, "a b.mp4", "a_b.mp4", "a?b.mp4", "a*b.mp4"]
    for i, name in enumerate(names):
        drop(root, name, f"video {i}".encode())
    claims = inbox.claim(root, stable_seconds=1)
    assert sorted(c.name for c in claims) == sorted(names)
    assert len({c.video_dir for c in claims}) == len(names)
    for c in claims:
        finish(c.video_dir, {s: "ok" for s in registry.lecture_names()})
        assert inbox.finalize(root, c.video_dir).status == "ok"
    drop(root, LONG, b"the long one again, other bytes")  # and its "(2)" variant
    [again] = inbox.claim(root, stable_seconds=1)
    finish(again.video_dir, {s: "ok" for s in registry.lecture_names()})
    second = inbox.finalize(root, again.video_dir)
    assert second.destination.endswith(" (2)") and len(os.fsencode(second.destination.split("/")[1])) <= 255
    outputs = sorted(p.name for p in (root / "output").iterdir())
    assert len(outputs) == len(names) + 1
    assert "lecture \ufffd\ufffd latin1 caf\ufffd" in outputs  # readable text, the bytes kept in processed/
    archived = {p.name for p in (root / "processed").rglob("*") if p.is_file()}
    assert NOT_UTF8 in archived and LONG in archived
    manifest = json.loads((root / "output" / "lecture \ufffd\ufffd latin1 caf\ufffd" / "manifest.json").read_text())
    assert os.fsencode(manifest["video"]["name"]) == os.fsencode(NOT_UTF8)


def test_a_failing_orphan_goes_to_failed_once_and_never_blocks_new_uploads(tmp_path):
    root = data_root(tmp_path)
    broken = root / "processing" / "c1" / "broken" / "source"
    broken.mkdir(parents=True)
    (broken / "one.mp4").write_bytes(b"1")
    (broken / "two.mp4").write_bytes(b"2")  # two sources, no record: nothing says which is the upload
    drop(root, "good.mp4", b"good")
    [good] = inbox.claim(root, stable_seconds=1)
    assert good.name == "good.mp4"
    [failed] = (root / "failed").iterdir()
    assert sorted(p.name for p in (failed / "source").iterdir()) == ["one.mp4", "two.mp4"]
    assert "could not resume" in json.loads((failed / "error.json").read_text())["reason"]
    assert inbox.orphans(root) == [good.video_dir]


WARM_UP = ("FileNotFoundError: Whisper model 'small' is not in the cache and HF_HUB_OFFLINE is set: run "
           "`python -m konspekt.warm_cache --whisper-model small` once with network")


def test_a_failure_outside_the_file_holds_it_for_a_retry_never_as_bad_input(tmp_path):
    root = data_root(tmp_path)
    drop(root, "good.mp4", b"a good lecture")
    [c] = inbox.claim(root, stable_seconds=1)
    finish(c.video_dir, {"extract_audio": "ok"})
    write_json(VideoDir(c.video_dir).result_path("transcribe"), StageResult("transcribe", "error", message=WARM_UP))
    outcome = inbox.finalize(root, c.video_dir, hold_seconds=600)
    assert outcome.status == "held" and outcome.stage == "transcribe" and "warm" in outcome.hint
    assert "fix the file" not in outcome.hint and "retries" in outcome.hint
    assert inbox.orphans(root) == [c.video_dir] and inbox.due_orphans(root) == []
    assert not inbox.has_work(root, stable_seconds=1) and inbox.claim(root, stable_seconds=1) == []
    for _ in range(inbox.MAX_ADOPTIONS):  # each later run (once due) retries it
        inbox.finalize(root, c.video_dir, hold_seconds=0)
        assert inbox.has_work(root, stable_seconds=1)
        [again] = inbox.claim(root, stable_seconds=1)
        assert again.adopted and again.video_dir == c.video_dir
    inbox.finalize(root, c.video_dir, hold_seconds=0)
    assert inbox.claim(root, stable_seconds=1) == []  # tried enough: failed/, with what to fix
    error = json.loads((root / "failed" / "good" / "error.json").read_text())
    assert error["stage"] == "transcribe" and "warm" in error["hint"] and "fix the file" not in error["hint"]
    assert (root / "failed" / "good" / "good.mp4").read_bytes() == b"a good lecture"


def test_a_file_over_the_size_limit_is_quarantined_with_the_reason(tmp_path):
    root = data_root(tmp_path)
    drop(root, "huge.mp4", b"x" * 2000)
    drop(root, "small.mp4", b"x" * 10)
    [c] = inbox.claim(root, stable_seconds=1, max_bytes=1000)
    assert c.name == "small.mp4"
    error = json.loads((root / "failed" / "huge" / "error.json").read_text())
    assert "over the limit" in error["reason"] and (root / "failed" / "huge" / "huge.mp4").stat().st_size == 2000


# --- owners: runs overlap, and a claim belongs to the run that processes it ----------------------

def owner_by_name(video_dir, attempt):
    return f"run-{video_dir.name}" + (f".{attempt}" if attempt else "")


def test_a_claim_of_a_live_run_is_never_adopted_and_an_ended_run_s_is(tmp_path):
    root = data_root(tmp_path)
    for name in ("a.mp4", "b.mp4"):
        (root / "input" / name).write_bytes(name.encode())
        age(root / "input" / name)
    a, b = sorted(inbox.claim(root, stable_seconds=5, owner=owner_by_name), key=lambda c: c.name)
    assert (a.owner, b.owner) == ("run-a", "run-b")
    assert json.loads(inbox.record_path(a.video_dir).read_text())["owner"] == "run-a"
    live = {"run-a", "run-b"}
    assert inbox.claim(root, stable_seconds=5, owner=owner_by_name, is_active=live.__contains__) == []
    assert inbox.orphans(root) == [] and not inbox.has_work(root, 5)  # the sensor: owned means in use
    live.discard("run-b")  # b's run was marked failed before it finalized
    [resumed] = inbox.claim(root, stable_seconds=5, owner=owner_by_name, is_active=live.__contains__)
    assert (resumed.video_dir, resumed.adopted, resumed.owner) == (b.video_dir, True, "run-b.1")
    assert json.loads(inbox.record_path(b.video_dir).read_text())["owner"] == "run-b.1"
    live.add("run-b.1")  # the run started for it
    # a claim that died before naming its owner is anyone's
    record = json.loads(inbox.record_path(a.video_dir).read_text())
    del record["owner"]
    write_json(inbox.record_path(a.video_dir), record)
    assert inbox.orphans(root, live.__contains__) == [a.video_dir]


def test_a_held_video_leaves_its_run_and_waits_for_any_later_claim(tmp_path):
    root = data_root(tmp_path)
    (root / "input" / "talk.mp4").write_bytes(b"talk")
    age(root / "input" / "talk.mp4")
    [c] = inbox.claim(root, stable_seconds=5, owner=owner_by_name)
    outcome = inbox.finalize(root, c.video_dir, hold_seconds=0)  # no stage ran: a failure outside the file
    assert outcome.status == "held"
    assert "owner" not in json.loads(inbox.record_path(c.video_dir).read_text())
    assert inbox.has_work(root, 5)  # wakes the sensor, though its run may not have ended yet
    [again] = inbox.claim(root, stable_seconds=5, owner=owner_by_name)  # even with every run live
    assert again.video_dir == c.video_dir and again.owner == "run-talk.1"


def test_a_run_takes_only_the_claim_it_was_started_for(tmp_path):
    root = data_root(tmp_path)
    (root / "input" / "talk.mp4").write_bytes(b"talk")
    age(root / "input" / "talk.mp4")
    [c] = inbox.claim(root, stable_seconds=5, owner=owner_by_name)
    got = inbox.owned_claim(root, c.folder, "run-talk")
    assert (got.video_dir, got.name, got.sha256, got.owner) == (c.video_dir, "talk.mp4", c.sha256, "run-talk")
    (root / "elsewhere").mkdir()
    (root / "processing" / "linked").symlink_to(root / "elsewhere")
    claim_id = c.video_dir.parent.name
    hostile = ["../input", f"{claim_id}/../../output", "/etc/passwd", claim_id, f"{claim_id}/talk/source",
               "linked/talk", f"{claim_id}/.talk.json", f"{claim_id}/", "", None, ["x", "y"], f"{claim_id}/gone"]
    for folder in hostile:
        try:
            inbox.owned_claim(root, folder, "run-talk")
        except ValueError as exc:
            assert "processing/" in str(exc) or "claimed video" in str(exc), (folder, exc)
        else:
            raise AssertionError(f"{folder!r} was taken")
    try:
        inbox.owned_claim(root, c.folder, "someone-else")
    except ValueError as exc:
        assert "belongs to run 'run-talk'" in str(exc)
    else:
        raise AssertionError("another run's claim was taken")


def test_claims_wait_for_each_other(tmp_path):
    """One claim at a time: adoption never sees a folder another claim is still filling."""
    root = data_root(tmp_path)
    (root / "input" / "talk.mp4").write_bytes(b"talk")
    age(root / "input" / "talk.mp4")
    done = []
    with inbox.claim_lock(root):
        worker = threading.Thread(target=lambda: done.append(inbox.claim(root, stable_seconds=5)))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and not done and (root / "input" / "talk.mp4").exists()
    worker.join(10)
    assert [c.name for c in done[0]] == ["talk.mp4"]
    assert sorted(p.name for p in (root / "processing").iterdir()) == [done[0][0].video_dir.parent.name]


def _claim_in_a_process(root, owner_prefix, queue):
    claims = inbox.claim(root, stable_seconds=0, owner=lambda d, n: f"{owner_prefix}-{d.name}",
                         is_active=lambda owner: True)
    queue.put([(c.name, c.owner, c.adopted) for c in claims])


def test_overlapping_claims_take_each_file_exactly_once(tmp_path):
    import multiprocessing

    root = data_root(tmp_path)
    names = [f"clip {i:02d}.mp4" for i in range(30)]
    for name in names:
        (root / "input" / name).write_bytes(name.encode() * 1000)
        age(root / "input" / name)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claim_in_a_process, args=(root, f"run{i}", queue)) for i in range(4)]
    for p in procs:
        p.start()
    got = [item for _ in procs for item in queue.get(timeout=60)]
    for p in procs:
        p.join(10)
    assert sorted(name for name, _, _ in got) == names  # each once, no adoption of a live run's claim
    assert not any(adopted for *_, adopted in got)
    records = [json.loads(p.read_text()) for p in (root / "processing").glob("*/.*.json")]
    assert sorted(r["name"] for r in records) == names
