"""Claim new files from ``input/`` and finalize them into ``output/`` or ``failed/``.

These two steps run in the Airflow worker itself (they only move files), so this
module is stdlib only. The rules that keep users' files safe:

* A file is claimed only when it looks complete: not hidden, no download/temp
  suffix, and its size and mtime unchanged for ``stable_seconds``.
* Claiming is one ``os.rename`` into ``processing/``, so two schedulers racing
  for a file cannot both get it, and a file is processed once.
* The original bytes are never modified or deleted: they end in ``processed/``
  after success, or in ``failed/<name>/`` next to an ``error.json``.
* A file whose bytes were published already (its sha256 is the input hash in some
  ``output/*/manifest.json``) is not processed again: it is archived in ``processed/``
  and nothing new is made, unless ``force`` asks for it (then ``output/<name> (2)``).
* Nothing is lost when a run dies: see :func:`orphans` for how the next run adopts
  what a dead run left in ``processing/``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from konspekt import __version__
from konspekt.contracts import STATUS_OK, StageResult
from konspekt.layout import VIDEO_META, VideoDir, read_json, sha256, write_json

# Run order of the per-video stages; finalize requires every one of them to be ok.
STAGES = ("extract_audio", "transcribe", "summarize", "features", "outline", "render_pdf")

TEMP_SUFFIXES = {".part", ".partial", ".crdownload", ".download", ".tmp", ".temp", ".filepart", ".opdownload", ".!qb"}
DELIVERABLES_SKIPPED = {"source", "stages", VIDEO_META, "finalize.json"}
BYPRODUCTS = {"audio.wav"}
# A video adopted this often and still not finished goes to failed/ instead of round again.
MAX_ADOPTIONS = 3

log = logging.getLogger(__name__)


def is_candidate(path: Path) -> bool:
    """A regular, visible file that no downloader or editor is still writing under a temp name."""
    name = path.name
    if name.startswith((".", "~$", "~")) or path.suffix.lower() in TEMP_SUFFIXES:
        return False
    return path.is_file() and not path.is_symlink()


def ready_files(input_dir: Path, stable_seconds: float = 5.0, wait_seconds: float = 0.0,
                poll_seconds: float = 1.0) -> list[Path]:
    """Files in ``input_dir`` whose size and mtime have not changed for ``stable_seconds``.

    A file last modified long enough ago is ready at once; a fresher one is watched.
    Waits up to ``wait_seconds`` for at least one file to become ready.
    """
    deadline = time.monotonic() + wait_seconds
    first_seen: dict[Path, tuple[tuple[int, int], float]] = {}
    while True:
        now, wall = time.monotonic(), time.time()
        ready, sleep = [], poll_seconds
        for path in sorted(input_dir.iterdir()) if input_dir.is_dir() else []:
            if not is_candidate(path):
                continue
            st = path.stat()
            sig = (st.st_size, st.st_mtime_ns)
            seen = first_seen.get(path)
            if seen is None or seen[0] != sig:
                first_seen[path] = seen = (sig, now)
            unchanged_for = max(wall - st.st_mtime, now - seen[1])
            if unchanged_for >= stable_seconds:
                ready.append(path)
            else:  # look again the moment it could be ready, not up to a poll later
                sleep = min(sleep, stable_seconds - unchanged_for)
        if ready or now >= deadline:
            return ready
        time.sleep(max(min(sleep, deadline - now), 0.05))


def slug(text: str, limit: int = 80) -> str:
    """A folder name that any tool can handle; unicode letters (Cyrillic too) are kept."""
    return re.sub(r"[^\w.-]+", "_", text).strip("._-")[:limit] or "video"


def display_name(text: str) -> str:
    """The user's own name for the output folder, minus what a folder name cannot hold."""
    return re.sub(r"[/\\\x00-\x1f]+", "_", text).lstrip(".").strip() or "video"


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


