"""The fine-tuned Whisper models: ``<data root>/models/registry.json``, and which one ``latest-finetuned`` means.

``train_asr`` exports a model into ``models/<run>/ct2`` (with its ``konspekt.json`` marker), then
its ``register_model`` task records it here, keyed by the run's folder name (a rerun replaces its
entry)::

    {"format": "konspekt-model-registry", "version": 1,
     "models": {"<run>": {"run": ..., "run_id": ..., "base_model": ..., "dataset": ..., "language": ...,
                          "wer_before": 0.31, "wer_after": 0.12, "steps": ..., "created": ...,
                          "registered": ..., "path": "/data/models/<run>/ct2"}}}

``path`` is the model as the task containers see it: what ``whisper_model`` takes.
``whisper_model=latest-finetuned`` means the newest *eligible* entry: one whose word error rate
after training is below the base model's on the same validation clips, and whose folder still
exists. A model that made things worse, or whose WER is unknown, is never picked.

Stdlib only (the Airflow side imports it); the file is replaced atomically, so a reader never sees
half of it, and a file that is not a registry gives a clear :class:`RegistryError`, never a crash.
``python -m konspekt.finetuned [--data-root data] [--rebuild]`` lists it (rebuilt from the markers).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from konspekt.deployment import CONTAINER_DATA
from konspekt.layout import write_json
from konspekt.models import MARKER, model_card

LATEST = "latest-finetuned"  # the whisper_model value that picks the newest eligible entry
REGISTRY = "registry.json"
FORMAT = "konspekt-model-registry"


class RegistryError(ValueError):
    """The registry cannot answer: the message says why in plain words, and what to do."""


class NoEligibleModel(RegistryError):
    """No fine-tuned model may be used for ``latest-finetuned``."""


def registry_path(data_root: Path) -> Path:
    return Path(data_root) / "models" / REGISTRY


def model_dir(data_root: Path, run: str) -> Path:
    """A run's exported CTranslate2 model as this process sees it."""
    return Path(data_root) / "models" / run / "ct2"


def container_path(run: str) -> str:
    """A run's exported model as the task containers see it (what ``whisper_model`` takes)."""
    return f"{CONTAINER_DATA}/models/{run}/ct2"


