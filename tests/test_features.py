"""features stage: real openSMILE on a short espeak-ng recording, synthetic word timings."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from konspekt.contracts import Segment, Transcript, Word
from konspekt.layout import VideoDir, write_json
from konspekt.stages import features
from konspekt.stages.extract_audio import wav_duration

pytest.importorskip("opensmile")

SPEECH = (
    "Good morning everyone. Today we talk about the Fourier transform, "
    "and why it matters for signal processing. Let us begin with a simple example."
)
HEADER = ("segment,start,end,text_words,speech_rate_wps,pause_before_s,voiced_ratio,"
          "pitch_mean_hz,pitch_sd_semitones,loudness_mean,loudness_sd")


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    if not (shutil.which("espeak-ng") and shutil.which("ffmpeg")):
        pytest.skip("espeak-ng and ffmpeg are needed to make test speech")
    folder = tmp_path_factory.mktemp("speech")
    raw, wav = folder / "raw.wav", folder / "audio.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), SPEECH], check=True, capture_output=True)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(raw),
                    "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", str(wav)], check=True)
    return wav


def spread_words(text: str, start: float, end: float) -> list[Word]:
    tokens = text.split()
    slot = (end - start) / len(tokens)
    return [Word(start + i * slot, start + (i + 0.8) * slot, t, 0.9) for i, t in enumerate(tokens)]


def make_transcript(duration: float) -> Transcript:
    """Three segments over the audio: a 1.2 s silence gap before the second, no word times in the third."""
    a, b = duration * 0.35, duration * 0.7
    texts = ["Good morning everyone. Today we talk about", "the Fourier transform, and why it matters",
             "for signal processing. Let us begin with a simple example."]
    segments = [
        Segment(0, 0.0, a, texts[0], spread_words(texts[0], 0.1, a - 1.2)),
        Segment(1, a, b, texts[1], spread_words(texts[1], a, b)),
        Segment(2, b, duration, texts[2]),
    ]
    return Transcript("en", 0.99, duration, "tiny.en", segments)


@pytest.fixture
def video(tmp_path, speech_wav) -> VideoDir:
    video = VideoDir(tmp_path / "lecture")
    video.path.mkdir()
    write_json(video.path / "video.json", {"name": "lecture.mp4", "source": "source/lecture.mp4"})
    shutil.copy(speech_wav, video.audio)
    write_json(video.transcript_json, make_transcript(wav_duration(video.audio)))
    return video


def load_strict(path: Path):
    def no_constants(name):
        raise ValueError(f"{name} in {path.name}")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constants)


def test_features_from_speech(video):
    assert features.main(["--video-dir", str(video.path)]) == 0

    lines = video.features_csv.read_text(encoding="utf-8").splitlines()
    assert lines[0] == HEADER
    rows = list(csv.DictReader(lines))
    assert [r["segment"] for r in rows] == ["0", "1", "2"]
    assert 1.2 <= float(rows[1]["pause_before_s"]) < 1.4  # the gap left before segment 1
    assert int(rows[2]["text_words"]) == 10 and float(rows[2]["speech_rate_wps"]) > 0  # segment-bounds fallback
    for row in rows:
        assert 0 < float(row["voiced_ratio"]) <= 1
        assert 60 < float(row["pitch_mean_hz"]) < 400

    data = load_strict(video.features_json)
    assert list(data) == ["feature_set", "duration", "summary", "functionals", "timeline", "per_minute"]
    assert data["feature_set"] == "eGeMAPSv02"
    assert data["duration"] == pytest.approx(wav_duration(video.audio), abs=1e-3)
    summary = data["summary"]
    assert set(summary) == {"words", "speech_rate_wps", "pause_ratio", "long_pauses", "pitch_mean_hz",
                            "pitch_sd_semitones", "loudness_mean", "loudness_sd"}
    assert summary["words"] == 24 and summary["long_pauses"] == 1
    assert 0 < summary["pause_ratio"] < 1
    assert 80 < summary["pitch_mean_hz"] < 300 and summary["pitch_sd_semitones"] > 0
    assert len(data["functionals"]) == 88
    assert all(isinstance(v, float) for v in data["functionals"].values())
    timeline = data["timeline"]
    assert timeline["step"] == 1.0
    assert len(timeline["time"]) == len(timeline["loudness"]) == len(timeline["pitch_hz"]) >= 8
    assert any(p is not None for p in timeline["pitch_hz"])
    [minute] = data["per_minute"]
    assert minute["minute"] == 0 and minute["words"] == 24
    assert set(minute) == {"minute", "words", "speech_rate_wps", "pause_ratio", "pitch_mean_hz", "loudness_mean"}

    result = load_strict(video.result_path("features"))
    assert result["outputs"] == ["features.csv", "features.json"] and result["details"]["segments"] == 3


def test_rerun_is_byte_identical(video):
    assert features.main(["--video-dir", str(video.path)]) == 0
    first = {p: p.read_bytes() for p in (video.features_csv, video.features_json)}
    assert features.main(["--video-dir", str(video.path)]) == 0
    assert {p: p.read_bytes() for p in first} == first
    assert not [p.name for p in video.path.rglob("*.tmp")]


def test_no_segments_still_writes_features(video):
    write_json(video.transcript_json, Transcript("en", None, wav_duration(video.audio), "tiny.en", []))
    assert features.main(["--video-dir", str(video.path)]) == 0
    assert video.features_csv.read_text(encoding="utf-8") == HEADER + "\n"
    data = load_strict(video.features_json)
    assert data["summary"]["words"] == 0 and data["summary"]["pause_ratio"] == 1.0
    assert len(data["functionals"]) == 88


def test_missing_audio_is_an_internal_error(video):
    video.audio.unlink()
    assert features.main(["--video-dir", str(video.path)]) == 1
    assert "FileNotFoundError" in load_strict(video.result_path("features"))["message"]


def test_long_audio_timeline_is_capped():
    step = features.timeline_step(3 * 3600, 1.0)
    assert step == 6.0 and 3 * 3600 / step <= features.MAX_TIMELINE_POINTS
    assert features.timeline_step(600, 1.0) == 1.0


def test_covered_counts_overlaps_once():
    assert features.covered([(0, 2), (1, 3), (5, 6)], 0, 10) == pytest.approx(4)
    assert features.covered([(0, 2), (1, 3)], 1.5, 2.5) == pytest.approx(1)
