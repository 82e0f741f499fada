"""DAG integrity: the bundle imports cleanly, is wired as documented, and docker mode gets the right arguments."""

import json
import os
import re
import time
import subprocess
import sys
from pathlib import Path

import pytest
from airflow.providers.docker.operators.docker import DockerOperator

from konspekt import registry

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
STAGES = registry.lecture_names()
GPU_STAGES = {stage.name for stage in registry.LECTURE if stage.gpu}


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
        "claim", "process.extract_audio", "process.transcribe", "process.summarize",
        "process.features", "process.outline", "process.render_pdf", "process.finalize"}
    down = {t.task_id: set(t.downstream_task_ids) for t in dag.tasks}
    # claim is the first task (it checks the Params before it takes a file), and each stage maps over its videos
    assert dag.get_task("claim").upstream_task_ids == set() and {"process.extract_audio"} < down["claim"]
    assert down["process.extract_audio"] == {"process.transcribe", "process.features"}  # the voice beside the words
    assert down["process.transcribe"] == {"process.summarize", "process.outline"}
    assert down["process.summarize"] == down["process.features"] == down["process.outline"] == {"process.render_pdf"}
    assert down["process.render_pdf"] == {"process.finalize"}
    assert dag.get_task("process.finalize").trigger_rule == "all_done"
    assert set(dag.params) >= {"whisper_model", "language", "device", "summary_method", "summary_model",
                               "summary_models", "diarize", "speakers", "force"}
    assert dag.params["diarize"] is False and dag.params["speakers"] == 0  # off by default: its model is gated
    assert dag.params["force"] is False
    # one run per video, and they overlap: a lecture dropped mid-batch does not wait for the batch
    assert dag.schedule is None and dag.max_active_runs == 64
    for stage in ("extract_audio", "transcribe", "summarize", "features", "outline", "render_pdf"):
        command = dag.get_task(f"process.{stage}").command
        assert command[command.index("--force") + 1] == "{{ params.force }}", stage


def test_the_watcher_claims_and_starts_one_lecture_to_pdf_run_per_video(monkeypatch, tmp_path):
    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path))
    dag = bag.dags["lecture_inbox"]
    assert dag.doc_md and "airflow/data/input" in dag.doc_md
    assert type(dag.timetable).__name__ == "ContinuousTimetable" and dag.max_active_runs == 1
    down = {t.task_id: set(t.downstream_task_ids) for t in dag.tasks}
    assert down == {"wait_for_video": {"start_lecture_to_pdf"}, "start_lecture_to_pdf": set()}
    sensor = dag.get_task("wait_for_video")  # it claims when it wakes: see the test below
    assert sensor.fs_conn_id == "konspekt_data" and sensor.filepath == "input" and sensor.soft_fail
    start = dag.get_task("start_lecture_to_pdf")
    assert start.partial_kwargs["trigger_dag_id"] == "lecture_to_pdf"
    assert start.partial_kwargs["wait_for_completion"] is False


def test_a_video_s_run_id_is_readable_unique_and_valid_for_airflow():
    from konspekt_dags.claims import run_id_for

    claim = Path("/data/processing/20261202T150000-abc123")
    ids = [run_id_for(claim / "water_cycle"), run_id_for(claim / "Лекция_1"), run_id_for(claim / "Лекция_2"),
           run_id_for(claim / "water_cycle", 1), run_id_for(claim / ("x" * 200))]
    assert ids[0] == "video__20261202T150000-abc123__water_cycle" and ids[3] == ids[0] + ".1"
    assert len(set(ids)) == len(ids)  # names ASCII cannot spell still differ
    assert all(re.fullmatch(r"[A-Za-z0-9_.~:+-]{1,250}", i) for i in ids), ids  # Airflow's allowed run id pattern


