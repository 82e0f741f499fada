"""What the DAG bundle and the doctor must agree on: container paths, which image runs which stage,
and the defaults of the deployment settings.

dags/konspekt_dags/settings.py reads every ``KONSPEKT_*`` variable and takes these defaults
from here; ``konspekt doctor`` runs without the bundle (in an image, on a host) and needs the
same figures. Stdlib only: the Airflow image installs this package without its extras.
"""

from __future__ import annotations

CONTAINER_DATA = "/data"  # the data root as every task container (and every stage argv) sees it
CONTAINER_CACHE = "/root/.cache"  # the model cache in every task container

# Which image runs which stage: one image per stage family (see images/). A plain name is a
# module of konspekt.stages (works on a --video-dir); "training.<step>" is a module of
# konspekt.training (works on a --run-dir).
STAGE_IMAGES = {
    "extract_audio": "audio",
    "transcribe": "asr",
    "summarize": "summarize",
    "features": "features",
    "outline": "summarize",  # sentence-transformers lives in the summarize image
    "render_pdf": "report",
    "training.read_data": "train",
    "training.batches": "train",
    "training.train": "train",
    "training.evaluate": "train",
    "training.export": "train",
}

# KONSPEKT_<name> when unset or empty.
DEFAULTS = {
    "RUNNER": "local",  # "local" | "docker"
    "DOCKER_URL": "tcp://docker-proxy:2375",
    "DATA_MOUNT_SOURCE": "/data",  # the data root as the Docker daemon sees it
    "CACHE_MOUNT_SOURCE": "/cache",
    "IMAGE_PREFIX": "konspekt",
    "IMAGE_TAG": "latest",
    "DOCKER_USER": "",  # "uid:gid" of the host user; empty: the image's root
    "GPU": "false",
    "WHISPER_MODEL": "small",
    "SUMMARY_METHOD": "auto",
    "SUMMARY_MODEL": "slauw87/bart_summarisation",
}
