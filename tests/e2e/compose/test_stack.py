"""The path users take, against the running compose stack (``.ci/compose-e2e.sh`` brings it up).

The tests run in file order and share the stack: a browser logs in; a lecture dropped into
``airflow/data/input`` on the host is processed by the run the watch folder (``lecture_inbox``)
starts for it; a broken file is quarantined; the browser triggers ``lecture_to_pdf`` with a
changed Param, and that run takes the lecture dropped while it waits; ``train_asr`` is triggered over the REST API;
the scheduler is restarted in the middle of a video. Screenshots and logs go to
``$KONSPEKT_CI_ARTIFACTS``.

Runs only with ``KONSPEKT_COMPOSE_E2E=1``, as root (it reads files the stack's uid owns).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from konspekt.sample import SCRIPT, speak, word_error_rate

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "airflow" / "data"
VIDEO_TIMEOUT = 900  # a lecture through six task containers in docker-proxy, with a queue before it
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("KONSPEKT_COMPOSE_E2E") != "1",
                                 reason="runs against the compose stack: .ci/compose-e2e.sh (make compose-e2e)")]


# --- the stack ----------------------------------------------------------------------------------

def env_file() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env").read_text().splitlines():
        if line.strip() and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.split("  #")[0].strip()
    return values


def env_value(key: str) -> str:
    return env_file()[key]


def compose(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    files = ["-f", "docker-compose.yml"]
    for extra in os.environ.get("KONSPEKT_COMPOSE_FILES", "").split():
        files += ["-f", extra]
    cmd = ["docker", "compose"] if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0 \
        else ["docker-compose"]
    return subprocess.run([*cmd, *files, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


class Api:
    """Airflow's REST API with the admin's token, as a script of a user's would call it."""

    def __init__(self, url: str, user: str, password: str):
        self.url = url
        self.token = self.call("POST", "/auth/token", {"username": user, "password": password})["access_token"]

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if getattr(self, "token", None):
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from None

    def runs(self, dag_id: str) -> list[dict]:
        return self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-start_date&limit=20")["dag_runs"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def tasks(self, dag_id: str, run_id: str) -> list[dict]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances?limit=100"
        return self.call("GET", path)["task_instances"]


@pytest.fixture(scope="module")
def stack() -> dict:
    if os.geteuid() != 0:
        pytest.skip("reads files owned by the stack's uid: run as root")
    env = env_file()
    url = f"http://127.0.0.1:{env.get('AIRFLOW_UI_PORT') or 8080}"
    return {"url": url, "user": env.get("AIRFLOW_ADMIN_USER") or "konspekt",
            "password": env["AIRFLOW_ADMIN_PASSWORD"], "uid": int(env["AIRFLOW_UID"]), "state": {}}


@pytest.fixture(scope="module")
def api(stack) -> Api:
    return Api(stack["url"], stack["user"], stack["password"])


@pytest.fixture(scope="module")
def artifacts() -> Path:
    path = Path(os.environ.get("KONSPEKT_CI_ARTIFACTS") or ROOT / "build" / "compose-e2e")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def ui(stack, artifacts):
    pytest.importorskip("selenium")
    from airflow_ui import AirflowUI

    with AirflowUI(stack["url"], artifacts) as browser:
        yield browser


@pytest.fixture(scope="module")
def lecture(tmp_path_factory) -> Path:
    return speak(SCRIPT, tmp_path_factory.mktemp("media") / "lecture.mp4")


def drop(source: Path | bytes, name: str, uid: int) -> Path:
    """Copy into input/ as a user would: under a temporary name first, then renamed into place.

    Each copy of a video gets its own bytes (a comment tag): bytes already published are only
    archived, not processed again, and every test here wants a lecture processed.
    """
    partial, final = DATA / "input" / f"{name}.part", DATA / "input" / name
    if isinstance(source, bytes):
        partial.write_bytes(source)
    else:
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-c", "copy",
                        "-metadata", f"comment={name}", "-f", "mp4", str(partial)], check=True)
    os.chown(partial, uid, 0)
    partial.rename(final)
    return final


def wait_for(what: str, check, timeout: float, every: float = 3.0, on_timeout=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}. {on_timeout()}")


def task_containers() -> list[str]:
    """Containers of the konspekt task images inside docker-proxy (running or not)."""
    proc = compose("exec", "-T", "docker-proxy", "docker", "ps", "-a", "--format", "{{.Image}} {{.Status}} {{.Names}}")
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line.startswith("konspekt-")]


