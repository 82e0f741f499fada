"""batches: log-mel features and tokenised labels for every clip, in shards on disk.

Shards live in ``<data root>/train_cache/shards/<key>/``, where the key hashes everything
they are made from (each clip's WAV digest and text, the tokenizer, the feature settings).
A retry, or a later run on the same data and base model, finds them there and reuses them.
Features are stored unpadded (float16, real frames only); :func:`konspekt.training.whisper.collate`
pads them at batch time, the way faster-whisper does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path

from konspekt.contracts import BadInput
from konspekt.layout import RunDir, read_json, write_json
from konspekt.stage import main_for
from konspekt.training import TrainLog, add_model_args, base_model
from konspekt.training.whisper import N_FRAMES, Processor, load_processor, log_mel, read_wav

FORMAT = 1  # bump when the shard layout changes, so old caches are not reused
SPLITS = ("train", "validation", "control")  # control: general speech, scored by evaluate, never trained on
MAX_LABEL_TOKENS = 448  # Whisper's decoder positions


def shard_key(processor: Processor, manifests: dict[str, list[dict]], shard_size: int) -> str:
    fe = processor.feature_extractor
    material = {
        "format": FORMAT, "shard_size": shard_size, "prefix": processor.prefix,
        "tokenizer": hashlib.sha256(processor.tokenizer.backend_tokenizer.to_str().encode()).hexdigest(),
        "features": [fe.feature_size, fe.sampling_rate, fe.hop_length, fe.n_fft],
        "splits": {s: [(e["sha256"], e["text"]) for e in manifests[s]] for s in SPLITS},
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:20]


def write_shards(run: RunDir, processor: Processor, manifests: dict[str, list[dict]], out: Path,
                 shard_size: int, log: TrainLog) -> dict:
    import torch

    index: dict = {"splits": {}, "skipped": []}
    for split in SPLITS:
        entries = manifests[split]
        shards: list[dict] = []
        for start in range(0, len(entries), shard_size):
            shard: dict[str, list] = {"ids": [], "texts": [], "features": [], "labels": []}
            for e in entries[start:start + shard_size]:
                labels = processor.labels(e["text"])
                if len(labels) > MAX_LABEL_TOKENS:
                    index["skipped"].append({"id": e["id"], "reason": f"text is {len(labels)} tokens, over 448"})
                    log.line(f"batches: skipped {e['id']}: text too long for Whisper's decoder")
                    continue
                mel = log_mel(processor.feature_extractor, read_wav(run.path / e["audio"]))
                shard["ids"].append(e["id"])
                shard["texts"].append(e["text"])
                shard["features"].append(torch.from_numpy(mel).to(torch.float16))  # mel is in [-1.5, 1.5]
                shard["labels"].append(labels)
            name = f"{split}-{len(shards):05d}.pt"
            torch.save(shard, out / name)
            shards.append({"file": name, "examples": len(shard["ids"])})
            log.line(f"batches: {split} shard {len(shards)}: {len(shard['ids'])} examples")
        index["splits"][split] = {"shards": shards, "examples": sum(s["examples"] for s in shards)}
    return index


def run(run: RunDir, args: argparse.Namespace) -> dict:
    log = TrainLog(run)
    processor = load_processor(base_model(run, args.base_model), args.language)
    # sorted: the same clips make the same shards whatever the order of metadata.csv
    manifests = {s: sorted(read_json(run.manifest(s)) if run.manifest(s).is_file() else [], key=lambda e: e["id"])
                 for s in SPLITS}
    key = shard_key(processor, manifests, args.shard_size)
    out = run.shard_cache / key
    reused = (out / "index.json").is_file()  # written last: its presence means the shards are complete
    if reused:
        log.line(f"batches: reusing shards {key} (same clips, texts and tokenizer)")
    else:
        tmp = out.with_name(f".{key}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        index = write_shards(run, processor, manifests, tmp, args.shard_size, log)
        write_json(tmp / "index.json", index)
        try:
            tmp.rename(out)  # atomic: a concurrent run that finished first wins, with the same content
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    index = read_json(out / "index.json")
    if not index["splits"]["train"]["examples"]:
        raise BadInput("no training examples are left after tokenising the texts")
    return {"key": key, "dir": out.relative_to(run.data_root).as_posix(), "reused": reused,
            "frames": N_FRAMES, **index}


def _configure(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--shard-size", type=int, default=256, help="examples per shard file")


main = main_for("training.batches", __doc__.splitlines()[0], _configure, run)

if __name__ == "__main__":
    raise SystemExit(main())
