"""export: the fine-tuned model for the inference DAG: transformers + CTranslate2 folders.

    <data root>/models/<run id>/hf/    the transformers model, tokenizer and feature extractor
    <data root>/models/<run id>/ct2/   CTranslate2 (faster-whisper): give this folder to
                                       lecture_to_pdf's ``whisper_model`` Param, or let
                                       ``whisper_model=latest-finetuned`` pick it (konspekt.finetuned)

``ct2/`` carries ``tokenizer.json`` and ``preprocessor_config.json`` (without them
faster-whisper tries to download openai/whisper-tiny.en), and ``konspekt.json``, which
tells the transcribe stage what it cannot guess: a vocabulary without timestamp tokens
must be decoded with ``without_timestamps=True``, and what the model is (run, base model,
dataset, WER before and after) for the registry and the report. Before it reports success, the step
loads ``ct2/`` in faster-whisper and transcribes a validation clip.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from konspekt import finetuned
from konspekt.deployment import CONTAINER_DATA
from konspekt.layout import RunDir, read_json, write_json
from konspekt.models import MARKER, inference_options
from konspekt.stage import main_for
from konspekt.training import TrainLog
from konspekt.training.whisper import load_processor


def convert(hf_dir: Path, out: Path, quantization: str) -> None:
    from ctranslate2.converters import TransformersConverter

    TransformersConverter(str(hf_dir), copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(
        str(out), quantization=quantization, force=True)


def verify(ct2_dir: Path, wav: Path, options: dict) -> str:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(ct2_dir), device="cpu", compute_type="int8", cpu_threads=2)
    # greedy and without temperature fallback: a smoke test, not an evaluation (that was evaluate's job)
    segments, _ = model.transcribe(str(wav), beam_size=1, temperature=0.0, **options)
    return " ".join(s.text.strip() for s in segments)


def run(run: RunDir, args: argparse.Namespace) -> dict:
    log = TrainLog(run)
    if not (run.model / "config.json").is_file():
        raise FileNotFoundError(f"{run.model} is missing: the train step has not finished")
    processor = load_processor(str(run.model), args.language)
    evaluation = run.result("evaluate") if run.result_path("evaluate").is_file() else {}
    out = run.export
    # built inside the run's own export folder: in a task container that folder is all of models/ it can write
    tmp = out / ".export.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run.model, tmp / "hf")
    convert(tmp / "hf", tmp / "ct2", args.quantization)
    marker = {
        "without_timestamps": not processor.has_timestamps,
        "multilingual": processor.multilingual, "language": processor.language,
        "base_model": args.base_model, "dataset": args.dataset or _dataset_of(run), "run": run.name,
        "steps": run.result("train")["steps"],
        "wer_before": evaluation.get("wer_before"), "wer_after": evaluation.get("wer_after"),
        "control_wer_before": evaluation.get("control_wer_before"),
        "control_wer_after": evaluation.get("control_wer_after"),
        "quantization": args.quantization, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(tmp / "ct2" / MARKER, marker)
    clips = read_json(run.manifest("validation")) or read_json(run.manifest("train"))
    heard = verify(tmp / "ct2", run.path / clips[0]["audio"], inference_options(tmp / "ct2"))
    log.line(f"export: faster-whisper loads it and hears {heard[:80]!r} (reference {clips[0]['text'][:80]!r})")
    for part in ("hf", "ct2"):  # a rerun replaces the previous export of this run, a folder at a time
        shutil.rmtree(out / part, ignore_errors=True)
        (tmp / part).rename(out / part)
    tmp.rmdir()
    param = f"{CONTAINER_DATA}/models/{run.name}/ct2"  # as the Param takes it, in either runner
    refused = finetuned.why_not(marker)
    if refused is None:
        log.line(f"export: {out / 'ct2'} ({args.quantization}) is ready: trigger lecture_to_pdf with "
                 f"whisper_model={finetuned.LATEST} (once register_model has recorded it: the newest model that "
                 f"beat its base) or whisper_model={param}")
    else:
        log.line(f"export: {out / 'ct2'} ({args.quantization}) is ready, but {finetuned.LATEST} will never pick "
                 f"it: {refused}; to use it anyway, trigger lecture_to_pdf with whisper_model={param}")
    return {"ct2": str(out / "ct2"), "hf": str(out / "hf"), "marker": marker, "heard": heard,
            "latest_finetuned": refused or "eligible"}


def _dataset_of(run: RunDir) -> str | None:
    """The dataset's folder name, as read_data recorded it (for a run started without --dataset)."""
    try:
        return Path(run.result("read_data")["dataset"]).name or None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-model", default="", help="recorded in konspekt.json")
    parser.add_argument("--dataset", default="", help="the dataset's name, recorded in konspekt.json "
                        "(default: read_data's folder)")
    parser.add_argument("--language", default="en")
    parser.add_argument("--quantization", default="int8",
                        help="CTranslate2 weights: int8 (CPU and GPU), float16, int8_float16, float32")


main = main_for("training.export", __doc__.splitlines()[0], _configure, run)

if __name__ == "__main__":
    raise SystemExit(main())
