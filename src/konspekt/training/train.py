"""train: fine-tune Whisper (transformers) on the shards, in plain PyTorch.

AdamW with a linear warm-up and linear decay, gradient accumulation, autocast (bf16 where
the GPU supports it, else fp16 with loss scaling; fp32 on CPU). A checkpoint (model,
optimizer, scheduler, scaler, RNG, step) is written every ``--ckpt-every`` steps; a rerun
(an Airflow retry after a crash) resumes from the latest one instead of starting over.
The micro-batch order is a pure function of the seed and the step, so a resumed run
sees exactly the batches the uninterrupted one would have.

``--freeze-encoder`` trains the decoder only (the text side: vocabulary, names, spelling). The
encoder is then a fixed function of the audio, so its output is computed once per clip and kept
(:class:`EncodedClips`): it is most of a step's cost, since it always reads a 30 s window, and a
few dozen steps of a pretrained ``base`` then fit on a CPU.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import time
from pathlib import Path

from konspekt.devices import pick_device
from konspekt.layout import RunDir, atomic_path
from konspekt.stage import main_for, yes_no
from konspekt.training import TrainLog, add_model_args, base_model
from konspekt.training.whisper import collate, load_model, load_processor


class ShardData:
    """Examples of one split, read shard by shard (one shard in memory at a time)."""

    def __init__(self, shard_dir: Path, split_index: dict) -> None:
        self.files = [shard_dir / s["file"] for s in split_index["shards"]]
        self.sizes = [s["examples"] for s in split_index["shards"]]
        self._loaded: tuple[int, dict] | None = None

    def __len__(self) -> int:
        return sum(self.sizes)

    def shard(self, i: int) -> dict:
        import torch

        if self._loaded is None or self._loaded[0] != i:
            self._loaded = (i, torch.load(self.files[i], weights_only=True))
        return self._loaded[1]

    def order(self, seed: int) -> list[tuple[int, int]]:
        """A shuffled epoch: shards in random order, rows shuffled within each (each shard read once)."""
        rng = random.Random(seed)
        shards = list(range(len(self.files)))
        rng.shuffle(shards)
        out = []
        for s in shards:
            rows = list(range(self.sizes[s]))
            rng.shuffle(rows)
            out += [(s, r) for r in rows]
        return out

    def batch(self, items: list[tuple[int, int]]):
        rows = [(self.shard(s), r) for s, r in items]
        return collate([sh["features"][r] for sh, r in rows], [sh["labels"][r] for sh, r in rows])

    def batches(self, batch_size: int):
        """The split in order (for validation): (items, features, labels)."""
        items = [(s, r) for s, n in enumerate(self.sizes) for r in range(n)]
        for i in range(0, len(items), batch_size):
            yield (items[i:i + batch_size], *self.batch(items[i:i + batch_size]))


class MicroBatches:
    """Micro-batch ``m`` of the endless stream epoch 0, epoch 1, ...; epoch ``e`` shuffled with ``seed + e``."""

    def __init__(self, data: ShardData, batch_size: int, seed: int) -> None:
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.per_epoch = math.ceil(len(data) / batch_size)
        self._order: tuple[int, list] | None = None

    def items(self, m: int) -> list[tuple[int, int]]:
        """The (shard, row) pairs of micro-batch ``m``."""
        epoch, k = divmod(m, self.per_epoch)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, self.data.order(self.seed + epoch))
        return self._order[1][k * self.batch_size:(k + 1) * self.batch_size]

    def __getitem__(self, m: int):
        items = self.items(m)
        return (*self.data.batch(items), len(items))


ENCODER_CACHE_BYTES = 2 << 30  # base: 3 MB a clip (1500 x 512 float32), so ~680 clips; the rest are recomputed


class EncodedClips:
    """A frozen encoder's output for each clip, computed on first use and kept (up to a memory limit).

    Exact, not an approximation: frozen and in eval mode (no dropout), the encoder is a fixed
    function of the clip's features, so every later epoch would compute the same numbers again."""

    def __init__(self, encoder, limit_bytes: int = ENCODER_CACHE_BYTES) -> None:
        self.encoder, self.limit, self.used = encoder, limit_bytes, 0
        self.kept: dict = {}

    def __call__(self, keys: list, features):
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        todo = [i for i, key in enumerate(keys) if key not in self.kept]
        fresh = {}
        if todo:
            with torch.no_grad():
                hidden = self.encoder(features[todo]).last_hidden_state
            for i, h in zip(todo, hidden):
                fresh[keys[i]] = h
                if self.used + h.nbytes <= self.limit:
                    self.kept[keys[i]] = h.clone()  # a copy: a view would keep the whole batch alive
                    self.used += h.nbytes
        hidden = torch.stack([self.kept[k] if k in self.kept else fresh[k] for k in keys])
        return BaseModelOutput(last_hidden_state=hidden)


