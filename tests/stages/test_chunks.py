"""Batched windows cut at pauses, and the speech their words skip found and heard again (issue 31 item 2).

Measured on the real-speech dev set (bench/real_speech.py): windows cut wherever they were full ended
mid-sentence, and the decoder dropped that sentence's first half; on a change of voice it skipped whole
sentences, or returned nothing for a window. These tests pin each mechanism with made-up times."""

from __future__ import annotations

import dataclasses

import pytest

from konspekt.asr import quality
from konspekt.asr.chunks import MAX_WINDOW, holes, pack, uncovered
from konspekt.asr.faster_whisper import split_around, with_holes
from konspekt.contracts import Segment, Word


def sentences(*lengths_and_pauses: float, start: float = 0.0) -> list[tuple[float, float]]:
    """Speech spans: lengths and the pauses after them, alternating (4, 0.3, 5, 1.2, ...)."""
    spans, at = [], start
    for i in range(0, len(lengths_and_pauses), 2):
        spans.append((at, at + lengths_and_pauses[i]))
        at += lengths_and_pauses[i] + (lengths_and_pauses[i + 1] if i + 1 < len(lengths_and_pauses) else 0)
    return spans


def test_a_full_window_is_cut_at_its_longest_pause_not_where_it_filled():
    # 4 s of speech with 0.3 s pauses, one 1.5 s pause (a sentence's end) after the fifth stretch, at 21.2 s
    speech = sentences(4, 0.3, 4, 0.3, 4, 0.3, 4, 0.3, 4, 1.5, 4, 0.3, 4, 0.3, 4, 0.3, 4)
    windows = pack(speech)
    assert windows[0] == (0.0, pytest.approx(21.2))  # the long pause, not 26.7 s where the next one would not fit
    assert pack(speech, lookback=0)[0] == (0.0, pytest.approx(26.7))  # greedy: the cut lands mid-sentence
    assert windows[1][0] == pytest.approx(22.7)


def test_windows_hold_all_speech_once_in_order_and_never_exceed_the_limit():
    speech = sentences(*[x for _ in range(40) for x in (3.1, 0.2, 2.2, 0.9, 6.5, 0.4)])
    windows = pack(speech)
    assert all(b - a <= MAX_WINDOW for a, b in windows)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(windows, windows[1:]))
    inside = [s for s in speech if any(a <= s[0] and s[1] <= b for a, b in windows)]
    assert inside == speech  # every span whole in exactly one window: no cut through speech
    assert pack([]) == []


def test_a_span_longer_than_a_window_is_cut_where_it_exceeds():
    assert pack([(10.0, 75.0)]) == [(10.0, 39.0), (39.0, 68.0), (68.0, 75.0)]


def words_at(*times: tuple[float, float]) -> list[Word]:
    """Words at these times, where a stretch longer than a word is said as half-second words."""
    out: list[Word] = []
    for a, b in times:
        steps = max(1, round((b - a) / 0.5)) if b - a > 1.0 else 1
        out += [Word(a + k * (b - a) / steps, a + (k + 1) * (b - a) / steps, f"w{len(out) + k}") for k in range(steps)]
    return out


def test_a_skipped_sentence_is_a_hole_between_the_words_around_it():
    speech = [(0.0, 5.0), (5.6, 9.0), (9.8, 14.0)]
    words = words_at((0.1, 2.0), (2.0, 4.9), (9.9, 12.0), (12.0, 13.9))  # nothing said for 5.6-9.0
    assert holes(words, speech, (0.0, 14.0)) == [(4.9, 9.9)]  # between the words around it, where speech is
    assert uncovered(words, speech, (0.0, 14.0)) == [(0.0, 0.1), (4.9, 5.0), (5.6, 9.0), (9.8, 9.9), (13.9, 14.0)]


def test_the_end_of_a_window_or_all_of_it_without_words_is_a_hole():
    speech = [(0.0, 6.0), (6.5, 10.0)]
    assert holes(words_at((0.2, 5.8)), speech, (0.0, 10.0)) == [(5.8, 10.0)]  # its last sentence left out
    assert holes([], speech, (0.0, 10.0)) == [(0.0, 10.0)]  # the decoder returned nothing for the window


def test_a_word_stretched_over_skipped_speech_covers_nothing_and_is_left_to_the_second_decoding():
    """Seen with base: "engineer" timed 201.76-208.4 s, over a 13-word sentence the text skipped."""
    speech = [(0.0, 3.0), (3.0, 8.0)]
    words = [Word(0.2, 1.0, "Another"), Word(1.0, 7.6, "engineer"), Word(7.6, 8.0, "rushed")]
    assert holes(words, speech, (0.0, 8.0)) == [(1.0, 7.6)]
    segment = Segment(0, 0.0, 12.0, "Another engineer rushed", words)
    assert [s.text for s in split_around(segment, (1.0, 7.6), "en")] == ["Another", "rushed"]


