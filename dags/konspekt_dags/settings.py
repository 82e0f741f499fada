"""Every konspekt setting, read once from the environment (compose's ``.env``, or the Makefile).

Nothing else in the bundle reads the environment. Per-run choices (model, language,
...) are Airflow Params whose defaults come from here, so the UI can override them.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from konspekt import registry
from konspekt.contracts import parse_bool
from konspekt.deployment import CONTAINER_CACHE, CONTAINER_DATA, DEFAULTS, default

BUNDLE_ROOT = Path(__file__).resolve().parents[2]  # the repository: dags/ sits at its top
CONTAINER_TRAIN_DATA = f"{CONTAINER_DATA}/train"  # training datasets, mounted read-only into training tasks


def _env(name: str, default: str | None = None) -> str:
    """KONSPEKT_<name>; unset or empty: ``default``, else the shared default (konspekt.deployment)."""
    value = os.environ.get(f"KONSPEKT_{name}")
    if value not in (None, ""):
        return value
    return DEFAULTS[name] if default is None else default


def _machine_slots(gb_per_stage: float = 2.0) -> int:
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return max(1, min(len(os.sched_getaffinity(0)), int(memory_gb // gb_per_stage)))


def _flag(name: str, default: bool | None = None) -> bool:
    try:
        return parse_bool(_env(name, None if default is None else str(default)))
    except ValueError:  # as before: any other word is no
        return False


def _number(name: str, kind: type) -> Any:
    """An optional number: unset or empty is None (the stage's own default)."""
    value = _env(name, "")
    return kind(value) if value else None


@dataclass(frozen=True)
class Settings:
    runner: str = field(default_factory=lambda: _env("RUNNER"))  # "local" | "docker" | "kubernetes"
    # The data root as *this* Airflow process sees it (compose: /opt/airflow/data).
    data_root: Path = field(default_factory=lambda: Path(_env("DATA_ROOT", str(BUNDLE_ROOT / "data"))).resolve())
    # The model cache in local mode; task containers mount it at /root/.cache.
    cache_dir: Path = field(default_factory=lambda: Path(_env("CACHE_DIR", str(BUNDLE_ROOT / "cache"))).resolve())
    # local runner: the interpreter that has `konspekt[all]` installed
    local_python: str = field(default_factory=lambda: _env("LOCAL_PYTHON", sys.executable))
    # ... and interpreters for some image families instead, e.g. {"asr": "<whisperx venv>/bin/python"}
    # (whisperx pins its own torch, so it cannot share the main venv)
    local_pythons: dict = field(default_factory=lambda: json.loads(_env("LOCAL_PYTHONS", "{}")))
    # docker runner
    docker_url: str = field(default_factory=lambda: _env("DOCKER_URL"))
    data_mount_source: str = field(default_factory=lambda: _env("DATA_MOUNT_SOURCE"))  # as the daemon sees it
    cache_mount_source: str = field(default_factory=lambda: _env("CACHE_MOUNT_SOURCE"))
    # empty: <DATA_MOUNT_SOURCE>/train
    train_mount_source: str = field(default_factory=lambda: _env("TRAIN_MOUNT_SOURCE", ""))
    image_prefix: str = field(default_factory=lambda: _env("IMAGE_PREFIX"))
    image_tag: str = field(default_factory=lambda: _env("IMAGE_TAG"))
    docker_user: str = field(default_factory=lambda: _env("DOCKER_USER"))  # "uid:gid" of the host user
    gpu: bool = field(default_factory=lambda: _flag("GPU"))
    # kubernetes runner (airflow/kubernetes/): the namespace of the stage pods and the volume claims they
    # mount; the pods run as this uid:gid, which must be Airflow's (the chart's 50000:0), as it writes the
    # folders they work in. No connection id (the default): Airflow runs in the cluster (the chart) and uses
    # the in-cluster config; else an Airflow kubernetes connection (a kubeconfig) names the cluster.
    k8s_namespace: str = field(default_factory=lambda: _env("K8S_NAMESPACE", "konspekt"))
    k8s_data_pvc: str = field(default_factory=lambda: _env("K8S_DATA_PVC", "konspekt-data"))
    k8s_cache_pvc: str = field(default_factory=lambda: _env("K8S_CACHE_PVC", "konspekt-cache"))
    k8s_user: str = field(default_factory=lambda: _env("K8S_USER", "50000:0"))
    k8s_conn_id: str = field(default_factory=lambda: _env("K8S_CONN_ID", ""))
    k8s_image_pull_policy: str = field(default_factory=lambda: _env("K8S_IMAGE_PULL_POLICY", "IfNotPresent"))
    # per-run defaults (editable as Params when triggering)
    # local runner: the packaged multilingual base (no download); docker: small, fetched once into the cache
    whisper_model: str = field(default_factory=lambda: _env("WHISPER_MODEL", default("WHISPER_MODEL", _env("RUNNER"))))
    language: str = field(default_factory=lambda: _env("LANGUAGE", "auto"))
    device: str = field(default_factory=lambda: _env("DEVICE", "auto"))
    asr_backend: str = field(default_factory=lambda: _env("ASR_BACKEND", "auto"))  # | faster-whisper | whisperx
    asr_batch_size: int = field(default_factory=lambda: int(_env("ASR_BATCH_SIZE", "8")))
    asr_beam_size: int = field(default_factory=lambda: int(_env("ASR_BEAM_SIZE", "5")))
    # decoding and subtitle options (names as in the WhisperX CLI; empty: the backend's own default)
    asr_task: str = field(default_factory=lambda: _env("TASK", "transcribe"))  # | translate (into English)
    initial_prompt: str = field(default_factory=lambda: _env("INITIAL_PROMPT", ""))
    hotwords: str = field(default_factory=lambda: _env("HOTWORDS", ""))
    compute_type: str = field(default_factory=lambda: _env("COMPUTE_TYPE", "auto"))
    vad_filter: bool = field(default_factory=lambda: _flag("VAD_FILTER", True))
    vad_onset: float | None = field(default_factory=lambda: _number("VAD_ONSET", float))
    vad_offset: float | None = field(default_factory=lambda: _number("VAD_OFFSET", float))
    max_line_width: int | None = field(default_factory=lambda: _number("MAX_LINE_WIDTH", int))
    max_line_count: int | None = field(default_factory=lambda: _number("MAX_LINE_COUNT", int))
    max_cue_seconds: float | None = field(default_factory=lambda: _number("MAX_CUE_SECONDS", float))
    # speaker labels: pyannote's gated pipeline; HF_TOKEN (the hub's own variable) fetches it once
    diarize: bool = field(default_factory=lambda: _flag("DIARIZE", False))
    diarization_model: str = field(default_factory=lambda: _env("DIARIZATION_MODEL"))
    summary_method: str = field(default_factory=lambda: _env("SUMMARY_METHOD"))
    summary_model: str = field(default_factory=lambda: _env("SUMMARY_MODEL"))
    # summary models for other languages, e.g. {"ru": "IlyaGusev/mbart_ru_sum_gazeta"}; "*" = any other
    summary_models: dict = field(default_factory=lambda: json.loads(_env("SUMMARY_MODELS", "{}")))
    keep_byproducts: bool = field(default_factory=lambda: _flag("KEEP_BYPRODUCTS", False))
    # the watch folder: lecture_inbox's schedule (empty: none; then trigger lecture_to_pdf by hand)
    schedule: str | None = field(default_factory=lambda: _env("SCHEDULE", "@continuous") or None)
    # runs of lecture_to_pdf at once, one per video: the pools bound the work, so a video dropped
    # mid-batch starts at once; beyond this many its run queues
    max_active_videos: int = field(default_factory=lambda: int(_env("MAX_ACTIVE_VIDEOS", "64")))
    sensor_mode: str = field(default_factory=lambda: _env("SENSOR_MODE", "deferrable"))  # | reschedule | poke
    # how often the sensor looks at input/: cheap in the triggerer (deferrable); raise it for reschedule mode
    poke_seconds: float = field(default_factory=lambda: float(_env("POKE_SECONDS", "1")))
    # After this long with no file the run ends as skipped; @continuous then starts the next wait.
    sensor_timeout_seconds: float = field(default_factory=lambda: float(_env("SENSOR_TIMEOUT_SECONDS", "86400")))
    stable_seconds: float = field(default_factory=lambda: float(_env("STABLE_SECONDS", "5")))
    claim_wait_seconds: float = field(default_factory=lambda: float(_env("CLAIM_WAIT_SECONDS", "60")))
    retries: int = field(default_factory=lambda: int(_env("RETRIES", "2")))
    # Limits: no file or task runs for ever. Over the size or length, a file is quarantined with the reason.
    max_file_gb: float = field(default_factory=lambda: float(_env("MAX_FILE_GB", "20")))
    max_duration_hours: float = field(default_factory=lambda: float(_env("MAX_DURATION_HOURS", "6")))
    # a stage task may run timeout_minutes + timeout_factor x the lecture's length (CPU transcription is slow)
    timeout_minutes: float = field(default_factory=lambda: float(_env("TIMEOUT_MINUTES", "30")))
    timeout_factor: float = field(default_factory=lambda: float(_env("TIMEOUT_FACTOR", "6")))
    train_timeout_hours: float = field(default_factory=lambda: float(_env("TRAIN_TIMEOUT_HOURS", "72")))
    # each task container's memory (e.g. 8g; empty: 80 % of this machine's; a pod: twice its request) and processes
    task_memory: str = field(default_factory=lambda: _env("TASK_MEMORY", ""))
    task_pids: int = field(default_factory=lambda: int(_env("TASK_PIDS", "4096")))
    # a video that failed for a reason outside the file (a missing model) is retried after this long
    hold_minutes: float = field(default_factory=lambda: float(_env("HOLD_MINUTES", "10")))
    # Airflow pools bound how many heavy stage tasks run at once (konspekt_dags.pools creates them):
    # stages that request the GPU (when there is one) queue for gpu_pool, every other stage for cpu_pool.
    gpu_pool: str = field(default_factory=lambda: _env("GPU_POOL", "konspekt_gpu"))
    gpu_pool_slots: int = field(default_factory=lambda: int(_env("GPU_POOL_SLOTS", "1")))
    cpu_pool: str = field(default_factory=lambda: _env("CPU_POOL", "konspekt_cpu"))
    # CeleryExecutor (the celery profile): the queue of the stages that ask for the GPU, which only workers
    # with one serve (`airflow celery worker --queues gpu,cpu`); every other task takes Airflow's default
    # queue, `cpu` (airflow/airflow.env). Other executors ignore queues.
    gpu_queue: str = field(default_factory=lambda: _env("GPU_QUEUE", "gpu"))
    # one stage per core, as long as each can have 2 GB (a stage's peak: ASR small, BART)
    cpu_pool_slots: int = field(default_factory=lambda: int(_env("CPU_POOL_SLOTS", str(_machine_slots()))))
    # training DAG (train_asr): Param defaults
    train_dataset: str = field(default_factory=lambda: _env("TRAIN_DATASET", "lectures"))
    train_base_model: str = field(default_factory=lambda: _env("TRAIN_BASE_MODEL", "openai/whisper-small"))
    train_language: str = field(default_factory=lambda: _env("TRAIN_LANGUAGE", "en"))
    train_freeze_encoder: bool = field(default_factory=lambda: _flag("TRAIN_FREEZE_ENCODER", False))
    train_epochs: float = field(default_factory=lambda: float(_env("TRAIN_EPOCHS", "3")))
    train_max_steps: int = field(default_factory=lambda: int(_env("TRAIN_MAX_STEPS", "0")))
    train_learning_rate: float = field(default_factory=lambda: float(_env("TRAIN_LEARNING_RATE", "1e-5")))
    train_warmup_steps: int = field(default_factory=lambda: int(_env("TRAIN_WARMUP_STEPS", "50")))
    train_batch_size: int = field(default_factory=lambda: int(_env("TRAIN_BATCH_SIZE", "8")))
    train_grad_accum: int = field(default_factory=lambda: int(_env("TRAIN_GRAD_ACCUM", "2")))
    train_log_every: int = field(default_factory=lambda: int(_env("TRAIN_LOG_EVERY", "10")))
    train_eval_every: int = field(default_factory=lambda: int(_env("TRAIN_EVAL_EVERY", "200")))
    train_ckpt_every: int = field(default_factory=lambda: int(_env("TRAIN_CKPT_EVERY", "100")))
    train_val_fraction: float = field(default_factory=lambda: float(_env("TRAIN_VAL_FRACTION", "0.1")))
    train_max_bad_fraction: float = field(default_factory=lambda: float(_env("TRAIN_MAX_BAD_FRACTION", "0.2")))
    # Notifications (konspekt_dags.notify): apprise URLs, comma- or space-separated (mailto://, tgram://,
    # json://, ...); empty: none. repr=False: a URL may hold a password or token.
    notify_urls: str = field(default_factory=lambda: _env("NOTIFY_URLS", ""), repr=False)
    # which outcomes to send: published, quarantined (failed/), held (kept for a later run)
    notify_on: str = field(default_factory=lambda: _env("NOTIFY_ON", "published,quarantined,held"))
    # The HTTP upload API (plugins/konspekt_api.py, at /konspekt on Airflow's api-server): its keys file
    # (empty: <data root>/api/keys.json; `konspekt keys create`), how often it looks for finished uploads
    # to call back, and whether callback URLs may point at private addresses (a LAN service; off: a key
    # holder cannot make the server post into the compose network). Uploads are limited to MAX_FILE_GB.
    api_keys_file: str = field(default_factory=lambda: _env("API_KEYS_FILE", ""))
    api_callback_poll_seconds: float = field(default_factory=lambda: float(_env("API_CALLBACK_POLL_SECONDS", "10")))
    api_private_callbacks: bool = field(default_factory=lambda: _flag("API_PRIVATE_CALLBACKS", False))
    # Upload limits (429 past them, with Retry-After): uploads of one key at once (0: any), and GB one key
    # may send in 24 hours (every byte received, kept or not; 0: no limit). A client that sends nothing
    # for IDLE_TIMEOUT seconds is dropped (408). The disk of input/ keeps MIN_FREE_GB free: an upload that
    # would leave less is refused (507) and nothing of it kept.
    api_max_concurrent_uploads: int = field(default_factory=lambda: int(_env("API_MAX_CONCURRENT_UPLOADS", "2")))
    api_max_gb_per_day: float = field(default_factory=lambda: float(_env("API_MAX_GB_PER_DAY", "50")))
    api_idle_timeout_seconds: float = field(default_factory=lambda: float(_env("API_IDLE_TIMEOUT_SECONDS", "60")))
    min_free_gb: float = field(default_factory=lambda: float(_env("MIN_FREE_GB", "2")))
    # /konspekt/docs, /redoc and /openapi.json: off, as the docs pages load scripts from a CDN on the UI's origin
    api_docs: bool = field(default_factory=lambda: _flag("API_DOCS", False))
    # ... and, when set, the only hosts callbacks may go to (comma-separated; *.example.org: any name below)
    api_callback_hosts: str = field(default_factory=lambda: _env("API_CALLBACK_HOSTS", ""))
    fs_conn_id: str = "konspekt_data"

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_gb * 1e9)

    @property
    def task_memory_bytes(self) -> str | int:
        if self.task_memory:
            return self.task_memory
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.8)

    def stage_timeout_seconds(self, duration: float | None) -> float:
        """How long a stage task may run on a lecture of ``duration`` seconds (unknown: the longest allowed)."""
        if duration is None or duration <= 0:
            duration = self.max_duration_hours * 3600
        return self.timeout_minutes * 60 + self.timeout_factor * min(duration, self.max_duration_hours * 3600)

    def pool_for(self, gpu: bool) -> str:
        """The pool of a stage task that does (``gpu=True``) or does not ask for the GPU."""
        return self.gpu_pool if gpu and self.gpu else self.cpu_pool

    def queue_for(self, gpu: bool) -> str | None:
        """The Celery queue of a stage task that does (``gpu=True``) or does not ask for the GPU (None: the default)."""
        return self.gpu_queue if gpu and self.gpu else None

    def image_for(self, stage: str) -> str:
        return f"{self.image_prefix}-{registry.get(stage).image}:{self.image_tag}"

    def python_for(self, stage: str) -> str:
        """The interpreter that runs ``stage`` under the local runner."""
        return self.local_pythons.get(registry.get(stage).image, self.local_python)

    @property
    def train_source(self) -> str:
        return self.train_mount_source or f"{self.data_mount_source.rstrip('/')}/train"

    def to_local(self, path: str) -> Path:
        """A container path under /data as this process sees it."""
        return self.data_root / Path(path).relative_to(CONTAINER_DATA)

    def cache_to_local(self, name: str) -> str:
        """A model named by its path in the task containers (/root/.cache/...) as this process sees it."""
        if name == CONTAINER_CACHE or name.startswith(f"{CONTAINER_CACHE}/"):
            return str(self.cache_dir / Path(name).relative_to(CONTAINER_CACHE))
        return name

    def to_container(self, path: Path) -> str:
        return f"{CONTAINER_DATA}/{Path(path).resolve().relative_to(self.data_root).as_posix()}"

    def expose_connection(self) -> None:
        """Define the FileSensor's connection from the data root, unless the operator defined it."""
        os.environ.setdefault(
            f"AIRFLOW_CONN_{self.fs_conn_id.upper()}",
            json.dumps({"conn_type": "fs", "extra": {"path": str(self.data_root)}}),
        )


settings = Settings()
settings.expose_connection()
