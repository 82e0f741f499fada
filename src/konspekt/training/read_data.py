"""read_data: validate a dataset folder and split it, deterministically, into train and validation.

The dataset is Hugging Face's *audiofolder* layout: audio or video files plus a
``metadata.csv`` with the columns ``file_name,text`` (file names relative to the CSV).
An optional ``split`` column puts a row in ``train``, ``validation`` (say, speakers held out to
see whether what was learned carries over to new voices) or ``control``: general speech that is
never trained on, scored before and after to show what the fine-tune costs elsewhere.
Rows without a value are split by a hash of their file name.
Every usable row is decoded to a 16 kHz mono WAV in the run folder with the inference
pipeline's own probe and extract (videos included). A bad row (missing file, empty text,
unreadable or over-long audio) is reported and skipped; only when more than
``--max-bad-fraction`` of the rows are bad does the step fail, as bad input.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from konspekt.contracts import BadInput
from konspekt.layout import RunDir, write_json
from konspekt.media import extract, probe
from konspekt.stage import main_for
from konspekt.training import TrainLog

METADATA = "metadata.csv"
SPLIT_COLUMN = "split"
SPLITS = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
          "dev": "validation", "test": "validation", "control": "control", "general": "control"}


@dataclass
class Example:
    id: str  # the row's file_name
    audio: str  # the extracted WAV, relative to the run folder
    text: str
    seconds: float
    sha256: str  # of the WAV: what cached shards are keyed by


@dataclass
class BadRow:
    row: int  # the line in metadata.csv (the header is line 1)
    file_name: str
    reason: str


def read_rows(dataset: Path, text_column: str) -> list[dict[str, str]]:
    metadata = dataset / METADATA
    if not dataset.is_dir():
        raise BadInput(f"dataset folder {dataset} does not exist")
    if not metadata.is_file():
        raise BadInput(f"{dataset.name}/ has no {METADATA} (columns: file_name,{text_column})")
    with metadata.open(encoding="utf-8-sig", newline="") as f:  # utf-8-sig: spreadsheet exports add a BOM
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "file_name" not in columns or text_column not in columns:
            raise BadInput(f"{METADATA} needs the columns file_name,{text_column}; "
                           f"it has {','.join(columns) or 'none'}")
        return [{(k or "").strip(): (v or "") for k, v in row.items()} for row in reader]


def check_row(dataset: Path, audio_dir: Path, row: dict[str, str], text_column: str, max_seconds: float):
    """An :class:`Example` (its WAV extracted), or the reason the row cannot be used."""
    name, text = row["file_name"].strip(), " ".join(row[text_column].split())
    source = dataset / name
    if not name:
        return "file_name is empty"
    if os.path.isabs(name) or Path(os.path.normpath(name)).parts[0] == "..":  # symlinked folders are fine
        return "file_name points outside the dataset folder"
    if not text:
        return "text is empty"
    if row.get(SPLIT_COLUMN, "").strip().lower() not in ("", *SPLITS):
        return f"split is {row[SPLIT_COLUMN].strip()!r}; use train, validation or control (or leave it empty)"
    def too_long(seconds: float | None) -> str | None:
        if seconds and seconds > max_seconds:
            return f"{seconds:.1f} s long; Whisper trains on clips up to {max_seconds:.0f} s (split it)"
        return None

    try:
        info = probe(source)  # missing, empty, not media, no audio track
        if too_long(info.duration):  # before decoding: a whole lecture listed by mistake costs nothing
            return too_long(info.duration)
        target = audio_dir / (hashlib.sha1(name.encode()).hexdigest()[:16] + ".wav")
        seconds = extract(source, target, info)  # as probed: the same demuxer, checked against its length
    except BadInput as exc:
        return str(exc)
    if too_long(seconds):
        return too_long(seconds)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    return Example(name, target.relative_to(audio_dir.parents[1]).as_posix(), text, round(seconds, 3), digest)


def split(examples: list[Example], val_fraction: float,
          chosen: dict[str, str] | None = None) -> dict[str, list[Example]]:
    """train / validation / control: as the ``split`` column says (``chosen``: id -> split), the other
    rows by a hash of each file name: stable across reruns, row order, and rows added later."""
    chosen = chosen or {}

    def position(e: Example) -> float:
        return int(hashlib.sha256(e.id.encode()).hexdigest()[:12], 16) / 16**12

    ranked = sorted((e for e in examples if e.id not in chosen), key=position)
    n_val = sum(position(e) < val_fraction for e in ranked)
    if val_fraction > 0 and len(ranked) >= 2 and "validation" not in chosen.values():
        n_val = min(max(n_val, 1), len(ranked) - 1)  # a tiny dataset still gets one clip of each
    where = {**{e.id: "validation" for e in ranked[:n_val]}, **chosen}
    return {name: [e for e in examples if where.get(e.id, "train") == name]
            for name in ("train", "validation", "control")}


def run(run: RunDir, args: argparse.Namespace) -> dict:
    log = TrainLog(run)
    dataset = args.dataset
    rows = read_rows(dataset, args.text_column)
    if not rows:
        raise BadInput(f"{dataset.name}/{METADATA} lists no files")
    log.line(f"read_data: {len(rows)} rows in {dataset}")
    audio_dir = run.data / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # ffprobe/ffmpeg processes
        results = list(pool.map(lambda r: check_row(dataset, audio_dir, r, args.text_column, args.max_seconds), rows))
    examples, bad = [], []
    for line, (row, result) in enumerate(zip(rows, results), start=2):
        if isinstance(result, Example) and result.id in seen:
            result = "listed twice in metadata.csv"
        if isinstance(result, Example):
            seen.add(result.id)
            examples.append(result)
        else:
            bad.append(BadRow(line, row["file_name"], result))
            log.line(f"read_data: skipped row {line} ({row['file_name'] or '-'}): {result}")
    if not examples or len(bad) > args.max_bad_fraction * len(rows):
        reasons = "; ".join(f"row {b.row}: {b.reason}" for b in bad[:3])
        raise BadInput(f"{len(bad)} of {len(rows)} rows of {dataset.name}/{METADATA} are unusable "
                       f"(allowed: {args.max_bad_fraction:.0%}), e.g. {reasons}")
    chosen = {row["file_name"].strip(): SPLITS[value] for row in rows  # a bad value made a bad row
              if (value := row.get(SPLIT_COLUMN, "").strip().lower()) in SPLITS}
    parts = split(examples, args.val_fraction, {e.id: chosen[e.id] for e in examples if e.id in chosen})
    if not parts["train"]:
        raise BadInput(f"no row of {dataset.name}/{METADATA} is left for training (see its split column)")
    for name, part in parts.items():
        write_json(run.manifest(name), [asdict(e) for e in part])
    hours = sum(e.seconds for e in examples) / 3600
    report = {"dataset": str(dataset), "rows": len(rows), "usable": len(examples), "hours": round(hours, 4),
              **{name: len(part) for name, part in parts.items()}, "bad_rows": [asdict(b) for b in bad]}
    write_json(run.data / "report.json", report)
    control = f" / {len(parts['control'])} control" if parts["control"] else ""
    log.line(f"read_data: {len(examples)} usable ({hours * 60:.1f} min of audio), {len(bad)} skipped; "
             f"split {len(parts['train'])} train / {len(parts['validation'])} validation{control}")
    return report


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, type=Path, help="folder with metadata.csv (file_name,text)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--max-bad-fraction", type=float, default=0.2,
                        help="fail when more than this fraction of the rows is unusable")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="longest clip Whisper can learn from")


main = main_for("training.read_data", __doc__.splitlines()[0], _configure, run)

if __name__ == "__main__":
    raise SystemExit(main())
