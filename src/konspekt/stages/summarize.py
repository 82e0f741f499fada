"""summarize: ``transcript.json`` -> ``summary.json``, abstractive (BART) or extractive (MiniLM).

Abstractive runs map-reduce: the transcript is cut at sentence ends into chunks
that fit the model's input, each chunk is summarised, and the partial summaries
are summarised again until one text remains. When the abstractive model is not on
disk, ``--method auto`` picks the sentences closest to the transcript's centre
instead, which works offline with the MiniLM shipped on PyPI.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from konspekt import models
from konspekt.contracts import Summary, Transcript
from konspekt.layout import VideoDir, write_json
from konspekt.stage import BadInput, log, main_for

DEFAULT_MODEL = "slauw87/bart_summarisation"
DEFAULT_EXTRACTIVE = "sentence-transformers/all-MiniLM-L6-v2"
BATCH_SIZE = 4
MAX_ROUNDS = 6  # reduce rounds: each shrinks the text ~6x for BART; the cap guards a model that does not
LIMIT_MARGIN = 4  # tokens kept free under the model's input limit
MAX_SENTENCE_WORDS = 60  # longer "sentences" are text without punctuation: cut into word windows
UNLIMITED = 1_000_000  # tokenizers without a real limit report 1e30


@dataclass
class Result:
    text: str
    chunks: int = 1


def split_sentences(text: str, max_words: int = MAX_SENTENCE_WORDS) -> list[str]:
    """Sentences at ``.!?`` ends; a run of words without any is cut into ``max_words`` windows."""
    sentences = []
    for part in re.split(r"(?:(?<=[.!?…])|(?<=[.!?…][\"'”’)\]]))\s+", text.strip()):
        words = part.split()
        for i in range(0, len(words), max_words):
            sentences.append(" ".join(words[i:i + max_words]))
    return [s for s in sentences if s]


def chunk_sentences(sentences: Sequence[str], count_tokens: Callable[[str], int], limit: int) -> list[str]:
    """Pack sentences, in order, into chunks of at most ``limit`` tokens as ``count_tokens`` counts them.

    A sentence that alone exceeds the limit is cut between words; only a single
    word longer than the limit can still exceed it (the encoder truncates that).
    """
    chunks: list[str] = []
    current = ""
    for sentence in sentences:
        candidate = f"{current} {sentence}" if current else sentence
        if count_tokens(candidate) <= limit:
            current = candidate
            continue
        if current:
            chunks.append(current)
        current = ""
        if count_tokens(sentence) <= limit:
            current = sentence
            continue
        for word in sentence.split():  # the over-long sentence: fill chunks word by word
            candidate = f"{current} {word}" if current else word
            if current and count_tokens(candidate) > limit:
                chunks.append(current)
                candidate = word
            current = candidate
    if current:
        chunks.append(current)
    return chunks


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def input_limit(tokenizer, config) -> int:
    """Tokens one chunk may hold: the smaller of the tokenizer's and the position table's limit."""
    limits = [tokenizer.model_max_length, getattr(config, "max_position_embeddings", None),
              getattr(config, "n_positions", None)]
    known = [int(n) for n in limits if isinstance(n, int | float) and 0 < n < UNLIMITED]
    return min(known, default=1024)


def abstractive(text: str, model_path: str, device: str, args: argparse.Namespace) -> Result:
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_path).to(device).eval()
    positions = input_limit(tokenizer, model.config)
    limit = positions - LIMIT_MARGIN
    # The decoder shares the position table: a summary longer than it would index past the end.
    max_length = min(args.max_length, positions)
    min_length = min(args.min_length, max_length - 1)

    def count_tokens(s: str) -> int:
        return len(tokenizer(s, add_special_tokens=True, verbose=False)["input_ids"])

    def summarise(chunks: list[str]) -> list[str]:
        out = []
        for i in range(0, len(chunks), BATCH_SIZE):
            batch = tokenizer(chunks[i:i + BATCH_SIZE], return_tensors="pt", padding=True,
                              truncation=True, max_length=positions).to(device)
            with torch.inference_mode():
                ids = model.generate(**batch, max_length=max_length, min_length=min_length,
                                     num_beams=args.num_beams)
            out += [s.strip() for s in tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return out

    chunks = chunk_sentences(split_sentences(text), count_tokens, limit)
    first_round = len(chunks)
    log(f"abstractive: {first_round} chunk(s) of <= {limit} tokens on {device}")
    for round_no in range(1, MAX_ROUNDS + 1):
        partial = summarise(chunks)
        log(f"round {round_no}: {len(chunks)} chunk(s) -> {len(partial)} partial summaries")
        if len(partial) == 1:
            summary = partial[0]
            break
        joined = " ".join(p for p in partial if p)
        chunks = chunk_sentences(split_sentences(joined), count_tokens, limit)
    else:
        log(f"still {len(chunks)} chunks after {MAX_ROUNDS} rounds; keeping the partial summaries")
        summary = joined
    if not summary.strip():
        raise RuntimeError(f"model {model_path} produced an empty summary")
    return Result(summary, first_round)


def extractive(text: str, model_path: str, device: str, count: int) -> Result:
    from sentence_transformers import SentenceTransformer

    sentences = split_sentences(text)
    keep = min(count, max(1, math.ceil(len(sentences) / 3)))  # a short talk gets a short summary
    if len(sentences) <= keep:
        return Result(" ".join(sentences))
    model = SentenceTransformer(model_path, device=device)
    emb = model.encode(sentences, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    # Similarity to the mean ranks like TextRank's degree centrality (sum of cosines) would.
    scores = emb @ emb.mean(axis=0)
    # Fillers ("Okay.", "Right?") carry nothing; skip them while enough real sentences remain.
    substantial = [i for i, s in enumerate(sentences) if len(s.split()) >= 4]
    pool = substantial if len(substantial) >= keep else list(range(len(sentences)))
    top = sorted(sorted(pool, key=lambda i: -scores[i])[:keep])
    log(f"extractive: kept {len(top)} of {len(sentences)} sentences")
    return Result(" ".join(sentences[i] for i in top))


def extractive_model(name: str) -> str:
    """The default id loads from the PyPI-packaged copy first, so it needs no hub at all."""
    if name == DEFAULT_EXTRACTIVE:
        packaged = models.packaged_minilm()
        if packaged:
            return packaged
    return models.resolve(name)


def run(video: VideoDir, args: argparse.Namespace):
    transcript = Transcript.load(video.transcript_json)
    text = transcript.text
    if not text.strip():
        raise BadInput("no speech was recognised, so there is nothing to summarise")
    device = resolve_device(args.device)
    method, note = args.method, None
    if method == "auto":
        local = models.local_model_dir(args.model)
        if local is not None:
            method, model_path = "abstractive", str(local)
        else:
            method = "extractive"
            note = f"abstractive model {args.model} is not downloaded; used the extractive summary"
            log(note)
    elif method == "abstractive":
        model_path = models.resolve(args.model)

    if method == "abstractive":
        model_name = args.model
        result = abstractive(text, model_path, device, args)
    else:
        model_name = args.extractive_model
        result = extractive(text, extractive_model(model_name), device, args.sentences)

    summary = Summary(method=method, model=model_name, text=result.text, language=transcript.language,
                      chunks=result.chunks, note=note)
    write_json(video.summary_json, summary)
    log(f"{method} summary: {len(result.text.split())} words from {len(text.split())}")
    return [video.summary_json], {"method": method, "model": model_name, "chunks": result.chunks}


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=["auto", "abstractive", "extractive"], default="auto")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="seq2seq model id or folder (abstractive)")
    parser.add_argument("--extractive-model", default=DEFAULT_EXTRACTIVE,
                        help="sentence-transformers model id or folder (extractive)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--max-length", type=int, default=160, help="summary tokens at most, per chunk")
    parser.add_argument("--min-length", type=int, default=40)
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--sentences", type=int, default=7, help="sentences kept by the extractive summary")


main = main_for("summarize", __doc__.splitlines()[0], _configure, run)

if __name__ == "__main__":
    raise SystemExit(main())
