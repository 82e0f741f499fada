"""ffprobe and ffmpeg on a file that comes from anyone: what it holds, and its first audio stream as a WAV.

The extract_audio stage and the training data step both decode with it, so a training clip is
checked like a lecture. The file comes from anyone, so:

* Only recordings are opened. ffprobe and ffmpeg read local files only, with the demuxers of
  :data:`ALLOWED_FORMATS`; a playlist or join list named ``lecture.mp4`` (HLS, ffconcat, ...) would
  make them read other files, or wait for a "live" playlist for ever, and is refused instead.
  ffmpeg is told the demuxer ffprobe found, so it cannot pick another.
* ffprobe and ffmpeg run under a time limit. One that is stuck, killed (out of memory) or failed
  because of this machine (a full disk) is a crash, which Airflow retries, not the file's fault.
* A lecture longer than ``--max-duration`` is refused, and decoding stops just past it whatever
  the header says.
* Holes in the audio's timeline (parts joined with ``-c copy``) become silence, so a second of the
  WAV is a second of the video. A copy cut off in the middle, whose audio ends clearly before the
  end its container declares, is rejected rather than half-processed.
"""

from __future__ import annotations

import json
import re
import signal
import struct
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

from konspekt.contracts import BadInput
from konspekt.layout import atomic_path

SAMPLE_RATE = 16_000
MAX_DURATION = 6 * 3600  # seconds; the DAG passes KONSPEKT_MAX_DURATION_HOURS
# Demuxers of recordings (ffmpeg's names). Left out on purpose: hls, dash, concat, image2, sdp, rtp,
# lavfi, tee, data, ...: they open other files, devices or the network, or wait for a stream to grow.
ALLOWED_FORMATS = ("mov", "matroska", "avi", "flv", "mpegts", "mpeg", "asf", "ogg", "wav", "w64", "mp3",
                   "flac", "aac", "aiff", "caf", "amr", "amrnb", "amrwb")
SAFE_INPUT = ["-protocol_whitelist", "file", "-format_whitelist", ",".join(ALLOWED_FORMATS)]
NOT_RECORDINGS = {  # what a refused demuxer's file is, in words
    "hls": "a playlist (HLS, m3u8) that points at other files",
    "concat": "a list of other files to join (ffconcat)",
    "dash": "a streaming manifest (DASH) that points at other files",
    "webm_dash_manifest": "a streaming manifest (DASH) that points at other files",
    "sdp": "a description of a network stream (SDP)",
    "image2": "a picture",
}
PROBE_TIMEOUT = 120  # seconds: ffprobe reads the headers and a few frames
MIN_DECODE_TIMEOUT = 300  # seconds: see decode_timeout
GAP_FILLER = "aresample=async=1:first_pts=0"  # holes in the timeline -> silence, from the file's start
TRUNCATION_TOLERANCE = 1.0  # seconds short of the declared end before a file counts as cut off (at least 2 %)
# Failures of the machine, not of the file: a retry (or an operator) can fix them
MACHINE_PROBLEMS = ("no space left on device", "disk quota exceeded", "cannot allocate memory",
                    "read-only file system", "permission denied", "input/output error", "too many open files")
# ffmpeg's words for common failures, and what they mean for the person who dropped the file
PLAIN_REASONS = {
    "moov atom not found": "it is incomplete (the copy was cut off, or the recording was never finished)",
    "end of file": "it ends before its data does (the copy was cut off)",
    "invalid data found when processing input": "its contents are not in any video or audio format",
}
NOT_MEDIA = PLAIN_REASONS["invalid data found when processing input"]
TEXT = "it holds text, not video or audio"
CUT_OFF = "the copy was cut off, or the recording was never finished"
# The boxes an mp4/mov file starts with: a file named .mp4 that starts otherwise is not a cut-off mp4
MP4_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"}
OGG_PAGE_MAX = 27 + 255 + 255 * 255  # header, segment table, data


