"""summarize: map-reduce BART on a tiny random model, centroid extraction with the packaged MiniLM."""

from __future__ import annotations

import json
import random
import re

import pytest
from conftest import TOPIC_SENTENCES, topic_lecture

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
                 "--device", "cpu", "--max-length", "20", "--min-length", "5", "--num-beams", "2",
                 "--batch-size", "16"])
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert code == 0, result
    assert re.search(r"summarised 100% of \d+ chunks in \d+ s", err), err  # the task log's progress
    assert result["status"] == "ok" and result["outputs"] == ["summary.json"]
    summary = Summary.load(video / "summary.json")
    assert summary.method == "abstractive" and summary.model == tiny_bart_dir
    assert summary.chunks > 1 and result["details"]["chunks"] == summary.chunks
    assert summary.text.strip() and summary.note is None and summary.language == "en"


def test_extractive_keeps_transcript_sentences_in_order(make_video_dir, capsys):
    segments = lecture(40, seed=1)
    video = make_video_dir(segments)
    code = main(["--video-dir", str(video), "--method", "extractive", "--device", "cpu", "--sentences", "5"])
    result = last_json(capsys)
    assert code == 0 and result["status"] == "ok"
    assert result["details"]["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"  # English: MiniLM
    assert result["details"]["embedding_backend"] == "numpy"  # on the CPU: no torch imported
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


def test_hour_long_map_reduce_covers_every_chunk_within_the_limit(tiny_bart_dir, make_video_dir, capsys,
                                                                  monkeypatch):
    """A 60-minute lecture (~9,000 words): every chunk fits the 64-position BART, round 1 covers every
    sentence once and in order, and the rounds shrink to one summary."""
    from konspekt.sample import lecture_text
    from konspekt.stages import summarize

    text = lecture_text(minutes=60)
    assert len(text.split()) >= 9000
    sentences = split_sentences(text)
    video = make_video_dir([" ".join(sentences[i:i + 3]) for i in range(0, len(sentences), 3)])
    seen: list[list[str]] = []
    real = summarize.Seq2Seq.summarise

    def recording(self, chunks):
        seen.append(list(chunks))
        assert all(self.count_tokens(c) <= self.limit for c in chunks)
        return real(self, chunks)

    monkeypatch.setattr(summarize.Seq2Seq, "summarise", recording)
    code = main(["--video-dir", str(video), "--method", "abstractive", "--model", tiny_bart_dir, "--device", "cpu",
                 "--max-length", "12", "--min-length", "4", "--num-beams", "1", "--batch-size", "64"])
    result = last_json(capsys)
    assert code == 0, result
    rounds = result["details"]["rounds"]
    assert rounds == [len(r) for r in seen] and rounds[-1] == 1
    assert all(a > b for a, b in zip(rounds, rounds[1:]))
    assert rounds[0] > 100  # 60 tokens a chunk
    assert " ".join(seen[0]).split() == text.split()  # every sentence is in exactly one first-round chunk
    summary = Summary.load(video / "summary.json")
    assert summary.chunks == rounds[0] and summary.text
    assert result["seconds"] < 120


def test_model_for_language():
    from konspekt.stages.summarize import model_for

    table = {"ru": "ru-model"}
    assert model_for("en", "en-model", table) == "en-model"
    assert model_for("ru", "en-model", table) == "ru-model"
    assert model_for("de", "en-model", table) is None
    assert model_for(None, "en-model", table) == "en-model"  # unknown language: the default
    assert model_for("de", "en-model", {"*": "multi"}) == "multi"
    assert model_for("en", "en-model", {"en": "other"}) == "other"


def test_auto_without_a_model_for_the_language_is_extractive_with_a_note(make_video_dir, capsys):
    video = make_video_dir(lecture(12, seed=3), language="ru")
    assert main(["--video-dir", str(video), "--device", "cpu", "--model", "nonexistent-org/x"]) == 0
    summary = Summary.load(video / "summary.json")
    assert summary.method == "extractive" and summary.language == "ru"
    assert summary.note.startswith("no abstractive model is configured for language 'ru'; used the extractive summary")


def test_language_model_from_the_table(tiny_bart_dir, make_video_dir, capsys):
    video = make_video_dir(lecture(20, seed=4), language="ru")
    code = main(["--video-dir", str(video), "--device", "cpu", "--models", json.dumps({"ru": tiny_bart_dir}),
                 "--max-length", "12", "--min-length", "4", "--num-beams", "1", "--batch-size", "16"])
    assert code == 0, last_json(capsys)
    summary = Summary.load(video / "summary.json")
    assert summary.method == "abstractive" and summary.model == tiny_bart_dir and summary.note is None


def test_models_option_must_be_a_json_object(make_video_dir):
    video = make_video_dir(["Some words."])
    with pytest.raises(SystemExit):
        main(["--video-dir", str(video), "--models", '["ru"]'])


def test_extractive_summary_covers_every_topic_once(make_video_dir, capsys):
    video = make_video_dir(topic_lecture(minutes=6, topics=3)[0])
    assert main(["--video-dir", str(video), "--method", "extractive", "--device", "cpu", "--sentences", "6"]) == 0
    picked = split_sentences(Summary.load(video / "summary.json").text)
    assert len(picked) == len(set(picked)) == 6
    topics = [next(k for k, pool in TOPIC_SENTENCES.items() if s in pool) for s in picked]
    assert set(topics) == set(TOPIC_SENTENCES)


@pytest.mark.parametrize("method", ["auto", "abstractive", "extractive"])
def test_a_talk_shorter_than_a_summary_is_its_own_summary(tiny_bart_dir, make_video_dir, capsys, method):
    """"Hello students." must not be padded to --min-length tokens of invented text."""
    video = make_video_dir(["Hello, students."])
    code = main(["--video-dir", str(video), "--method", method, "--model", tiny_bart_dir, "--device", "cpu"])
    result = last_json(capsys)
    assert code == 0, result
    summary = Summary.load(video / "summary.json")
    assert summary.text == "Hello, students." and summary.method == "extractive"
    assert "only 2 words long, too short to summarise" in summary.note
    assert result["details"]["whole_transcript"] is True


def test_numpy_minilm_matches_sentence_transformers():
    """konspekt.numpy_bert runs the packaged MiniLM without torch; its embeddings are sentence-transformers'."""
    from sentence_transformers import SentenceTransformer

    from konspekt import numpy_bert
    from konspekt.models import packaged_minilm

    folder = packaged_minilm()
    assert numpy_bert.supports(folder) and not numpy_bert.supports(folder + "/1_Pooling")
    texts = ["Water evaporates from the oceans.", "ok", "", "Лекция о круговороте воды.",
             " ".join(lecture(80)), *lecture(40, seed=3)]  # one far past the 256 tokens MiniLM reads
    ours = numpy_bert.Encoder.load(folder).encode(texts, batch_size=7)
    theirs = SentenceTransformer(folder, device="cpu").encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert ours.shape == theirs.shape == (len(texts), 384)
    assert float((ours * theirs).sum(axis=1).min()) > 0.9999


def test_summarize_and_outline_on_the_cpu_import_no_torch(make_video_dir):
    """The fixed cost of both stages: importing torch and sentence-transformers took 3-5 s of each."""
    import subprocess
    import sys

    video = make_video_dir(lecture(40, seed=2))
    for stage in ("summarize", "outline"):
        code = (f"import sys; from konspekt.stages import {stage}; "
                f"code = {stage}.main(['--video-dir', {str(video)!r}, '--device', 'cpu']); "
                "print('torch', 'torch' in sys.modules, 'code', code)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.split()[-4:] == ["torch", "False", "code", "0"], out.stdout + out.stderr
