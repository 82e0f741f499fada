"""Claim new files from ``input/`` and finalize them into ``output/`` or ``failed/``.

These two steps run in the Airflow worker itself (they only move files), so this
module is stdlib only. The rules that keep users' files safe:

* A file is claimed only when it looks complete: not hidden, no download/temp
  suffix, and its size and mtime unchanged for ``stable_seconds``. Files in a dropped
  folder are claimed as ``<folder> - <file>``; symlinks and special files are never
  followed: they go to ``failed/`` as they are (see :func:`scan`).
* Claiming is one ``os.rename`` into ``processing/``, so two schedulers racing
  for a file cannot both get it, and a file is processed once.
* The original bytes are never modified or deleted: they end in ``processed/``
  after success, or in ``failed/<name>/`` next to an ``error.json``.
* A file whose bytes were published already for the same sender (its sha256 is the input
  hash in some ``output/*/manifest.json`` whose ``uploaded_by`` is the same API key, or none
  for the watch folder) is not processed again: it is archived in ``processed/`` and nothing
  new is made, unless ``force`` asks for it (then ``output/<name> (2)``). The same bytes from
  another sender are processed into their own folder: sending bytes never reveals another's notes.
* An upload of the API (:mod:`konspekt.uploads`) leaves a note of its key by the file's inode
  (:func:`uploader_file`); the claim moves it into the claim's record, and finalize notes where
  the upload went (:func:`outcome_file`), so the API finds it in one read.
* Each claimed video has an owner, the Airflow run that processes it; runs overlap, and
  claims are serialized by one lock (:func:`claim`).
* Nothing is lost when a run dies: see :func:`orphans` for how a later claim adopts
  what an ended run left in ``processing/``, and :func:`finalize` for a failure outside
  the file (it is held and retried, never quarantined as "bad").
* Stage containers can write their video's folder, so nothing there is trusted here:
  the claim's facts live in a record beside it (:func:`record_path`).
* No file's trouble stops the others: claim and adoption never raise for one file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from konspekt import __version__, registry
from konspekt.contracts import STATUS_BAD_INPUT, STATUS_ERROR, STATUS_OK, StageResult
from konspekt.layout import VIDEO_META, VideoDir, is_real_dir, lstat_mode, printable, read_json, sha256, write_json

TEMP_SUFFIXES = {".part", ".partial", ".crdownload", ".download", ".tmp", ".temp", ".filepart", ".opdownload", ".!qb"}
# A video adopted this often and still not finished goes to failed/ instead of round again.
MAX_ADOPTIONS = 3
MAX_DEPTH = 3  # folders dropped into input/: videos this deep are taken, deeper ones are reported
NAME_BYTES = 255  # the file system's limit for one name
UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")  # konspekt.uploads' ids
FOLDER_NAME_BYTES = 200  # output/<name>: room left for " (12)"
RESULT_BYTES = 5 << 20  # a stage result larger than this is not read (stage containers write them)
BAD_FILE_HINT = "fix the file and drop it into input/ again"

log = logging.getLogger(__name__)

# Who processes a claim: owner(video_dir, attempt) names the run (attempt 0 for a new claim, n for
# its n-th adoption); is_active(owner) says whether that run may still finish it.
Owner = Callable[[Path, int], str]
IsActive = Callable[[str], bool]


def in_use(owner: str) -> bool:
    """Without a way to ask the orchestrator, an owned claim counts as in use: never taken from a live run."""
    return True


def is_ignored(name: str) -> bool:
    """Hidden, editor lock and download temp names: a downloader or editor is still at work."""
    return name.startswith((".", "~")) or Path(name).suffix.lower() in TEMP_SUFFIXES


@dataclass
class Entry:
    """Something in ``input/`` that claim takes: a file to process, or an entry to report (``problem``)."""

    path: Path
    name: str  # its name as claimed: for a file in a dropped folder, "<folder> - <file>"
    problem: str | None = None


def scan(input_dir: Path) -> list[Entry]:
    """What claim would take from ``input_dir``, never following a symlink.

    Files in dropped folders are taken too, named after their folders ("course - week 1.mp4").
    Symlinks, devices, pipes and folders nested deeper than :data:`MAX_DEPTH` are entries to
    report: claim moves them to ``failed/`` with the reason, so they never wake the DAG again.
    """
    found: list[Entry] = []

    def walk(folder: Path, prefix: tuple[str, ...]) -> None:
        try:
            children = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:  # a folder we may not read: reported by its parent, never fatal
            log.error("%s cannot be read (%s); left where it is", printable(str(folder)), exc)
            return
        for child in children:
            if is_ignored(child.name):
                continue
            path, name = Path(child.path), " - ".join((*prefix, child.name))
            if child.is_symlink():
                found.append(Entry(path, name, "is a symbolic link; konspekt takes only real files"))
            elif child.is_dir(follow_symlinks=False):
                if len(prefix) + 1 >= MAX_DEPTH:
                    found.append(Entry(path, name, f"is a folder nested more than {MAX_DEPTH - 1} deep; "
                                                   "drop the videos themselves or their folder"))
                else:
                    walk(path, (*prefix, child.name))
            elif child.is_file(follow_symlinks=False):
                found.append(Entry(path, name))
            else:
                found.append(Entry(path, name, "is not a regular file (a pipe, socket or device)"))

    if input_dir.is_dir():
        walk(input_dir, ())
    return found


def ready_entries(input_dir: Path, stable_seconds: float = 5.0, wait_seconds: float = 0.0,
                  poll_seconds: float = 1.0) -> list[Entry]:
    """The entries of :func:`scan` whose size and mtime have not changed for ``stable_seconds``.

    An entry last modified long enough ago is ready at once; a fresher one is watched.
    Waits up to ``wait_seconds`` for at least one entry to become ready.
    """
    deadline = time.monotonic() + wait_seconds
    first_seen: dict[Path, tuple[tuple[int, int], float]] = {}
    while True:
        now, wall = time.monotonic(), time.time()
        ready, sleep = [], poll_seconds
        for entry in scan(input_dir):
            try:
                st = entry.path.lstat()
            except FileNotFoundError:  # taken or deleted meanwhile
                continue
            sig = (st.st_size, st.st_mtime_ns)
            seen = first_seen.get(entry.path)
            if seen is None or seen[0] != sig:
                first_seen[entry.path] = seen = (sig, now)
            unchanged_for = max(wall - st.st_mtime, now - seen[1])
            if unchanged_for >= stable_seconds or (entry.problem and not stat.S_ISDIR(st.st_mode)):
                # a link or a pipe is not copied: nothing to wait for
                ready.append(entry)
            else:  # look again the moment it could be ready, not up to a poll later
                sleep = min(sleep, stable_seconds - unchanged_for)
        if ready or now >= deadline:
            return ready
        time.sleep(max(min(sleep, deadline - now), 0.05))


def has_work(data_root: Path, stable_seconds: float = 5.0) -> bool:
    """Whether a claim now would take something: the sensor's question, so it never wakes for nothing.

    The sensor cannot ask Airflow whether a claim's run still lives, so owned claims do not wake
    it (they would, over and over, while their runs work); see :func:`orphans`.
    """
    return bool(due_orphans(data_root) or ready_entries(Path(data_root) / "input", stable_seconds))


def slug(text: str, limit: int = 80) -> str:
    """A folder name that any tool can handle; unicode letters (Cyrillic too) are kept."""
    return re.sub(r"[^\w.-]+", "_", printable(text)).strip("._-")[:limit] or "video"


def display_name(text: str) -> str:
    """The user's own name for the output folder, minus what a folder name cannot hold."""
    name = re.sub(r"[/\\\x00-\x1f]+", "_", printable(text)).lstrip(".").strip()
    return fit_bytes(name, FOLDER_NAME_BYTES).strip() or "video"


