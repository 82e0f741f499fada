"""Is a piece of Whisper output speech, or one of Whisper's failure modes?

Whisper fails in recognisable ways: on noise, music or a voice it cannot place it loops
(the same words again and again, which also makes the text compress unusually well), or
it writes in the script of another language (Latin letters for a Russian lecture). The
batched decoder has no temperature fallback to catch this, so :func:`review` decodes such a
window again, and marks what is still not speech instead of publishing it. It also decodes again a
chunk whose words leave a stretch of its speech uncovered (the batched decoder skipped a sentence:
:mod:`konspekt.asr.chunks`), or, where voice activity is not known, one with far fewer words a second than
the rest of the lecture, keeping the second text only when it covers more of the speech, or says clearly more.

Pure functions over text; the second decoding is the caller's (a function passed in).
"""

from __future__ import annotations

import re
import statistics
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from dataclasses import replace

from konspekt.asr.chunks import Span, uncovered
from konspekt.contracts import Segment, log

COMPRESSION_RATIO_THRESHOLD = 2.4  # Whisper's own: above it, decoding is retried at a higher temperature
MIN_REPEATS, MIN_REPEATED_WORDS = 3, 8  # "very very very" is speech; "thank you" four times over is a loop
MIN_SCRIPT_LETTERS = 4  # too few letters to tell a script ("OK", "3D")
MIN_SCRIPT_SHARE = 0.2  # a Russian sentence with a few English terms is still mostly Cyrillic
NO_SPEECH_PROB, LOW_LOGPROB = 0.6, -1.0  # Whisper's own rule for a window that is silence, not words
GAP = 1.0  # seconds: degenerate segments closer than this are decoded again as one window
# A chunk this long with under this share of the lecture's median words per second lost its words.
SPARSE_SECONDS, SPARSE_SHARE = 8.0, 0.35

REASONS = {
    "repetition": "the same words over and over",
    "compression_ratio": "highly repetitive text",
    "wrong_script": "text in a script that does not match the language",
    "no_speech": "probably no speech, only noise",
    "too_few_words": "far fewer words than the rest of the lecture",  # decoded again, never marked
    "skipped_speech": "speech the text has no words for",  # decoded again, never marked
}

_LATIN = ("LATIN",)
_CYRILLIC = ("CYRILLIC",)
# The first word of the Unicode names of the letters a language is written in.
SCRIPTS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys("en de fr es it pt nl pl cs sk sl hr bs sv da no nn fi et lv lt hu ro tr id ms vi "
                    "ca gl eu af sw tl cy ga is mt sq az uz la lb oc br ha yo so jw su haw ln sn".split(), _LATIN),
    **dict.fromkeys("ru uk be bg sr mk kk mn tg ky tt ba".split(), _CYRILLIC),
    "el": ("GREEK",), "hy": ("ARMENIAN",), "ka": ("GEORGIAN",),
    **dict.fromkeys("ar fa ur ps sd".split(), ("ARABIC",)), **dict.fromkeys("he yi".split(), ("HEBREW",)),
    **dict.fromkeys("hi mr ne sa".split(), ("DEVANAGARI",)), "bn": ("BENGALI",), "as": ("BENGALI",),
    "ta": ("TAMIL",), "te": ("TELUGU",), "kn": ("KANNADA",), "ml": ("MALAYALAM",), "gu": ("GUJARATI",),
    "pa": ("GURMUKHI",), "si": ("SINHALA",), "th": ("THAI",), "lo": ("LAO",), "km": ("KHMER",),
    "my": ("MYANMAR",), "am": ("ETHIOPIC",), "bo": ("TIBETAN",),
    "zh": ("CJK",), "yue": ("CJK",), "ja": ("CJK", "HIRAGANA", "KATAKANA"), "ko": ("HANGUL", "CJK"),
}


