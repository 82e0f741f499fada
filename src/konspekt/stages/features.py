"""features: ``audio.wav`` + ``transcript.json`` -> ``features.csv`` and ``features.json`` (prosody, pace, pauses).

openSMILE (eGeMAPSv02) runs once over the audio, streamed to it in 10 s pieces: the
stage peaks at 1.35 GB on a 60-minute lecture, where openSMILE's stock input level, which
holds the whole signal, took it to 1.97 GB (bench/results/2026-11-22.md). One engine with two sinks gives
both the low-level descriptors (10 ms frames) and the 88 whole-lecture functionals,
where ``opensmile.Smile`` would decode and analyse the file twice (measured on a
9-minute lecture: 34 s for one pass against 31 s + 28 s, identical numbers). Every
per-segment, per-minute and timeline number is cut from that one frame table. Pace
and pauses use the word timestamps. Every file is replaced whole on a rerun.
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
import threading
import time
import wave
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np

from konspekt.contracts import Segment, Transcript, log
from konspekt.layout import VideoDir, atomic_path, write_json
from konspekt.media import wav_duration
from konspekt.progress import Progress
from konspekt.stage import main_for

FEATURE_SET = "eGeMAPSv02"
PITCH_LLD = "F0semitoneFrom27.5Hz_sma3nz"  # semitones above 27.5 Hz; 0 when unvoiced
LOUDNESS_LLD = "Loudness_sma3"
MAX_TIMELINE_POINTS = 2000  # enough for a chart; a 3 h lecture at 1 s would be 10800
DIGITS = 4  # rounding keeps files small; reruns are identical either way
CHUNK_SECONDS = 10.0  # audio handed to openSMILE at a time
# openSMILE's external wave input (shared/standard_external_wave_input.conf.inc) as a ring buffer
# of {ring} samples, where the stock file grows a level that holds the whole lecture.
RING_SOURCE = """
[componentInstances:cComponentManager]
instance[extsource].type=cExternalAudioSource

[extsource:cExternalAudioSource]
writer.dmLevel=wave
writer.levelconf.growDyn=0
writer.levelconf.isRb=1
writer.levelconf.nT={ring}
sampleRate=\\cm[sampleRate{{16000}}:sample rate]
nBits=\\cm[nBits{{16}}:sample bits]
channels=\\cm[channels{{1}}:channel size]
"""


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


def analyse(wav: Path, chunk_seconds: float = CHUNK_SECONDS) -> tuple[Frames, dict[str, float | None]]:
    """One openSMILE run with an LLD sink and a functionals sink: the frame table and the functionals.

    The audio is streamed in ``chunk_seconds`` pieces into a ring-buffer input level, while
    the engine runs in a thread: openSMILE's stock external source keeps the whole signal
    (about 230 MB an hour of audio, and more while it grows). Of each LLD frame only the
    time, pitch and loudness are kept.
    """
    import opensmile  # slow import (pandas, audformat): only when the stage runs
    from opensmile.core.lib import OpenSMILE

    conf = Path(opensmile.__file__).parent / "core" / "config"
    with tempfile.TemporaryDirectory(prefix="konspekt-smile-") as tmp, wave.open(str(wav)) as w:
        rate = w.getframerate()  # extract_audio wrote 16-bit mono PCM, which openSMILE takes as is
        step = max(1, int(rate * chunk_seconds))
        source = Path(tmp) / "ring_wave_input.conf.inc"
        source.write_text(RING_SOURCE.format(ring=2 * step))
        options = {
            "source": source,
            "sink": conf / "shared/standard_external_data_output_multi.conf.inc",
            "sinkLevelLLD": "lld", "sinkLevelFunc": "func", "sampleRate": rate, "nBits": 16,
            "bufferModeRbConf": conf / "shared/BufferModeRb.conf.inc",
            "frameModeFunctionalsConf": conf / "shared/FrameModeFunctionals.conf.inc",
        }
        engine = OpenSMILE()
        engine.initialize(config_file=str(conf / "egemaps/v02/eGeMAPSv02.conf"),
                          options={k: str(v) for k, v in options.items()}, loglevel=1)
        try:
            names = {sink: [engine.external_sink_get_element_name(sink, i)
                            for i in range(engine.external_sink_get_num_elements(sink))]
                     for sink in ("extsinklld", "extsinkfunc")}
            keep = [names["extsinklld"].index(PITCH_LLD), names["extsinklld"].index(LOUDNESS_LLD)]
            lld: list[tuple[float, float, float]] = []
            func: list[np.ndarray] = []
            engine.external_sink_set_callback_ex("extsinklld", lambda data, meta: lld.append(
                (meta.time + meta.lengthSec / 2, *np.ravel(data)[keep].tolist())))
            engine.external_sink_set_callback_ex("extsinkfunc", lambda data, meta: func.append(np.ravel(data).copy()))
            _stream(engine, w, step)
        finally:
            engine.free()

    table = np.array(lld, dtype=float).reshape(-1, 3)
    order = np.argsort(table[:, 0], kind="stable")  # searchsorted needs sorted times
    time_, semitones, loudness = table[order].T
    frames = Frames(time_, np.where(semitones > 0, semitones, np.nan), loudness)
    row = func[0] if func else [None] * len(names["extsinkfunc"])
    return frames, {name: _num(v, digits=None) for name, v in zip(names["extsinkfunc"], row)}


def _stream(engine, w: wave.Wave_read, step: int) -> None:
    """Run ``engine`` in a thread and feed it the WAV ``step`` frames at a time, then end of input."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            engine.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)

    runner = threading.Thread(target=run, name="opensmile", daemon=True)
    runner.start()
    rate = w.getframerate()
    progress = Progress("measured", w.getnframes() / rate)
    while pcm := w.readframes(step):
        progress.update(w.tell() / rate)
        while not engine.external_audio_source_write_data("extsource", pcm):  # the ring is full: wait
            if not runner.is_alive():
                break
            time.sleep(0.005)
        if not runner.is_alive():
            break
    engine.external_audio_source_set_eoi("extsource")
    runner.join()
    if failure:
        raise failure[0]
    progress.finish()


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
        "speech_rate_wps": _num(words / span if span > 0 else 0.0),  # words per second of the spoken span
        "pause_ratio": _num(1 - covered(spans, 0.0, duration) / duration if duration > 0 else 1.0),
        "long_pauses": len(pause_ends(spans, long_pause)),
        "pitch_mean_hz": _num(frames.pitch_mean_hz()),
        "pitch_sd_semitones": _num(frames.pitch_sd_semitones()),
        "loudness_mean": _num(frames.loudness_mean() or 0.0),
        "loudness_sd": _num(frames.loudness_sd() or 0.0),
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
        "time": [_num(i * step) for i in range(n)],
        "loudness": [_num(loud[i] / count[i]) if count[i] else None for i in range(n)],
        "pitch_hz": [_num(hz[i] / vcount[i]) if vcount[i] else None for i in range(n)],
        "speech_rate_wps": [_num(r) for r in rate],
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
    return {"edges_hz": [_num(e, 2) for e in semitones_to_hz(edges)], "counts": [int(c) for c in counts]}