def container_names() -> set[str]:
    return {line.rsplit(" ", 1)[-1] for line in task_containers()}  # the status text changes with time


def transcript_wer(out: Path) -> float:
    return word_error_rate(SCRIPT, (out / "transcript.txt").read_text())


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:6]}"


# --- the tests, in the order a user meets them ----------------------------------------------------

def test_browser_logs_in_and_sees_the_dags(ui, stack):
    ui.login(stack["user"], stack["password"])
    ids = ui.dag_ids()
    ui.screenshot("02-dag-list")
    assert {"lecture_inbox", "lecture_to_pdf", "train_asr"} <= set(ids), ids


def test_a_dropped_lecture_becomes_a_pdf(stack, api, lecture):
    """The watch folder (lecture_inbox) starts a run of lecture_to_pdf for it, named after it, with the default Params."""
    containers_before = container_names()  # docker-proxy's volume outlives runs: judge only this test's
    name = unique("CI lecture")
    drop(lecture, f"{name}.mp4", stack["uid"])
    out = DATA / "output" / name
    wait_for(f"output/{name}/report.pdf", lambda: (out / "report.pdf").is_file(), VIDEO_TIMEOUT,
             on_timeout=lambda: f"runs: {[(r['dag_run_id'], r['state']) for r in api.runs('lecture_to_pdf')]}")
    assert transcript_wer(out) <= 0.15, (out / "transcript.txt").read_text()
    text = subprocess.run(["pdftotext", str(out / "report.pdf"), "-"], capture_output=True, text=True).stdout
    assert word_error_rate(SCRIPT, text.rsplit("Transcript", 1)[-1]) <= 0.15
    for path in (out, *out.iterdir()):
        assert path.stat().st_uid == stack["uid"], (path, path.stat().st_uid)
    assert not (out / "audio.wav").exists()  # the default: keep_byproducts off
    assert not list((DATA / "input").glob("CI *"))
    runs = [r for r in api.runs("lecture_to_pdf") if r["dag_run_id"].endswith("__" + name.replace(" ", "_"))]
    assert [(r["dag_run_id"].split("__")[0], r["state"]) for r in runs] == [("video", "success")], runs
    wait_for("no konspekt container left in docker-proxy", lambda: not container_names() - containers_before,
             60, on_timeout=lambda: str(task_containers()))


def test_a_bad_file_is_quarantined(stack, api):
    broken = unique("CI broken")
    drop(b"this is not a video, only a few bytes of text\n" * 20, f"{broken}.mp4", stack["uid"])
    failed = DATA / "failed" / broken
    wait_for(f"failed/{broken}/error.json", lambda: (failed / "error.json").is_file(), 300)
    error = json.loads((failed / "error.json").read_text())
    assert error["stage"] == "extract_audio" and error["reason"], error
    assert (failed / f"{broken}.mp4").read_bytes().startswith(b"this is not a video")
    assert not list((DATA / "input").glob("CI *"))


def test_browser_triggers_lecture_to_pdf_with_a_changed_param(ui, api, stack):
    # A run triggered by hand claims what input/ holds, waiting up to a minute for a file (README:
    # "Other Params for one video").
    before = {r["dag_run_id"] for r in api.runs("lecture_to_pdf")}
    ui.open_trigger_form("lecture_to_pdf")
    ui.set_param("keep_byproducts", True)
    ui.screenshot("03-trigger-form")
    run_id = ui.submit_trigger()
    run = api.run("lecture_to_pdf", run_id)
    assert run_id not in before and run["run_type"] == "manual", run
    assert run["conf"].get("keep_byproducts") is True, run["conf"]
    stack["state"]["manual_run"] = run_id


def test_the_triggered_run_takes_the_lecture_dropped_while_it_waits(ui, api, stack, lecture):
    run_id = stack["state"].get("manual_run")
    if not run_id:
        pytest.skip("the trigger test did not start a run")

    def claiming():
        return any(t["task_id"] == "claim" and t["state"] == "running" for t in api.tasks("lecture_to_pdf", run_id))

    wait_for(f"run {run_id} claiming", claiming, 300, every=1, on_timeout=lambda: str(api.tasks("lecture_to_pdf", run_id)))
    name = unique("CI with params")
    drop(lecture, f"{name}.mp4", stack["uid"])
    state = ui.wait_for_run("lecture_to_pdf", run_id, VIDEO_TIMEOUT)
    ui.screenshot("04-run-finished")
    assert state == "success", state
    out = DATA / "output" / name
    assert (out / "report.pdf").is_file() and (out / "audio.wav").is_file()  # keep_byproducts=true
    assert transcript_wer(out) <= 0.15


