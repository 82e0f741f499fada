"""Every kind of wrong file, dropped into input/ at once next to a good lecture, through the real DAG.

One `airflow dags test lecture_to_pdf` (local mode) processes the whole drop; each case
below then checks its own outcome:

* bad files end in ``failed/<name>/`` with an ``error.json`` in plain words, bytes untouched;
* audio-only files, other containers and codecs, several audio tracks, a very short talk
  and awkward names each become a report;
* temp and hidden files stay in input/, untouched, until they are renamed;
* the good lecture still becomes its report.

A second run then renames the ``.part`` download to ``lecture.mp4``, the name the first
drop already used: it is processed too, into ``output/lecture (2)``.
Clips are a few seconds of espeak-ng speech, so the module stays within minutes.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import airflow_env, dags_test, ffmpeg
from konspekt.sample import SCRIPT, speak, word_error_rate

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

# What each clip says, so its transcript shows that its own audio was decoded: sentences that
# tiny.en gets right from espeak-ng even a few seconds at a time.
SPOKEN = {
    "mp3": "Rivers carry water from the mountains down to the sea.",
    "wav": "The sun heats the ocean and the warm water rises.",
    "m4a": "Welcome to this lecture on the water cycle.",
    "webm": "Rivers carry the water back to the sea, and the cycle begins again.",
    "mkv": "When the droplets grow heavy, they fall back to the ground as rain or snow.",
    "mov": "In the next lecture we will measure how fast this happens in a forest.",
    "first track": "The first track is the teacher speaking about the weather.",
    "second track": "Football and music are on the second track only.",
    "short": "Hello students.",
}


@dataclass(frozen=True)
class Bad:
    file: str  # the name dropped into input/
    stage: str  # the stage that must reject it
    reason: str  # words error.json's reason must contain


@dataclass(frozen=True)
class Good:
    file: str
    says: str  # the spoken text, to score the transcript against
    max_wer: float = 0.25  # a few seconds of espeak-ng through tiny.en


BAD = {
    "zero-byte": Bad("empty.mp4", "extract_audio", "empty.mp4 is empty (0 bytes)"),
    "text-named-mp4": Bad("notes.mp4", "extract_audio", "it holds text, not video or audio"),
    "truncated-mp4": Bad("cut in the middle.mp4", "extract_audio", "it is incomplete (the copy was cut off"),
    "truncated-mp4-index-first": Bad("cut, index first.mp4", "extract_audio",
                                      "is incomplete: it should hold 34.0 s of audio, but only"),
    "no-audio-track": Bad("no audio track.mp4", "extract_audio", "has no audio track"),
    "silent-audio": Bad("muted microphone.mp4", "transcribe", "no speech was recognised in the audio"),
}
GOOD = {
    "good-lecture": Good("lecture.mp4", SCRIPT, max_wer=0.15),
    "audio-only-mp3": Good("podcast.mp3", SPOKEN["mp3"]),
    "audio-only-wav": Good("voice memo.wav", SPOKEN["wav"]),
    "audio-only-m4a": Good("phone recording.m4a", SPOKEN["m4a"]),
    "webm-vp9-opus-name-with-spaces-and-quotes": Good("it's a \"quoted\" talk.webm", SPOKEN["webm"]),
    "mkv-vp8-vorbis-cyrillic-name-with-dollar-parens": Good("Лекция 2 $(touch pwned).mkv", SPOKEN["mkv"]),
    "mov-h264-alac-name-with-leading-dash": Good("-rf lecture.mov", SPOKEN["mov"]),  # as in `rm -rf lecture.mov`
    "two-audio-streams": Good("two audio tracks.mp4", SPOKEN["first track"]),
    "speech-under-2s": Good("hello.mp4", SPOKEN["short"], max_wer=0.0),
}
IGNORED = {  # each holds a playable clip, so claiming one by mistake would show
    "part": "lecture.mp4.part",
    "crdownload": "slides.mp4.crdownload",
    "tilde-dollar": "~$x.mp4",
    "dotfile": ".hidden.mp4",
}
RENAMED = "lecture.mp4.part"  # renamed to lecture.mp4 before the second run
# Names that once crashed claim or finalize: each becomes its report, in the output folder named here
# (the name as claimed -> output/<folder>). Each holds hello.mp4 with its own title, so no two are alike.
AWKWARD = {
    "not-utf8": (os.fsdecode(b"caf\xe9 lecture.mp4"), os.fsdecode(b"caf\xe9 lecture.mp4"), "caf\ufffd lecture"),
    "255-bytes": ("\u043b" * 125 + ".mp4", "\u043b" * 125 + ".mp4", "\u043b" * 100),  # 254 bytes; folders keep 200
    "alike-1": ("a b.mp4", "a b.mp4", "a b"),  # both slug to a_b
    "alike-2": ("a_b.mp4", "a_b.mp4", "a_b"),
    "in-a-dropped-folder": ("course/intro.mp4", "course - intro.mp4", "course - intro"),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def spoken_wav(text: str, out: Path) -> Path:
    return speak(text, out, video=False)


def picture(seconds: float = 10) -> list[str]:
    """A still picture as the video input; -shortest ends it with the audio."""
    return ["-f", "lavfi", "-t", str(seconds), "-i", "color=c=navy:s=160x120:r=5"]


def make_drop(media: Path, lecture_mp4: Path, silent_video: Path) -> dict[str, Path]:
    """Every file of the drop, by the name it gets in input/."""
    w = {key: spoken_wav(text, media / f"{key}.wav") for key, text in SPOKEN.items()}
    files: dict[str, Path] = {"lecture.mp4": lecture_mp4, "no audio track.mp4": silent_video}

    def encode(name: str, *args: str) -> None:
        files[name] = media / name.replace("/", "_")
        ffmpeg(*args, str(files[name]))

    (media / "empty.mp4").write_bytes(b"")
    (media / "notes.mp4").write_text("Lecture 3 notes: bring the lab report on Friday.\n")
    cut = lecture_mp4.read_bytes()
    (media / "cut in the middle.mp4").write_bytes(cut[: len(cut) // 2])
    ffmpeg("-i", str(lecture_mp4), "-c", "copy", "-movflags", "+faststart", str(media / "faststart.mp4"))
    cut = (media / "faststart.mp4").read_bytes()
    (media / "cut, index first.mp4").write_bytes(cut[: len(cut) // 2])
    for name in ("empty.mp4", "notes.mp4", "cut in the middle.mp4", "cut, index first.mp4"):
        files[name] = media / name
    encode("muted microphone.mp4", *picture(4), "-f", "lavfi", "-t", "4", "-i", "anullsrc=r=44100:cl=stereo",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest")
    encode("podcast.mp3", "-i", str(w["mp3"]), "-c:a", "libmp3lame", "-b:a", "64k")
    encode("voice memo.wav", "-i", str(w["wav"]), "-ar", "44100", "-ac", "2", "-c:a", "pcm_s16le")
    encode("phone recording.m4a", "-i", str(w["m4a"]), "-c:a", "aac")
    encode("it's a \"quoted\" talk.webm", *picture(), "-i", str(w["webm"]), "-shortest",
           "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus")
    encode("Лекция 2 $(touch pwned).mkv", *picture(), "-i", str(w["mkv"]), "-shortest",
           "-c:v", "libvpx", "-deadline", "realtime", "-c:a", "libvorbis")
    encode("-rf lecture.mov", *picture(), "-i", str(w["mov"]), "-shortest",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "alac")
    encode("two audio tracks.mp4", *picture(), "-i", str(w["first track"]), "-i", str(w["second track"]),
           "-map", "0:v", "-map", "1:a", "-map", "2:a", "-shortest", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=eng")
    files["hello.mp4"] = speak(SPOKEN["short"], media / "hello.mp4")
    for name in IGNORED.values():
        files[name] = files["hello.mp4"]
    for key, (name, _, _) in AWKWARD.items():
        ffmpeg("-i", str(files["hello.mp4"]), "-c", "copy", "-metadata", f"title={key}", str(media / f"{key}.mp4"))
        files[name] = media / f"{key}.mp4"
    # The download's bytes differ from hello.mp4's (only its title): identical bytes already
    # published would be archived as a duplicate rather than processed again.
    ffmpeg("-i", str(files["hello.mp4"]), "-c", "copy", "-metadata", "title=download", str(media / "download.mp4"))
    files[RENAMED] = media / "download.mp4"
    return files


def run_dag(base: Path, data: Path, model: str, attempt: int) -> subprocess.CompletedProcess:
    env = airflow_env(base, data, KONSPEKT_WHISPER_MODEL=model)
    proc = dags_test(env, timeout=1200, cwd=base)
    (base / f"dags-test-{attempt}.log").write_text(proc.stdout + proc.stderr)
    return proc


@dataclass
class Drop:
    data: Path
    base: Path
    hashes: dict[str, str]  # sha256 of every dropped file, by its name in input/
    first: subprocess.CompletedProcess
    second: subprocess.CompletedProcess

    def logs(self) -> str:
        """Everything Airflow logged: the CLI output and every task log file."""
        task_logs = [p.read_text(errors="replace") for p in (self.base / "airflow" / "logs").rglob("*") if p.is_file()]
        return "\n".join([self.first.stdout, self.first.stderr, *task_logs])


@pytest.fixture(scope="module")
def drop(tmp_path_factory, lecture_mp4, silent_video, tiny_en_model) -> Drop:
    base = tmp_path_factory.mktemp("bad-inputs")
    data = base / "data"
    (data / "input").mkdir(parents=True)
    files = make_drop(tmp_path_factory.mktemp("bad-inputs-media"), lecture_mp4, silent_video)
    for name, source in files.items():
        (data / "input" / name).parent.mkdir(exist_ok=True)
        shutil.copy(source, data / "input" / name)
    hashes = {name: sha256(data / "input" / name) for name in files}
    first = run_dag(base, data, tiny_en_model, 1)
    os.rename(data / "input" / RENAMED, data / "input" / "lecture.mp4")  # the download finished
    second = run_dag(base, data, tiny_en_model, 2)
    return Drop(data, base, hashes, first, second)


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_file_is_quarantined_with_a_plain_reason(drop, case):
    stem = Path(case.file).stem
    failed = drop.data / "failed" / stem
    assert (failed / "error.json").is_file(), drop.first.stdout[-3000:]
    error = json.loads((failed / "error.json").read_text())
    assert error["file"] == case.file and error["stage"] == case.stage
    assert case.reason in error["reason"], error
    assert str(drop.data) not in error["reason"]  # no internal folders in a message for people
    assert sha256(failed / case.file) == drop.hashes[case.file] == error["sha256"]
    assert not (drop.data / "output" / stem).exists()


@pytest.mark.parametrize("case", GOOD.values(), ids=GOOD.keys())
def test_accepted_file_becomes_a_report(drop, case):
    out = drop.data / "output" / Path(case.file).stem
    assert (out / "report.pdf").is_file(), drop.first.stdout[-3000:]
    transcript = (out / "transcript.txt").read_text()
    assert word_error_rate(case.says, transcript) <= case.max_wer, transcript
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(s["status"] == "ok" for s in manifest["stages"].values())
    archived = [sha256(p) for p in (drop.data / "processed").glob(f"*/{glob.escape(case.file)}")]
    assert drop.hashes[case.file] in archived  # the original, untouched


@pytest.mark.parametrize("dropped, claimed, folder", AWKWARD.values(), ids=AWKWARD.keys())
def test_awkward_names_each_become_a_report(drop, dropped, claimed, folder):
    out = drop.data / "output" / folder
    assert (out / "report.pdf").is_file(), sorted(p.name for p in (drop.data / "output").iterdir())
    assert word_error_rate(SPOKEN["short"], (out / "transcript.txt").read_text()) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert os.fsencode(manifest["video"]["name"]) == os.fsencode(claimed)
    [archived] = (drop.data / "processed").glob(f"*/{glob.escape(claimed)}")
    assert sha256(archived) == drop.hashes[dropped]  # the original bytes, under its own (byte) name
    text = subprocess.run(["pdftotext", str(out / "report.pdf"), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert folder[:20] in text  # the title page shows the name as text


def test_several_audio_streams_use_the_first_and_report_it(drop):
    out = drop.data / "output" / "two audio tracks"
    extract = json.loads((out / "manifest.json").read_text())["stages"]["extract_audio"]
    assert extract["details"]["audio_streams"] == 2 and extract["details"]["audio_stream_used"] == 0
    transcript = (out / "transcript.txt").read_text().lower()
    assert "football" not in transcript and "music" not in transcript  # the second track's words
    assert "two audio tracks.mp4 has 2 audio streams; using the first (stream #1, aac, language eng)" in drop.logs()


def test_speech_under_2_s_gets_a_report_with_its_words(drop):
    out = drop.data / "output" / "hello"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["extract_audio"]["details"]["duration"] < 2.0
    summary = json.loads((out / "summary.json").read_text())
    assert "too short to summarise" in summary["note"]
    assert word_error_rate(SPOKEN["short"], summary["text"]) == 0
    outline = json.loads((out / "outline.json").read_text())
    assert len(outline["sections"]) == 1
    text = subprocess.run(["pdftotext", str(out / "report.pdf"), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert "too short to summarise" in " ".join(text.split())
    assert "[00:00] Hello, students." in text.rsplit("Transcript", 1)[-1]


def test_no_file_name_is_ever_executed(drop):
    assert not list(drop.base.rglob("pwned")) and not (ROOT / "pwned").exists()


@pytest.mark.parametrize("name", [n for n in IGNORED.values() if n != RENAMED], ids=[
    k for k, n in IGNORED.items() if n != RENAMED])
def test_temp_and_hidden_files_stay_untouched_in_input(drop, name):
    assert sha256(drop.data / "input" / name) == drop.hashes[name]


def test_only_the_ignored_files_are_left(drop):
    left = sorted(p.name for p in (drop.data / "input").iterdir())  # the emptied folder is gone too
    assert left == sorted(n for n in IGNORED.values() if n != RENAMED)
    assert not any((drop.data / "processing").iterdir())


def test_a_renamed_download_with_a_name_already_used_gets_its_own_folder(drop):
    """The .part file was left alone in the first run; renamed to lecture.mp4, it is processed into
    output/lecture (2) and the first lecture's results stay as they were."""
    first, second = drop.data / "output" / "lecture", drop.data / "output" / "lecture (2)"
    assert (second / "report.pdf").is_file(), drop.second.stdout[-3000:]
    assert word_error_rate(SPOKEN["short"], (second / "transcript.txt").read_text()) == 0
    assert word_error_rate(SCRIPT, (first / "transcript.txt").read_text()) <= 0.15
    archived = sorted(sha256(p) for p in (drop.data / "processed").glob("*/lecture.mp4"))
    assert archived == sorted([drop.hashes["lecture.mp4"], drop.hashes[RENAMED]])
