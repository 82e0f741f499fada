"""Uploads over the API, the storage side: stream a file into ``input/`` and tell where it went since.

No web framework here: :class:`Incoming` takes chunks from anywhere (the web API, a test).
The rules that keep the watch folder safe:

* The bytes go to a hidden ``.part`` file in ``input/`` itself, a name the watch folder ignores
  (:func:`konspekt.inbox.is_ignored`), so a claim never takes a half upload; being in the same
  folder, the final rename cannot cross file systems.
* Only a complete upload (all bytes, within ``max_bytes``, fsynced) is linked into ``input/``
  under a sanitised name; ``os.link`` fails rather than replace a file, so nothing is overwritten.
  Anything else removes the temp file: ``input/`` never holds a piece of an upload.
* Each upload is recorded in ``<data_root>/api/lectures/<id>.json`` with the key that sent it.
  Its state is found from the pipeline's own records: the file's inode (a rename keeps it) and
  its sha256, which the claim's record, ``manifest.json`` and ``error.json`` hold.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from konspekt import inbox, registry
from konspekt.contracts import STATUS_OK
from konspekt.layout import VideoDir, is_link, is_real_dir, lstat_mode, printable, read_json, write_json

CHUNK = 1 << 20
TEMP_PREFIX = ".konspekt-upload-"
TEMP_SUFFIX = ".part"  # hidden and .part: twice ignored by the watch folder
ALLOWED_FILES = frozenset({"report.pdf", "report.json", "transcript.txt", "transcript.srt", "transcript.vtt",
                           "transcript.json"})
MAX_SUFFIX_BYTES = 32  # a longer "extension" is part of the name, not a file type
ID_RE = re.compile(r"[0-9a-f]{32}")

log = logging.getLogger(__name__)


class TooLarge(Exception):
    """The upload ran past ``max_bytes``; nothing of it is kept."""


@dataclass
class Upload:
    id: str
    key_id: str
    original_name: str
    input_name: str
    size: int
    sha256: str
    created: str
    inode: tuple[int, int] = (0, 0)  # (st_dev, st_ino): the file is this inode wherever it is moved
    callback_url: str | None = None
    notified: dict[str, Any] = field(default_factory=dict)  # what callbacks delivered, by state

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("inode", "notified")}


def lectures_dir(data_root: Path) -> Path:
    return Path(data_root) / "api" / "lectures"


def record_file(data_root: Path, upload_id: str) -> Path:
    if not ID_RE.fullmatch(upload_id):  # ids come from URLs: never a path
        raise ValueError(f"{upload_id!r} is not an upload id")
    return lectures_dir(data_root) / f"{upload_id}.json"


def load(data_root: Path, upload_id: str) -> Upload | None:
    try:
        data = read_json(record_file(data_root, upload_id))
    except (ValueError, OSError):
        return None
    data["inode"] = tuple(data.get("inode") or (0, 0))
    return Upload(**data)


def save(data_root: Path, upload: Upload) -> None:
    write_json(record_file(data_root, upload.id), asdict(upload))


def list_uploads(data_root: Path, key_id: str) -> list[Upload]:
    """The uploads of one key, oldest first."""
    found = []
    for path in sorted(lectures_dir(data_root).glob("*.json")):
        upload = load(data_root, path.stem)
        if upload is not None and upload.key_id == key_id:
            found.append(upload)
    return sorted(found, key=lambda u: u.created)


# --- names ------------------------------------------------------------------------------------------

def clean_name(filename: str) -> str:
    """The name a client gave, as a name the watch folder takes: one component, no control
    characters, not hidden, no download suffix, at most :data:`inbox.NAME_BYTES` bytes."""
    name = re.split(r"[/\\]", filename or "")[-1]  # a path (even a Windows one) gives its last part
    name = re.sub(r"[\x00-\x1f\x7f]+", "_", printable(name)).strip()
    while True:  # "lecture.mp4.part" is complete once it got here: keep "lecture.mp4"
        name = name.lstrip(".~ ")
        if not inbox.is_ignored(name) or not name:
            break
        name = os.path.splitext(name)[0]
    return _with_number(name or "upload", 1)


def _with_number(name: str, n: int) -> str:
    """``name``, or ``name (n)`` before its extension, cut to fit in one file name."""
    stem, suffix = os.path.splitext(name)
    if len(suffix.encode("utf-8")) > MAX_SUFFIX_BYTES:
        stem, suffix = name, ""
    mark = f" ({n})" if n > 1 else ""
    room = inbox.NAME_BYTES - len((mark + suffix).encode("utf-8"))
    return (inbox.fit_bytes(stem, room).rstrip() or "upload") + mark + suffix


def _link_unique(tmp: Path, folder: Path, name: str) -> str:
    """Hard-link ``tmp`` into ``folder`` under ``name`` or ``name (2)``...; never replaces a file."""
    for n in range(1, 10_000):
        candidate = _with_number(name, n)
        try:
            os.link(tmp, folder / candidate)
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"no free name for {printable(name)!r} in {folder}")


# --- receiving --------------------------------------------------------------------------------------

class Incoming:
    """One upload in flight: ``write`` its chunks, then ``commit``; leaving the ``with`` block any
    other way (an error, a client that went away, :class:`TooLarge`) removes everything of it."""

    def __init__(self, data_root: Path, filename: str, key_id: str, max_bytes: int) -> None:
        self.data_root, self.key_id, self.max_bytes = Path(data_root), key_id, max_bytes
        self.original_name = printable(filename or "")
        self.input_name = clean_name(filename)
        self.id = uuid.uuid4().hex
        self.size = 0
        self._hash = hashlib.sha256()
        folder = self.data_root / "input"
        folder.mkdir(parents=True, exist_ok=True)
        self.tmp = folder / f"{TEMP_PREFIX}{self.id}{TEMP_SUFFIX}"
        self._fd: int | None = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)

    def __enter__(self) -> Incoming:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    def write(self, chunk: bytes) -> None:
        if self._fd is None:
            raise RuntimeError("this upload is closed")
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise TooLarge(f"over the limit of {self.max_bytes} bytes")
        self._hash.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view):]

    def commit(self, callback_url: str | None = None) -> Upload:
        """Make the upload a file of ``input/`` (a new name, never one that exists) and record it."""
        if self._fd is None:
            raise RuntimeError("this upload is closed")
        os.fsync(self._fd)  # the bytes are on disk before the watch folder can see a name
        os.close(self._fd)
        self._fd = None
        st = self.tmp.stat()
        upload = Upload(self.id, self.key_id, self.original_name, "", self.size, self._hash.hexdigest(),
                        datetime.now(timezone.utc).isoformat(timespec="seconds"), (st.st_dev, st.st_ino),
                        callback_url)
        upload.input_name = _link_unique(self.tmp, self.tmp.parent, self.input_name)
        try:
            save(self.data_root, upload)
        except BaseException:
            (self.tmp.parent / upload.input_name).unlink(missing_ok=True)  # unrecorded: not ours to leave
            raise
        _fsync_dir(self.tmp.parent)
        self.tmp.unlink()
        return upload

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.tmp.unlink(missing_ok=True)


def receive(stream: Iterable[bytes], filename: str, data_root: Path, key_id: str, max_bytes: int,
            callback_url: str | None = None) -> Upload:
    """Stream ``stream`` into ``input/`` as ``filename`` (sanitised, made unique) and record it.

    Raises :class:`TooLarge` past ``max_bytes``, and whatever ``stream`` raises; either way nothing
    is left in ``input/``. Writes in chunks of at most :data:`CHUNK`: memory stays bounded.
    """
    with Incoming(data_root, filename, key_id, max_bytes) as incoming:
        for chunk in stream:
            for start in range(0, len(chunk), CHUNK):
                incoming.write(chunk[start:start + CHUNK])
        return incoming.commit(callback_url)


def sweep_temps(data_root: Path, older_than: float = 24 * 3600) -> list[Path]:
    """Remove temp files a killed server left in ``input/`` (hidden, so no one else will)."""
    removed = []
    folder = Path(data_root) / "input"
    for path in folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}") if folder.is_dir() else []:
        try:
            if time.time() - path.lstat().st_mtime > older_than:
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- where it is now ----------------------------------------------------------------------------

def state(data_root: Path, upload_id: str) -> dict[str, Any]:
    """Where the upload is: ``waiting`` (in ``input/``), ``processing`` (claimed; with its stage),
    ``published`` (in ``output/``, with its files), ``quarantined`` (in ``failed/``, with the reason),
    or ``unknown`` (none of these: removed by hand, or never recorded)."""
    data_root = Path(data_root)
    upload = load(data_root, upload_id)
    if upload is None:
        raise FileNotFoundError(f"no upload {upload_id}")
    base = {"id": upload.id, "name": upload.original_name, "input_name": upload.input_name,
            "size": upload.size, "sha256": upload.sha256, "created": upload.created}
    for find in (_waiting, _processing, _published, _quarantined):
        found = find(data_root, upload)
        if found is not None:
            return {**base, **found}
    return {**base, "state": "unknown"}


def _same_file(path: Path, upload: Upload) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) == tuple(upload.inode)


def _waiting(data_root: Path, upload: Upload) -> dict[str, Any] | None:
    return {"state": "waiting"} if _same_file(data_root / "input" / upload.input_name, upload) else None


def _processing(data_root: Path, upload: Upload) -> dict[str, Any] | None:
    processing = data_root / "processing"
    if not processing.is_dir():
        return None
    for video_dir in sorted(v for c in processing.iterdir() if is_real_dir(c) for v in c.iterdir() if is_real_dir(v)):
        try:
            record = read_json(inbox.record_path(video_dir))
        except (OSError, ValueError):
            record = {}
        name = record.get("name") if isinstance(record, dict) else None
        ours = (name == upload.input_name and record.get("sha256") == upload.sha256) or \
            _same_file(video_dir / "source" / upload.input_name, upload)
        if ours:
            return {"state": "processing", **_progress(video_dir, record)}
    return None


def _progress(video_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Which stages are done, which one is next or running, and why the video waits if it was held."""
    results = inbox.stage_results(VideoDir(video_dir))
    order = registry.lecture_names()
    done = [s for s in order if s in results and results[s].status == STATUS_OK]
    found: dict[str, Any] = {"stages_done": done, "stage": next((s for s in order if s not in done), None)}
    held = record.get("held")
    if isinstance(held, dict):
        found["held"] = {k: held.get(k) for k in ("stage", "reason", "hint")}
    return found


