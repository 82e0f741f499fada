"""Checks every transcribe output must pass, whichever backend made it: the JSON schema,
time order, and subtitles a player accepts (numbered, well-formed, readable, never overlapping)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema

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
CUE = re.compile(r"^(\d\d):(\d\d):(\d\d)[,.](\d\d\d) --> (\d\d):(\d\d):(\d\d)[,.](\d\d\d)$")
MAX_LINE = 60  # characters a subtitle line may have (they aim at 42)


def _seconds(h, m, s, ms) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


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


def _cues(text: str, vtt: bool) -> list[tuple[float, float, list[str]]]:
    blocks = text.strip("\n").split("\n\n")
    if vtt:
        assert blocks[0] == "WEBVTT"
        blocks = blocks[1:]
    cues = []
    for number, block in enumerate(blocks, 1):
        lines = block.split("\n")
        if not vtt:
            assert lines[0] == str(number), block
            lines = lines[1:]
        match = CUE.match(lines[0])
        assert match, block
        g = match.groups()
        assert 1 <= len(lines[1:]) <= 2 and all(0 < len(line) <= MAX_LINE for line in lines[1:]), block
        cues.append((_seconds(*g[:4]), _seconds(*g[4:]), lines[1:]))
    return cues


def check_subtitles(video_dir: Path, transcript: Transcript) -> list[tuple[float, float, list[str]]]:
    srt = (video_dir / "transcript.srt").read_text(encoding="utf-8")
    vtt = (video_dir / "transcript.vtt").read_text(encoding="utf-8")
    assert vtt.startswith("WEBVTT\n\n")
    srt_cues, vtt_cues = _cues(srt, vtt=False), _cues(vtt, vtt=True)
    assert [(a, b) for a, b, _ in srt_cues] == [(a, b) for a, b, _ in vtt_cues]
    for a, b, _ in srt_cues:
        assert a < b
    for (_, end, _), (start, _, _) in zip(srt_cues, srt_cues[1:]):
        assert end <= start, "cues never overlap"
    said = " ".join(LABEL.sub("", " ".join(lines)) for _, _, lines in srt_cues)
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
    return srt_cues
