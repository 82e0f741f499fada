"""Sentences of a transcript, plain or with times: what the summary, the outline and the report work on.

Stdlib only, so every stage image can use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from konspekt.contracts import Transcript

MAX_SENTENCE_WORDS = 60  # longer "sentences" are text without punctuation: cut into word windows
SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*$")


@dataclass
class Sentence:
    start: float
    end: float
    text: str
    speaker: str | None = None  # with diarization; a change of speaker also ends a sentence


def split_sentences(text: str, max_words: int = MAX_SENTENCE_WORDS) -> list[str]:
    """Sentences at ``.!?`` ends; a run of words without any is cut into ``max_words`` windows."""
    sentences = []
    for part in re.split(r"(?:(?<=[.!?…])|(?<=[.!?…][\"'”’)\]]))\s+", text.strip()):
        words = part.split()
        for i in range(0, len(words), max_words):
            sentences.append(" ".join(words[i:i + max_words]))
    return [s for s in sentences if s]


def timed_sentences(transcript: Transcript, max_words: int = MAX_SENTENCE_WORDS) -> list[Sentence]:
    """The transcript cut into sentences with times, across segment borders (ASR segments often
    end mid-sentence); a segment without word times spreads its words evenly over its span."""
    words: list[tuple[float, float, str, str | None]] = []
    for seg in transcript.segments:
        if seg.words:
            words += [(w.start, w.end, w.text.strip(), w.speaker or seg.speaker) for w in seg.words if w.text.strip()]
        elif tokens := seg.text.split():
            step = (seg.end - seg.start) / len(tokens)
            words += [(seg.start + i * step, seg.start + (i + 1) * step, t, seg.speaker) for i, t in enumerate(tokens)]
    out: list[Sentence] = []
    current: list[tuple[float, float, str, str | None]] = []
    for i, word in enumerate(words):
        current.append(word)
        next_speaker = words[i + 1][3] if i + 1 < len(words) else word[3]
        if SENTENCE_END.search(word[2]) or len(current) >= max_words or next_speaker != word[3]:
            out.append(Sentence(current[0][0], current[-1][1], " ".join(w[2] for w in current), current[0][3]))
            current = []
    if current:
        out.append(Sentence(current[0][0], current[-1][1], " ".join(w[2] for w in current), current[0][3]))
    return out
