"""The one factory that builds every stage task.

Each task runs one stage of :mod:`konspekt.registry`: ``python -m konspekt.stages.<stage>
--video-dir /data/processing/... [args]``, or for a training step (``training.<step>``)
``python -m konspekt.training.<step> --run-dir /data/train_runs/<run> [args]``; the registry
says which image runs it and whether it asks for the GPU. The operator also gets the work
folder as a templated field (``work_dir``). With ``KONSPEKT_RUNNER=docker`` the argv runs in
the stage's image through DockerOperator, which sees only its work folder and what its argv
names (:func:`work_paths`); with ``kubernetes`` it runs in the same image as a pod
(KubernetesPodOperator), which mounts the same folders from the data volume; with ``local`` it
runs in a subprocess of the local interpreter.
DAG files call :func:`stage_task` and never know which one they got. Every task gets a time
limit (:func:`scale_timeout`).

Exit code 2 (bad input) marks the task *skipped*, in both runners: retrying a
broken file is pointless, and ``finalize`` (trigger rule ``all_done``) still runs,
moves the file to ``failed/`` and fails with the reason in plain words. Any other
failure is retried, and then held for a later run (see ``konspekt.inbox.finalize``). A training
step passes ``bad_input="fail"``: an unusable dataset should turn the run red.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from konspekt import registry
from konspekt.contracts import EXIT_BAD_INPUT
from konspekt_dags.settings import CONTAINER_CACHE, CONTAINER_DATA, CONTAINER_TRAIN_DATA, settings


def stage_argv(name: str, work_dir: Any, *args: Any) -> list[Any]:
    """What a task runs: the stage's module, on its work folder (a video's, or a training run's)."""
    stage = registry.get(name)
    return ["python", "-m", stage.module, stage.work_flag, work_dir, *args]


# A task container's or pod's whole environment: no secret of the Airflow side reaches a stage.
TASK_ENV = {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "MPLCONFIGDIR": "/tmp/matplotlib"}


def stage_task(name: str, work_dir: Any, *args: Any, bad_input: str = "skip", **kwargs: Any):
    """An operator running the registry's stage ``name`` on ``work_dir`` (a container path, or a mapped argument).

    ``bad_input``: what exit code 2 makes of the task, ``"skip"`` or ``"fail"`` (not retried locally).
    """
    if bad_input not in ("skip", "fail"):
        raise ValueError(f"bad_input must be 'skip' or 'fail', not {bad_input!r}")
    stage = registry.get(name)
    command = stage_argv(name, work_dir, *args)
    kwargs.setdefault("task_id", stage.task)
    kwargs.setdefault("retries", settings.retries)
    kwargs.setdefault("pool", settings.pool_for(stage.gpu))  # bounds the heavy tasks running at once (pools.py)
    if queue := settings.queue_for(stage.gpu):  # Celery: only workers with a GPU take it
        kwargs.setdefault("queue", queue)
    if stage.is_training:
        kwargs.setdefault("execution_timeout", timedelta(hours=settings.train_timeout_hours))
    else:  # nothing runs for ever: the limit scales with the lecture's length, known once it runs
        kwargs.setdefault("pre_execute", scale_timeout)
    if settings.runner == "docker":
        return _docker_task(stage, command, work_dir, skip_bad_input=bad_input == "skip", **kwargs)
    if settings.runner == "kubernetes":
        return _kubernetes_task(stage, command, work_dir, skip_bad_input=bad_input == "skip", **kwargs)
    if settings.runner == "local":
        from konspekt_dags.local_runner import LocalStageOperator

        return LocalStageOperator(command=command, work_dir=work_dir, step=stage.step,
                                  python=settings.python_for(stage.name), skip_bad_input=bad_input == "skip", **kwargs)
    raise ValueError(f"KONSPEKT_RUNNER must be 'local', 'docker' or 'kubernetes', not {settings.runner!r}")


