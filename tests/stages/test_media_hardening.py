"""extract_audio against hostile and unlucky input.

* A playlist or join list named like a video must not make ffprobe/ffmpeg read other files
  (or wait for a "live" playlist to grow): refused as bad input, at once.
* ffprobe and ffmpeg always run under a time limit; a stuck one is a crash (exit 1), retried.
* A tool killed, or failing because of the machine (full disk, no memory), is a crash, not bad input.
* ``--max-duration``: a lecture over the limit is bad input.
* A copy cut off in the middle is bad input in every container that declares its length; a
  complete file with holes in its audio timeline is not, and its holes become silence so the
  transcript's times stay those of the video.

Clips are a few seconds of lavfi tone and colour, so the module runs in well under a minute.
"""

from __future__ import annotations

import array
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest

from conftest import ffmpeg, new_video_dir
from transcript_checks import srt_cues
from konspekt import media
from konspekt.stages import extract_audio
from konspekt.training import read_data

HANG = 60  # seconds: a stage that takes longer is stuck (the old code waited for ever)
TONE = ["-f", "lavfi", "-i", "sine=frequency=440:duration={seconds}"]
PICTURE = ["-f", "lavfi", "-i", "color=c=navy:s=160x120:r=5:d={seconds}"]
H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


def lavfi(template: list[str], seconds: float) -> list[str]:
    return [arg.format(seconds=seconds) for arg in template]


