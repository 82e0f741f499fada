"""A 10-minute generated lecture through the stage, in its own process: valid outputs, bounded memory.

The memory bound is the product's 2 GB limit, loose on purpose (tight figures belong in the
benchmark): on this 2-core machine tiny.en peaked at 0.88 GB for these 10 minutes and 1.07 GB
for 60 when run alone.
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, new_video_dir
from transcript_checks import check_subtitles, check_transcript

from konspekt.sample import lecture_text, speak, word_error_rate
from konspekt.stages import extract_audio

pytestmark = pytest.mark.slow
MINUTES = 10
# The product's limit, as a regression guard only: the same run measured 0.89 GB alone and
# 1.52 GB while CI shared the machine, so tight figures belong in bench/.
PEAK_RSS_LIMIT_MB = 2048


# Run by a small interpreter of its own: Linux charges a child the peak RSS of the process it was forked
# from, so measured straight from pytest (3 GB after the training tests load their models) the stage
# would carry pytest's size; forked from this one it carries ~10 MB.
MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
"""


def run_measured(argv: list[str], log_path) -> tuple[int, float, float]:
    """Run ``argv``; return its exit code, its own peak RSS in MB and its CPU seconds (wait4: that child alone)."""
    report = log_path.with_suffix(".rusage")
    with open(log_path, "w") as log:
        subprocess.run([sys.executable, "-c", MEASURE, str(report), *argv], stdout=log, stderr=subprocess.STDOUT,
                       cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1"), check=True)
    code, maxrss_kb, cpu = report.read_text().split()
    return int(code), int(maxrss_kb) / 1024, float(cpu)


def test_ten_minute_lecture_in_bounded_memory(tmp_path, tiny_en_model):
    text = lecture_text(MINUTES)
    wav = speak(text, tmp_path / "long.wav", video=False)
    video_dir = new_video_dir(tmp_path, wav, name="long.wav")
    assert extract_audio.main(["--video-dir", str(video_dir)]) == 0

    log = tmp_path / "transcribe.log"
    code, peak_mb, cpu = run_measured([sys.executable, "-m", "konspekt.stages.transcribe", "--video-dir", str(video_dir),
                                  "--model", tiny_en_model], log)
    output = log.read_text()
    assert code == 0, output[-3000:]
    result = json.loads(output.strip().splitlines()[-1])
    t = check_transcript(video_dir / "transcript.json")
    assert t.duration >= MINUTES * 60 * 0.9
    assert word_error_rate(text, t.text) <= 0.2
    assert sum(len(s.words) for s in t.segments) > MINUTES * 100
    check_subtitles(video_dir, t)
    print(f"\n{t.duration:.0f} s of audio in {result['seconds']:.1f} s "
          f"(RTF {result['seconds'] / t.duration:.3f}, {cpu:.0f} CPU s), peak RSS {peak_mb:.0f} MB")
    assert peak_mb < PEAK_RSS_LIMIT_MB
