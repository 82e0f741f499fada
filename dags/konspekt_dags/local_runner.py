"""Run a stage's argv as a local subprocess: the same command a task image runs.

Container paths in the argv (``/data/...``, ``/root/.cache/...``) are mapped to the
local data root and cache, and the stage's output streams into the task log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from konspekt_dags.settings import CONTAINER_CACHE, CONTAINER_DATA, settings

EXIT_BAD_INPUT = 2


def to_local_arg(arg: str) -> str:
    for container, local in ((CONTAINER_DATA, settings.data_root), (CONTAINER_CACHE, settings.cache_dir)):
        if arg == container or arg.startswith(container + "/"):
            return str(local) + arg[len(container):]
    return arg


def stage_env() -> dict[str, str]:
    """The environment a task container would have, pointed at the local cache."""
    env = dict(os.environ)
    env.update(
        PYTHONUNBUFFERED="1",
        XDG_CACHE_HOME=str(settings.cache_dir),
        HF_HOME=str(settings.cache_dir / "huggingface"),
        TORCH_HOME=str(settings.cache_dir / "torch"),
    )
    return env


class LocalStageOperator(BaseOperator):
    """Runs ``command`` (``["python", "-m", "konspekt.stages.<stage>", ...]``) with ``python``, the
    stage's local interpreter (``settings.python_for``)."""

    template_fields: Sequence[str] = ("command",)
    ui_color = "#e8f4ea"

    def __init__(self, *, command: list[Any], python: str | None = None, skip_bad_input: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.command = command
        self.python = python or settings.local_python
        self.skip_bad_input = skip_bad_input  # exit 2: skipped, or failed without retries
        self._hook = None

    def execute(self, context: Any) -> dict[str, Any] | None:
        from airflow.providers.standard.hooks.subprocess import SubprocessHook

        program, *args = [to_local_arg(str(a)) for a in self.command]
        argv = [self.python if program == "python" else program, *args]
        self._hook = SubprocessHook()
        result = self._hook.run_command(command=argv, env=stage_env(), cwd=str(settings.data_root))
        outcome = self._stage_result(argv)
        if result.exit_code == EXIT_BAD_INPUT:
            message = f"bad input: {(outcome or {}).get('message') or result.output}"
            raise AirflowSkipException(message) if self.skip_bad_input else AirflowFailException(message)
        if result.exit_code != 0:
            raise AirflowException(f"stage exited with code {result.exit_code}: {(outcome or {}).get('message') or result.output}")
        return outcome

    def on_kill(self) -> None:
        if self._hook is not None:
            self._hook.send_sigterm()

    @staticmethod
    def _stage_result(argv: list[str]) -> dict[str, Any] | None:
        """The stage's own result file, more reliable than the last (merged) log line."""
        try:
            flag = "--run-dir" if "--run-dir" in argv else "--video-dir"  # a training step, or a stage
            work_dir = Path(argv[argv.index(flag) + 1])
            stage = argv[argv.index("-m") + 1].rsplit(".", 1)[-1]
            return json.loads((work_dir / "stages" / f"{stage}.json").read_text(encoding="utf-8"))
        except (ValueError, IndexError, OSError, json.JSONDecodeError):
            return None
