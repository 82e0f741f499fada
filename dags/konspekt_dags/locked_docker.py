"""DockerOperator with the container lock-down options the Docker provider does not expose.

The provider (4.6) passes a fixed set of HostConfig fields to the daemon: ``cap_add`` but
no ``cap_drop``, no ``security_opt``, no read-only root filesystem, no tmpfs, no pids limit.
This subclass adds those five to the HostConfig the provider builds. It also takes ``work_dir`` (templated)
and ``run_mounts``: mounts worked out from the *rendered* work folder and command when the task runs,
because the provider's ``mounts`` are not templated and a mapped task learns its folder only then.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

from airflow.providers.docker.operators.docker import DockerOperator

TRY_LABEL = "konspekt.task"  # dag/run/task/map index: the containers of one task, over its tries


class _HostConfigExtras:
    """The provider's docker APIClient, with extra fields in every ``create_host_config``."""

    def __init__(self, client: Any, extras: dict[str, Any]) -> None:
        self._client = client
        self._extras = extras

    def create_host_config(self, *args: Any, **kwargs: Any) -> Any:
        return self._client.create_host_config(*args, **{**kwargs, **self._extras})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class LockedDownDockerOperator(DockerOperator):
    """``cap_drop``, ``security_opt``, ``read_only`` (root filesystem) and ``tmpfs`` for the task container.

    ``run_mounts(work_dir, command)`` returns extra mounts for the rendered work folder and argv (str, list of str).
    """

    template_fields = (*DockerOperator.template_fields, "work_dir")

    def __init__(self, *, work_dir: Any = None, cap_drop: list[str] | None = None,
                 security_opt: list[str] | None = None,
                 read_only: bool = False, tmpfs: dict[str, str] | None = None, pids_limit: int | None = None,
                 run_mounts: Callable[[str, list[str]], list[Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.work_dir = work_dir
        self.pids_limit = pids_limit
        self.cap_drop = cap_drop
        self.security_opt = security_opt
        self.read_only = read_only
        self.tmpfs = tmpfs
        self.run_mounts = run_mounts

    def execute(self, context: Any) -> Any:
        if self.run_mounts is not None:  # rendered by now; each mapped task has its own copy
            # the argv the container gets: a str command as the provider and docker-py read it (the factory's is a list)
            command = self.format_command(self.command)
            argv = command if isinstance(command, list) else shlex.split(command or "")
            self.mounts = [*self.mounts, *self.run_mounts(str(self.work_dir), [str(arg) for arg in argv])]
        if (ti := context.get("ti")) is not None:
            key = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}"
            labels = self.labels or {}  # a list is label names, as docker-py reads it: each with value ""
            self.labels = {**(labels if isinstance(labels, dict) else dict.fromkeys(labels, "")), TRY_LABEL: key}
            self.remove_earlier_tries(key)
        return super().execute(context)

    def remove_earlier_tries(self, key: str) -> None:
        """Containers an earlier try of this task left behind, stopped: its worker died (or the daemon
        restarted) before the provider could remove them. A running one is left alone: the stage's lock
        makes this try wait for it."""
        for container in self.cli.containers(all=True, filters={"label": f"{TRY_LABEL}={key}"}):
            if container.get("State") in ("exited", "dead", "created"):
                self.log.info("removing container %s, left by an earlier try", container["Id"][:12])
                self.cli.remove_container(container["Id"], force=True)

    def host_config_extras(self) -> dict[str, Any]:
        return {"cap_drop": self.cap_drop, "security_opt": self.security_opt,
                "read_only": self.read_only or None, "tmpfs": self.tmpfs, "pids_limit": self.pids_limit}

    @property
    def cli(self) -> Any:
        return _HostConfigExtras(super().cli, self.host_config_extras())