def freeze_encoder(model) -> None:
    for p in model.model.encoder.parameters():
        p.requires_grad_(False)


def train_mode(model, frozen_encoder: bool) -> None:
    model.train()
    if frozen_encoder:
        model.model.encoder.eval()  # its dropout off: the same output for a clip every time (EncodedClips)


def pick_precision(precision: str, device: str) -> str:
    import torch

    if precision != "auto":
        return precision
    if device != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def linear_schedule(warmup: int, total: int):
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total``."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("step-*.pt"))
    return found[-1] if found else None


def save_checkpoint(folder: Path, state: dict, keep: int) -> Path:
    import torch

    path = folder / f"step-{state['step']:07d}.pt"
    with atomic_path(path) as tmp:  # a kill mid-write leaves the previous checkpoint as the latest
        torch.save(state, tmp)
    for old in sorted(folder.glob("step-*.pt"))[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path: Path, device: str = "cpu") -> dict:
    """A checkpoint is data (tensors, numbers): ``weights_only`` refuses one that would run code when unpickled."""
    import torch

    return torch.load(path, map_location=device, weights_only=True)


def rng_state() -> dict:
    import torch

    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def validation_loss(model, data: ShardData, batch_size: int, device: str, autocast, encoded=None) -> float:
    """Mean loss on ``data``; ``encoded`` (an :class:`EncodedClips`): reuse the frozen encoder's outputs."""
    import torch

    model.eval()
    total, n = 0.0, 0
    with torch.no_grad(), autocast():
        for items, x, y in data.batches(batch_size):
            inputs = ({"encoder_outputs": encoded([("validation", i) for i in items], x.to(device))} if encoded
                      else {"input_features": x.to(device)})
            total += model(**inputs, labels=y.to(device)).loss.item() * len(x)
            n += len(x)
    return total / max(n, 1)


