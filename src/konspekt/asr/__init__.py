"""Speech recognition behind one interface: ``transcribe(audio, options) -> Transcript``.

Two backends share it. ``faster-whisper`` (CTranslate2) is the CPU default and the
fallback. ``whisperx`` adds batched decoding over its pyannote VAD chunks and
wav2vec2 word alignment; it pins its own torch, so it lives in its own image or
venv. ``auto`` takes whisperx only where it is installed and a GPU is present:
on a CPU it is slower than faster-whisper's own batched pipeline.
"""

from __future__ import annotations

import importlib.util
import os
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from konspekt.contracts import Transcript
from konspekt.models import offline
from konspekt.stage import log

if TYPE_CHECKING:
    import numpy as np

BACKENDS = ("auto", "faster-whisper", "whisperx")
SAMPLE_RATE = 16_000


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


def cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # noqa: BLE001 - no CUDA runtime means CPU
        return False


def pick_device(device: str) -> str:
    return device if device != "auto" else ("cuda" if cuda_available() else "cpu")


def pick_compute_type(compute_type: str, device: str) -> str:
    return compute_type if compute_type != "auto" else ("float16" if device == "cuda" else "int8")


def whisperx_installed() -> bool:
    return importlib.util.find_spec("whisperx") is not None


def pick_backend(backend: str, device: str) -> str:
    if backend == "auto":
        return "whisperx" if device == "cuda" and whisperx_installed() else "faster-whisper"
    if backend == "whisperx" and not whisperx_installed():
        raise RuntimeError("--backend whisperx: the whisperx package is not installed in this environment "
                           "(use the CUDA ASR image, or the venv made by .ci/whisperx-env.sh)")
    return backend


def transcribe(audio: Path, opts: Options, backend: str) -> Transcript:
    if backend == "whisperx":
        from konspekt.asr import whisperx as impl
    else:
        from konspekt.asr import faster_whisper as impl
    return impl.transcribe(audio, opts)


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


def read_wav(path: Path, start: float = 0.0, end: float | None = None) -> np.ndarray | None:
    """``[start, end)`` seconds of a 16 kHz mono 16-bit WAV as float32, reading only that window.

    Returns None for any other WAV layout, so the caller decodes with ffmpeg instead.
    """
    import numpy as np  # here, so that warm_cache can import this package without numpy

    with wave.open(str(path), "rb") as wav:
        if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (SAMPLE_RATE, 1, 2):
            return None
        # round, not int: n / 16000 * 16000 can land a hair under n
        first = min(round(start * SAMPLE_RATE), wav.getnframes())
        last = wav.getnframes() if end is None else min(round(end * SAMPLE_RATE), wav.getnframes())
        wav.setpos(first)
        pcm = np.frombuffer(wav.readframes(max(last - first, 0)), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def load_audio(path: Path) -> np.ndarray:
    """The whole file as 16 kHz mono float32 (60 min is about 230 MB)."""
    audio = read_wav(path)
    if audio is None:
        from faster_whisper import decode_audio

        audio = decode_audio(str(path), sampling_rate=SAMPLE_RATE)
    return audio


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
