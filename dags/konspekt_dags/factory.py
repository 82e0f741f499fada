"""The one factory that builds every stage task.

A stage task runs ``python -m konspekt.stages.<stage> --video-dir /data/... [args]``.
With ``KONSPEKT_RUNNER=docker`` that argv runs in the stage's image through
DockerOperator; with ``local`` it runs in a subprocess of the local interpreter.
DAG files call :func:`stage_task` and never know which one they got.

Exit code 2 (bad input) marks the task *skipped*, in both runners: retrying a
broken file is pointless, and ``finalize`` (trigger rule ``all_done``) still runs,
moves the file to ``failed/`` and fails with the reason in plain words.
"""

from __future__ import annotations

from typing import Any

from konspekt_dags.settings import CONTAINER_CACHE, CONTAINER_DATA, settings

EXIT_BAD_INPUT = 2


def stage_argv(stage: str, video_dir: Any, *args: Any) -> list[Any]:
    return ["python", "-m", f"konspekt.stages.{stage}", "--video-dir", video_dir, *args]


def stage_task(stage: str, video_dir: Any, *args: Any, gpu: bool = False, **kwargs: Any):
    """An operator running ``stage`` on ``video_dir`` (a container path, or a mapped argument)."""
    command = stage_argv(stage, video_dir, *args)
    kwargs.setdefault("task_id", stage)
    kwargs.setdefault("retries", settings.retries)
    if settings.runner == "docker":
        return _docker_task(stage, command, gpu=gpu, **kwargs)
    if settings.runner == "local":
        from konspekt_dags.local_runner import LocalStageOperator

        return LocalStageOperator(command=command, **kwargs)
    raise ValueError(f"KONSPEKT_RUNNER must be 'local' or 'docker', not {settings.runner!r}")


def _docker_task(stage: str, command: list[Any], *, gpu: bool, **kwargs: Any):
    from airflow.providers.docker.operators.docker import DockerOperator
    from docker.types import DeviceRequest, Mount

    device_requests = [DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpu and settings.gpu else None
    return DockerOperator(
        image=settings.image_for(stage),
        command=command,
        docker_url=settings.docker_url,
        mounts=[
            Mount(CONTAINER_DATA, settings.data_mount_source, type="bind"),
            Mount(CONTAINER_CACHE, settings.cache_mount_source, type="bind"),
        ],
        mount_tmp_dir=False,  # the daemon (docker-proxy) cannot see the worker's temp dir
        auto_remove="success",
        network_mode="none",  # models come from the shared cache; stages need no network
        user=settings.docker_user or None,
        device_requests=device_requests,
        skip_on_exit_code=EXIT_BAD_INPUT,
        environment={"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"},
        **kwargs,
    )