def scale_timeout(context: Any) -> None:
    """Set the task's ``execution_timeout`` from the lecture's length (``extract_audio``'s result).

    Airflow reads ``execution_timeout`` after this hook, so each mapped task gets its own.
    Before ``extract_audio`` has run, the length is unknown and the longest allowed one counts.
    """
    task = context["task"]
    video = str(task.work_dir).rstrip("/")  # rendered by now: this task's own video
    duration = None
    if _inside(video, "processing", depth=2):
        try:
            result = json.loads((settings.to_local(video) / "stages" / "extract_audio.json").read_text())
            duration = float(result["details"]["duration"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    task.execution_timeout = timedelta(seconds=settings.stage_timeout_seconds(duration))
    task.log.info("time limit %s for %s of audio", task.execution_timeout,
                  f"{duration:.0f} s" if duration else "an unknown length")


def _docker_task(stage: registry.Stage, command: list[Any], work_dir: Any, *, skip_bad_input: bool = True,
                 **kwargs: Any):
    from docker.types import DeviceRequest, Mount

    from konspekt_dags.locked_docker import LockedDownDockerOperator

    device_requests = [DeviceRequest(count=-1, capabilities=[["gpu"]])] if stage.gpu and settings.gpu else None
    # Read-only: with no network a task cannot download, so it only ever reads the models.
    # The data root is not mounted whole: work_mounts() binds the task's own folders when it runs.
    mounts = [Mount(CONTAINER_CACHE, settings.cache_mount_source, type="bind", read_only=True)]
    return LockedDownDockerOperator(
        image=settings.image_for(stage.name),
        command=command,
        work_dir=work_dir,
        docker_url=settings.docker_url,
        mounts=mounts,
        mount_tmp_dir=False,  # the daemon (docker-proxy) cannot see the worker's temp dir
        auto_remove="success",
        network_mode="none",  # models come from the shared cache; stages need no network
        user=settings.docker_user or None,
        **container_lockdown(settings.docker_user),
        mem_limit=settings.task_memory_bytes,
        pids_limit=settings.task_pids,
        device_requests=device_requests,
        skip_on_exit_code=EXIT_BAD_INPUT if skip_bad_input else None,
        # matplotlib's font cache would go to the read-only cache mount; /tmp is the writable place
        environment=dict(TASK_ENV),  # a copy: the operator may add to it
        run_mounts=lambda folder, argv: work_mounts(stage, folder, argv),
        **kwargs,
    )


# --- the Kubernetes runner: the same images and argv, as pods -----------------------------------------

DATA_VOLUME, CACHE_VOLUME, TMP_VOLUME = "data", "cache", "tmp"
NETWORK_LABEL = "konspekt.io/network"  # "none": airflow/kubernetes/networkpolicy.yaml lets no traffic in or out


def _kubernetes_task(stage: registry.Stage, command: list[Any], work_dir: Any, *, skip_bad_input: bool = True,
                     **kwargs: Any):
    from kubernetes.client import models as k8s

    from konspekt_dags.locked_pod import StagePodOperator

    connection = {"in_cluster": True} if not settings.k8s_conn_id else {"kubernetes_conn_id": settings.k8s_conn_id,
                                                                          "in_cluster": False}
    return StagePodOperator(
        name=f"konspekt-{stage.task.replace('_', '-')}",  # plus a random suffix: one pod per try
        namespace=settings.k8s_namespace,
        image=settings.image_for(stage.name),
        image_pull_policy=settings.k8s_image_pull_policy,
        cmds=command,  # the argv itself: no shell, as in the other runners
        work_dir=work_dir,
        volumes=[
            k8s.V1Volume(name=DATA_VOLUME, persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                claim_name=settings.k8s_data_pvc)),
            # read-only, as in docker mode: with no network a task cannot download, so it only reads models
            k8s.V1Volume(name=CACHE_VOLUME, persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                claim_name=settings.k8s_cache_pvc, read_only=True)),
            k8s.V1Volume(name=TMP_VOLUME, empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="4Gi")),
        ],
        volume_mounts=[k8s.V1VolumeMount(name=CACHE_VOLUME, mount_path=CONTAINER_CACHE, read_only=True),
                       k8s.V1VolumeMount(name=TMP_VOLUME, mount_path="/tmp")],
        run_mounts=lambda folder, argv: pod_mounts(stage, folder, argv),
        container_resources=stage_resources(stage),
        env_vars=dict(TASK_ENV),
        labels={"app.kubernetes.io/part-of": "konspekt", "konspekt.io/stage": stage.step,
                NETWORK_LABEL: "none"},
        skip_on_exit_code=EXIT_BAD_INPUT if skip_bad_input else None,
        on_finish_action="delete_succeeded_pod",  # a failed pod stays for `kubectl describe`
        get_logs=True,
        do_xcom_push=False,  # results are files in the work folder, read by the next task
        **connection,
        **pod_lockdown(settings.k8s_user),
        **kwargs,
    )