def plot_loss(log: TrainLog) -> Path:
    """``loss.png`` next to train.log: training loss per step (and validation loss, when measured)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = log.metrics()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for kind, style in (("train", "-"), ("val_loss", "o--")):
        points = [(int(r["step"]), float(r["loss"])) for r in rows if r["kind"] == kind and r["loss"]]
        if points:
            ax.plot(*zip(*points), style, label={"train": "training loss", "val_loss": "validation loss"}[kind])
    ax.set(xlabel="optimizer step", ylabel="cross-entropy loss", title=f"konspekt fine-tuning: {log.dir.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = log.dir / "loss.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def run(run: RunDir, args: argparse.Namespace) -> dict:  # noqa: C901 - one training loop, read top to bottom
    import contextlib

    import torch

    log = TrainLog(run)
    shards = run.result("batches")
    shard_dir = run.data_root / shards["dir"]
    train_data = ShardData(shard_dir, shards["splits"]["train"])
    val_data = ShardData(shard_dir, shards["splits"]["validation"])
    stream = MicroBatches(train_data, args.batch_size, args.seed)
    steps_per_epoch = math.ceil(stream.per_epoch / args.grad_accum)
    total = args.max_steps if args.max_steps > 0 else max(1, math.ceil(args.epochs * steps_per_epoch))
    device = pick_device(args.device, strict=True)
    precision = pick_precision(args.precision, device)
    if args.threads:
        torch.set_num_threads(args.threads)

    base = base_model(run, args.base_model)
    torch.manual_seed(args.seed)
    model = load_model(base, device)
    model.config.use_cache = False  # no KV cache while training
    if args.freeze_encoder:
        freeze_encoder(model)
    train_mode(model, args.freeze_encoder)
    encoded = EncodedClips(model.model.encoder) if args.freeze_encoder else None
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(args.warmup_steps, total))
    scaler = torch.amp.GradScaler(device, enabled=precision == "fp16")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)

    def autocast():
        return torch.autocast(device, dtype=dtype) if dtype else contextlib.nullcontext()

    step = 0
    checkpoint = latest_checkpoint(run.checkpoints)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        step = state["step"]
        log.drop_metrics_after(step)
        log.line(f"train: resuming from checkpoint {checkpoint.name} (step {step} of {total})")
    else:
        what = (f"decoder only ({sum(p.numel() for p in trainable) / 1e6:.1f}M of "
                f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; encoder frozen)"
                if args.freeze_encoder else "all parameters")
        log.line(f"train: {base} on {device} ({precision}), {what}, {len(train_data)} train / {len(val_data)} "
                 f"validation examples, batch {args.batch_size} x {args.grad_accum} accumulation, {total} steps "
                 f"({total / steps_per_epoch:.1f} epochs), lr {args.learning_rate:g}, warm-up {args.warmup_steps}")
    resumed_from = step

    window_loss, window_n, window_samples, window_start = 0.0, 0, 0, time.perf_counter()
    while step < total:
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for k in range(args.grad_accum):  # the optimizer step consumes micro-batches [step*accum, (step+1)*accum)
            m = step * args.grad_accum + k
            x, y, n = stream[m]
            with autocast():
                inputs = ({"encoder_outputs": encoded([("train", i) for i in stream.items(m)], x.to(device))}
                          if encoded else {"input_features": x.to(device)})
                loss = model(**inputs, labels=y.to(device)).loss
            scaler.scale(loss / args.grad_accum).backward()
            step_loss += loss.item() / args.grad_accum
            window_samples += n
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, args.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        window_loss, window_n = window_loss + step_loss, window_n + 1
        epoch = step * args.grad_accum / stream.per_epoch

        if step % args.log_every == 0 or step == total:
            elapsed = time.perf_counter() - window_start
            lr = scheduler.get_last_lr()[0]
            loss_avg, speed = window_loss / window_n, window_samples / max(elapsed, 1e-9)
            log.line(f"step {step}/{total} epoch {epoch:.2f} loss {loss_avg:.4f} lr {lr:.3g} "
                     f"samples/s {speed:.2f}")
            log.metric("train", step=step, epoch=round(epoch, 4), loss=round(loss_avg, 5), lr=lr,
                       samples_per_s=round(speed, 3))
            window_loss, window_n, window_samples, window_start = 0.0, 0, 0, time.perf_counter()
        if len(val_data) and ((args.eval_every and step % args.eval_every == 0) or step == total):
            val = validation_loss(model, val_data, args.batch_size, device, autocast, encoded)
            train_mode(model, args.freeze_encoder)
            log.line(f"eval step {step} epoch {epoch:.2f} validation loss {val:.4f}")
            log.metric("val_loss", step=step, epoch=round(epoch, 4), loss=round(val, 5))
            window_start = time.perf_counter()  # evaluation time is not training throughput
        if step % args.ckpt_every == 0 or step == total:
            save_checkpoint(run.checkpoints, {
                "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state(),
            }, args.keep_checkpoints)
            window_start = time.perf_counter()

    # The trained model as a transformers folder, with the processor, for evaluate and export.
    tmp = run.model.with_name(".model.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.config.use_cache = True
    model.save_pretrained(tmp)
    load_processor(base, args.language).save(tmp)
    shutil.rmtree(run.model, ignore_errors=True)
    tmp.rename(run.model)
    png = plot_loss(log)
    losses = [float(r["loss"]) for r in log.metrics() if r["kind"] == "train"]
    log.line(f"train: done, {total} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}; model in {run.model}, "
             f"loss curve in {png}")
    return {"steps": total, "resumed_from": resumed_from, "device": device, "precision": precision,
            "freeze_encoder": args.freeze_encoder,
            "first_loss": losses[0], "last_loss": losses[-1], "model": str(run.model.relative_to(run.path)),
            "loss_png": str(png)}


def _configure(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--max-steps", type=int, default=0, help="optimizer steps; overrides --epochs when > 0")
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8, help="examples per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                        help="auto: bf16 on GPUs that have it, else fp16 on GPU; fp32 on CPU")
    parser.add_argument("--log-every", type=int, default=10, help="steps between train.log lines")
    parser.add_argument("--eval-every", type=int, default=0, help="steps between validation losses (0: at the end)")
    parser.add_argument("--ckpt-every", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--keep-checkpoints", type=int, default=2)
    parser.add_argument("--freeze-encoder", nargs="?", const=True, default=False, type=yes_no, metavar="BOOL",
                        help="train the decoder only (vocabulary, names, spelling): several times faster, and "
                             "fits a CPU; the acoustic side stays as the base model had it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch; 0: its default")


main = main_for("training.train", __doc__.splitlines()[0], _configure, run)

if __name__ == "__main__":
    raise SystemExit(main())
