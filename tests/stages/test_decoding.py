"""Decoding options of the transcribe stage (WhisperX's CLI names), for real: tiny.en on espeak-ng speech."""

from __future__ import annotations

import json

import pytest
from conftest import new_video_dir
from transcript_checks import check_transcript, srt_cues, vtt_cues

from konspekt import registry
from konspekt.asr import subtitles
from konspekt.contracts import EXIT_USAGE, Segment, Transcript, Word
from konspekt.sample import SCRIPT, word_error_rate
from konspekt.stage import make_parser
from konspekt.stages import extract_audio, transcribe

PROMPT, HOTWORDS = "A lecture on the water cycle: water, evaporation, clouds, rain.", "water"


@pytest.fixture(scope="module")
def lecture_dir(tmp_path_factory, lecture_mp4):
    video_dir = new_video_dir(tmp_path_factory.mktemp("decoding"), lecture_mp4)
    assert extract_audio.main(["--video-dir", str(video_dir)]) == 0
    return video_dir


def run_stage(video_dir, *args) -> int:
    return transcribe.main(["--video-dir", str(video_dir), *map(str, args)])


@pytest.fixture(scope="module")
def prompted(lecture_dir, tiny_en_model):
    """One transcription with a prompt, hotwords, VAD thresholds and hard subtitle limits."""
    code = run_stage(lecture_dir, "--model", tiny_en_model, "--initial-prompt", PROMPT, "--hotwords", HOTWORDS,
                     "--vad-onset", 0.55, "--vad-offset", 0.4, "--max-line-width", 30, "--max-line-count", 1,
                     "--max-cue-seconds", 3)
    result = json.loads((lecture_dir / "stages" / "transcribe.json").read_text())
    return code, result, check_transcript(lecture_dir / "transcript.json")


def test_prompt_hotwords_and_vad_thresholds_are_used_and_recorded(prompted):
    code, result, t = prompted
    assert code == 0 and result["status"] == "ok"
    assert t.decoding["initial_prompt"] == PROMPT and t.decoding["hotwords"] == HOTWORDS
    assert (t.decoding["vad_onset"], t.decoding["vad_offset"], t.decoding["vad_filter"]) == (0.55, 0.4, True)
    assert t.task == "transcribe" and t.warnings == [] and result["details"]["warnings"] == []
    assert word_error_rate(SCRIPT, t.text) <= 0.15
    assert "water cycle" in t.text.lower()  # espeak's "water", which tiny.en hears as "wager" unprompted
    options = result["fingerprint"]["options"]
    assert options["initial_prompt"] == PROMPT and options["max_line_width"] == 30


def test_subtitle_limits_are_hard(prompted, lecture_dir):
    _, _, t = prompted
    cues = srt_cues((lecture_dir / "transcript.srt").read_text(encoding="utf-8"))
    assert len(cues) >= 15  # 34 s of speech in cues of at most 3 s and 30 characters
    for start, end, lines in cues:
        assert len(lines) == 1 and 0 < len(lines[0]) <= 30, lines
        assert 0 < end - start <= 3.0 + 1e-9, (start, end, lines)
    said = " ".join(line for _, _, lines in cues for line in lines)
    assert said.split() == t.text.split()  # every word, in order
    assert vtt_cues((lecture_dir / "transcript.vtt").read_text(encoding="utf-8")) == cues


def test_other_options_are_not_fresh(prompted, lecture_dir, tiny_en_model, capsys):
    capsys.readouterr()
    code = run_stage(lecture_dir, "--model", tiny_en_model, "--initial-prompt", "Another prompt.", "--hotwords",
                     HOTWORDS, "--vad-onset", 0.55, "--vad-offset", 0.4, "--max-line-width", 30, "--max-line-count",
                     1, "--max-cue-seconds", 3)
    err = capsys.readouterr().err
    assert code == 0 and "options changed: --initial-prompt" in err, err
    assert check_transcript(lecture_dir / "transcript.json").decoding["initial_prompt"] == "Another prompt."


def test_without_vad_translate_and_default_cues(tmp_path, lecture_dir, tiny_en_model):
    """No VAD: the batched pipeline decodes fixed 30 s windows. ``translate`` is recorded (tiny.en speaks English)."""
    video_dir = new_video_dir(tmp_path)
    (video_dir / "audio.wav").write_bytes((lecture_dir / "audio.wav").read_bytes())
    assert run_stage(video_dir, "--model", tiny_en_model, "--vad-filter", "false", "--task", "translate") == 0
    t = check_transcript(video_dir / "transcript.json")
    assert t.decoding["vad_filter"] is False and t.task == "translate"
    assert word_error_rate(SCRIPT, t.text) <= 0.2
    assert t.segments[-1].end > 30  # the second window was decoded too
    # default cues: soft limits, as before (two lines of about 42 characters)
    assert (video_dir / "transcript.srt").read_text(encoding="utf-8") == subtitles.to_srt(t)
    assert all(len(lines) <= 2 for _, _, lines in srt_cues(subtitles.to_srt(t)))


@pytest.mark.parametrize(("args", "message"), [
    (["--task", "summarize"], "invalid choice: 'summarize'"),
    (["--vad-filter", "maybe"], "expected true or false"),
    (["--vad-onset", "1.5"], "expected a probability between 0 and 1, got 1.5"),
    (["--vad-offset", "-0.1"], "expected a probability between 0 and 1"),
    (["--vad-onset", "0.3", "--vad-offset", "0.6"], "--vad-offset 0.6 is above --vad-onset 0.3"),
    (["--language-warn-below", "2"], "expected a probability"),
    (["--max-line-width", "5"], "expected at least 10, got 5"),
    (["--max-line-count", "0"], "expected at least 1, got 0"),
    (["--max-cue-seconds", "abc"], "expected a float, got 'abc'"),
    (["--min-speakers", "3", "--max-speakers", "2"], "--min-speakers 3 is above --max-speakers 2"),
])
def test_invalid_values_are_usage_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        run_stage(tmp_path, *args)
    assert exit_.value.code == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_empty_values_mean_the_defaults(tmp_path):
    """The DAG passes a Param's empty value as is: no limit, the backend's VAD default."""
    parser = make_parser(registry.get("transcribe"), "", make_like=True)
    transcribe._configure(parser)
    args = parser.parse_args(["--video-dir", str(tmp_path), "--vad-onset", "", "--max-line-width", "",
                              "--initial-prompt", "", "--min-speakers", "0"])
    assert args.vad_onset is None and args.max_line_width is None and args.min_speakers is None
    assert args.vad_filter is True and args.task == "transcribe" and args.language_warn_below == 0.8


def test_cue_style_defaults_keep_the_writers_as_they_were():
    words = [Word(i * 0.4, i * 0.4 + 0.35, w) for i, w in enumerate(SCRIPT.split()[:60])]
    t = Transcript("en", 1.0, 30.0, "m", [Segment(0, 0.0, words[-1].end, " ".join(w.text for w in words), words)])
    assert subtitles.cues(t) == subtitles.cues(t, subtitles.CueStyle())
    assert subtitles.render(t) == {ext: fn(t) for ext, fn in subtitles.WRITERS.items()}
    # soft limits may be overrun by a word; hard ones are not
    soft = [text for _, _, text in subtitles.cues(t)]
    hard = [text for _, _, text in subtitles.cues(t, subtitles.CueStyle(max_line_width=42, max_line_count=2))]
    assert all(len(line) <= 42 for text in hard for line in text.split("\n"))
    assert " ".join(soft).split() == " ".join(hard).split()
