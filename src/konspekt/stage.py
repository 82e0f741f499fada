"""The contract every stage CLI keeps.

    python -m konspekt.stages.<name> --video-dir DIR [options]

* exit 0: done; exit 2: the input is bad (one-line reason); exit 1: a bug or crash.
* The last line on stdout is a JSON :class:`StageResult`; the same object is kept
  in ``DIR/stages/<name>.json`` so later steps read results from files, not logs.
* Progress and diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from konspekt.contracts import STATUS_BAD_INPUT, STATUS_ERROR, STATUS_OK, StageResult
from konspekt.layout import VideoDir, write_json


class BadInput(Exception):
    """The user's file cannot be processed; the message is shown to them as is."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


StageFn = Callable[[VideoDir, argparse.Namespace], "list[Path] | tuple[list[Path], dict[str, Any]]"]


def make_parser(stage: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"konspekt.stages.{stage}", description=description)
    parser.add_argument("--video-dir", required=True, type=Path, help="the claimed video's working folder")
    return parser


def run_stage(stage: str, parser: argparse.ArgumentParser, fn: StageFn, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run ``fn`` and report the outcome by the stage contract."""
    args = parser.parse_args(argv)
    video = VideoDir(args.video_dir)
    started = time.perf_counter()
    try:
        out = fn(video, args)
        outputs, details = out if isinstance(out, tuple) else (out, {})
        result = StageResult(
            stage, STATUS_OK, [_rel(p, video.path) for p in outputs], details=details
        )
    except BadInput as exc:
        result = StageResult(stage, STATUS_BAD_INPUT, message=" ".join(str(exc).split()))
        log(f"bad input: {result.message}")
    except Exception as exc:  # noqa: BLE001 - a crash is reported, then exit 1
        traceback.print_exc(file=sys.stderr)
        result = StageResult(stage, STATUS_ERROR, message=f"{type(exc).__name__}: {exc}")
    result.seconds = round(time.perf_counter() - started, 3)
    if video.path.is_dir():
        write_json(video.result_path(stage), result)
    print(result.to_json(), flush=True)
    return result.exit_code


def _rel(path: Path, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return str(path)


def main_for(stage: str, description: str, configure: Callable[[argparse.ArgumentParser], None], fn: StageFn):
    """Build the ``main(argv)`` of a stage module."""

    def main(argv: Sequence[str] | None = None) -> int:
        parser = make_parser(stage, description)
        configure(parser)
        return run_stage(stage, parser, fn, argv)

    return main