def pod_lockdown(user: str) -> dict[str, Any]:
    """The pod and container security options of a stage pod running as ``user`` ("uid:gid", never root)."""
    from kubernetes.client import models as k8s

    ids = _numeric_user(user)
    if ids is None or ids[0] == 0:
        raise ValueError(f"KONSPEKT_K8S_USER must be a numeric uid:gid other than root, not {user!r}")
    return {
        "security_context": k8s.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=ids[0], run_as_group=ids[1],
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")),
        "container_security_context": k8s.V1SecurityContext(
            allow_privilege_escalation=False, read_only_root_filesystem=True, run_as_non_root=True,
            capabilities=k8s.V1Capabilities(drop=["ALL"])),
        "automount_service_account_token": False,  # a stage never talks to the Kubernetes API
        "hostnetwork": False,
    }


def stage_resources(stage: registry.Stage) -> Any:
    """Requests from the registry (what the stage needs on a long lecture); the memory limit is
    KONSPEKT_TASK_MEMORY when set, else twice the request. No CPU limit: a limit only throttles a
    stage on an idle node. A GPU stage gets one GPU when the deployment has them (KONSPEKT_GPU)."""
    from kubernetes.client import models as k8s

    memory_limit = settings.task_memory or f"{2 * stage.memory_gib:g}Gi"
    limits = {"memory": memory_limit, **({"nvidia.com/gpu": "1"} if stage.gpu and settings.gpu else {})}
    return k8s.V1ResourceRequirements(requests={"cpu": f"{stage.cpus:g}", "memory": f"{stage.memory_gib:g}Gi"},
                                      limits=limits)


def pod_mounts(stage: registry.Stage, work_dir: str, command: list[str]) -> list[Any]:
    """Volume mounts for :func:`work_paths`: each a sub-path of the data volume at its own path, the folders it
    writes created first (by this Airflow process, which mounts the same volume: the kubelet would create a
    missing one as root)."""
    from kubernetes.client import models as k8s

    writable, readable = work_paths(stage, work_dir, command)
    make_folders(writable)
    return [k8s.V1VolumeMount(name=DATA_VOLUME, mount_path=path, read_only=path in readable,
                              sub_path=PurePosixPath(path).relative_to(CONTAINER_DATA).as_posix())
            for path in dict.fromkeys([*writable, *readable])]


def argv_value(command: list[str], flag: str) -> str | None:
    try:
        return command[command.index(flag) + 1].rstrip("/")
    except (ValueError, IndexError):
        return None


def work_paths(stage: registry.Stage, work_dir: str, command: list[str]) -> tuple[list[str], list[str]]:
    """The container paths under /data that a task needs, from its rendered work folder and argv:
    (read-write, read-only).

    A video stage: its video's folder, and its ``source/`` (the user's file) read-only. A training
    step: its run folder, the run's logs/ and models/ folders and the shard cache; read_data
    also reads its dataset. Any task: a model the argv names under ``/data/models/``, read-only.
    A path that is not where its kind lives (``..``, another folder) is never bound.
    """
    writable, readable = [], []
    work_dir = work_dir.rstrip("/")
    if stage.is_training:
        if _inside(work_dir, "train_runs", depth=1):
            name = PurePosixPath(work_dir).name
            writable += [work_dir, f"{CONTAINER_DATA}/logs/{name}", f"{CONTAINER_DATA}/models/{name}",
                         f"{CONTAINER_DATA}/train_cache"]
        if (dataset := argv_value(command, "--dataset")) and _inside(dataset, "train", depth=1):
            readable.append(dataset)
    elif _inside(work_dir, "processing", depth=2):
        writable.append(work_dir)
        readable.append(f"{work_dir}/source")
    readable += [arg.rstrip("/") for arg in command if _inside(arg.rstrip("/"), "models")]
    return writable, readable


