"""The transcribe stage on the faster-whisper backend, for real: tiny.en (shipped on PyPI) on espeak-ng speech."""

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, new_video_dir
from transcript_checks import check_subtitles, check_transcript, srt_cues, vtt_cues

from konspekt import asr
from konspekt.asr import subtitles
from konspekt.progress import Progress
from konspekt.contracts import Segment, Transcript, Word
from konspekt.sample import SCRIPT, word_error_rate
from konspekt.stages import extract_audio, transcribe

OUTPUTS = {"transcript.json", "transcript.txt", "transcript.srt", "transcript.vtt", "transcript.tsv"}
PROGRESS = re.compile(r"^transcribed \d+% of \d+ s audio, ETA \d+ s$", re.MULTILINE)


@pytest.fixture(scope="module")
def lecture_dir(tmp_path_factory, lecture_mp4):
    video_dir = new_video_dir(tmp_path_factory.mktemp("lecture"), lecture_mp4)
    assert extract_audio.main(["--video-dir", str(video_dir)]) == 0
    return video_dir


def run_stage(video_dir, *args):
    return transcribe.main(["--video-dir", str(video_dir), *map(str, args)])


def last_result(capsys):
    out, err = capsys.readouterr()
    return json.loads(out.strip().splitlines()[-1]), err


def test_transcribes_spoken_lecture_batched(lecture_dir, tiny_en_model, capsys, monkeypatch):
    monkeypatch.setattr(Progress, "every", 0.0)  # a line per segment, so a short clip shows progress
    code = run_stage(lecture_dir, "--model", tiny_en_model, "--device", "auto")
    result, err = last_result(capsys)
    assert code == 0 and result["status"] == "ok", err
    assert set(result["outputs"]) == OUTPUTS
    details = result["details"]
    assert details["backend"] == "faster-whisper" and details["device"] == "cpu" and details["compute_type"] == "int8"
    assert PROGRESS.search(err), err  # percent and ETA from the batched pipeline too

    t = check_transcript(lecture_dir / "transcript.json")
    assert (t.backend, t.word_timestamps, t.language, t.language_probability) == ("faster-whisper", "faster-whisper",
                                                                                  "en", 1.0)
    assert 30 < t.duration < 40
    assert word_error_rate(SCRIPT, t.text) <= 0.15
    assert sum(len(s.words) for s in t.segments) > 50
    cues = check_subtitles(lecture_dir, t)
    assert len(cues) >= 5  # long segments are split into readable cues


def test_sequential_decoding_with_beam_threads_and_forced_language(lecture_dir, tiny_en_model, capsys):
    code = run_stage(lecture_dir, "--model", tiny_en_model, "--batch-size", 1, "--beam-size", 2, "--threads", 2,
                     "--language", "en", "--compute-type", "int8")
    _, err = last_result(capsys)
    assert code == 0, err
    t = check_transcript(lecture_dir / "transcript.json")
    assert t.language == "en" and word_error_rate(SCRIPT, t.text) <= 0.15
    check_subtitles(lecture_dir, t)


def test_silence_is_bad_input(tmp_path, silence_wav, tiny_en_model, capsys):
    video_dir = new_video_dir(tmp_path, silence_wav, name="silence.wav")
    assert extract_audio.main(["--video-dir", str(video_dir)]) == 0
    code = run_stage(video_dir, "--model", tiny_en_model)
    result, _ = last_result(capsys)
    assert code == 2 and "no speech" in result["message"]
    assert not (video_dir / "transcript.json").exists()


def test_missing_model_offline_fails_fast_with_the_fix(lecture_dir, tmp_path):
    """An empty cache and HF_HUB_OFFLINE: exit 1 naming the warm-up command, no network attempt."""
    env = dict(os.environ, HF_HOME=str(tmp_path / "empty-cache"), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "konspekt.stages.transcribe", "--video-dir", str(lecture_dir),
                           "--model", "small"], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 1 and result["status"] == "error"
    assert "not in the cache" in result["message"] and "konspekt.warm_cache" in result["message"]


def test_backend_choice(monkeypatch):
    monkeypatch.setattr(asr, "whisperx_installed", lambda: True)
    assert asr.pick_backend("auto", "cuda") == "whisperx"
    assert asr.pick_backend("auto", "cpu") == "faster-whisper"  # on a CPU faster-whisper's batching is faster
    assert asr.pick_backend("faster-whisper", "cuda") == "faster-whisper"
    monkeypatch.setattr(asr, "whisperx_installed", lambda: False)
    assert asr.pick_backend("auto", "cuda") == "faster-whisper"
    with pytest.raises(RuntimeError, match="whisperx-env.sh"):
        asr.pick_backend("whisperx", "cpu")
    assert asr.pick_compute_type("auto", "cuda") == "float16" and asr.pick_compute_type("auto", "cpu") == "int8"
    assert asr.pick_compute_type("float32", "cpu") == "float32"


