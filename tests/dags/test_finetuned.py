"""Training feeds inference: the model registry (data/models/registry.json), which model
``whisper_model=latest-finetuned`` means, and how lecture_to_pdf renders and checks it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import airflow_env, dags_test
from test_dags import load_dagbag

from konspekt import finetuned
from konspekt.layout import write_json
from konspekt.models import MARKER, model_card, transcribed_by


def export(data: Path, run: str, wer_before=0.4, wer_after=0.2, created="2026-03-01T10:00:00+0000",
           base_model="openai/whisper-small", dataset="lectures") -> Path:
    """What training's export leaves: models/<run>/ct2 with model.bin and its marker."""
    ct2 = data / "models" / run / "ct2"
    ct2.mkdir(parents=True)
    (ct2 / "model.bin").write_bytes(b"weights")
    write_json(ct2 / MARKER, {"without_timestamps": False, "run": run, "base_model": base_model, "dataset": dataset,
                              "language": "en", "steps": 4, "wer_before": wer_before, "wer_after": wer_after,
                              "created": created})
    return ct2


def test_register_records_the_export_and_a_rerun_replaces_its_entry(tmp_path):
    export(tmp_path, "run-a", 0.31, 0.12)
    entry = finetuned.register(tmp_path, "run-a", run_id="manual__2026-03-01T10:00:00+00:00")
    assert {k: entry[k] for k in ("run", "run_id", "base_model", "dataset", "wer_before", "wer_after", "path")} == {
        "run": "run-a", "run_id": "manual__2026-03-01T10:00:00+00:00", "base_model": "openai/whisper-small",
        "dataset": "lectures", "wer_before": 0.31, "wer_after": 0.12, "path": "/data/models/run-a/ct2"}
    assert entry["created"] == "2026-03-01T10:00:00+0000" and entry["registered"]
    saved = json.loads((tmp_path / "models" / "registry.json").read_text())
    assert saved["format"] == "konspekt-model-registry" and saved["models"] == {"run-a": entry}
    export(tmp_path, "run-b", 0.5, 0.4)
    finetuned.register(tmp_path, "run-b", dataset="other")
    write_json(tmp_path / "models" / "run-a" / "ct2" / MARKER,  # run-a exported again, now worse
               {"run": "run-a", "base_model": "openai/whisper-small", "wer_before": 0.31, "wer_after": 0.35})
    finetuned.register(tmp_path, "run-a")
    models = finetuned.load(tmp_path)
    assert sorted(models) == ["run-a", "run-b"] and models["run-a"]["wer_after"] == 0.35
    assert models["run-b"]["dataset"] == "other"
    assert not list((tmp_path / "models").glob(".registry.json.*.tmp"))  # written atomically, nothing left over
    with pytest.raises(FileNotFoundError, match="export step has not finished"):
        finetuned.register(tmp_path, "run-never-exported")


def test_latest_finetuned_is_the_newest_model_that_beat_its_base(tmp_path):
    export(tmp_path, "old-good", 0.40, 0.20, created="2026-01-01T10:00:00+0000")
    export(tmp_path, "mid-good", 0.40, 0.30, created="2026-02-01T10:00:00+0100")
    export(tmp_path, "new-worse", 0.40, 0.45, created="2026-03-01T10:00:00+0000")
    export(tmp_path, "newer-equal", 0.40, 0.40, created="2026-03-02T10:00:00+0000")
    export(tmp_path, "newest-unmeasured", None, None, created="2026-03-03T10:00:00+0000")
    for run in ("old-good", "mid-good", "new-worse", "newer-equal", "newest-unmeasured"):
        finetuned.register(tmp_path, run)
    assert finetuned.resolve(tmp_path)["run"] == "mid-good"  # newer ones did not beat their base
    assert "not better than 0.400 before" in finetuned.why_not(finetuned.load(tmp_path)["new-worse"])
    assert "not recorded" in finetuned.why_not(finetuned.load(tmp_path)["newest-unmeasured"])
    (tmp_path / "models" / "mid-good" / "ct2" / "model.bin").unlink()  # deleted by hand: never picked
    assert finetuned.resolve(tmp_path)["run"] == "old-good"


