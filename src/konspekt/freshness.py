"""Make-like freshness of a stage: skip the work when nothing it depends on has changed.

A stage's ok result records a *fingerprint*: a stamp (size, mtime, sha256) of every
file the stage reads, its options (argv, parsed) and the konspekt version. The stage
is up to date when its last result is ok, the fingerprint still matches, and the
outputs it listed still exist.

Comparing a file is cheap when it was not touched (same size and mtime); only a file
with a new mtime is hashed, so an input rewritten with the same bytes (an upstream
stage forced to redo its work) does not make the stages after it redo theirs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from konspekt import __version__
from konspekt.contracts import STATUS_OK, StageResult
from konspekt.layout import sha256

# argv options that say how to run, not what to compute
NOT_FINGERPRINTED = {"work_dir", "force"}


def stamp(path: Path) -> dict[str, Any] | None:
    """What a file is now; None when it is absent (an optional input that may appear later)."""
    path = Path(path)
    if not path.is_file():
        return None
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256(path)}


def same_file(recorded: dict[str, Any] | None, path: Path) -> bool:
    path = Path(path)
    if recorded is None or not path.is_file():
        return recorded is None and not path.is_file()
    st = path.stat()
    if st.st_size != recorded["size"]:
        return False
    return st.st_mtime_ns == recorded["mtime_ns"] or sha256(path) == recorded["sha256"]


def options(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options as plain JSON values (paths as strings)."""
    chosen = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_FINGERPRINTED}
    return json.loads(json.dumps(chosen, default=str))


def fingerprint(base: Path, inputs: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    return {"konspekt": __version__, "options": options(args),
            "inputs": {_rel(p, base): stamp(p) for p in inputs}}


def why_stale(previous: StageResult | None, base: Path, inputs: list[Path], args: argparse.Namespace) -> str | None:
    """Why the stage must run again, or None when its last result still holds."""
    if previous is None:
        return "it has not run here yet"
    if previous.status != STATUS_OK:
        return f"its last run ended with {previous.status}"
    recorded = previous.fingerprint or {}
    if not recorded:
        return "its last result has no fingerprint"
    if recorded.get("konspekt") != __version__:
        return f"konspekt changed ({recorded.get('konspekt')} -> {__version__})"
    now = options(args)
    changed = sorted(k for k in set(now) | set(recorded.get("options", {}))
                     if now.get(k) != recorded.get("options", {}).get(k))
    if changed:
        return "options changed: " + ", ".join("--" + k.replace("_", "-") for k in changed)
    names = {_rel(p, base): p for p in inputs}
    if set(names) != set(recorded.get("inputs", {})):
        return "it reads other files now"
    for name, path in names.items():
        if not same_file(recorded["inputs"][name], path):
            return f"{name} changed"
    missing = [o for o in previous.outputs if not (base / o).exists()]
    if missing:
        return "outputs are missing: " + ", ".join(missing)
    return None


def _rel(path: Path, base: Path) -> str:
    try:
        return Path(path).relative_to(base).as_posix()
    except ValueError:
        return str(path)
