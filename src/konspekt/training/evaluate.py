"""evaluate: word error rate on the validation split, before (base model) and after (fine-tuned).

Both models decode the same shard features greedily from faster-whisper's prompt, so the
numbers compare the weights and nothing else; WER is :mod:`konspekt.wer`'s (jiwer, Whisper's
normaliser), as published figures are. A sample of training clips is scored after training too:
on a tiny dataset it tells "learned nothing" from "does not generalise yet".
The ``control`` split (general speech the dataset marks as never trained on, see read_data)
is scored before and after as well: what the fine-tune cost outside its domain.
"""

from __future__ import annotations

import argparse

from konspekt.devices import pick_device
from konspekt.layout import RunDir, write_json
from konspekt.stage import main_for
from konspekt.training import TrainLog, add_model_args, base_model
from konspekt.training.train import EncodedClips, ShardData
from konspekt.training.whisper import greedy_decode, load_model, load_processor
from konspekt.wer import corpus_score


def transcribe_split(model_dir: str, data: ShardData, processor, device: str, batch_size: int,
                     limit: int, max_new_tokens: int, encoded: EncodedClips | None = None,
                     split: str = "") -> list[tuple[str, str]]:
    """(reference, hypothesis) for the first ``limit`` examples of ``data``. ``encoded``: encoder outputs
    to reuse (and keep), for models whose encoder is the same (trained with it frozen)."""
    import torch

    model = load_model(model_dir, device).eval()
    if encoded is not None:
        encoded.encoder = model.model.encoder
    pairs: list[tuple[str, str]] = []
    for shard_i in range(len(data.files)):
        shard = data.shard(shard_i)
        for start in range(0, len(shard["ids"]), batch_size):
            if len(pairs) >= limit:
                return pairs
            rows = range(start, min(start + batch_size, len(shard["ids"]), start + limit - len(pairs)))
            x, _ = data.batch([(shard_i, r) for r in rows])
            # a hypothesis twice the reference's length already scores WER >= 1: stop there
            budget = min(max_new_tokens, 2 * max(len(shard["labels"][r]) for r in rows) + 8)
            with torch.autocast(device, dtype=torch.float16, enabled=device == "cuda"):
                hidden = encoded([(split, shard_i, r) for r in rows], x.to(device)) if encoded else None
                ids = greedy_decode(model, x.to(device), processor.prefix, processor.eot, budget, hidden)
            hyps = processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
            pairs += [(shard["texts"][r], h.strip()) for r, h in zip(rows, hyps)]
    return pairs


def corpus_wer(pairs: list[tuple[str, str]], language: str | None = "en") -> float:
    """Word errors over all references / their total words (long clips weigh more, as in jiwer), with the
    project's one normaliser (:mod:`konspekt.wer`: Whisper's, so comparable to published figures)."""
    return corpus_score(pairs, language).wer


def run(run: RunDir, args: argparse.Namespace) -> dict:
    log = TrainLog(run)
    shards = run.result("batches")
    shard_dir = run.data_root / shards["dir"]
    device = pick_device(args.device, strict=True)
    base = base_model(run, args.base_model)
    processor = load_processor(str(run.model), args.language)
    steps = run.result("train")["steps"]
    plan = [("validation", "before", base), ("validation", "after", str(run.model))]
    if shards["splits"].get("control", {}).get("examples"):
        plan += [("control", "before", base), ("control", "after", str(run.model))]
    if args.train_examples:
        plan.append(("train", "after", str(run.model)))
    # Trained with the encoder frozen, both models have the base's encoder: on a CPU, where it is most of
    # the time, its output is computed once a clip (a GPU runs it fast, and its memory is better spent)
    shared = EncodedClips(None) if run.result("train").get("freeze_encoder") and device == "cpu" else None
    report: dict = {}
    for split, when, model_dir in plan:
        data = ShardData(shard_dir, shards["splits"][split])
        limit = args.train_examples if split == "train" else args.max_examples
        pairs = transcribe_split(model_dir, data, processor, device, args.batch_size, limit, args.max_new_tokens,
                                 shared, split)
        if not pairs:
            log.line(f"eval {when}: no {split} examples")
            continue
        wer = corpus_wer(pairs, args.language)
        report.setdefault(split, {})[when] = {"wer": round(wer, 4), "examples": len(pairs),
                                              "samples": [{"reference": r, "hypothesis": h} for r, h in pairs[:20]]}
        log.line(f"eval {when} training: {split} WER {wer:.3f} on {len(pairs)} clips "
                 f"(e.g. {pairs[0][1][:60]!r} for {pairs[0][0][:60]!r})")
        log.metric(f"wer_{when}_{split}", step=0 if when == "before" else steps, wer=round(wer, 5))
    write_json(run.logs / "eval.json", report)
    def wer_of(split: str, when: str) -> float | None:  # not `wer`: the loop's float has that name
        return report.get(split, {}).get(when, {}).get("wer")

    return {"wer_before": wer_of("validation", "before"), "wer_after": wer_of("validation", "after"),
            "control_wer_before": wer_of("control", "before"), "control_wer_after": wer_of("control", "after"),
            "train_wer_after": wer_of("train", "after"), "report": str(run.logs / "eval.json")}


def _configure(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-examples", type=int, default=500, help="validation (and control) clips scored at most")
    parser.add_argument("--train-examples", type=int, default=16, help="training clips scored after training")
    parser.add_argument("--max-new-tokens", type=int, default=200)


main = main_for("training.evaluate", __doc__.splitlines()[0], _configure, run)

if __name__ == "__main__":
    raise SystemExit(main())
