"""A stage killed mid-run (SIGKILL, as when its container or worker dies), then retried, ends
exactly as an uninterrupted run: the same bytes, no duplicate rows, no temp files left behind.

Each stage runs as its CLI in its own process group, the way both runners start it, and the
whole group (ffmpeg included) is killed.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import ffmpeg, new_video_dir

pytestmark = pytest.mark.slow

# stage result fields that differ between two runs of the same work
VOLATILE = {"seconds", "finished_at", "mtime_ns", "opensmile_seconds"}


def stage_argv(stage, video_dir, *args):
    return [sys.executable, "-m", f"konspekt.stages.{stage}", "--video-dir", str(video_dir), *map(str, args)]


def run(stage, video_dir, *args):
    proc = subprocess.run(stage_argv(stage, video_dir, *args), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def kill_midway(stage, video_dir, *args, when, timeout=300):
    """Start the stage, SIGKILL its process group once ``when(stderr_so_far)`` holds; the stderr it wrote."""
    proc = subprocess.Popen(stage_argv(stage, video_dir, *args), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    err = []
    reader = threading.Thread(target=lambda: err.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        while not when("".join(err)):
            assert proc.poll() is None, f"{stage} ended before it could be killed:\n{''.join(err)[-3000:]}"
            assert time.monotonic() < deadline, f"{stage} never reached the kill point"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(5)
    assert proc.returncode == -signal.SIGKILL
    return "".join(err)


def without_volatile(value):
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


def files(video_dir):
    return sorted(p.relative_to(video_dir).as_posix() for p in video_dir.rglob("*")
                  if p.is_file() and not p.name.endswith(".lock"))


def assert_same_outputs(retried, reference):
    assert files(retried) == files(reference)
    for name in files(reference):
        if name.startswith("stages/"):
            got, want = (json.loads((d / name).read_text()) for d in (retried, reference))
            assert without_volatile(got) == without_volatile(want), name
        else:
            assert (retried / name).read_bytes() == (reference / name).read_bytes(), name
    assert not list(retried.rglob(".*.tmp"))


def assert_no_duplicate_rows(path):
    rows = path.read_text().splitlines()
    assert rows and len(rows) == len(set(rows)), path


@pytest.fixture(scope="module")
def long_mp3(media_dir):
    """Ten minutes of tone: long enough to kill ffmpeg while it writes audio.wav."""
    out = media_dir / "long tone.mp3"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050", "-t", "600", "-ac", "1",
           "-c:a", "libmp3lame", "-b:a", "32k", str(out))
    return out


def test_extract_audio_killed_while_writing(tmp_path, long_mp3):
    reference = new_video_dir(tmp_path / "reference", long_mp3, "long tone.mp3")
    run("extract_audio", reference)
    video_dir = new_video_dir(tmp_path / "killed", long_mp3, "long tone.mp3")

    def half_written(_err):
        return any(p.stat().st_size > 1_000_000 for p in video_dir.glob(".audio.wav.*.tmp"))

    kill_midway("extract_audio", video_dir, when=half_written)
    assert not (video_dir / "audio.wav").exists() and list(video_dir.glob(".audio.wav.*.tmp"))  # the half file
    retry = run("extract_audio", video_dir)
    assert "left by an earlier try that was killed" in retry.stderr
    assert_same_outputs(video_dir, reference)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, lecture_mp4, tiny_en_model):
    video_dir = new_video_dir(tmp_path_factory.mktemp("uninterrupted"), lecture_mp4)
    run("extract_audio", video_dir)
    run("transcribe", video_dir, "--model", tiny_en_model)
    return video_dir


def test_transcribe_killed_then_retried(tmp_path, lecture_mp4, tiny_en_model, uninterrupted):
    video_dir = new_video_dir(tmp_path, lecture_mp4)
    run("extract_audio", video_dir)
    started = {}

    def decoding(err):  # a moment after the model started work on the audio
        if re.search(r"^transcribing with", err, re.MULTILINE):
            started.setdefault("at", time.monotonic())
        return time.monotonic() - started.get("at", time.monotonic()) > 1.0

    kill_midway("transcribe", video_dir, "--model", tiny_en_model, when=decoding)
    assert not (video_dir / "stages" / "transcribe.json").exists()
    run("transcribe", video_dir, "--model", tiny_en_model)

    assert_same_outputs(video_dir, uninterrupted)
    assert_no_duplicate_rows(video_dir / "transcript.tsv")


def test_features_killed_then_retried(tmp_path, long_mp3):
    """Ten minutes of audio: openSMILE takes well over the 3 s after which it is killed."""
    reference = new_video_dir(tmp_path / "reference", long_mp3, "long tone.mp3")
    video_dir = new_video_dir(tmp_path / "killed", long_mp3, "long tone.mp3")
    for folder in (reference, video_dir):
        run("extract_audio", folder)
    run("features", reference)
    began = time.monotonic()
    kill_midway("features", video_dir, when=lambda _err: time.monotonic() - began > 3.0)
    assert not (video_dir / "stages" / "features.json").exists()
    run("features", video_dir)
    assert_same_outputs(video_dir, reference)  # voice.npz and voice.json, byte for byte
