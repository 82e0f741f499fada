"""Run a stage's argv as a local subprocess: the same command a task image runs.

Container paths in the argv (``/data/...``, ``/root/.cache/...``) are mapped to the
local data root and cache, and the stage's output streams into the task log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from konspekt.contracts import EXIT_BAD_INPUT
from konspekt_dags.settings import CONTAINER_CACHE, CONTAINER_DATA, settings

if TYPE_CHECKING:  # imported when the task runs: parsing the DAG need not load it
    from airflow.providers.standard.hooks.subprocess import SubprocessHook


def to_local_arg(arg: str) -> str:
    for container, local in ((CONTAINER_DATA, settings.data_root), (CONTAINER_CACHE, settings.cache_dir)):
        if arg == container or arg.startswith(container + "/"):
            return str(local) + arg[len(container):]
    return arg


def stage_env() -> dict[str, str]:
    """The environment a task container would have, pointed at the local cache.

    Not the worker's whole environment: in local mode that holds Airflow's secrets (the Fernet
    key, the database URL, ``AIRFLOW_CONN_*``/``AIRFLOW_VAR_*``), ``HF_TOKEN`` and cloud
    credentials, and a stage needs none of them (a task container gets none either: models come
    from the cache). Only an allowlist passes: what the stages and their libraries read.
    """
    keep = {
        # the process: programs (ffmpeg, espeak-ng), user, locale, time zone, temp files
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
        # Python: the interpreter's venv and imports (a second venv may run this clone's src/)
        "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONWARNINGS", "LD_LIBRARY_PATH",
        # models: offline switches and caches the stages read (src/konspekt: asr, models, whisperx)
        "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY",
        "HF_ENDPOINT", "KONSPEKT_WHISPER_CACHE", "NLTK_DATA", "MPLCONFIGDIR", "PYANNOTE_METRICS_ENABLED",
        "TOKENIZERS_PARALLELISM", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CUDA_HOME",
        # a model download (local mode, not offline) through this machine's proxy and CA bundle
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    }
    # locale, GPU (NVIDIA's runtime), threads of the numeric libraries, PyTorch's allocator
    prefixes = ("LC_", "NVIDIA_", "OMP_", "MKL_", "OPENBLAS_", "NUMEXPR_", "PYTORCH_")
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith(prefixes)}
    env.update(
        PYTHONUNBUFFERED="1",
        XDG_CACHE_HOME=str(settings.cache_dir),
        HF_HOME=str(settings.cache_dir / "huggingface"),
        TORCH_HOME=str(settings.cache_dir / "torch"),
    )
    return env


class LocalStageOperator(BaseOperator):
    """Runs ``command`` (``["python", "-m", "konspekt.stages.<stage>", ...]``) with ``python``, the
    stage's local interpreter (``settings.python_for``); ``step``'s result is read from ``work_dir``."""

    template_fields: Sequence[str] = ("command", "work_dir")
    ui_color = "#e8f4ea"

    def __init__(self, *, command: list[Any], work_dir: Any, step: str, python: str | None = None,
                 skip_bad_input: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.command = command
        self.work_dir = work_dir
        self.step = step
        self.python = python or settings.local_python
        self.skip_bad_input = skip_bad_input  # exit 2: skipped, or failed without retries
        self._hook: SubprocessHook | None = None

    def execute(self, context: Any) -> dict[str, Any] | None:
        from airflow.providers.standard.hooks.subprocess import SubprocessHook

        program, *args = [to_local_arg(str(a)) for a in self.command]
        argv = [self.python if program == "python" else program, *args]
        self._hook = SubprocessHook()
        result = self._hook.run_command(command=argv, env=stage_env(), cwd=str(settings.data_root))
        outcome = self._stage_result(Path(to_local_arg(str(self.work_dir))) / "stages" / f"{self.step}.json")
        if result.exit_code == EXIT_BAD_INPUT:
            message = f"bad input: {(outcome or {}).get('message') or result.output}"
            raise AirflowSkipException(message) if self.skip_bad_input else AirflowFailException(message)
        if result.exit_code != 0:
            reason = (outcome or {}).get("message") or result.output
            raise AirflowException(f"stage exited with code {result.exit_code}: {reason}")
        return outcome

    def on_kill(self) -> None:
        if self._hook is not None:
            self._hook.send_sigterm()

    @staticmethod
    def _stage_result(path: Path) -> dict[str, Any] | None:
        """The stage's own result file, more reliable than the last (merged) log line."""
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
            # as XCom: JSON that any client can send, even when a file name in it is not UTF-8
            return json.loads(json.dumps(result, ensure_ascii=False).encode("utf-8", "replace").decode("utf-8"))
        except (ValueError, OSError):  # JSONDecodeError is a ValueError
            return None
