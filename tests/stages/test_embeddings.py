"""The embeddings summarize and outline share: one pass over a lecture's sentences, not two."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import topic_lecture

from konspekt.embeddings import shared
from konspekt.stages import outline, summarize


def fake_vectors(texts: list[str]) -> np.ndarray:
    """A vector per text that depends on the text alone, as a model's does."""
    return np.array([[len(t), sum(map(ord, t)) % 97, t.count(" ")] for t in texts], dtype=np.float32)


def counted(calls: Path, delay: float = 0.0):
    def compute(texts: list[str]) -> np.ndarray:
        with open(calls, "a") as fh:
            fh.write(json.dumps(texts) + "\n")
        time.sleep(delay)
        return fake_vectors(texts)
    return compute


def _stage_like(path: str, calls: str, texts: list[str], out: str) -> None:
    np.save(out, shared(Path(path), texts, counted(Path(calls), delay=1.0)))


def test_two_stages_at_once_compute_once(tmp_path):
    texts = [f"Sentence number {i} of the lecture." for i in range(30)]
    cache, calls = tmp_path / "embeddings" / "model.npz", tmp_path / "calls.jsonl"
    ctx = multiprocessing.get_context("spawn")  # separate processes, as two task containers are
    procs = [ctx.Process(target=_stage_like, args=(str(cache), str(calls), texts, str(tmp_path / f"{i}.npy")))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(calls.read_text().splitlines()) == 1  # the second waited on the lock and read the first's
    for i in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"{i}.npy"), fake_vectors(texts))


def test_only_new_texts_are_computed_and_order_is_kept(tmp_path):
    cache, calls = tmp_path / "model.npz", tmp_path / "calls.jsonl"
    shared(cache, ["a b", "c d e", "a b"], counted(calls))
    got = shared(cache, ["f", "c d e", "a b"], counted(calls))
    np.testing.assert_array_equal(got, fake_vectors(["f", "c d e", "a b"]))
    assert [json.loads(line) for line in calls.read_text().splitlines()] == [["a b", "c d e"], ["f"]]


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04 truncated"])
def test_an_unreadable_cache_is_computed_again(tmp_path, content):
    cache, calls = tmp_path / "model.npz", tmp_path / "calls.jsonl"
    cache.write_bytes(content)
    texts = ["Привет, мир.", "odd \udcff name", "plain"]
    np.testing.assert_array_equal(shared(cache, texts, counted(calls)), fake_vectors(texts))
    np.testing.assert_array_equal(shared(cache, texts, counted(calls)), fake_vectors(texts))
    assert len(calls.read_text().splitlines()) == 1  # rewritten whole, then read back


def test_a_cache_of_the_wrong_shape_is_not_trusted(tmp_path):
    cache, calls = tmp_path / "model.npz", tmp_path / "calls.jsonl"
    np.savez(cache, texts=np.array(["a", "b"]), vectors=np.zeros((3, 2)))
    np.testing.assert_array_equal(shared(cache, ["a"], counted(calls)), fake_vectors(["a"]))


def test_outline_reads_what_summarize_embedded_and_outlines_the_same(make_video_dir, capsys):
    texts, _ = topic_lecture(minutes=5, topics=3)
    video = make_video_dir(texts)
    args = ["--video-dir", str(video), "--device", "cpu"]
    assert summarize.main([*args, "--method", "extractive", "--sentences", "3"]) == 0
    assert [p.suffix for p in (video / "embeddings").glob("*.npz")] == [".npz"]
    capsys.readouterr()
    assert outline.main(args) == 0
    assert "vectors read from" in capsys.readouterr().err
    shared_outline = json.loads((video / "outline.json").read_text())

    for cached in (video / "embeddings").iterdir():  # alone, as before: the same outline
        cached.unlink()
    assert outline.main([*args, "--force", "true"]) == 0
    assert "vectors read from" not in capsys.readouterr().err
    assert json.loads((video / "outline.json").read_text()) == shared_outline
