"""Speaker diarization: who spoke when, then a speaker for every word and segment.

The pipeline is pyannote's (the one whisperx wraps), ``pyannote/speaker-diarization-community-1``
by default: a hub id, or a local folder holding its ``config.yaml``. It is gated on the hub,
so the first download needs a Hugging Face token that has accepted its terms. The token is
read from the ``HF_TOKEN`` environment variable and nowhere else: argv is printed in task
logs, and images are shared. Once the pipeline is in the cache it loads offline, no token needed.

Diarization is optional. Where it cannot run (pyannote is not installed, the model is not
cached and there is no token or no network) the transcript is still written, and
``Transcript.diarization`` says in plain words why there are no speakers.

Words take the speaker whose turns overlap them most (the nearest turn when none does);
a segment is cut where its words change speaker, so each segment has one speaker.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, replace
from pathlib import Path

from konspekt.asr.audio import load_audio
from konspekt.contracts import Diarization, Segment, Word, log
from konspekt.models import offline
from konspekt.progress import Progress

TOKEN_ENV = "HF_TOKEN"


class Unavailable(Exception):
    """Diarization cannot run here; the message says why and what to do."""


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: str


@dataclass(frozen=True)
class SpeakerCount:
    exact: int | None = None
    min: int | None = None
    max: int | None = None


def installed() -> bool:
    try:
        return importlib.util.find_spec("pyannote.audio") is not None
    except ModuleNotFoundError:  # no pyannote namespace at all
        return False


def load_pipeline(model: str, device: str):
    """pyannote's pipeline from a local folder, the cache, or (with a token, online) the hub."""
    if not installed():
        raise Unavailable("pyannote.audio is not installed here: diarization runs in the CUDA ASR image "
                          "or the whisperx venv (make whisperx-env)")
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # pyannote 4 sends usage metrics otherwise
    import torch
    from pyannote.audio import Pipeline

    token = os.environ.get(TOKEN_ENV) or None
    local = Path(model).expanduser().is_dir()
    try:
        pipeline = Pipeline.from_pretrained(model, token=token)
    except Exception as error:  # noqa: BLE001 - the hub raises many kinds; say what to do instead
        if local:
            raise
        hint = (f"run `python -m konspekt.warm_cache --diarization-model {model}` once with network and "
                f"{TOKEN_ENV} set" if offline() or token else
                f"set {TOKEN_ENV} (a Hugging Face token that accepted the model's terms) as a secret")
        raise Unavailable(f"diarization model {model!r} is not in the cache and could not be fetched "
                          f"({type(error).__name__}): {hint}") from None
    if pipeline is None:  # pyannote returns None for a gated repo it could not open
        raise Unavailable(f"diarization model {model!r} is gated: set {TOKEN_ENV} to a token that accepted "
                          "its terms on the hub")
    return pipeline.to(torch.device(device))


def find_turns(pipeline, audio_path: Path, count: SpeakerCount = SpeakerCount()) -> list[Turn]:
    import torch

    audio = load_audio(audio_path)
    duration = len(audio) / 16_000
    progress = Progress("diarized", duration)
    steps = {"segmentation": (0.0, 0.5), "embeddings": (0.5, 1.0)}  # pyannote's two long steps

    def hook(step, _artifact, file=None, total=None, completed=None):
        if total and completed is not None and step in steps:
            low, high = steps[step]
            progress.update(duration * (low + (high - low) * completed / total))

    output = pipeline({"waveform": torch.from_numpy(audio[None, :]), "sample_rate": 16_000},
                      num_speakers=count.exact, min_speakers=count.min, max_speakers=count.max, hook=hook)
    progress.finish()
    annotation = getattr(output, "speaker_diarization", output)  # pyannote 3 returns the Annotation itself
    return [Turn(round(t.start, 3), round(t.end, 3), str(speaker))
            for t, _, speaker in annotation.itertracks(yield_label=True)]


def speaker_at(turns: list[Turn], start: float, end: float) -> str | None:
    """The speaker overlapping ``[start, end]`` the longest; the nearest turn's when none overlaps."""
    if not turns:
        return None
    overlap: dict[str, float] = {}
    for t in turns:
        shared = min(t.end, end) - max(t.start, start)
        if shared > 0:
            overlap[t.speaker] = overlap.get(t.speaker, 0.0) + shared
    if overlap:
        return max(overlap, key=overlap.__getitem__)
    middle = (start + end) / 2
    return min(turns, key=lambda t: max(t.start - middle, middle - t.end, 0.0)).speaker


def assign_speakers(segments: list[Segment], turns: list[Turn]) -> list[Segment]:
    """Segments with a speaker on every word, cut wherever the speaker changes mid-segment."""
    out: list[Segment] = []

    def add(seg: Segment, words: list[Word], speaker: str | None) -> None:
        start, end = (words[0].start, words[-1].end) if words and len(words) < len(seg.words) else (seg.start, seg.end)
        text = " ".join(w.text for w in words) if len(words) < len(seg.words) else seg.text
        out.append(replace(seg, id=len(out), start=start, end=end, text=text, words=words, speaker=speaker))

    for seg in segments:
        if not seg.words:
            add(seg, [], speaker_at(turns, seg.start, seg.end))
            continue
        words = [replace(w, speaker=speaker_at(turns, w.start, w.end)) for w in seg.words]
        run = [words[0]]
        for word in words[1:]:
            if word.speaker != run[-1].speaker:
                add(seg, run, run[0].speaker)
                run = []
            run.append(word)
        add(seg, run, run[0].speaker)
    return out


def diarize(segments: list[Segment], audio_path: Path, model: str, device: str,
            count: SpeakerCount = SpeakerCount()) -> tuple[list[Segment], Diarization]:
    """Speakers for ``segments``; when diarization cannot run, the segments as they were and why."""
    try:
        pipeline = load_pipeline(model, device)
    except Unavailable as why:
        log(f"WARNING: no speaker diarization: {why}")
        return segments, Diarization("skipped", model, reason=str(why))
    log(f"diarizing with {model} on {device}")
    turns = find_turns(pipeline, audio_path, count)
    speakers = sorted({t.speaker for t in turns})
    log(f"{len(speakers)} speakers in {len(turns)} turns")
    return assign_speakers(segments, turns), Diarization("ok", model, speakers=speakers)
