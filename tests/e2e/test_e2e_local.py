"""The inference DAG end to end through Airflow (`airflow dags test`) in local mode.

A good spoken lecture and a broken file are dropped together: the good one must
become a PDF whose text holds the spoken script, the broken one must land in
failed/ with its bytes untouched, and neither may stop the other.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import airflow_env, dags_test

from konspekt.sample import SCRIPT, word_error_rate

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dag_run(tmp_path_factory, lecture_mp4, silent_video, tiny_en_model):
    base = tmp_path_factory.mktemp("e2e")
    data = base / "data"
    (data / "input").mkdir(parents=True)
    good = data / "input" / "Лекция 1 — the 'water' cycle $(touch pwned).mp4"  # no name reaches a shell
    bad = data / "input" / "no sound.mp4"
    shutil.copy(lecture_mp4, good)
    shutil.copy(silent_video, bad)
    (data / "input" / "still copying.mp4.part").write_bytes(b"partial")
    env = airflow_env(base, data, KONSPEKT_WHISPER_MODEL=tiny_en_model)
    proc = dags_test(env)
    (base / "dags-test.log").write_text(proc.stdout + proc.stderr)
    return data, proc, lecture_mp4.read_bytes(), silent_video.read_bytes()


def test_good_video_becomes_a_pdf_with_the_transcript(dag_run):
    data, proc, _, _ = dag_run
    out = data / "output" / "Лекция 1 — the 'water' cycle $(touch pwned)"
    assert (out / "report.pdf").is_file(), proc.stdout[-3000:]
    text = subprocess.run(["pdftotext", str(out / "report.pdf"), "-"], capture_output=True, text=True,
                          check=True).stdout
    transcript_part = text.rsplit("Transcript", 1)[-1]  # the last page(s): the cover's contents name it too
    assert word_error_rate(SCRIPT, transcript_part) <= 0.15
    summary = json.loads((out / "summary.json").read_text())
    assert summary["text"].strip() and summary["text"].split(".")[0] in " ".join(text.split())
    for name in ("transcript.json", "transcript.txt", "transcript.srt", "transcript.vtt", "features.csv",
                 "features.json", "outline.json", "report.json", "manifest.json"):
        assert (out / name).is_file(), name
    assert not (out / "audio.wav").exists()  # a byproduct, dropped unless keep_byproducts
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(s["status"] == "ok" for s in manifest["stages"].values())


def test_the_ui_lists_each_video_by_its_file_name_and_shows_progress(dag_run):
    """Mapped task instances carry the file's name (map_index_template), not 0, 1; the stage's
    progress lines reach the task log."""
    import sqlite3

    data, proc, _, _ = dag_run
    with sqlite3.connect(data.parent / "airflow" / "airflow.db") as db:
        labels = db.execute("select task_id, rendered_map_index from task_instance "
                            "where dag_id = 'lecture_to_pdf' and map_index >= 0").fetchall()
    by_task: dict[str, set] = {}
    for task_id, label in labels:
        by_task.setdefault(task_id, set()).add(label)
    names = {"Лекция 1 — the 'water' cycle $(touch pwned).mp4", "no sound.mp4"}
    assert by_task["process.extract_audio"] == names, labels
    # finalize's label also says where the video went: the output folder, or failed/ for a bad file
    assert by_task["process.finalize"] == {"Лекция 1 — the 'water' cycle $(touch pwned).mp4 → output/"
                                           "Лекция 1 — the 'water' cycle $(touch pwned)/",
                                           "no sound.mp4 → failed/no sound/"}, labels
    assert "Лекция 1 — the 'water' cycle $(touch pwned).mp4" in by_task["process.render_pdf"], labels
    log = proc.stdout + proc.stderr
    assert "transcribed 100% of" in log, log[-3000:]


def test_bad_video_is_quarantined_and_untouched(dag_run):
    data, _, _, silent_bytes = dag_run
    failed = data / "failed" / "no sound"
    assert (failed / "no sound.mp4").read_bytes() == silent_bytes
    error = json.loads((failed / "error.json").read_text())
    assert error["stage"] == "extract_audio" and "no audio track" in error["reason"]


def test_no_file_name_is_ever_executed(dag_run):
    data = dag_run[0]
    assert not list(data.parent.rglob("pwned")) and not (ROOT / "pwned").exists()


def test_inputs_are_archived_and_temp_files_left_alone(dag_run):
    data, _, good_bytes, _ = dag_run
    [archived] = (data / "processed").rglob("*.mp4")
    assert archived.read_bytes() == good_bytes
    assert [p.name for p in (data / "input").iterdir()] == ["still copying.mp4.part"]
    assert not any((data / "processing").iterdir())


def test_a_file_still_being_copied_is_claimed_only_once_complete(tmp_path, lecture_mp4, tiny_en_model):
    """Through the DAG: a writer appends the lecture slowly under its final name while the run starts.

    Claim sees the file at once; it must wait until it has been unchanged for
    KONSPEKT_STABLE_SECONDS. Claimed early, the mp4 would lack its index (ffmpeg writes it
    last) and end in failed/, or the transcript would be cut short.
    """
    import threading
    import time

    data = tmp_path / "data"
    (data / "input").mkdir(parents=True)
    payload = lecture_mp4.read_bytes()
    chunks = 40  # every 0.5 s: 20 s of copying, longer than the run takes to reach claim
    target = data / "input" / "slow copy.mp4"
    started = threading.Event()

    def slow_writer():
        with open(target, "wb") as out:
            for i in range(chunks):
                out.write(payload[i * len(payload) // chunks:(i + 1) * len(payload) // chunks])
                out.flush()
                started.set()
                time.sleep(0.5)

    writer = threading.Thread(target=slow_writer)
    writer.start()
    started.wait(10)
    env = airflow_env(tmp_path, data, KONSPEKT_WHISPER_MODEL=tiny_en_model, KONSPEKT_STABLE_SECONDS="3")
    proc = dags_test(env)
    writer.join()
    log = proc.stdout + proc.stderr
    assert f"claimed 'slow copy.mp4' ({len(payload)} bytes)" in log, log[-3000:]  # whole, when claimed
    out = data / "output" / "slow copy"
    assert (out / "report.pdf").is_file(), log[-5000:]
    assert not (data / "failed").exists() or not any((data / "failed").iterdir())
    [archived] = (data / "processed").rglob("slow copy.mp4")
    assert archived.read_bytes() == payload  # the whole file was claimed, and never changed
    assert word_error_rate(SCRIPT, (out / "transcript.txt").read_text()) <= 0.15  # all of the lecture, not a cut-off start

