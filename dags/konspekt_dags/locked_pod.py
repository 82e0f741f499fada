"""KubernetesPodOperator for one stage: its work folder mounted from the data volume when it runs.

A mapped task learns its video's folder only when it runs, and the provider's ``volume_mounts``
are fixed when the DAG is parsed. This subclass takes ``work_dir`` (templated) and ``run_mounts``:
volume mounts worked out from the *rendered* work folder and argv, added to the pod it builds, as
:class:`~konspekt_dags.locked_docker.LockedDownDockerOperator` does for a container. Everything
else (the non-root user, the read-only root file system, no capabilities, no service-account token)
is the provider's own pod options, set by :func:`konspekt_dags.factory.pod_lockdown`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator


class StagePodOperator(KubernetesPodOperator):
    """``run_mounts(work_dir, argv)`` returns the volume mounts of the rendered work folder and argv."""

    template_fields = (*KubernetesPodOperator.template_fields, "work_dir")

    def __init__(self, *, work_dir: Any = None,
                 run_mounts: Callable[[str, list[str]], list[Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.work_dir = work_dir
        self.run_mounts = run_mounts

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> Any:
        pod = super().build_pod_request_obj(context, dry_run=dry_run)
        if self.run_mounts is not None:  # rendered by now; each mapped task has its own copy
            container = pod.spec.containers[0]
            mounts = self.run_mounts(str(self.work_dir), [str(arg) for arg in (self.cmds or [])])
            container.volume_mounts = [*(container.volume_mounts or []), *mounts]
        return pod