@pytest.mark.parametrize("wer_before, wer_after", [(0.3, 0.3), (0.3, 0.5), (None, 0.1), (0.3, None),
                                                   ("0.3", 0.1), (True, 0.1), (float("nan"), 0.1)])
def test_none_eligible_fails_with_the_reason(tmp_path, wer_before, wer_after):
    export(tmp_path, "only", wer_before, wer_after)
    finetuned.register(tmp_path, "only")
    with pytest.raises(finetuned.NoEligibleModel, match=r"none of the 1 fine-tuned models .* may be used \(only: "):
        finetuned.resolve(tmp_path)


def test_no_registry_yet_says_train_first(tmp_path):
    with pytest.raises(finetuned.NoEligibleModel, match="no fine-tuned model is registered yet.*run the train_asr"):
        finetuned.resolve(tmp_path)


@pytest.mark.parametrize("text", ["{not json", '["a list"]', '{"models": {"r": 3}}', "\udcff"])
def test_a_corrupt_registry_is_a_clear_error_and_registering_rebuilds_it(tmp_path, text):
    export(tmp_path, "run-a", 0.4, 0.2)
    path = tmp_path / "models" / "registry.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(finetuned.RegistryError, match="registry.json .*Fix or delete it"):
        finetuned.resolve(tmp_path)
    export(tmp_path, "run-b", 0.4, 0.3)
    messages: list[str] = []
    finetuned.register(tmp_path, "run-b", log=messages.append)
    assert "rebuilt from the markers" in messages[0]
    assert sorted(finetuned.load(tmp_path)) == ["run-a", "run-b"]  # run-a found again from its marker
    [aside] = (tmp_path / "models").glob("registry.json.corrupt-*")
    assert aside.read_bytes() == text.encode("utf-8", "surrogateescape")  # kept for a person to look at


def test_the_cli_lists_and_rebuilds(tmp_path, capsys):
    export(tmp_path, "run-a", 0.4, 0.2)
    assert finetuned.main(["--data-root", str(tmp_path), "--rebuild"]) == 0
    out = capsys.readouterr().out
    assert "run-a\topenai/whisper-small\tlectures\tWER 0.4 -> 0.2" in out and "eligible" in out
    assert "latest-finetuned = /data/models/run-a/ct2" in out


def test_the_model_card_says_which_model_transcribed(tmp_path):
    ct2 = export(tmp_path, "manual-2026", 0.31, 0.12)
    card = model_card(str(ct2))
    assert card is not None and card["fine_tuned"] and card["run"] == "manual-2026"
    assert transcribed_by(str(ct2), card) == ("fine-tuned manual-2026 (base openai/whisper-small, dataset lectures, "
                                              "WER 0.31 → 0.12)")
    assert model_card("small") is None and model_card(str(tmp_path)) is None and model_card(None) is None
    assert transcribed_by("small", model_card("small")) == "small"
    (ct2 / MARKER).write_text("{broken")
    assert model_card(str(ct2)) is None


# --- through Airflow ----------------------------------------------------------------------------------

def render_model(dag, value: str) -> str:
    """The transcribe task's --model argument as Airflow renders it for a run with whisper_model=value."""
    command = dag.get_task("process.transcribe").command
    template = command[command.index("--model") + 1]
    return dag.get_template_env().from_string(template).render(params={"whisper_model": value})