def test_the_sensor_wakes_for_new_files_and_for_videos_a_dead_run_left(monkeypatch, tmp_path):
    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path))
    monkeypatch.setenv("AIRFLOW_CONN_KONSPEKT_DATA", json.dumps({"conn_type": "fs", "extra": {"path": str(tmp_path)}}))
    sensor = bag.dags["lecture_inbox"].get_task("wait_for_video")
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / ".hidden.mp4").write_bytes(b"x")
    assert sensor.ready() is False
    (tmp_path / "processing" / "20260101T000000-abcdef" / "talk" / "source").mkdir(parents=True)
    assert sensor.ready() is True
    (tmp_path / "processing" / "20260101T000000-abcdef" / "talk" / "source").rmdir()
    (tmp_path / "processing" / "20260101T000000-abcdef" / "talk").rmdir()
    assert sensor.ready() is False
    (tmp_path / "input" / "talk.mp4").write_bytes(b"x")
    assert sensor.ready() is False  # still being copied, as far as anyone can tell (STABLE_SECONDS)
    old = time.time() - 60
    os.utime(tmp_path / "input" / "talk.mp4", (old, old))
    assert sensor.ready() is True


class LiveRuns:
    """The part of a task's ``ti`` the claim asks: which lecture_to_pdf runs are queued or running."""

    def __init__(self, live=()):
        self.live = set(live)

    def get_dr_count(self, dag_id, run_ids, states):
        assert dag_id == "lecture_to_pdf" and set(states) == {"queued", "running"}
        return sum(r in self.live for r in run_ids)


def test_the_sensor_claims_when_it_wakes_and_hands_each_video_to_a_run_of_its_own(monkeypatch, tmp_path):
    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path))
    monkeypatch.setenv("AIRFLOW_CONN_KONSPEKT_DATA", json.dumps({"conn_type": "fs", "extra": {"path": str(tmp_path)}}))
    sensor = bag.dags["lecture_inbox"].get_task("wait_for_video")
    (tmp_path / "input").mkdir()
    assert sensor.poke({"ti": LiveRuns()}) is False
    old = time.time() - 60
    for name in ("a talk.mp4", "Лекция.mkv"):
        (tmp_path / "input" / name).write_bytes(name.encode())
        os.utime(tmp_path / "input" / name, (old, old))
    (tmp_path / "input" / "shortcut.mp4").symlink_to(tmp_path / "elsewhere")
    done = sensor.poke({"ti": LiveRuns()})
    kwargs = sorted(done.xcom_value, key=lambda k: k["trigger_run_id"])
    assert [k["trigger_run_id"].split("__")[2] for k in kwargs] == ["a_talk", "video-" + kwargs[1]["trigger_run_id"][-8:]]
    from konspekt import inbox

    for k in kwargs:  # each run may take its own video, and only that
        claim = inbox.owned_claim(tmp_path, k["conf"]["claimed"], k["trigger_run_id"])
        assert claim.video_dir.parent.parent == tmp_path / "processing"
    assert sorted(p.name for p in (tmp_path / "input").iterdir()) == []
    assert (tmp_path / "failed" / "shortcut" / "shortcut.mp4").is_symlink()  # reported, never followed
    # those runs' videos do not wake it (it cannot ask Airflow from the triggerer); one whose run has
    # ended unfinished is retaken, for a new run, by the next claim: here, the next drop's
    assert sensor.poke({"ti": LiveRuns()}) is False
    (tmp_path / "input" / "next.mp4").write_bytes(b"next")
    os.utime(tmp_path / "input" / "next.mp4", (old, old))
    ended = kwargs[0]["trigger_run_id"]
    done = sensor.poke({"ti": LiveRuns([kwargs[1]["trigger_run_id"]])})
    retaken, new = done.xcom_value
    assert retaken == {"trigger_run_id": ended + ".1", "conf": kwargs[0]["conf"]}  # a new run, the same folder
    assert new["trigger_run_id"].endswith("__next")


def test_local_mode_runs_the_stage_argv_with_the_local_interpreter(monkeypatch, tmp_path):
    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), RUNNER="local")
    task = bag.dags["lecture_to_pdf"].get_task("process.transcribe")
    assert type(task).__name__ == "LocalStageOperator"
    assert task.command[:4] == ["python", "-m", "konspekt.stages.transcribe", "--video-dir"]
    assert "{{ params.whisper_model | whisper_model }}" in task.command  # latest-finetuned resolves here
    flags = dict(zip(task.command[3::2], task.command[4::2]))  # --video-dir X --model Y ...
    assert flags["--diarize"] == "{{ params.diarize }}" and flags["--speakers"] == "{{ params.speakers }}"
    assert flags["--diarization-model"] == "pyannote/speaker-diarization-community-1"
    # the per-language summary models travel as one JSON argument
    summarize = bag.dags["lecture_to_pdf"].get_task("process.summarize")
    template = summarize.command[summarize.command.index("--models") + 1]
    from jinja2.sandbox import SandboxedEnvironment

    rendered = SandboxedEnvironment().from_string(template).render(params={"summary_models": {"ru": "org/ru-sum"}})
    assert json.loads(rendered) == {"ru": "org/ru-sum"}
    assert task.python == sys.executable  # the interpreter running Airflow, unless configured


