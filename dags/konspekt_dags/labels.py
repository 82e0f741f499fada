"""How a video is named in the Airflow UI: its file name, not its folder's slug or a map index."""

from __future__ import annotations

from pathlib import PurePosixPath

from konspekt import inbox
from konspekt.layout import printable
from konspekt_dags.settings import settings

MAX_LABEL = 120  # characters: the grid and the task list truncate long labels anyway


def video_label(video_dir: str) -> str:
    """The name the user gave the file claimed into ``video_dir`` (a container path), for
    ``map_index_template``; the folder's name when the claim's record cannot be read."""
    label = PurePosixPath(str(video_dir)).name
    try:
        name = inbox.claimed_name(settings.to_local(str(video_dir)))
    except (OSError, ValueError):  # finalized already, or not under the data root
        name = None
    label = printable(name or label)
    return label if len(label) <= MAX_LABEL else label[:MAX_LABEL - 1] + "…"


def claimed_label(folder: str) -> str:
    """:func:`video_label` of a claim named as ``<claim>/<video>`` under ``processing/`` (lecture_inbox's runs)."""
    return video_label(settings.to_container(settings.data_root / "processing" / str(folder)))
