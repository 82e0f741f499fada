"""Restarts and reruns through Airflow (`airflow dags test`, local mode), one history on one data root:

1. a run is killed (SIGKILL to its whole process group, as when the worker dies) once transcribe has
   started; the stage process, in its own session, outlives it as it would a dead worker;
2. while Airflow still calls the dead run running, a new run leaves its video alone (runs overlap,
   and a live run's video is its own); once the run is marked failed (the UI's "Mark run as
   failed"; under ``airflow dags test`` nothing else ever ends it), the next run, with nothing
   new in input/, adopts the video it left in processing/, resumes it (finished stages are
   skipped) and publishes it exactly once;
3. the same bytes dropped again are archived and not processed ("already processed");
4. dropped again with the force Param, they are processed into `output/<name> (2)`.
"""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from conftest import airflow_env, dags_test_argv

from konspekt.layout import sha256
from konspekt.sample import speak

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

NAME = "water cycle"
TEXT = ("Today we talk about the water cycle. Water evaporates from the sea, rises as vapour, "
        "forms clouds and falls back as rain.")


class Deployment:
    """A data root and an Airflow home, and `airflow dags test` runs against them."""

    def __init__(self, base: Path, model: str):
        self.base, self.data = base, base / "data"
        (self.data / "input").mkdir(parents=True)
        self.env = airflow_env(base, self.data, KONSPEKT_WHISPER_MODEL=model, KONSPEKT_CLAIM_WAIT_SECONDS="3")

    def argv(self, *extra):
        return dags_test_argv("lecture_to_pdf", *extra)

    def run(self, label: str, *extra) -> str:
        proc = subprocess.run(self.argv(*extra), env=self.env, capture_output=True, text=True, timeout=900)
        log = proc.stdout + proc.stderr
        (self.base / f"{label}.log").write_text(log)
        return log

    def kill_while(self, label: str, condition, timeout: float = 600) -> None:
        """Start a run and SIGKILL its process group once ``condition()`` holds."""
        with open(self.base / f"{label}.log", "w") as log:
            proc = subprocess.Popen(self.argv(), env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            deadline = time.monotonic() + timeout
            try:
                while not condition():
                    assert proc.poll() is None, f"the run ended before it was killed; see {log.name}"
                    assert time.monotonic() < deadline, "the run never reached the kill point"
                    time.sleep(0.1)
            finally:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def mark_running_runs_failed(self) -> list[str]:
        """What "Mark run as failed" in the UI does to the killed run: its state, in Airflow's database."""
        with sqlite3.connect(self.base / "airflow" / "airflow.db") as db:
            ids = [r for (r,) in db.execute("select run_id from dag_run where dag_id = 'lecture_to_pdf' "
                                            "and state = 'running'")]
            db.execute("update dag_run set state = 'failed' where dag_id = 'lecture_to_pdf' and state = 'running'")
        return ids

    def snapshot(self) -> dict:
        return {folder: sorted(p.relative_to(self.data / folder).as_posix()
                               for p in (self.data / folder).rglob("*") if p.is_file())
                for folder in ("input", "processing", "processed", "output", "failed") if (self.data / folder).exists()}

    def stop_leftovers(self) -> list[int]:
        """Stage processes of the killed run that outlived it (they run in their own session): by pid."""
        mine = str(self.base)
        killed = []
        for proc_dir in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc_dir / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if mine in cmdline and int(proc_dir.name) != os.getpid():
                try:
                    os.kill(int(proc_dir.name), signal.SIGKILL)
                    killed.append(int(proc_dir.name))
                except ProcessLookupError:
                    pass
        return killed


@pytest.fixture(scope="module")
def clip(media_dir) -> Path:
    return speak(TEXT, media_dir / f"{NAME}.mp4")


@pytest.fixture(scope="module")
def history(tmp_path_factory, clip, tiny_en_model):
    site = Deployment(tmp_path_factory.mktemp("restart"), tiny_en_model)
    steps = {}
    try:
        shutil.copy(clip, site.data / "input" / clip.name)
        site.kill_while("1-killed", lambda: any(site.data.glob("processing/*/*/stages/extract_audio.json"))
                        and "konspekt.stages.transcribe" in (site.base / "1-killed.log").read_text())
        steps["killed"] = site.snapshot()
        steps["killed_sources"] = {p.name: sha256(p) for p in site.data.glob("processing/*/*/source/*")}
        steps["alive_log"] = site.run("2-while-alive")
        steps["alive"] = site.snapshot()
        steps["alive_records"] = [json.loads(p.read_text()) for p in site.data.glob("processing/*/.*.json")]
        steps["marked_failed"] = site.mark_running_runs_failed()
        steps["resumed_log"] = site.run("2-resumed")
        steps["resumed"] = site.snapshot()
        shutil.copy(clip, site.data / "input" / f"{NAME} again.mp4")
        steps["again_log"] = site.run("3-again")
        steps["again"] = site.snapshot()
        shutil.copy(clip, site.data / "input" / clip.name)
        steps["forced_log"] = site.run("4-forced", "--conf", json.dumps({"force": True}))
        steps["forced"] = site.snapshot()
    finally:
        site.stop_leftovers()
    return site, steps


def test_a_killed_run_leaves_the_video_in_processing(history, clip):
    site, steps = history
    assert steps["killed_sources"] == {clip.name: sha256(clip)}  # not lost: whole, in processing/
    assert not steps["killed"].get("output") and not steps["killed"]["input"]


def test_a_run_airflow_still_calls_running_keeps_its_video(history, clip):
    site, steps = history
    alive = steps["alive"]  # the killed run's stage process may still be writing in its folder: compare the rest
    assert not alive.get("output") and not alive.get("processed") and not alive.get("failed"), alive
    assert [p for p in alive["processing"] if "/source/" in p] == [p for p in steps["killed"]["processing"]
                                                                    if "/source/" in p]
    assert "nothing to process" in steps["alive_log"], steps["alive_log"][-3000:]
    assert len(steps["marked_failed"]) == 1  # the killed run, and no other, was still "running"
    [record] = steps["alive_records"]  # still the killed run's, not adopted
    assert record["owner"] == steps["marked_failed"][0] and "adopted" not in record


def test_the_next_run_resumes_it_and_publishes_it_once(history, clip):
    site, steps = history
    after = steps["resumed"]
    assert f"{NAME}/report.pdf" in after["output"], steps["resumed_log"][-3000:]
    assert {p.split("/")[0] for p in after["output"]} == {NAME}  # one output folder
    assert [Path(p).name for p in after["processed"]] == [clip.name]  # one archive
    assert after["processing"] == [] and not after.get("failed")
    manifest = json.loads((site.data / "output" / NAME / "manifest.json").read_text())
    assert manifest["video"]["adopted"] == 1 and manifest["video"]["sha256"] == sha256(clip)
    assert all(s["status"] == "ok" for s in manifest["stages"].values()) and len(manifest["stages"]) == 6
    assert "extract_audio: up to date, skipped (use --force to redo)" in steps["resumed_log"]


def test_the_same_bytes_again_are_archived_not_processed(history):
    site, steps = history
    after = steps["again"]
    assert "already processed as output/water cycle; set force=true to redo" in steps["again_log"]
    assert {p.split("/")[0] for p in after["output"]} == {NAME} and after["output"] == steps["resumed"]["output"]
    assert sum(p.endswith(f"{NAME} again.mp4") for p in after["processed"]) == 1  # kept, never deleted
    assert after["input"] == [] and after["processing"] == []


def test_force_processes_them_again_into_a_new_folder(history, clip):
    site, steps = history
    after = steps["forced"]
    assert f"{NAME} (2)/report.pdf" in after["output"], steps["forced_log"][-3000:]
    manifest = json.loads((site.data / "output" / f"{NAME} (2)" / "manifest.json").read_text())
    assert manifest["video"]["sha256"] == sha256(clip) and "adopted" not in manifest["video"]
    assert after["input"] == [] and after["processing"] == [] and len(after["processed"]) == 3
    assert "up to date, skipped" not in steps["forced_log"]