def _inside(path: str, folder: str, depth: int | None = None) -> bool:
    """``path`` is ``/data/<folder>/...`` (exactly ``depth`` names below it), with no ``..``."""
    pure, base = PurePosixPath(path), PurePosixPath(CONTAINER_DATA, folder)
    if not pure.is_absolute() or ".." in pure.parts or not pure.is_relative_to(base) or pure == base:
        return False
    return depth is None or len(pure.relative_to(base).parts) == depth


def work_mounts(stage: registry.Stage, work_dir: str, command: list[str]) -> list[Any]:
    """Bind mounts for :func:`work_paths`, each at its own path; the folders it writes are created first."""
    from docker.types import Mount

    writable, readable = work_paths(stage, work_dir, command)
    hand_over(make_folders(writable))
    return [Mount(path, _host_path(path), type="bind", read_only=path in readable)
            for path in dict.fromkeys([*writable, *readable])]


def make_folders(paths: list[str]) -> list[Path]:
    """The folders a task writes (container paths), made here first, as this Airflow process sees them."""
    folders = [settings.to_local(path) for path in paths]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    return folders


def _host_path(path: str) -> str:
    """A container path under /data as the Docker daemon sees it (datasets may live elsewhere)."""
    if _inside(path, "train"):
        return f"{settings.train_source.rstrip('/')}/{PurePosixPath(path).relative_to(CONTAINER_TRAIN_DATA)}"
    relative = PurePosixPath(path).relative_to(CONTAINER_DATA).as_posix()
    return f"{settings.data_mount_source.rstrip('/')}/{relative}"


# What a stage needs from root's powers: nothing. It reads and writes files it owns under /data.
# Only a container left to run as root (no KONSPEKT_DOCKER_USER) keeps the file-access
# capabilities, to write into folders that belong to the Airflow user.
ROOT_FILE_CAPABILITIES = ["CHOWN", "DAC_OVERRIDE", "FOWNER"]


def container_lockdown(docker_user: str) -> dict[str, Any]:
    """The lock-down options of a task container that runs as ``docker_user`` ("" = the image's root)."""
    as_root = docker_user.partition(":")[0] in ("", "0", "root")
    return {
        "cap_drop": ["ALL"],
        "cap_add": ROOT_FILE_CAPABILITIES if as_root else None,
        "security_opt": ["no-new-privileges"],  # no setuid way back to root
        "read_only": True,  # the image cannot be changed at run time; /data and /tmp are the writable places
        "tmpfs": {"/tmp": "rw,nosuid,nodev,mode=1777"},
    }


def _numeric_user(user: str) -> tuple[int, int] | None:
    uid, _, gid = user.partition(":")
    try:
        return int(uid), int(gid or uid)
    except ValueError:
        return None  # a user name: only the image knows it


def hand_over(folders: list[Path]) -> None:
    """Give the task's work folders to the task containers' user before it runs.

    ``claim`` and :func:`work_mounts` run in the Airflow process. Under compose it runs as the
    same uid as the task containers, and this does nothing. When Airflow runs as root (on a host,
    with the host's daemon) its files (``video.json`` is 0600) would be out of reach of a task
    running as ``KONSPEKT_DOCKER_USER``, so the folders change hands first.
    """
    ids = _numeric_user(settings.docker_user) if settings.docker_user else None
    if ids is None or os.geteuid() != 0:
        return
    for folder in folders:
        for path in (folder, *folder.rglob("*")):
            st = path.lstat()
            if (st.st_uid, st.st_gid) != ids:
                os.chown(path, *ids, follow_symlinks=False)
