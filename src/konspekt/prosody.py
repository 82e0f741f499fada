"""Voice figures over the transcript: per segment, per minute, a timeline and the whole lecture.

The features stage measures the voice from the audio alone (openSMILE's frames: pitch and loudness
every 10 ms, saved as ``voice.npz``), so it runs beside transcription; render_pdf then cuts those
frames by the transcript's segments and word times here and writes ``features.csv`` and
``features.json``. Pace and pauses come from the word timestamps. Pure numpy.
"""

from __future__ import annotations

import csv
import io
import math
import zipfile
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np

from konspekt.contracts import Segment, Transcript
from konspekt.layout import atomic_path

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

    def save(self, target: Path) -> Path:
        """``voice.npz`` (numpy's format: a zip of .npy files), written whole and byte for byte the same on a
        rerun (``np.savez`` stamps each member with the time)."""
        with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in ("time", "semitones", "loudness"):
                member = io.BytesIO()
                np.save(member, getattr(self, name), allow_pickle=False)
                archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue(),
                                 compress_type=zipfile.ZIP_DEFLATED)
        return target

    @classmethod
    def load(cls, source: Path) -> Frames:
        with np.load(source, allow_pickle=False) as data:  # numbers only: a crafted file cannot run code
            return cls(data["time"], data["semitones"], data["loudness"])


@dataclass
class SegmentRow:
    segment: int
    start: float
    end: float
    text_words: int
    speech_rate_wps: float | None
    pause_before_s: float | None
    pause_ratio: float | None  # share of the segment with no word being spoken
    long_pauses: int  # gaps between words of at least --long-pause that end in this segment
    voiced_ratio: float | None
    pitch_mean_hz: float | None
    pitch_sd_semitones: float | None
    loudness_mean: float | None
    loudness_sd: float | None


CSV_COLUMNS = [f.name for f in fields(SegmentRow)]


def semitones_to_hz(st):
    return 27.5 * np.power(2.0, np.asarray(st, dtype=float) / 12.0)


def segment_words(seg: Segment) -> int:
    return len(seg.words) if seg.words else len(seg.text.split())


def speech_span(seg: Segment) -> tuple[float, float]:
    """Where speech starts and ends in a segment: its words if it has any, else its bounds."""
    if seg.words:
        return min(w.start for w in seg.words), max(w.end for w in seg.words)
    return seg.start, seg.end


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


def pause_ends(spans: list[tuple], long_pause: float) -> np.ndarray:
    """When each long pause between words ends, measured from the furthest word end so far
    (overlapping words are no pause), as a sorted array for counting by ``searchsorted``."""
    ends, reach = [], spans[0][1] if spans else 0.0
    for start, end, *_ in spans[1:]:
        if start - reach >= long_pause:
            ends.append(start)
        reach = max(reach, end)
    return np.array(ends, dtype=float)


def count_in(sorted_times: np.ndarray, lo: float, hi: float) -> int:
    return int(np.searchsorted(sorted_times, hi, "left") - np.searchsorted(sorted_times, lo, "left"))


def segment_rows(transcript: Transcript, frames: Frames, long_pause: float) -> list[SegmentRow]:
    long_ends = pause_ends(word_intervals(transcript), long_pause)
    rows, prev_end = [], 0.0
    for seg in transcript.segments:
        first, last = speech_span(seg)
        n_words = segment_words(seg)
        part = frames.slice(seg.start, seg.end)
        own = sorted((w.start, w.end) for w in seg.words)  # only its own words: linear in the lecture
        length = seg.end - seg.start
        rows.append(SegmentRow(
            segment=seg.id, start=seg.start, end=seg.end, text_words=n_words,
            speech_rate_wps=n_words / (last - first) if last > first else None,
            pause_before_s=max(0.0, first - prev_end),
            pause_ratio=1 - covered(own, seg.start, seg.end) / length if own and length > 0 else None,
            long_pauses=count_in(long_ends, seg.start, seg.end),
            voiced_ratio=part.voiced_ratio(), pitch_mean_hz=part.pitch_mean_hz(),
            pitch_sd_semitones=part.pitch_sd_semitones(),
            loudness_mean=part.loudness_mean(), loudness_sd=part.loudness_sd(),
        ))
        prev_end = max(prev_end, last)
    return rows


def summary(transcript: Transcript, frames: Frames, duration: float, long_pause: float) -> dict:
    spans = word_intervals(transcript)
    words = sum(segment_words(s) for s in transcript.segments)
    span = max(e for _, e, _ in spans) - spans[0][0] if spans else 0.0
    return {
        "words": words,
        "speech_rate_wps": num(words / span if span > 0 else 0.0),  # words per second of the spoken span
        "pause_ratio": num(1 - covered(spans, 0.0, duration) / duration if duration > 0 else 1.0),
        "long_pauses": len(pause_ends(spans, long_pause)),
        "pitch_mean_hz": num(frames.pitch_mean_hz()),
        "pitch_sd_semitones": num(frames.pitch_sd_semitones()),
        "loudness_mean": num(frames.loudness_mean() or 0.0),
        "loudness_sd": num(frames.loudness_sd() or 0.0),
    }


