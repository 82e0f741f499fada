"""Fine-tuning Whisper on a user's own lectures: one CLI module per training step.

    python -m konspekt.training.<step> --run-dir /data/train_runs/<run id> [options]

Steps: ``read_data`` → ``batches`` → ``train`` → ``evaluate`` → ``export``. They keep the
stage contract (see :mod:`konspekt.stage`): the last stdout line is a JSON result, also kept
in ``<run dir>/stages/<step>.json``; exit 2 means bad input (a dataset that cannot be used),
exit 1 a crash. Everything a run writes lives under the data root::

    train/<dataset>/                  the user's dataset (read only): audio/video + metadata.csv
    train_runs/<run id>/              data/, checkpoints/, model/ (the trained HF model), stages/
    train_cache/shards/<key>/         log-mel + label shards, keyed by their inputs (reused across runs)
    logs/<run id>/                    train.log, metrics.csv, loss.png (what the user reads)
    models/<run id>/{hf,ct2}/         the exported model; ct2/ is what lecture_to_pdf's whisper_model takes
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from konspekt.contracts import STATUS_BAD_INPUT, STATUS_ERROR, STATUS_OK, StageResult
from konspekt.layout import read_json, write_json
from konspekt.stage import BadInput, Parser

SAMPLE_RATE = 16_000
METRIC_FIELDS = ["time", "kind", "step", "epoch", "loss", "lr", "samples_per_s", "wer"]


def safe_name(text: str) -> str:
    """A run id (``manual__2026-01-01T10:00:00+00:00``) as a portable folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


@dataclass(frozen=True)
class RunDir:
    """One training run's folders, all derived from ``<data root>/train_runs/<run id>``."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def data_root(self) -> Path:
        return self.path.parent.parent

    data = property(lambda self: self.path / "data")
    checkpoints = property(lambda self: self.path / "checkpoints")
    model = property(lambda self: self.path / "model")
    logs = property(lambda self: self.data_root / "logs" / self.name)
    shard_cache = property(lambda self: self.data_root / "train_cache" / "shards")
    export = property(lambda self: self.data_root / "models" / self.name)

    def manifest(self, split: str) -> Path:
        return self.data / f"{split}.json"

    def result_path(self, step: str) -> Path:
        return self.path / "stages" / f"{step}.json"

    def result(self, step: str) -> dict[str, Any]:
        """What an earlier step reported (its ``details``); it must have run."""
        path = self.result_path(step)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the {step} step has not run for this run")
        return read_json(path)["details"]


class TrainLog:
    """``train.log`` (plain text, for people), ``metrics.csv`` (for tools), and stderr (the task log)."""

    def __init__(self, run: RunDir) -> None:
        self.dir = run.logs
        self.dir.mkdir(parents=True, exist_ok=True)
        self.text = self.dir / "train.log"
        self.csv = self.dir / "metrics.csv"

    def line(self, message: str) -> None:
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        print(stamped, file=sys.stderr, flush=True)
        with self.text.open("a", encoding="utf-8") as f:  # appended line by line: readable while training
            f.write(stamped + "\n")

    def metric(self, kind: str, **values: Any) -> None:
        new = not self.csv.exists()
        with self.csv.open("a", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, METRIC_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow({"time": round(time.time(), 3), "kind": kind, **values})

    def metrics(self) -> list[dict[str, str]]:
        if not self.csv.exists():
            return []
        with self.csv.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))

    def drop_metrics_after(self, step: int) -> None:
        """After a resume, forget the rows a crashed attempt logged past its last checkpoint."""
        rows = [r for r in self.metrics() if not r["step"] or int(r["step"]) <= step]
        with self.csv.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, METRIC_FIELDS)
            writer.writeheader()
            writer.writerows(rows)


StepFn = Callable[[RunDir, argparse.Namespace], dict[str, Any]]


def step_main(step: str, description: str, configure: Callable[[argparse.ArgumentParser], None], fn: StepFn):
    """Build a step's ``main(argv)``: parse, run ``fn(run, args) -> details``, report by the stage contract."""

    def main(argv: Sequence[str] | None = None) -> int:
        parser = Parser(prog=f"konspekt.training.{step}", description=description)
        parser.add_argument("--run-dir", required=True, type=Path, help="<data root>/train_runs/<run id>")
        configure(parser)
        args = parser.parse_args(argv)
        run = RunDir(args.run_dir)
        run.path.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        try:
            result = StageResult(step, STATUS_OK, details=fn(run, args))
        except BadInput as exc:
            result = StageResult(step, STATUS_BAD_INPUT, message=" ".join(str(exc).split()))
            TrainLog(run).line(f"{step}: bad input: {result.message}")
        except Exception as exc:  # noqa: BLE001 - a crash is reported, then exit 1 (and retried)
            traceback.print_exc(file=sys.stderr)
            result = StageResult(step, STATUS_ERROR, message=f"{type(exc).__name__}: {exc}")
        result.seconds = round(time.perf_counter() - started, 3)
        write_json(run.result_path(step), result)
        print(result.to_json(), flush=True)
        return result.exit_code

    return main


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-model", required=True,
                        help="Whisper in transformers format: a hub id (from the cache) or a local folder")
    parser.add_argument("--language", default="en",
                        help="the dataset's language (multilingual base models only; .en models ignore it)")


MARKER = "konspekt.json"  # written by export next to the CTranslate2 model


def inference_options(model_dir: str | Path) -> dict[str, Any]:
    """faster-whisper ``transcribe()`` options a model exported by konspekt needs ({} for any other).

    Stdlib only, so the inference image can import it without torch.
    """
    marker = Path(model_dir) / MARKER
    if not marker.is_file():
        return {}
    return {"without_timestamps": True} if read_json(marker).get("without_timestamps") else {}


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but torch sees no GPU (a CPU image, or no GPU passed to the container)")
    return device
