"""`make demo-train` (airflow/demo_train.py): the spoken dataset it builds, and the demo end to end.

The end-to-end test trains the tiny random-weight Whisper of tests/tiny_whisper.py (offline),
in place of openai/whisper-tiny, through `airflow dags test train_asr` in local mode.
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
    monkeypatch.setattr(demo, "build_dataset", lambda folder: speak_dataset(folder, JARGON[:1], VOICES[:1],
                                                                            marker=demo.MARKER))
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
    argv = [sys.executable, str(DEMO), "--base-model", str(base_model), "--learning-rate", "1e-3",
            "--epochs", "1", "--device", "cpu"]
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
    assert {r["text"] for r in rows} == set(JARGON) and len(rows) == len(JARGON) * len(VOICES)
    assert (dataset / load_demo().MARKER).is_file()