def run_stage(video_dir: Path, *args: str, timeout: float = HANG):
    """The stage's CLI in its own process group, as the runners start it; killed whole if it hangs."""
    proc = subprocess.Popen([sys.executable, "-m", "konspekt.stages.extract_audio", "--video-dir", str(video_dir),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    started = time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # ffmpeg too
        proc.communicate()
        pytest.fail(f"extract_audio was still running after {timeout} s")
    result = json.loads(out.strip().splitlines()[-1])
    return proc.returncode, result, err, time.monotonic() - started


def run_in_process(video_dir: Path, capsys, *args: str):
    code = extract_audio.main(["--video-dir", str(video_dir), *args])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def assert_rejected(video_dir: Path, code: int, result: dict, *words: str) -> None:
    assert code == 2 and result["status"] == "bad_input", result
    for word in words:
        assert word in result["message"], result["message"]
    assert not (video_dir / "audio.wav").exists()
    assert not list(video_dir.glob(".*.tmp"))


def wav_samples(path: Path) -> tuple[array.array, int]:
    with wave.open(str(path), "rb") as wav:
        return array.array("h", wav.readframes(wav.getnframes())), wav.getframerate()


def onset(path: Path, after: float = 0.0, window: float = 0.01) -> float:
    """Where the first loud 10 ms window at or after ``after`` starts (RMS over a quiet threshold)."""
    samples, rate = wav_samples(path)
    step = int(rate * window)
    for i in range(int(after * rate), len(samples) - step, step):
        chunk = samples[i:i + step]
        if math.sqrt(sum(s * s for s in chunk) / step) > 2000:
            return i / rate
    raise AssertionError(f"no tone in {path.name}")


def audio_packets(path: Path) -> list[tuple[float, float]]:
    """(pts, duration) of each packet of the first audio stream, as ffprobe reads them."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                          "packet=pts_time,duration_time", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return [(float(pts), float(dur or 0)) for pts, dur, *_ in (line.split(",") for line in out.split())]


# -- 1. files that make the demuxer open other files -----------------------------------------------

@pytest.fixture(scope="module")
def secret(tmp_path_factory) -> Path:
    """Somebody else's recording: an mpegts a playlist can name as its segment."""
    other = tmp_path_factory.mktemp("other")
    ffmpeg(*lavfi(TONE, 3), "-c:a", "aac", "-f", "mpegts", str(other / "secret.ts"))
    return other / "secret.ts"


def hls(segment: str) -> str:
    # no #EXT-X-ENDLIST: a live playlist, which ffmpeg reloads, waiting for more segments, for ever
    return f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:3.0,\n{segment}\n"


@pytest.mark.parametrize("case", ["hls-relative", "hls-absolute", "hls-fifo", "concat-sibling", "concat-outside"])
def test_a_playlist_named_like_a_video_is_refused_without_opening_other_files(tmp_path, secret, case):
    video_dir = new_video_dir(tmp_path)  # video/source/lecture.mp4, next to the other user's folder
    source = video_dir / "source" / "lecture.mp4"
    other = tmp_path / "other"
    other.mkdir()
    (other / "secret.ts").write_bytes(secret.read_bytes())
    if case == "hls-relative":
        source.write_text(hls("../../other/secret.ts"))
    elif case == "hls-absolute":
        source.write_text(hls(str(other / "secret.ts")))
    elif case == "hls-fifo":  # opening a FIFO with no writer blocks: a prompt answer proves it was never opened
        os.mkfifo(other / "pipe.ts")
        source.write_text(hls(str(other / "pipe.ts")))
    elif case == "concat-sibling":  # a name concat's "safe" mode allows: a file in the same folder
        (video_dir / "source" / "secret.mp4").write_bytes(secret.read_bytes())
        source.write_text("ffconcat version 1.0\nfile secret.mp4\nfile secret.mp4\n")
    else:
        source.write_text(f"ffconcat version 1.0\nfile '{other / 'secret.ts'}'\n")
    code, result, err, seconds = run_stage(video_dir)
    words = "a playlist" if case.startswith("hls") else "a list of other files"
    assert_rejected(video_dir, code, result, words, "not a video or audio file")
    assert "secret" not in result["message"] + err  # nothing about the other file came back
    assert seconds < 30


def test_read_data_refuses_a_join_list_among_the_clips(tmp_path, secret):
    """A training dataset is a folder of many files: a concat list could read any of them."""
    dataset = tmp_path / "ds"
    dataset.mkdir()
    (dataset / "clip.ts").write_bytes(secret.read_bytes())
    (dataset / "trick.wav").write_text("ffconcat version 1.0\nfile clip.ts\n")
    audio_dir = tmp_path / "run" / "data" / "audio"
    audio_dir.mkdir(parents=True)
    reason = read_data.check_row(dataset, audio_dir, {"file_name": "trick.wav", "text": "hello"}, "text", 30.0)
    assert isinstance(reason, str) and "a list of other files" in reason, reason
    assert not list(audio_dir.iterdir())


# -- 2 and 3. stuck, killed, or failed because of the machine: a crash, retried ---------------------

FAKES = {  # a fake tool first on PATH: what it does
    "ffmpeg-killed": ("ffmpeg", "kill -9 $$", "SIGKILL"),
    "ffmpeg-disk-full": ("ffmpeg", "echo '[out#0/wav] Error writing trailer: No space left on device' >&2; exit 1",
                         "No space left on device"),
    "ffmpeg-out-of-memory": ("ffmpeg", "echo 'Error while filtering: Cannot allocate memory' >&2; exit 1",
                             "Cannot allocate memory"),
    "ffmpeg-read-only": ("ffmpeg", "echo 'audio.wav: Read-only file system' >&2; exit 1", "Read-only file system"),
    "ffmpeg-permission": ("ffmpeg", "echo 'audio.wav: Permission denied' >&2; exit 1", "Permission denied"),
    "ffmpeg-io-error": ("ffmpeg", "echo 'av_interleaved_write_frame(): Input/output error' >&2; exit 1",
                        "Input/output error"),
    "ffmpeg-stuck": ("ffmpeg", "exec sleep 20", "did not finish within 2 s"),
    "ffprobe-killed": ("ffprobe", "kill -9 $$", "SIGKILL"),
    "ffprobe-stuck": ("ffprobe", "exec sleep 20", "did not finish within 2 s"),
}


@pytest.mark.parametrize("case", FAKES)
def test_a_tool_killed_stuck_or_failing_for_the_machine_is_a_crash_not_bad_input(tmp_path, monkeypatch, capsys,
                                                                                   lecture_mp4, case):
    tool, script, words = FAKES[case]
    fake = tmp_path / "bin" / tool
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(media, "PROBE_TIMEOUT", 2)
    monkeypatch.setattr(media, "decode_timeout", lambda seconds: 2)
    video_dir = new_video_dir(tmp_path, lecture_mp4)
    started = time.monotonic()
    code, result = run_in_process(video_dir, capsys)
    assert code == 1 and result["status"] == "error", result  # Airflow retries it; the file is not blamed
    assert words in result["message"], result["message"]
    assert time.monotonic() - started < 15
    assert not (video_dir / "audio.wav").exists() and not list(video_dir.glob(".*.tmp"))


# -- 4. the longest lecture taken ------------------------------------------------------------------

def test_a_lecture_over_the_length_limit_is_bad_input(tmp_path, media_dir, capsys):
    clip = media_dir / "four seconds.m4a"
    ffmpeg(*lavfi(TONE, 4), "-c:a", "aac", str(clip))
    video_dir = new_video_dir(tmp_path / "short", clip, name="talk.m4a")
    code, result = run_in_process(video_dir, capsys, "--max-duration", "2")
    assert_rejected(video_dir, code, result, "talk.m4a is 4.0 s long; the limit is 2.0 s (KONSPEKT_MAX_DURATION_HOURS)")
    for limit in ("0", "5"):  # 0: no limit
        video_dir = new_video_dir(tmp_path / f"limit {limit}", clip, name="talk.m4a")
        assert run_in_process(video_dir, capsys, "--max-duration", limit)[0] == 0


def test_audio_beyond_its_declared_length_still_counts_against_the_limit(tmp_path, media_dir, capsys):
    """An mka whose header says 2 s but which holds 6 s: decoding stops past the limit, and says why."""
    six = media_dir / "six seconds.mka"
    ffmpeg(*lavfi(TONE, 6), "-c:a", "libvorbis", str(six))
    data = bytearray(six.read_bytes())
    at = data.index(b"\x44\x89\x88")  # the Segment's Duration: an 8-byte float, in milliseconds
    data[at + 3:at + 11] = struct.pack(">d", 2000.0)
    liar = tmp_path / "talk.mka"
    liar.write_bytes(data)
    video_dir = new_video_dir(tmp_path, liar, name="talk.mka")
    code, result = run_in_process(video_dir, capsys, "--max-duration", "3")
    assert_rejected(video_dir, code, result, "talk.mka is longer than the limit of 3.0 s")


# -- 5. cut-off copies, in every container that declares its length --------------------------------

VIDEO_AUDIO = 8.0  # seconds of tone under a picture
CONTAINERS = {  # name: (file name, ffmpeg arguments after the inputs, has a picture)
    "mp4": ("lecture.mp4", [*H264, "-c:a", "aac"], True),
    "mp4-faststart": ("lecture.mp4", [*H264, "-c:a", "aac", "-movflags", "+faststart"], True),
    "mov-faststart": ("lecture.mov", [*H264, "-c:a", "aac", "-movflags", "+faststart"], True),
    "m4a": ("talk.m4a", ["-c:a", "aac"], False),
    "mkv": ("lecture.mkv", [*H264, "-c:a", "libvorbis"], True),
    "webm": ("lecture.webm", ["-c:v", "libvpx", "-deadline", "realtime", "-c:a", "libopus"], True),
    "mp3": ("talk.mp3", ["-c:a", "libmp3lame", "-b:a", "64k"], False),
    "flac": ("talk.flac", ["-c:a", "flac"], False),
    "wav": ("talk.wav", ["-c:a", "pcm_s16le"], False),
    "ogg-vorbis": ("talk.ogg", ["-c:a", "libvorbis"], False),
    "ogg-opus": ("talk.opus", ["-c:a", "libopus"], False),
}
UNDETECTABLE = {  # a cut copy of these is a shorter, valid file: nothing in it says how long it was
    "mp3-without-length-header": ("talk.mp3", ["-c:a", "libmp3lame", "-b:a", "64k", "-write_xing", "0"], False),
    "mpegts": ("lecture.ts", [*H264, "-c:a", "aac"], True),
}
UNDETECTABLE_WHY = {
    "mp3-without-length-header": "a CBR mp3 without a Xing/Info header declares no length (ffprobe estimates "
                                 "it from the file size), and mp3 frames are whole units: a cut copy is a shorter mp3",
    "mpegts": "MPEG-TS declares no length (ffprobe reads it from the last timestamps) and is a stream of "
              "188-byte packets made to be cut anywhere",
}


def make(media_dir: Path, case: str, spec) -> Path:
    name, args, picture = spec
    out = media_dir / f"{case}-{name}"
    if not out.exists():
        inputs = [*lavfi(PICTURE, VIDEO_AUDIO)] if picture else []
        ffmpeg(*inputs, *lavfi(TONE, VIDEO_AUDIO), *args, str(out))
    return out


@pytest.mark.parametrize("case", [*CONTAINERS, *(pytest.param(c, marks=pytest.mark.skip(reason=why))
                                                 for c, why in UNDETECTABLE_WHY.items())])
def test_a_copy_cut_off_in_the_middle_is_incomplete(tmp_path, media_dir, capsys, case):
    spec = CONTAINERS.get(case) or UNDETECTABLE[case]
    whole = make(media_dir, case, spec)
    data = whole.read_bytes()
    cut = tmp_path / spec[0]
    cut.write_bytes(data[: int(len(data) * 0.6)])
    video_dir = new_video_dir(tmp_path, cut, name=spec[0])
    code, result = run_in_process(video_dir, capsys)
    assert_rejected(video_dir, code, result, "incomplete", "cut off")
    assert (video_dir / "source" / spec[0]).read_bytes() == data[: int(len(data) * 0.6)]


@pytest.mark.parametrize("case", [*CONTAINERS, *UNDETECTABLE])
def test_the_complete_file_is_accepted_whole(tmp_path, media_dir, capsys, case):
    spec = CONTAINERS.get(case) or UNDETECTABLE[case]
    video_dir = new_video_dir(tmp_path, make(media_dir, case, spec), name=spec[0])
    code, result = run_in_process(video_dir, capsys)
    assert code == 0, result
    assert abs(result["details"]["duration"] - VIDEO_AUDIO) < 0.2


# -- 5. a complete file with holes in its audio timeline --------------------------------------------

@pytest.fixture(scope="module")
def parts(media_dir) -> list[Path]:
    """Two recordings whose picture runs 2 s longer than their sound: silence, then a tone."""
    made = []
    for i, audio in enumerate(("anullsrc=r=44100:cl=mono:d=4", "sine=frequency=880:duration=4")):
        out = media_dir / f"part {i}.mp4"
        ffmpeg(*lavfi(PICTURE, 6), "-f", "lavfi", "-i", audio, *H264, "-c:a", "aac", str(out))
        made.append(out)
    return made


@pytest.mark.parametrize("case", ["concat-mp4", "concat-mkv", "stream-loop-mp4"])
def test_a_joined_lecture_with_holes_in_its_audio_is_complete_and_stays_in_time(tmp_path, parts, capsys, case):
    """Joined with `-c copy`, the audio has a 2 s hole after each part: filled with silence, not judged cut off."""
    suffix = case.rpartition("-")[2]
    joined = tmp_path / f"joined.{suffix}"
    if case.startswith("concat"):
        listing = tmp_path / "parts.txt"
        listing.write_text("".join(f"file '{p}'\n" for p in parts))
        ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(joined))
    else:
        ffmpeg("-stream_loop", "2", "-i", str(parts[1]), "-c", "copy", str(joined))
    packets = audio_packets(joined)
    timeline_end = max(pts + dur for pts, dur in packets)
    tone_at = next(pts for pts, _ in packets if pts > 4.5)  # the first packet after the first hole
    video_dir = new_video_dir(tmp_path, joined, name=joined.name)
    code, result = run_in_process(video_dir, capsys)
    assert code == 0, result
    wav = video_dir / "audio.wav"
    assert abs(result["details"]["duration"] - timeline_end) < 0.5
    if case.startswith("concat"):  # the tone of the second part sits where the video shows it
        assert abs(onset(wav) - tone_at) < 0.1, (onset(wav), tone_at)
    else:  # each loop's tone starts where its packets do, after the hole
        assert abs(onset(wav, after=5.0) - tone_at) < 0.1, (onset(wav, after=5.0), tone_at)


JOINED_SENTENCES = ["Welcome to the first part of this lecture on rivers.",
                    "The second part begins here, after the break."]


def test_a_joined_lecture_keeps_its_subtitles_in_time_with_the_video(tmp_path, capsys, tiny_en_model):
    """Two spoken parts, each with 2 s more picture than sound, joined with `-c copy`: the subtitle of the
    second part starts where the video plays its words, not 2 s early (the hole is silence in audio.wav)."""
    from konspekt.sample import speak
    from konspekt.stages import transcribe

    parts = []
    for i, sentence in enumerate(JOINED_SENTENCES):
        wav = speak(sentence, tmp_path / f"part{i}.wav", video=False)
        with wave.open(str(wav)) as w:
            seconds = w.getnframes() / w.getframerate()
        parts.append(tmp_path / f"part{i}.mp4")
        ffmpeg("-f", "lavfi", "-t", f"{seconds + 2:.2f}", "-i", "color=c=gray:s=160x120:r=10", "-i", str(wav),
               "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(parts[-1]))
    listing = tmp_path / "parts.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    joined = tmp_path / "joined.mp4"
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(joined))
    # the join puts part 2 where part 1's picture ends; its audio packets start there, after the hole
    first_ends = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                                       str(parts[0])], capture_output=True, text=True, check=True).stdout)
    second_part_at = next(pts for pts, _ in audio_packets(joined) if pts >= first_ends - 0.05)
    video_dir = new_video_dir(tmp_path, joined, name=joined.name)
    code, _ = run_in_process(video_dir, capsys)
    assert code == 0
    assert transcribe.main(["--video-dir", str(video_dir), "--model", tiny_en_model, "--beam-size", "1"]) == 0
    capsys.readouterr()
    words = [w for s in json.loads((video_dir / "transcript.json").read_text())["segments"] for w in s["words"]]
    spoken = next(w["start"] for w in words if "second" in w["text"].lower())  # "The second part ..."
    # the hole left in: "second" about 0.3 s into its part; without it, 2 s early, inside the hole
    assert second_part_at <= spoken <= second_part_at + 1.2, (spoken, second_part_at, words)
    assert srt_cues((video_dir / "transcript.srt").read_text(encoding="utf-8"))