def test_local_mode_can_run_a_stage_family_in_another_venv(monkeypatch, tmp_path):
    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), RUNNER="local",
                      LOCAL_PYTHONS='{"asr": "/opt/whisperx/bin/python"}')
    dag = bag.dags["lecture_to_pdf"]
    assert dag.get_task("process.transcribe").python == "/opt/whisperx/bin/python"
    assert dag.get_task("process.summarize").python == dag.get_task("process.extract_audio").python == sys.executable
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
    for stage in STAGES:
        op = dag.get_task(f"process.{stage}")
        assert isinstance(op, DockerOperator)
        images[stage] = op.image
        assert op.command[:3] == ["python", "-m", f"konspekt.stages.{stage}"]
        assert op.docker_url == "tcp://docker-proxy:2375"
        assert op.mount_tmp_dir is False and op.auto_remove == "success" and op.network_mode == "none"
        assert op.user == "1000:1000"
        assert 2 in op.skip_on_exit_code  # bad input skips, it is not retried
        mounts = {m["Target"]: (m["Source"], m["Type"], m.get("ReadOnly", False)) for m in op.mounts}
        # the model cache is only read: tasks have no network to download into it; of the data root
        # a task sees only its own folders, bound when it runs (test_each_task_sees_only_its_own_folders)
        assert mounts == {"/root/.cache": ("/srv/konspekt/cache", "bind", True)}
        assert op.pids_limit == 4096 and op.mem_limit > 0
        gpu = op.device_requests
        assert (gpu is not None) == (stage in {"transcribe", "summarize"})
    assert images["transcribe"] == "konspekt-asr:0.1.0" and images["extract_audio"] == "konspekt-audio:0.1.0"
    assert images["outline"] == images["summarize"] == "konspekt-summarize:0.1.0"  # sentence-transformers is there
    assert len(set(images.values())) == 5


@pytest.mark.parametrize("dag_file, heavy", [
    ("lecture_to_pdf.py", ("torch", "transformers", "faster_whisper", "opensmile", "reportlab", "matplotlib",
                           "docker", "konspekt.stages")),
    ("train_asr.py", ("torch", "transformers", "faster_whisper", "ctranslate2", "matplotlib", "docker",
                      "konspekt.stages", "konspekt.training")),
])
def test_parsing_imports_nothing_heavy(dag_file, heavy):
    code = (
        "import sys; sys.path.insert(0, 'dags');"
        f"import importlib.util as u; s = u.spec_from_file_location('d', 'dags/{dag_file}');"
        "m = u.module_from_spec(s); s.loader.exec_module(m);"
        f"print([x for x in {heavy!r} if x in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# --- pools: the heavy tasks queue for a bounded number of slots ------------------------------------

LIGHT_TASKS = {"claim", "process.finalize"}


@pytest.mark.parametrize("gpu", ["false", "true"])
def test_every_stage_task_queues_in_its_pool(monkeypatch, tmp_path, gpu):
    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), RUNNER="docker", GPU=gpu,
                      GPU_POOL="test_gpu", CPU_POOL="test_cpu")
    assert bag.import_errors == {}
    dag = bag.dags["lecture_to_pdf"]
    for stage in STAGES:
        on_gpu = gpu == "true" and stage in GPU_STAGES
        assert dag.get_task(f"process.{stage}").pool == ("test_gpu" if on_gpu else "test_cpu"), stage
    for task_id in LIGHT_TASKS:  # they only move files: never behind a heavy task
        assert dag.get_task(task_id).pool == "default_pool", task_id
    assert set(dag.task_ids) == LIGHT_TASKS | {f"process.{s}" for s in STAGES}
    train = bag.dags["train_asr"]
    for task in train.tasks:
        if task.task_id in ("check_params", "register_model"):  # Airflow-side bookkeeping, no stage
            assert task.pool == "default_pool", task.task_id
            continue
        on_gpu = gpu == "true" and task.task_id in {"train", "evaluate"}
        assert task.pool == ("test_gpu" if on_gpu else "test_cpu"), task.task_id


