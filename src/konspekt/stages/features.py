"""features: ``audio.wav`` + ``transcript.json`` -> ``features.csv`` and ``features.json`` (prosody, pace, pauses).

openSMILE (eGeMAPSv02) runs once for low-level descriptors (10 ms frames); every
per-segment, per-minute and timeline number is cut from that one frame table, so a
long lecture is not re-analysed hundreds of times. The 88 whole-lecture functionals
come from a second, functionals-level pass. Pace and pauses use the word timestamps.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np

from konspekt.contracts import Segment, Transcript
from konspekt.layout import VideoDir, atomic_path, write_json
from konspekt.stage import log, main_for
from konspekt.stages.extract_audio import wav_duration

FEATURE_SET = "eGeMAPSv02"
PITCH_LLD = "F0semitoneFrom27.5Hz_sma3nz"  # semitones above 27.5 Hz; 0 when unvoiced
LOUDNESS_LLD = "Loudness_sma3"
MAX_TIMELINE_POINTS = 2000  # enough for a chart; a 3 h lecture at 1 s would be 10800
DIGITS = 4  # rounding keeps files small; reruns are identical either way


@dataclass
class Frames:
    """The LLD frame table reduced to what the stage uses: frame centre time, pitch, loudness."""

    time: np.ndarray
    semitones: np.ndarray  # NaN where unvoiced
    loudness: np.ndarray

    def slice(self, start: float, end: float) -> Frames:
        lo, hi = np.searchsorted(self.time, [start, end], side="left")
        return Frames(self.time[lo:hi], self.semitones[lo:hi], self.loudness[lo:hi])

    @property
    def voiced(self) -> np.ndarray:
        return self.semitones[~np.isnan(self.semitones)]

    def voiced_ratio(self) -> float | None:
        return len(self.voiced) / len(self.time) if len(self.time) else None

    def pitch_mean_hz(self) -> float | None:
        voiced = self.voiced
        return float(np.mean(semitones_to_hz(voiced))) if len(voiced) else None

    def pitch_sd_semitones(self) -> float | None:
        voiced = self.voiced
        return float(np.std(voiced)) if len(voiced) > 1 else None  # one frame has no spread

    def loudness_mean(self) -> float | None:
        return float(np.mean(self.loudness)) if len(self.loudness) else None

    def loudness_sd(self) -> float | None:
        return float(np.std(self.loudness)) if len(self.loudness) > 1 else None


@dataclass
class SegmentRow:
    segment: int
    start: float
    end: float
    text_words: int
    speech_rate_wps: float | None
    pause_before_s: float | None
    voiced_ratio: float | None
    pitch_mean_hz: float | None
    pitch_sd_semitones: float | None
    loudness_mean: float | None
    loudness_sd: float | None


CSV_COLUMNS = [f.name for f in fields(SegmentRow)]


def semitones_to_hz(st):
    return 27.5 * np.power(2.0, np.asarray(st, dtype=float) / 12.0)


def smile(level: str):
    import opensmile  # slow import (pandas, audformat): only when the stage runs

    level = getattr(opensmile.FeatureLevel, level)
    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=level)


def low_level_frames(wav: Path) -> Frames:
    lld = smile("LowLevelDescriptors").process_file(str(wav))
    start = lld.index.get_level_values("start").total_seconds().to_numpy(dtype=float)
    end = lld.index.get_level_values("end").total_seconds().to_numpy(dtype=float)
    semitones = lld[PITCH_LLD].to_numpy(dtype=float)
    semitones = np.where(semitones > 0, semitones, np.nan)
    order = np.argsort((start + end) / 2, kind="stable")  # searchsorted needs sorted times
    return Frames(((start + end) / 2)[order], semitones[order], lld[LOUDNESS_LLD].to_numpy(dtype=float)[order])


def functionals(wav: Path) -> dict[str, float | None]:
    row = smile("Functionals").process_file(str(wav)).iloc[0]
    return {str(name): _num(value, digits=None) for name, value in row.items()}


def segment_words(seg: Segment) -> int:
    return len(seg.words) if seg.words else len(seg.text.split())


def speech_span(seg: Segment) -> tuple[float, float]:
    """Where speech starts and ends in a segment: its words if it has any, else its bounds."""
    if seg.words:
        return min(w.start for w in seg.words), max(w.end for w in seg.words)
    return seg.start, seg.end


def segment_rows(transcript: Transcript, frames: Frames) -> list[SegmentRow]:
    rows, prev_end = [], 0.0
    for seg in transcript.segments:
        first, last = speech_span(seg)
        n_words = segment_words(seg)
        part = frames.slice(seg.start, seg.end)
        rows.append(SegmentRow(
            segment=seg.id, start=seg.start, end=seg.end, text_words=n_words,
            speech_rate_wps=n_words / (last - first) if last > first else None,
            pause_before_s=max(0.0, first - prev_end),
            voiced_ratio=part.voiced_ratio(), pitch_mean_hz=part.pitch_mean_hz(),
            pitch_sd_semitones=part.pitch_sd_semitones(),
            loudness_mean=part.loudness_mean(), loudness_sd=part.loudness_sd(),
        ))
        prev_end = max(prev_end, last)
    return rows


def word_intervals(transcript: Transcript) -> list[tuple[float, float, int]]:
    """Every word as (start, end, 1), in time order; a segment without word times is one (start, end, words)."""
    spans = []
    for seg in transcript.segments:
        if seg.words:
            spans += [(w.start, w.end, 1) for w in seg.words]
        elif n := segment_words(seg):
            spans.append((*speech_span(seg), n))
    return sorted(spans)


def covered(spans: list[tuple], lo: float, hi: float) -> float:
    """Seconds of [lo, hi) inside the union of ``spans`` (sorted by start); overlaps count once."""
    total, reach = 0.0, lo
    for start, end, *_ in spans:
        start, end = max(start, reach), min(end, hi)
        if end > start:
            total += end - start
            reach = end
    return total


def summary(transcript: Transcript, frames: Frames, duration: float, long_pause: float) -> dict:
    spans = word_intervals(transcript)
    words = sum(segment_words(s) for s in transcript.segments)
    span = max(e for _, e, _ in spans) - spans[0][0] if spans else 0.0
    gaps, reach = [], spans[0][1] if spans else 0.0
    for start, end, _ in spans[1:]:  # measured from the furthest end so far: overlapping words are no pause
        gaps.append(start - reach)
        reach = max(reach, end)
    return {
        "words": words,
        "speech_rate_wps": _num(words / span if span > 0 else 0.0),  # words per second of the spoken span
        "pause_ratio": _num(1 - covered(spans, 0.0, duration) / duration if duration > 0 else 1.0),
        "long_pauses": sum(1 for g in gaps if g >= long_pause),
        "pitch_mean_hz": _num(frames.pitch_mean_hz()),
        "pitch_sd_semitones": _num(frames.pitch_sd_semitones()),
        "loudness_mean": _num(frames.loudness_mean() or 0.0),
        "loudness_sd": _num(frames.loudness_sd() or 0.0),
    }


def timeline_step(duration: float, step: float) -> float:
    """``step``, or a whole multiple of it so the timeline stays under MAX_TIMELINE_POINTS."""
    return round(step * max(1, math.ceil(duration / (step * MAX_TIMELINE_POINTS))), 6)


def timeline(frames: Frames, duration: float, step: float) -> dict:
    """Binned means; ``time`` is the start of each bin."""
    n = max(0, math.ceil(duration / step - 1e-9))
    bins = np.minimum((frames.time // step).astype(int), max(n - 1, 0))
    count = np.bincount(bins, minlength=n)[:n]
    loud = np.bincount(bins, weights=frames.loudness, minlength=n)[:n]
    voiced = ~np.isnan(frames.semitones)
    vcount = np.bincount(bins[voiced], minlength=n)[:n]
    hz = np.bincount(bins[voiced], weights=semitones_to_hz(frames.semitones[voiced]), minlength=n)[:n]
    return {
        "step": step,
        "time": [_num(i * step) for i in range(n)],
        "loudness": [_num(loud[i] / count[i]) if count[i] else None for i in range(n)],
        "pitch_hz": [_num(hz[i] / vcount[i]) if vcount[i] else None for i in range(n)],
    }


def per_minute(transcript: Transcript, frames: Frames, duration: float) -> list[dict]:
    spans = word_intervals(transcript)
    minutes = []
    for m in range(math.ceil(duration / 60 - 1e-9)):
        lo, hi = 60.0 * m, min(60.0 * (m + 1), duration)
        words = sum(n for s, e, n in spans if lo <= (s + e) / 2 < hi)  # a word counts in the minute of its midpoint
        part = frames.slice(lo, hi)
        minutes.append({
            "minute": m, "words": words, "speech_rate_wps": _num(words / (hi - lo)),
            "pause_ratio": _num(1 - covered(spans, lo, hi) / (hi - lo)),
            "pitch_mean_hz": _num(part.pitch_mean_hz()), "loudness_mean": _num(part.loudness_mean() or 0.0),
        })
    return minutes


def write_csv(target: Path, rows: list[SegmentRow]) -> Path:
    with atomic_path(target) as tmp, tmp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow(["" if (v := _num(x)) is None else v for x in astuple(row)])
    return target


def run(video: VideoDir, args: argparse.Namespace):
    if not video.audio.is_file():  # an earlier stage did not run: our bug, not the user's file
        raise FileNotFoundError(f"{video.audio} is missing; run extract_audio first")
    transcript = Transcript.load(video.transcript_json)
    duration = wav_duration(video.audio)
    started = time.perf_counter()
    frames = low_level_frames(video.audio)
    funcs = functionals(video.audio)
    smile_s = time.perf_counter() - started
    log(f"openSMILE: {len(frames.time)} frames from {duration:.1f} s of audio in {smile_s:.2f} s")

    rows = segment_rows(transcript, frames)
    step = timeline_step(duration, args.timeline_step)
    report = {
        "feature_set": FEATURE_SET,
        "duration": _num(duration),
        "summary": summary(transcript, frames, duration, args.long_pause),
        "functionals": funcs,
        "timeline": timeline(frames, duration, step),
        "per_minute": per_minute(transcript, frames, duration),
    }
    write_csv(video.features_csv, rows)
    write_json(video.features_json, report)
    return [video.features_csv, video.features_json], {
        "segments": len(rows), "words": report["summary"]["words"], "duration": report["duration"],
        "frames": int(len(frames.time)), "timeline_step": step, "opensmile_seconds": round(smile_s, 3),
    }


def _num(value, digits: int | None = DIGITS):
    """A JSON/CSV-safe number: NaN and inf become None, numpy scalars become Python ones."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return value if value is None else bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    if not math.isfinite(value):
        return None
    return round(value, digits) if digits is not None else value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeline-step", type=_positive, default=1.0,
                        help="seconds per timeline point (raised for long audio)")
    parser.add_argument("--long-pause", type=_positive, default=1.0,
                        help="a gap between words this long (s) counts as a long pause")


main = main_for("features", __doc__.splitlines()[0], _configure, run)

if __name__ == "__main__":
    raise SystemExit(main())
