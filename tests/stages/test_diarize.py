"""Speaker labels: assigning diarization turns to words and segments, how they show in every
output, and the stage's behaviour where pyannote cannot run (the main venv has no pyannote:
the real pipeline runs in tests/stages/test_whisperx.py, in whisperx's venv)."""

import json

import pytest
from conftest import new_video_dir
from transcript_checks import check_subtitles, check_transcript

from konspekt.asr import subtitles
from konspekt.asr.diarize import Turn, assign_speakers, speaker_at
from konspekt.contracts import Diarization, Segment, Transcript, Word
from konspekt.deployment import DEFAULTS
from konspekt.layout import VideoDir, write_json, write_text
from konspekt.report.data import paragraphs
from konspekt.sentences import timed_sentences
from konspekt.stage import yes_no
from konspekt.stages import extract_audio, transcribe

TURNS = [Turn(0.0, 4.0, "SPEAKER_00"), Turn(4.2, 7.0, "SPEAKER_01"), Turn(9.0, 12.0, "SPEAKER_00")]


def words(text: str, start: float, step: float = 0.5) -> list[Word]:
    return [Word(start + i * step, start + i * step + step * 0.8, w, 0.9) for i, w in enumerate(text.split())]


def test_speaker_of_a_span_is_the_longest_overlap_else_the_nearest_turn():
    assert speaker_at(TURNS, 3.5, 4.6) == "SPEAKER_00"  # 0.5 s against 0.4 s
    assert speaker_at(TURNS, 3.9, 5.0) == "SPEAKER_01"  # 0.1 s against 0.8 s
    assert speaker_at(TURNS, 7.5, 7.9) == "SPEAKER_01"  # in the gap: the nearer turn
    assert speaker_at(TURNS, 8.5, 8.8) == "SPEAKER_00"
    assert speaker_at([], 1.0, 2.0) is None


def test_a_segment_is_cut_where_the_speaker_changes():
    question = "So what is evaporation? It is water turning into vapour."
    segments = [Segment(0, 2.0, 7.5, question, words(question, 2.0), -0.2, 0.01),
                Segment(1, 9.0, 11.0, "Thank you.", words("Thank you.", 9.0)),
                Segment(2, 11.0, 12.0, "Bye now", [])]  # no word times: the segment's own span decides
    out = assign_speakers(segments, TURNS)
    assert [s.id for s in out] == list(range(len(out)))
    assert [(s.speaker, s.text) for s in out] == [
        ("SPEAKER_00", "So what is evaporation?"),  # words 2.0 .. 3.9
        ("SPEAKER_01", "It is water turning into vapour."),  # 4.5 .. 7.4
        ("SPEAKER_00", "Thank you."), ("SPEAKER_00", "Bye now")]
    assert all(w.speaker == s.speaker for s in out for w in s.words)
    assert (out[0].start, out[0].end) == (2.0, out[0].words[-1].end) and out[1].start == out[1].words[0].start
    assert out[1].avg_logprob == -0.2  # a cut keeps its segment's scores
    assert " ".join(s.text for s in out) == " ".join(s.text for s in segments)


def diarized_transcript() -> Transcript:
    texts = [("Good morning. Today we talk about rain.", 0.0, "SPEAKER_00"),
             ("Does it rain over the sea?", 5.0, "SPEAKER_01"), ("Yes, it does.", 8.0, "SPEAKER_00"),
             ("And over land, too.", 10.0, "SPEAKER_00")]
    segments = [Segment(i, start, start + len(text.split()) * 0.5, text,
                        [Word(w.start, w.end, w.text, w.probability, speaker) for w in words(text, start)],
                        speaker=speaker) for i, (text, start, speaker) in enumerate(texts)]
    return Transcript("en", 1.0, 13.0, "m", segments,
                      diarization=Diarization("ok", "local-pipeline", ["SPEAKER_00", "SPEAKER_01"]))


def test_speakers_in_subtitles_text_and_table(tmp_path):
    t = diarized_transcript()
    video = VideoDir(tmp_path)
    write_json(video.transcript_json, t)
    for ext, fn in subtitles.WRITERS.items():
        write_text(tmp_path / f"transcript.{ext}", fn(t))
    assert check_transcript(video.transcript_json) == t  # the schema allows speakers; the JSON round-trips
    check_subtitles(tmp_path, t)
    labels = [text.split("]")[0] + "]" for _, _, text in subtitles.cues(t) if text.startswith("[")]
    assert labels == ["[SPEAKER_00]", "[SPEAKER_01]", "[SPEAKER_00]"]  # only where the speaker changes
    assert "\n\nSPEAKER_01:\nDoes it rain over the sea?\n\nSPEAKER_00:\n" in to_text(tmp_path, "txt")
    rows = to_text(tmp_path, "tsv").splitlines()
    assert rows[0] == "start\tend\ttext\tspeaker" and rows[2].endswith("\tSPEAKER_01")


def to_text(folder, ext):
    return (folder / f"transcript.{ext}").read_text(encoding="utf-8")


def test_sentences_and_report_paragraphs_follow_the_speaker():
    sentences = timed_sentences(diarized_transcript())
    assert [s.speaker for s in sentences] == ["SPEAKER_00", "SPEAKER_00", "SPEAKER_01", "SPEAKER_00", "SPEAKER_00"]
    groups = paragraphs(sentences)
    assert [[s.speaker for s in g] for g in groups] == [["SPEAKER_00"] * 2, ["SPEAKER_01"], ["SPEAKER_00"] * 2]


def test_undiarized_outputs_keep_whisper_layout():
    t = diarized_transcript()
    plain = Transcript(t.language, 1.0, t.duration, "m",
                       [Segment(s.id, s.start, s.end, s.text, [Word(w.start, w.end, w.text) for w in s.words])
                        for s in t.segments])
    assert subtitles.to_tsv(plain).splitlines()[0] == "start\tend\ttext"
    assert "[" not in subtitles.to_srt(plain) and ":" not in subtitles.to_txt(plain)


@pytest.fixture(scope="module")
def lecture_dir(tmp_path_factory, lecture_mp4):
    video_dir = new_video_dir(tmp_path_factory.mktemp("diarize"), lecture_mp4)
    assert extract_audio.main(["--video-dir", str(video_dir)]) == 0
    return video_dir


SECRET = "hf_TEST-not-a-real-token-must-never-be-logged"


def test_without_pyannote_the_transcript_is_written_and_says_why(lecture_dir, tiny_en_model, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    code = transcribe.main(["--video-dir", str(lecture_dir), "--model", tiny_en_model, "--diarize", "true",
                            "--speakers", "0"])
    out, err = capsys.readouterr()
    assert code == 0, err
    t = check_transcript(lecture_dir / "transcript.json")
    assert t.diarization.status == "skipped" and "pyannote.audio is not installed" in t.diarization.reason
    assert t.diarization.model == DEFAULTS["DIARIZATION_MODEL"] and all(s.speaker is None for s in t.segments)
    assert "WARNING: no speaker diarization" in err
    assert json.loads(out.strip().splitlines()[-1])["details"]["speakers"] == []
    written = "".join(p.read_text(encoding="utf-8") for p in lecture_dir.rglob("*") if p.suffix in {
        ".json", ".txt", ".srt", ".vtt", ".tsv"})
    assert SECRET not in out + err + written


def test_diarize_flag_values():
    assert yes_no("True") and not yes_no("false") and transcribe._count("0") is None
    assert transcribe._count("3") == 3 and transcribe._count("") is None
    with pytest.raises(Exception, match="expected true or false"):
        yes_no("maybe")
