"""Claim new files from ``input/`` and finalize them into ``output/`` or ``failed/``.

These two steps run in the Airflow worker itself (they only move files), so this
module is stdlib only. The rules that keep users' files safe:

* A file is claimed only when it looks complete: not hidden, no download/temp
  suffix, and its size and mtime unchanged for ``stable_seconds``.
* Claiming is one ``os.rename`` into ``processing/``, so two schedulers racing
  for a file cannot both get it, and a file is processed once.
* The original bytes are never modified or deleted: they end in ``processed/``
  after success, or in ``failed/<name>/`` next to an ``error.json``.
"""

from __future__ import annotations

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
        ready = []
        for path in sorted(input_dir.iterdir()) if input_dir.is_dir() else []:
            if not is_candidate(path):
                continue
            st = path.stat()
            sig = (st.st_size, st.st_mtime_ns)
            seen = first_seen.get(path)
            if seen is None or seen[0] != sig:
                first_seen[path] = seen = (sig, now)
            if wall - st.st_mtime >= stable_seconds or now - seen[1] >= stable_seconds:
                ready.append(path)
        if ready or now >= deadline:
            return ready
        time.sleep(min(poll_seconds, max(deadline - now, 0.05)))


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


def claim(data_root: Path, *, stable_seconds: float = 5.0, wait_seconds: float = 0.0,
          max_files: int | None = None) -> list[Claim]:
    """Move ready files from ``input/`` into their own ``processing/<claim>/<video>/`` folders."""
    data_root = Path(data_root)
    files = ready_files(data_root / "input", stable_seconds, wait_seconds)[:max_files]
    claim_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    claims = []
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
        st = (video_dir / "source" / path.name).stat()
        item = Claim(video_dir, path.name, st.st_size, sha256(video_dir / "source" / path.name),
                     datetime.now(timezone.utc).isoformat(timespec="seconds"))
        write_json(video_dir / VIDEO_META, {"name": path.name, "source": f"source/{path.name}", "size": item.size,
                                            "sha256": item.sha256, "claimed_at": item.claimed_at})
        claims.append(item)
    return claims


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
    manifest = {"konspekt_version": __version__, "video": meta, "finished_at": now,
                "stages": {s: asdict(r) for s, r in results.items()}}

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
