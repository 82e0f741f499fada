"""Speech recognition behind one interface: ``transcribe(audio, options) -> Transcript``.

Two backends share it. ``faster-whisper`` (CTranslate2) is the CPU default and the
fallback. ``whisperx`` adds batched decoding over its pyannote VAD chunks and
wav2vec2 word alignment; it pins its own torch, so it lives in its own image or
venv. ``auto`` takes whisperx only where it is installed and a GPU is present:
on a CPU it is slower than faster-whisper's own batched pipeline.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from konspekt.asr.backend import Options
from konspekt.contracts import Transcript

BACKENDS = ("auto", "faster-whisper", "whisperx")


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
        from konspekt.asr import whisperx

        return whisperx.transcribe(audio, opts)
    from konspekt.asr import faster_whisper

    return faster_whisper.transcribe(audio, opts)
