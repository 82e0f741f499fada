"""Decoding and subtitle options travel from the trigger form to the transcribe stage: every Param
renders into an argument the stage's own parser accepts, with the value the person typed."""

from __future__ import annotations

import pytest
from test_dags import load_dagbag

from konspekt import registry
from konspekt.stage import make_parser
from konspekt.stages import transcribe


def rendered_args(monkeypatch, tmp_path, **params):
    """The transcribe task's argv as the DAG renders it for a run with ``params`` (defaults otherwise),
    parsed by the stage's own parser."""
    dag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path), RUNNER="local").dags["lecture_to_pdf"]
    task = dag.get_task("process.transcribe")
    values = {**{name: param.value for name, param in dag.params.items()}, **params}
    env = dag.get_template_env()
    argv = [env.from_string(str(arg)).render(params=values, task=task) for arg in task.command[3:]]
    argv[argv.index("--video-dir") + 1] = str(tmp_path / "video")  # the mapped folder
    parser = make_parser(registry.get("transcribe"), "test", make_like=True)
    transcribe._configure(parser)
    return parser.parse_args(argv)


def test_the_defaults_reach_the_stage_as_its_own_defaults(monkeypatch, tmp_path):
    dag = load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path)).dags["lecture_to_pdf"]
    # the UI's trigger form requires a value for a Param whose type has no null: a usually empty one has it
    for name, param in dag.params.items():
        if param.value in (None, ""):
            assert "null" in param.schema.get("type", []), name
    args = rendered_args(monkeypatch, tmp_path)
    assert (args.task, args.initial_prompt, args.hotwords, args.compute_type, args.vad_filter) == (
        "transcribe", "", "", "auto", True)
    assert (args.vad_onset, args.vad_offset, args.max_line_width, args.max_line_count, args.max_cue_seconds) == (
        None, None, None, None, None)
    assert (args.speakers, args.min_speakers, args.max_speakers) == (None, None, None)


def test_what_a_person_types_reaches_the_stage(monkeypatch, tmp_path):
    prompt = "-- a lecture on gradient descent; Fourier, eigenvalue --force"  # never read as options
    args = rendered_args(monkeypatch, tmp_path, task="translate", initial_prompt=prompt,
                         hotwords="-Kolmogorov Fourier", compute_type="float32", vad_filter=False,
                         vad_onset=0.6, vad_offset=0.4, max_line_width=30, max_line_count=1, max_cue_seconds=3.5,
                         min_speakers=2, max_speakers=3)
    assert (args.task, args.initial_prompt, args.hotwords, args.compute_type) == (
        "translate", prompt, "-Kolmogorov Fourier", "float32")
    assert args.force is False  # the prompt's "--force" stayed inside the prompt
    assert (args.vad_filter, args.vad_onset, args.vad_offset) == (False, 0.6, 0.4)
    assert (args.max_line_width, args.max_line_count, args.max_cue_seconds) == (30, 1, 3.5)
    assert (args.min_speakers, args.max_speakers) == (2, 3)


def test_settings_set_the_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("KONSPEKT_HOTWORDS", "eigenvalue")
    monkeypatch.setenv("KONSPEKT_VAD_ONSET", "0.55")
    monkeypatch.setenv("KONSPEKT_MAX_LINE_WIDTH", "32")
    args = rendered_args(monkeypatch, tmp_path)
    assert (args.hotwords, args.vad_onset, args.max_line_width) == ("eigenvalue", 0.55, 32)


@pytest.mark.parametrize("params, message", [
    ({"initial_prompt": "a\x00b"}, "initial_prompt must be plain text"),
    ({"hotwords": "x\x1b[31m"}, "hotwords must be plain text"),
    ({"vad_onset": 0.3, "vad_offset": 0.5}, "vad_offset=0.5 is above vad_onset=0.3"),
    ({"min_speakers": 4, "max_speakers": 2}, "min_speakers=4 is above max_speakers=2"),
])
def test_check_params_stops_values_the_stage_cannot_use(monkeypatch, tmp_path, params, message):
    load_dagbag(monkeypatch, DATA_ROOT=str(tmp_path))
    from konspekt_dags.params import BadParam, check_lecture_params
    from konspekt_dags.settings import settings

    with pytest.raises(BadParam, match=message.replace("[", r"\[")):
        check_lecture_params({"whisper_model": settings.whisper_model, "language": "auto", **params})