def timeline_step(duration: float, step: float) -> float:
    """``step``, or a whole multiple of it so the timeline stays under MAX_TIMELINE_POINTS."""
    return round(step * max(1, math.ceil(duration / (step * MAX_TIMELINE_POINTS))), 6)


def timeline(transcript: Transcript, frames: Frames, duration: float, step: float, rate_window: float) -> dict:
    """Binned means; ``time`` is the start of each bin. Speech rate is words per second over a
    centred ``rate_window`` (one bin is too short to count words in)."""
    n = max(0, math.ceil(duration / step - 1e-9))
    bins = np.minimum((frames.time // step).astype(int), max(n - 1, 0))
    count = np.bincount(bins, minlength=n)[:n]
    loud = np.bincount(bins, weights=frames.loudness, minlength=n)[:n]
    voiced = ~np.isnan(frames.semitones)
    vcount = np.bincount(bins[voiced], minlength=n)[:n]
    hz = np.bincount(bins[voiced], weights=semitones_to_hz(frames.semitones[voiced]), minlength=n)[:n]
    spans = word_intervals(transcript)
    mids = np.array([(s + e) / 2 for s, e, _ in spans], dtype=float)
    word_bins = np.clip((mids // step).astype(int), 0, max(n - 1, 0))
    words = np.bincount(word_bins, weights=[k for *_, k in spans], minlength=n)[:n] if n else np.zeros(0)
    k = max(1, round(rate_window / step))  # a centred window of k bins, cut short at both ends
    lo = np.clip(np.arange(n) - k // 2, 0, n)
    hi = np.clip(np.arange(n) - k // 2 + k, 0, n)
    cum = np.concatenate([[0.0], np.cumsum(words)])
    rate = (cum[hi] - cum[lo]) / ((hi - lo) * step) if n else np.zeros(0)
    return {
        "step": step,
        "time": [num(i * step) for i in range(n)],
        "loudness": [num(loud[i] / count[i]) if count[i] else None for i in range(n)],
        "pitch_hz": [num(hz[i] / vcount[i]) if vcount[i] else None for i in range(n)],
        "speech_rate_wps": [num(r) for r in rate],
        "rate_window": rate_window,
    }


def pitch_histogram(frames: Frames) -> dict:
    """Voiced frames per semitone, with the bin edges in Hz: the distribution of every 10 ms, not of averages."""
    voiced = frames.voiced
    if not len(voiced):
        return {"edges_hz": [], "counts": []}
    edges = np.arange(math.floor(voiced.min()), math.ceil(voiced.max()) + 1.0)
    if len(edges) < 2:
        edges = np.array([edges[0], edges[0] + 1.0])
    counts, _ = np.histogram(voiced, bins=edges)
    return {"edges_hz": [num(e, 2) for e in semitones_to_hz(edges)], "counts": [int(c) for c in counts]}


def per_minute(transcript: Transcript, frames: Frames, duration: float, long_pause: float) -> list[dict]:
    spans = word_intervals(transcript)
    long_ends = pause_ends(spans, long_pause)
    minutes = []
    for m in range(math.ceil(duration / 60 - 1e-9)):
        lo, hi = 60.0 * m, min(60.0 * (m + 1), duration)
        words = sum(n for s, e, n in spans if lo <= (s + e) / 2 < hi)  # a word counts in the minute of its midpoint
        part = frames.slice(lo, hi)
        minutes.append({
            "minute": m, "words": words, "speech_rate_wps": num(words / (hi - lo)),
            "pause_ratio": num(1 - covered(spans, lo, hi) / (hi - lo)),
            "long_pauses": count_in(long_ends, lo, hi),
            "pitch_mean_hz": num(part.pitch_mean_hz()), "pitch_sd_semitones": num(part.pitch_sd_semitones()),
            "loudness_mean": num(part.loudness_mean() or 0.0), "loudness_sd": num(part.loudness_sd()),
        })
    return minutes


def write_csv(target: Path, rows: list[SegmentRow]) -> Path:
    with atomic_path(target) as tmp, tmp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow(["" if (v := num(x)) is None else v for x in astuple(row)])
    return target


def num(value, digits: int | None = DIGITS):
    """A JSON/CSV-safe number: NaN and inf become None, numpy scalars become Python ones."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return value if value is None else bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    if not math.isfinite(value):
        return None
    return round(value, digits) if digits is not None else value




def measure(transcript: Transcript, frames: Frames, voice: dict, *, long_pause: float = 1.0,
            timeline_step_s: float = 1.0, rate_window: float = 30.0) -> tuple[list[SegmentRow], dict]:
    """``features.csv``'s rows and ``features.json``'s content: ``frames`` and the features stage's
    ``voice`` (``voice.json``: feature set, duration, functionals) cut by ``transcript``."""
    duration = float(voice["duration"])
    step = timeline_step(duration, timeline_step_s)
    report = {
        "feature_set": voice["feature_set"],
        "duration": num(duration),
        "long_pause_s": long_pause,
        "summary": summary(transcript, frames, duration, long_pause),
        "functionals": voice["functionals"],
        "timeline": timeline(transcript, frames, duration, step, rate_window),
        "per_minute": per_minute(transcript, frames, duration, long_pause),
        "pitch_histogram": pitch_histogram(frames),
    }
    return segment_rows(transcript, frames, long_pause), report
