"""An unsure language guess never discards speech (issue 31 item 5).

A Russian recording that Whisper guessed as Mongolian at 0.31 decoded to nothing and was quarantined as
"no speech, fix the file". Now an unsure guess is checked: the first minute is decoded in each likely
language, and the one that reads cleanly is used; when none does, the video is held with a hint to set
the ``language`` Param."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import new_video_dir

from konspekt import inbox
from konspekt.asr import language
from konspekt.asr.language import LanguageUnsure, choose
from konspekt.layout import VideoDir
from konspekt.stages import extract_audio, transcribe

RANKED = [("mn", 0.31), ("ru", 0.27), ("kk", 0.12), ("uk", 0.04)]
LOOP = "Ок. " * 30
RUSSIAN = "Сегодня мы поговорим о градиентном спуске."


class FakeModel:
    """A WhisperModel's two calls ``choose`` makes: an unsure detection, then a text per language."""

    def __init__(self, ranked, texts: dict[str, str]):
        self.model = SimpleNamespace(is_multilingual=True)
        self.ranked, self.texts, self.decoded = ranked, texts, []

    def detect_language(self, audio, vad_filter=False):
        return self.ranked[0][0], self.ranked[0][1], self.ranked

    def transcribe(self, audio, language, **_):
        self.decoded.append(language)
        text = self.texts.get(language, "")
        segment = SimpleNamespace(text=text, start=0.0, end=5.0, no_speech_prob=0.01,
                                  avg_logprob=-0.3 if language == "ru" else -0.6)
        return iter([segment] if text else []), None


AUDIO = np.zeros(16_000 * 90, dtype=np.float32)
SPEECH = [(1.0, 40.0), (41.0, 80.0)]


def test_an_unsure_guess_is_checked_by_decoding_and_the_clean_language_wins():
    model = FakeModel(RANKED, {"mn": "", "ru": RUSSIAN, "kk": LOOP})
    choice = choose(model, AUDIO, SPEECH, beam_size=5)
    assert (choice.language, choice.probability, choice.guess) == ("ru", 0.27, "mn")
    assert model.decoded == ["mn", "ru", "kk"]  # uk is below LEAST_LIKELY: not tried
    assert choice.tried == {"mn": None, "ru": -0.3, "kk": None}


def test_of_two_clean_readings_the_one_the_model_is_surer_of_wins():
    model = FakeModel(RANKED, {"mn": "Өнөөдөр бид градиент.", "ru": RUSSIAN})
    assert choose(model, AUDIO, SPEECH, beam_size=5).language == "ru"  # -0.3 against mn's -0.6


def test_a_sure_guess_is_taken_without_decoding():
    model = FakeModel([("ru", 0.93), ("uk", 0.04)], {})
    assert choose(model, AUDIO, SPEECH, beam_size=5).language == "ru" and model.decoded == []
    english_only = FakeModel(RANKED, {})
    english_only.model.is_multilingual = False
    assert choose(english_only, AUDIO, SPEECH, beam_size=5) is None  # it reports English itself
    assert choose(FakeModel(RANKED, {}), AUDIO, [], beam_size=5) is None  # no speech: nothing to guess from


def test_when_no_language_reads_cleanly_the_user_is_asked_for_the_param():
    with pytest.raises(LanguageUnsure) as caught:
        choose(FakeModel(RANKED, {"kk": LOOP}), AUDIO, SPEECH, beam_size=5)
    message = str(caught.value)
    assert "'mn' at 0.31" in message and "mn, ru, kk" in message and "set the language Param" in message


def test_the_stage_holds_such_a_video_with_the_param_hint_never_fix_the_file(tmp_path, base_model, monkeypatch,
                                                                               lecture_mp4):
    """Through the stage: not bad input (exit 2 quarantines as "fix the file") but an error whose hint,
    once the video is given up on, names the language Param."""
    monkeypatch.setattr(language, "SURE", 1.01)  # every guess unsure
    monkeypatch.setattr(language, "clean_logprob", lambda *a, **k: None)  # and no language reads cleanly
    video_dir = new_video_dir(tmp_path, lecture_mp4)
    assert extract_audio.main(["--video-dir", str(video_dir)]) == 0
    assert transcribe.main(["--video-dir", str(video_dir), "--model", base_model, "--language", "auto"]) == 1
    result = json.loads(VideoDir(video_dir).result_path("transcribe").read_text())
    assert result["status"] == "error" and "set the language Param" in result["message"]
    hint = inbox.outside_hint(result["message"])
    assert "language Param" in hint and "fix the file" not in hint