def test_lecture_to_pdf_renders_latest_finetuned_to_the_model_folder(monkeypatch, tmp_path):
    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path))
    assert bag.import_errors == {}
    dag = bag.dags["lecture_to_pdf"]
    from konspekt_dags.params import BadParam, check_lecture_params
    from konspekt_dags.settings import settings

    params = {"whisper_model": "latest-finetuned", "summary_model": settings.summary_model, "language": "auto"}
    assert render_model(dag, "small") == "small"
    assert render_model(dag, "/data/models/x/ct2") == "/data/models/x/ct2"
    with pytest.raises(finetuned.NoEligibleModel, match="no fine-tuned model is registered yet"):
        render_model(dag, "latest-finetuned")
    with pytest.raises(BadParam, match="no fine-tuned model is registered yet"):
        check_lecture_params(params)
    export(tmp_path, "run-worse", 0.3, 0.6)
    finetuned.register(tmp_path, "run-worse")
    with pytest.raises(BadParam, match="run-worse: WER 0.600 after training is not better than 0.300"):
        check_lecture_params(params)
    export(tmp_path, "run-better", 0.3, 0.1, created="2026-01-01T00:00:00+0000")  # older, but better
    finetuned.register(tmp_path, "run-better")
    check_lecture_params(params)
    assert render_model(dag, "latest-finetuned") == "/data/models/run-better/ct2"
    # the rendered folder is bound read-only into the docker task, as any model its argv names
    from konspekt import registry
    from konspekt_dags.factory import work_paths

    video = "/data/processing/20260101T000000-abcdef/lecture"
    _, readable = work_paths(registry.get("transcribe"), video, ["--model", "/data/models/run-better/ct2"])
    assert "/data/models/run-better/ct2" in readable


def test_the_default_may_be_latest_finetuned(monkeypatch, tmp_path):
    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), WHISPER_MODEL="latest-finetuned")
    assert bag.dags["lecture_to_pdf"].params["whisper_model"] == "latest-finetuned"
    from konspekt_dags.params import BadParam, check_lecture_params
    from konspekt_dags.settings import settings

    params = {"whisper_model": settings.whisper_model, "summary_model": settings.summary_model, "language": "auto"}
    with pytest.raises(BadParam, match="no fine-tuned model"):  # the configured default is checked too
        check_lecture_params(params)
    export(tmp_path, "run-1", 0.3, 0.1)
    finetuned.register(tmp_path, "run-1")
    check_lecture_params(params)


def test_train_asr_updates_the_asset_that_names_the_registry(monkeypatch, tmp_path):
    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path))
    from konspekt_dags.assets import FINETUNED_WHISPER

    task = bag.dags["train_asr"].get_task("register_model")
    assert list(task.outlets) == [FINETUNED_WHISPER]
    assert FINETUNED_WHISPER.name == "konspekt-finetuned-whisper"
    assert FINETUNED_WHISPER.uri == "file:///data/models/registry.json"


@pytest.mark.slow
def test_a_run_with_no_eligible_model_stops_before_any_file_is_touched(tmp_path):
    data = tmp_path / "data"
    (data / "input").mkdir(parents=True)
    (data / "input" / "talk.mp4").write_bytes(b"not even a video")
    export(data, "run-worse", 0.3, 0.6)
    finetuned.register(data, "run-worse")
    proc = dags_test(airflow_env(tmp_path, data), "lecture_to_pdf", "-c",
                     json.dumps({"whisper_model": "latest-finetuned"}), timeout=300)
    output = proc.stdout + proc.stderr
    assert "none of the 1 fine-tuned models" in output and "run-worse: WER 0.600" in output, output[-3000:]
    assert "state=failed" in output
    assert (data / "input" / "talk.mp4").is_file() and not (data / "processing").exists()


def test_the_whisper_model_param_defaults_by_runner_and_refuses_english_only_on_another_language(
        monkeypatch, tmp_path):
    """Local runner: the packaged multilingual base (no download, issue 18); docker: small. An English-only
    model with another language is refused before any file is claimed."""
    assert load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), RUNNER="local").dags[
        "lecture_to_pdf"].params["whisper_model"] == "base"
    assert load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), RUNNER="docker").dags[
        "lecture_to_pdf"].params["whisper_model"] == "small"
    from konspekt_dags.params import BadParam, check_lecture_params
    from konspekt_dags.settings import settings

    params = {"whisper_model": "small.en", "summary_model": settings.summary_model, "language": "ru"}
    with pytest.raises(BadParam, match="'small.en' is English-only: it cannot transcribe language='ru'"):
        check_lecture_params(params)
    check_lecture_params({**params, "language": "en"})
    check_lecture_params({**params, "language": "auto"})  # the stage listens first and warns (asr.english_only)
