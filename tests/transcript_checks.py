"""Checks every transcribe output must pass, whichever backend made it: the JSON schema,
time order, and subtitles a player accepts (parsed by the ``srt`` and ``webvtt-py`` libraries: numbered,
well-formed, readable, never overlapping)."""

from __future__ import annotations

import html
import io
import json
import re
from pathlib import Path

import jsonschema
import srt
import webvtt

from konspekt.contracts import Transcript
from konspekt.sample import normalise_words

NUMBER, OPTIONAL_PROB = {"type": "number", "minimum": 0}, {"type": ["number", "null"], "minimum": 0, "maximum": 1}
SPEAKER = {"type": ["string", "null"], "minLength": 1}
WORD = {"type": "object", "additionalProperties": False, "required": ["start", "end", "text", "probability"],
        "properties": {"start": NUMBER, "end": NUMBER, "text": {"type": "string", "minLength": 1},
                       "probability": OPTIONAL_PROB, "speaker": SPEAKER}}
SEGMENT = {"type": "object", "additionalProperties": False,
           "required": ["id", "start", "end", "text", "words", "avg_logprob", "no_speech_prob"],
           "properties": {"id": {"type": "integer", "minimum": 0}, "start": NUMBER, "end": NUMBER,
                          "text": {"type": "string"}, "words": {"type": "array", "items": WORD},
                          "avg_logprob": {"type": ["number", "null"], "maximum": 0}, "no_speech_prob": OPTIONAL_PROB,
                          "speaker": SPEAKER,
                          "degenerate": {"enum": [None, "repetition", "compression_ratio", "wrong_script",
                                                  "no_speech"]},
                          "unclear_text": {"type": ["string", "null"]}}}
DIARIZATION = {"type": ["object", "null"], "additionalProperties": False, "required": ["status", "model"],
               "properties": {"status": {"enum": ["ok", "skipped"]}, "model": {"type": "string", "minLength": 1},
                              "speakers": {"type": "array", "items": {"type": "string"}},
                              "reason": {"type": ["string", "null"]}}}
TRANSCRIPT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": False,
    "required": ["language", "language_probability", "duration", "model", "segments", "backend", "word_timestamps"],
    "properties": {"language": {"type": "string", "pattern": "^[a-z]{2,3}$"}, "language_probability": OPTIONAL_PROB,
                   "duration": {"type": "number", "exclusiveMinimum": 0}, "model": {"type": "string", "minLength": 1},
                   "segments": {"type": "array", "items": SEGMENT},
                   "backend": {"enum": ["faster-whisper", "whisperx"]},
                   "word_timestamps": {"enum": ["faster-whisper", "wav2vec2"]}, "diarization": DIARIZATION,
                   "task": {"enum": ["transcribe", "translate"]}, "decoding": {"type": "object"},
                   "warnings": {"type": "array", "items": {"type": "string", "minLength": 1}}},
}

LABEL = re.compile(r"^\[[^\]]+\] ")  # a speaker label opening a cue
MAX_LINE = 60  # characters a subtitle line may have (they aim at 42)


def check_transcript(path: Path) -> Transcript:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    jsonschema.validate(data, TRANSCRIPT_SCHEMA)
    t = Transcript.from_dict(data)
    assert [s.id for s in t.segments] == list(range(len(t.segments)))
    assert all(s.start <= s.end <= t.duration + 0.5 for s in t.segments)
    assert all(a.start <= b.start for a, b in zip(t.segments, t.segments[1:]))
    words = [w for s in t.segments for w in s.words]
    assert all(s.start <= w.start <= w.end <= s.end + 0.01 for s in t.segments for w in s.words)
    assert all(a.start <= b.start for a, b in zip(words, words[1:]))
    assert all(s.words for s in t.segments if s.text.strip()), "every segment with text has timed words"
    return t


def srt_cues(text: str) -> list[tuple[float, float, list[str]]]:
    """The cues of an SRT file as the ``srt`` library (what players' parsers agree with) reads them, strictly:
    numbered from 1, nothing it would have to skip."""
    cues = list(srt.parse(text, ignore_errors=False))
    assert [c.index for c in cues] == list(range(1, len(cues) + 1))
    assert srt.compose(cues, reindex=False).strip() == text.strip(), "written back, the same file"
    return [(round(c.start.total_seconds(), 3), round(c.end.total_seconds(), 3), c.content.split("\n")) for c in cues]


def vtt_cues(text: str) -> list[tuple[float, float, list[str]]]:
    """The cues of a WebVTT file as ``webvtt-py`` reads them, their text unescaped as a player shows it."""
    assert text.startswith("WEBVTT\n\n")
    captions = webvtt.from_buffer(io.StringIO(text))
    assert len(captions) == text.count(" --> "), "every cue parsed, none swallowed by the one before"
    return [(_vtt_seconds(c.start), _vtt_seconds(c.end), [html.unescape(line) for line in c.lines]) for c in captions]


def _vtt_seconds(stamp: str) -> float:
    h, m, s = stamp.split(":")
    return round(int(h) * 3600 + int(m) * 60 + float(s), 3)


def check_subtitles(video_dir: Path, transcript: Transcript) -> list[tuple[float, float, list[str]]]:
    srt_text = (video_dir / "transcript.srt").read_text(encoding="utf-8")
    vtt = (video_dir / "transcript.vtt").read_text(encoding="utf-8")
    by_srt, by_vtt = srt_cues(srt_text), vtt_cues(vtt)
    assert by_srt == by_vtt, "the two formats hold the same cues: times and text"
    for a, b, lines in by_srt:
        assert a < b and 1 <= len(lines) <= 2 and all(0 < len(line) <= MAX_LINE for line in lines), (a, b, lines)
    for (_, end, _), (start, _, _) in zip(by_srt, by_srt[1:]):
        assert end <= start, "cues never overlap"
    said = " ".join(LABEL.sub("", " ".join(lines)) for _, _, lines in by_srt)
    assert normalise_words(said) == normalise_words(transcript.text), "subtitles hold every word, in order"

    rows = (video_dir / "transcript.tsv").read_text(encoding="utf-8").splitlines()
    diarized = transcript.diarization is not None and transcript.diarization.status == "ok"
    assert rows[0] == "start\tend\ttext" + ("\tspeaker" if diarized else "")
    cells = [row.split("\t") for row in rows[1:]]
    assert all(len(c) == len(rows[0].split("\t")) and c[0].isdigit() and c[1].isdigit() and int(c[0]) <= int(c[1]) for c in cells)
    assert len(cells) == len([s for s in transcript.segments if s.text.strip()])
    txt = (video_dir / "transcript.txt").read_text(encoding="utf-8")
    spoken = [line for line in txt.splitlines() if not (diarized and re.fullmatch(r"\S+:", line))]
    assert normalise_words(" ".join(spoken)) == normalise_words(transcript.text)
    return by_srt
