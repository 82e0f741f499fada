"""What the backends (and diarize) share, below the package that picks one: options, the Whisper
model's folder, progress lines."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from konspekt.contracts import log
from konspekt.models import offline


@dataclass
class Options:
    model: str
    language: str | None = None  # None: detect
    device: str = "cpu"  # resolved: "cpu" | "cuda"
    compute_type: str = "int8"  # resolved
    beam_size: int = 5
    batch_size: int = 8  # 1: sequential decoding (faster-whisper)
    threads: int = 0  # 0: the library decides
    align: str = "auto"  # whisperx: "auto" aligns when the wav2vec2 model is cached, "off" never
    align_model: str | None = None  # None: the default for the language
    align_window: float = 120.0  # seconds of audio aligned at a time


def resolve_whisper(name_or_path: str) -> str:
    """A local folder holding the Whisper model: a CTranslate2 folder as given, else the cached
    snapshot of a name ("small") or hub id, downloaded into the cache only when absent and online."""
    if Path(name_or_path).expanduser().is_dir():
        return name_or_path
    from faster_whisper.utils import download_model

    cache_dir = os.environ.get("KONSPEKT_WHISPER_CACHE")  # default: the HF cache under /root/.cache
    try:
        return download_model(name_or_path, local_files_only=True, cache_dir=cache_dir)
    except Exception:  # noqa: BLE001 - huggingface_hub raises several kinds for "not cached"
        if offline():
            raise FileNotFoundError(
                f"Whisper model {name_or_path!r} is not in the cache and HF_HUB_OFFLINE is set: run "
                f"`python -m konspekt.warm_cache --whisper-model {name_or_path}` once with network, "
                "or pass a local CTranslate2 folder") from None
    log(f"downloading Whisper model {name_or_path} into the cache (once)")
    return download_model(name_or_path, cache_dir=cache_dir)


class Progress:
    """Logs ``<what> N% of D s, ETA E s`` to stderr at most every ``every`` seconds."""

    every = 5.0  # seconds between lines; tests set 0

    def __init__(self, what: str, total: float) -> None:
        self.what, self.total = what, total
        self.started = self.last = time.monotonic()
        self.first: tuple[float, float] | None = None  # (time, fraction) of the first update

    def update(self, done: float) -> None:
        now = time.monotonic()
        fraction = min(max(done / self.total, 0.0), 1.0) if self.total else 0.0
        # The rate since the first update leaves out model loading and VAD, which come before it.
        since, base = self.first if self.first and fraction > self.first[1] else (self.started, 0.0)
        self.first = self.first or (now, fraction)
        if now - self.last < self.every or not self.total:
            return
        self.last = now
        eta = (now - since) * (1 - fraction) / max(fraction - base, 1e-6)
        log(f"{self.what} {fraction:.0%} of {self.total:.0f} s audio, ETA {eta:.0f} s")
