"""The training DAG: wiring, docker-mode arguments, and a run end to end in local mode (`airflow dags test`)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from airflow.providers.docker.operators.docker import DockerOperator
from conftest import airflow_env, dags_test

from test_dags import load_dagbag

ROOT = Path(__file__).resolve().parents[2]
TASKS = ["read_data", "make_batches", "train", "evaluate", "export"]


def test_train_dag_wiring_and_params(monkeypatch, tmp_path):
    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), RUNNER="local")
    assert bag.import_errors == {}
    dag = bag.dags["train_asr"]
    assert dag.schedule is None or str(dag.timetable.summary) in ("None", "")
    assert dag.doc_md and "data/train/<dataset>" in dag.doc_md and "train.log" in dag.doc_md
    assert set(dag.task_ids) == {"check_params", *TASKS, "register_model"}
    assert dag.get_task("check_params").downstream_task_ids == {TASKS[0]}
    for upstream, downstream in zip(TASKS, [*TASKS[1:], "register_model"]):
        assert dag.get_task(upstream).downstream_task_ids == {downstream}
    # the registry is written by Airflow, after export: the export's container writes only models/<run>/
    register = dag.get_task("register_model")
    assert [a.name for a in register.outlets] == ["konspekt-finetuned-whisper"] and register.pool == "default_pool"
    export = dag.get_task("export").command
    assert export[export.index("--dataset") + 1] == "{{ params.dataset }}"  # recorded in the marker
    assert set(dag.params) >= {"dataset", "base_model", "epochs", "learning_rate", "batch_size", "grad_accum",
                               "max_steps", "device", "eval_every", "ckpt_every"}
    task = dag.get_task("make_batches")
    assert type(task).__name__ == "LocalStageOperator" and task.skip_bad_input is False
    assert task.command[:5] == ["python", "-m", "konspekt.training.batches", "--run-dir",
                                "/data/train_runs/{{ run_id | folder_name }}"]
    assert "--dataset" in dag.get_task("read_data").command


def test_run_folder_names_match_the_package(monkeypatch, tmp_path):
    """The DAG names the run folder with the package's own function: one rule, no copy to drift."""
    from konspekt.layout import safe_name

    dag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path)).dags["train_asr"]
    assert dag.user_defined_filters["folder_name"] is safe_name


def test_docker_mode_runs_training_in_the_train_image(monkeypatch, tmp_path):
    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), RUNNER="docker", DATA_MOUNT_SOURCE="/srv/k/data",
                      CACHE_MOUNT_SOURCE="/srv/k/cache", IMAGE_TAG="0.1.0", DOCKER_USER="1000:1000", GPU="true")
    assert bag.import_errors == {}
    dag = bag.dags["train_asr"]
    for name in TASKS:
        op = dag.get_task(name)
        assert isinstance(op, DockerOperator)
        assert op.image == "konspekt-train:0.1.0"
        assert op.command[:2] == ["python", "-m"] and op.command[2].startswith("konspekt.training.")
        assert op.network_mode == "none" and op.mount_tmp_dir is False and op.user == "1000:1000"
        mounts = {m["Target"]: (m["Source"], m.get("ReadOnly", False)) for m in op.mounts}
        assert mounts == {"/root/.cache": ("/srv/k/cache", True)}  # the run's folders: bound when it runs
        assert (op.device_requests is not None) == (name in {"train", "evaluate"})
        assert 2 not in (op.skip_on_exit_code or [])  # an unusable dataset fails the run


def run_train_dag(base: Path, base_model: str, **env_extra: str) -> tuple[Path, str]:
    """`airflow dags test train_asr` on a 3-clip dataset in ``base/data``; the run folder and the output."""
    # 2 training clips, 1 per micro-batch, no accumulation: 2 epochs are 4 optimizer steps
    conf = {"dataset": "mini", "base_model": base_model, "epochs": 2.0, "max_steps": 0, "batch_size": 1,
            "grad_accum": 1, "learning_rate": 1e-3, "warmup_steps": 1, "log_every": 1, "ckpt_every": 2,
            "eval_every": 2, "device": "cpu", "val_fraction": 0.3}
    data = base / "data"
    env = airflow_env(base, data, **env_extra)
    proc = dags_test(env, "train_asr", "-c", json.dumps(conf))
    output = proc.stdout + proc.stderr
    (base / "dags-test.log").write_text(output)
    runs = list((data / "train_runs").iterdir()) if (data / "train_runs").is_dir() else []
    assert len(runs) == 1, output[-4000:]
    return runs[0], output


def check_train_run(run_dir: Path, output: str) -> None:
    data = run_dir.parents[1]
    assert ":" not in run_dir.name and "+" not in run_dir.name
    results = {t: json.loads((run_dir / "stages" / f"{m}.json").read_text())["status"]
               for t, m in zip(TASKS, ["read_data", "batches", "train", "evaluate", "export"])
               if (run_dir / "stages" / f"{m}.json").is_file()}
    assert results == dict.fromkeys(TASKS, "ok"), output[-4000:]
    log = (data / "logs" / run_dir.name / "train.log").read_text()
    assert all(f" step {s}/4 epoch {s / 2:.2f} " in log for s in range(1, 5)), log
    assert "eval before training" in log and "eval after training" in log
    ct2 = data / "models" / run_dir.name / "ct2"
    assert (ct2 / "model.bin").is_file() and json.loads((ct2 / "konspekt.json").read_text())["steps"] == 4
    assert (data / "logs" / run_dir.name / "loss.png").is_file()
    assert "DagRun Finished: dag_id=train_asr" in output and "state=success" in output, output[-3000:]
    check_registered(run_dir, output)


