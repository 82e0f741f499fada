"""Uploads over the API, the storage side: stream a file into ``input/`` and tell where it went since.

No web framework here: :class:`Incoming` takes chunks from anywhere (the web API, a test).
The rules that keep the watch folder safe:

* The bytes go to a hidden ``.part`` file in ``input/`` itself, a name the watch folder ignores
  (:func:`konspekt.inbox.is_ignored`), so a claim never takes a half upload; being in the same
  folder, the final rename cannot cross file systems.
* Only a complete upload (all bytes, within ``max_bytes``, fsynced) is linked into ``input/``
  under a sanitised name; ``os.link`` fails rather than replace a file, so nothing is overwritten.
  Anything else removes the temp file: ``input/`` never holds a piece of an upload.
* Each upload is recorded in ``<data_root>/api/lectures/<id>.json`` with the key that sent it, and
  listed in its key's ``api/by-key/<key>.ids``. Before its file appears in ``input/``, a note by its
  inode tells the claim which key sent it (:func:`inbox.uploader_file`): the same bytes count as
  done only for the same key, so no key learns of another's lecture by sending its bytes.
* Its state is found from the pipeline's own records: the file's inode (a rename keeps it) in
  ``input/`` or ``processing/``, and once it is done the pipeline's note of where it went
  (:func:`inbox.outcome_file`): one read, however full ``output/`` and ``failed/`` are.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from konspekt import inbox, registry
from konspekt.contracts import STATUS_OK
from konspekt.layout import VideoDir, is_link, is_real_dir, lstat_mode, printable, read_json, write_json, write_text

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


class NoSpace(Exception):
    """The upload would leave the disk of ``input/`` with less free space than it must keep; nothing is kept."""


class Busy(Exception):
    """The key has as many uploads in flight as it may have."""


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
    """Only the server's user reads a record (0600, in a 0700 folder): it names the key that sent the
    lecture and holds its callback URL, which may carry the receiver's token."""
    path = record_file(data_root, upload.id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(path.parent.stat().st_mode) != 0o700:  # a folder made before records were private
        os.chmod(path.parent, 0o700)
    write_json(path, asdict(upload), mode=0o600)


def list_uploads(data_root: Path, key_id: str) -> list[Upload]:
    """The uploads of one key, oldest first: its list (:func:`key_list`) and its own records only."""
    found = [u for i in _key_ids(data_root, key_id) if (u := load(data_root, i)) is not None and u.key_id == key_id]
    return sorted(found, key=lambda u: u.created)


def list_page(data_root: Path, key_id: str, limit: int, after: str | None = None) -> tuple[list[Upload], str | None]:
    """Up to ``limit`` of one key's uploads, newest first, from the one after ``after`` (the last of the
    previous page); and the ``after`` of the next page, None after the last. Reads ``limit`` records,
    however many the key has. ValueError: ``after`` is not one of the key's uploads."""
    ids = _key_ids(data_root, key_id)[::-1]
    i = ids.index(after) + 1 if after is not None else 0
    page: list[Upload] = []
    while i < len(ids) and len(page) < limit:
        upload = load(data_root, ids[i])
        i += 1
        if upload is not None and upload.key_id == key_id:  # an id whose upload failed has no record
            page.append(upload)
    return page, (page[-1].id if page and i < len(ids) else None)


# --- a key's list ---------------------------------------------------------------------------------

KEY_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
KEY_LISTS_BUILT = ".built-1"  # written once the lists also hold every upload recorded before they existed


def key_list(data_root: Path, key_id: str) -> Path:
    """The ids of one key's uploads, oldest first, one a line, appended as each upload arrives: a key's
    lectures are listed from this small file and their own records, not from every record of every key."""
    if not KEY_ID_RE.fullmatch(key_id):
        raise ValueError(f"{key_id!r} is not a key id")
    return Path(data_root) / "api" / "by-key" / f"{key_id}.ids"


def _register(data_root: Path, upload: Upload) -> None:
    """Before the upload has a name in ``input/``: note its key for the claim, by the file's inode
    (:func:`inbox.uploader_file`), and add it to the key's list."""
    write_json(inbox.uploader_file(data_root, upload.inode),
               {"upload_id": upload.id, "key_id": upload.key_id, "size": upload.size, "sha256": upload.sha256})
    try:
        _build_key_lists(data_root)  # on a new data root, at its first upload: there is nothing to read then
        with _key_lists(data_root, exclusive=False):  # appends go side by side; only a build waits for them
            fd = os.open(key_list(data_root, upload.key_id), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, f"{upload.id}\n".encode())
            finally:
                os.close(fd)
    except BaseException:
        _unregister(data_root, upload)
        raise


def _unregister(data_root: Path, upload: Upload) -> None:
    """An upload that did not make it into ``input/``: no note left for a later file of its inode
    (its id in the key's list has no record, and is skipped)."""
    inbox.uploader_file(data_root, upload.inode).unlink(missing_ok=True)


def _key_ids(data_root: Path, key_id: str) -> list[str]:
    _build_key_lists(data_root)
    try:
        text = key_list(data_root, key_id).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return list(dict.fromkeys(i for i in text.split() if ID_RE.fullmatch(i)))


def _build_key_lists(data_root: Path) -> None:
    """Once per data root: the lists of the uploads recorded before there were lists (every record is
    read this one time), ahead of what was appended since."""
    built = Path(data_root) / "api" / "by-key" / KEY_LISTS_BUILT
    if built.exists():
        return
    with _key_lists(data_root, exclusive=True):
        if built.exists():  # another process built them meanwhile
            return
        by_key: dict[str, list[tuple[str, str]]] = {}
        for path in lectures_dir(data_root).glob("*.json"):
            upload = load(data_root, path.stem)
            if upload is not None and KEY_ID_RE.fullmatch(upload.key_id):
                by_key.setdefault(upload.key_id, []).append((upload.created, upload.id))
        for key_id, found in by_key.items():
            path = key_list(data_root, key_id)
            since = path.read_text(encoding="utf-8").split() if path.exists() else []
            ids = dict.fromkeys([i for _, i in sorted(found)] + since)
            write_text(path, "".join(f"{i}\n" for i in ids))
        write_text(built, "every upload recorded before the lists existed is listed\n")
        log.info("listed the uploads of %d keys in %s", len(by_key), built.parent)


@contextlib.contextmanager
def _key_lists(data_root: Path, exclusive: bool) -> Iterator[None]:
    """An flock on the lists' folder: shared to append, exclusive to build."""
    folder = Path(data_root) / "api" / "by-key"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


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
    other way (an error, a client that went away, :class:`TooLarge`, :class:`NoSpace`) removes everything of it.

    ``min_free_bytes``: the disk of ``input/`` keeps this much free, checked before the first byte
    (with ``expected_size`` more, the size the client announced) and before each write. The temp file
    is flocked while it is written: :func:`sweep_temps` (in any process) never takes an upload in flight.
    """

    def __init__(self, data_root: Path, filename: str, key_id: str, max_bytes: int, *,
                 min_free_bytes: int = 0, expected_size: int = 0) -> None:
        self.data_root, self.key_id, self.max_bytes = Path(data_root), key_id, max_bytes
        self.min_free_bytes = min_free_bytes
        self.original_name = printable(filename or "")
        self.input_name = clean_name(filename)
        self.id = uuid.uuid4().hex
        self.size = 0
        self._hash = hashlib.sha256()
        folder = self.data_root / "input"
        folder.mkdir(parents=True, exist_ok=True)
        check_space(folder, min_free_bytes, expected_size)
        self.tmp = folder / f"{TEMP_PREFIX}{self.id}{TEMP_SUFFIX}"
        self._fd: int | None = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # a new file: nobody else holds it

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
        check_space(self.tmp.parent, self.min_free_bytes, len(chunk))  # others fill the disk too
        self._hash.update(chunk)
        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(f"the disk of {self.tmp.parent} is full") from exc
            raise

    def commit(self, callback_url: str | None = None) -> Upload:
        """Make the upload a file of ``input/`` (a new name, never one that exists) and record it."""
        if self._fd is None:
            raise RuntimeError("this upload is closed")
        os.fsync(self._fd)  # the bytes are on disk before the watch folder can see a name
        st = os.fstat(self._fd)
        upload = Upload(self.id, self.key_id, self.original_name, "", self.size, self._hash.hexdigest(),
                        datetime.now(timezone.utc).isoformat(timespec="seconds"), (st.st_dev, st.st_ino),
                        callback_url)
        _register(self.data_root, upload)  # before it has a name in input/: a claim may take it at once
        try:
            upload.input_name = _link_unique(self.tmp, self.tmp.parent, self.input_name)
        except BaseException:
            _unregister(self.data_root, upload)
            raise
        try:
            save(self.data_root, upload)
        except BaseException:
            (self.tmp.parent / upload.input_name).unlink(missing_ok=True)  # unrecorded: not ours to leave
            _unregister(self.data_root, upload)
            raise
        _fsync_dir(self.tmp.parent)
        self.tmp.unlink()
        self._close()  # and its lock only now: the temp name is gone, no sweep can mistake it for a leftover
        return upload

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged process may still write on the disk of ``folder``."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def check_space(folder: Path, min_free_bytes: int, more: int = 0) -> None:
    """Raise :class:`NoSpace` when writing ``more`` bytes would leave less than ``min_free_bytes`` free."""
    if min_free_bytes > 0 and free_bytes(folder) - more < min_free_bytes:
        raise NoSpace(f"the disk of {folder} keeps {min_free_bytes} bytes free")


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
    """Remove half uploads nobody writes any more: temp files in ``input/`` (hidden, so no one else
    will) older than ``older_than`` seconds whose writer is gone. An upload in flight, in any process,
    holds an flock on its file (:class:`Incoming`), however slowly its bytes come."""
    removed = []
    folder = Path(data_root) / "input"
    for path in folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}") if folder.is_dir() else []:
        try:
            if time.time() - path.lstat().st_mtime > older_than and not _in_flight(path):
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


def _in_flight(path: Path) -> bool:
    """Whether a writer holds the temp file's lock (a writer that died let go of it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False  # a link, or gone: no upload writes there
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


# --- what a key may use -----------------------------------------------------------------------

class Slot:
    """One of a key's upload slots, held until :meth:`release` (or the process ends: the kernel drops
    the flock). Slots are files ``api/slots/<key>.<n>``, so every worker process of the server sees them."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def take_slot(data_root: Path, key_id: str, limit: int) -> Slot:
    """A free one of the key's ``limit`` slots (0: no limit), or :class:`Busy`."""
    if limit <= 0:
        return Slot(None)
    folder = Path(data_root) / "api" / "slots"
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(limit):
        fd = os.open(folder / f"{key_id}.{n}", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return Slot(fd)
    raise Busy(f"{limit} uploads of this key are in flight")


def usage_file(data_root: Path, key_id: str) -> Path:
    return Path(data_root) / "api" / "usage" / f"{key_id}.json"


def bytes_today(data_root: Path, key_id: str, now: float | None = None) -> int:
    """Bytes the key sent in the last 24 hours (by the hour), kept or not."""
    with _usage(data_root, key_id, now) as hours:
        return sum(hours.values())


def count_bytes(data_root: Path, key_id: str, received: int, now: float | None = None) -> None:
    """Add ``received`` bytes to the key's hour. Every byte counts, kept or not: uploads cut off
    (or refused) on purpose cost the disk and the network as much."""
    with _usage(data_root, key_id, now) as hours:
        hour = str(int((time.time() if now is None else now) // 3600))
        hours[hour] = hours.get(hour, 0) + received


@contextlib.contextmanager
def _usage(data_root: Path, key_id: str, now: float | None) -> Iterator[dict[str, int]]:
    """The key's bytes by hour within the last 24 (a small JSON file), flocked; written back as changed."""
    path = usage_file(data_root, key_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    oldest = int((time.time() if now is None else now) // 3600) - 23
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "r+", encoding="utf-8") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        text = file.read()
        try:
            stored = {str(int(h)): int(n) for h, n in (json.loads(text) if text else {}).items()}
        except (ValueError, TypeError, AttributeError):  # a crash between truncate and write
            log.warning("%s is damaged; counting this key's bytes afresh", path)
            stored = {}
        hours = {h: n for h, n in stored.items() if int(h) >= oldest}
        yield hours
        if hours != stored:
            file.seek(0)
            file.truncate()
            file.write(json.dumps(hours))


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
    upload = load(data_root, upload_id)
    if upload is None:
        raise FileNotFoundError(f"no upload {upload_id}")
    return states(data_root, [upload])[0]


def states(data_root: Path, found: list[Upload]) -> list[dict[str, Any]]:
    """The state of each upload, as :func:`state` tells it, at a cost that does not grow with ``output/``
    and ``failed/``: where a finished upload went is one note (:func:`inbox.outcome_file`), and the
    videos in ``processing/`` are read once for them all."""
    data_root = Path(data_root)
    in_flight = _InFlight(data_root)
    return [_state_of(data_root, upload, in_flight) for upload in found]


def _state_of(data_root: Path, upload: Upload, in_flight: _InFlight) -> dict[str, Any]:
    base = {"id": upload.id, "name": upload.original_name, "input_name": upload.input_name,
            "size": upload.size, "sha256": upload.sha256, "created": upload.created}
    found = (_waiting(data_root, upload) or _noted(data_root, upload) or _processing(in_flight, upload)
             or _found_by_name(data_root, upload))
    return {**base, **(found or {"state": "unknown"})}


def _same_file(path: Path, upload: Upload) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) == tuple(upload.inode)


def _waiting(data_root: Path, upload: Upload) -> dict[str, Any] | None:
    return {"state": "waiting"} if _same_file(data_root / "input" / upload.input_name, upload) else None


class _InFlight:
    """The videos in ``processing/`` and their claims' records, read once however many uploads are looked up."""

    def __init__(self, data_root: Path) -> None:
        self.data_root = data_root

    @functools.cached_property
    def claims(self) -> dict[tuple[Any, ...], tuple[Path, dict[str, Any]]]:
        """Each video by its upload's id; one claimed before ids were noted (or a drop) by its name and
        sha256, and by the inode of its file (a claim whose record is not written yet has only that)."""
        found: dict[tuple[Any, ...], tuple[Path, dict[str, Any]]] = {}
        processing = self.data_root / "processing"
        folders = [v for c in processing.iterdir() if is_real_dir(c) for v in c.iterdir() if is_real_dir(v)] \
            if processing.is_dir() else []
        for video_dir in sorted(folders):
            try:
                record = read_json(inbox.record_path(video_dir))
            except (OSError, ValueError):
                record = {}
            record = record if isinstance(record, dict) else {}
            if isinstance(record.get("upload_id"), str):
                found.setdefault(("id", record["upload_id"]), (video_dir, record))
                continue  # an upload's video: only its own id finds it
            found.setdefault(("name", record.get("name"), record.get("sha256")), (video_dir, record))
            source = video_dir / "source"
            for path in source.iterdir() if is_real_dir(source) else []:
                with contextlib.suppress(OSError):
                    st = path.lstat()
                    if stat.S_ISREG(st.st_mode):
                        found.setdefault(("inode", st.st_dev, st.st_ino), (video_dir, record))
        return found

    def find(self, upload: Upload) -> tuple[Path, dict[str, Any]] | None:
        claims = self.claims
        return (claims.get(("id", upload.id)) or claims.get(("name", upload.input_name, upload.sha256))
                or claims.get(("inode", *upload.inode)))


def _processing(in_flight: _InFlight, upload: Upload) -> dict[str, Any] | None:
    found = in_flight.find(upload)
    return {"state": "processing", **_progress(*found)} if found else None


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


def _noted(data_root: Path, upload: Upload) -> dict[str, Any] | None:
    """Where the pipeline noted the upload went (:func:`inbox.outcome_file`), while that folder is there."""
    try:
        outcome = read_json(inbox.outcome_file(data_root, upload.id))
    except (OSError, ValueError):
        return None
    if not isinstance(outcome, dict):
        return None
    if outcome.get("state") == "published" and (folder := _folder(data_root, "output", outcome.get("output"))):
        return _published_in(folder)
    if outcome.get("state") == "quarantined" and (folder := _folder(data_root, "failed", outcome.get("failed"))):
        return {"state": "quarantined", "failed": f"failed/{folder.name}",
                **{k: outcome.get(k) for k in ("reason", "stage", "hint")}}
    return None


def _folder(data_root: Path, parent: str, where: Any) -> Path | None:
    """``data_root/<parent>/<name>`` for ``where`` = ``"<parent>/<name>"``, if it is a real folder."""
    head, _, name = where.partition("/") if isinstance(where, str) else ("", "", "")
    if head != parent or name in ("", ".", "..") or "/" in name or "\0" in name:
        return None
    folder = data_root / parent / name
    return folder if is_real_dir(folder) else None


def _published_in(folder: Path) -> dict[str, Any]:
    files = sorted(p.name for p in folder.iterdir() if stat.S_ISREG(lstat_mode(p)))
    return {"state": "published", "output": f"output/{folder.name}", "files": files,
            "downloads": sorted(ALLOWED_FILES & set(files))}


def _output_folder(data_root: Path, upload: Upload) -> Path | None:
    """The ``output/`` folder of what this upload became: the one the pipeline noted, else the one its
    name leads to. Only this key's: the same bytes from another key or from the watch folder were
    processed into a folder of their own (see :func:`inbox.claim`), never linked to this one."""
    found = _noted(data_root, upload) or _found_by_name(data_root, upload)
    return _folder(data_root, "output", found.get("output")) if found else None


MAX_PROBES = 20  # "<name>", "<name> (2)", ...: folders looked at for an upload without a note


def _found_by_name(data_root: Path, upload: Upload) -> dict[str, Any] | None:
    """For an upload the pipeline left no note of (finished before there were notes, or the note could not
    be written): the folders finalize names after the file, ``<name>``, ``<name> (2)``, ... in ``output/``
    and ``failed/``, a few reads however many others there are. What it finds is noted for next time."""
    stem = Path(upload.input_name).stem
    found: dict[str, Any] | None = None
    if folder := _probe(data_root / "output", [inbox.display_name(stem)], lambda f: _manifest_of(f, upload)):
        found = _published_in(folder)
    else:
        names = list(dict.fromkeys([inbox.display_name(stem), inbox.display_name(inbox.slug(stem))]))
        if folder := _probe(data_root / "failed", names, lambda f: _error_of(f, upload) is not None):
            error = _error_of(folder, upload) or {}
            found = {"state": "quarantined", "failed": f"failed/{folder.name}",
                     **{k: error.get(k) for k in ("reason", "stage", "hint")}}
    if found is not None:
        note = {k: v for k, v in found.items() if k in ("state", "output", "failed", "reason", "stage", "hint")}
        with contextlib.suppress(OSError, ValueError):
            write_json(inbox.outcome_file(data_root, upload.id), note)
    return found


def _probe(parent: Path, names: list[str], ours: Callable[[Path], bool]) -> Path | None:
    """The first folder ``<name>``, ``<name> (2)``, ... (as :func:`inbox.unique_dir` names them) that is ``ours``."""
    for name in names:
        for n in range(1, MAX_PROBES + 1):
            folder = parent / (name if n == 1 else f"{name} ({n})")
            if not is_real_dir(folder):
                if n > 1:
                    break
                continue  # "<name>" may have been removed while "<name> (2)" stays
            if ours(folder):
                return folder
    return None


def _made_from(facts: Any, upload: Upload, name_key: str) -> bool:
    """Whether a manifest's ``video`` (or an ``error.json``) tells of this upload: by its id; if written
    before ids were noted, by its name and bytes, sent by no other key, and claimed after it arrived."""
    if not isinstance(facts, dict):
        return False
    if "upload_id" in facts:
        return bool(facts["upload_id"] == upload.id)
    return (facts.get("uploaded_by") in (None, upload.key_id) and facts.get(name_key) == upload.input_name
            and facts.get("sha256") == upload.sha256 and str(facts.get("claimed_at") or "") >= upload.created)


def _manifest_of(folder: Path, upload: Upload) -> bool:
    try:
        return _made_from(read_json(folder / "manifest.json").get("video"), upload, "name")
    except (OSError, ValueError, AttributeError):
        return False


def _error_of(folder: Path, upload: Upload) -> dict[str, Any] | None:
    """The folder's ``error.json`` if it tells of this upload; one written at claim time (no sha256) is
    known by the inode of the file beside it."""
    try:
        error = read_json(folder / "error.json")
    except (OSError, ValueError):
        error = {}
    error = error if isinstance(error, dict) else {}
    if _made_from(error, upload, "file") or any(
            _same_file(p, upload) for p in (folder / upload.input_name, folder / "source" / upload.input_name)):
        return error
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


