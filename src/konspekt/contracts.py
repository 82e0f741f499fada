"""What stages exchange, and how a stage reports its outcome.

Every stage reads the JSON files written by the stages before it and writes its
own: plain dataclasses that round-trip through JSON. Keeping the shapes here means
the transcript a PDF is rendered from is the same object the transcriber produced,
not a dict someone re-guessed. The outcome codes (statuses and exit codes) live here
too, so the stages, the runner and both Airflow operators read them from one place.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATUS_OK = "ok"
STATUS_BAD_INPUT = "bad_input"
STATUS_ERROR = "error"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2  # only the stage's own judgement of the input: quarantine, never retry
EXIT_USAGE = 64  # a wrong command line (sysexits' EX_USAGE): a bug on our side, retried like a crash


class BadInput(Exception):
    """The user's file cannot be processed; the message is shown to them as is (exit 2)."""


def log(message: str) -> None:
    """Progress and diagnostics: stderr, so that stdout's last line stays the JSON result."""
    print(message, file=sys.stderr, flush=True)


def parse_bool(text: object) -> bool:
    """A yes/no from a command line, a Param or the environment (``true``, ``1``, ``on``, ``no``, ``""``...)."""
    value = str(text).strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


@dataclass
class Word:
    start: float
    end: float
    text: str
    probability: float | None = None
    speaker: str | None = None  # set by diarization


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    speaker: str | None = None  # set by diarization: the speaker of most of its words
    # Set when the decoder's output here was not speech (a loop, text in the wrong script) even after
    # a second decoding: why ("repetition", "compression_ratio", "wrong_script", "no_speech"). Its text and words are
    # then empty, so no later stage publishes it; what the decoder said is kept in ``unclear_text``.
    degenerate: str | None = None
    unclear_text: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Segment:
        words = [Word(**w) for w in data.get("words", [])]
        return cls(**{**data, "words": words})


@dataclass
class Diarization:
    """Whether speakers were told apart, by which model, and why not when they were not."""

    status: str  # "ok" | "skipped"
    model: str
    speakers: list[str] = field(default_factory=list)
    reason: str | None = None  # why it was skipped, in plain words


@dataclass
class Transcript:
    language: str
    language_probability: float | None
    duration: float
    model: str
    segments: list[Segment]
    backend: str = "faster-whisper"
    word_timestamps: str = "faster-whisper"  # how word times were obtained
    diarization: Diarization | None = None  # None: not asked for
    task: str = "transcribe"  # "translate": the text is Whisper's English translation of ``language``
    decoding: dict[str, Any] = field(default_factory=dict)  # the decoding options used (prompt, VAD, ...)
    warnings: list[str] = field(default_factory=list)  # what the reader should doubt, in plain words

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcript:
        segments = [Segment.from_dict(s) for s in data.get("segments", [])]
        diarization = Diarization(**data["diarization"]) if data.get("diarization") else None
        return cls(**{**data, "segments": segments, "diarization": diarization})

    @classmethod
    def load(cls, path: Path) -> Transcript:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass
class Summary:
    method: str  # "abstractive" | "extractive"
    model: str
    text: str
    language: str | None = None
    chunks: int = 1
    note: str | None = None  # why a fallback happened, shown in the report

    @classmethod
    def load(cls, path: Path) -> Summary:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass
class Section:
    """One topical section of the lecture: its time span, a lead sentence as title, its key points."""

    start: float
    end: float
    title: str
    points: list[str] = field(default_factory=list)
    depth: float | None = None  # how sharply the topic changes at its start (None for the first)


@dataclass
class Outline:
    method: str  # "texttiling"
    model: str
    sections: list[Section]
    language: str | None = None
    note: str | None = None

    @classmethod
    def load(cls, path: Path) -> Outline:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(**{**data, "sections": [Section(**s) for s in data.get("sections", [])]})


@dataclass
class StageResult:
    """The last line a stage prints on stdout, also kept as ``stages/<stage>.json``."""

    stage: str
    status: str
    outputs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    message: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    finished_at: str | None = None  # UTC, ISO 8601
    versions: dict[str, str] = field(default_factory=dict)  # konspekt, python and the libraries that did the work
    fingerprint: dict[str, Any] = field(default_factory=dict)  # what it read and how: see konspekt.freshness

    @property
    def exit_code(self) -> int:
        return {STATUS_OK: EXIT_OK, STATUS_BAD_INPUT: EXIT_BAD_INPUT}.get(self.status, EXIT_ERROR)

    def to_json(self) -> str:
        text = json.dumps(asdict(self), ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a message naming a file whose name is not UTF-8
            text = json.dumps(asdict(self), ensure_ascii=True)
        return text

    @classmethod
    def load(cls, path: Path) -> StageResult:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


def to_jsonable(obj: Any) -> Any:
    return asdict(obj) if hasattr(obj, "__dataclass_fields__") else obj
