"""extract_audio: the claimed video (or audio file) -> ``audio.wav``, 16 kHz mono PCM.

ffprobe looks first, so a file that is not media, or a video without sound, is
rejected with a reason a person understands instead of an ffmpeg stack of errors.
Only the first audio stream is decoded (``-map 0:a:0``); a file with several says so
in the result (``audio_streams``, ``audio_stream_used``).

What a file that comes from anyone is checked for: :mod:`konspekt.media`.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from konspekt.contracts import log
from konspekt.layout import VideoDir
from konspekt.media import MAX_DURATION, SAMPLE_RATE, check_length, extract, probe
from konspekt.stage import main_for


def run(video: VideoDir, args: argparse.Namespace):
    source = video.source
    info = probe(source)
    if not info.duration_estimated:  # a guess may be far too long; extract's cap holds the rest
        check_length(source.name, info.duration, args.max_duration)
    if info.audio_streams > 1:
        log(f"{source.name} has {info.audio_streams} audio streams; using the first "
            f"(stream #{info.audio_stream_index}, {info.audio_codec}, language {info.audio_language or 'not set'})")
    duration = extract(source, video.audio, info, args.sample_rate, args.max_duration)
    log(f"extracted {duration:.1f} s of audio from {source.name}")
    return [video.audio], {"duration": round(duration, 3), "probe": asdict(info),
                           "audio_streams": info.audio_streams, "audio_stream_used": 0}


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sample-rate", type=int, default=SAMPLE_RATE)
    parser.add_argument("--max-duration", type=float, default=MAX_DURATION, metavar="SECONDS",
                        help="the longest lecture taken (0: no limit)")


main = main_for("extract_audio", __doc__.splitlines()[0], _configure, run,
                reads=lambda video: [video.source])

if __name__ == "__main__":
    raise SystemExit(main())
