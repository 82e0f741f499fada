"""docker-compose.yml, images/ and the DAG's docker-mode settings agree (no daemon needed).

The compose file is read with PyYAML and its ``${VAR:-default}`` values are filled in
from .env.example, as compose would on a fresh checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from konspekt import registry

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"


# --- compose's variable interpolation, enough of it for this file ----------------------------

_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[A-Za-z_]\w*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}|(?P<bare>[A-Za-z_]\w*))")


def interpolate(value, env: dict[str, str]):
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("braced") or m.group("bare")
        op, arg, current = m.group("op"), m.group("arg"), env.get(name)
        unset_or_empty = current in (None, "") if op and op.startswith(":") else current is None
        if op in (":-", "-"):
            return arg if unset_or_empty else current
        if op in (":?", "?"):
            if unset_or_empty:
                raise KeyError(f"{name} is required: {arg}")
            return current
        return current or ""

    return _VAR.sub(sub, value)


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return env_file(ROOT / ".env.example")


@pytest.fixture(scope="module")
def compose(example_env) -> dict:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = dict(example_env, AIRFLOW_ADMIN_PASSWORD="a-password-for-the-test")
    return {"raw": raw, "services": interpolate(raw["services"], env)}


@pytest.fixture(scope="module")
def default_settings():
    """The DAG's Settings with no KONSPEKT_* variable set: the defaults compose must match."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("KONSPEKT_")}
    sys.path.insert(0, str(DAGS))
    try:
        from konspekt_dags import settings as module

        yield module.Settings(), module
    finally:
        sys.path.remove(str(DAGS))
        os.environ.update(saved)


def volumes(service: dict) -> dict[str, str]:
    """target -> source of a service's bind mounts (short syntax; an anonymous volume has no source)."""
    out = {}
    for spec in service.get("volumes", []):
        if ":" not in spec:
            continue
        source, target = spec.split(":")[:2]
        out[target] = source
    return out


def published_ports(service: dict) -> list[str]:
    return [str(p) if not isinstance(p, dict) else f"{p.get('published')}:{p.get('target')}"
            for p in service.get("ports", [])]


# --- the invariants ------------------------------------------------------------------------------

def test_the_daemon_port_is_never_published(compose):
    for name, service in compose["services"].items():
        for port in published_ports(service):
            assert "2375" not in port.split(":"), (name, port)
    assert "ports" not in compose["services"]["docker-proxy"]
    assert "ports" not in compose["services"]["docker-host"]


def test_docker_proxy_is_a_privileged_dind_with_a_healthcheck_and_a_volume(compose):
    proxy = compose["services"]["docker-proxy"]
    assert proxy["image"].startswith("docker:") and proxy["image"].endswith("dind")
    assert proxy["privileged"] is True
    assert proxy["environment"]["DOCKER_TLS_CERTDIR"] == ""
    assert "2375" in " ".join(proxy["healthcheck"]["test"])
    lib = volumes(proxy)["/var/lib/docker"]
    assert lib in compose["raw"]["volumes"], "images must survive restarts in a named volume"


def test_mount_sources_agree_with_the_dag_settings(compose, default_settings):
    settings, module = default_settings
    services = compose["services"]
    proxy = volumes(services["docker-proxy"])
    airflow_env = services["airflow-scheduler"]["environment"]
    airflow_mounts = volumes(services["airflow-scheduler"])
    # The daemon sees ./airflow/data and ./cache where the DAG's Mounts say they are...
    assert airflow_env["KONSPEKT_DATA_MOUNT_SOURCE"] == settings.data_mount_source == "/data"
    assert airflow_env["KONSPEKT_CACHE_MOUNT_SOURCE"] == settings.cache_mount_source == "/cache"
    assert proxy[settings.data_mount_source] == "./airflow/data"
    assert proxy[settings.cache_mount_source] == "./cache"
    # ...and Airflow (claim, finalize) sees the very same folders.
    assert airflow_mounts[airflow_env["KONSPEKT_DATA_ROOT"]] == proxy[settings.data_mount_source]
    assert airflow_mounts[airflow_env["KONSPEKT_CACHE_DIR"]] == proxy[settings.cache_mount_source]
    assert airflow_env["KONSPEKT_RUNNER"] == "docker"
    assert airflow_env["KONSPEKT_DOCKER_URL"] == settings.docker_url == "tcp://docker-proxy:2375"
    # Task containers write as the user Airflow runs as (the host user), never root.
    uid = services["airflow-scheduler"]["user"].split(":")[0]
    assert airflow_env["KONSPEKT_DOCKER_USER"].split(":")[0] == uid != "0"


def test_compose_defaults_are_the_settings_defaults(compose, default_settings):
    settings, _ = default_settings
    raw_env = compose["raw"]["services"]["airflow-scheduler"]["environment"]
    checked = 0
    for key, value in raw_env.items():
        m = re.fullmatch(r"\$\{(KONSPEKT_\w+):-([^}]*)\}", str(value))
        if m and m.group(1) == key:
            field = {"KONSPEKT_TASK": "asr_task"}.get(key) or key.removeprefix("KONSPEKT_").lower()
            default = getattr(settings, field)
            # empty: settings.py's own default; anything else must repeat it exactly
            assert m.group(2) == "" or str(default).lower() == m.group(2).lower(), (
                key, default, m.group(2))
            checked += 1
    assert checked >= 8


