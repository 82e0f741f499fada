"""Sentence embeddings (MiniLM by default), and the most central sentences among them: the
extractive summary and the outline's section titles and points both pick sentences this way."""

from __future__ import annotations

from collections.abc import Sequence

from konspekt import models
from konspekt.deployment import EXTRACTIVE_MODEL

MIN_POINT_WORDS = 4  # fillers ("Okay.", "Right?") carry nothing
NEAR_DUPLICATE = 0.9  # cosine above which a sentence only repeats one already picked
REDUNDANCY = 0.3  # MMR: how much likeness to picked sentences costs against centrality


def extractive_model(name: str) -> str:
    """The default id loads from the PyPI-packaged copy first, so it needs no hub at all."""
    if name == EXTRACTIVE_MODEL:
        packaged = models.packaged_minilm()
        if packaged:
            return packaged
    return models.resolve(name)


def embed(texts: Sequence[str], model_path: str, device: str, batch_size: int = 32):
    """One normalised embedding per text (a dot product is a cosine), as a numpy array."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device=device)
    return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False,
                        batch_size=batch_size)


def pick_central(texts: Sequence[str], emb, count: int) -> list[int]:
    """Up to ``count`` sentences, most central first, by maximal marginal relevance: closeness to the
    centre of ``emb`` (normalised embeddings) minus likeness to those already picked, so a lecture on
    three topics gets all three, and a repeated sentence is taken once."""
    import numpy as np

    centrality = emb @ emb.mean(axis=0)  # ranks like TextRank's degree centrality (sum of cosines)
    pool = [i for i, t in enumerate(texts) if len(t.split()) >= MIN_POINT_WORDS] or list(range(len(texts)))
    picked: list[int] = []
    likeness = np.full(len(texts), 0.0)
    while pool and len(picked) < count:
        best = max(pool, key=lambda i: (1 - REDUNDANCY) * centrality[i] - REDUNDANCY * likeness[i])
        picked.append(best)
        likeness = np.maximum(likeness, emb @ emb[best])
        pool = [i for i in pool if likeness[i] <= NEAR_DUPLICATE and texts[i] != texts[best]]
    return picked