def test_training_from_the_rest_api_writes_a_readable_loss_log(api, stack):
    from konspekt.layout import safe_name
    from tiny_whisper import PHRASES, build_dataset

    dataset = f"ci-{uuid.uuid4().hex[:6]}"
    build_dataset(DATA / "train" / dataset, sentences=PHRASES[:3], voices=[("en-us", 150)], video_every=3)
    conf = {"dataset": dataset, "base_model": env_value("KONSPEKT_TRAIN_BASE_MODEL"), "epochs": 2.0,
            "batch_size": 1, "grad_accum": 1, "learning_rate": 1e-3, "warmup_steps": 1, "log_every": 1,
            "ckpt_every": 2, "eval_every": 2, "device": "cpu", "val_fraction": 0.3}
    run = api.call("POST", "/api/v2/dags/train_asr/dagRuns",
                   {"logical_date": None, "conf": conf, "dag_run_id": f"ci__{dataset}"})
    run_id = run["dag_run_id"]
    state = wait_for(f"train_asr run {run_id}",
                     lambda: (s := api.run("train_asr", run_id)["state"]) in ("success", "failed") and s, 900,
                     on_timeout=lambda: str([(t["task_id"], t["state"]) for t in api.tasks("train_asr", run_id)]))
    assert state == "success", [(t["task_id"], t["state"]) for t in api.tasks("train_asr", run_id)]
    log = DATA / "logs" / safe_name(run_id) / "train.log"
    text = log.read_text()
    steps = re.findall(r" step (\d+)/4 epoch [\d.]+ loss [\d.]+ ", text)
    assert steps == ["1", "2", "3", "4"], text  # 2 clips, batch 1, 2 epochs: a line per optimizer step
    assert log.stat().st_uid == stack["uid"] and log.stat().st_mode & 0o044, oct(log.stat().st_mode)


# About 7 min of speech: transcribe runs ~30 s, longer than the 10 s compose gives the scheduler to stop.
LONG_SCRIPT = " ".join([SCRIPT] * 12)


@pytest.fixture(scope="module")
def long_lecture(tmp_path_factory) -> Path:
    return speak(LONG_SCRIPT, tmp_path_factory.mktemp("media") / "long lecture.mp4")


def test_a_scheduler_restart_mid_video_finishes_it_once(api, stack, long_lecture):
    name = unique("CI restart")
    drop(long_lecture, f"{name}.mp4", stack["uid"])

    def transcribing():
        for run in api.runs("lecture_to_pdf")[:3]:
            for task in api.tasks("lecture_to_pdf", run["dag_run_id"]):
                if task["task_id"].endswith("transcribe") and task["state"] == "running":
                    return run["dag_run_id"]
        return None

    run_id = wait_for("transcribe running", transcribing, 600, every=1)
    images_before = compose("exec", "-T", "docker-proxy", "docker", "images", "-q").stdout.split()
    restart = compose("restart", "airflow-scheduler", timeout=180)
    assert restart.returncode == 0, restart.stderr
    out = DATA / "output" / name
    wait_for(f"output/{name}/report.pdf after the restart", lambda: (out / "report.pdf").is_file(), VIDEO_TIMEOUT,
             on_timeout=lambda: compose("logs", "--tail", "80", "airflow-scheduler").stdout)
    tries = {t["task_id"]: t["try_number"] for t in api.tasks("lecture_to_pdf", run_id)}
    assert tries["process.transcribe"] >= 2, tries  # the restart did cut the stage off; a retry finished it
    assert word_error_rate(LONG_SCRIPT, (out / "transcript.txt").read_text()) <= 0.15
    assert not list((DATA / "output").glob(f"{name} (*")), "published twice"
    assert not (DATA / "failed" / name).exists()
    assert len(list((DATA / "processed").rglob(f"{name}.mp4"))) == 1
    assert not list((DATA / "processing").rglob(f"{name}*"))
    images_after = compose("exec", "-T", "docker-proxy", "docker", "images", "-q").stdout.split()
    assert set(images_before) <= set(images_after)  # docker-proxy kept its image cache
