"""The voice features: the features stage (real openSMILE on a short espeak-ng recording, audio only),
then render_pdf's alignment of its frames to synthetic word timings (konspekt.prosody)."""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from konspekt import prosody
from konspekt.contracts import Segment, Transcript, Word
from konspekt.layout import VideoDir, write_json
from konspekt.media import wav_duration
from konspekt.stages import features, render_pdf

pytest.importorskip("opensmile")

SPEECH = (
    "Good morning everyone. Today we talk about the Fourier transform, "
    "and why it matters for signal processing. Let us begin with a simple example."
)
HEADER = ("segment,start,end,text_words,speech_rate_wps,pause_before_s,pause_ratio,long_pauses,voiced_ratio,"
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


def measure(video: VideoDir) -> None:
    """The features stage, then render_pdf's first step: features.csv and features.json."""
    assert features.main(["--video-dir", str(video.path)]) == 0
    options = argparse.Namespace(long_pause=1.0, timeline_step=1.0, rate_window=30.0)
    assert render_pdf.write_features(video, options) == [video.features_csv, video.features_json]


def load_strict(path: Path):
    def no_constants(name):
        raise ValueError(f"{name} in {path.name}")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constants)


def test_features_from_speech(video, capsys):
    measure(video)
    assert re.search(r"measured 100% of \d+ s audio in \d+ s", capsys.readouterr().err)  # the task log's progress

    lines = video.features_csv.read_text(encoding="utf-8").splitlines()
    assert lines[0] == HEADER
    rows = list(csv.DictReader(lines))
    transcript = Transcript.load(video.transcript_json)
    assert [(int(r["segment"]), float(r["start"]), float(r["end"])) for r in rows] == [
        (s.id, round(s.start, 4), round(s.end, 4)) for s in transcript.segments]  # one row per segment
    assert 1.2 <= float(rows[1]["pause_before_s"]) < 1.4  # the gap left before segment 1
    assert [r["long_pauses"] for r in rows] == ["0", "1", "0"]  # ...counted where it ends
    assert 0.2 < float(rows[0]["pause_ratio"]) < 0.6  # the gap at its end, and 20 % between words
    assert rows[2]["pause_ratio"] == ""  # no word times: unknown, not zero
    assert int(rows[2]["text_words"]) == 10 and float(rows[2]["speech_rate_wps"]) > 0  # segment-bounds fallback
    for row in rows:
        assert 0 < float(row["voiced_ratio"]) <= 1
        assert 60 < float(row["pitch_mean_hz"]) < 400

    data = load_strict(video.features_json)
    assert list(data) == ["feature_set", "duration", "long_pause_s", "summary", "functionals", "timeline",
                          "per_minute", "pitch_histogram"]
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
    n = len(timeline["time"])
    assert n == len(timeline["loudness"]) == len(timeline["pitch_hz"]) == len(timeline["speech_rate_wps"]) >= 8
    assert any(p is not None for p in timeline["pitch_hz"])
    assert 0 < max(timeline["speech_rate_wps"]) < 6
    [minute] = data["per_minute"]
    assert minute["minute"] == 0 and minute["words"] == 24 and minute["long_pauses"] == 1
    assert set(minute) == {"minute", "words", "speech_rate_wps", "pause_ratio", "long_pauses", "pitch_mean_hz",
                           "pitch_sd_semitones", "loudness_mean", "loudness_sd"}
    hist = data["pitch_histogram"]
    assert len(hist["edges_hz"]) == len(hist["counts"]) + 1 and sum(hist["counts"]) > 50
    assert 60 < hist["edges_hz"][0] < hist["edges_hz"][-1] < 500

    result = load_strict(video.result_path("features"))
    assert result["outputs"] == ["voice.npz", "voice.json"] and result["details"]["frames"] > 100


def test_the_stage_needs_only_the_audio(video):
    """It runs beside transcription: no transcript yet, and the voice is measured all the same."""
    video.transcript_json.unlink()
    assert features.main(["--video-dir", str(video.path)]) == 0
    frames = prosody.Frames.load(video.voice_npz)
    assert len(frames.time) > 100 and np.all(np.diff(frames.time) > 0)
    voice = load_strict(video.voice_json)
    assert voice["feature_set"] == "eGeMAPSv02" and len(voice["functionals"]) == 88
    assert not video.features_csv.exists()  # render_pdf writes those, once the words are known


def test_one_pass_matches_opensmile_two_passes(speech_wav):
    """The single engine run gives exactly what Smile's separate LLD and functionals passes give."""
    import opensmile

    frames, funcs = features.analyse(speech_wav)
    smile = lambda level: opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, level).process_file(  # noqa: E731
        str(speech_wav))
    reference = smile(opensmile.FeatureLevel.Functionals).iloc[0]
    assert list(funcs) == list(reference.index)
    assert [funcs[k] for k in funcs] == pytest.approx(reference.to_list(), rel=1e-6)
    lld = smile(opensmile.FeatureLevel.LowLevelDescriptors)
    assert len(frames.time) == len(lld)
    assert frames.loudness == pytest.approx(lld[features.LOUDNESS_LLD].to_numpy(), rel=1e-6)


def test_streamed_in_small_pieces_the_result_is_the_same(speech_wav):
    """Half-second pieces into a one-second ring: the writer waits for the engine many times, nothing is lost."""
    frames, funcs = features.analyse(speech_wav)
    small_frames, small_funcs = features.analyse(speech_wav, chunk_seconds=0.5)
    assert small_funcs == funcs
    assert np.array_equal(small_frames.time, frames.time)
    assert np.array_equal(small_frames.loudness, frames.loudness)
    assert np.array_equal(small_frames.semitones, frames.semitones, equal_nan=True)


def test_rerun_replaces_files_and_is_byte_identical(video):
    video.features_csv.write_text("stale\nrows\n", encoding="utf-8")  # as an appending tool would leave it
    measure(video)
    outputs = (video.features_csv, video.features_json, video.voice_npz, video.voice_json)
    first = {p: p.read_bytes() for p in outputs}
    assert not first[video.features_csv].startswith(b"stale") and first[video.features_csv].count(b"\n") == 4
    assert features.main(["--video-dir", str(video.path), "--force", "true"]) == 0
    measure(video)
    assert {p: p.read_bytes() for p in first} == first
    assert not [p.name for p in video.path.rglob("*.tmp")]


def test_no_segments_still_writes_features(video):
    write_json(video.transcript_json, Transcript("en", None, wav_duration(video.audio), "tiny.en", []))
    measure(video)
    assert video.features_csv.read_text(encoding="utf-8") == HEADER + "\n"
    data = load_strict(video.features_json)
    assert data["summary"]["words"] == 0 and data["summary"]["pause_ratio"] == 1.0
    assert len(data["functionals"]) == 88


def test_missing_audio_is_an_internal_error(video):
    video.audio.unlink()
    assert features.main(["--video-dir", str(video.path)]) == 1
    assert "FileNotFoundError" in load_strict(video.result_path("features"))["message"]


def test_long_audio_timeline_is_capped():
    step = prosody.timeline_step(3 * 3600, 1.0)
    assert step == 6.0 and 3 * 3600 / step <= prosody.MAX_TIMELINE_POINTS
    assert prosody.timeline_step(600, 1.0) == 1.0


def test_covered_counts_overlaps_once():
    assert prosody.covered([(0, 2), (1, 3), (5, 6)], 0, 10) == pytest.approx(4)
    assert prosody.covered([(0, 2), (1, 3)], 1.5, 2.5) == pytest.approx(1)