def per_minute(transcript: Transcript, frames: Frames, duration: float, long_pause: float) -> list[dict]:
    spans = word_intervals(transcript)
    long_ends = pause_ends(spans, long_pause)
    minutes = []
    for m in range(math.ceil(duration / 60 - 1e-9)):
        lo, hi = 60.0 * m, min(60.0 * (m + 1), duration)
        words = sum(n for s, e, n in spans if lo <= (s + e) / 2 < hi)  # a word counts in the minute of its midpoint
        part = frames.slice(lo, hi)
        minutes.append({
            "minute": m, "words": words, "speech_rate_wps": _num(words / (hi - lo)),
            "pause_ratio": _num(1 - covered(spans, lo, hi) / (hi - lo)),
            "long_pauses": count_in(long_ends, lo, hi),
            "pitch_mean_hz": _num(part.pitch_mean_hz()), "pitch_sd_semitones": _num(part.pitch_sd_semitones()),
            "loudness_mean": _num(part.loudness_mean() or 0.0), "loudness_sd": _num(part.loudness_sd()),
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
    frames, funcs = analyse(video.audio)
    smile_s = time.perf_counter() - started
    log(f"openSMILE: {len(frames.time)} frames and {len(funcs)} functionals from {duration:.1f} s "
        f"of audio in {smile_s:.2f} s (one pass)")

    rows = segment_rows(transcript, frames, args.long_pause)
    step = timeline_step(duration, args.timeline_step)
    report = {
        "feature_set": FEATURE_SET,
        "duration": _num(duration),
        "long_pause_s": args.long_pause,
        "summary": summary(transcript, frames, duration, args.long_pause),
        "functionals": funcs,
        "timeline": timeline(transcript, frames, duration, step, args.rate_window),
        "per_minute": per_minute(transcript, frames, duration, args.long_pause),
        "pitch_histogram": pitch_histogram(frames),
    }
    write_csv(video.features_csv, rows)
    write_json(video.features_json, report)
    return [video.features_csv, video.features_json], {
        "model": f"openSMILE {FEATURE_SET}", "segments": len(rows), "words": report["summary"]["words"],
        "duration": report["duration"],
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
    parser.add_argument("--rate-window", type=_positive, default=30.0,
                        help="seconds of speech the timeline's speech rate is counted over")


main = main_for("features", __doc__.splitlines()[0], _configure, run,
                reads=lambda video: [video.audio, video.transcript_json], packages=["opensmile", "numpy"])

if __name__ == "__main__":
    raise SystemExit(main())