def _published(data_root: Path, upload: Upload) -> dict[str, Any] | None:
    folder = _output_folder(data_root, upload)
    if folder is None:
        return None
    files = sorted(p.name for p in folder.iterdir() if stat.S_ISREG(lstat_mode(p)))
    return {"state": "published", "output": f"output/{folder.name}", "files": files,
            "downloads": sorted(ALLOWED_FILES & set(files))}


def _output_folder(data_root: Path, upload: Upload) -> Path | None:
    """The ``output/`` folder whose manifest names this upload's bytes; the one with its name first.

    Bytes published before (under any name) are not processed again (see :func:`inbox.claim`), so
    the folder then is that earlier one: it holds what these bytes became.
    """
    matches = []
    for manifest in sorted((data_root / "output").glob("*/manifest.json")):
        try:
            video = read_json(manifest)["video"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(video, dict) and video.get("sha256") == upload.sha256:
            matches.append((video.get("name") != upload.input_name, manifest.parent))
    return min(matches)[1] if matches else None


def _quarantined(data_root: Path, upload: Upload) -> dict[str, Any] | None:
    for error_file in sorted((data_root / "failed").glob("*/error.json")):
        folder = error_file.parent
        try:
            error = read_json(error_file)
        except (OSError, ValueError):
            error = {}
        ours = (isinstance(error, dict) and error.get("sha256") == upload.sha256) or any(
            _same_file(p, upload) for p in (folder / upload.input_name, folder / "source" / upload.input_name))
        if ours:
            return {"state": "quarantined", "failed": f"failed/{folder.name}",
                    **{k: error.get(k) for k in ("reason", "stage", "hint")}}
    return None


def output_file(data_root: Path, upload_id: str, name: str) -> Path | None:
    """The path of ``name`` (one of :data:`ALLOWED_FILES`) in this upload's output folder, or None:
    not published, no such file, or a path that is a link or leads out of that folder."""
    upload = load(data_root, upload_id)
    if name not in ALLOWED_FILES or upload is None:
        return None
    folder = _output_folder(Path(data_root), upload)
    if folder is None:
        return None
    path = folder / name
    try:
        real_folder = folder.resolve(strict=True)
        real = path.resolve(strict=True)
    except OSError:
        return None
    output = (Path(data_root) / "output").resolve()
    if is_link(folder) or is_link(path) or real.parent != real_folder or real_folder.parent != output:
        return None
    return real if stat.S_ISREG(lstat_mode(real)) else None