def fit_bytes(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, at a character boundary."""
    return text.encode("utf-8", "surrogateescape")[:limit].decode("utf-8", "ignore")


def fit_name(name: str, limit: int = NAME_BYTES) -> str:
    """A file name of at most ``limit`` bytes that keeps its extension."""
    raw = os.fsencode(name)
    if len(raw) <= limit:
        return name
    stem, suffix = os.path.splitext(name)
    return fit_bytes(stem, limit - len(os.fsencode(suffix))) + suffix


def unique_dir(parent: Path, name: str) -> Path:
    candidate, n = parent / name, 2
    while candidate.exists():
        candidate, n = parent / f"{name} ({n})", n + 1
    return candidate


@dataclass
class Claim:
    video_dir: Path
    name: str
    size: int
    sha256: str
    claimed_at: str
    adopted: bool = False  # left in processing/ by a run that died, taken over by this one
    owner: str | None = None  # the run that processes it
    uploaded_by: str | None = None  # the API key that sent it; None: dropped into the watch folder
    upload_id: str | None = None

    @property
    def folder(self) -> str:
        """``<claim>/<video>``: where it lies under ``processing/``, for :func:`owned_claim`."""
        return f"{self.video_dir.parent.name}/{self.video_dir.name}"


def claim(data_root: Path, *, stable_seconds: float = 5.0, wait_seconds: float = 0.0,
          max_files: int | None = None, force: bool = False, max_bytes: int | None = None,
          owner: Owner | None = None, is_active: IsActive = in_use) -> list[Claim]:
    """What to process now: the videos ended runs left in ``processing/`` (see :func:`orphans`),
    then the ready files of ``input/``, each moved into its own ``processing/<claim>/<video>/``
    and owned by the run ``owner`` names for it.

    A new file whose bytes are already published is archived and left out, unless ``force``.
    Entries that cannot be processed (symlinks, pipes, a file over ``max_bytes``) go to ``failed/``.
    Never raises for one file's sake: a file that cannot be claimed is reported and left out.
    Claims are serialized by a lock in ``processing/``: runs overlap, and one must never adopt
    a folder another is still claiming. Only waiting for a file to settle happens outside it.
    """
    data_root = Path(data_root)
    with claim_lock(data_root):
        claims = adopt_orphans(data_root, owner, is_active)
    # Waits for a file still being copied without holding the lock; another claim may take an entry
    # meanwhile, and then its rename fails here (see _claim_one).
    entries = ready_entries(data_root / "input", stable_seconds, 0.0 if claims else wait_seconds)[:max_files]
    with claim_lock(data_root):
        claim_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        done = published(data_root) if entries and not force else {}
        for entry in entries:
            try:
                item = _claim_one(data_root, claim_id, entry, done, max_bytes, owner)
            except Exception:  # noqa: BLE001 - one file's trouble never stops the others
                log.exception("%s could not be claimed; it is left in input/", printable(entry.name))
                continue
            if item is not None:
                claims.append(item)
        _remove_emptied_folders(data_root / "input", entries, stable_seconds)
        _remove_if_empty(data_root / "processing" / claim_id)
    return claims


@contextmanager
def claim_lock(data_root: Path) -> Iterator[None]:
    """One claim or adoption at a time on this data root: an flock on the ``processing/`` folder itself
    (no lock file for a user to wonder about), released even when the process dies."""
    processing = Path(data_root) / "processing"
    processing.mkdir(parents=True, exist_ok=True)
    fd = os.open(processing, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def owned_claim(data_root: Path, folder: str, owner: str) -> Claim:
    """The claim at ``processing/<folder>`` that ``owner`` was started for (``folder`` is
    ``<claim>/<video>``, as :attr:`Claim.folder` gives it). Raises ValueError for anything else:
    the folder comes from a run's configuration, which anyone allowed to trigger a run can write.
    """
    parts = folder.split("/") if isinstance(folder, str) else []
    if len(parts) != 2 or not all(_one_component(p) and not p.startswith(".") for p in parts):
        raise ValueError(f"{printable(str(folder))!r} is not a claimed video (<claim>/<video> in processing/)")
    video_dir = Path(data_root) / "processing" / parts[0] / parts[1]
    if not (is_real_dir(video_dir.parent) and is_real_dir(video_dir)):
        raise ValueError(f"processing/{printable(folder)} does not exist: finalized already, or never claimed")
    record = _record(video_dir)
    if record.get("owner") != owner:
        raise ValueError(f"processing/{printable(folder)} belongs to run {record.get('owner')!r}, not to {owner!r}")
    return Claim(video_dir, record["name"], record["size"], record["sha256"], record["claimed_at"],
                 adopted=bool(record.get("adopted")), owner=owner, uploaded_by=record.get("uploaded_by"),
                 upload_id=record.get("upload_id"))


def _claim_one(data_root: Path, claim_id: str, entry: Entry, done: dict[tuple[str | None, str], str],
               max_bytes: int | None, owner: Owner | None) -> Claim | None:
    name = fit_name(entry.name)
    if entry.problem is not None:
        _reject(data_root, entry.path, name, entry.problem)
        return None
    video_dir = _new_video_dir(data_root / "processing" / claim_id, slug(Path(name).stem))
    source = video_dir / "source" / name
    try:
        os.rename(entry.path, source)
    except FileNotFoundError:  # another run claimed it first
        shutil.rmtree(video_dir)
        return None
    if not stat.S_ISREG(lstat_mode(source)):  # swapped for a symlink (or worse) after the listing
        _quarantine(data_root, video_dir, name, "was replaced by a symbolic link or special file while it was "
                                                "being claimed; konspekt takes only real files")
        return None
    size = source.lstat().st_size
    if max_bytes and size > max_bytes:
        _quarantine(data_root, video_dir, name, f"is {size / 1e9:.1f} GB, over the limit of {max_bytes / 1e9:.1f} GB "
                                                "(KONSPEKT_MAX_FILE_GB)")
        return None
    item = _describe(video_dir, name, owner(video_dir, 0) if owner else None)
    earlier = done.get((item.uploaded_by, item.sha256))  # only what the same sender published
    if earlier is not None:
        _move(source, data_root / "processed" / claim_id / name)
        _discard(video_dir)
        _tell_upload(data_root, item.upload_id, {"state": "published", "output": earlier})
        log.warning("%s: already processed as %s; set force=true to redo", printable(name), earlier)
        return None
    return item


def _new_video_dir(claim_dir: Path, folder: str) -> Path:
    """``claim_dir/folder/source/``, or ``folder-2``, ... when names of one drop slug alike."""
    candidate, n = claim_dir / folder, 2
    while True:
        try:
            (candidate / "source").mkdir(parents=True)
            return candidate
        except FileExistsError:
            candidate, n = claim_dir / f"{folder}-{n}", n + 1


def _reject(data_root: Path, path: Path, name: str, reason: str) -> dict:
    """Move an entry claim does not process (the entry itself, never what a link points to) to failed/.
    Returns the outcome as an upload's note tells it (:func:`outcome_file`)."""
    dest = unique_dir(data_root / "failed", display_name(Path(name).stem))
    dest.mkdir(parents=True)
    os.rename(path, dest / name)
    error = {"file": name, "stage": "claim", "reason": f"{printable(name)} {reason}", "hint": BAD_FILE_HINT}
    _write_error(dest, error)
    log.error("%s %s; moved to %s", printable(name), reason, dest.relative_to(data_root))
    return {"state": "quarantined", "failed": f"failed/{dest.name}",
            **{k: printable(error[k]) for k in ("stage", "reason", "hint")}}


def _quarantine(data_root: Path, video_dir: Path, name: str, reason: str) -> None:
    """A claimed entry that turned out unprocessable: to failed/ as it is, its claim folder removed."""
    source = video_dir / "source" / name
    uploader = _uploader(data_root, source)  # not hashed (it may be huge): its size must match
    outcome = _reject(data_root, source, name, reason)
    _discard(video_dir)
    if uploader:
        _tell_upload(data_root, uploader.upload_id, outcome)
        uploader.forget()


def _describe(video_dir: Path, name: str, owner: str | None = None) -> Claim:
    """Hash the claimed file; write the claim's record (Airflow's own) and the folder's ``video.json`` (the stages').
    The record also says which API key sent the file, if one did (the stages need not know)."""
    source = video_dir / "source" / name
    item = Claim(video_dir, name, source.lstat().st_size, sha256(source),
                 datetime.now(timezone.utc).isoformat(timespec="seconds"), owner=owner)
    facts = {"name": name, "size": item.size, "sha256": item.sha256, "claimed_at": item.claimed_at}
    # a claimed video lies at <data_root>/processing/<claim>/<video>
    uploader = _uploader(video_dir.parents[2], source, item.sha256) if len(video_dir.parents) > 2 else None
    sender = {"uploaded_by": uploader.key_id, "upload_id": uploader.upload_id} if uploader else {}
    write_json(record_path(video_dir), {**facts, **sender, **({"owner": owner} if owner else {})})
    write_json(video_dir / VIDEO_META, {**facts, "source": f"source/{name}"})
    if uploader:
        item.uploaded_by, item.upload_id = uploader.key_id, uploader.upload_id
        uploader.forget()  # the record says it now
    return item


# --- uploads of the API (konspekt.uploads writes the notes of uploaders, the pipeline the outcomes) -----

def uploader_file(data_root: Path, inode: tuple[int, int]) -> Path:
    """The API's note of which key sent the file with this inode (``(st_dev, st_ino)``), written before
    the file appears in ``input/``; every rename keeps the inode, so the claim finds it."""
    return Path(data_root) / "api" / "uploaders" / f"{int(inode[0])}-{int(inode[1])}.json"


def outcome_file(data_root: Path, upload_id: str) -> Path:
    """What became of an upload (published where, or quarantined why), noted by the pipeline when it
    is done with the file: the API reads this one file, not every manifest in ``output/``."""
    if not UPLOAD_ID_RE.fullmatch(upload_id):
        raise ValueError(f"{upload_id!r} is not an upload id")
    return Path(data_root) / "api" / "outcomes" / f"{upload_id}.json"


@dataclass
class Uploader:
    upload_id: str
    key_id: str
    note: Path  # the API's note (:func:`uploader_file`)

    def forget(self) -> None:
        """Remove the note once the claim's record holds it: an inode number is reused after a delete."""
        try:
            self.note.unlink(missing_ok=True)
        except OSError:
            log.warning("%s could not be removed", self.note)


def _uploader(data_root: Path, source: Path, digest: str | None = None) -> Uploader | None:
    """Which upload of the API ``source`` is, or None (a watch-folder drop). The note counts only for
    the file it describes, the same size and (given ``digest``) the same sha256: an inode number is
    reused once a file is deleted, and a stale note must never make a drop count as a key's."""
    try:
        st = source.lstat()
        note_path = uploader_file(data_root, (st.st_dev, st.st_ino))
        note = read_json(note_path)
    except (OSError, ValueError):
        return None
    if not isinstance(note, dict):
        return None
    upload_id, key_id = note.get("upload_id"), note.get("key_id")
    if not (isinstance(upload_id, str) and UPLOAD_ID_RE.fullmatch(upload_id) and isinstance(key_id, str) and key_id):
        return None
    if note.get("size") != st.st_size or (digest is not None and note.get("sha256") != digest):
        return None
    return Uploader(upload_id, key_id, note_path)


def _tell_upload(data_root: Path, upload_id: str | None, outcome: dict) -> None:
    """Note what became of an upload (:func:`outcome_file`). Never fails the pipeline: without the
    note, the API looks for the result by the file's name."""
    if upload_id is None:
        return
    try:
        write_json(outcome_file(data_root, upload_id),
                   {**outcome, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    except Exception:  # noqa: BLE001 - the video is done; only the API's shortcut is missing
        log.exception("could not note the outcome of upload %s; the API will look for it by name", upload_id)


def _upload_id(video_dir: Path) -> str | None:
    try:
        upload_id = read_json(record_path(video_dir)).get("upload_id")
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return upload_id if isinstance(upload_id, str) else None


def record_path(video_dir: Path) -> Path:
    """The claim's facts as Airflow wrote them: beside the video's folder, where no stage container can write.

    Stage containers mount only their video's folder, and ``video.json`` inside it is theirs to
    read (and, if one were compromised, to change): finalize and adoption never trust it.
    """
    return video_dir.parent / f".{video_dir.name}.json"


def claimed_name(video_dir: Path) -> str | None:
    """The file name the user gave the video claimed into ``video_dir``, from the claim's record."""
    record = read_json(record_path(video_dir))
    name = record.get("name") if isinstance(record, dict) else None
    return name if isinstance(name, str) and _one_component(name) else None


def _record(video_dir: Path) -> dict:
    """The trusted facts of a claim; rebuilt from ``source/`` when a claim died before writing them."""
    path = record_path(video_dir)
    if path.is_file():
        record = read_json(path)
        name = record.get("name")
        if not isinstance(name, str) or not _one_component(name):
            raise ValueError(f"{path} names no file")
        return record
    sources = _sources(video_dir)
    if len(sources) != 1:
        raise FileNotFoundError(f"{video_dir} holds {len(sources)} files in source/, and no claim record")
    _describe(video_dir, sources[0].name)
    return read_json(path)


def _sources(video_dir: Path) -> list[Path]:
    folder = video_dir / "source"
    return sorted(p for p in folder.iterdir() if stat.S_ISREG(lstat_mode(p))) if folder.is_dir() else []


def _one_component(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def published(data_root: Path) -> dict[tuple[str | None, str], str]:
    """(who sent it, its input sha256) -> the output folder (``output/<name>``), for every published video.
    Who: the API key that uploaded it (the manifest's ``uploaded_by``), None for a watch-folder drop."""
    found: dict[tuple[str | None, str], str] = {}
    for manifest in sorted((Path(data_root) / "output").glob("*/manifest.json")):
        try:
            video = read_json(manifest)["video"]
            digest, sender = video["sha256"], video.get("uploaded_by")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not one of ours, or damaged: never a reason to skip a file
        if isinstance(digest, str):
            found.setdefault((sender if isinstance(sender, str) else None, digest), f"output/{manifest.parent.name}")
    return found


def orphans(data_root: Path, is_active: IsActive = in_use) -> list[Path]:
    """Video folders in ``processing/`` that no live run will finish.

    The rule: **a folder is an orphan unless its owner is active** (``is_active(owner)``).
    Every claim names the run that processes it (its owner, in the claim's record), and runs
    overlap, so a folder of a queued or running run is that run's. A folder is left to others
    when its run ended without finalizing it (the run was marked failed, its trigger never
    created it), when finalize held it after a failure outside the file (:func:`finalize`
    drops the owner then), or when a claim died before naming one. Nothing else will ever
    finish those. Without ``is_active`` (the sensor's view) every owned folder counts as in use.

    Adopting one is safe even if a stage process of the ended run still runs in it:
    the stage's lock makes the new try wait for it (see :mod:`konspekt.stage`), and
    stages that finished are up to date and skipped, so work resumes where it stopped.
    Adoption runs under :func:`claim_lock`, so a folder being claimed is never taken.
    """
    processing = Path(data_root) / "processing"
    if not processing.is_dir():
        return []
    folders = sorted(v for c in processing.iterdir() if is_real_dir(c) for v in c.iterdir() if is_real_dir(v))
    return [v for v in folders if not ((owner := _owner(v)) and is_active(owner))]


def due_orphans(data_root: Path, is_active: IsActive = in_use) -> list[Path]:
    """The orphans a run should take now: all but those finalize held until a later time."""
    now = time.time()
    return [v for v in orphans(data_root, is_active) if _held_until(v) <= now]


def _owner(video_dir: Path) -> str | None:
    try:
        owner = read_json(record_path(video_dir)).get("owner")
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return owner if isinstance(owner, str) and owner else None


def _held_until(video_dir: Path) -> float:
    try:
        return float(read_json(record_path(video_dir)).get("held", {}).get("until", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0


def adopt_orphans(data_root: Path, owner: Owner | None = None, is_active: IsActive = in_use) -> list[Claim]:
    """Hand the due orphans to the runs ``owner`` names; one adopted :data:`MAX_ADOPTIONS` times is finalized instead.

    An orphan that cannot be read or finalized goes to ``failed/`` once, as it is: it never
    crashes claim, and never stops the new uploads behind it.
    """
    adopted = []
    for video_dir in due_orphans(data_root, is_active):
        try:
            if (item := _adopt(data_root, video_dir, owner)) is not None:
                adopted.append(item)
        except Exception as exc:  # noqa: BLE001
            log.exception("%s cannot be resumed; moving it to failed/ as it is", video_dir)
            _give_up(data_root, video_dir, f"konspekt could not resume it ({type(exc).__name__}: {exc})")
    return adopted


def _adopt(data_root: Path, video_dir: Path, owner: Owner | None) -> Claim | None:
    if not _sources(video_dir) and not record_path(video_dir).is_file():
        if not any(p.is_file() for p in video_dir.rglob("*")):  # claim died before the move: nothing there
            _discard(video_dir)
            return None
    record = _record(video_dir)
    if record.get("adopted", 0) >= MAX_ADOPTIONS:
        outcome = finalize(data_root, video_dir, give_up=True)
        log.error("%s: tried %d times; finalized as %s", printable(record["name"]), record["adopted"],
                  outcome.destination)
        return None
    record["adopted"] = record.get("adopted", 0) + 1
    record.pop("owner", None)
    if owner:
        record["owner"] = owner(video_dir, record["adopted"])
    if record.pop("held", None):
        log.warning("%s: retrying it after a failure outside the file", printable(record["name"]))
    else:
        log.warning("%s: left in %s by a run that ended; resuming it", printable(record["name"]),
                    video_dir.parent.name)
    write_json(record_path(video_dir), record)
    return Claim(video_dir, record["name"], record["size"], record["sha256"], record["claimed_at"], adopted=True,
                 owner=record.get("owner"), uploaded_by=record.get("uploaded_by"), upload_id=record.get("upload_id"))


def _give_up(data_root: Path, video_dir: Path, reason: str) -> None:
    """Last resort for an orphan that cannot be finalized: the whole folder to failed/, with the reason."""
    try:
        upload_id = _upload_id(video_dir)
        dest = unique_dir(data_root / "failed", display_name(video_dir.name))
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(video_dir, dest)
        record_path(video_dir).unlink(missing_ok=True)
        error = {"file": None, "stage": "claim", "reason": reason,
                 "hint": "the original file is in source/; drop it into input/ again"}
        _write_error(dest, {**error, **({"upload_id": upload_id} if upload_id else {})})
        _tell_upload(data_root, upload_id, {"state": "quarantined", "failed": f"failed/{dest.name}",
                                            **{k: printable(str(v)) for k, v in error.items() if v}})
        _remove_if_empty(video_dir.parent)
    except OSError:
        log.exception("%s could not be moved to failed/ either; it is left for a person to look at", video_dir)


@dataclass
class Outcome:
    status: str  # "ok" | "failed" (in failed/) | "held" (kept in processing/ for a later run)
    name: str
    destination: str
    reason: str | None = None
    stage: str | None = None
    hint: str | None = None


def stage_results(video: VideoDir) -> dict[str, StageResult]:
    """Each stage's result file, as far as it is readable; one a stage container spoilt counts as missing."""
    results = {}
    for stage in registry.lecture_names():  # finalize requires every one of them to be ok
        path = video.result_path(stage)
        try:
            if stat.S_ISREG(lstat_mode(path)) and path.stat().st_size <= RESULT_BYTES:
                results[stage] = StageResult.load(path)
        except (OSError, ValueError, TypeError):
            continue
    return results


def first_problem(results: dict[str, StageResult]) -> tuple[str, str, str] | None:
    """(stage, status, reason) of the first stage that did not finish ok, in run order."""
    for stage in registry.lecture_names():  # in run order
        result = results.get(stage)
        if result is None:
            return stage, STATUS_ERROR, f"the {stage} stage did not run to completion (see its task log)"
        if result.status != STATUS_OK:
            return stage, result.status, " ".join(str(result.message or result.status).split())[:2000]
    return None


def outside_hint(reason: str) -> str:
    """What to do about a failure that is not the file's fault."""
    if "language Param" in reason:
        what = "set the language Param to the lecture's language when you trigger it (language=ru, ...)"
    elif "warm" in reason or "not in the cache" in reason:
        what = "download the model first (the warm-up: `make warm-cache`, or `docker compose run --rm models`)"
    else:
        what = "fix the cause in the message (a missing model, a full disk, too little memory, a bug)"
    return f"the file itself was not found to be bad: {what}"


def finalize(data_root: Path, video_dir: Path, *, keep_byproducts: bool = False, hold_seconds: float = 0.0,
             give_up: bool = False) -> Outcome:
    """Publish a processed video to ``output/``, quarantine a bad one in ``failed/``, or hold it. Safe to retry.

    A stage that judged the file bad (exit 2) sends it to ``failed/``. A failure outside the
    file (a crash, a missing model, a full disk, a stage that never finished) holds the video in
    ``processing/`` for ``hold_seconds``; a later run then takes it over and retries, until it was
    taken :data:`MAX_ADOPTIONS` times (``give_up``), when it goes to ``failed/`` with what to fix.

    Only the claim's record (which no stage container can write) says what the file is and
    where it goes; a name is one path component, and only regular files are moved.
    """
    data_root, video = Path(data_root), VideoDir(video_dir)
    if not video.path.is_dir():
        raise FileNotFoundError(f"{video.path} does not exist: was it finalized already?")
    record = _record(video.path)
    name = record["name"]
    results = stage_results(video)
    problem = first_problem(results)
    plan = record.get("plan")
    if plan is None:
        if problem and problem[1] != STATUS_BAD_INPUT and not give_up:
            return _hold(video.path, record, problem, hold_seconds)
        parent = "failed" if problem else "output"
        folder = unique_dir(data_root / parent, display_name(Path(name).stem))
        plan = {"status": "failed" if problem else "ok", "destination": f"{parent}/{folder.name}"}
        record["plan"] = plan
        write_json(record_path(video.path), record)
    parent, _, folder = plan["destination"].partition("/")
    if parent not in ("output", "failed") or not _one_component(folder):
        raise ValueError(f"{record_path(video.path)}: {plan['destination']!r} is not a folder of output/ or failed/")
    dest = data_root / parent / folder
    dest.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    facts = {k: record[k] for k in ("name", "size", "sha256", "claimed_at", "adopted", "uploaded_by", "upload_id")
             if k in record}
    manifest = build_manifest(facts, results, plan["status"], now)
    source = video.path / "source" / name
    hint = None
    if problem:
        stage, status, reason = problem
        again = "; then drop it into input/ again"
        hint = BAD_FILE_HINT if status == STATUS_BAD_INPUT else outside_hint(reason) + again
        _write_error(dest, {"file": name, "stage": stage, "reason": reason, "failed_at": now, "hint": hint,
                            **{k: facts[k] for k in ("size", "sha256", "claimed_at", "uploaded_by", "upload_id")
                               if k in facts}})
        write_json(dest / "manifest.json", manifest)
        _move(source, dest / name)
    else:
        deliverables = registry.deliverables()  # only the stages' own outputs, as regular files
        for item in sorted(video.path.iterdir()):
            if item.name not in deliverables or not stat.S_ISREG(lstat_mode(item)):
                continue
            if item.name in registry.BYPRODUCTS and not keep_byproducts:
                continue
            _move(item, dest / item.name)
        write_json(dest / "manifest.json", manifest)
        _move(source, data_root / "processed" / video.path.parent.name / name)
    if problem:
        _tell_upload(data_root, record.get("upload_id"), {"state": "quarantined", "failed": plan["destination"],
                                                          "stage": problem[0], "reason": problem[2], "hint": hint})
    else:
        _tell_upload(data_root, record.get("upload_id"), {"state": "published", "output": plan["destination"]})
    _discard(video.path)
    return Outcome(plan["status"], name, plan["destination"], problem[2] if problem else None,
                   problem[0] if problem else None, hint)


def _hold(video_dir: Path, record: dict, problem: tuple[str, str, str], hold_seconds: float) -> Outcome:
    stage, _, reason = problem
    hint = outside_hint(reason)
    until = time.time() + hold_seconds
    record["held"] = {"stage": stage, "reason": reason, "hint": hint, "until": until,
                      "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    record.pop("owner", None)  # its run is done with it: any later claim may take it once the wait is over
    write_json(record_path(video_dir), record)
    tries = f"try {record.get('adopted', 0) + 1} of {MAX_ADOPTIONS + 1}"
    return Outcome("held", record["name"], str(video_dir.parent.name + "/" + video_dir.name), reason, stage,
                   f"{hint}; it waits in processing/ and a later run retries it ({tries})")


def build_manifest(meta: dict, results: dict[str, StageResult], status: str, finished_at: str) -> dict:
    """What was made from which input, how, with what, and how long each stage took."""
    return {
        "konspekt_version": __version__,
        "status": status,
        "video": meta,  # name, size, sha256 (the input hash), claimed_at, adopted
        "finished_at": finished_at,
        "stages": {s: asdict(r) for s, r in results.items()},  # each stage's result: status, outputs, details
        "models": {s: m for s, r in results.items() if (m := r.details.get("model"))},
        # which model transcribed, for a reader: "fine-tuned <run> (base ..., WER a → b)" or its name
        "transcribed_by": results["transcribe"].details.get("transcribed_by") if "transcribe" in results else None,
        # what a stage says the reader should doubt (an unsure language, unclear audio), by stage
        "warnings": {s: w for s, r in results.items() if (w := r.details.get("warnings"))},
        "versions": {s: r.versions for s, r in results.items()},
        "seconds": {s: r.seconds for s, r in results.items()},
        "total_seconds": round(sum(r.seconds for r in results.values()), 3),
    }


def _move(src: Path, dst: Path) -> None:
    if not src.exists():
        return  # moved by an earlier try
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst) if not dst.is_dir() else shutil.move(str(src), str(dst))


def _write_error(dest: Path, error: dict) -> None:
    write_json(dest / "error.json", {k: printable(v) if isinstance(v, str) else v for k, v in error.items()})


def _discard(video_dir: Path) -> None:
    """Remove a claim's working folder and its record (after its file has been moved out)."""
    shutil.rmtree(video_dir, ignore_errors=True)
    record_path(video_dir).unlink(missing_ok=True)
    _remove_if_empty(video_dir.parent)


def _remove_emptied_folders(input_dir: Path, entries: list[Entry], stable_seconds: float) -> None:
    """Dropped folders that claim emptied, deepest first; one a copy may still fill (fresh) is kept."""
    folders = {p for e in entries for p in e.path.parents if input_dir in p.parents}
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        try:
            if time.time() - folder.lstat().st_mtime >= stable_seconds and not any(folder.iterdir()):
                folder.rmdir()
        except OSError:
            pass


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
