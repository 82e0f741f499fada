"""The contract every stage CLI keeps.

    python -m konspekt.stages.<name> --video-dir DIR [options] [--force]

* exit 0: done; exit 2: the input is bad (one-line reason); exit 1: a bug or crash.
* The last line on stdout is a JSON :class:`StageResult`; the same object is kept
  in ``DIR/stages/<name>.json`` so later steps read results from files, not logs.
* Progress and diagnostics go to stderr.

What makes a stage safe to retry, kill or rerun (:func:`run_stage` does it for all):

* **One at a time.** A stage holds ``stages/.<name>.lock`` (``flock``) while it works.
  A retry that starts while an earlier try is still running (its worker was killed,
  the stage process was not) waits for it instead of racing it for the same files.
  The kernel releases the lock when the holder dies, however it dies.
* **No half files.** Outputs are written atomically (:func:`konspekt.layout.atomic_path`);
  a killed try leaves only dot-prefixed temp files, which the next try removes first.
* **Make-like.** When the last result is ok, the files the stage reads and its options
  are unchanged, and its outputs exist, the stage prints that result and exits 0
  without redoing the work (see :mod:`konspekt.freshness`). ``--force`` redoes it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.metadata
import os
import platform
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from konspekt import __version__, freshness
from konspekt.contracts import EXIT_USAGE, STATUS_BAD_INPUT, STATUS_ERROR, STATUS_OK, StageResult
from konspekt.layout import VideoDir, temp_files_of, write_json


class BadInput(Exception):
    """The user's file cannot be processed; the message is shown to them as is."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


StageFn = Callable[[VideoDir, argparse.Namespace], "list[Path] | tuple[list[Path], dict[str, Any]]"]
Reads = Callable[[VideoDir], "list[Path]"]


def parse_flag(text: str) -> bool:
    value = str(text).strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class Parser(argparse.ArgumentParser):
    """argparse, but a wrong command line exits 64, not 2: exit 2 is reserved for a bad input file."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def make_parser(stage: str, description: str) -> argparse.ArgumentParser:
    parser = Parser(prog=f"konspekt.stages.{stage}", description=description)
    parser.add_argument("--video-dir", required=True, type=Path, help="the claimed video's working folder")
    # `--force` alone, or `--force true|false` so that a DAG can pass its Param through as is
    parser.add_argument("--force", nargs="?", const=True, default=False, type=parse_flag, metavar="BOOL",
                        help="redo the work even when the last result is up to date")
    return parser


def run_stage(stage: str, parser: argparse.ArgumentParser, fn: StageFn, argv: Sequence[str] | None = None, *,
              reads: Reads | None = None, writes: Sequence[str] = (), packages: Sequence[str] = ()) -> int:
    """Parse ``argv``, run ``fn`` and report the outcome by the stage contract.

    ``reads(video)``: the files the stage's work depends on (its fingerprint);
    ``writes``: the names of the files it writes in the video folder (their stale temp files
    are removed); ``packages``: the distributions whose versions go into the result.
    """
    args = parser.parse_args(argv)
    video = VideoDir(args.video_dir)
    with _exclusive(video, stage):
        _remove_stale_temps(video, stage, writes)
        started = time.perf_counter()
        try:
            inputs = reads(video) if reads else []
            if not args.force and (done := _up_to_date(video, stage, inputs, args)) is not None:
                print(done.to_json(), flush=True)
                return done.exit_code
            fingerprint = freshness.fingerprint(video.path, inputs, args)  # as read before the work
            out = fn(video, args)
            outputs, details = out if isinstance(out, tuple) else (out, {})
            result = StageResult(stage, STATUS_OK, [_rel(p, video.path) for p in outputs], details=details,
                                 fingerprint=fingerprint)
        except BadInput as exc:
            result = StageResult(stage, STATUS_BAD_INPUT, message=" ".join(str(exc).split()))
            log(f"bad input: {result.message}")
        except Exception as exc:  # noqa: BLE001 - a crash is reported, then exit 1
            traceback.print_exc(file=sys.stderr)
            result = StageResult(stage, STATUS_ERROR, message=f"{type(exc).__name__}: {exc}")
        result.seconds = round(time.perf_counter() - started, 3)
        result.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        result.versions = versions(packages)
        if video.path.is_dir():
            write_json(video.result_path(stage), result)
        print(result.to_json(), flush=True)
        return result.exit_code


def _up_to_date(video: VideoDir, stage: str, inputs: list[Path], args: argparse.Namespace) -> StageResult | None:
    """The last result when it still holds; else None, after saying why the stage runs again."""
    path = video.result_path(stage)
    try:
        previous = StageResult.load(path) if path.is_file() else None
    except (ValueError, TypeError) as exc:  # unreadable: run again and overwrite it
        log(f"{path.name} is unreadable ({exc}); running again")
        return None
    reason = freshness.why_stale(previous, video.path, inputs, args)
    if reason is None:
        log(f"{stage}: up to date, skipped (use --force to redo)")
        return previous
    if previous is not None:
        log(f"{stage}: running again, because {reason}")
    return None


@contextlib.contextmanager
def _exclusive(video: VideoDir, stage: str) -> Iterator[None]:
    """Hold ``stages/.<stage>.lock``, waiting while another process holds it."""
    if not video.path.is_dir():  # nothing to protect; the stage itself reports the missing folder
        yield
        return
    video.results_dir.mkdir(exist_ok=True)
    fd = os.open(video.results_dir / f".{stage}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            log(f"{stage} is still running here from an earlier try ({holder}); waiting for it to end")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove_stale_temps(video: VideoDir, stage: str, writes: Sequence[str]) -> None:
    """Temp files of this stage's outputs, left by a try that was killed while writing.

    Only this stage's own names: the stages that run in parallel in the same folder
    keep theirs. Safe because this process holds the stage's lock.
    """
    if not video.path.is_dir():
        return
    targets = [video.path / name for name in writes] + [video.result_path(stage)]
    for stale in (t for target in targets for t in temp_files_of(target)):
        log(f"removing {stale.name}, left by an earlier try that was killed")
        stale.unlink(missing_ok=True)


def versions(packages: Sequence[str] = ()) -> dict[str, str]:
    found = {"konspekt": __version__, "python": platform.python_version()}
    for name in packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def _rel(path: Path, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return str(path)


def main_for(stage: str, description: str, configure: Callable[[argparse.ArgumentParser], None], fn: StageFn, *,
             reads: Reads | None = None, writes: Sequence[str] = (), packages: Sequence[str] = ()):
    """Build the ``main(argv)`` of a stage module; see :func:`run_stage` for ``reads``/``writes``/``packages``."""

    def main(argv: Sequence[str] | None = None) -> int:
        parser = make_parser(stage, description)
        configure(parser)
        return run_stage(stage, parser, fn, argv, reads=reads, writes=writes, packages=packages)

    return main
