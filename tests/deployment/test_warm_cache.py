"""Model cache and offline runs: ``konspekt.warm_cache`` and the stage resolving models from HF_HOME.

No hub is reachable here, so a cache is laid out by hand the way huggingface_hub writes it
(``hub/models--org--name/{refs/main,snapshots/<commit>/}``), filled with the packaged tiny.en.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, new_video_dir

from konspekt.models import packaged_minilm
from konspekt.sample import SCRIPT, word_error_rate
from konspekt.stages import extract_audio

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(hf_home: Path, repo_id: str, files: Path | None = None) -> Path:
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    if files is not None:
        shutil.copytree(files, snapshot)
    else:
        snapshot.mkdir(parents=True)
        (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def run(module: str, *args: str, hf_home: Path, offline: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1" if offline else "0")
    return subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def report(proc) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_local_folders_satisfy_the_warm_up_offline(tmp_path, tiny_en_model, tiny_bart_dir):
    proc = run("konspekt.warm_cache", "--whisper-model", tiny_en_model, "--summary-model", tiny_bart_dir,
               "--extractive-model", packaged_minilm(), hf_home=tmp_path / "empty")
    assert proc.returncode == 0, proc.stderr
    assert [m["status"] for m in report(proc)["models"]] == ["local", "local", "local"]


def test_cached_hub_models_are_found_offline(tmp_path, tiny_en_model):
    hf = tmp_path / "hf"
    fake_hub_cache(hf, "Systran/faster-whisper-tiny.en", Path(tiny_en_model))  # what "tiny.en" downloads
    fake_hub_cache(hf, "sentence-transformers/all-MiniLM-L6-v2")
    fake_hub_cache(hf, "slauw87/bart_summarisation")
    proc = run("konspekt.warm_cache", "--whisper-model", "tiny.en", "--summary-model", "slauw87/bart_summarisation",
               "--extractive-model", "sentence-transformers/all-MiniLM-L6-v2", hf_home=hf)
    assert proc.returncode == 0, proc.stderr
    assert {m["name"]: m["status"] for m in report(proc)["models"]} == {
        "tiny.en": "cached", "slauw87/bart_summarisation": "cached", "sentence-transformers/all-MiniLM-L6-v2": "cached"}


def test_the_packaged_whisper_models_need_no_download(tmp_path, base_model, tiny_en_model):
    """base and tiny.en ship in PyPI packages (konspekt.packaged): the local runner's default is ready offline."""
    proc = run("konspekt.warm_cache", "--whisper-model", "base", "tiny.en",
               "--extractive-model", packaged_minilm(), hf_home=tmp_path / "empty")
    assert proc.returncode == 0, proc.stderr
    paths = {m["name"]: m["path"] for m in report(proc)["models"] if m["kind"] == "whisper"}
    assert paths == {"base": base_model, "tiny.en": tiny_en_model}


def test_missing_models_offline_fail_clearly(tmp_path):
    proc = run("konspekt.warm_cache", "--whisper-model", "small", "--summary-model", "slauw87/bart_summarisation",
               "--align-language", "en", hf_home=tmp_path / "empty")
    assert proc.returncode == 1
    models = {m["name"]: m for m in report(proc)["models"]}
    assert models["small"]["status"] == "missing" and models["slauw87/bart_summarisation"]["status"] == "missing"
    assert models["facebook/wav2vec2-base-960h"]["status"] == "missing"  # English's wav2vec2 aligner
    assert "not ready: whisper small" in proc.stderr and "once with network" in proc.stderr


def test_stage_runs_offline_from_the_cache_by_model_name(tmp_path, lecture_mp4, tiny_en_model):
    """`--model tiny.en` resolves to the cached snapshot under HF_HOME, with no network."""
    hf = tmp_path / "hf"
    fake_hub_cache(hf, "Systran/faster-whisper-tiny.en", Path(tiny_en_model))
    video_dir = new_video_dir(tmp_path, lecture_mp4)
    assert extract_audio.main(["--video-dir", str(video_dir)]) == 0
    proc = run("konspekt.stages.transcribe", "--video-dir", str(video_dir), "--model", "tiny.en", hf_home=hf)
    assert proc.returncode == 0, proc.stderr[-3000:]
    t = json.loads((video_dir / "transcript.json").read_text())
    assert t["model"] == "tiny.en"
    assert word_error_rate(SCRIPT, " ".join(s["text"] for s in t["segments"])) <= 0.15


