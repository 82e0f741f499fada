"""Make a spoken sample lecture (espeak-ng + ffmpeg) for the demo, the tests and the benchmarks.

    python -m konspekt.sample OUT.mp4 [--minutes 10] [--voice en-us]

The script is known, so a transcript of the result can be scored (see :func:`word_error_rate`).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

SCRIPT = (
    "Welcome to this lecture on the water cycle. "
    "Water evaporates from the oceans when the sun heats the surface. "
    "The warm vapour rises into the atmosphere and cools down. "
    "As it cools, the vapour condenses into tiny droplets that form clouds. "
    "When the droplets grow heavy, they fall back to the ground as rain or snow. "
    "Rivers carry the water back to the sea, and the cycle begins again. "
    "Plants also return water to the air through their leaves. "
    "In the next lecture we will measure how fast this happens in a forest."
)

# Extra paragraphs so long lectures do not repeat one sentence block verbatim.
TOPICS = [
    "Photosynthesis turns light into chemical energy inside green leaves. "
    "Chlorophyll absorbs red and blue light and reflects green light. "
    "The plant stores the energy as sugar and releases oxygen into the air.",
    "The heart pumps blood through two separate circuits in the body. "
    "One circuit carries blood to the lungs to collect oxygen. "
    "The other circuit delivers that oxygen to every muscle and organ.",
    "Volcanoes form where molten rock rises through cracks in the crust. "
    "Some eruptions are gentle rivers of lava, others are violent explosions. "
    "Volcanic ash can make the soil very fertile for farming.",
    "Sound travels as a wave of pressure through the air. "
    "Its speed depends on the temperature of the medium. "
    "High pitched sounds have short wavelengths and low pitched sounds have long ones.",
]


def lecture_text(minutes: float | None = None, words_per_minute: int = 150) -> str:
    """The default script, or enough varied paragraphs to fill ``minutes`` of speech."""
    if not minutes:
        return SCRIPT
    parts, words, i = [SCRIPT], len(SCRIPT.split()), 0
    while words < minutes * words_per_minute:
        parts.append(TOPICS[i % len(TOPICS)])
        words += len(TOPICS[i % len(TOPICS)].split())
        i += 1
    return " ".join(parts)


def speak(text: str, out: Path, *, voice: str = "en-us", speed: int = 150, video: bool = True) -> Path:
    """Speak ``text`` into ``out`` (mp4 with a still picture when ``video``, else by extension)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        script, wav = Path(tmp) / "script.txt", Path(tmp) / "speech.wav"
        script.write_text(text, encoding="utf-8")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-f", str(script), "-w", str(wav)],
                       check=True, capture_output=True)
        cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
        if video:
            cmd += ["-f", "lavfi", "-i", "color=c=navy:s=320x240:r=5", "-i", str(wav), "-shortest",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"]
        else:
            cmd += ["-i", str(wav)]
        subprocess.run([*cmd, str(out)], check=True, capture_output=True)
    return out


def normalise_words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over words, divided by the reference length."""
    ref, hyp = normalise_words(reference), normalise_words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / max(len(ref), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="konspekt.sample", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--minutes", type=float, default=None, help="approximate length; default: a short script")
    parser.add_argument("--voice", default="en-us")
    args = parser.parse_args(argv)
    path = speak(lecture_text(args.minutes), args.out, voice=args.voice, video=args.out.suffix != ".wav")
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
