"""The names the Airflow UI shows for mapped tasks (konspekt_dags.labels)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from konspekt import inbox
from konspekt.layout import write_json

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture
def labels(monkeypatch, tmp_path):
    """konspekt_dags.labels with settings read afresh, the data root at tmp_path."""
    monkeypatch.setenv("KONSPEKT_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("AIRFLOW_CONN_KONSPEKT_DATA", "fs://")
    for name in [m for m in sys.modules if m.startswith("konspekt_dags")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(DAGS))
    from konspekt_dags import labels

    return labels


def _claimed(data_root: Path, name: str, folder: str = "lecture") -> str:
    video_dir = data_root / "processing" / "20260101T000000-abcdef" / folder
    (video_dir / "source").mkdir(parents=True)
    write_json(inbox.record_path(video_dir), {"name": name, "size": 1, "sha256": "0" * 64})
    return f"/data/processing/20260101T000000-abcdef/{folder}"


def test_a_claimed_video_is_labelled_with_the_users_file_name(tmp_path, labels):
    hostile = "Лекция 1 — $(rm -rf ~) <b>bold<b> {{ 7*7 }}.mp4"  # shown as text, never run or rendered
    assert labels.video_label(_claimed(tmp_path, hostile, "Лекция_1")) == hostile


def test_a_long_name_is_shortened_and_bytes_that_are_not_utf8_are_shown_replaced(tmp_path, labels):
    long = "x" * 300 + ".mp4"
    label = labels.video_label(_claimed(tmp_path, long, "long"))
    assert len(label) == labels.MAX_LABEL and label.endswith("…") and label.startswith("xxx")
    raw = "caf\udce9.mp4"  # a Latin-1 byte in a file name, as os.listdir gives it
    assert labels.video_label(_claimed(tmp_path, raw, "cafe")) == "caf\ufffd.mp4"


def test_without_a_readable_record_the_folder_name_is_shown(tmp_path, labels):
    assert labels.video_label("/data/processing/c1/gone") == "gone"  # finalized already
    path = _claimed(tmp_path, "../escape.mp4", "odd")  # a record naming no single file is not trusted
    assert labels.video_label(path) == "odd"
    inbox.record_path(tmp_path / "processing" / "20260101T000000-abcdef" / "odd").write_text("[1, 2]")
    assert labels.video_label(path) == "odd"
    assert labels.video_label("/elsewhere/x") == "x"  # not under the data root
