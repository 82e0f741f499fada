"""The audio every ASR model reads: 16 kHz mono float32, from the stage's WAV (or anything ffmpeg decodes)."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

SAMPLE_RATE = 16_000


def read_wav(path: Path, start: float = 0.0, end: float | None = None) -> np.ndarray | None:
    """``[start, end)`` seconds of a 16 kHz mono 16-bit WAV as float32, reading only that window.

    Returns None for any other WAV layout, so the caller decodes with ffmpeg instead.
    """
    import numpy as np  # here, so that warm_cache can import whisperx's tables without numpy

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
