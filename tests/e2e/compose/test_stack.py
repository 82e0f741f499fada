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
import uuid
from pathlib import Path

import pytest
from compose_stack import (
    DATA,
    ROOT,
    VIDEO_TIMEOUT,
    api,  # noqa: F401 (a fixture)
    compose,
    container_names,
    drop,
    env_value,
    stack,  # noqa: F401 (a fixture)
    task_containers,
    transcript_wer,
    unique,
    wait_for,
)

from konspekt.sample import SCRIPT, speak, word_error_rate

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("KONSPEKT_COMPOSE_E2E") != "1",
                                 reason="runs against the compose stack: .ci/compose-e2e.sh (make compose-e2e)")]


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
    stack["state"]["watch_folder_output"] = out
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


def pdf_text(path: Path) -> str:
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout


def test_the_upload_page_takes_a_lecture_and_gives_back_its_pdf(ui, stack, lecture, tmp_path):
    """A lecturer with an API key: the page at /konspekt/ (the api-server's upload plugin) uploads the sample
    lecture, follows it to published, and downloads the PDF, which matches the watch folder's."""
    from selenium.webdriver.common.by import By

    made = compose("exec", "-T", "airflow-apiserver", "konspekt", "keys", "create", "--owner", "ci-page")
    assert made.returncode == 0, made.stderr
    key = next(word for word in made.stdout.split() if word.startswith("kp_"))
    name = unique("CI page")  # its own bytes (a comment tag): the same bytes twice are only archived
    video = tmp_path / f"{name}.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(lecture), "-c", "copy",
                    "-metadata", f"comment={name}", str(video)], check=True)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = ui.driver
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.get(stack["url"] + "/konspekt/")
    driver.find_element(By.ID, "key").send_keys(key + "\n")
    driver.execute_script("document.getElementById('key').dispatchEvent(new Event('change'))")
    chooser = driver.find_element(By.ID, "file")
    driver.execute_script("arguments[0].hidden = false", chooser)  # a person clicks the drop zone instead
    chooser.send_keys(str(video))
    ui.screenshot("05-upload-page-uploaded")

    def published():
        return driver.find_elements(By.CSS_SELECTOR, "td.state-published")

    wait_for(f"{name} published on the page", published, VIDEO_TIMEOUT, every=2,
             on_timeout=lambda: driver.find_element(By.TAG_NAME, "body").text)
    ui.screenshot("06-upload-page-published")
    # the message under the drop zone follows the upload to the end, not "waits for its turn" forever
    assert "is ready" in driver.find_element(By.ID, "message").text
    driver.find_element(By.CSS_SELECTOR, "button[data-file='report.pdf']").click()
    pdf = wait_for("the downloaded PDF", lambda: [p for p in downloads.glob("*.pdf")], 60, every=0.5)[0]
    assert pdf.name == f"{name}-report.pdf"
    # the same file the pipeline published, and the same notes as the watch folder's run of this lecture
    assert pdf.read_bytes() == (DATA / "output" / name / "report.pdf").read_bytes()
    watched = stack["state"].get("watch_folder_output")
    if watched:
        assert (DATA / "output" / name / "transcript.txt").read_text() == (watched / "transcript.txt").read_text()
        assert pdf_text(pdf).rsplit("Transcript", 1)[-1] == pdf_text(watched / "report.pdf").rsplit("Transcript", 1)[-1]
    assert transcript_wer(DATA / "output" / name) <= 0.15


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
    from tiny_whisper import PHRASES, build_dataset

    from konspekt.layout import safe_name

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
