import json
import re

from conftest import new_video_dir
from konspekt.contracts import Transcript
from konspekt.sample import SCRIPT, word_error_rate
from konspekt.stages import extract_audio, transcribe

CUE = re.compile(r"^(\d\d):(\d\d):(\d\d)[,.](\d\d\d) --> (\d\d):(\d\d):(\d\d)[,.](\d\d\d)$")


def seconds(h, m, s, ms):
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def cue_times(text):
    return [(seconds(*m.groups()[:4]), seconds(*m.groups()[4:])) for line in text.splitlines() if (m := CUE.match(line))]


def test_transcribes_spoken_lecture(tmp_path, lecture_mp4, tiny_en_model, capsys):
    video_dir = new_video_dir(tmp_path, lecture_mp4)
    assert extract_audio.main(["--video-dir", str(video_dir)]) == 0
    code = transcribe.main(["--video-dir", str(video_dir), "--model", tiny_en_model, "--device", "auto"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and result["status"] == "ok"
    assert set(result["outputs"]) == {"transcript.json", "transcript.txt", "transcript.srt", "transcript.vtt"}
    assert result["details"]["device"] == "cpu" and result["details"]["compute_type"] == "int8"

    t = Transcript.load(video_dir / "transcript.json")
    assert t.language == "en" and 30 < t.duration < 40
    assert word_error_rate(SCRIPT, t.text) <= 0.15
    words = [w for s in t.segments for w in s.words]
    assert len(words) > 50
    assert all(s.start <= w.start <= w.end <= s.end + 0.01 for s in t.segments for w in s.words)
    assert (video_dir / "transcript.txt").read_text().strip()

    srt = (video_dir / "transcript.srt").read_text()
    vtt = (video_dir / "transcript.vtt").read_text()
    assert vtt.startswith("WEBVTT\n\n")
    for times in (cue_times(srt), cue_times(vtt)):
        assert len(times) >= 5  # long segments are split into readable cues
        assert all(a < b for a, b in times)
        assert all(b1 <= a2 for (_, b1), (a2, _) in zip(times, times[1:]))  # never overlapping
    for block in srt.strip().split("\n\n"):
        lines = block.splitlines()
        assert lines[0].isdigit() and CUE.match(lines[1]) and 1 <= len(lines[2:]) <= 2
        assert all(len(line) <= 60 for line in lines[2:])


def test_silence_is_bad_input(tmp_path, silence_wav, tiny_en_model, capsys):
    video_dir = new_video_dir(tmp_path, silence_wav, name="silence.wav")
    assert extract_audio.main(["--video-dir", str(video_dir)]) == 0
    code = transcribe.main(["--video-dir", str(video_dir), "--model", tiny_en_model])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 2 and "no speech" in result["message"]
    assert not (video_dir / "transcript.json").exists()


def test_subtitle_timestamps():
    assert transcribe.timestamp(3725.5) == "01:02:05,500"
    assert transcribe.timestamp(0.0004, ".") == "00:00:00.000"
