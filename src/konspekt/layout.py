"""Where a video's files live, and how they are written.

The data root (``/data`` inside task containers) holds::

    input/                       users drop videos here
    processing/<claim>/<video>/  one folder per claimed video while stages run
    output/<video name>/         finished results (report.pdf, transcript.*, manifest.json)
    processed/<claim>/<file>     the original upload, archived after success
    failed/<video name>/         the original upload + error.json when it could not be processed
    train_runs/<run>/            one training run's working folder (see konspekt.training)
    logs/<run>/                  training logs

All writes go through :func:`atomic_path`: a temp file in the same folder, then an
``os.replace``. A killed stage never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from konspekt.contracts import log, to_jsonable

VIDEO_META = "video.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temp path next to ``target``; it replaces ``target`` only if the block succeeds.
    ``mode``: the file's, from the start (None: 0666 less the umask)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.fchmod(fd, 0o666 & ~_umask() if mode is None else mode)  # mkstemp makes 0600; results are for the user
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def temp_files_of(target: Path) -> list[Path]:
    """Temp files :func:`atomic_path` left next to ``target`` when its writer was killed."""
    target = Path(target)
    return sorted(target.parent.glob(f".{glob.escape(target.name)}.*.tmp")) if target.parent.is_dir() else []


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_text(target: Path, text: str, mode: int | None = None) -> Path:
    with atomic_path(target, mode) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json(target: Path, data: Any, mode: int | None = None) -> Path:
    text = json.dumps(to_jsonable(data), ensure_ascii=False, indent=2)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not UTF-8 (a lone surrogate): keep it as a \\u escape
        text = json.dumps(to_jsonable(data), ensure_ascii=True, indent=2)
    return write_text(target, text + "\n", mode)


def printable(name: str) -> str:
    """A name as text that any log, PDF or JSON can hold: bytes that are not UTF-8 become \ufffd."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def safe_name(text: str) -> str:
    """A run id (``manual__2026-01-01T10:00:00+00:00``) as a portable folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


@dataclass(frozen=True)
class WorkDir:
    """The folder one task works in; each step keeps its result in ``stages/<step>.json`` there."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    results_dir = property(lambda self: self.path / "stages")

    def result_path(self, step: str) -> Path:
        return self.results_dir / f"{step}.json"

    def prepare(self) -> None:
        """Before a step runs: a video's folder must exist already (claim made it)."""

    def note(self, message: str) -> None:
        """A line the user should read: why the step failed on their input."""
        log(message)


@dataclass(frozen=True)
class VideoDir(WorkDir):
    """The working folder of one claimed video: every stage reads and writes here."""

    @property
    def meta(self) -> dict[str, Any]:
        return read_json(self.path / VIDEO_META)

    @property
    def source(self) -> Path:
        """The user's original file, as claimed."""
        return self.path / self.meta["source"]

    @property
    def name(self) -> str:
        return printable(self.meta["name"])

    @property
    def title(self) -> str:
        return printable(Path(self.meta["name"]).stem)

    audio = property(lambda self: self.path / "audio.wav")
    transcript_json = property(lambda self: self.path / "transcript.json")
    summary_json = property(lambda self: self.path / "summary.json")
    features_csv = property(lambda self: self.path / "features.csv")
    features_json = property(lambda self: self.path / "features.json")
    voice_npz = property(lambda self: self.path / "voice.npz")  # the features stage's frames, for render_pdf
    voice_json = property(lambda self: self.path / "voice.json")
    outline_json = property(lambda self: self.path / "outline.json")
    embeddings_dir = property(lambda self: self.path / "embeddings")  # summarize and outline share their vectors
    report_pdf = property(lambda self: self.path / "report.pdf")
    report_json = property(lambda self: self.path / "report.json")


@dataclass(frozen=True)
class RunDir(WorkDir):
    """One training run's folders, all derived from ``<data root>/train_runs/<run id>``."""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def data_root(self) -> Path:
        return self.path.parent.parent

    data = property(lambda self: self.path / "data")
    checkpoints = property(lambda self: self.path / "checkpoints")
    model = property(lambda self: self.path / "model")
    logs = property(lambda self: self.data_root / "logs" / self.name)
    train_log = property(lambda self: self.logs / "train.log")
    shard_cache = property(lambda self: self.data_root / "train_cache" / "shards")
    export = property(lambda self: self.data_root / "models" / self.name)

    def manifest(self, split: str) -> Path:
        return self.data / f"{split}.json"

    def result(self, step: str) -> dict[str, Any]:
        """What an earlier step reported (its ``details``); it must have run."""
        path = self.result_path(step)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the {step} step has not run for this run")
        return read_json(path)["details"]

    def prepare(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def note(self, message: str) -> None:
        """A time-stamped line in ``train.log`` (appended line by line: readable while training) and on stderr."""
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        log(stamped)
        self.logs.mkdir(parents=True, exist_ok=True)
        with self.train_log.open("a", encoding="utf-8") as f:
            f.write(stamped + "\n")


def lstat_mode(path: Path) -> int:
    """The file type and mode of ``path`` itself (a link is a link), 0 when it is not there."""
    try:
        return path.lstat().st_mode
    except OSError:
        return 0


def is_real_dir(path: Path) -> bool:
    """A folder, not a link to one."""
    return stat.S_ISDIR(lstat_mode(path))


def is_link(path: Path) -> bool:
    return stat.S_ISLNK(lstat_mode(path))
