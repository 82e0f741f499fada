"""Sentences of a transcript, plain or with times: what the summary, the outline and the report work on.

Stdlib only, so every stage image can use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from konspekt.contracts import Transcript

MAX_SENTENCE_WORDS = 60  # longer "sentences" are text without punctuation: cut into word windows
CLOSERS = "\"'”’“»)\\]"  # after the full stop: quotes (Russian «…» and „…“ too) and brackets
SENTENCE_END = re.compile(rf"[.!?…][{CLOSERS}]*$")
BREAK = re.compile(rf"(?:(?<=[.!?…])|(?<=[.!?…][{CLOSERS}]))\s+")
# Russian abbreviations end no sentence: a short one ("т. е.", "т.д.", "др.") before a word in lower case,
# and these before anything (a name, a number): "г. Москва", "см. рис. 3", "им. Ломоносова".
ABBREVIATION = re.compile(r"^[(«]?(?:[а-яё]{1,4}\.)+$", re.IGNORECASE)
CONTINUATION = re.compile(r"^[-.][а-яё]", re.IGNORECASE)  # the rest of a word: "-моему", ".е."
BEFORE_ANYTHING = {"г.", "гг.", "им.", "см.", "рис.", "стр.", "табл.", "ул.", "проф.", "акад.", "доц.", "гл.", "ср.",
                   "ст.", "пп."}


def _abbreviation(word: str, following: str | None) -> bool:
    """``word`` ends in a dot only as a Russian abbreviation, going on with ``following``."""
    if not following or not ABBREVIATION.match(word):
        return False
    return word.lstrip("(«").lower() in BEFORE_ANYTHING or following.lstrip("\"'«„“(")[:1].islower()


@dataclass
class Sentence:
    start: float
    end: float
    text: str
    speaker: str | None = None  # with diarization; a change of speaker also ends a sentence


def split_sentences(text: str, max_words: int = MAX_SENTENCE_WORDS) -> list[str]:
    """Sentences at ``.!?…`` ends (not after a Russian abbreviation); a run of words without any is cut
    into ``max_words`` windows."""
    parts: list[str] = []
    for piece in BREAK.split(text.strip()):
        if parts and parts[-1] and piece and _abbreviation(parts[-1].split()[-1], piece.split()[0]):
            parts[-1] = f"{parts[-1]} {piece}"  # "т. е. так" goes on
        else:
            parts.append(piece)
    sentences = []
    for part in parts:
        words = part.split()
        for i in range(0, len(words), max_words):
            sentences.append(" ".join(words[i:i + max_words]))
    return [s for s in sentences if s]


def timed_sentences(transcript: Transcript, max_words: int = MAX_SENTENCE_WORDS) -> list[Sentence]:
    """The transcript cut into sentences with times, across segment borders (ASR segments often
    end mid-sentence); a segment without word times spreads its words evenly over its span.

    A piece that goes on a Russian word ("-моему" after "по", ".е." after "т": Whisper's word times
    split them so) is joined to the word before it, as the segment's text has it.
    """
    words: list[tuple[float, float, str, str | None]] = []
    for seg in transcript.segments:
        if seg.words:
            for w in seg.words:
                text, speaker = w.text.strip(), w.speaker or seg.speaker
                if not text:
                    continue
                if words and CONTINUATION.match(text) and words[-1][3] == speaker:
                    words[-1] = (words[-1][0], w.end, words[-1][2] + text, speaker)
                else:
                    words.append((w.start, w.end, text, speaker))
        elif tokens := seg.text.split():
            step = (seg.end - seg.start) / len(tokens)
            words += [(seg.start + i * step, seg.start + (i + 1) * step, t, seg.speaker) for i, t in enumerate(tokens)]
    out: list[Sentence] = []
    current: list[tuple[float, float, str, str | None]] = []
    for i, word in enumerate(words):
        current.append(word)
        following = words[i + 1] if i + 1 < len(words) else None
        next_speaker = following[3] if following else word[3]
        ends = SENTENCE_END.search(word[2]) and not _abbreviation(word[2], following[2] if following else None)
        if ends or len(current) >= max_words or next_speaker != word[3]:
            out.append(Sentence(current[0][0], current[-1][1], " ".join(w[2] for w in current), current[0][3]))
            current = []
    if current:
        out.append(Sentence(current[0][0], current[-1][1], " ".join(w[2] for w in current), current[0][3]))
    return out