@dataclass
class Probe:
    duration: float | None
    format_name: str
    audio_streams: int
    video_streams: int
    audio_codec: str
    audio_stream_index: int = 0  # ffprobe's index of the first audio stream among all streams
    audio_language: str | None = None
    # where the first audio stream ends, by the file's header or index (seconds from the file's start)
    audio_end: float | None = None
    duration_estimated: bool = False  # ffprobe guessed the length from the bitrate: no check trusts it

    @property
    def demuxer(self) -> str:
        return self.format_name.split(",")[0]


def probe(path: Path) -> Probe:
    """Describe a media file, or raise :class:`BadInput` if it is not one."""
    if not path.is_file():
        raise BadInput(f"input file is missing: {path.name}")
    if path.stat().st_size == 0:
        raise BadInput(f"{path.name} is empty (0 bytes)")
    proc = _run(["ffprobe", "-v", "level+warning", *SAFE_INPUT, "-print_format", "json", "-show_format",
                 "-show_streams", _arg(path)], PROBE_TIMEOUT, path)
    # each line is tagged with its level: warnings tell how the length was found, errors why it failed
    errors = re.sub(r"^.*\[warning\] .*\n?|\[(?:error|fatal|panic)\] ", "", proc.stderr, flags=re.MULTILINE)
    refused = re.search(r"\[([^\s@\]]+) @ [^]]*\] Format not on whitelist", errors)
    if refused:  # refused before the demuxer opened anything
        raise BadInput(not_a_recording(path, refused.group(1).split(",")[0]))
    if proc.returncode != 0:
        raise BadInput(f"{path.name} is not a readable video or audio file: {plain_reason(errors, path)}")
    info = json.loads(proc.stdout or "{}")
    fmt = info.get("format", {})
    format_name = fmt.get("format_name", "?")
    if not set(ALLOWED_FORMATS) & set(format_name.split(",")):  # -format_whitelist holds it; this says so
        raise BadInput(not_a_recording(path, format_name.split(",")[0]))
    streams = info.get("streams", [])
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    video = [s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")]
    if not audio:
        raise BadInput(f"{path.name} has no audio track, so there is no speech to transcribe")
    if "ogg" in format_name.split(",") and _ends_mid_ogg_page(path):
        raise BadInput(f"{path.name} is incomplete: it ends in the middle of a page of its data ({CUT_OFF})")
    first = audio[0]
    # a length from the bitrate is a guess, except for PCM, whose bitrate is the sample rate's
    estimated = "estimating duration from bitrate" in proc.stderr.lower() and not _pcm(first)
    end = _declared_end(path, format_name, fmt, first, len(streams), estimated)
    start = _float(fmt.get("start_time")) or 0.0  # ffmpeg counts from here
    return Probe(_float(fmt.get("duration")) or _float(first.get("duration")), format_name, len(audio), len(video),
                 first.get("codec_name", "?"), audio_stream_index=int(first.get("index", 0)),
                 audio_language=_language(first), audio_end=None if end is None else end - start,
                 duration_estimated=estimated)


def not_a_recording(path: Path, demuxer: str) -> str:
    what = NOT_RECORDINGS.get(demuxer) or ("a picture" if demuxer.endswith("_pipe") else None)
    if what:
        return f"{path.name} is {what}, not a video or audio file"
    meaning = TEXT if _is_text(_head(path)) else NOT_MEDIA
    return f"{path.name} is not a readable video or audio file: {meaning} (ffprobe took it for '{demuxer}' data)"


def plain_reason(stderr: str, path: Path) -> str:
    """What ffprobe's error means, in words, with its own message (minus our folder names) after it."""
    lines = [_clean(line.strip(), path) for line in (stderr or "").splitlines() if line.strip()]
    detail = "; ".join(dict.fromkeys(re.sub(r"^\[[^]]*\]\s*", "", line) for line in lines))  # minus "[mov @ 0x..]"
    meaning = next((text for key, text in PLAIN_REASONS.items() if key in detail.lower()), "ffprobe could not read it")
    head = _head(path)
    if _is_text(head):  # ffprobe trusts the .mp4 name and reports a missing index
        meaning = TEXT
    elif meaning == PLAIN_REASONS["moov atom not found"] and head[4:8] not in MP4_FIRST_BOXES:
        meaning = NOT_MEDIA
    return f"{meaning} (ffprobe: {detail})" if detail else meaning


def _declared_end(path: Path, format_name: str, fmt: dict, audio: dict, streams: int,
                  estimated: bool) -> float | None:
    """Where the first audio stream ends by the file's own header or index, on the file's clock.

    Containers that take the length from the data that is there (Ogg, MPEG-TS) give the end of what
    is there, so a cut copy passes this check; Ogg has its own (:func:`_ends_mid_ogg_page`).
    """
    if "wav" in format_name.split(","):  # ffprobe trims a WAV's length to the bytes there; the header does not
        return _wav_declared_seconds(path)
    if estimated:
        return None
    if (length := _float(audio.get("duration"))) is not None:  # mov: the track's index
        return (_float(audio.get("start_time")) or 0.0) + length
    tags = {key.upper(): value for key, value in audio.get("tags", {}).items()}
    if (end := _clock(tags.get("DURATION"))) is not None:  # Matroska: the muxer's tag, the track's end
        return end
    if streams == 1 and (length := _float(fmt.get("duration"))) is not None:  # the file's length is the audio's
        return (_float(fmt.get("start_time")) or 0.0) + length
    return None


def _wav_declared_seconds(path: Path) -> float | None:
    """The length a WAV's header gives its data (None: a RIFF written to a pipe, or not a plain RIFF)."""
    with open(path, "rb") as fh:
        if fh.read(12)[8:] != b"WAVE":
            return None
        byte_rate = None
        for _ in range(100):  # the chunks before the data: a few in any real file
            if len(chunk := fh.read(8)) < 8:
                return None
            kind, size = struct.unpack("<4sI", chunk)
            if kind == b"fmt " and size >= 12 and len(fmt := fh.read(12)) == 12:
                byte_rate, size = struct.unpack("<HHII", fmt)[3], size - 12  # format, channels, rate, bytes/s
            elif kind == b"data":  # 0 and 0xFFFFFFFF (and sox's 0x7FFFF000): sizes unknown when written
                return size / byte_rate if byte_rate and 0 < size < 0x7FFFF000 else None
            fh.seek(size + (size & 1), 1)
    return None


def _ends_mid_ogg_page(path: Path) -> bool:
    """Whether an Ogg file's last page runs past its end: each page states its length, so follow them.

    The chain starts at a capture pattern ("OggS") in the last two pages' worth of bytes; one that does
    not lead from page to page was audio data, and the next is tried (a few: a file of "OggS"s is no recording).
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(0, size - 2 * OGG_PAGE_MAX))
        tail = fh.read()
    start = tail.find(b"OggS")
    for _ in range(64):
        if start < 0:
            break
        pos, pages = start, 0
        while tail.startswith(b"OggS", pos) and pos + 27 <= len(tail):
            table = pos + 27 + tail[pos + 26]
            end = table + sum(tail[pos + 27:table])
            if end > len(tail):
                return pages > 0
            pos, pages = end, pages + 1
        if pages and pos == len(tail):
            return False
        if pages and b"OggS".startswith(tail[pos:pos + 4]):  # a page header cut short
            return True
        start = tail.find(b"OggS", start + 1)
    return False


def check_complete(name: str, expected: float | None, decoded: float) -> None:
    """Reject a file whose audio ends clearly before the end its own header or index declares."""
    if expected and expected - decoded > max(TRUNCATION_TOLERANCE, 0.02 * expected):
        raise BadInput(f"{name} is incomplete: it should hold {expected:.1f} s of audio, but only {decoded:.1f} s "
                       f"could be decoded ({CUT_OFF})")


def check_length(name: str, seconds: float | None, limit: float) -> None:
    if limit and seconds and seconds > limit:
        raise BadInput(f"{name} is {_length(seconds)} long; the limit is {_length(limit)} "
                       "(KONSPEKT_MAX_DURATION_HOURS)")


def decode_timeout(seconds: float) -> float:
    """ffmpeg decodes audio far faster than real time: 60 s + twice the length, at least MIN_DECODE_TIMEOUT."""
    return max(MIN_DECODE_TIMEOUT, 60 + 2 * seconds)


def extract(source: Path, target: Path, info: Probe, sample_rate: int = SAMPLE_RATE,
            max_duration: float = MAX_DURATION) -> float:
    """Decode the first audio stream of ``source`` (as ``info`` describes it) into a mono WAV; return its length.

    Decoding stops just past ``max_duration`` (0: no limit), so a file that holds more than its
    header says cannot fill the disk, nor a timestamp jump of hours turn into hours of silence.
    """
    cap = ["-t", f"{max_duration + 1:g}"] if max_duration else []
    known = [s for s in (None if info.duration_estimated else info.duration, max_duration) if s]
    with atomic_path(target) as tmp:
        proc = _run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *SAFE_INPUT,
                     "-f", info.demuxer, "-i", _arg(source), "-map", "0:a:0", "-vn", "-af", GAP_FILLER,
                     "-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_s16le", *cap, "-f", "wav", str(tmp)],
                    decode_timeout(min(known, default=MAX_DURATION)), source)
        if proc.returncode != 0:
            reason = _clean(_last_line(proc.stderr), source).replace(str(tmp), target.name)
            raise BadInput(f"{source.name} could not be decoded ({reason or 'ffmpeg failed'})")
        duration = wav_duration(tmp)
        if duration <= 0:
            raise BadInput(f"{source.name} decodes to no audio at all (the file may be truncated)")
        if max_duration and duration > max_duration:
            header = f"its header says {_length(info.duration)}" if info.duration else "its header gives no length"
            raise BadInput(f"{source.name} is longer than the limit of {_length(max_duration)} ({header}, "
                           "but it holds more audio than that)")
        check_complete(source.name, info.audio_end, duration)  # before the rename: no half lecture goes on
    return duration


def _run(argv: list[str], timeout: float, source: Path) -> subprocess.CompletedProcess:
    """Run ffprobe/ffmpeg. Stuck, killed, or failed because of this machine: a crash (retried), not bad input."""
    tool = argv[0]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout,
                              encoding="utf-8", errors="surrogateescape")  # file names need not be UTF-8
    except subprocess.TimeoutExpired:  # killed with SIGKILL: a stuck ffmpeg ignores SIGTERM
        raise RuntimeError(f"{tool} did not finish within {timeout:.0f} s on {source.name}; it was killed") from None
    if proc.returncode < 0:
        raise RuntimeError(f"{tool} was killed by {_signal_name(-proc.returncode)} while reading {source.name} "
                           "(out of memory, or stopped from outside)")
    lines = [line.strip() for line in proc.stderr.splitlines()] if proc.returncode else []
    problem = next((line for line in lines if any(p in line.lower() for p in MACHINE_PROBLEMS)), None)
    if problem:
        raise RuntimeError(f"{tool} failed because of this machine, not {source.name}: {problem}")
    return proc


def wav_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / float(wav.getframerate())


def _arg(path: Path) -> str:
    return str(path.absolute())  # starts with "/": never read as a protocol ("concat:", "http:")


def _clean(text: str, path: Path) -> str:
    """``text`` with our folder names taken out of ``path``: the user reads it."""
    return text.replace(_arg(path), path.name).replace(str(path), path.name)


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


def _language(stream: dict) -> str | None:
    language = stream.get("tags", {}).get("language")
    return None if language in (None, "", "und") else language  # "und": undetermined


def _length(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 else \
        f"{seconds:.1f} s"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _pcm(stream: dict) -> bool:
    return str(stream.get("codec_name", "")).startswith("pcm_")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _clock(value) -> float | None:
    """Seconds of an ``HH:MM:SS.fff`` tag."""
    hours, _, rest = str(value or "").partition(":")
    minutes, _, seconds = rest.partition(":")
    try:
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