def check_registered(run_dir: Path, output: str) -> None:
    """register_model recorded the export in data/models/registry.json and updated the asset."""
    from konspekt import finetuned

    data = run_dir.parents[1]
    marker = json.loads((data / "models" / run_dir.name / "ct2" / "konspekt.json").read_text())
    assert marker["dataset"] == "mini" and marker["run"] == run_dir.name
    entry = finetuned.load(data)[run_dir.name]
    assert entry["run_id"].startswith("manual__") and entry["dataset"] == "mini"
    assert entry["path"] == f"/data/models/{run_dir.name}/ct2"
    evaluation = json.loads((run_dir / "stages" / "evaluate.json").read_text())["details"]
    assert (entry["wer_before"], entry["wer_after"]) == (evaluation["wer_before"], evaluation["wer_after"])
    eligible = finetuned.why_not(entry, data) is None
    log = (data / "logs" / run_dir.name / "train.log").read_text()
    assert ("whisper_model=latest-finetuned (once register_model" in log) == eligible, log[-1500:]
    # the asset event, with the run and its WER, in Airflow's database
    with sqlite3.connect(data.parent / "airflow" / "airflow.db") as db:
        events = db.execute("SELECT e.extra, e.source_task_id FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                            "WHERE a.name = 'konspekt-finetuned-whisper' AND a.uri = "
                            "'file:///data/models/registry.json'").fetchall()
    assert len(events) == 1 and events[0][1] == "register_model", events
    extra = json.loads(events[0][0])
    assert extra["run"] == run_dir.name and extra["eligible"] == eligible
    assert (extra["wer_before"], extra["wer_after"]) == (entry["wer_before"], entry["wer_after"])


def make_inputs(base: Path) -> Path:
    """The 3-clip dataset in base/data/train/mini; the tiny base model in base/cache/tiny-whisper."""
    from tiny_whisper import PHRASES, build_model

    from konspekt.sample import speak_dataset

    speak_dataset(base / "data" / "train" / "mini", PHRASES[:3], [("en-us", 150)], video_every=3)
    return build_model(base / "cache" / "tiny-whisper")


@pytest.mark.slow
def test_train_dag_end_to_end_in_local_mode(tmp_path):
    base_model = make_inputs(tmp_path)
    check_train_run(*run_train_dag(tmp_path, str(base_model)))


@pytest.mark.slow
def test_train_dag_end_to_end_in_docker_mode(tmp_path):
    """Every step in the konspekt-train image, as uid 1000, no network, the dataset mounted read-only.

    Runs with KONSPEKT_DOCKER_E2E=1 (.ci/docker-e2e.sh), like tests/e2e/test_e2e_docker.py.
    """
    if os.environ.get("KONSPEKT_DOCKER_E2E") != "1":
        pytest.skip("docker-mode end to end runs only with KONSPEKT_DOCKER_E2E=1 (see .ci/docker-e2e.sh)")
    if os.geteuid() != 0:
        pytest.skip("needs root: the data root is handed to uid 1000, as the task containers run")
    from konspekt.docker_api import DockerAPI, DockerError

    url = os.environ.get("KONSPEKT_DOCKER_URL") or "unix:///var/run/docker.sock"
    image = "{}-train:{}".format(os.environ.get("KONSPEKT_IMAGE_PREFIX") or "konspekt",
                                 os.environ.get("KONSPEKT_IMAGE_TAG") or "latest")
    api = DockerAPI(url)
    try:
        api.ping()
    except DockerError as exc:
        pytest.fail(f"KONSPEKT_DOCKER_E2E=1 but no Docker engine answers at {url}: {exc}")
    if api.image(image) is None:
        pytest.fail(f"{image} is missing in {url} (build it: images/build.sh train)")
    make_inputs(tmp_path)
    dataset = tmp_path / "data" / "train" / "mini"
    before = {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()}
    for p in (tmp_path, *tmp_path.rglob("*")):
        os.chown(p, 1000, 1000, follow_symlinks=False)
    run_dir, output = run_train_dag(
        tmp_path, "/root/.cache/tiny-whisper",  # the base model inside the task container
        KONSPEKT_RUNNER="docker", KONSPEKT_DOCKER_URL=url, KONSPEKT_DOCKER_USER="1000:1000",
        KONSPEKT_DATA_MOUNT_SOURCE=str(tmp_path / "data"), KONSPEKT_CACHE_MOUNT_SOURCE=str(tmp_path / "cache"))
    check_train_run(run_dir, output)
    assert output.count(f"Starting docker container from image {image}") == len(TASKS), output[-3000:]
    assert {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()} == before  # read only
    assert (run_dir / "model" / "config.json").stat().st_uid == 1000