def test_short_gaps_and_pauses_are_no_holes():
    speech = [(0.0, 3.0), (3.5, 6.0)]
    assert holes(words_at((0.4, 2.6), (3.7, 5.6)), speech, (0.0, 6.0)) == []  # VAD's padding around words
    assert holes(words_at((0.0, 3.0), (6.0, 6.0)), [(0.0, 3.0), (6.0, 6.0)], (0.0, 6.0)) == []  # silence


def window_segment(start: float, end: float, text: str) -> Segment:
    """One batched window's segment, its words spread over ``[start, end]``."""
    words = text.split()
    step = (end - start) / len(words)
    timed = [Word(start + k * step, start + (k + 1) * step, w) for k, w in enumerate(words)]
    return Segment(0, start, end, text, timed)


def test_a_segment_with_a_hole_inside_is_split_around_it_and_keeps_its_words():
    first = window_segment(0.0, 4.0, "Water evaporates from the sea.")
    later = window_segment(9.0, 12.0, "Then it rains.")
    joined = dataclasses.replace(first, end=12.0, text=first.text + " " + later.text, words=first.words + later.words)
    before, after = split_around(joined, (4.5, 8.5), "en")
    assert (before.text, before.end, after.text, after.start) == ("Water evaporates from the sea.", 4.0,
                                                                  "Then it rains.", 9.0)
    assert split_around(joined, (12.5, 14.0), "en") == [joined]
    assert [s.text for s in split_around(joined, (4.5, 8.5), "ja")] == ["Waterevaporatesfromthesea.", "Thenitrains."]

    out = with_holes([joined], [(0.0, 12.0)], [(0.0, 4.0), (4.5, 8.5), (9.0, 12.0)], "en")
    assert [(s.start, s.end, s.text) for s in out] == [(0.0, 4.0, "Water evaporates from the sea."),
                                                       (4.5, 8.5, ""), (9.0, 12.0, "Then it rains.")]


def test_each_segment_belongs_to_one_window_and_a_window_without_one_gets_a_hole():
    windows = [(0.0, 10.0), (10.0, 20.0), (20.5, 30.0)]
    speech = [(0.0, 10.0), (10.0, 20.0), (20.5, 30.0)]
    a = window_segment(0.0, 10.0, "one two three four five six")
    c = window_segment(20.5, 30.0, "seven eight nine ten eleven twelve")
    out = with_holes([a, c], windows, speech, "en")
    assert [(s.start, s.text) for s in out] == [(0.0, a.text), (10.0, ""), (20.5, c.text)]
    assert with_holes([a, c], windows, [(0.0, 10.0), (20.5, 30.0)], "en") == [a, c]  # no speech there: no hole


def hole(start: float, end: float) -> Segment:
    return Segment(-1, start, end, "")


def test_review_fills_a_hole_with_the_second_decoding():
    calls = []

    def again(start, end):
        calls.append((start, end))
        return [window_segment(start, end, "It condenses into clouds.")]

    speech = [(0.0, 4.0), (4.5, 8.5), (9.0, 12.0)]
    lecture = [window_segment(0.0, 4.0, "Water evaporates."), hole(4.5, 8.5), window_segment(9.0, 12.0, "It rains.")]
    out, warnings = quality.review(lecture, "en", again, speech)
    assert calls == [(4.5, 8.5)] and warnings == []
    assert [s.text for s in out] == ["Water evaporates.", "It condenses into clouds.", "It rains."]
    assert [s.id for s in out] == [0, 1, 2]


@pytest.mark.parametrize("second", ["nothing", "loop"])
def test_a_hole_the_second_decoding_cannot_fill_stays_empty_and_unmarked(second):
    loop = " ".join(["the same words"] * 6)
    answer = {"loop": [window_segment(4.5, 8.5, loop)]}.get(second, [])
    lecture = [window_segment(0.0, 4.0, "Water evaporates."), hole(4.5, 8.5)]
    out, warnings = quality.review(lecture, "en", lambda a, b: answer, [(0.0, 4.0), (4.5, 8.5)])
    assert [s.text for s in out] == ["Water evaporates.", ""] and quality.is_hole(out[1])
    assert warnings == []  # a skipped stretch is not "unclear audio": the transcript just lacks it
