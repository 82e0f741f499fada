"""extract_audio: the claimed video (or audio file) -> ``audio.wav``, 16 kHz mono PCM.

ffprobe looks first, so a file that is not media, or a video without sound, is
rejected with a reason a person understands instead of an ffmpeg stack of errors.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

from konspekt.layout import VideoDir, atomic_path
from konspekt.stage import BadInput, log, main_for

SAMPLE_RATE = 16_000


@dataclass
class Probe:
    duration: float | None
    format_name: str
    audio_streams: int
    video_streams: int
    audio_codec: str


def probe(path: Path) -> Probe:
    """Describe a media file, or raise :class:`BadInput` if it is not one."""
    if not path.is_file():
        raise BadInput(f"input file is missing: {path.name}")
    if path.stat().st_size == 0:
        raise BadInput(f"{path.name} is empty (0 bytes)")
    proc = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        reason = _last_line(proc.stderr) or "ffprobe could not read it"
        raise BadInput(f"{path.name} is not a readable video or audio file ({reason})")
    info = json.loads(proc.stdout or "{}")
    streams = info.get("streams", [])
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    video = [s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")]
    if not audio:
        raise BadInput(f"{path.name} has no audio track, so there is no speech to transcribe")
    fmt = info.get("format", {})
    duration = _float(fmt.get("duration")) or _float(audio[0].get("duration"))
    return Probe(duration, fmt.get("format_name", "?"), len(audio), len(video), audio[0].get("codec_name", "?"))


def extract(source: Path, target: Path, sample_rate: int = SAMPLE_RATE) -> float:
    """Decode the first audio stream of ``source`` into a mono WAV; return its duration in seconds."""
    with atomic_path(target) as tmp:
        proc = subprocess.run(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
             "-i", str(source), "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sample_rate),
             "-c:a", "pcm_s16le", "-f", "wav", str(tmp)],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise BadInput(f"{source.name} could not be decoded ({_last_line(proc.stderr) or 'ffmpeg failed'})")
        duration = wav_duration(tmp)
        if duration <= 0:
            raise BadInput(f"{source.name} decodes to no audio at all (the file may be truncated)")
    return duration


def wav_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / float(wav.getframerate())


def run(video: VideoDir, args: argparse.Namespace):
    source = video.source
    info = probe(source)
    if info.audio_streams > 1:
        log(f"{source.name} has {info.audio_streams} audio streams; using the first")
    duration = extract(source, video.audio, args.sample_rate)
    log(f"extracted {duration:.1f} s of audio from {source.name}")
    return [video.audio], {"duration": round(duration, 3), "probe": asdict(info), "audio_stream": 0}


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sample-rate", type=int, default=SAMPLE_RATE)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


main = main_for("extract_audio", __doc__.splitlines()[0], _configure, run,
                reads=lambda video: [video.source], writes=["audio.wav"])

if __name__ == "__main__":
    raise SystemExit(main())
