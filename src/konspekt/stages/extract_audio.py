"""extract_audio: the claimed video (or audio file) -> ``audio.wav``, 16 kHz mono PCM.

ffprobe looks first, so a file that is not media, or a video without sound, is
rejected with a reason a person understands instead of an ffmpeg stack of errors.
Only the first audio stream is decoded (``-map 0:a:0``); a file with several says so
in the result (``audio_streams``, ``audio_stream_used``). A file whose index promises
more audio than can be decoded was cut off, and is rejected rather than half-processed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

from konspekt.layout import VideoDir, atomic_path
from konspekt.stage import BadInput, log, main_for

SAMPLE_RATE = 16_000
# Containers whose stream durations come from an index written at the end of recording, not
# from an estimate: when less audio decodes than the index promises, the copy was cut off.
INDEXED_FORMATS = {"mov", "mp4", "m4a"}
TRUNCATION_TOLERANCE = 1.0  # seconds missing before a file counts as cut off (at least 5 %)
# ffmpeg's words for common failures, and what they mean for the person who dropped the file
PLAIN_REASONS = {
    "moov atom not found": "it is incomplete (the copy was cut off, or the recording was never finished)",
    "end of file": "it ends before its data does (the copy was cut off)",
    "invalid data found when processing input": "its contents are not in any video or audio format",
}
NOT_MEDIA = PLAIN_REASONS["invalid data found when processing input"]
TEXT = "it holds text, not video or audio"
# The boxes an mp4/mov file starts with: a file named .mp4 that starts otherwise is not a cut-off mp4
MP4_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"}


@dataclass
class Probe:
    duration: float | None
    format_name: str
    audio_streams: int
    video_streams: int
    audio_codec: str
    audio_stream_index: int = 0  # ffprobe's index of the first audio stream among all streams
    audio_language: str | None = None
    audio_duration: float | None = None  # the first audio stream's own length, where an index gives it


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
        raise BadInput(f"{path.name} is not a readable video or audio file: {plain_reason(proc.stderr, path)}")
    info = json.loads(proc.stdout or "{}")
    streams = info.get("streams", [])
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    video = [s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")]
    if not audio:
        raise BadInput(f"{path.name} has no audio track, so there is no speech to transcribe")
    fmt = info.get("format", {})
    first = audio[0]
    duration = _float(fmt.get("duration")) or _float(first.get("duration"))
    indexed = bool(INDEXED_FORMATS & set(fmt.get("format_name", "").split(",")))
    return Probe(duration, fmt.get("format_name", "?"), len(audio), len(video), first.get("codec_name", "?"),
                 audio_stream_index=int(first.get("index", 0)), audio_language=_language(first),
                 audio_duration=_float(first.get("duration")) if indexed else None)


def plain_reason(stderr: str, path: Path) -> str:
    """What ffprobe's error means, in words, with its own message (minus our folder names) after it."""
    lines = [line.strip().replace(str(path), path.name) for line in (stderr or "").splitlines() if line.strip()]
    detail = "; ".join(dict.fromkeys(re.sub(r"^\[[^]]*\]\s*", "", line) for line in lines))  # minus "[mov @ 0x..]"
    meaning = next((text for key, text in PLAIN_REASONS.items() if key in detail.lower()), "ffprobe could not read it")
    head = _head(path)
    if _is_text(head):  # ffprobe trusts the .mp4 name and reports a missing index
        meaning = TEXT
    elif meaning == PLAIN_REASONS["moov atom not found"] and head[4:8] not in MP4_FIRST_BOXES:
        meaning = NOT_MEDIA
    return f"{meaning} (ffprobe: {detail})" if detail else meaning


def _head(path: Path, size: int = 4096) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(size)


def _is_text(head: bytes) -> bool:
    if not head or b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # only a character cut at the end of the sample
    return True


def check_complete(name: str, expected: float | None, decoded: float) -> None:
    """Reject a file that decodes to clearly less audio than its own index says it holds."""
    if expected and expected - decoded > max(TRUNCATION_TOLERANCE, 0.05 * expected):
        raise BadInput(f"{name} is incomplete: it should hold {expected:.1f} s of audio, but only {decoded:.1f} s "
                       "could be decoded (the copy was probably cut off)")


def extract(source: Path, target: Path, sample_rate: int = SAMPLE_RATE, expected: float | None = None) -> float:
    """Decode the first audio stream of ``source`` into a mono WAV; return its duration in seconds.

    ``expected``: the stream's length by the file's index; a file that falls clearly short is rejected.
    """
    with atomic_path(target) as tmp:
        proc = subprocess.run(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
             "-i", str(source), "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sample_rate),
             "-c:a", "pcm_s16le", "-f", "wav", str(tmp)],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            reason = _last_line(proc.stderr).replace(str(source), source.name).replace(str(tmp), target.name)
            raise BadInput(f"{source.name} could not be decoded ({reason or 'ffmpeg failed'})")
        duration = wav_duration(tmp)
        if duration <= 0:
            raise BadInput(f"{source.name} decodes to no audio at all (the file may be truncated)")
        check_complete(source.name, expected, duration)  # before the rename: no half lecture goes on
    return duration


def wav_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / float(wav.getframerate())


def run(video: VideoDir, args: argparse.Namespace):
    source = video.source
    info = probe(source)
    if info.audio_streams > 1:
        log(f"{source.name} has {info.audio_streams} audio streams; using the first "
            f"(stream #{info.audio_stream_index}, {info.audio_codec}, language {info.audio_language or 'not set'})")
    duration = extract(source, video.audio, args.sample_rate, expected=info.audio_duration)
    log(f"extracted {duration:.1f} s of audio from {source.name}")
    return [video.audio], {"duration": round(duration, 3), "probe": asdict(info),
                           "audio_streams": info.audio_streams, "audio_stream_used": 0}


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sample-rate", type=int, default=SAMPLE_RATE)


def _language(stream: dict) -> str | None:
    language = stream.get("tags", {}).get("language")
    return None if language in (None, "", "und") else language  # "und": undetermined


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
