"""The stage contract's retry safety: make-like skipping, --force, the stage lock, stale temp files."""

import fcntl
import json
import os
import threading
import time

import pytest
from conftest import new_video_dir

from konspekt import registry
from konspekt.layout import write_text
from konspekt.stage import main_for
from konspekt.stages import extract_audio

SKIPPED = "up to date, skipped (use --force to redo)"


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A stage that uppercases in.txt into out.txt, counting how often it really works."""
    monkeypatch.setattr(registry, "LECTURE", (*registry.LECTURE, registry.Stage("toy", "audio", writes=("out.txt",))))
    calls = []

    def run(video, args):
        calls.append(args)
        text = (video.path / "in.txt").read_text()
        return [write_text(video.path / "out.txt", text.upper() * args.times)], {"chars": len(text)}

    def configure(parser):
        parser.add_argument("--times", type=int, default=1)

    main = main_for("toy", "a test stage", configure, run, reads=lambda video: [video.path / "in.txt"])
    video_dir = new_video_dir(tmp_path)
    (video_dir / "in.txt").write_text("hello")

    def stage(*args):
        return main(["--video-dir", str(video_dir), *args])

    return stage, video_dir, calls


def stamps(video_dir):
    return {p.name: p.stat().st_mtime_ns for p in (video_dir / "out.txt", video_dir / "stages" / "toy.json")}


def test_a_second_run_is_a_no_op_that_prints_the_stored_result(toy, capsys):
    stage, video_dir, calls = toy
    assert stage() == 0 and len(calls) == 1
    first = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert first["fingerprint"]["inputs"]["in.txt"]["size"] == 5 and first["fingerprint"]["options"] == {"times": 1}
    before = stamps(video_dir)
    time.sleep(0.01)
    assert stage() == 0 and len(calls) == 1
    out, err = capsys.readouterr()
    assert SKIPPED in err
    assert json.loads(out.splitlines()[-1]) == first
    assert stamps(video_dir) == before  # nothing was rewritten


def test_changed_options_inputs_or_missing_outputs_rerun_it(toy, capsys):
    stage, video_dir, calls = toy
    stage()
    stage("--times", "2")
    assert len(calls) == 2 and (video_dir / "out.txt").read_text() == "HELLOHELLO"
    assert "options changed: --times" in capsys.readouterr().err
    os.utime(video_dir / "in.txt", ns=(1, 1))  # touched, same bytes: still up to date
    stage("--times", "2")
    assert len(calls) == 2
    (video_dir / "in.txt").write_text("bye")
    stage("--times", "2")
    assert len(calls) == 3 and "in.txt changed" in capsys.readouterr().err
    (video_dir / "out.txt").unlink()
    stage("--times", "2")
    assert len(calls) == 4 and (video_dir / "out.txt").read_text() == "BYEBYE"


def test_force_reruns_it(toy, capsys):
    stage, video_dir, calls = toy
    stage()
    stage("--force")
    stage("--force", "true")
    assert len(calls) == 3
    stage("--force", "False")  # the DAG passes its Param as text
    assert len(calls) == 3 and SKIPPED in capsys.readouterr().err


def test_a_failed_result_is_never_skipped(toy, capsys):
    stage, video_dir, calls = toy
    (video_dir / "in.txt").unlink()
    assert stage() == 1
    (video_dir / "in.txt").write_text("back")
    assert stage() == 0 and len(calls) == 2
    assert "its last run ended with error" in capsys.readouterr().err


def test_stale_temp_files_of_this_stage_are_removed_others_kept(toy, capsys):
    stage, video_dir, calls = toy
    (video_dir / "stages").mkdir()
    mine = [video_dir / ".out.txt.k1ll3d.tmp", video_dir / "stages" / ".toy.json.x9.tmp"]
    theirs = [video_dir / ".summary.json.abc.tmp", video_dir / ".out.txt.bak"]  # a parallel stage's, a user's
    for path in mine + theirs:
        path.write_text("half")
    assert stage() == 0
    assert [p.exists() for p in mine] == [False, False] and all(p.exists() for p in theirs)
    assert "left by an earlier try that was killed" in capsys.readouterr().err


def test_a_retry_waits_for_an_earlier_try_still_running(toy, capsys):
    stage, video_dir, calls = toy
    (video_dir / "stages").mkdir()
    held = os.open(video_dir / "stages" / ".toy.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)  # an orphaned earlier try of the stage
    codes = []
    retry = threading.Thread(target=lambda: codes.append(stage()))
    retry.start()
    time.sleep(0.5)
    assert retry.is_alive() and calls == []  # it waits and does not touch the files
    os.close(held)
    retry.join(10)
    assert codes == [0] and len(calls) == 1
    assert "still running here from an earlier try" in capsys.readouterr().err


def test_extract_audio_is_make_like(tmp_path, lecture_mp4, capsys):
    video_dir = new_video_dir(tmp_path, lecture_mp4)
    argv = ["--video-dir", str(video_dir)]
    assert extract_audio.main(argv) == 0
    audio = video_dir / "audio.wav"
    first = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert set(first["fingerprint"]["inputs"]) == {"source/lecture.mp4"} and first["versions"]["konspekt"]
    mtime = audio.stat().st_mtime_ns
    started = time.perf_counter()
    assert extract_audio.main(argv) == 0
    assert time.perf_counter() - started < 1.0
    assert SKIPPED in capsys.readouterr().err and audio.stat().st_mtime_ns == mtime
    assert extract_audio.main([*argv, "--sample-rate", "8000"]) == 0
    assert "options changed: --sample-rate" in capsys.readouterr().err and audio.stat().st_mtime_ns != mtime
    mtime = audio.stat().st_mtime_ns
    assert extract_audio.main([*argv, "--sample-rate", "8000", "--force"]) == 0
    assert SKIPPED not in capsys.readouterr().err and audio.stat().st_mtime_ns != mtime