def compression_ratio(text: str) -> float:
    """Bytes of the text over bytes of it zlib-compressed, as Whisper computes it (0 for no text)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _words(text: str) -> list[str]:
    return [w for w in (re.sub(r"[^\w']", "", t).lower() for t in text.split()) if w]


def repeated_ngrams(text: str, max_n: int = 6) -> tuple[int, int]:
    """The longest run of one n-gram repeated back to back: ``(n, repeats)``, by words it covers."""
    words = _words(text)
    best = (0, 0)
    for n in range(1, max_n + 1):
        for start in range(len(words) - n):
            repeats = 1
            while words[start + repeats * n:start + (repeats + 1) * n] == words[start:start + n]:
                repeats += 1
            if repeats > 1 and n * repeats > best[0] * best[1]:
                best = (n, repeats)
    return best


def script_of(ch: str) -> str | None:
    """The script of a letter by its Unicode name (``"LATIN"``, ``"CYRILLIC"``, ``"CJK"``...); None for others."""
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else None


def script_mismatch(text: str, language: str | None) -> bool:
    """Almost none of the letters are in the script ``language`` is written in (False when unknown)."""
    expected = SCRIPTS.get(language or "")
    scripts = [s for s in map(script_of, text) if s]
    if not expected or len(scripts) < MIN_SCRIPT_LETTERS:
        return False
    return sum(s in expected for s in scripts) / len(scripts) < MIN_SCRIPT_SHARE


def is_degenerate(text: str, language: str | None, no_speech_prob: float | None = None,
                  avg_logprob: float | None = None) -> str | None:
    """Why ``text`` is not plausible speech in ``language`` (a key of :data:`REASONS`), or None.

    ``no_speech_prob`` and ``avg_logprob`` (the decoder's, where known) apply Whisper's silence rule,
    which its batched decoding skips: the " you" it writes for noise."""
    if not text.strip():
        return None
    if (no_speech_prob is not None and avg_logprob is not None
            and no_speech_prob > NO_SPEECH_PROB and avg_logprob < LOW_LOGPROB):
        return "no_speech"
    n, repeats = repeated_ngrams(text)
    if repeats >= MIN_REPEATS and n * repeats >= MIN_REPEATED_WORDS:
        return "repetition"
    if compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD:
        return "compression_ratio"
    if script_mismatch(text, language):
        return "wrong_script"
    return None


# -- a second decoding, then marking -----------------------------------------------------------

DecodeAgain = Callable[[float, float], "list[Segment]"]  # (start, end) seconds -> segments in lecture time


def sparse(segments: list[Segment]) -> list[bool]:
    """Which segments hold far fewer words per second than the lecture's median (:data:`SPARSE_SHARE`),
    among those at least :data:`SPARSE_SECONDS` long: where the decoder likely stopped before the speech did."""
    def seconds(s: Segment) -> float:
        return s.end - s.start

    rates = [len(_words(s.text)) / seconds(s) for s in segments if seconds(s) >= 3 and s.text.strip()]
    if len(rates) < 2:
        return [False] * len(segments)
    typical = statistics.median(rates)
    return [seconds(s) >= SPARSE_SECONDS and len(_words(s.text)) < SPARSE_SHARE * typical * seconds(s)
            for s in segments]


def is_hole(seg: Segment) -> bool:
    """A placeholder for speech the decoder returned no words for (:func:`konspekt.asr.chunks.holes`)."""
    return not seg.text and not seg.words and seg.degenerate is None


def covers_more(first: list[Segment], second: list[Segment], speech: Sequence[Span]) -> bool:
    """The second decoding leaves less of the window's speech without words, and says no fewer words."""
    window = (first[0].start, first[-1].end)

    def gap(part: list[Segment]) -> float:
        return sum(b - a for a, b in uncovered([w for s in part for w in s.words], speech, window))

    def count(part: list[Segment]) -> int:
        return sum(len(_words(s.text)) for s in part)

    return gap(second) < gap(first) and count(second) >= count(first)


def says_more(first: list[Segment], second: list[Segment]) -> bool:
    """The second decoding has clearly more words than the first (half as many again, and five at least)."""
    before, after = (sum(len(_words(s.text)) for s in part) for part in (first, second))
    return after >= max(1.5 * before, before + 5)


def mark(seg: Segment, reason: str) -> Segment:
    """The segment as not speech: no text or words for later stages, the decoder's words kept aside."""
    return replace(seg, text="", words=[], degenerate=reason, unclear_text=seg.text.strip() or seg.unclear_text)


def windows(flags: list[bool], segments: list[Segment]) -> list[tuple[int, int]]:
    """Index ranges ``[a, b)`` of flagged segments, neighbours closer than :data:`GAP` joined."""
    out: list[tuple[int, int]] = []
    for i, flagged in enumerate(flags):
        if not flagged:
            continue
        if out and out[-1][1] == i and segments[i].start - segments[i - 1].end < GAP:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m:02d}:{s:02d}"


def review(segments: list[Segment], language: str | None, decode_again: DecodeAgain,
           speech: Sequence[Span] = ()) -> tuple[list[Segment], list[str]]:
    """Segments whose text is degenerate are decoded again (``decode_again``) window by window; what the
    second decoding still gets wrong is :func:`mark`-ed. Where ``speech`` (voice activity) is known, a
    hole (:func:`is_hole`: speech the decoder skipped) is decoded again, and filled where the second text
    :func:`covers_more` of it; without ``speech``, a :func:`sparse` segment is, and replaced where the second
    text :func:`says_more`. Returns the segments, renumbered (holes left empty included), and a warning per
    window that stayed unclear."""
    reasons = [is_degenerate(s.text, language, s.no_speech_prob, s.avg_logprob) for s in segments]
    gaps = [is_hole(s) for s in segments] if speech else sparse(segments)
    few = [short and r is None for short, r in zip(gaps, reasons)]  # plausible text, too little of it
    out: list[Segment] = []
    warnings: list[str] = []
    done = 0
    for a, b in sorted(windows([r is not None for r in reasons], segments) + windows(few, segments)):
        out += segments[done:a]
        done = b
        start, end = segments[a].start, segments[b - 1].end
        why = ("skipped_speech" if speech else "too_few_words") if few[a] else reasons[a] or "repetition"
        log(f"{_clock(start)}–{_clock(end)}: {REASONS[why]}; decoding it again, sequentially with temperature fallback")
        again = [s for s in decode_again(start, end) if s.text.strip()]
        retold = [(s, is_degenerate(s.text, language, s.no_speech_prob, s.avg_logprob)) for s in again]
        if few[a]:  # real text, only short: the fuller reading wins
            fuller = covers_more(segments[a:b], again, speech) if speech else says_more(segments[a:b], again)
            out += again if again and not any(r for _, r in retold) and fuller else segments[a:b]
            continue
        if again and not any(r for _, r in retold):
            out += again
            continue
        # Still not speech: the first decoding's segments are kept as marked, the second's too where it failed.
        unclear = ([mark(s, r) for s, r in retold if r]
                   or [mark(s, r or "repetition") for s, r in zip(segments[a:b], reasons[a:b])])
        out += sorted([s for s, r in retold if not r] + unclear, key=lambda s: s.start)
        why = REASONS[unclear[0].degenerate or "repetition"]
        warnings.append(f"unclear audio at {_clock(start)}–{_clock(end)} ({why}, even when decoded again): "
                        "left out of the transcript and the notes")
    out += segments[done:]
    return [replace(s, id=i) for i, s in enumerate(out)], warnings