def test_every_setting_env_example_names_reaches_the_airflow_services(compose):
    """A KONSPEKT_* line a user uncomments in .env must change something: compose passes only what it lists."""
    named = set(re.findall(r"\b(KONSPEKT_[A-Z_]+)\b", (ROOT / ".env.example").read_text()))
    assert {"KONSPEKT_MAX_ACTIVE_VIDEOS", "KONSPEKT_CPU_POOL_SLOTS", "KONSPEKT_WHISPER_MODEL"} <= named
    # the celery profile's registry: the engines that push and pull images read it, not Airflow; and the
    # number of workers, which airflow/compose.sh reads (--scale)
    named -= {"KONSPEKT_REGISTRY", "KONSPEKT_WORKERS"}
    assert "KONSPEKT_WORKERS" in (ROOT / "airflow" / "compose.sh").read_text()
    raw = compose["raw"]["services"]
    for service in ("image-publisher", "worker"):
        assert raw[service]["environment"]["KONSPEKT_REGISTRY"] == "${KONSPEKT_REGISTRY:-registry:5000}"
    for service in ("airflow-scheduler", "airflow-init", "airflow-triggerer", "airflow-dag-processor"):
        passed = set(compose["raw"]["services"][service]["environment"])
        assert named <= passed, (service, sorted(named - passed))


def test_images_in_the_containers_see_the_shared_paths(default_settings):
    _, module = default_settings
    base = (ROOT / "images" / "base" / "Dockerfile").read_text()  # what every task image is built FROM
    assert re.search(r"^ARG BASE_IMAGE=\S+", base, re.M)
    env = dict(re.findall(r"(XDG_CACHE_HOME|HF_HOME|TORCH_HOME)=(\S+)", base))
    assert env["XDG_CACHE_HOME"] == module.CONTAINER_CACHE
    assert env["HF_HOME"].startswith(module.CONTAINER_CACHE + "/")
    assert "chmod 0755 /root" in base, "a non-root task user must reach /root/.cache"
    assert "python3 -m venv /opt/venv" in base and "PATH=/opt/venv/bin:" in base
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", base, re.M))
    for family in registry.families():
        dockerfile = (ROOT / "images" / family / "Dockerfile").read_text()
        bases = re.findall(r"^ARG (KONSPEKT_BASE\w*)=\S+", dockerfile, re.M)
        assert bases and re.search(r"^FROM \$\{KONSPEKT_BASE\w*\}", dockerfile, re.M), family
        for arg in bases:  # each base it names is a target of images/base/Dockerfile (build.sh's flavours)
            flavour = arg.removeprefix("KONSPEKT_BASE").lstrip("_").lower().replace("_", "-") or "os"
            assert flavour in targets, (family, arg)
        assert "python3 -m venv" not in dockerfile and "apt-get install -y --no-install-recommends ffmpeg" not in dockerfile
        assert "--from=" not in dockerfile, family  # torch comes in a base, never copied in by a family


