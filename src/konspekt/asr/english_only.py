"""An English-only Whisper (``tiny.en``, an English fine-tune) hears every lecture as English: a Russian
one comes out as English words that sound alike, and its language reads ``en`` with probability 1.
So such a model is never run on another language without saying so: a language asked for that it
cannot do is an error, and with ``language=auto`` the packaged multilingual ``base``
(:mod:`konspekt.packaged`, where installed) listens to the start of the lecture first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from konspekt import packaged
from konspekt.asr.backend import resolve_whisper
from konspekt.contracts import log

ENGLISH_BELOW = 0.5  # P(English) under which the lecture is taken for another language
LISTEN_SECONDS = 300.0  # of audio read for the detection


@dataclass
class Check:
    english_only: bool
    detected: str | None = None  # the language base heard, when it listened
    english_probability: float | None = None
    warnings: list[str] | None = None


def check(model: str, language: str | None, audio_path: Path, device: str = "cpu") -> Check:
    """Raises ValueError for a non-English ``language`` on an English-only ``model``; with ``language``
    None (detect), says in ``warnings`` when the lecture does not sound English."""
    folder = resolve_whisper(model)
    if not packaged.english_only(folder):
        return Check(False)
    if language not in (None, "en"):
        raise ValueError(f"the Whisper model {model} is English-only: it cannot transcribe language={language!r}; "
                         "choose a multilingual model (base, small, medium, large-v3)")
    if language == "en":
        return Check(True, warnings=[])
    detector = packaged.whisper_base()
    if detector is None:
        log(f"{model} is English-only and no multilingual model is installed to check the language: "
            "a lecture in another language needs whisper_model=base or small")
        return Check(True, warnings=[])
    detected, p_english = detect(detector, audio_path, device)
    log(f"{model} is English-only; the packaged base hears {detected!r} (P(English) {p_english:.2f})")
    if p_english >= ENGLISH_BELOW:
        return Check(True, detected, p_english, [])
    return Check(True, detected, p_english, [
        f"the lecture does not sound English (the multilingual base model hears {detected!r}; English "
        f"only {p_english:.2f}), but the Whisper model {model} is English-only, so its transcript is "
        f"English words that sound alike: set whisper_model to a multilingual model (base, small) "
        f"and language to the lecture's"])


def detect(model_dir: Path, audio_path: Path, device: str) -> tuple[str, float]:
    """The language base hears in the first 30 s of speech, and its probability of English."""
    from faster_whisper import WhisperModel

    from konspekt.asr.faster_whisper import read_window

    model = WhisperModel(str(model_dir), device=device, compute_type="int8" if device == "cpu" else "float16")
    # only the first minutes are read (a 6-hour lecture would be 1.4 GB of samples); VAD finds speech in them
    language, _, probabilities = model.detect_language(read_window(audio_path, 0, LISTEN_SECONDS), vad_filter=True)
    del model  # freed before the transcribing model loads
    return language, dict(probabilities).get("en", 0.0)
