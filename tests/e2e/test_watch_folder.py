"""The watch folder under a real scheduler: entries claim would not take never start a run.

``airflow standalone`` (scheduler, triggerer, DAG processor, API server on loopback) runs
the watcher, ``lecture_inbox``, on its real ``@continuous`` schedule with the deferrable sensor, so the
sensor's trigger runs in the triggerer. ``input/`` holds only what claim leaves alone: a
download still running (``.part``, ``.crdownload``), hidden and lock files, an empty folder and
a folder holding only a download. Over two minutes exactly one run must exist, waiting in its
sensor (before issue 15 the sensor fired for them, and a run started, waited, ended skipped
and started again). Then a symlink is dropped: the sensor wakes, its claim reports it to
``failed/`` (never following it), and, having claimed nothing, it waits on in the same run.
No run of ``lecture_to_pdf`` ever starts.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_concurrency import free_port, stop

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def runs(home: Path) -> list[tuple[str, str]]:
    """(run state, sensor state) of each run of the watcher, lecture_inbox, oldest first."""
    if not (home / "airflow.db").is_file():
        return []
    try:
        with sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True, timeout=1) as db:
            return db.execute(
                "select r.state, coalesce(t.state, '') from dag_run r left join task_instance t "
                "on t.run_id = r.run_id and t.dag_id = r.dag_id and t.task_id = 'wait_for_video' "
                "where r.dag_id = 'lecture_inbox' order by r.id").fetchall()
    except sqlite3.Error:  # locked, or not migrated yet
        return []


def wait_for(condition, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(1)
    pytest.fail(f"{what} within {timeout:.0f} s\n{log.read_text(errors='replace')[-4000:]}")


def test_only_what_claim_would_take_starts_a_run(tmp_path):
    data, home = tmp_path / "data", tmp_path / "airflow"
    inbox = data / "input"
    (inbox / "empty folder").mkdir(parents=True)
    (inbox / "course").mkdir()
    for name in ("lecture.mp4.part", "talk.mp4.crdownload", ".hidden.mp4", "~$lock.mp4", "course/week 2.mp4.part"):
        (inbox / name).write_bytes(b"still arriving")
    port = free_port()
    env = dict(os.environ, AIRFLOW_HOME=str(home), KONSPEKT_DATA_ROOT=str(data), KONSPEKT_CACHE_DIR=str(tmp_path / "cache"),
               KONSPEKT_SCHEDULE="@continuous", KONSPEKT_SENSOR_MODE="deferrable", KONSPEKT_POKE_SECONDS="1",
               KONSPEKT_STABLE_SECONDS="1", KONSPEKT_CLAIM_WAIT_SECONDS="3", KONSPEKT_RETRIES="0", HF_HUB_OFFLINE="1",
               AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False", AIRFLOW__API__HOST="127.0.0.1",
               AIRFLOW__API__PORT=str(port), AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
               AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2", AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
               VENV=str(Path(sys.executable).parent.parent))
    env.pop("AIRFLOW_CONN_KONSPEKT_DATA", None)
    log_path = tmp_path / "standalone.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(ROOT / "airflow" / "run-local.sh"), "airflow", "standalone"], env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # the first run starts, and its sensor defers to the triggerer
        wait_for(lambda: runs(home)[:1] == [("running", "deferred")], 300, "no run was waiting in its sensor", log_path)
        watched_from = time.monotonic()
        while time.monotonic() - watched_from < 120:
            assert runs(home) == [("running", "deferred")], log_path.read_text(errors="replace")[-4000:]
            time.sleep(2)
        link = inbox / "shortcut.mp4"
        link.symlink_to(data / "elsewhere.mp4")  # even pointing at nothing, it is reported, not followed
        moved = data / "failed" / "shortcut" / "shortcut.mp4"
        wait_for(moved.is_symlink, 120, "the symlink was not reported to failed/", log_path)
        time.sleep(5)
        wait_for(lambda: runs(home) == [("running", "deferred")], 60, "the sensor did not wait on", log_path)
    finally:
        stop(proc)
    with sqlite3.connect(home / "airflow.db") as db:
        assert db.execute("select count(*) from dag_run where dag_id = 'lecture_to_pdf'").fetchone() == (0,)
    assert moved.is_symlink() and not (data / "elsewhere.mp4").exists()
    assert sorted(str(p.relative_to(inbox)) for p in inbox.rglob("*")) == [
        ".hidden.mp4", "course", "course/week 2.mp4.part", "empty folder", "lecture.mp4.part", "talk.mp4.crdownload",
        "~$lock.mp4"]
    assert all((inbox / n).read_bytes() == b"still arriving" for n in ("lecture.mp4.part", ".hidden.mp4"))