def test_each_family_declares_only_its_dependencies_and_konspekt_comes_last():
    """A family's Dockerfile: its lock (installed and checked by the base's install-lock.sh), LABELs and
    CMD; the konspekt layer, written once in images/base/konspekt/Dockerfile, installs the package on top
    and starts every stage the registry runs in that family."""
    layer = (ROOT / "images" / "base" / "konspekt" / "Dockerfile").read_text()
    instructions = re.findall(r"^([A-Z]+) (.*)$", layer, re.M)
    assert instructions[:3] == [("ARG", "DEPS"), ("FROM", "${DEPS}"), ("ARG", "FAMILY")]
    assert [i for i, _ in instructions[3:]] == ["COPY", "COPY", "RUN"]  # nothing after the install: it is last
    assert instructions[3][1].startswith("pyproject.toml ") and instructions[4][1].startswith("src/ ")
    assert "pip-install.sh --no-deps --no-build-isolation" in layer and "rm -rf /opt/konspekt-build/src" in layer
    assert "registry.all_stages() if s.image == os.environ['FAMILY']" in layer and '--help' in layer
    assert (ROOT / "images" / "common" / "install-lock.sh").stat().st_mode & 0o111  # COPYed by the base
    stages = {family: [s.module for s in registry.all_stages() if s.image == family] for family in registry.families()}
    for family, modules in stages.items():
        dockerfile = (ROOT / "images" / family / "Dockerfile").read_text()
        code = "\n".join(line for line in dockerfile.splitlines() if not line.startswith("#"))
        assert "src/" not in code and "pyproject.toml" not in code, family  # konspekt: the layer's alone
        cmd = re.findall(r"^CMD (.*)$", dockerfile, re.M)
        assert len(cmd) == 1 and json.loads(cmd[0])[:3] in [["python", "-m", m] for m in modules], family
        labels = dict(re.findall(r'(org\.opencontainers\.image\.\w+)="([^"]*)"', dockerfile))
        assert labels["org.opencontainers.image.title"] == f"konspekt-{family}" and labels.get(
            "org.opencontainers.image.description"), family
        lock = [line for line in (ROOT / "images" / family / "requirements.lock").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
        installs = re.findall(r"^RUN /opt/konspekt-build/install-lock.sh \"(.+)\"$", dockerfile, re.M)
        assert len(installs) == (1 if lock else 0), family  # a lock with packages is installed, then checked
        if lock:
            copied = re.findall(r"^COPY (\S+) /opt/konspekt-build/requirements.lock$", dockerfile, re.M)
            assert copied in ([f"images/{family}/requirements.lock"], ["${ASR_REQUIREMENTS}"]), family
            assert installs[0].startswith("import "), family


def build_calls(tmp_path: Path, *names: str, **env: str) -> tuple[list[list[str]], str]:
    """images/build.sh run against a fake `docker` that records its arguments: the `docker build` calls
    and what the script printed."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    calls.write_text("")
    # one line per call, its arguments separated by \x1f
    (fake / "docker").write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\037" "$a"; done >>{calls}\n'
                                 f'echo >>{calls}\n')
    (fake / "docker").chmod(0o755)
    shell = shutil.which("busybox")  # the image-builder's docker:cli image runs it in busybox sh
    argv = [shell, "sh"] if shell else ["sh"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KONSPEKT_") and k not in (
        "BASE_IMAGE", "TORCH_INDEX_URL", "DOCKER_BUILD_FLAGS", "ASR_GPU_REQUIREMENTS")}
    proc = subprocess.run([*argv, str(ROOT / "images" / "build.sh"), *names], capture_output=True, text=True,
                          env=dict(clean, PATH=f"{fake}:{os.environ['PATH']}", **env), timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line.rstrip("\x1f").split("\x1f") for line in calls.read_text().splitlines()]
    assert lines[0] == ["version"]  # it waits for the daemon first
    return [line for line in lines if line[0] == "build"], proc.stdout


def built(call: list[str]) -> tuple[str, str, dict[str, str]]:
    """(Dockerfile, tag, build args) of one recorded `docker build`; the context is always the root."""
    assert call[-1] == "." and call[-3] == "-t" and call[-5] == "-f", call
    args = dict(call[i + 1].split("=", 1) for i, a in enumerate(call) if a == "--build-arg")
    return call[-4], call[-2], args


def test_every_task_image_has_a_build_and_the_builder_builds_them_all(compose, default_settings, tmp_path):
    settings, module = default_settings
    families = set(registry.families())
    for family in families:
        assert (ROOT / "images" / family / "Dockerfile").is_file(), family
        assert (ROOT / "images" / family / "requirements.lock").is_file(), family
    services = compose["services"]
    builder = services["image-builder"]
    assert builder["entrypoint"] == ["sh", "images/build.sh"] and not builder.get("command")
    # build.sh with no arguments builds every family of the registry, under the names the DAG asks for:
    # the family's own Dockerfile as <image>-deps, then the konspekt layer on it as the task image...
    calls = [built(call) for call in build_calls(tmp_path)[0]]
    tags = [tag for _, tag, _ in calls]
    for stage in registry.all_stages():
        family, image = stage.image, settings.image_for(stage.name)
        deps = f"konspekt-{family}-deps:latest"
        assert (f"images/{family}/Dockerfile", deps) in [(f, t) for f, t, _ in calls], family
        assert ("images/base/konspekt/Dockerfile", image, {"DEPS": deps, "FAMILY": family}) in calls, family
        assert tags.index(deps) < tags.index(image) == len(tags) - 1 - tags[::-1].index(image)  # once, after
    # ...each FROM bases built before it, from images/base/Dockerfile, under the same prefix and tag...
    for _, tag, args in calls:
        for name, base in args.items():
            if name.startswith("KONSPEKT_BASE"):
                assert ("images/base/Dockerfile", base) in [(f, t) for f, t, _ in calls[:tags.index(tag)]], tag
    assert {f for f, _, _ in calls} == {"images/base/Dockerfile", "images/base/konspekt/Dockerfile"} | {
        f"images/{family}/Dockerfile" for family in families}  # not Airflow's (compose builds it)
    # ...alone (a family's bases and nothing else), with a prefix and tag, and the GPU variant of ASR.
    alone = [built(call) for call in build_calls(tmp_path, "asr", KONSPEKT_GPU="true", KONSPEKT_IMAGE_PREFIX="k",
                                                 KONSPEKT_IMAGE_TAG="t")[0]]
    assert [(f, t) for f, t, _ in alone] == [("images/base/Dockerfile", "k-base-cuda:t"),
                                             ("images/asr/Dockerfile", "k-asr-deps:t"),
                                             ("images/base/konspekt/Dockerfile", "k-asr:t")]
    assert alone[1][2] == {"KONSPEKT_BASE": "k-base-cuda:t", "ASR_REQUIREMENTS": "requirements/whisperx.txt"}
    assert (ROOT / alone[1][2]["ASR_REQUIREMENTS"]).is_file()
    # ...into the daemon the DAG uses.
    airflow_env = services["airflow-scheduler"]["environment"]
    assert builder["environment"]["DOCKER_HOST"] == airflow_env["KONSPEKT_DOCKER_URL"]
    for key in ("KONSPEKT_IMAGE_PREFIX", "KONSPEKT_IMAGE_TAG", "KONSPEKT_GPU"):
        assert builder["environment"][key] == airflow_env[key], key
    assert builder["depends_on"]["docker-proxy"]["condition"] == "service_healthy"
    assert services["airflow-scheduler"]["depends_on"]["image-builder"]["condition"] == \
        "service_completed_successfully"


def test_the_builder_logs_and_times_each_build_and_passes_the_build_options(tmp_path):
    logs = tmp_path / "logs"
    calls, out = build_calls(tmp_path, "train", KONSPEKT_BUILD_LOG_DIR=str(logs), BASE_IMAGE="os:1",
                             TORCH_INDEX_URL="none", DOCKER_BUILD_FLAGS="--network host --force-rm")
    assert sorted(p.name for p in logs.iterdir()) == ["base-ffmpeg-torch.log", "train-deps.log", "train.log"]
    timed = re.findall(r"^\[images\] (\S+): \d+ s$", out, re.M)
    assert timed == ["konspekt-base-ffmpeg-torch:latest", "konspekt-train-deps:latest", "konspekt-train:latest"]
    assert re.search(r"^\[images\] all built in \d+ s$", out, re.M)
    for call in calls:
        assert call[1:4] == ["--network", "host", "--force-rm"], call
    base = built(calls[0])
    assert base[:2] == ("images/base/Dockerfile", "konspekt-base-ffmpeg-torch:latest")
    assert base[2] == {"BASE_IMAGE": "os:1", "TORCH_INDEX_URL": ""} and "ffmpeg-torch" in calls[0]
    assert built(calls[1])[2] == {"KONSPEKT_BASE_FFMPEG_TORCH": "konspekt-base-ffmpeg-torch:latest"}


def test_airflow_3_services_and_no_default_admin_password(compose, example_env):
    services = compose["services"]
    commands = {name: services[name].get("command") for name in services}
    assert commands["airflow-apiserver"] == "api-server" and commands["airflow-scheduler"] == "scheduler"
    assert commands["airflow-dag-processor"] == "dag-processor" and commands["airflow-triggerer"] == "triggerer"
    assert published_ports(services["airflow-apiserver"]) == ["127.0.0.1:8080:8080"]
    raw_init = compose["raw"]["services"]["airflow-init"]
    assert raw_init["environment"]["KONSPEKT_ADMIN_PASSWORD"].startswith("${AIRFLOW_ADMIN_PASSWORD:?")
    script = raw_init["command"][-1]  # plain CLI calls: no reliance on the official image's entrypoint
    assert "airflow db migrate" in script and '--password="$$KONSPEKT_ADMIN_PASSWORD"' in script
    assert "_AIRFLOW_WWW_USER" not in str(raw_init) and "/entrypoint" not in script
    assert example_env["AIRFLOW_ADMIN_PASSWORD"] == ""  # compose refuses to start until one is set
    with pytest.raises(KeyError, match="AIRFLOW_ADMIN_PASSWORD"):
        interpolate(compose["raw"]["services"]["airflow-init"], example_env)


def test_models_are_fetched_before_the_scheduler_starts(compose):
    services = compose["services"]
    models = services["models"]
    assert models["entrypoint"] == ["python", "-m", "konspekt_dags.ensure_models"]
    assert models["environment"]["HF_HUB_OFFLINE"] == "0"  # the one service with the hub; tasks run offline
    assert volumes(models)["/opt/airflow/cache"].startswith("./cache")
    assert models["environment"]["HF_HOME"] == "/opt/airflow/cache/huggingface"
    assert services["airflow-scheduler"]["depends_on"]["models"] == {"condition": "service_completed_successfully"}


def test_gpu_profile_reaches_the_host_daemon(compose):
    host = compose["services"]["docker-host"]
    assert host["profiles"] == ["gpu"]
    assert volumes(host)["/var/run/docker.sock"].startswith("/var/run/docker.sock")
    example = (ROOT / ".env.example").read_text()
    for line in ("#COMPOSE_PROFILES=gpu", "#KONSPEKT_GPU=true", "#KONSPEKT_DOCKER_URL=tcp://docker-host:2375",
                 "#KONSPEKT_DATA_MOUNT_SOURCE=/", "#KONSPEKT_CACHE_MOUNT_SOURCE=/"):
        assert line in example, line


def test_every_airflow_component_reads_the_airflow_settings_local_mode_shares(compose):
    """airflow/airflow.env is the one place for Airflow settings both deployments use (run-local.sh reads
    it too: tests/dags/test_dags.py)."""
    shared = env_file(ROOT / "airflow" / "airflow.env")
    assert shared["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] == "0.2"
    for name in ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-triggerer"):
        assert compose["services"][name]["env_file"] == "airflow/airflow.env", name
        assert not set(shared) & set(compose["services"][name]["environment"]), name  # not set twice


# --- the celery profile (README: Scaling out) ---------------------------------------------------

CELERY_SERVICES = ("redis", "registry", "image-publisher", "worker")


def test_celery_profile_is_off_by_default_and_switched_on_in_env_example(compose, example_env):
    services = compose["services"]
    for name in CELERY_SERVICES:
        assert services[name]["profiles"] == ["celery"], name
        assert not published_ports(services[name]), name  # the broker and registry stay on the compose network
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    example = (ROOT / ".env.example").read_text()
    assert "#COMPOSE_PROFILES=celery\n#AIRFLOW_EXECUTOR=CeleryExecutor\n" in example
    celery = interpolate(compose["raw"]["services"], dict(example_env, AIRFLOW_ADMIN_PASSWORD="x",
                                                          AIRFLOW_EXECUTOR="CeleryExecutor"))
    for name in ("airflow-scheduler", "airflow-apiserver", "worker"):
        env = celery[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://:@redis:6379/0", name  # REDIS_PASSWORD: .env's
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://airflow:"), name


def test_each_celery_worker_runs_its_tasks_on_an_engine_of_its_own(compose, default_settings):
    settings, _ = default_settings
    services = compose["services"]
    worker, env = services["worker"], services["worker"]["environment"]
    assert worker["command"] == ["celery", "worker"] and worker["build"]["target"] == "worker"
    assert worker["user"] == "0:0" and worker["privileged"] is True  # the engine; the worker drops to AIRFLOW_UID
    assert env["KONSPEKT_WORKER_UID"] == services["airflow-scheduler"]["user"].split(":")[0]
    # its engine: inside the container, loopback only; a folder of each replica's own in a named volume
    # (an anonymous one per replica would be left behind by every `docker compose down`)
    assert env["KONSPEKT_DOCKER_URL"] == "tcp://127.0.0.1:2375"
    engines = next(v for v in worker["volumes"] if v.endswith(":/var/lib/konspekt-engines"))
    assert engines.split(":")[0] in compose["raw"]["volumes"]
    # that engine sees the shared folders where the worker does, so the tasks' mounts are the same folders
    mounts = volumes(worker)
    assert mounts[env["KONSPEKT_DATA_MOUNT_SOURCE"]] == mounts[env["KONSPEKT_DATA_ROOT"]] == "./airflow/data"
    assert mounts[env["KONSPEKT_CACHE_MOUNT_SOURCE"]] == mounts[env["KONSPEKT_CACHE_DIR"]] == "./cache"
    # the images its tasks run: the ones image-publisher pushed, under the same prefix and tag as the builder's
    publisher = services["image-publisher"]["environment"]
    builder = services["image-builder"]["environment"]
    assert env["KONSPEKT_IMAGE_PREFIX"] == f"{publisher['KONSPEKT_REGISTRY']}/{builder['KONSPEKT_IMAGE_PREFIX']}"
    assert publisher["KONSPEKT_IMAGE_PREFIX"] == builder["KONSPEKT_IMAGE_PREFIX"] == settings.image_prefix
    assert publisher["KONSPEKT_IMAGE_TAG"] == builder["KONSPEKT_IMAGE_TAG"] == env["KONSPEKT_IMAGE_TAG"]
    # plain HTTP only to the compose network's registry service; a registry of your own keeps TLS
    assert env["KONSPEKT_REGISTRY"] == "registry:5000" and "registry" in services
    assert services["docker-proxy"]["command"] == ["--insecure-registry=registry:5000"]
    assert worker["depends_on"]["image-publisher"] == {"condition": "service_completed_successfully"}
    assert services["image-publisher"]["depends_on"]["image-builder"] == {"condition": "service_completed_successfully"}
    assert worker["env_file"] == "airflow/airflow.env"  # the default queue (cpu) is the one it serves
    # the engine and the worker start from images/airflow/worker-entrypoint.sh, as the Dockerfile says
    dockerfile = (ROOT / "images" / "airflow" / "Dockerfile").read_text()
    assert re.search(r"^FROM airflow AS worker$", dockerfile, re.M)
    entrypoint = (ROOT / "images" / "airflow" / "worker-entrypoint.sh").read_text()
    assert "--insecure-registry=${KONSPEKT_REGISTRY%%/*}" in entrypoint and "--bridge=none" in entrypoint
    assert "''|*.*) ;;" in entrypoint  # not for a registry with a dotted (real) host name
    assert 'data_root="$ENGINES/$(hostname)"' in entrypoint and '--data-root="$data_root"' in entrypoint
    assert "VOLUME" not in dockerfile.split("AS worker")[1]  # no anonymous volume per worker either
    assert 'setpriv --reuid="${KONSPEKT_WORKER_UID:-50000}" --regid=0' in entrypoint


# --- networks and logins (issue 30, item 2): the api-server reaches no engine, broker or registry ------

ENGINES = ("docker-proxy", "docker-host")


def networks(service: dict) -> set[str]:
    value = service.get("networks") or []
    return set(value if isinstance(value, list) else value)


def members(services: dict, network: str) -> set[str]:
    return {name for name, service in services.items() if network in networks(service)}


def test_the_api_server_shares_no_network_with_an_engine_redis_or_the_registry(compose):
    services, declared = compose["services"], compose["raw"]["networks"]
    for name, service in services.items():  # none on compose's default network, which every service would share
        assert networks(service) or service.get("network_mode") == "none", name
        assert networks(service) <= set(declared), name
    api = networks(services["airflow-apiserver"])
    for name in (*ENGINES, "redis", "registry"):
        assert not api & networks(services[name]), name
    # an engine's API (root on what it runs) only for the services that start tasks or build images
    for engine in ENGINES:
        assert networks(services[engine]) - {"engine-egress", "celery"} == {"engine"}, engine
    assert members(services, "engine") == {*ENGINES, "airflow-scheduler", "image-builder", "image-publisher", "doctor"}
    assert members(services, "engine-egress") == {"docker-proxy"}  # its builds' way out, shared with no one
    assert members(services, "celery") == {"redis", "registry", "airflow-scheduler", "worker", "docker-proxy"}
    assert members(services, "db") == {"postgres", "airflow-init", "airflow-apiserver", "airflow-scheduler",
                                       "airflow-dag-processor", "airflow-triggerer", "worker"}
    assert networks(services["postgres"]) == {"db"}
    assert members(services, "front") >= {"airflow-apiserver", "airflow-scheduler", "worker"}  # the execution API
    assert not members(services, "front") & {*ENGINES, "redis", "registry", "postgres", "image-builder"}
    # no way out, and no way in from the host, on the networks behind the api-server
    for network in ("engine", "db", "celery"):
        assert declared[network] == {"internal": True}, network
    assert not (declared["front"] or {}).get("internal")  # the published port and the callbacks' way out
    assert [name for name, service in services.items() if service.get("ports")] == ["airflow-apiserver"]
    # the one-shot that writes the registry's login needs no network at all
    assert services["registry-auth"]["network_mode"] == "none" and "networks" not in services["registry-auth"]


def test_redis_and_the_registry_ask_for_a_login_from_env(compose, tmp_path):
    raw = compose["raw"]["services"]
    redis = raw["redis"]
    assert redis["environment"] == {"REDISCLI_AUTH": "${REDIS_PASSWORD:-}"}  # the server's and the healthcheck's
    script = redis["entrypoint"][-1]
    assert '[ -n "$$REDISCLI_AUTH" ] ||' in script  # an empty password would mean none: it refuses to start
    assert 'exec redis-server --requirepass "$$REDISCLI_AUTH"' in script
    assert compose["raw"]["x-airflow-common"]["environment"]["AIRFLOW__CELERY__BROKER_URL"] == \
        "redis://:${REDIS_PASSWORD:-}@redis:6379/0"
    registry = raw["registry"]
    assert registry["environment"] == {"REGISTRY_AUTH": "htpasswd", "REGISTRY_AUTH_HTPASSWD_REALM": "konspekt",
                                       "REGISTRY_AUTH_HTPASSWD_PATH": "/auth/htpasswd"}
    assert "registry-auth:/auth:ro" in registry["volumes"] and "registry-auth" in compose["raw"]["volumes"]
    assert registry["depends_on"]["registry-auth"] == {"condition": "service_completed_successfully"}
    assert "' 401 '" in " ".join(registry["healthcheck"]["test"])  # healthy = answers, and asks for a login
    for name in ("registry-auth", "image-publisher", "worker"):
        env = raw[name]["environment"]
        assert env["REGISTRY_USER"] == "${REGISTRY_USER:-konspekt}", name
        assert env["REGISTRY_PASSWORD"] == "${REGISTRY_PASSWORD:-}", name
    publish = (ROOT / "images" / "publish.sh").read_text()
    assert 'docker login --username "${REGISTRY_USER:-konspekt}" --password-stdin' in publish
    worker = (ROOT / "images" / "airflow" / "worker-entrypoint.sh").read_text()
    assert "login \\\n      --username \"${REGISTRY_USER:-konspekt}\" --password-stdin" in worker
    assert 'env HOME="${AIRFLOW_USER_HOME_DIR:-/home/airflow}" docker' in worker  # where the tasks' client looks

    # registry-auth's own script: a bcrypt htpasswd line the registry reads; kept when unchanged; no password, no start
    code = raw["registry-auth"]["command"][-1].replace("/auth/htpasswd", str(tmp_path / "htpasswd"))
    assert raw["registry-auth"]["entrypoint"][0] == "python"

    def auth(password: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", "-c", code], capture_output=True,
                              text=True, env={"REGISTRY_USER": "konspekt", "REGISTRY_PASSWORD": password}, timeout=60)

    assert auth("").returncode != 0 and "set REGISTRY_USER and REGISTRY_PASSWORD" in auth("").stderr
    assert auth("s3cret-pass").returncode == 0
    line = (tmp_path / "htpasswd").read_text()
    assert re.fullmatch(r"konspekt:\$2[aby]\$05\$[./A-Za-z0-9]{53}\n", line), line
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    hashed = line.strip().split(":", 1)[1]
    assert crypt.crypt("s3cret-pass", hashed) == hashed and crypt.crypt("other", hashed) != hashed
    assert auth("s3cret-pass").stdout == "" and (tmp_path / "htpasswd").read_text() == line  # unchanged
    assert auth("new-pass").returncode == 0 and (tmp_path / "htpasswd").read_text() != line


def test_every_new_secret_has_no_literal_default_and_compose_sh_generates_it(compose, tmp_path):
    text = (ROOT / "docker-compose.yml").read_text()
    for name in ("REDIS_PASSWORD", "REGISTRY_PASSWORD"):
        refs = re.findall(r"\$\{" + name + r"(?P<op>:?[-?])?(?P<default>[^}]*)\}", text)
        assert refs and all(default == "" for _, default in refs), (name, refs)
    example = env_file(ROOT / ".env.example")
    assert example["REDIS_PASSWORD"] == example["REGISTRY_PASSWORD"] == "" and example["REGISTRY_USER"]
    # `airflow/compose.sh env` (what `make compose-up` runs first) on a copy of the checkout's files
    (tmp_path / "airflow").mkdir()
    shutil.copy(ROOT / "airflow" / "compose.sh", tmp_path / "airflow" / "compose.sh")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env.example")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}

    def compose_env() -> dict[str, str]:
        proc = subprocess.run(["bash", str(tmp_path / "airflow" / "compose.sh"), "env"], capture_output=True,
                              text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return env_file(tmp_path / ".env")

    first = compose_env()
    secrets = [first[k] for k in ("AIRFLOW_ADMIN_PASSWORD", "REDIS_PASSWORD", "REGISTRY_PASSWORD")]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{20,}", s) for s in secrets) and len(set(secrets)) == 3, secrets
    assert (tmp_path / ".env").stat().st_mode & 0o777 == 0o600
    assert compose_env() == first  # kept on the next start
    # an .env written before these secrets existed gets them, and keeps everything else
    old = (tmp_path / ".env").read_text().replace(f"REDIS_PASSWORD={first['REDIS_PASSWORD']}\n", "")
    (tmp_path / ".env").write_text(old.replace(f"REGISTRY_PASSWORD={first['REGISTRY_PASSWORD']}", "REGISTRY_PASSWORD="))
    again = compose_env()
    assert again["REDIS_PASSWORD"] and again["REGISTRY_PASSWORD"] and again["REDIS_PASSWORD"] != first["REDIS_PASSWORD"]
    assert {k: v for k, v in again.items() if "REDIS" not in k and "REGISTRY_PASSWORD" not in k} == \
        {k: v for k, v in first.items() if "REDIS" not in k and "REGISTRY_PASSWORD" not in k}


def test_the_publisher_pushes_every_image_the_builder_builds(tmp_path):
    """images/publish.sh against a fake docker CLI: each task family tagged and pushed under the registry."""
    fake = tmp_path / "docker"
    log = tmp_path / "calls"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "KONSPEKT_REGISTRY": "registry.example.edu:5000/lectures",
           "KONSPEKT_IMAGE_PREFIX": "kp", "KONSPEKT_IMAGE_TAG": "v1"}
    proc = subprocess.run(["sh", str(ROOT / "images" / "publish.sh")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    for family in registry.families():
        target = f"registry.example.edu:5000/lectures/kp-{family}:v1"
        assert f"tag kp-{family}:v1 {target}" in calls and f"push {target}" in calls, family
    proc = subprocess.run(["sh", str(ROOT / "images" / "publish.sh")], env={"PATH": env["PATH"]},
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "set KONSPEKT_REGISTRY" in proc.stderr


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (v1) is not installed")
@pytest.mark.parametrize("profiles", ["", "celery", "gpu"])
def test_docker_compose_config_is_valid(tmp_path, example_env, profiles):
    env = tmp_path / ".env"
    env.write_text((ROOT / ".env.example").read_text().replace("AIRFLOW_ADMIN_PASSWORD=\n",
                                                                  "AIRFLOW_ADMIN_PASSWORD=x\n"))
    proc = subprocess.run(["docker-compose", "--env-file", str(env), "-f", str(ROOT / "docker-compose.yml"),
                           "config", "-q"], capture_output=True, text=True,
                          env={**os.environ, "COMPOSE_PROFILES": profiles})
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
def test_docker_stage_tasks_hand_the_claimed_folder_to_the_task_user(monkeypatch, tmp_path):
    """Airflow running as root claims files (0600 video.json); a task running as 1000 must read them."""
    monkeypatch.setenv("KONSPEKT_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("KONSPEKT_DOCKER_USER", "1000:1000")
    for name in [m for m in sys.modules if m.startswith("konspekt_dags")]:
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(DAGS))
    from konspekt_dags import factory

    video = tmp_path / "processing" / "c1" / "talk"
    (video / "source").mkdir(parents=True)
    (video / "video.json").write_text("{}")
    os.chmod(video / "video.json", 0o600)

    command = ["python", "-m", "konspekt.stages.extract_audio", "--video-dir", "/data/processing/c1/talk"]
    factory.work_mounts(registry.get("extract_audio"), command[4], command)  # the task's mounts, worked out when it runs
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in (video, video / "source", video / "video.json")}
    assert owners == {(1000, 1000)}
    assert (tmp_path / "processing").stat().st_uid == 0  # only the video's own folder changes hands
    for name in [m for m in sys.modules if m.startswith("konspekt_dags")]:
        del sys.modules[name]


def test_airflow_init_creates_the_pools_the_stage_tasks_queue_for(compose):
    """A scheduler never starts a task whose pool is missing: airflow-init creates them, from settings."""
    script = compose["services"]["airflow-init"]["command"][-1]
    lines = [line.strip() for line in script.splitlines()]
    pools = next(i for i, line in enumerate(lines) if line.endswith("python -m konspekt_dags.pools"))
    assert "PYTHONPATH=/opt/airflow/dags" in lines[pools]  # where the image puts the bundle
    assert pools > next(i for i, line in enumerate(lines) if line == "airflow db migrate")  # after migrate
    dockerfile = (ROOT / "images" / "airflow" / "Dockerfile").read_text()
    assert "COPY --chown=airflow:0 dags/ /opt/airflow/dags/" in dockerfile


# --- the Fernet key: never empty, generated once, the same in every Airflow service ------------------

AIRFLOW_BIN = Path(sys.executable).parent  # the venv running the tests has Airflow
READ_KEY = ("from airflow.configuration import conf; from airflow.models.crypto import get_fernet; "
            "print('fernet_key=%s encrypts=%s' % (conf.get('core', 'fernet_key'), get_fernet().is_encrypted))")


def airflow_services(services: dict) -> dict:
    """The services that run Airflow: every one reads the shared airflow.cfg (AIRFLOW_CONFIG)."""
    return {name: s for name, s in services.items() if (s.get("environment") or {}).get("AIRFLOW_CONFIG")}


def test_every_airflow_service_reads_the_one_persisted_fernet_key(compose, example_env):
    """An empty AIRFLOW__CORE__FERNET_KEY beats airflow.cfg's key, and Airflow then stores connection
    passwords unencrypted: no service may set it; each reads the key airflow-init keeps in airflow.cfg."""
    services = airflow_services(compose["services"])
    assert {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
            "airflow-triggerer", "models", "doctor"} <= set(services)
    for name, service in services.items():
        env = service["environment"]
        assert not [k for k in env if k.startswith("AIRFLOW__CORE__FERNET_KEY")], name
        assert env["AIRFLOW_CONFIG"] == "/opt/airflow/config/airflow.cfg", name
        assert volumes(service)["/opt/airflow/config"] == "./airflow/config", name  # on the host: survives restarts
        assert ("KONSPEKT_FERNET_KEY" in env) == (name == "airflow-init"), name  # .env's key reaches init only
    raw = compose["raw"]["services"]["airflow-init"]["environment"]["KONSPEKT_FERNET_KEY"]
    assert raw == "${AIRFLOW_FERNET_KEY:-}" and example_env["AIRFLOW_FERNET_KEY"] == ""  # optional


def init_parts(compose) -> tuple[str, str]:
    """airflow-init's Fernet-key lines: (after `airflow config list` up to the chown, after `db migrate`)."""
    env = dict(env_file(ROOT / ".env.example"), AIRFLOW_ADMIN_PASSWORD="x")
    lines = interpolate(compose["raw"]["services"]["airflow-init"]["command"][-1], env).splitlines()
    stripped = [line.strip() for line in lines]
    start = next(i for i, line in enumerate(stripped) if line.startswith("airflow config list"))
    stop = next(i for i, line in enumerate(stripped) if i > start and line.startswith("chown -R"))
    migrate = stripped.index("airflow db migrate")
    admin = next(i for i, line in enumerate(stripped) if i > migrate and line.startswith("# the admin"))
    return "\n".join(lines[start:stop]), "\n".join(lines[migrate + 1:admin])


@pytest.mark.skipif(not (AIRFLOW_BIN / "airflow").exists(), reason="Airflow is not installed in this venv")
def test_airflow_init_generates_a_fernet_key_once_and_every_service_uses_it(compose, tmp_path):
    """airflow-init's own lines, run with the real Airflow CLI on a temporary airflow.cfg: a first start
    with no AIRFLOW_FERNET_KEY gets a random key, a restart keeps it, every service's environment
    makes Airflow encrypt with it; a key set later in .env takes over (old data re-encrypted by
    rotate-fernet-key), and a malformed one stops the start."""
    first, after_migrate = init_parts(compose)
    cfg = tmp_path / "config" / "airflow.cfg"
    cfg.parent.mkdir()
    fake = tmp_path / "fake-bin"  # `airflow` and `python` for the lines after `db migrate`: record what they were asked
    fake.mkdir()
    for command in ("airflow", "python"):
        (fake / command).write_text(f"#!/bin/sh\necho \"{command} $*\" >>{tmp_path / 'airflow-calls'}\n")
        (fake / command).chmod(0o755)
    check = "python /opt/konspekt/fernet-check.py"  # the lost-key check (tests/deployment/test_fernet_check.py)
    base = {"PATH": f"{AIRFLOW_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
            "AIRFLOW_HOME": str(tmp_path / "home"), "AIRFLOW_CONFIG": str(cfg),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    init_env = {k: v for k, v in compose["services"]["airflow-init"]["environment"].items()
                if "FERNET" in k}

    def init(part: str, fernet_key: str | None = None, path: str | None = None) -> subprocess.CompletedProcess:
        env = dict(base, **init_env)
        if fernet_key is not None:
            env["KONSPEKT_FERNET_KEY"] = fernet_key
        if path:
            env["PATH"] = f"{path}:{env['PATH']}"
        return subprocess.run(["bash", "-c", "set -e\n" + part], env=env, capture_output=True, text=True,
                              timeout=180)

    def keys() -> list[str]:
        return re.search(r"^fernet_key *= *(.*)$", cfg.read_text(), re.M).group(1).split(",")

    def seen_by_the_services() -> set[tuple[str, str]]:
        """(key, encrypts?) as each Airflow service's environment makes Airflow read it."""
        seen = set()
        envs = {tuple(sorted((k, v) for k, v in s["environment"].items() if k.startswith("AIRFLOW__CORE__FERNET")))
                for s in airflow_services(compose["services"]).values()}
        for fernet_env in envs:
            proc = subprocess.run([str(AIRFLOW_BIN / "python"), "-c", READ_KEY], env=dict(base, **dict(fernet_env)),
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr[-2000:]
            seen.add(re.search(r"^fernet_key=(\S*) encrypts=(\w+)$", proc.stdout, re.M).groups())
        return seen

    from cryptography.fernet import Fernet

    proc = init(first)  # the first start: .env has no key
    assert proc.returncode == 0, proc.stdout + proc.stderr
    generated = keys()
    assert len(generated) == 1 and Fernet(generated[0])  # a valid random key, in the shared airflow.cfg
    assert generated[0] not in proc.stdout + proc.stderr  # never in the log
    assert seen_by_the_services() == {(generated[0], "True")}  # every service: this key, encrypting
    assert init(first).returncode == 0 and keys() == generated  # a restart keeps it

    chosen = Fernet.generate_key().decode()  # the user sets AIRFLOW_FERNET_KEY in .env later
    assert init(first, chosen).returncode == 0
    assert keys() == [chosen, generated[0]]  # the new key encrypts; the old one still decrypts
    assert init(after_migrate, path=str(fake)).returncode == 0
    assert (tmp_path / "airflow-calls").read_text().splitlines() == [check, "airflow rotate-fernet-key"]
    assert keys() == [chosen]  # everything re-encrypted: the old key is gone
    assert seen_by_the_services() == {(chosen, "True")}
    assert init(first, chosen).returncode == 0 and keys() == [chosen]  # restarts change nothing
    assert init(after_migrate, path=str(fake)).returncode == 0
    assert (tmp_path / "airflow-calls").read_text().splitlines() == [
        check, "airflow rotate-fernet-key", check]  # checked at every start; no second rotation

    proc = init(first, "not-a-fernet-key")
    assert proc.returncode != 0 and "AIRFLOW_FERNET_KEY" in proc.stderr
    assert keys() == [chosen]  # a typo in .env never lands in airflow.cfg
