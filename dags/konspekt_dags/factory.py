"""The one factory that builds every stage task.

A stage task runs ``python -m konspekt.stages.<stage> --video-dir /data/... [args]``;
a training step (``stage="training.<step>"``) runs ``python -m konspekt.training.<step>
--run-dir /data/train_runs/<run> [args]`` in the ``train`` image, with the datasets
under ``/data/train`` mounted read-only. With ``KONSPEKT_RUNNER=docker`` that argv runs in the stage's image through
DockerOperator; with ``local`` it runs in a subprocess of the local interpreter.
DAG files call :func:`stage_task` and never know which one they got.

Exit code 2 (bad input) marks the task *skipped*, in both runners: retrying a
broken file is pointless, and ``finalize`` (trigger rule ``all_done``) still runs,
moves the file to ``failed/`` and fails with the reason in plain words. A training
step passes ``bad_input="fail"``: an unusable dataset should turn the run red.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import Any

from konspekt_dags.settings import CONTAINER_CACHE, CONTAINER_DATA, CONTAINER_TRAIN_DATA, settings

EXIT_BAD_INPUT = 2


def is_training(stage: str) -> bool:
    return stage.startswith("training.")


def stage_argv(stage: str, video_dir: Any, *args: Any) -> list[Any]:
    if is_training(stage):  # video_dir is the training run's folder
        return ["python", "-m", f"konspekt.{stage}", "--run-dir", video_dir, *args]
    return ["python", "-m", f"konspekt.stages.{stage}", "--video-dir", video_dir, *args]


def stage_task(stage: str, video_dir: Any, *args: Any, gpu: bool = False, bad_input: str = "skip", **kwargs: Any):
    """An operator running ``stage`` on ``video_dir`` (a container path, or a mapped argument).

    ``bad_input``: what exit code 2 makes of the task, ``"skip"`` or ``"fail"`` (not retried locally).
    """
    if bad_input not in ("skip", "fail"):
        raise ValueError(f"bad_input must be 'skip' or 'fail', not {bad_input!r}")
    command = stage_argv(stage, video_dir, *args)
    kwargs.setdefault("task_id", stage.rpartition(".")[2])
    kwargs.setdefault("retries", settings.retries)
    kwargs.setdefault("pool", settings.pool_for(gpu))  # bounds the heavy tasks running at once (pools.py)
    if settings.runner == "docker":
        return _docker_task(stage, command, gpu=gpu, skip_bad_input=bad_input == "skip", **kwargs)
    if settings.runner == "local":
        from konspekt_dags.local_runner import LocalStageOperator

        return LocalStageOperator(command=command, python=settings.python_for(stage),
                                  skip_bad_input=bad_input == "skip", **kwargs)
    raise ValueError(f"KONSPEKT_RUNNER must be 'local' or 'docker', not {settings.runner!r}")


def _docker_task(stage: str, command: list[Any], *, gpu: bool, skip_bad_input: bool = True, **kwargs: Any):
    from docker.types import DeviceRequest, Mount

    from konspekt_dags.locked_docker import LockedDownDockerOperator

    device_requests = [DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpu and settings.gpu else None
    mounts = [
        Mount(CONTAINER_DATA, settings.data_mount_source, type="bind"),
        # Read-only: with no network a task cannot download, so it only ever reads the models.
        Mount(CONTAINER_CACHE, settings.cache_mount_source, type="bind", read_only=True),
    ]
    if is_training(stage):  # training reads the user's datasets and never changes them
        mounts.append(Mount(CONTAINER_TRAIN_DATA, settings.train_source, type="bind", read_only=True))
    return LockedDownDockerOperator(
        image=settings.image_for(stage),
        command=command,
        docker_url=settings.docker_url,
        mounts=mounts,
        mount_tmp_dir=False,  # the daemon (docker-proxy) cannot see the worker's temp dir
        auto_remove="success",
        network_mode="none",  # models come from the shared cache; stages need no network
        user=settings.docker_user or None,
        **container_lockdown(settings.docker_user),
        device_requests=device_requests,
        skip_on_exit_code=EXIT_BAD_INPUT if skip_bad_input else None,
        # matplotlib's font cache would go to the read-only cache mount; /tmp is the writable place
        environment={"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "MPLCONFIGDIR": "/tmp/matplotlib"},
        on_execute_callback=hand_over_video_dir,
        run_mounts=None if is_training(stage) else source_read_only,
        **kwargs,
    )


def source_read_only(command: list[str]) -> list[Any]:
    """The video's ``source/`` bound read-only over the writable ``/data``: no stage can change the user's file.

    Stages write only into the video's folder; extract_audio is the one that reads ``source/``.
    """
    from docker.types import Mount

    try:
        video_dir = command[command.index("--video-dir") + 1].rstrip("/")
    except (ValueError, IndexError):
        return []
    source = f"{video_dir}/source"
    relative = PurePosixPath(source).relative_to(CONTAINER_DATA)  # ValueError for a path outside /data
    host = f"{settings.data_mount_source.rstrip('/')}/{relative.as_posix()}"
    return [Mount(source, host, type="bind", read_only=True)]


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


def hand_over_video_dir(context: Any) -> None:
    """Give the claimed video's folder to the task containers' user before a stage runs.

    ``claim`` runs in the Airflow process. Under compose it runs as the same uid as the
    task containers, and this does nothing. When Airflow runs as root (on a host, with the
    host's daemon) its files (``video.json`` is 0600) would be out of reach of a task
    running as ``KONSPEKT_DOCKER_USER``, so the folder changes hands first.
    """
    ids = _numeric_user(settings.docker_user) if settings.docker_user else None
    if ids is None or os.geteuid() != 0:
        return
    command = [str(arg) for arg in context["task"].command]
    try:
        video_dir = settings.to_local(command[command.index("--video-dir") + 1])
    except (ValueError, IndexError):
        return
    if not video_dir.is_dir():
        return
    for path in (video_dir, *video_dir.rglob("*")):
        st = path.lstat()
        if (st.st_uid, st.st_gid) != ids:
            os.chown(path, *ids, follow_symlinks=False)
