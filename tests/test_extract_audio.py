import json
import wave

import pytest

from conftest import ffmpeg, new_video_dir
from konspekt.stages import extract_audio


def run(video_dir, capsys):
    code = extract_audio.main(["--video-dir", str(video_dir)])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return code, result


def test_video_becomes_16k_mono_wav(tmp_path, lecture_mp4, capsys):
    video_dir = new_video_dir(tmp_path, lecture_mp4, name="Лекция 'один' $(rm -rf x) .mp4")
    code, result = run(video_dir, capsys)
    assert code == 0 and result["status"] == "ok" and result["outputs"] == ["audio.wav"]
    with wave.open(str(video_dir / "audio.wav")) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        assert 30 < wav.getnframes() / 16000 < 40
    assert json.loads((video_dir / "stages" / "extract_audio.json").read_text())["status"] == "ok"
    assert not list(video_dir.glob(".*.tmp"))


def test_audio_only_file_is_accepted(tmp_path, media_dir, capsys):
    mp3 = media_dir / "talk.mp3"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=220:duration=2", str(mp3))
    code, result = run(new_video_dir(tmp_path, mp3, name="talk.mp3"), capsys)
    assert code == 0 and result["details"]["probe"]["video_streams"] == 0


@pytest.mark.parametrize("case, expected", [
    ("empty", "is empty"),
    ("text", "not a readable video or audio file"),
    ("no_audio", "has no audio track"),
    ("truncated", "not a readable video or audio file"),
])
def test_bad_inputs_exit_2_with_a_reason(tmp_path, silent_video, lecture_mp4, capsys, case, expected):
    source = tmp_path / "input.mp4"
    if case == "empty":
        source.write_bytes(b"")
    elif case == "text":
        source.write_text("this is not a video\n")
    elif case == "no_audio":
        source.write_bytes(silent_video.read_bytes())
    else:
        data = lecture_mp4.read_bytes()
        source.write_bytes(data[: len(data) // 2])
    before = source.read_bytes()
    video_dir = new_video_dir(tmp_path, source)
    code, result = run(video_dir, capsys)
    assert code == 2 and result["status"] == "bad_input"
    assert expected in result["message"]
    assert (video_dir / "source" / "lecture.mp4").read_bytes() == before  # the user's bytes are untouched
    assert not (video_dir / "audio.wav").exists()
    assert not list(video_dir.glob(".*.tmp"))
