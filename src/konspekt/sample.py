"""Make a spoken sample lecture (espeak-ng + ffmpeg) for the demo, the tests and the benchmarks.

    python -m konspekt.sample OUT.mp4 [--minutes 10] [--voice en-us]

The script is known, so a transcript of the result can be scored (:func:`word_error_rate`, from
:mod:`konspekt.wer`: jiwer and Whisper's normaliser, the ``test`` extra).
:func:`speak_dataset` makes a small training dataset the same way (``make demo-train``, the tests).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from konspekt.wer import normalise_words, word_error_rate  # noqa: F401  (scored the one way: konspekt.wer)

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


def speak(text: str, out: Path, *, voice: str = "en-us", speed: int = 150, video: bool = True,
          sample_rate: int | None = None) -> Path:
    """Speak ``text`` into ``out`` (mp4 with a still picture when ``video``, else by extension).

    ``sample_rate``: resample the (mono) speech to it; None keeps espeak-ng's 22.05 kHz.
    """
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
        if sample_rate:
            cmd += ["-ar", str(sample_rate), "-ac", "1"]
        subprocess.run([*cmd, str(out)], check=True, capture_output=True)
    return out


# `make demo-train`'s dataset: lecture jargon that a stock Whisper tends to get wrong, a few
# seconds a clip, each sentence in every voice (so the validation clips are known sentences
# in a voice the model did not train on for them).
JARGON = [
    "Gradient descent follows the negative gradient downhill.",
    "Every eigenvalue comes with its own eigenvector.",
    "Backpropagation computes the gradients layer by layer.",
    "Stochastic gradient descent samples a mini batch.",
    "The Fourier transform maps time to frequency.",
    "The Hessian is the matrix of second derivatives.",
    "Softmax turns the logits into probabilities.",
    "A Lagrange multiplier enforces the constraint.",
]
# (espeak-ng voice, words per minute): American, British and Scottish English and a female
# variant, at several speeds
VOICES = [("en-us", 150), ("en-gb", 170), ("en-us+f3", 135), ("en-gb-scotland", 160)]
METADATA = "metadata.csv"


class ForeignDataset(FileExistsError):
    """The dataset folder exists and was not made by :func:`speak_dataset`: it is left alone."""


def _clip_names(phrases: Sequence[str], voices: Sequence[tuple[str, int]], video_every: int) -> list[str]:
    repeated = {v for v, _ in voices if sum(1 for w, _ in voices if w == v) > 1}
    names: list[str] = []
    for i in range(len(phrases)):
        for voice, speed in voices:
            stem = f"{i:02d}-{re.sub(r'[^A-Za-z0-9-]+', '_', voice)}" + (f"-{speed}" if voice in repeated else "")
            n = len(names)
            names.append(f"clips/{stem}.{'mp4' if video_every and n % video_every == video_every - 1 else 'wav'}")
    return names


def speak_dataset(folder: Path, phrases: Sequence[str] = JARGON, voices: Sequence[tuple[str, int]] = VOICES, *,
                  video_every: int = 0, sample_rate: int = 16_000, marker: str | None = None) -> Path:
    """A training dataset in the audiofolder layout: ``<folder>/clips/NN-<voice>.wav`` (every
    phrase in every voice; every ``video_every``-th clip an mp4 with a picture) and ``metadata.csv``
    (``file_name,text``). Returns ``folder``.

    ``marker``: the name of a file recording that this function made the folder. With one, a
    folder that exists and holds anything without that marker belongs to someone else: nothing is
    touched and :class:`ForeignDataset` is raised. A marked folder is kept as it is when it
    already holds the same phrases and voices, else its clips and metadata are made anew.
    """
    folder = Path(folder)
    names = _clip_names(phrases, voices, video_every)
    recipe = {"made_by": "konspekt.sample.speak_dataset", "phrases": list(phrases),
              "voices": [list(v) for v in voices], "video_every": video_every, "sample_rate": sample_rate}
    if marker:
        mark = folder / marker
        if folder.exists() and not mark.is_file() and (not folder.is_dir() or any(folder.iterdir())):
            raise ForeignDataset(f"{folder} already exists and was not made by konspekt's spoken-dataset builder "
                                 f"(no {marker} in it): it is left as it is")
        try:
            same = json.loads(mark.read_text(encoding="utf-8")) == recipe
        except (OSError, ValueError):
            same = False
        if same and (folder / METADATA).is_file() and all((folder / n).is_file() for n in names):
            return folder
        (folder / METADATA).unlink(missing_ok=True)
        shutil.rmtree(folder / "clips", ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    if marker:
        (folder / marker).write_text(json.dumps(recipe, indent=1) + "\n", encoding="utf-8")  # claimed before the clips
    said = [(text, voice, speed) for text in phrases for voice, speed in voices]  # the order of ``names``

    def make(i: int) -> Path:
        text, voice, speed = said[i]
        return speak(text, folder / names[i], voice=voice, speed=speed, video=names[i].endswith(".mp4"),
                     sample_rate=sample_rate)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(make, range(len(names))))
    with (folder / METADATA).open("w", encoding="utf-8", newline="") as f:  # last: a complete dataset
        writer = csv.DictWriter(f, ["file_name", "text"])
        writer.writeheader()
        writer.writerows({"file_name": name, "text": text} for name, (text, _, _) in zip(names, said))
    return folder


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