@pytest.mark.parametrize("gpu", ["false", "true"])
def test_gpu_stages_queue_for_gpu_workers_and_the_rest_take_the_default_queue(monkeypatch, tmp_path, gpu):
    """CeleryExecutor routes by queue: only a worker with a GPU serves ``gpu`` (README: Scaling out)."""
    from airflow.configuration import conf

    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), RUNNER="docker", GPU=gpu, GPU_QUEUE="test_gpu_queue")
    default = conf.get("operators", "default_queue")
    assert default != "test_gpu_queue"
    for dag_id in ("lecture_to_pdf", "train_asr", "lecture_inbox"):
        for task in bag.dags[dag_id].tasks:
            stage = task.task_id.removeprefix("process.")
            on_gpu = gpu == "true" and (stage in GPU_STAGES if dag_id == "lecture_to_pdf"
                                        else dag_id == "train_asr" and stage in {"train", "evaluate"})
            assert task.queue == ("test_gpu_queue" if on_gpu else default), (dag_id, task.task_id)
    # compose's Airflow settings make `cpu` the default queue, and so the queue a worker serves unless told
    env = dict(line.split("=", 1) for line in (ROOT / "airflow" / "airflow.env").read_text().splitlines()
               if line and not line.startswith("#"))
    assert env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] == "cpu"


def test_local_mode_uses_the_same_pools(monkeypatch, tmp_path):
    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), RUNNER="local", GPU="true")
    dag = bag.dags["lecture_to_pdf"]
    assert {s: dag.get_task(f"process.{s}").pool for s in STAGES} == {
        s: "konspekt_gpu" if s in GPU_STAGES else "konspekt_cpu" for s in STAGES}


def test_pool_sizes_come_from_settings(monkeypatch, tmp_path):
    load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path))
    from konspekt_dags import pools

    specs = pools.pool_specs()
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cores = len(os.sched_getaffinity(0))  # here: 2 cores and 24 GB, so 2 slots
    assert {name: spec["slots"] for name, spec in specs.items()} == {
        "konspekt_gpu": 1, "konspekt_cpu": max(1, min(cores, int(memory_gb // 2)))}
    assert all(spec["description"] and spec["include_deferred"] is False for spec in specs.values())
    load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), CPU_POOL_SLOTS="6", GPU_POOL_SLOTS="2", CPU_POOL="cpus")
    from konspekt_dags import pools

    assert {name: spec["slots"] for name, spec in pools.pool_specs().items()} == {"konspekt_gpu": 2, "cpus": 6}


@pytest.mark.slow
def test_run_local_creates_the_pools(tmp_path):
    """airflow/run-local.sh creates the pools before it runs anything (a scheduler skips a missing pool)."""
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path / "airflow"), KONSPEKT_DATA_ROOT=str(tmp_path),
               KONSPEKT_CPU_POOL_SLOTS="3", VENV=str(Path(sys.executable).parent.parent))
    env.pop("AIRFLOW_CONN_KONSPEKT_DATA", None)
    proc = subprocess.run([str(ROOT / "airflow" / "run-local.sh"), "airflow", "pools", "list", "-o", "json"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pools = {p["pool"]: int(p["slots"]) for p in json.loads(proc.stdout[proc.stdout.index("["):])}
    assert pools["konspekt_gpu"] == 1 and pools["konspekt_cpu"] == 3

    # airflow/airflow.env (shared with compose) applies, unless the environment already sets the key
    def idle_sleep(**extra: str) -> str:
        proc = subprocess.run([str(ROOT / "airflow" / "run-local.sh"), "airflow", "config", "get-value",
                               "scheduler", "scheduler_idle_sleep_time"], env=dict(env, **extra),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout.strip().splitlines()[-1]

    assert idle_sleep() == "0.2"
    assert idle_sleep(AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="3") == "3"


# --- lock-down of the task containers ------------------------------------------------------------

def test_docker_tasks_are_locked_down(monkeypatch, tmp_path):
    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), RUNNER="docker", DOCKER_USER="1000:1000")
    for dag_id in ("lecture_to_pdf", "train_asr"):
        for op in bag.dags[dag_id].tasks:
            if not isinstance(op, DockerOperator):
                continue
            assert op.cap_drop == ["ALL"] and not op.cap_add, op.task_id  # a non-root stage needs no capability
            assert op.security_opt == ["no-new-privileges"] and op.privileged is False
            assert op.read_only is True and set(op.tmpfs) == {"/tmp"}
            assert op.network_mode == "none" and op.user == "1000:1000"
            assert op.environment["MPLCONFIGDIR"].startswith("/tmp/")  # the cache mount is read-only
            # an explicit environment: the worker's own (HF_TOKEN, Airflow's secrets) never reaches the container
            assert set(op.environment) == {"PYTHONUNBUFFERED", "HF_HUB_OFFLINE", "MPLCONFIGDIR"}, op.task_id
            assert all(m.get("ReadOnly") for m in op.mounts), op.task_id  # the data root: only when it runs
            assert op.run_mounts is not None and op.pids_limit > 0, op.task_id


@pytest.mark.parametrize("user", ["", "0:0", "root"])
def test_a_root_task_keeps_only_the_file_capabilities(monkeypatch, tmp_path, user):
    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), RUNNER="docker", DOCKER_USER=user)
    op = bag.dags["lecture_to_pdf"].get_task("process.transcribe")
    assert op.cap_drop == ["ALL"] and sorted(op.cap_add) == ["CHOWN", "DAC_OVERRIDE", "FOWNER"]


