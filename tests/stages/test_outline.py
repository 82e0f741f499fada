"""outline: TextTiling over MiniLM sentence embeddings finds the topic changes of a generated lecture."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TOPIC_SENTENCES, topic_lecture

from konspekt.contracts import Outline, Segment, Transcript, Word
from konspekt.sample import SCRIPT
from konspekt.sentences import split_sentences, timed_sentences
from konspekt.stages import outline


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def topic_of(sentence: str) -> str:
    [name] = [k for k, pool in TOPIC_SENTENCES.items() if sentence in pool]
    return name


def test_sections_start_at_the_topic_changes(make_video_dir, capsys):
    texts, changes = topic_lecture(minutes=10, topics=3)  # changes at 200 s and 400 s
    video = make_video_dir(texts)
    assert outline.main(["--video-dir", str(video), "--device", "cpu"]) == 0
    result = last_json(capsys)
    assert result["status"] == "ok" and result["outputs"] == ["outline.json"]
    assert result["details"]["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"  # English: MiniLM

    found = Outline.load(video / "outline.json")
    assert found.method == "texttiling" and found.language == "en" and found.note is None
    assert found.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(found.sections) == 3
    starts = [s.start for s in found.sections]
    assert starts[0] == 0.0
    assert all(abs(got - want) <= 30 for got, want in zip(starts[1:], changes))
    for section, topic in zip(found.sections, TOPIC_SENTENCES):
        assert topic_of(section.title) == topic
        assert 2 <= len(section.points) <= 4 and section.title not in section.points
        assert len(set(section.points)) == len(section.points)  # each sentence repeats in the script: once here
        assert all(topic_of(p) == topic for p in section.points)
    assert [s.depth is None for s in found.sections] == [True, False, False]
    assert all(a.end <= b.start for a, b in zip(found.sections, found.sections[1:]))
    assert found.sections[-1].end == pytest.approx(599.5, abs=0.5)


def test_one_topic_stays_one_section(make_video_dir, capsys):
    video = make_video_dir(topic_lecture(minutes=4, topics=1)[0])
    assert outline.main(["--video-dir", str(video), "--device", "cpu"]) == 0
    found = Outline.load(video / "outline.json")
    assert len(found.sections) == 1 and "no clear change of topic" in found.note
    assert 2 <= len(found.sections[0].points) <= 4


def test_a_short_talk_on_three_topics_gets_three_sections(make_video_dir, capsys):
    """Issue 18: a 75 s talk (topics change at 25 s and 50 s) used to be one section (60 s at least),
    titled from one topic with points from the others."""
    texts, changes = topic_lecture(minutes=1.25, topics=3)
    video = make_video_dir(texts)
    assert outline.main(["--video-dir", str(video), "--device", "cpu"]) == 0
    found = Outline.load(video / "outline.json")
    assert [s.start for s in found.sections] == [0.0, *changes] and found.note is None
    for section, topic in zip(found.sections, TOPIC_SENTENCES):
        assert topic_of(section.title) == topic and section.points
        assert all(topic_of(p) == topic for p in section.points)


def test_a_short_talk_on_one_topic_stays_one_section(make_video_dir, capsys):
    video = make_video_dir(topic_lecture(minutes=1.25, topics=1)[0])
    assert outline.main(["--video-dir", str(video), "--device", "cpu"]) == 0
    assert len(Outline.load(video / "outline.json").sections) == 1


def test_the_shortest_section_and_the_window_scale_with_the_talk():
    args = SimpleNamespace(min_section=60.0, window=6, min_depth=0.15)  # the stage's defaults
    assert outline.scaled(600, 120, args) == (60.0, 6, pytest.approx(0.15))  # a lecture: the options as given
    assert outline.scaled(75, 15, args) == (18.75, 2, pytest.approx(0.45))  # a quarter of the talk, 2 a side
    assert outline.scaled(20, 4, args)[0] == outline.SHORTEST_SECTION


def test_title_and_points_come_from_one_topic_even_in_a_mixed_section():
    """A section that still mixes two topics (a boundary missed) never pairs a title from one with points
    from the other: the points are drawn from the sentences nearest the title."""
    from konspekt.embeddings import embed, extractive_model

    texts = TOPIC_SENTENCES["heart"][:4] + TOPIC_SENTENCES["volcanoes"][:8]
    emb = embed(texts, extractive_model(outline.EXTRACTIVE_MODEL), "cpu", batch_size=64)
    picked = outline.title_and_points(texts, emb, 4)
    assert len(picked) >= 3 and len({topic_of(texts[i]) for i in picked}) == 1, [texts[i] for i in picked]


def test_empty_transcript_is_bad_input(make_video_dir, capsys):
    video = make_video_dir(["", "  "])
    assert outline.main(["--video-dir", str(video)]) == 2
    assert "nothing to outline" in last_json(capsys)["message"]


def test_depth_scores_at_valleys_only():
    sim = np.array([0.9, 0.8, 0.3, 0.7, 0.75, 0.6, 0.7])
    depth = outline.depth_scores(sim)
    assert depth[2] == pytest.approx(0.9 + 0.75 - 0.6)  # climbs to 0.9 on the left, 0.75 on the right
    assert depth[5] == pytest.approx(0.75 + 0.7 - 1.2)
    assert np.count_nonzero(depth) == 2


def test_boundaries_keep_sections_long_enough():
    said = timed_sentences(Transcript("en", None, 100, "m", [Segment(i, i * 5.0, i * 5.0 + 5, "Word.")
                                                            for i in range(20)]))
    depth = np.zeros(19)
    depth[[1, 8, 15, 17]] = 0.1  # shallow valleys: noise
    depth[[3, 5, 11]] = [0.9, 1.0, 0.8]  # gaps before sentences 4, 6 and 12 (20 s, 30 s, 60 s)
    assert outline.boundaries(said, depth, min_section=25, max_sections=12, min_depth=0.1) == [6, 12]
    assert outline.boundaries(said, depth, min_section=25, max_sections=2, min_depth=0.1) == [6]
    assert outline.boundaries(said, depth, min_section=25, max_sections=12, min_depth=0.95) == [6]


def test_timed_sentences_cross_segment_borders():
    words = [Word(0.0, 0.5, " The"), Word(0.5, 1.0, " heart"), Word(1.0, 1.5, " pumps.")]
    transcript = Transcript("en", None, 10, "m", [
        Segment(0, 0.0, 1.0, "The heart", words[:2]), Segment(1, 1.0, 4.0, "pumps. Blood flows", [
            words[2], Word(2.0, 2.5, " Blood"), Word(2.5, 3.0, " flows")]),
        Segment(2, 4.0, 6.0, "back to it. Yes"),  # no word times: spread over the segment
    ])
    said = timed_sentences(transcript)
    assert [(s.start, s.end, s.text) for s in said] == [
        (0.0, 1.5, "The heart pumps."), (2.0, 5.5, "Blood flows back to it."), (5.5, 6.0, "Yes")]
    assert [s.text for s in said] == split_sentences(transcript.text)
    assert len(timed_sentences(Transcript("en", None, 0, "m", [Segment(0, 0, 1, SCRIPT)]))) == len(
        split_sentences(SCRIPT))
