"""One stage registry: a stage declared once reaches the DAG's wiring, the task factory, the manifest
and finalize's failure handling, with nothing else to edit."""

from __future__ import annotations

import json

import pytest
from test_dags import load_dagbag
from test_inbox import age, data_root

from konspekt import inbox, registry
from konspekt.asr.subtitles import WRITERS
from konspekt.contracts import StageResult
from konspekt.layout import VideoDir, write_json

SLIDES = registry.Stage("slides", "report", after=("transcribe",), writes=("slides.json",))


@pytest.fixture
def with_slides(monkeypatch):
    """A new stage (say, OCR of slides) added the way a newcomer adds one: a line in the registry."""
    monkeypatch.setattr(registry, "LECTURE", (*registry.LECTURE, SLIDES))
    return SLIDES


def test_a_new_stage_is_wired_into_the_dag(monkeypatch, tmp_path, with_slides):
    bag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), RUNNER="docker", IMAGE_TAG="t")
    assert bag.import_errors == {}
    dag = bag.dags["lecture_to_pdf"]
    task = dag.get_task("process.slides")
    # claim: every task of the mapped group takes its video folder from claim's list
    assert task.upstream_task_ids == {"claim", "process.transcribe"}
    assert task.downstream_task_ids == {"process.finalize"}
    assert task.command[:4] == ["python", "-m", "konspekt.stages.slides", "--video-dir"]
    assert task.command[-2:] == ["--force", "{{ params.force }}"]
    assert task.image == "konspekt-report:t" and task.pool == "konspekt_cpu"
    # the stages that were there keep their wiring
    assert dag.get_task("process.render_pdf").downstream_task_ids == {"process.finalize"}
    assert dag.get_task("process.transcribe").downstream_task_ids == {
        "process.summarize", "process.outline", "process.slides"}
    # the voice is measured beside transcription: features waits for the audio only
    assert dag.get_task("process.features").upstream_task_ids == {"claim", "process.extract_audio"}


def claimed(root, name):
    (root / "input" / name).write_bytes(b"video bytes")
    age(root / "input" / name)
    [claim] = inbox.claim(root, stable_seconds=1)
    return claim


def finish(video_dir, statuses):
    for stage, status in statuses.items():
        write_json(VideoDir(video_dir).result_path(stage), StageResult(stage, status, message=f"{stage}: {status}"))


def test_finalize_publishes_what_the_new_stage_writes(tmp_path, with_slides):
    root = data_root(tmp_path)
    claim = claimed(root, "talk.mp4")
    for name in ("report.pdf", "slides.json", "notes.txt"):  # notes.txt: no stage writes it
        (claim.video_dir / name).write_text(name)
    finish(claim.video_dir, {stage: "ok" for stage in registry.lecture_names()})
    outcome = inbox.finalize(root, claim.video_dir)
    assert outcome.status == "ok"
    out = root / "output" / "talk"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "report.pdf", "slides.json"]
    assert "slides" in json.loads((out / "manifest.json").read_text())["stages"]


def test_finalize_judges_the_new_stage(tmp_path, with_slides):
    root = data_root(tmp_path)
    bad = claimed(root, "bad.mp4")
    finish(bad.video_dir, {**{s: "ok" for s in registry.lecture_names()}, "slides": "bad_input"})
    outcome = inbox.finalize(root, bad.video_dir)
    assert (outcome.status, outcome.stage, outcome.destination) == ("failed", "slides", "failed/bad")
    assert json.loads((root / "failed" / "bad" / "error.json").read_text())["stage"] == "slides"

    unfinished = claimed(root, "unfinished.mp4")  # the new stage never ran: not published, held
    finish(unfinished.video_dir, {s: "ok" for s in registry.lecture_names() if s != "slides"})
    outcome = inbox.finalize(root, unfinished.video_dir, hold_seconds=60)
    assert (outcome.status, outcome.stage) == ("held", "slides")
    assert not (root / "output" / "unfinished").exists()


def test_the_registry_says_what_each_stage_writes():
    assert set(registry.get("transcribe").writes) == {"transcript.json", *(f"transcript.{ext}" for ext in WRITERS)}
    assert registry.deliverables() >= registry.BYPRODUCTS
    names = [stage.name for stage in registry.all_stages()]
    assert len(names) == len(set(names))
    for stage in registry.all_stages():  # a stage runs after stages declared before it
        earlier = names[: names.index(stage.name)]
        assert set(stage.after) <= set(earlier), stage.name
    with pytest.raises(KeyError, match="no stage 'ocr'"):
        registry.get("ocr")


def test_every_declared_stage_is_a_module_with_the_runner_contract():
    import importlib

    for stage in registry.all_stages():
        module = importlib.import_module(stage.module) if stage.image != "train" else None
        if module is not None:
            assert callable(module.main), stage.name
    assert registry.families() == ("audio", "asr", "features", "summarize", "report", "train")
