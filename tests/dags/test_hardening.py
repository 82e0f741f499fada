"""Issue 15 on the Airflow side: what each task container sees, Params as input, time limits, exit codes."""

import json
import subprocess
import sys
from datetime import timedelta

import pytest
from conftest import airflow_env, dags_test
from test_dags import load_dagbag

from konspekt import registry
from konspekt.contracts import EXIT_BAD_INPUT, EXIT_USAGE

VIDEO = "/data/processing/20260101T000000-abcdef/lecture"


def docker_bag(monkeypatch, tmp_path, **env):
    return load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), RUNNER="docker", DATA_MOUNT_SOURCE="/srv/data",
                       CACHE_MOUNT_SOURCE="/srv/cache", **env)


def test_each_task_sees_only_its_own_folders(monkeypatch, tmp_path):
    docker_bag(monkeypatch, tmp_path)
    from konspekt_dags.factory import work_mounts

    def mounts(stage, *argv):  # the work folder is the argument after --video-dir/--run-dir, as the DAG passes it
        work_dir = argv[argv.index(registry.get(stage).work_flag) + 1]
        return {m["Target"]: (m["Source"], m.get("ReadOnly", False))
                for m in work_mounts(registry.get(stage), work_dir, list(argv))}

    assert mounts("transcribe", "python", "-m", "konspekt.stages.transcribe", "--video-dir", VIDEO,
                  "--model", "/data/models/run1/ct2") == {
        VIDEO: (f"/srv/data{VIDEO[5:]}", False),
        f"{VIDEO}/source": (f"/srv/data{VIDEO[5:]}/source", True),  # the user's file
        "/data/models/run1/ct2": ("/srv/data/models/run1/ct2", True),  # the trained model it loads
    }
    run = "/data/train_runs/manual-1"
    assert mounts("training.read_data", "python", "-m", "konspekt.training.read_data", "--run-dir", run,
                  "--dataset", "/data/train/lectures") == {
        run: ("/srv/data/train_runs/manual-1", False),
        "/data/logs/manual-1": ("/srv/data/logs/manual-1", False),
        "/data/models/manual-1": ("/srv/data/models/manual-1", False),
        "/data/train_cache": ("/srv/data/train_cache", False),
        "/data/train/lectures": ("/srv/data/train/lectures", True),  # only its own dataset, only read
    }
    assert "/data/train/lectures" not in mounts("training.train", "python", "-m", "konspekt.training.train",
                                                "--run-dir", run)
    # the folders a task writes exist before the daemon binds them
    assert (tmp_path / "logs" / "manual-1").is_dir() and (tmp_path / VIDEO[6:]).is_dir()
    # nothing outside the data root, nor the data root itself, is ever bound
    for hostile in ("/data/processing/../../etc", "/data", "/etc/passwd", "/data/models/../input"):
        assert mounts("render_pdf", "python", "-m", "x", "--video-dir", hostile, "--model", hostile) == {}


def test_the_time_limit_scales_with_the_lecture(monkeypatch, tmp_path):
    bag = docker_bag(monkeypatch, tmp_path, TIMEOUT_MINUTES="30", TIMEOUT_FACTOR="6", MAX_DURATION_HOURS="6")
    from konspekt_dags.factory import scale_timeout

    dag = bag.dags["lecture_to_pdf"]
    task = dag.get_task("process.transcribe")
    task.command = [VIDEO if not isinstance(a, str) else a for a in task.command]  # as rendered
    task.work_dir = VIDEO
    scale_timeout({"task": task})  # extract_audio has not run: the longest lecture allowed counts
    assert task.execution_timeout == timedelta(minutes=30, hours=36)
    results = tmp_path / VIDEO[6:] / "stages"
    results.mkdir(parents=True)
    (results / "extract_audio.json").write_text(json.dumps({"details": {"duration": 3600.0}}))
    scale_timeout({"task": task})
    assert task.execution_timeout == timedelta(minutes=30, hours=6)
    (results / "extract_audio.json").write_text(json.dumps({"details": {"duration": 1e9}}))  # a lying result
    scale_timeout({"task": task})
    assert task.execution_timeout == timedelta(minutes=30, hours=36)
    for t in dag.tasks:
        assert t.execution_timeout or t._pre_execute_hook is scale_timeout, t.task_id
    for t in bag.dags["lecture_inbox"].tasks:  # the sensor has its own timeout (soft_fail: the next run waits)
        assert t.execution_timeout or (t.task_id == "wait_for_video" and t.timeout), t.task_id
    for t in bag.dags["train_asr"].tasks:
        light = t.task_id in ("check_params", "register_model")
        assert t.execution_timeout == (timedelta(minutes=5) if light else timedelta(hours=72)), t.task_id
    assert "--max-duration" in dag.get_task("process.extract_audio").command


@pytest.mark.parametrize("params, message", [
    ({"whisper_model": "../../../etc"}, "is not a model name"),
    ({"whisper_model": "/etc/ssh"}, "must be under /data/models/"),
    ({"whisper_model": "/data/models/../input/x"}, "must be under /data/models/"),
    ({"whisper_model": "--help"}, "is not a model name"),
    ({"summary_model": "-x"}, "is not a model name"),
    ({"summary_models": {"ru": "/root/../etc"}}, "must be under"),
    ({"summary_models": {"../x": "org/model"}}, "language code"),
    ({"language": "--model"}, "language code"),
])
def test_lecture_params_that_escape_or_read_as_options_are_refused(monkeypatch, tmp_path, params, message):
    load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path))
    from konspekt_dags.params import BadParam, check_lecture_params
    from konspekt_dags.settings import settings

    base = {"whisper_model": settings.whisper_model, "summary_model": settings.summary_model, "language": "auto",
            "summary_models": {}}
    check_lecture_params(base)  # the defaults pass
    for good in ({"whisper_model": "large-v3"}, {"whisper_model": "/data/models/run-1/ct2"},
                 {"whisper_model": "/root/.cache/whisper/tiny.en"}, {"summary_models": {"ru": "org/ru-sum", "*": "x"}}):
        check_lecture_params({**base, **good})
    with pytest.raises(BadParam, match=message.replace("(", r"\(")):
        check_lecture_params({**base, **params})