def test_whisperx_without_whisperx_is_a_clear_crash(lecture_dir, tiny_en_model, capsys, monkeypatch):
    monkeypatch.setattr(asr, "whisperx_installed", lambda: False)
    assert run_stage(lecture_dir, "--model", tiny_en_model, "--backend", "whisperx") == 1
    result, _ = last_result(capsys)
    assert "whisperx package is not installed" in result["message"]


# -- writers, without a model ----------------------------------------------------

def test_subtitle_timestamps():
    assert subtitles.timestamp(3725.5) == "01:02:05,500"
    assert subtitles.timestamp(0.0004, ".") == "00:00:00.000"


def _words(text, start, end):
    parts = text.split()
    step = (end - start) / len(parts)
    return [Word(round(start + i * step, 3), round(start + (i + 1) * step, 3), w, 0.9) for i, w in enumerate(parts)]


def test_cues_are_readable_and_never_overlap(tmp_path):
    long = " ".join(f"word{i}" for i in range(60)) + "."
    segments = [
        Segment(0, 0.0, 20.0, long, _words(long, 0.0, 20.0)),  # long: cut by length and by duration
        Segment(1, 19.0, 22.0, "Overlaps the one before.", _words("Overlaps the one before.", 19.0, 22.0)),
        Segment(2, 22.0, 22.0, "Zero.", [Word(22.0, 22.0, "Zero.", 0.5)]),  # zero length
        Segment(3, 23.0, 40.0, "No word times at all " * 8, []),  # a segment from elsewhere, without words
        Segment(4, 41.0, 42.0, "   ", []),  # blank: no cue
    ]
    t = Transcript("en", 0.9, 45.0, "m", segments)
    cues = subtitles.cues(t)
    assert all(a < b for a, b, _ in cues)
    assert all(b1 <= a2 for (_, b1, _), (a2, _, _) in zip(cues, cues[1:]))
    assert all(len(line) <= 60 for _, _, text in cues for line in text.split("\n"))
    assert all(text.count("\n") <= 1 for _, _, text in cues)
    assert all(b - a <= subtitles.MAX_CUE_SECONDS + 2.5 for a, b, _ in cues)
    assert srt_cues(subtitles.to_srt(t)) == vtt_cues(subtitles.to_vtt(t))
    assert [(a, b, "\n".join(lines)) for a, b, lines in srt_cues(subtitles.to_srt(t))] == [
        (round(a, 3), round(b, 3), text) for a, b, text in cues]


def test_subtitles_keep_markup_arrows_ampersands_and_cyrillic(tmp_path):
    """What was said comes back from both files as a player's parser reads them (``srt``, ``webvtt-py``): in
    WebVTT ``<b>`` would be a tag, ``&`` a character reference and ``-->`` a timing line, unless escaped."""
    said = ["Write <b>bold</b> & <i>this</i> here.", "Then a --> b, and x<y>z &amp; more.",
            "Привет, мир: ёжик <тег> & «кавычки».", "A > B and C < D"]
    segments = [Segment(i, 2.0 * i, 2.0 * i + 1.5, text, _words(text, 2.0 * i, 2.0 * i + 1.5))
                for i, text in enumerate(said)]
    t = Transcript("en", 0.9, 10.0, "m", segments)
    vtt = subtitles.to_vtt(t)
    assert "<b>" not in vtt and "a --> b" not in vtt and "&amp;amp;" in vtt
    by_srt, by_vtt = srt_cues(subtitles.to_srt(t)), vtt_cues(vtt)
    assert by_srt == by_vtt and [" ".join(lines) for _, _, lines in by_vtt] == said
    check_dir = new_video_dir(tmp_path)
    for ext, text in subtitles.render(t).items():
        (check_dir / f"transcript.{ext}").write_text(text, encoding="utf-8")
    check_subtitles(check_dir, t)  # the checks every stage run gets, on this text too


def test_tsv_is_whisper_layout():
    t = Transcript("en", 0.9, 5.0, "m", [Segment(0, 0.0, 1.2344, "Hello\tthere.", []),
                                          Segment(1, 1.5, 2.0, " ", []), Segment(2, 2.0, 3.5, "Again.", [])])
    assert subtitles.to_tsv(t) == "start\tend\ttext\n0\t1234\tHello there.\n2000\t3500\tAgain.\n"
