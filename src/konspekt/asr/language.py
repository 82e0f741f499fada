"""Which language to decode a lecture in, when the user left ``language`` on auto.

Whisper guesses from the first 30 s of speech. A sure guess is taken. An unsure one is often wrong
(a Russian recording guessed as Mongolian at 0.31), and decoding in the wrong language turns speech into
nothing or into a loop, which used to quarantine the video as "no speech". So when the guess is unsure,
the first minute of speech is decoded in each likely language, and the one whose text is clean and that
the model is surest of wins (the transcript still warns that the language was unsure). When none decodes
cleanly the video is held, with a hint to set the ``language`` Param: the file is not at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from konspekt.asr.audio import SAMPLE_RATE
from konspekt.asr.chunks import Span
from konspekt.asr.quality import is_degenerate
from konspekt.contracts import log

SURE = 0.5  # a guess at least this likely is taken as it is
CANDIDATES, LEAST_LIKELY = 3, 0.05  # the most likely languages tried, none below this probability
SAMPLE_SECONDS = 60.0  # of speech, from its start: enough sentences to judge, cheap for three languages


class LanguageUnsure(Exception):
    """No likely language decodes the lecture cleanly: the user must say which it is (not the file's fault)."""


@dataclass
class Choice:
    language: str
    probability: float  # Whisper's probability for it
    guess: str  # Whisper's own first choice
    tried: dict[str, float | None] = field(default_factory=dict)  # language -> mean log-probability (None: unclean)


def choose(model, audio, speech: list[Span], beam_size: int) -> Choice | None:
    """The language to decode ``audio`` in (a ``faster_whisper.WhisperModel``; ``speech`` from VAD), or None
    to let the decoder detect it (no speech, or an English-only model). Raises :class:`LanguageUnsure`."""
    if not speech or not model.model.is_multilingual:
        return None
    start = speech[0][0]
    sample = audio[int(start * SAMPLE_RATE):int((start + SAMPLE_SECONDS) * SAMPLE_RATE)]
    guess, probability, ranked = model.detect_language(sample, vad_filter=True)
    if probability >= SURE:
        return Choice(guess, probability, guess)
    candidates = [(lang, p) for lang, p in ranked[:CANDIDATES] if p >= LEAST_LIKELY or lang == guess]
    log(f"the language guess is unsure ({guess!r} at {probability:.2f}): decoding the first minute of speech in "
        + ", ".join(f"{lang} ({p:.2f})" for lang, p in candidates))
    tried: dict[str, float | None] = {}
    for lang, _ in candidates:
        tried[lang] = clean_logprob(model, sample, lang, beam_size)
    clean = {lang: lp for lang, lp in tried.items() if lp is not None}
    if not clean:
        raise LanguageUnsure(
            f"Whisper could not tell the lecture's language (its guess: {guess!r} at {probability:.2f}), and "
            f"the first minute decoded cleanly in none of {', '.join(tried)}: set the language Param to the "
            "lecture's language (e.g. language=ru) and trigger the video again")
    best = max(clean, key=clean.__getitem__)
    log(f"decoding in {best!r}: of those that read as speech ({', '.join(clean)}), the model is surest of its text")
    return Choice(best, dict(ranked)[best], guess, tried)


def clean_logprob(model, sample, language: str, beam_size: int) -> float | None:
    """The mean log-probability of the sample's text decoded in ``language``; None when the text is empty
    or not speech (a loop, the wrong script, Whisper's silence)."""
    segments, _ = model.transcribe(sample, language=language, beam_size=beam_size, vad_filter=True,
                                   condition_on_previous_text=False)
    segments = list(segments)
    text = " ".join(s.text for s in segments).strip()
    if not text or any(is_degenerate(s.text, language, s.no_speech_prob, s.avg_logprob) for s in segments):
        return None
    weights = [max(s.end - s.start, 0.1) for s in segments]
    return sum(s.avg_logprob * w for s, w in zip(segments, weights)) / sum(weights)
