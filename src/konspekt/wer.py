"""Word error rate, the one way the project computes it: jiwer over one shared normaliser per language.

``sample.py`` (the tests' thresholds), ``training/evaluate.py`` (a fine-tune's before/after) and
``bench/`` all score with :func:`score` / :func:`word_error_rate`, so their figures compare with each other
and with published ones. Both sides go through the same normaliser: Whisper's own
(``whisper-normalizer``), :class:`EnglishTextNormalizer` for English (spelled and written numerals
both become digits, British and American spellings one, "it's" is "it is") and
:class:`BasicTextNormalizer` for every other language (lower case, no punctuation or symbols), with
"ё" read as "е" for Russian. jiwer aligns the words (C++, linear memory: a 60-minute lecture is
scored in a fraction of a second).

The base package is stdlib only (the Airflow environment installs it so): jiwer and whisper-normalizer
are imported when a score is asked for, from the ``test``, ``train`` and ``bench`` extras.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache


@cache
def normaliser(language: str | None = "en") -> Callable[[str], str]:
    """The text normaliser for ``language``: Whisper's English one for ``en``, its basic one otherwise."""
    if (language or "").split("-")[0].lower() == "en":
        from whisper_normalizer.english import EnglishTextNormalizer

        return EnglishTextNormalizer()
    from whisper_normalizer.basic import BasicTextNormalizer

    basic = BasicTextNormalizer()
    if (language or "").lower().startswith("ru"):
        return lambda text: basic(text.replace("ё", "е").replace("Ё", "Е"))
    return basic


def normalise(text: str, language: str | None = "en") -> str:
    """``text`` as it is scored: normalised, words joined by single spaces."""
    return " ".join(normaliser(language)(text).split())


def normalise_words(text: str, language: str | None = "en") -> list[str]:
    return normalise(text, language).split()


@dataclass
class Score:
    """Errors over a reference: ``wer`` = (substitutions + deletions + insertions) / reference words."""

    reference_words: int
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    # each run of reference words the hypothesis left out: (index of its first word in the reference, the words)
    deleted_runs: list[tuple[int, list[str]]] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        return self.errors / max(self.reference_words, 1)

    @property
    def longest_deletion(self) -> int:
        """The longest run of reference words deleted one after another (a dropped sentence is 10 or more)."""
        return max((len(words) for _, words in self.deleted_runs), default=0)

    def as_dict(self) -> dict:
        return {"wer": round(self.wer, 4), "reference_words": self.reference_words,
                "substitutions": self.substitutions, "deletions": self.deletions, "insertions": self.insertions,
                "longest_deletion": self.longest_deletion}


def score(reference: str, hypothesis: str, language: str | None = "en") -> Score:
    """The alignment of ``hypothesis`` against ``reference``, both normalised for ``language``."""
    ref, hyp = normalise(reference, language), normalise(hypothesis, language)
    if not ref:  # jiwer refuses an empty reference: every hypothesis word is an insertion
        return Score(0, 0, 0, len(hyp.split()), 0)
    if not hyp:
        words = ref.split()
        return Score(len(words), 0, len(words), 0, 0, [(0, words)])
    import jiwer

    out = jiwer.process_words(ref, hyp)
    words = ref.split()
    runs = [(c.ref_start_idx, words[c.ref_start_idx:c.ref_end_idx]) for c in out.alignments[0] if c.type == "delete"]
    return Score(len(words), out.substitutions, out.deletions, out.insertions, out.hits, runs)


def word_error_rate(reference: str, hypothesis: str, language: str | None = "en") -> float:
    """(substitutions + deletions + insertions) / reference words, after the shared normaliser."""
    return score(reference, hypothesis, language).wer


def corpus_score(pairs: Iterable[tuple[str, str]], language: str | None = "en") -> Score:
    """All (reference, hypothesis) pairs scored as one corpus: errors over all reference words
    (a long clip weighs more, as jiwer does with lists); deleted runs indexed by pair."""
    total = Score(0, 0, 0, 0, 0)
    for i, (ref, hyp) in enumerate(pairs):
        s = score(ref, hyp, language)
        total.reference_words += s.reference_words
        total.substitutions += s.substitutions
        total.deletions += s.deletions
        total.insertions += s.insertions
        total.hits += s.hits
        total.deleted_runs += [(i, words) for _, words in s.deleted_runs]
    return total


def corpus_wer(pairs: Sequence[tuple[str, str]], language: str | None = "en") -> float:
    return corpus_score(pairs, language).wer