class FakeDockerClient:
    """The docker APIClient calls DockerOperator.execute makes, recorded; HostConfig built by docker-py itself."""

    def __init__(self):
        import docker

        self.real = docker.APIClient(base_url="tcp://127.0.0.1:9", version="1.44")  # no daemon is contacted
        self.created = {}

    def images(self, name):
        return [{"Id": "sha256:0"}]

    def create_host_config(self, **kwargs):
        return self.real.create_host_config(**kwargs)

    def create_container(self, **kwargs):
        self.created = kwargs
        return {"Id": "c0"}

    def attach(self, **kwargs):
        return iter([b'{"stage": "x", "status": "ok"}\n'])

    def start(self, container_id):
        pass

    def wait(self, container_id):
        return {"StatusCode": 0}

    def remove_container(self, container_id, **kwargs):
        self.removed = [*getattr(self, "removed", []), container_id]

    def containers(self, all=False, filters=None):
        self.asked = filters
        return getattr(self, "listed", [])


def test_the_lock_down_reaches_the_daemon(monkeypatch, tmp_path):
    """Through the provider's own execute(): the container is created with the lock-down HostConfig."""
    from types import SimpleNamespace

    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), RUNNER="docker", DOCKER_USER="1000:1000",
                      CACHE_MOUNT_SOURCE="/srv/cache", DATA_MOUNT_SOURCE="/srv/data")
    op = bag.dags["lecture_to_pdf"].get_task("process.render_pdf")
    video_dir = "/data/processing/c1/lecture 1"
    op.command = [arg if isinstance(arg, str) else video_dir for arg in op.command]  # as rendered for one video
    op.work_dir = video_dir
    client = FakeDockerClient()
    op.__dict__["hook"] = SimpleNamespace(api_client=client, client_created=True)  # the cached DockerHook
    op.execute({})
    host = client.created["host_config"]
    assert host["CapDrop"] == ["ALL"] and "CapAdd" not in host
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["ReadonlyRootfs"] is True and set(host["Tmpfs"]) == {"/tmp"}
    assert host["NetworkMode"] == "none" and not host.get("Privileged")
    mounts = {m["Target"]: (m["Source"], m.get("ReadOnly", False)) for m in host["Mounts"]}
    assert mounts == {"/root/.cache": ("/srv/cache", True),  # the models: only read
                      # its own video's folder, and nothing else of the data root
                      video_dir: ("/srv/data/processing/c1/lecture 1", False),
                      # the user's file: read-only even to the stage that decodes it
                      f"{video_dir}/source": ("/srv/data/processing/c1/lecture 1/source", True)}
    assert host["PidsLimit"] == 4096 and host["Memory"] > 0
    assert client.created["user"] == "1000:1000"
