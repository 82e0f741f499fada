"""Docker mode survives a restart of the Docker daemon between two tries of a task.

One lecture is dropped and the DAG runs in docker mode (as in tests/e2e/test_e2e_docker.py).
When the transcribe container has started, the daemon is stopped (``.ci/dockerd.sh stop``):
the running stage, or the next one to start, fails with a clear error and waits for its
retry. Once Airflow's database shows a task ``up_for_retry``, the daemon is started again;
the retry succeeds and the video ends in ``output/`` exactly once.

It stops a Docker engine, so it runs only on the engine ``.ci/docker-e2e.sh`` started
itself (``KONSPEKT_CI_DOCKERD_OURS=1``), never on one it merely reused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from conftest import airflow_env, dags_test_argv

from test_e2e_docker import (  # noqa: F401 - docker_api: a fixture
    TASK_GID, TASK_UID, chown_tree, docker_api, docker_mode, image_names, our_containers)

ROOT = Path(__file__).resolve().parents[2]
DOCKERD = ROOT / ".ci" / "dockerd.sh"
NAME = "restart lecture"
# What a task reports when the daemon goes away under it, or is gone when it starts.
DAEMON_ERROR = re.compile(r"Failed to establish connection|Connection (?:refused|aborted|reset)|"
                          r"Error while fetching server API version|Docker container failed")
pytestmark = pytest.mark.slow


def dockerd(action: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(DOCKERD), action], capture_output=True, text=True, timeout=180)


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the DAG run ended (rc {proc.returncode}) before {what}")
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def query(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # the schema is still being created
            return []


@pytest.fixture(scope="module")
def restart_run(docker_api, tmp_path_factory, lecture_mp4, tiny_en_model):  # noqa: F811
    if os.geteuid() != 0:
        pytest.skip("needs root: the data root is handed to uid 1000, and dockerd is restarted")
    if os.environ.get("KONSPEKT_CI_DOCKERD_OURS") != "1" or dockerd("running").returncode != 0:
        pytest.skip("the engine was not started by .ci/dockerd.sh (.ci/docker-e2e.sh): not ours to stop")
    base = tmp_path_factory.mktemp("e2e-docker-restart")
    data, cache, home = base / "data", base / "cache", base / "airflow"
    (data / "input").mkdir(parents=True)
    shutil.copy(lecture_mp4, data / "input" / f"{NAME}.mp4")  # 35 s: transcribe runs long enough to be cut
    shutil.copytree(tiny_en_model, cache / "whisper" / "tiny.en")
    chown_tree(data, TASK_UID, TASK_GID)
    chown_tree(cache, TASK_UID, TASK_GID)
    env = airflow_env(base, data, **docker_mode(docker_api.url, data, cache),
                      KONSPEKT_RETRIES="3")  # 20 s apart (the DAG's retry_delay)
    log_path = base / "dags-test.log"
    db = home / "airflow.db"
    events = {"before": {c["Id"] for c in our_containers(docker_api)}}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(dags_test_argv(), env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            asr = next(name for name in image_names() if name.split(":")[0].endswith("-asr"))
            wait_for(lambda: f"Starting docker container from image {asr}" in log_path.read_text(errors="replace"),
                     600, "the transcribe container", proc)
            events["stop"] = dockerd("stop")
            events["stopped"] = dockerd("running").returncode != 0
            wait_for(lambda: query(db, "select 1 from task_instance where state = 'up_for_retry'"), 300,
                     "a task up for retry", proc)
            events["start"] = dockerd("start")
            proc.wait(timeout=1200)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # the run we started, and only it
                proc.wait(timeout=60)
            if dockerd("running").returncode != 0:
                dockerd("start")  # leave the engine running, as the other docker tests expect it
    events["left"] = [c for c in our_containers(docker_api) if c["Id"] not in events["before"]]
    tries = query(db, "select task_id, state, try_number from task_instance where dag_id = 'lecture_to_pdf'")
    history = query(db, "select task_id, state, try_number from task_instance_history where dag_id = 'lecture_to_pdf'")
    return data, proc, log_path.read_text(errors="replace"), events, tries, history


def test_the_daemon_was_stopped_and_started_again(restart_run):
    _, _, _, events, _, _ = restart_run
    assert events["stop"].returncode == 0, events["stop"].stderr
    assert events["stopped"], "dockerd still ran after .ci/dockerd.sh stop"
    assert events["start"].returncode == 0, events["start"].stderr


def test_a_stage_failed_with_a_clear_error_and_its_retry_succeeded(restart_run):
    _, proc, log, _, tries, history = restart_run
    failed = {task for task, state, _ in history if state in ("failed", "up_for_retry")}
    assert failed and all(task.startswith("process.") for task in failed), history
    for task, state, try_number in tries:
        if task in failed:
            assert state == "success" and try_number >= 2, (task, state, try_number)
    assert DAEMON_ERROR.search(log), log[-5000:]
    assert proc.returncode == 0, log[-5000:]


def test_the_retry_removed_the_container_the_cut_off_try_left(restart_run):
    """The first try's container outlived its operator (the daemon went away under it); the retry of the
    same task found it by its label and removed it, so the engine is left as clean as after any run."""
    _, _, log, events, _, _ = restart_run
    assert events["left"] == [], [(c["Names"], c["Image"], c["Status"]) for c in events["left"]]


def test_the_video_finished_exactly_once(restart_run):
    data, _, log, _, _, _ = restart_run
    assert [p.name for p in (data / "output").iterdir()] == [NAME], log[-3000:]
    out = data / "output" / NAME
    assert (out / "report.pdf").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(s["status"] == "ok" for s in manifest["stages"].values())
    assert [p.name for p in (data / "processed").rglob("*.mp4")] == [f"{NAME}.mp4"]
    assert not any((data / "failed").glob("*")) and not any((data / "processing").glob("*/*"))
    assert not list((data / "input").iterdir())
