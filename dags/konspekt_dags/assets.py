"""Training feeds inference: the Asset of the fine-tuned Whisper models, and ``latest-finetuned``.

``train_asr``'s ``register_model`` task records each exported model in ``data/models/registry.json``
(:mod:`konspekt.finetuned`) and updates :data:`FINETUNED_WHISPER`, with the run and its WER in the
event's extra: a DAG may be scheduled on it. ``lecture_to_pdf`` renders its ``whisper_model`` Param
through :func:`whisper_model` (a Jinja filter), so ``latest-finetuned`` becomes the newest eligible
model's folder, ``/data/models/<run>/ct2``, when its transcribe task runs; the factory mounts that
folder read-only into the task container, as any model its argv names.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset

from konspekt import finetuned
from konspekt_dags.settings import CONTAINER_DATA, settings

# Its URI names the registry as every task container sees it: the same asset in any deployment.
FINETUNED_WHISPER = Asset(name="konspekt-finetuned-whisper", uri=f"file://{CONTAINER_DATA}/models/{finetuned.REGISTRY}",
                          group="model")


def whisper_model(value: Any) -> Any:
    """``latest-finetuned`` as the model folder it means now; any other value as it is.

    Raises :class:`konspekt.finetuned.RegistryError` (the task fails with its message) when no
    fine-tuned model may be used, or the registry cannot be read.
    """
    if value != finetuned.LATEST:
        return value
    return finetuned.resolve(settings.data_root)["path"]


def register(run_id: str, dataset: str | None, outlet_events: Any = None) -> dict[str, Any]:
    """What ``register_model`` does: record ``run_id``'s export, and describe it on the asset event."""
    from konspekt.layout import safe_name

    entry = finetuned.register(settings.data_root, safe_name(run_id), run_id=run_id, dataset=dataset)
    reason = finetuned.why_not(entry, settings.data_root)
    if outlet_events is not None:
        outlet_events[FINETUNED_WHISPER].extra = {
            "run": entry["run"], "path": entry["path"], "base_model": entry["base_model"],
            "dataset": entry["dataset"], "wer_before": entry["wer_before"], "wer_after": entry["wer_after"],
            "eligible": reason is None}
    print(f"registered {entry['path']} in {finetuned.registry_path(settings.data_root)}: base {entry['base_model']}, "
          f"WER {entry['wer_before']} -> {entry['wer_after']}")
    if reason is None:
        print(f"lecture_to_pdf with whisper_model={finetuned.LATEST} now transcribes with it")
    else:
        print(f"{finetuned.LATEST} will not pick it: {reason}")
    return entry
