"""Where the batched decoder's windows start and end, and which speech their words leave out.

Batched decoding has no timestamps and no previous text: Whisper ends a window's text at its last
finished sentence, so a window that ends mid-sentence loses that sentence's first half, and on a change
of voice or room it may skip a whole sentence inside a window (``bench/results/2026-12-07-real-speech.md``).
Two causes, two fixes, both measured on real recordings:

- :func:`pack` cuts windows at the longest pause near their end, not at whatever pause comes when the
  window is full, so a window rarely ends inside a sentence;
- :func:`holes` finds the speech (by voice activity) that no word of a window covers; each hole is decoded
  again on its own and spliced in (:func:`konspekt.asr.faster_whisper.with_holes`,
  :func:`konspekt.asr.quality.review`).

Times are seconds in the recording; spans are ``(start, end)`` tuples. Pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from konspekt.contracts import Word

Span = tuple[float, float]

MAX_WINDOW = 29.0  # seconds: a full 30 s window loses its last words (bench/results/2026-12-03.md)
LOOKBACK = 10.0  # seconds before a full window's end where its cut may fall: at the longest pause there
UNCOVERED_SECONDS = 1.5  # speech this long without a word: the decoder skipped it (a word is < 1.5 s)
# A "word" longer than this is no word: the timing (DTW) stretched it over speech the text skipped.
LONGEST_WORD = 2.0


def pack(speech: Sequence[Span], max_seconds: float = MAX_WINDOW, lookback: float = LOOKBACK) -> list[Span]:
    """Windows of at most ``max_seconds`` from first to last speech, each a run of whole ``speech`` spans
    (silence between them kept, so Whisper hears the pauses). When the next span does not fit, the window
    is cut at the longest pause among those in its last ``lookback`` seconds (the later pause when two are
    as long): sentences end at long pauses. A span longer than ``max_seconds`` is cut where it exceeds."""
    windows: list[Span] = []
    current: list[Span] = []
    for span in _split_long(speech, max_seconds):
        while current and span[1] - current[0][0] > max_seconds:
            cut = _cut(current, span, max_seconds - lookback)
            windows.append((current[0][0], current[cut - 1][1]))
            current = current[cut:]
        current.append(span)
    if current:
        windows.append((current[0][0], current[-1][1]))
    return windows


def _cut(current: Sequence[Span], following: Span, earliest: float) -> int:
    """How many of ``current`` stay in the window: cut at the longest pause (rounded to 0.1 s, the later of
    equals) after a span ending ``earliest`` seconds or more into the window."""
    def pause_after(i: int) -> float:
        return (current[i][0] if i < len(current) else following[0]) - current[i - 1][1]

    cuts = [i for i in range(1, len(current) + 1) if current[i - 1][1] - current[0][0] >= earliest]
    return max(cuts or [len(current)], key=lambda i: (round(pause_after(i), 1), i))


def _split_long(speech: Iterable[Span], max_seconds: float) -> Iterable[Span]:
    for start, end in speech:
        while end - start > max_seconds:
            yield start, start + max_seconds
            start += max_seconds
        if end > start:
            yield start, end


def uncovered(words: Sequence[Word], speech: Sequence[Span], window: Span) -> list[Span]:
    """The stretches of ``speech`` inside ``window`` that no word's ``[start, end]`` covers."""
    gaps: list[Span] = []
    lo, hi = window
    for start, end in speech:
        start, end = max(start, lo), min(end, hi)
        if end <= start:
            continue
        at = start
        for w in words:
            if w.end <= at or w.start >= end:
                continue
            if w.start > at:
                gaps.append((at, w.start))
            at = max(at, w.end)
        if end > at:
            gaps.append((at, end))
    return gaps


def holes(words: Sequence[Word], speech: Sequence[Span], window: Span,
          least: float = UNCOVERED_SECONDS) -> list[Span]:
    """Where, between two neighbouring words of ``window`` (or before the first, after the last), at least
    ``least`` seconds of speech have no word: the decoder skipped it. Each hole runs from that speech's
    start to its end. A word longer than :data:`LONGEST_WORD` covers nothing."""
    found: list[Span] = []
    words = sorted((w for w in words if w.end - w.start <= LONGEST_WORD), key=lambda w: w.start)
    edges = [window[0], *(t for w in words for t in (w.start, w.end)), window[1]]
    for after, before in zip(edges[::2], edges[1::2]):  # the word-free stretches: (end of one, start of next)
        gap = uncovered([], speech, (after, before))
        if sum(b - a for a, b in gap) >= least:
            found.append((gap[0][0], gap[-1][1]))
    return found
