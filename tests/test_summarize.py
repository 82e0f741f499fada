"""summarize: map-reduce BART on a tiny random model, centroid extraction with the packaged MiniLM."""

from __future__ import annotations

import json
import random

import pytest

from konspekt.contracts import Summary
from konspekt.stages.summarize import chunk_sentences, main, split_sentences

WORDS = ("the model learns a small step of gradient descent on the training data and we see "
         "how the loss and the error rate change from one epoch to the next in this lecture").split()


def lecture(sentences: int, seed: int = 0) -> list[str]:
    """Segments of two or three sentences each, 6 to 14 words per sentence."""
    rng = random.Random(seed)
    said = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize() + rng.choice(".?!")
            for _ in range(sentences)]
    segments, i = [], 0
    while i < len(said):
        n = rng.randint(2, 3)
        segments.append(" ".join(said[i:i + n]))
        i += n
    return segments


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_split_sentences_handles_missing_punctuation():
    assert split_sentences('So. He said "stop." Then?  ok') == ["So.", 'He said "stop."', "Then?", "ok"]
    windows = split_sentences(" ".join(f"w{i}" for i in range(130)), max_words=60)
    assert [len(w.split()) for w in windows] == [60, 60, 10]


def test_chunks_fit_and_keep_every_sentence_in_order(tiny_bart_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bart_dir)

    def count(s: str) -> int:
        return len(tokenizer(s, verbose=False)["input_ids"])

    sentences = split_sentences(" ".join(lecture(80)))
    sentences.insert(10, " ".join(WORDS * 3))  # one sentence longer than the limit on its own
    limit = 60
    chunks = chunk_sentences(sentences, count, limit)
    assert len(chunks) > 5
    assert all(count(c) <= limit for c in chunks)
    assert " ".join(chunks).split() == " ".join(sentences).split()
    # Sentences that fit are never split: each starts inside one chunk and ends in it.
    flat = iter(chunks)
    chunk = next(flat)
    for sentence in sentences[:10]:
        if sentence not in chunk:
            chunk = next(flat)
        assert sentence in chunk


def test_chunker_with_word_counts():
    count = lambda s: len(s.split())  # noqa: E731
    assert chunk_sentences(["a b", "c d", "e f g h i", "j"], count, 4) == ["a b c d", "e f g h", "i j"]
    assert chunk_sentences([], count, 4) == []


def test_abstractive_map_reduce(tiny_bart_dir, make_video_dir, capsys):
    video = make_video_dir(lecture(60))
    code = main(["--video-dir", str(video), "--method", "abstractive", "--model", tiny_bart_dir,
                 "--device", "cpu", "--max-length", "20", "--min-length", "5", "--num-beams", "2"])
    result = last_json(capsys)
    assert code == 0, result
    assert result["status"] == "ok" and result["outputs"] == ["summary.json"]
    summary = Summary.load(video / "summary.json")
    assert summary.method == "abstractive" and summary.model == tiny_bart_dir
    assert summary.chunks > 1 and result["details"]["chunks"] == summary.chunks
    assert summary.text.strip() and summary.note is None and summary.language == "en"


def test_extractive_keeps_transcript_sentences_in_order(make_video_dir, capsys):
    segments = lecture(40, seed=1)
    video = make_video_dir(segments)
    code = main(["--video-dir", str(video), "--method", "extractive", "--device", "cpu", "--sentences", "5"])
    assert code == 0 and last_json(capsys)["status"] == "ok"
    summary = Summary.load(video / "summary.json")
    assert summary.method == "extractive" and summary.model == "sentence-transformers/all-MiniLM-L6-v2"
    original = split_sentences(" ".join(segments))
    picked = split_sentences(summary.text)
    assert 0 < len(picked) <= 5
    positions = [original.index(s) for s in picked]
    assert positions == sorted(positions)


def test_auto_falls_back_to_extractive(make_video_dir, capsys):
    video = make_video_dir(lecture(12, seed=2))
    code = main(["--video-dir", str(video), "--model", "nonexistent-org/nonexistent-model", "--device", "cpu"])
    result = last_json(capsys)
    assert code == 0 and result["details"]["method"] == "extractive"
    summary = Summary.load(video / "summary.json")
    assert summary.method == "extractive" and summary.text
    assert "nonexistent-org/nonexistent-model" in summary.note and "not downloaded" in summary.note


def test_explicit_abstractive_without_model_is_an_error(make_video_dir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    video = make_video_dir(["Some words were said here."])
    code = main(["--video-dir", str(video), "--method", "abstractive", "--model", "nonexistent-org/nonexistent-model"])
    result = last_json(capsys)
    assert code == 1 and "HF_HUB_OFFLINE" in result["message"]
    assert not (video / "summary.json").exists()


@pytest.mark.parametrize("texts", [[], ["", "   "]])
def test_empty_transcript_is_bad_input(make_video_dir, capsys, texts):
    video = make_video_dir(texts)
    assert main(["--video-dir", str(video), "--method", "extractive"]) == 2
    result = last_json(capsys)
    assert result["status"] == "bad_input" and "nothing to summarise" in result["message"]