def claim(data_root: Path, *, stable_seconds: float = 5.0, wait_seconds: float = 0.0,
          max_files: int | None = None, force: bool = False) -> list[Claim]:
    """What this run processes: the videos dead runs left in ``processing/`` (see :func:`orphans`),
    then the ready files of ``input/``, each moved into its own ``processing/<claim>/<video>/``.

    A new file whose bytes are already published is archived and left out, unless ``force``.
    """
    data_root = Path(data_root)
    claims = adopt_orphans(data_root)
    files = ready_files(data_root / "input", stable_seconds, 0.0 if claims else wait_seconds)[:max_files]
    claim_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    done = published(data_root) if files and not force else {}
    for path in files:
        video_dir = data_root / "processing" / claim_id / slug(path.stem)
        if video_dir.exists():  # two names that slug alike in one drop
            video_dir = video_dir.with_name(f"{video_dir.name}-{len(claims)}")
        (video_dir / "source").mkdir(parents=True)
        try:
            os.rename(path, video_dir / "source" / path.name)
        except FileNotFoundError:  # another run claimed it first
            shutil.rmtree(video_dir)
            continue
        item = _describe(video_dir, path.name)
        if item.sha256 in done:
            _move(video_dir / "source" / path.name, data_root / "processed" / claim_id / path.name)
            shutil.rmtree(video_dir)
            log.warning("%s: already processed as %s; set force=true to redo", path.name, done[item.sha256])
            continue
        claims.append(item)
    _remove_if_empty(data_root / "processing" / claim_id)
    return claims


