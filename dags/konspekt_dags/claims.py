"""Which run of ``lecture_to_pdf`` processes which claimed video, and whether that run still lives.

``lecture_inbox`` claims what lands in ``input/`` and starts one ``lecture_to_pdf`` run per video,
under the run id :func:`run_id_for` gives it; runs overlap, so a video dropped mid-batch starts at
once, and the pools bound the stages. A run triggered by hand claims ``input/`` for itself.
Every claim records its run (its owner): a later claim adopts a video only when that run has
ended without finalizing it (see :func:`konspekt.inbox.orphans`).
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any

from konspekt import inbox
from konspekt_dags.settings import settings

LECTURE_DAG = "lecture_to_pdf"
LIVE_STATES = ["queued", "running"]


def run_id_for(video_dir: Path, attempt: int = 0) -> str:
    """``video__<claim>__<name>``: readable in the UI, unique per claim folder (ASCII only, as Airflow's
    run ids are); a name ASCII cannot spell keeps a checksum of itself; ``.N`` marks the N-th adoption."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", video_dir.name).strip("_.-")[:60]
    if readable != video_dir.name:
        readable = f"{readable or 'video'}-{zlib.crc32(video_dir.name.encode('utf-8', 'surrogateescape')):08x}"
    return f"video__{video_dir.parent.name}__{readable}" + (f".{attempt}" if attempt else "")


def is_live(ti: Any) -> inbox.IsActive:
    """Whether a run of lecture_to_pdf is queued or running, asked of Airflow through the task's own ``ti``."""
    return lambda run_id: ti.get_dr_count(dag_id=LECTURE_DAG, run_ids=[run_id], states=LIVE_STATES) > 0


def claim_videos(ti: Any, owner: inbox.Owner, *, force: bool, wait: bool) -> list[inbox.Claim]:
    """What ``input/`` holds that is ready, and what ended runs left behind, each owned by ``owner``'s run.

    ``wait``: wait up to ``KONSPEKT_CLAIM_WAIT_SECONDS`` for a file still being copied (a run
    triggered by hand); the watcher's sensor has waited already.
    """
    from konspekt.layout import printable

    claims = inbox.claim(settings.data_root, stable_seconds=settings.stable_seconds,
                         wait_seconds=settings.claim_wait_seconds if wait else 0.0,
                         max_bytes=settings.max_file_bytes, force=force, owner=owner, is_active=is_live(ti))
    for c in claims:
        how = "resuming" if c.adopted else "claimed"
        print(f"{how} {printable(c.name)!r} ({c.size} bytes) -> {c.video_dir} for run {c.owner}")
    return claims


def claim_for_new_runs(context: Any) -> list[dict]:
    """The watcher's claim: each video owned by a run still to start, as that run's trigger kwargs."""
    claims = claim_videos(context["ti"], run_id_for, force=False, wait=False)
    return [{"trigger_run_id": c.owner, "conf": {"claimed": c.folder}} for c in claims]