def test_make_warm_cache_fetches_the_configured_models(monkeypatch):
    import sys
    from pathlib import Path

    monkeypatch.setenv("KONSPEKT_WHISPER_MODEL", "medium")
    monkeypatch.delenv("KONSPEKT_TRAIN_BASE_MODEL", raising=False)
    monkeypatch.setenv("KONSPEKT_SUMMARY_MODELS", '{"ru": "some/ru-model", "en": "slauw87/bart_summarisation"}')
    monkeypatch.setenv("AIRFLOW_CONN_KONSPEKT_DATA", "fs://")  # settings setdefaults it; undone after the test
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "dags"))
    for name in [m for m in sys.modules if m.startswith("konspekt_dags")]:
        del sys.modules[name]
    from konspekt_dags.ensure_models import warm_cache_argv

    argv = warm_cache_argv()
    assert argv[argv.index("--whisper-model") + 1] == "medium"
    summary = argv[argv.index("--summary-model") + 1: argv.index("--extractive-model")]
    assert summary == ["slauw87/bart_summarisation", "some/ru-model"]  # each model once
    assert argv[argv.index("--train-base-model") + 1] == "openai/whisper-small"
    assert "--diarization-model" not in argv  # diarization is off unless configured: its model is gated

    monkeypatch.setenv("KONSPEKT_DIARIZE", "true")
    for name in [m for m in sys.modules if m.startswith("konspekt_dags")]:
        del sys.modules[name]
    from konspekt_dags.ensure_models import warm_cache_argv

    argv = warm_cache_argv()
    assert argv[argv.index("--diarization-model") + 1:] == ["pyannote/speaker-diarization-community-1"]


def test_the_whisper_name_table_matches_faster_whisper():
    """The Airflow image has no faster-whisper: warm_cache keeps its own copy of the names."""
    from faster_whisper.utils import _MODELS

    from konspekt.warm_cache import FASTER_WHISPER_REPOS

    assert FASTER_WHISPER_REPOS == _MODELS


WITHOUT_FASTER_WHISPER = "import sys; sys.modules['faster_whisper'] = None; from konspekt.warm_cache import main; " \
                         "raise SystemExit(main(sys.argv[1:]))"


def test_without_faster_whisper_a_cached_model_name_is_found(tmp_path, tiny_en_model):
    """As in the compose `models` service (the Airflow image): "tiny.en" is found in the hub cache."""
    hf = tmp_path / "hf"
    fake_hub_cache(hf, "Systran/faster-whisper-tiny.en", Path(tiny_en_model))
    env = dict(os.environ, HF_HOME=str(hf), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", WITHOUT_FASTER_WHISPER, "--whisper-model", "tiny.en"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    [model] = report(proc)["models"]
    assert model["status"] == "cached" and model["path"].endswith(COMMIT)


def test_an_unreachable_hub_with_an_empty_cache_fails_with_what_to_do(tmp_path):
    """Online, but the hub does not answer (a closed local port stands in for it): a plain message, exit 1."""
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9",
               HF_HUB_ETAG_TIMEOUT="5", HF_HUB_DOWNLOAD_TIMEOUT="5")
    proc = subprocess.run([sys.executable, "-c", WITHOUT_FASTER_WHISPER, "--whisper-model", "small",
                           "--summary-model", "slauw87/bart_summarisation"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    assert {m["status"] for m in report(proc)["models"]} == {"failed"}
    assert "the model hub cannot be reached" in proc.stderr and "copy the model folders into the cache" in proc.stderr


def test_models_named_as_tasks_see_them_are_checked_in_the_local_cache(monkeypatch, tmp_path):
    """Under compose the `models` service sees the cache at /opt/airflow/cache, the tasks at /root/.cache."""
    monkeypatch.setenv("KONSPEKT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KONSPEKT_RUNNER", "docker")
    monkeypatch.setenv("KONSPEKT_WHISPER_MODEL", "/root/.cache/whisper/tiny.en")
    monkeypatch.setenv("KONSPEKT_TRAIN_BASE_MODEL", "/root/.cache/whisper/tiny-random")
    monkeypatch.setenv("KONSPEKT_SUMMARY_METHOD", "extractive")
    monkeypatch.setenv("AIRFLOW_CONN_KONSPEKT_DATA", "fs://")
    monkeypatch.syspath_prepend(str(ROOT / "dags"))
    for name in [m for m in sys.modules if m.startswith("konspekt_dags")]:
        monkeypatch.delitem(sys.modules, name)
    from konspekt_dags.ensure_models import warm_cache_argv

    argv = warm_cache_argv()
    cache = (tmp_path / "cache").resolve()
    assert argv[argv.index("--whisper-model") + 1] == str(cache / "whisper" / "tiny.en")
    assert argv[argv.index("--train-base-model") + 1] == str(cache / "whisper" / "tiny-random")
    # extractive only: no abstractive model to fetch; the summarize image ships MiniLM itself
    assert argv[argv.index("--summary-model") + 1] == "--extractive-model"
    assert argv[argv.index("--extractive-model") + 1] == "--train-base-model"
