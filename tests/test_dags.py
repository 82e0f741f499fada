"""DAG integrity: the bundle imports cleanly, is wired as documented, and docker mode gets the right arguments."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"


def load_dagbag(monkeypatch, **env):
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    # settings.expose_connection() setdefaults this; set it here so monkeypatch removes it afterwards
    # instead of leaking a temp path into later tests' Airflow subprocesses.
    monkeypatch.setenv("AIRFLOW_CONN_KONSPEKT_DATA", "fs://")
    for key, value in env.items():
        monkeypatch.setenv(f"KONSPEKT_{key}", value)
    for name in [m for m in sys.modules if m.startswith("konspekt_dags")]:
        del sys.modules[name]  # settings are read once per process: start from a clean import
    monkeypatch.syspath_prepend(str(DAGS))
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors_and_the_task_graph(monkeypatch, tmp_path):
    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path))
    assert bag.import_errors == {}
    dag = bag.dags["lecture_to_pdf"]
    assert dag.doc_md and "airflow/data/input" in dag.doc_md
    assert set(dag.task_ids) == {
        "wait_for_video", "claim", "process.extract_audio", "process.transcribe", "process.summarize",
        "process.features", "process.outline", "process.render_pdf", "process.finalize"}
    down = {t.task_id: set(t.downstream_task_ids) for t in dag.tasks}
    assert down["wait_for_video"] == {"claim"}
    assert down["process.extract_audio"] == {"process.transcribe"}
    assert down["process.transcribe"] == {"process.summarize", "process.features", "process.outline"}
    assert down["process.summarize"] == down["process.features"] == down["process.outline"] == {"process.render_pdf"}
    assert down["process.render_pdf"] == {"process.finalize"}
    assert dag.get_task("process.finalize").trigger_rule == "all_done"
    assert set(dag.params) >= {"whisper_model", "language", "device", "summary_method", "summary_model",
                               "summary_models", "force"}
    assert dag.params["force"] is False
    # claim adopts every folder left in processing/ as an orphan: only safe while runs never overlap
    assert dag.max_active_runs == 1
    sensor = dag.get_task("wait_for_video")
    assert sensor.fs_conn_id == "konspekt_data" and sensor.filepath.startswith("input/")
    for stage in ("extract_audio", "transcribe", "summarize", "features", "outline", "render_pdf"):
        command = dag.get_task(f"process.{stage}").command
        assert command[command.index("--force") + 1] == "{{ params.force }}", stage


def test_the_sensor_wakes_for_new_files_and_for_videos_a_dead_run_left(monkeypatch, tmp_path):
    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path))
    monkeypatch.setenv("AIRFLOW_CONN_KONSPEKT_DATA", json.dumps({"conn_type": "fs", "extra": {"path": str(tmp_path)}}))
    sensor = bag.dags["lecture_to_pdf"].get_task("wait_for_video")
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / ".hidden.mp4").write_bytes(b"x")
    assert sensor.poke({}) is False
    (tmp_path / "processing" / "20260101T000000-abcdef" / "talk" / "source").mkdir(parents=True)
    assert sensor.poke({}) is True
    (tmp_path / "processing" / "20260101T000000-abcdef" / "talk" / "source").rmdir()
    (tmp_path / "processing" / "20260101T000000-abcdef" / "talk").rmdir()
    assert sensor.poke({}) is False
    (tmp_path / "input" / "talk.mp4").write_bytes(b"x")
    assert sensor.poke({}) is True


def test_local_mode_runs_the_stage_argv_with_the_local_interpreter(monkeypatch, tmp_path):
    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), RUNNER="local")
    task = bag.dags["lecture_to_pdf"].get_task("process.transcribe")
    assert type(task).__name__ == "LocalStageOperator"
    assert task.command[:4] == ["python", "-m", "konspekt.stages.transcribe", "--video-dir"]
    assert "{{ params.whisper_model }}" in task.command
    # the per-language summary models travel as one JSON argument
    summarize = bag.dags["lecture_to_pdf"].get_task("process.summarize")
    template = summarize.command[summarize.command.index("--models") + 1]
    from jinja2.sandbox import SandboxedEnvironment

    rendered = SandboxedEnvironment().from_string(template).render(params={"summary_models": {"ru": "org/ru-sum"}})
    assert json.loads(rendered) == {"ru": "org/ru-sum"}
    from konspekt_dags import local_runner

    assert local_runner.to_local_arg("/data/processing/a b/c") == f"{tmp_path}/processing/a b/c"
    assert local_runner.to_local_arg("/database") == "/database"


def test_docker_mode_operator_arguments(monkeypatch, tmp_path):
    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), RUNNER="docker", DOCKER_URL="tcp://docker-proxy:2375",
                      DATA_MOUNT_SOURCE="/srv/konspekt/data", CACHE_MOUNT_SOURCE="/srv/konspekt/cache",
                      IMAGE_TAG="0.1.0", DOCKER_USER="1000:1000", GPU="true")
    assert bag.import_errors == {}
    dag = bag.dags["lecture_to_pdf"]
    images = {}
    for stage in ("extract_audio", "transcribe", "summarize", "features", "outline", "render_pdf"):
        op = dag.get_task(f"process.{stage}")
        assert type(op).__name__ == "DockerOperator"
        images[stage] = op.image
        assert op.command[:3] == ["python", "-m", f"konspekt.stages.{stage}"]
        assert op.docker_url == "tcp://docker-proxy:2375"
        assert op.mount_tmp_dir is False and op.auto_remove == "success" and op.network_mode == "none"
        assert op.user == "1000:1000"
        assert 2 in op.skip_on_exit_code  # bad input skips, it is not retried
        mounts = {m["Target"]: (m["Source"], m["Type"]) for m in op.mounts}
        assert mounts == {"/data": ("/srv/konspekt/data", "bind"), "/root/.cache": ("/srv/konspekt/cache", "bind")}
        gpu = op.device_requests
        assert (gpu is not None) == (stage in {"transcribe", "summarize"})
    assert images["transcribe"] == "konspekt-asr:0.1.0" and images["extract_audio"] == "konspekt-audio:0.1.0"
    assert images["outline"] == images["summarize"] == "konspekt-summarize:0.1.0"  # sentence-transformers is there
    assert len(set(images.values())) == 5


def test_parsing_imports_nothing_heavy():
    code = (
        "import sys, time; sys.path.insert(0, 'dags'); t = time.perf_counter();"
        "import importlib.util as u; s = u.spec_from_file_location('d', 'dags/lecture_to_pdf.py');"
        "m = u.module_from_spec(s); s.loader.exec_module(m);"
        "heavy = [x for x in ('torch', 'transformers', 'faster_whisper', 'opensmile', 'reportlab', 'matplotlib',"
        " 'docker', 'konspekt.stages') if x in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
