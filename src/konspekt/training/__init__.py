"""Fine-tuning Whisper on a user's own lectures: one CLI module per training step.

    python -m konspekt.training.<step> --run-dir /data/train_runs/<run id> [options]

Steps: ``read_data`` → ``batches`` → ``train`` → ``evaluate`` → ``export``. They keep the
stage contract (see :mod:`konspekt.stage`): the last stdout line is a JSON result, also kept
in ``<run dir>/stages/<step>.json``; exit 2 means bad input (a dataset that cannot be used),
exit 1 a crash. Everything a run writes lives under the data root::

    train/<dataset>/                  the user's dataset (read only): audio/video + metadata.csv
    train_runs/<run id>/              data/, checkpoints/, model/ (the trained HF model), stages/
    train_cache/shards/<key>/         log-mel + label shards, keyed by their inputs (reused across runs)
    train_cache/base_models/<key>/    a CTranslate2 base model converted to transformers (konspekt.training.from_ct2)
    logs/<run id>/                    train.log, metrics.csv, loss.png (what the user reads)
    models/<run id>/{hf,ct2}/         the exported model; ct2/ is what lecture_to_pdf's whisper_model takes
"""

from __future__ import annotations

import argparse
import csv
import time
from typing import Any

from konspekt.layout import RunDir

SAMPLE_RATE = 16_000
METRIC_FIELDS = ["time", "kind", "step", "epoch", "loss", "lr", "samples_per_s", "wer"]


class TrainLog:
    """``train.log`` (plain text, for people), ``metrics.csv`` (for tools), and stderr (the task log)."""

    def __init__(self, run: RunDir) -> None:
        self.dir = run.logs
        self.dir.mkdir(parents=True, exist_ok=True)
        self.text = run.train_log
        self.csv = self.dir / "metrics.csv"
        self.line = run.note

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


def base_model(run: RunDir, name_or_path: str) -> str:
    """``--base-model`` as a transformers folder or hub id; a CTranslate2 folder is converted once
    (:mod:`konspekt.training.from_ct2`) into the data root's training cache, which every step can write."""
    from konspekt.training.from_ct2 import transformers_base

    return transformers_base(name_or_path, run.data_root / "train_cache" / "base_models")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-model", required=True,
                        help="Whisper: a transformers hub id (from the cache) or folder, or a CTranslate2 "
                             "(faster-whisper) folder, converted once into <data root>/train_cache/base_models/")
    parser.add_argument("--language", default="en",
                        help="the dataset's language (multilingual base models only; .en models ignore it)")
