"""The one runner: every stage CLI and every training step keeps this contract.

    python -m konspekt.stages.<name> --video-dir DIR [options] [--force]
    python -m konspekt.training.<step> --run-dir DIR [options]

* exit 0: done; exit 2: the input is bad (one-line reason); exit 1: a bug or crash;
  exit 64: a wrong command line (the codes: :mod:`konspekt.contracts`).
* The last line on stdout is a JSON :class:`StageResult`; the same object is kept
  in ``DIR/stages/<step>.json`` so later steps read results from files, not logs.
* Progress and diagnostics go to stderr.

What makes a step safe to retry, kill or rerun (:func:`run_step` does it for all):

* **One at a time.** A step holds ``stages/.<step>.lock`` (``flock``) while it works.
  A retry that starts while an earlier try is still running (its worker was killed,
  the process was not) waits for it instead of racing it for the same files.
  The kernel releases the lock when the holder dies, however it dies.
* **No half files.** Outputs are written atomically (:func:`konspekt.layout.atomic_path`);
  a killed try leaves only dot-prefixed temp files, which the next try removes first.
* **Make-like** (the stages, which say what they ``read``). When the last result is ok, the
  files the stage reads and its options are unchanged, and its outputs exist, the stage prints
  that result and exits 0 without redoing the work (see :mod:`konspekt.freshness`).
  ``--force`` redoes it.

Which folder a step works on, and what it writes, comes from :mod:`konspekt.registry`.
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

from konspekt import __version__, freshness, registry
from konspekt.contracts import (
    EXIT_USAGE,
    STATUS_BAD_INPUT,
    STATUS_ERROR,
    STATUS_OK,
    BadInput,
    StageResult,
    log,
    parse_bool,
)
from konspekt.layout import RunDir, VideoDir, WorkDir, temp_files_of, write_json

# A step returns its output files, (outputs, details), or (a training step) just its details.
StepFn = Callable[[Any, argparse.Namespace], "list[Path] | tuple[list[Path], dict[str, Any]] | dict[str, Any]"]
Reads = Callable[[Any], "list[Path]"]


class Parser(argparse.ArgumentParser):
    """argparse, but a wrong command line exits 64, not 2: exit 2 is reserved for a bad input file."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def yes_no(text: str) -> bool:
    """:func:`konspekt.contracts.parse_bool` as an argparse type: a wrong word is a usage error that says why."""
    try:
        return parse_bool(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def make_parser(stage: registry.Stage, description: str, *, make_like: bool) -> Parser:
    parser = Parser(prog=stage.module, description=description)
    what = "<data root>/train_runs/<run id>" if stage.is_training else "the claimed video's working folder"
    parser.add_argument(stage.work_flag, dest="work_dir", required=True, type=Path, help=what)
    if make_like:  # `--force` alone, or `--force true|false` so that a DAG can pass its Param through as is
        parser.add_argument("--force", nargs="?", const=True, default=False, type=yes_no, metavar="BOOL",
                            help="redo the work even when the last result is up to date")
    return parser


def run_step(stage: registry.Stage, parser: argparse.ArgumentParser, fn: StepFn, argv: Sequence[str] | None = None,
             *, reads: Reads | None = None, packages: Sequence[str] = ()) -> int:
    """Parse ``argv``, run ``fn(work_dir, args)`` and report the outcome by the contract.

    ``reads(work_dir)``: the files the step's work depends on (its fingerprint; None: always run);
    ``packages``: the distributions whose versions go into the result. The stale temp files of
    what the registry says the stage ``writes`` are removed first.
    """
    args = parser.parse_args(argv)
    work: WorkDir = (RunDir if stage.is_training else VideoDir)(args.work_dir)
    work.prepare()
    with _exclusive(work, stage.step):
        _remove_stale_temps(work, stage.step, stage.writes)
        started = time.perf_counter()
        try:
            inputs = reads(work) if reads else []
            if reads and not args.force and (done := _up_to_date(work, stage.step, inputs, args)) is not None:
                print(done.to_json(), flush=True)
                return done.exit_code
            fingerprint = freshness.fingerprint(work.path, inputs, args) if reads else {}  # as read before the work
            outputs, details = _outcome(fn(work, args))
            result = StageResult(stage.step, STATUS_OK, [_rel(p, work.path) for p in outputs], details=details,
                                 fingerprint=fingerprint)
        except BadInput as exc:
            result = StageResult(stage.step, STATUS_BAD_INPUT, message=" ".join(str(exc).split()))
            work.note(f"{stage.step}: bad input: {result.message}")
        except Exception as exc:  # noqa: BLE001 - a crash is reported, then exit 1
            traceback.print_exc(file=sys.stderr)
            result = StageResult(stage.step, STATUS_ERROR, message=f"{type(exc).__name__}: {exc}")
        result.seconds = round(time.perf_counter() - started, 3)
        result.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        result.versions = versions(packages)
        if work.path.is_dir():
            write_json(work.result_path(stage.step), result)
        print(result.to_json(), flush=True)
        return result.exit_code


def _outcome(out: Any) -> tuple[list[Path], dict[str, Any]]:
    if isinstance(out, dict):
        return [], out
    return out if isinstance(out, tuple) else (out, {})


def _up_to_date(video: WorkDir, stage: str, inputs: list[Path], args: argparse.Namespace) -> StageResult | None:
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
def _exclusive(video: WorkDir, stage: str) -> Iterator[None]:
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


def _remove_stale_temps(video: WorkDir, stage: str, writes: Sequence[str]) -> None:
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


def main_for(name: str, description: str, configure: Callable[[argparse.ArgumentParser], None] | None, fn: StepFn, *,
             reads: Reads | None = None, packages: Sequence[str] = ()):
    """Build the ``main(argv)`` of the registry's stage ``name``; see :func:`run_step` for ``reads``/``packages``."""

    def main(argv: Sequence[str] | None = None) -> int:
        stage = registry.get(name)
        parser = make_parser(stage, description, make_like=reads is not None)
        if configure:  # the stage's own options; None: only the common ones
            configure(parser)
        return run_step(stage, parser, fn, argv, reads=reads, packages=packages)

    return main
