"""Batched WER against the sequential peer, by chunk length (issue 18 item 5): `python bench/chunks.py`.

Speaks lectures in several espeak-ng voices into mp4s, as bench/run.py does, and decodes their audio
(16 kHz WAVs cached in bench/.media/chunks/); then decodes each one,
with the model loaded once and the decoders alternated so a busy machine hits all alike:
  * konspekt's batched transcription (``konspekt.asr.faster_whisper.transcribe``) with VAD chunks of
    at most ``--chunks`` seconds (30 is faster-whisper's default: the chunk fills Whisper's whole window);
  * the peer: plain sequential ``WhisperModel.transcribe(beam_size=5)`` (previous text as context,
    no word timestamps).
Prints a Markdown table of WER and seconds per decoder and lecture, and the means; ``--json`` saves them.
Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from konspekt import packaged
from konspekt.asr import faster_whisper as fw
from konspekt.asr.audio import load_audio
from konspekt.asr.backend import Options
from konspekt.sample import lecture_text, speak, word_error_rate

MEDIA = Path(__file__).resolve().parent / ".media" / "chunks"
# The four voices of the diagnosis (2026-12-02) and four it never saw.
VOICES = [("en-us", 150), ("en-gb", 170), ("en-us+f3", 135), ("en-gb-scotland", 160),
          ("en-us+m3", 150), ("en-gb+f2", 160), ("en-gb-x-rp", 155), ("en-029", 145)]


def lecture(voice: str, speed: int, minutes: float) -> tuple[Path, str]:
    """The lecture as a user's video carries it (AAC in an mp4), decoded to 16 kHz mono as extract_audio does."""
    text = lecture_text(minutes)
    wav = MEDIA / f"{voice}-{speed}-{minutes:g}min.wav"
    if not wav.exists():
        mp4 = speak(text, wav.with_suffix(".mp4"), voice=voice, speed=speed)
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(mp4), "-vn", "-ac", "1",
                        "-ar", "16000", str(wav.with_suffix(".tmp.wav"))], check=True)
        wav.with_suffix(".tmp.wav").rename(wav)
        mp4.unlink()
    return wav, text


def batched(model, wav: Path, chunk: int, threads: int) -> str:
    fw.MAX_WINDOW = chunk  # read by transcribe() at each call
    opts = Options(model="tiny.en", language="en", threads=threads)
    return " ".join(s.text for s in fw.transcribe(wav, opts, model=model).segments)


def peer(model, wav: Path) -> str:
    segments, _ = model.transcribe(load_audio(wav), beam_size=5, language="en")
    return " ".join(s.text for s in segments)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5)
    p.add_argument("--chunks", default="30,29", help="chunk lengths to compare, seconds")
    p.add_argument("--voices", type=int, default=len(VOICES), help="how many of the voices")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    from faster_whisper import WhisperModel

    model = WhisperModel(str(packaged.tiny_en()), device="cpu", compute_type="int8", cpu_threads=args.threads)
    decoders = [f"batched {c} s" for c in args.chunks.split(",")] + ["peer"]
    rows: list[dict] = []
    for i, (voice, speed) in enumerate(VOICES[:args.voices]):
        wav, text = lecture(voice, speed, args.minutes)
        row = {"lecture": f"{voice} {speed} wpm, {args.minutes:g} min"}
        for name in decoders if i % 2 == 0 else decoders[::-1]:
            t0 = time.perf_counter()
            said = peer(model, wav) if name == "peer" else batched(model, wav, int(name.split()[1]), args.threads)
            row[name] = {"wer": round(word_error_rate(text, said), 4), "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False), file=sys.stderr, flush=True)
    print("| lecture | " + " | ".join(decoders) + " |")
    print("|---|" + "---:|" * len(decoders))
    for row in rows:
        print(f"| {row['lecture']} | " + " | ".join(f"{row[d]['wer']:.4f} ({row[d]['seconds']:.0f} s)"
                                                    for d in decoders) + " |")
    means = {d: statistics.mean(r[d]["wer"] for r in rows) for d in decoders}
    print("| **mean** | " + " | ".join(f"**{means[d]:.4f}**" for d in decoders) + " |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "mean_wer": means}, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