def load(data_root: Path) -> dict[str, dict[str, Any]]:
    """The entries by run; ``{}`` when nothing was registered yet. Raises :class:`RegistryError`."""
    path = registry_path(data_root)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise _corrupt(path, f"cannot be read: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise _corrupt(path, f"is not valid JSON ({exc})") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict) or not all(isinstance(e, dict) for e in models.values()):
        raise _corrupt(path, 'is not a model registry (no "models" object of entries)')
    return models


def _corrupt(path: Path, why: str) -> RegistryError:
    return RegistryError(
        f"the model registry {path} {why}. Fix or delete it: the next train_asr run's register_model "
        f"rebuilds it from the models' {MARKER} markers (or run python -m konspekt.finetuned --rebuild)")


def entry_for(data_root: Path, run: str, run_id: str | None = None, dataset: str | None = None) -> dict[str, Any]:
    """The registry entry of the model ``run`` exported, from its marker. Raises FileNotFoundError."""
    card = model_card(model_dir(data_root, run))
    if card is None:
        raise FileNotFoundError(f"{model_dir(data_root, run) / MARKER} is missing: the export step has not "
                                "finished for this run")
    return {
        "run": run, "run_id": run_id, "base_model": card.get("base_model"),
        "dataset": dataset or card.get("dataset"), "language": card.get("language"),
        "wer_before": card.get("wer_before"), "wer_after": card.get("wer_after"), "steps": card.get("steps"),
        "created": card.get("created"), "registered": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "path": container_path(run),
    }


@contextlib.contextmanager
def _locked(data_root: Path) -> Iterator[None]:
    """One writer at a time (readers need no lock: the file is replaced whole)."""
    lock = Path(data_root) / "models" / f".{REGISTRY}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _save(data_root: Path, models: dict[str, dict[str, Any]]) -> None:
    write_json(registry_path(data_root), {"format": FORMAT, "version": 1, "models": dict(sorted(models.items()))})


def scan(data_root: Path) -> dict[str, dict[str, Any]]:
    """Entries for every exported model under ``models/`` that has a marker."""
    root = Path(data_root) / "models"
    found = {}
    for marker in sorted(root.glob(f"*/ct2/{MARKER}")) if root.is_dir() else []:
        run = marker.parent.parent.name
        try:
            found[run] = {**entry_for(data_root, run), "registered": None}
        except (OSError, ValueError):
            continue  # an unreadable marker: that model is not offered
    return found


def register(data_root: Path, run: str, run_id: str | None = None, dataset: str | None = None,
             log=print) -> dict[str, Any]:
    """Record (or, on a rerun, replace) the model ``run`` exported; returns its entry.

    A registry file that cannot be read is kept beside it (``registry.json.corrupt-<time>``) and
    rebuilt from the models' markers: one bad file never stops training from publishing.
    """
    entry = entry_for(data_root, run, run_id, dataset)
    with _locked(data_root):
        try:
            models = load(data_root)
        except RegistryError as exc:
            path = registry_path(data_root)
            aside = path.with_name(f"{REGISTRY}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            path.replace(aside)
            log(f"WARNING: {exc}; kept as {aside.name} and rebuilt from the markers")
            models = scan(data_root)
        models[run] = entry
        _save(data_root, models)
    return entry


def rebuild(data_root: Path) -> dict[str, dict[str, Any]]:
    """Rewrite the registry from the markers, keeping what a readable file knew (run ids, dates)."""
    with _locked(data_root):
        try:
            known = load(data_root)
        except RegistryError:
            known = {}
        models = {run: {**entry, **{k: v for k, v in known.get(run, {}).items() if k in ("run_id", "registered")}}
                  for run, entry in scan(data_root).items()}
        _save(data_root, models)
    return models


def _wer(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def why_not(entry: dict[str, Any], data_root: Path | None = None) -> str | None:
    """Why ``entry`` may not be used for ``latest-finetuned``; None when it may."""
    before, after = _wer(entry.get("wer_before")), _wer(entry.get("wer_after"))
    if before is None or after is None:
        return "its WER before and after training is not recorded (evaluate did not measure it)"
    if after >= before:
        return f"WER {after:.3f} after training is not better than {before:.3f} before"
    run = entry.get("run")
    if not isinstance(run, str) or not run or "/" in run or run in (".", ".."):
        return "it names no run folder"
    if data_root is not None and not (model_dir(data_root, run) / "model.bin").is_file():
        return f"its folder models/{run}/ct2 is gone"
    return None


def _newest_first(entry: dict[str, Any]) -> tuple[float, str]:
    stamp = 0.0
    for key in ("created", "registered"):
        try:
            stamp = datetime.fromisoformat(str(entry.get(key))).timestamp()
            break
        except (TypeError, ValueError):
            continue
    return -stamp, str(entry.get("run"))


def resolve(data_root: Path) -> dict[str, Any]:
    """The entry ``latest-finetuned`` means now: the newest eligible one. Raises :class:`RegistryError`."""
    models = load(data_root)
    path = registry_path(data_root)
    if not models:
        raise NoEligibleModel(f"whisper_model={LATEST}: no fine-tuned model is registered yet ({path} "
                              "lists none); run the train_asr DAG first, or pick a model such as small")
    refused = []
    for entry in sorted(models.values(), key=_newest_first):
        reason = why_not(entry, data_root)
        if reason is None:
            return entry
        refused.append(f"{entry.get('run')}: {reason}")
    raise NoEligibleModel(f"whisper_model={LATEST}: none of the {len(models)} fine-tuned models in {path} may be "
                          f"used ({'; '.join(refused)}); train a better one, or pick a model such as small")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m konspekt.finetuned", description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--rebuild", action="store_true", help="rewrite registry.json from the models' markers")
    args = parser.parse_args(argv)
    try:
        models = rebuild(args.data_root) if args.rebuild else load(args.data_root)
    except RegistryError as exc:
        print(exc)
        return 1
    for entry in sorted(models.values(), key=_newest_first):
        reason = why_not(entry, args.data_root)
        print(f"{entry.get('run')}\t{entry.get('base_model')}\t{entry.get('dataset')}\t"
              f"WER {entry.get('wer_before')} -> {entry.get('wer_after')}\t{entry.get('created')}\t"
              f"{'eligible' if reason is None else 'not eligible: ' + reason}")
    try:
        print(f"{LATEST} = {resolve(args.data_root)['path']}")
    except RegistryError as exc:
        print(exc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
