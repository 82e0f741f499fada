"""render_pdf: a real PDF is built and read back with poppler's pdftotext/pdfinfo."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from konspekt.contracts import Segment, Summary, Transcript
from konspekt.layout import write_json

pytest.importorskip("reportlab")
pytest.importorskip("matplotlib")
pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")

from konspekt.stages import render_pdf  # noqa: E402

TITLE = "Лекция 1 — введение"
SEGMENTS = [
    "Здравствуйте, сегодня мы поговорим о градиентном спуске.",
    "First, recall that f(x) < g(x) & h(x) > 0 for all x.",
    "Это ключевая идея всего курса.",
    "Let us look at an example with Tom & Jerry.",
]
SUMMARY = "Лекция вводит градиентный спуск & его свойства."
NOTE = "Abstractive model unavailable, used extractive summary."


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
        },
        "per_minute": [{"minute": 0, "words": 40, "speech_rate_wps": 2.31, "pause_ratio": 0.18,
                        "pitch_mean_hz": 142.5, "loudness_mean": 0.82}],
    }


def make_video_dir(root: Path, texts: list[str], seg_len: float = 4.0, features: bool = True) -> Path:
    video = root / "video"
    video.mkdir()
    write_json(video / "video.json", {"name": f"{TITLE}.mp4", "source": "source/x.mp4"})
    segments = [Segment(i, i * seg_len, (i + 1) * seg_len, " " + t) for i, t in enumerate(texts)]
    duration = len(texts) * seg_len
    write_json(video / "transcript.json", Transcript("ru", 0.98, duration, "tiny", segments))
    write_json(video / "summary.json", Summary("extractive", "all-MiniLM-L6-v2", SUMMARY, "ru", 1, NOTE))
    if features:
        write_json(video / "features.json", make_features(duration))
    return video


def pdf_text(pdf: Path) -> str:
    out = subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], capture_output=True, text=True, check=True)
    return " ".join(out.stdout.split())  # undo line wrapping


def pdf_pages(pdf: Path) -> int:
    out = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"^Pages:\s+(\d+)", out, re.M).group(1))


def stage_result(video: Path) -> dict:
    return json.loads((video / "stages" / "render_pdf.json").read_text(encoding="utf-8"))


def test_renders_report_with_cyrillic_and_markup_chars(tmp_path):
    video = make_video_dir(tmp_path, SEGMENTS)
    assert render_pdf.main(["--video-dir", str(video)]) == 0
    pdf = video / "report.pdf"
    assert pdf.is_file() and pdf.read_bytes().startswith(b"%PDF")
    assert not list(video.glob(".report.pdf.*"))  # the temp file was renamed, not left behind
    text = pdf_text(pdf)
    assert TITLE in text
    assert SUMMARY in text
    assert NOTE in text
    assert "Acoustic profile" in text and "2.31 words/s" in text and "18.0 %" in text
    assert "not available" not in text
    for segment in SEGMENTS:
        assert segment in text
    assert "[00:00]" in text
    assert "Page 1" in text
    result = stage_result(video)
    assert result["status"] == "ok" and result["outputs"] == ["report.pdf"]
    assert result["details"]["pages"] == pdf_pages(pdf)


def test_renders_without_features(tmp_path):
    video = make_video_dir(tmp_path, SEGMENTS, features=False)
    assert render_pdf.main(["--video-dir", str(video)]) == 0
    text = pdf_text(video / "report.pdf")
    assert "Acoustic profile" in text and "not available" in text
    assert SEGMENTS[0] in text


def test_long_transcript_renders_quickly(tmp_path):
    sentence = "Это длинная лекция о методах оптимизации, и мы продолжаем разбирать пример номер {}."
    video = make_video_dir(tmp_path, [sentence.format(i) for i in range(900)], seg_len=4.0)
    started = time.perf_counter()
    assert render_pdf.main(["--video-dir", str(video)]) == 0
    elapsed = time.perf_counter() - started
    pdf = video / "report.pdf"
    pages = pdf_pages(pdf)
    assert pages > 5
    assert stage_result(video)["details"]["pages"] == pages
    text = pdf_text(pdf)
    assert "[0:00:00]" in text and "[0:59:" in text  # an hour-long talk gets h:mm:ss stamps
    assert f"Page {pages}" in text
    assert elapsed < 30, f"rendering took {elapsed:.1f} s"


def test_missing_font_dir_is_a_clear_error(tmp_path):
    video = make_video_dir(tmp_path, SEGMENTS)
    assert render_pdf.main(["--video-dir", str(video), "--font-dir", str(tmp_path / "nofonts")]) == 1
    assert "DejaVuSans.ttf not found" in stage_result(video)["message"]
    assert not (video / "report.pdf").exists()


def test_clock_and_grouping():
    assert render_pdf.clock(0) == "00:00"
    assert render_pdf.clock(75.9) == "01:15"
    assert render_pdf.clock(3725, hours=True) == "1:02:05"
    assert render_pdf.clock(3725) == "1:02:05"
    segs = [Segment(i, i * 20.0, i * 20.0 + 20, f"s{i}") for i in range(7)]
    groups = render_pdf.group_segments(segs)
    assert [len(g) for g in groups] == [3, 3, 1]  # a new paragraph each minute
    assert [s.text for g in groups for s in g] == [s.text for s in segs]
