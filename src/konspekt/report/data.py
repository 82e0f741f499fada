"""What the report says: the earlier stages' results read from the video folder, turned into
plain data (``report.json``) and into the text each value shows on the page.

Pure Python: no reportlab or matplotlib, so it is testable and reusable without them.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from konspekt.contracts import Outline, Section, Summary, Transcript, log
from konspekt.layout import VideoDir, read_json
from konspekt.models import fine_tuned_label
from konspekt.sentences import Sentence, timed_sentences

PARAGRAPH_SECONDS = 40.0  # a transcript paragraph: about 100 words of speech
# Why a stretch was left out, as the page says it (keys: konspekt.asr.quality.REASONS, which this
# stdlib-only module does not import).
UNCLEAR = {"repetition": "the recogniser looped", "compression_ratio": "the recogniser looped",
           "wrong_script": "text in the wrong script", "no_speech": "noise, no speech"}


@dataclass
class Report:
    """The inputs of one report, as the earlier stages left them."""

    title: str
    file: str
    transcript: Transcript
    summary: Summary
    outline: Outline | None
    features: dict[str, Any] | None
    date: str
    fine_tuned: str | None = None  # "fine-tuned <run> (base ..., WER a → b)" for a konspekt model


def load_report(video: VideoDir) -> Report:
    """Transcript and summary are required; features and outline may be missing (their sections say so)."""
    for path in (video.transcript_json, video.summary_json):
        if not path.is_file():
            raise FileNotFoundError(f"{path.name} is missing in {video.path}; the earlier stages did not finish")
    features = read_json(video.features_json) if video.features_json.is_file() else None
    outline = Outline.load(video.outline_json) if video.outline_json.is_file() else None
    for name, value in (("features.json", features), ("outline.json", outline)):
        if value is None:
            log(f"{name} is missing; its section will say so")
    return Report(
        title=video.title, file=video.name,
        transcript=Transcript.load(video.transcript_json),
        summary=Summary.load(video.summary_json),
        outline=outline, features=features,
        date=dt.date.today().isoformat(), fine_tuned=fine_tuned_label(video.path),
    )


def paragraphs(sentences: list[Sentence], breaks: Sequence[float] = ()) -> list[list[Sentence]]:
    """Consecutive sentences in paragraphs of about ``PARAGRAPH_SECONDS``; one also starts at each of
    ``breaks`` (the outline's section starts), so no paragraph straddles two sections, and at each
    change of speaker."""
    groups: list[list[Sentence]] = []
    pending = sorted(breaks)
    for sentence in sentences:
        crossed = False
        while pending and sentence.start >= pending[0] - 1e-6:
            pending.pop(0)
            crossed = True
        if (not groups or crossed or sentence.start - groups[-1][0].start >= PARAGRAPH_SECONDS
                or sentence.speaker != groups[-1][0].speaker):
            groups.append([])
        groups[-1].append(sentence)
    return groups


def section_number(t: float, sections: list[Section]) -> int | None:
    """1-based number of the section ``t`` falls in (by section starts), None without an outline."""
    number = None
    for i, section in enumerate(sections, 1):
        if number is None or t >= section.start - 1e-6:
            number = i
    return number


def _mean(values: list) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return round(sum(finite) / len(finite), 4) if finite else None


def voice_by_section(timeline: dict[str, Any], sections: list[Section]) -> list[dict[str, Any]]:
    """Speech rate, pitch and loudness averaged over each section's stretch of the timeline."""
    time = timeline.get("time") or []
    columns = {out: timeline.get(key) or [None] * len(time) for out, key in (
        ("speech_rate_wps", "speech_rate_wps"), ("pitch_mean_hz", "pitch_hz"), ("loudness_mean", "loudness"))}
    rows = []
    for i, section in enumerate(sections):
        end = sections[i + 1].start if i + 1 < len(sections) else math.inf
        idx = [k for k, t in enumerate(time) if section.start <= t < end]
        rows.append({"section": i + 1, "start": section.start,
                     **{out: _mean([col[k] for k in idx]) for out, col in columns.items()}})
    return rows


def report_data(report: Report) -> dict[str, Any]:
    """Everything the PDF shows, as plain data: what ``report.json`` holds."""
    tr, summ = report.transcript, report.summary
    sections = report.outline.sections if report.outline else []
    words = sum(len(s.words) or len(s.text.split()) for s in tr.segments)
    feats = report.features
    return {
        "title": report.title,
        "file": report.file,
        "date": report.date,
        "duration": round(tr.duration, 3),
        "language": tr.language,
        "words": words,
        "warnings": list(tr.warnings),  # the transcriber's doubts, shown on the cover
        "models": {
            "speech_to_text": {"method": tr.backend, "model": tr.model, "fine_tuned": report.fine_tuned},
            "summary": {"method": summ.method, "model": summ.model},
            "outline": {"method": report.outline.method, "model": report.outline.model} if report.outline else None,
            "voice": {"method": "openSMILE", "model": feats.get("feature_set", "eGeMAPSv02")} if feats else None,
        },
        "summary": {"method": summ.method, "model": summ.model, "text": summ.text, "note": summ.note},
        "outline": None if report.outline is None else {
            "note": report.outline.note,
            "sections": [{"section": i, **asdict(s)} for i, s in enumerate(sections, 1)],
        },
        "voice": None if not feats else {
            "summary": feats.get("summary") or {},
            "sections": voice_by_section(feats.get("timeline") or {}, sections),
            "per_minute": feats.get("per_minute") or [],
        },
        "transcript": sorted([
            *({"start": round(g[0].start, 3), "end": round(g[-1].end, 3),
               "section": section_number(g[0].start, sections), "speaker": g[0].speaker,
               "text": " ".join(s.text for s in g), "unclear": None}
              for g in paragraphs(timed_sentences(tr), [s.start for s in sections[1:]])),
            *({**span, "section": section_number(span["start"], sections), "speaker": None, "text": ""}
              for span in unclear_spans(tr)),
        ], key=lambda p: p["start"]),
    }


def unclear_spans(transcript: Transcript) -> list[dict[str, Any]]:
    """Stretches the transcriber marked as not speech (``Segment.degenerate``), neighbours joined:
    the report shows them as such, never as words someone said."""
    spans: list[dict[str, Any]] = []
    for seg in transcript.segments:
        if not seg.degenerate:
            continue
        why = UNCLEAR.get(seg.degenerate, seg.degenerate)
        if spans and seg.start - spans[-1]["end"] < 1.0 and spans[-1]["unclear"] == why:
            spans[-1]["end"] = round(seg.end, 3)
        else:
            spans.append({"start": round(seg.start, 3), "end": round(seg.end, 3), "unclear": why})
    return spans


# --- values as the page shows them ----------------------------------------------------------------

def clock(seconds: float, hours: bool = False) -> str:
    """``mm:ss``, or ``h:mm:ss`` when ``hours`` (or when the time needs it)."""
    total = max(0, int(seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if hours or h else f"{m:02d}:{s:02d}"


def model_label(name: str | None) -> str:
    """A model as a reader wants it: a hub id as is; a folder by its last two parts, or by the hub id
    a cache folder (``models--org--name/snapshots/<hash>``) stands for, not a site-packages path."""
    if not name:
        return "n/a"
    if not name.startswith(("/", ".", "~")):
        return name
    parts = Path(name).parts
    for part in parts:
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/")
    return "/".join(parts[-2:])


def model_label_of(used: dict[str, str] | None) -> str:
    """``{"method", "model"}`` (an entry of ``models``) as "method · short model name" (or what a fine-tuned
    model is: ``fine_tuned``)."""
    return f"{used['method']} · {used.get('fine_tuned') or model_label(used['model'])}" if used else "n/a"


def formatted(value: Any, fmt: str, unit: str = "") -> str:
    """A measurement with its unit, or "n/a" where the features had none (None, NaN)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:{fmt}}{unit}"


def voice_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The voice summary as (label, value) pairs for the facts table."""
    loud, loud_sd = summary.get("loudness_mean"), summary.get("loudness_sd")
    loudness = formatted(loud, ".2f")
    if loudness != "n/a" and loud_sd is not None:
        loudness += f" (sd {formatted(loud_sd, '.2f')})"
    pause = summary.get("pause_ratio")
    return [
        ("Speech rate", formatted(summary.get("speech_rate_wps"), ".2f", " words/s")),
        ("Pause ratio", formatted(None if pause is None else pause * 100, ".1f", " %")),
        ("Long pauses", formatted(summary.get("long_pauses"), "d")),
        ("Mean pitch", formatted(summary.get("pitch_mean_hz"), ".0f", " Hz")),
        ("Pitch variability", formatted(summary.get("pitch_sd_semitones"), ".1f", " semitones")),
        ("Loudness", loudness),
    ]
