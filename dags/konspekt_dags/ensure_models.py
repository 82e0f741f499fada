"""The warm-up command for the configured models: ``python -m konspekt_dags.ensure_models``.

It builds ``konspekt.warm_cache``'s argv from settings, so the models to fetch are named
in one place (the KONSPEKT_* environment). ``make warm-cache`` runs it with network.
"""

from __future__ import annotations

from konspekt.stages.summarize import DEFAULT_EXTRACTIVE
from konspekt_dags.settings import settings


def warm_cache_argv() -> list[str]:
    summary = [settings.summary_model, *settings.summary_models.values()]
    return ["python", "-m", "konspekt.warm_cache", "--whisper-model", settings.whisper_model,
            "--summary-model", *dict.fromkeys(summary), "--extractive-model", DEFAULT_EXTRACTIVE,
            "--train-base-model", settings.train_base_model,
            *(["--diarization-model", settings.diarization_model] if settings.diarize else [])]


if __name__ == "__main__":
    from konspekt import warm_cache

    raise SystemExit(warm_cache.main(warm_cache_argv()[3:]))
