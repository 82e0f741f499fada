import array
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
    ("text", "not a readable video or audio file: it holds text, not video or audio"),
    ("random", "not a readable video or audio file: its contents are not in any video or audio format"),
    ("no_audio", "has no audio track"),
    ("truncated", "not a readable video or audio file: it is incomplete"),
    ("truncated_faststart", "is incomplete: it should hold 34.0 s of audio, but only"),
])
def test_bad_inputs_exit_2_with_a_reason(tmp_path, silent_video, lecture_mp4, capsys, case, expected):
    source = tmp_path / "input.mp4"
    if case == "empty":
        source.write_bytes(b"")
    elif case == "text":
        source.write_text("this is not a video\n")
    elif case == "random":
        source.write_bytes(bytes(range(256)) * 64)
    elif case == "no_audio":
        source.write_bytes(silent_video.read_bytes())
    else:
        if case == "truncated_faststart":  # the index first: the cut file still opens, half its audio decodes
            ffmpeg("-i", str(lecture_mp4), "-c", "copy", "-movflags", "+faststart", str(tmp_path / "fs.mp4"))
            data = (tmp_path / "fs.mp4").read_bytes()
        else:  # the index last, as recorders write it: the cut file has none
            data = lecture_mp4.read_bytes()
        source.write_bytes(data[: len(data) // 2])
    before = source.read_bytes()
    video_dir = new_video_dir(tmp_path, source)
    code, result = run(video_dir, capsys)
    assert code == 2 and result["status"] == "bad_input"
    assert expected in result["message"]
    assert str(tmp_path) not in result["message"]  # the user reads it: no internal folder names
    assert (video_dir / "source" / "lecture.mp4").read_bytes() == before  # the user's bytes are untouched
    assert not (video_dir / "audio.wav").exists()
    assert not list(video_dir.glob(".*.tmp"))


def test_several_audio_streams_use_the_first_and_say_so(tmp_path, media_dir, capsys):
    """Stream 0 is a tone, stream 1 silence: the WAV must hold the tone, and the result name the choice."""
    two = media_dir / "two tracks.mkv"
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=160x120:r=5", "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
           "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "3", "-map", "0:v", "-map", "1:a", "-map", "2:a",
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "libvorbis", "-metadata:s:a:0", "language=eng",
           "-metadata:s:a:1", "language=deu", str(two))
    video_dir = new_video_dir(tmp_path, two, name="two tracks.mkv")
    code = extract_audio.main(["--video-dir", str(video_dir)])
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert code == 0, result
    details = result["details"]
    assert details["audio_streams"] == 2 and details["audio_stream_used"] == 0
    assert details["probe"]["audio_stream_index"] == 1 and details["probe"]["audio_language"] == "eng"
    assert "has 2 audio streams; using the first (stream #1, vorbis, language eng)" in captured.err
    with wave.open(str(video_dir / "audio.wav")) as wav:
        samples = array.array("h", wav.readframes(wav.getnframes()))
    assert max(abs(s) for s in samples) > 1000  # the tone, not the silent second track