def _describe(video_dir: Path, name: str) -> Claim:
    """Hash the claimed file and write the folder's ``video.json``."""
    source = video_dir / "source" / name
    item = Claim(video_dir, name, source.stat().st_size, sha256(source),
                 datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_json(video_dir / VIDEO_META, {"name": name, "source": f"source/{name}", "size": item.size,
                                        "sha256": item.sha256, "claimed_at": item.claimed_at})
    return item


def published(data_root: Path) -> dict[str, str]:
    """The input sha256 of every published video -> its output folder (``output/<name>``)."""
    found: dict[str, str] = {}
    for manifest in sorted((Path(data_root) / "output").glob("*/manifest.json")):
        try:
            digest = read_json(manifest)["video"]["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not one of ours, or damaged: never a reason to skip a file
        found.setdefault(digest, f"output/{manifest.parent.name}")
    return found


def orphans(data_root: Path) -> list[Path]:
    """Video folders in ``processing/`` whose run ended without finalizing them.

    The rule: **when claim runs, every folder in processing/ is an orphan.** Claim runs
    once per DAG run, before that run processes anything, and runs of lecture_to_pdf
    never overlap (``max_active_runs=1``, which tests/test_dags.py pins). So a folder
    found there belongs to a run that has ended without finalizing it: its worker or
    the machine died, or the run was marked failed. Nothing else will ever finish it.

    Adopting one is safe even if a stage process of the dead run still runs in it:
    the stage's lock makes the new try wait for it (see :mod:`konspekt.stage`), and
    stages that finished are up to date and skipped, so work resumes where it stopped.
    """
    processing = Path(data_root) / "processing"
    return sorted(v for c in processing.iterdir() if c.is_dir() for v in c.iterdir() if v.is_dir()) \
        if processing.is_dir() else []


def adopt_orphans(data_root: Path) -> list[Claim]:
    """Hand the orphans to the running run; one adopted :data:`MAX_ADOPTIONS` times is finalized instead."""
    adopted = []
    for video_dir in orphans(data_root):
        meta_path = video_dir / VIDEO_META
        if not meta_path.is_file():  # claim itself died between the move and writing video.json
            sources = sorted(p for p in (video_dir / "source").glob("*") if p.is_file())
            if len(sources) != 1:
                if not any(p.is_file() for p in video_dir.rglob("*")):  # died before the move: nothing there
                    shutil.rmtree(video_dir)
                    _remove_if_empty(video_dir.parent)
                else:
                    log.error("%s has no %s and is left for a person to look at", video_dir, VIDEO_META)
                continue
            _describe(video_dir, sources[0].name)
        meta = read_json(meta_path)
        if meta.get("adopted", 0) >= MAX_ADOPTIONS:
            outcome = finalize(data_root, video_dir)
            log.error("%s: interrupted %d times; finalized as %s", meta["name"], meta["adopted"], outcome.destination)
            continue
        meta["adopted"] = meta.get("adopted", 0) + 1
        write_json(meta_path, meta)
        log.warning("%s: left in %s by a run that ended; resuming it", meta["name"], video_dir.parent.name)
        adopted.append(Claim(video_dir, meta["name"], meta["size"], meta["sha256"], meta["claimed_at"], adopted=True))
    return adopted


@dataclass
class Outcome:
    status: str  # "ok" | "failed"
    name: str
    destination: str
    reason: str | None = None
    stage: str | None = None


def stage_results(video: VideoDir) -> dict[str, StageResult]:
    return {s: StageResult.load(video.result_path(s)) for s in STAGES if video.result_path(s).is_file()}


def first_problem(results: dict[str, StageResult]) -> tuple[str, str] | None:
    """(stage, reason) of the first stage that did not finish ok, in run order."""
    for stage in STAGES:
        result = results.get(stage)
        if result is None:
            return stage, f"the {stage} stage did not run to completion (see its task log)"
        if result.status != STATUS_OK:
            return stage, result.message or result.status
    return None


def finalize(data_root: Path, video_dir: Path, *, keep_byproducts: bool = False) -> Outcome:
    """Publish a processed video to ``output/``, or quarantine it in ``failed/``. Safe to retry."""
    data_root, video = Path(data_root), VideoDir(video_dir)
    plan_file = video.path / "finalize.json"
    if not video.path.is_dir():
        raise FileNotFoundError(f"{video.path} does not exist: was it finalized already?")
    meta = video.meta
    results = stage_results(video)
    problem = first_problem(results)
    if plan_file.is_file():  # a retry after a crash mid-finalize keeps the first decision
        plan = read_json(plan_file)
    else:
        parent = data_root / ("failed" if problem else "output")
        plan = {"status": "failed" if problem else "ok",
                "destination": str(unique_dir(parent, display_name(Path(meta["name"]).stem)).relative_to(data_root))}
        write_json(plan_file, plan)
    dest = data_root / plan["destination"]
    dest.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest = build_manifest(meta, results, plan["status"], now)

    if problem:
        stage, reason = problem
        write_json(dest / "error.json", {"file": meta["name"], "stage": stage, "reason": reason, "failed_at": now,
                                          "hint": "fix the file and drop it into input/ again",
                                          **{k: meta[k] for k in ("size", "sha256", "claimed_at") if k in meta}})
        write_json(dest / "manifest.json", manifest)
        _move(video.path / meta["source"], dest / meta["name"])
    else:
        for item in sorted(video.path.iterdir()):
            if item.name in DELIVERABLES_SKIPPED or item.name.startswith("."):
                continue
            if item.name in BYPRODUCTS and not keep_byproducts:
                continue
            _move(item, dest / item.name)
        write_json(dest / "manifest.json", manifest)
        archive = data_root / "processed" / video.path.parent.name / meta["name"]
        _move(video.path / meta["source"], archive)
    shutil.rmtree(video.path)
    _remove_if_empty(video.path.parent)
    return Outcome(plan["status"], meta["name"], plan["destination"],
                   problem[1] if problem else None, problem[0] if problem else None)


def build_manifest(meta: dict, results: dict[str, StageResult], status: str, finished_at: str) -> dict:
    """What was made from which input, how, with what, and how long each stage took."""
    return {
        "konspekt_version": __version__,
        "status": status,
        "video": meta,  # name, size, sha256 (the input hash), claimed_at, adopted
        "finished_at": finished_at,
        "stages": {s: asdict(r) for s, r in results.items()},  # each stage's result: status, outputs, details
        "models": {s: m for s, r in results.items() if (m := r.details.get("model"))},
        "versions": {s: r.versions for s, r in results.items()},
        "seconds": {s: r.seconds for s, r in results.items()},
        "total_seconds": round(sum(r.seconds for r in results.values()), 3),
    }


def _move(src: Path, dst: Path) -> None:
    if not src.exists():
        return  # moved by an earlier try
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst) if not dst.is_dir() else shutil.move(str(src), str(dst))


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