@pytest.mark.parametrize("dataset", ["../input", "/data/input", "-h", ".", "..", "a/b", ""])
def test_a_dataset_outside_train_is_refused(monkeypatch, tmp_path, dataset):
    load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path))
    from konspekt_dags.params import BadParam, check_train_params

    check_train_params({"dataset": "lectures 2026", "base_model": "openai/whisper-small", "language": "en"})
    with pytest.raises(BadParam, match="one folder under data/train"):
        check_train_params({"dataset": dataset, "base_model": "openai/whisper-small", "language": "en"})


@pytest.mark.slow
def test_a_run_with_a_bad_param_stops_before_any_step(tmp_path):
    data = tmp_path / "data"
    (data / "train" / "secret").mkdir(parents=True)
    proc = dags_test(airflow_env(tmp_path, data), "train_asr", "-c", json.dumps({"dataset": "../train/secret"}),
                     timeout=300)
    output = proc.stdout + proc.stderr
    assert "dataset='../train/secret' must be the name of one folder under data/train/" in output, output[-3000:]
    assert "state=failed" in output and not (data / "train_runs").exists()


@pytest.mark.slow
def test_a_lecture_run_with_a_bad_param_takes_no_file(tmp_path):
    data = tmp_path / "data"
    (data / "input").mkdir(parents=True)
    (data / "input" / "talk.mp4").write_bytes(b"not claimed")
    proc = dags_test(airflow_env(tmp_path, data), "lecture_to_pdf", "-c", json.dumps({"whisper_model": "../../etc"}),
                     timeout=300)
    output = proc.stdout + proc.stderr
    assert "is not a model name" in output and "state=failed" in output, output[-3000:]
    assert (data / "input" / "talk.mp4").read_bytes() == b"not claimed"  # claim checked the Params first
    assert not (data / "processing").exists() or not any((data / "processing").iterdir())


def test_a_wrong_command_line_is_not_bad_input(tmp_path):
    """argparse's own exit code is 2, which would quarantine a good upload: a usage error exits 64."""
    for module in ("konspekt.stages.render_pdf", "konspekt.training.export"):
        proc = subprocess.run([sys.executable, "-m", module, "--no-such-option"], capture_output=True, text=True)
        assert proc.returncode == EXIT_USAGE != EXIT_BAD_INPUT, (module, proc.stderr)
        assert "unrecognized arguments" in proc.stderr or "required" in proc.stderr


def test_a_held_video_fails_finalize_with_what_to_fix_never_fix_the_file(monkeypatch, tmp_path):
    from konspekt import inbox
    from konspekt.contracts import StageResult
    from konspekt.layout import VideoDir, write_json

    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), HOLD_MINUTES="10")
    for sub in ("input", "processing"):
        (tmp_path / sub).mkdir()
    (tmp_path / "input" / "talk.mp4").write_bytes(b"fine")
    [c] = inbox.claim(tmp_path, stable_seconds=0)
    write_json(VideoDir(c.video_dir).result_path("extract_audio"), StageResult("extract_audio", "ok"))
    write_json(VideoDir(c.video_dir).result_path("transcribe"), StageResult(
        "transcribe", "error", message="FileNotFoundError: Whisper model 'small' is not in the cache and "
                                       "HF_HUB_OFFLINE is set: run `python -m konspekt.warm_cache` once"))
    finalize = bag.dags["lecture_to_pdf"].get_task("process.finalize")
    from airflow.sdk.exceptions import AirflowFailException

    from konspekt_dags.settings import settings

    monkeypatch.setitem(finalize.python_callable.__globals__, "get_current_context",
                        lambda: {"params": {"keep_byproducts": False}})
    with pytest.raises(AirflowFailException) as failure:
        finalize.python_callable(settings.to_container(c.video_dir))
    message = str(failure.value)
    assert "warm-up" in message and "fix the file" not in message and "retries it" in message
    assert inbox.orphans(tmp_path) == [c.video_dir] and inbox.due_orphans(tmp_path) == []


def test_a_retry_removes_the_stopped_containers_of_earlier_tries(monkeypatch, tmp_path):
    """A try whose worker died (or whose daemon restarted) leaves its container; the next try removes it."""
    from types import SimpleNamespace

    from test_dags import FakeDockerClient

    bag = docker_bag(monkeypatch, tmp_path, DOCKER_USER="1000:1000")
    op = bag.dags["lecture_to_pdf"].get_task("process.render_pdf")
    op.command = [arg if isinstance(arg, str) else VIDEO for arg in op.command]
    client = FakeDockerClient()
    client.listed = [{"Id": "old-exited", "State": "exited"}, {"Id": "old-running", "State": "running"}]
    op.__dict__["hook"] = SimpleNamespace(api_client=client, client_created=True)
    ti = SimpleNamespace(dag_id="lecture_to_pdf", run_id="manual__1", task_id="process.render_pdf", map_index=3)
    op.execute({"ti": ti})
    key = "lecture_to_pdf/manual__1/process.render_pdf/3"
    assert client.asked == {"label": f"konspekt.task={key}"}
    assert client.removed[0] == "old-exited" and "old-running" not in client.removed  # a running try keeps its lock
    assert client.created["labels"]["konspekt.task"] == key  # so the next try finds this one
