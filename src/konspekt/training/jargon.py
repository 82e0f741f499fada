"""A spoken domain dataset: lecture jargon and names that a stock Whisper gets wrong, in espeak-ng voices.

    python -m konspekt.training.jargon OUT_DIR [--size full|demo|small]

One ``metadata.csv`` with a ``split`` column (see :mod:`konspekt.training.read_data`):

* ``train``: every sentence in the training voices;
* ``validation``: the same sentences in *other* voices, never trained on: whether what was
  learned (the words) carries over to speakers the model has not heard say them;
* ``control``: plain sentences (no jargon) that are never trained on: what the fine-tune costs
  on general speech.

The sentences were picked by ear of the packaged ``base`` (faster-whisper, greedy): on these
voices it writes "the hash of the loss" for "the Hessian of the loss", "a co-backabler
divergence" for "the Kullback Leibler divergence"; its WER on them is 0.5 to 0.9 a voice, and
about 0.25 on the control sentences. Measured (transformers, greedy): a decoder-only fine-tune of
40 steps (batch 8, lr 5e-5) on the full set takes the held-out voices from 0.85 to 0.00 and the
control set from 0.236 to 0.230; 15 steps on ``SMALL``: 0.86 to 0.02, control 0.26 unchanged.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

# No apostrophes or digits: the WER's word split would make "Dijkstra's" and "Dijkstras" differ.
JARGON = [
    "Professor Nakamura derived the Hessian of the loss.",
    "The Kullback Leibler divergence is never negative.",
    "We apply the Cauchy Schwarz inequality here.",
    "The Laplacian is the divergence of the gradient.",
    "Doctor Okonkwo proved the lemma with a Chebyshev bound.",
    "The Jacobian of the softmax is a dense matrix.",
    "Backpropagation computes the gradients layer by layer.",
    "Every eigenvalue comes with its own eigenvector.",
    "Stochastic gradient descent samples a mini batch.",
    "Professor Szegedy showed adversarial examples.",
    "The Wasserstein distance compares two distributions.",
    "The Runge Kutta scheme integrates the equation.",
    "Softmax turns the logits into probabilities.",
    "Doctor Przybylski tuned the learning rate.",
    "A Lagrange multiplier enforces the constraint.",
    "The Nyquist frequency is half the sampling rate.",
]
GENERAL = [
    "Water evaporates from the oceans when the sun heats the surface.",
    "The warm vapour rises into the atmosphere and cools down.",
    "Rivers carry the water back to the sea, and the cycle begins again.",
    "Plants also return water to the air through their leaves.",
    "The heart pumps blood through two separate circuits in the body.",
    "Volcanic ash can make the soil very fertile for farming.",
    "Sound travels as a wave of pressure through the air.",
    "In the next lecture we will measure how fast this happens in a forest.",
]
# (espeak-ng voice, words per minute). Held out: a Caribbean, a New York female and an RP
# variant voice, none of them (nor their speed) among the training voices.
TRAIN_VOICES = [("en-us", 150), ("en-gb", 170), ("en-us+f3", 135), ("en-gb-scotland", 160), ("en-gb-x-gbcwmd", 150)]
HELD_OUT_VOICES = [("en-029", 150), ("en-us-nyc+f2", 165), ("en-gb-x-rp+m3", 155)]
CONTROL_VOICES = [("en-us", 150), ("en-gb-x-rp+m3", 155)]
MARKER = ".konspekt-jargon.json"


@dataclass
class Recipe:
    jargon: list[str] = field(default_factory=lambda: list(JARGON))
    train_voices: list[tuple[str, int]] = field(default_factory=lambda: list(TRAIN_VOICES))
    held_out_voices: list[tuple[str, int]] = field(default_factory=lambda: list(HELD_OUT_VOICES))
    general: list[str] = field(default_factory=lambda: list(GENERAL))
    control_voices: list[tuple[str, int]] = field(default_factory=lambda: list(CONTROL_VOICES))

    def parts(self) -> list[tuple[str, Sequence[str], Sequence[tuple[str, int]]]]:
        """(split, sentences, voices): each split is spoken into its own subfolder."""
        return [("train", self.jargon, self.train_voices), ("validation", self.jargon, self.held_out_voices),
                ("control", self.general, self.control_voices)]


# `make demo-train`: every sentence, fewer voices (48 training clips: a few minutes on a laptop CPU)
DEMO = Recipe(JARGON, TRAIN_VOICES[:3], HELD_OUT_VOICES[:2], GENERAL, CONTROL_VOICES[:1])
# the test suite's short version
SMALL = Recipe(JARGON[:8], TRAIN_VOICES[:3], HELD_OUT_VOICES[:2], GENERAL[:6], CONTROL_VOICES[:1])


def build(folder: Path, recipe: Recipe | None = None, *, marker: str = MARKER) -> Path:
    """``folder/{train,validation,control}/clips/*.wav`` and ``folder/metadata.csv`` (file_name, text, split).

    As :func:`konspekt.sample.speak_dataset`: a folder that exists, holds anything and lacks
    ``marker`` is someone's own and raises :class:`konspekt.sample.ForeignDataset`; a marked one
    with the same recipe is kept as it is (the clips are not spoken again)."""
    from konspekt.sample import ForeignDataset, speak_dataset

    recipe = recipe or Recipe()
    folder = Path(folder)
    mark = folder / marker
    if folder.exists() and not mark.is_file() and (not folder.is_dir() or any(folder.iterdir())):
        raise ForeignDataset(f"{folder} already exists and was not made by konspekt's jargon dataset builder "
                             f"(no {marker} in it): it is left as it is")
    wanted = {"made_by": "konspekt.training.jargon", **asdict(recipe)}
    wanted = json.loads(json.dumps(wanted))  # tuples as lists, as they come back from the file
    try:
        same = json.loads(mark.read_text(encoding="utf-8")) == wanted
    except (OSError, ValueError):
        same = False
    if same and (folder / "metadata.csv").is_file():
        return folder
    (folder / "metadata.csv").unlink(missing_ok=True)
    shutil.rmtree(folder / "clips", ignore_errors=True)  # the flat layout of an older demo dataset
    folder.mkdir(parents=True, exist_ok=True)
    mark.write_text(json.dumps(wanted, indent=1) + "\n", encoding="utf-8")  # claimed before the clips
    rows = []
    for split, sentences, voices in recipe.parts():
        part = folder / split
        shutil.rmtree(part, ignore_errors=True)
        speak_dataset(part, sentences, voices)
        with (part / "metadata.csv").open(encoding="utf-8", newline="") as f:
            rows += [{"file_name": f"{split}/{r['file_name']}", "text": r["text"], "split": split}
                     for r in csv.DictReader(f)]
        (part / "metadata.csv").unlink()  # one metadata.csv, at the top: the audiofolder layout
    with (folder / "metadata.csv").open("w", encoding="utf-8", newline="") as f:  # last: a complete dataset
        writer = csv.DictWriter(f, ["file_name", "text", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="konspekt.training.jargon", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", choices=["full", "demo", "small"], default="full",
                        help="full: 16 sentences in 5 training + 3 held-out voices, 16 control clips; demo: 3 + 2 "
                             "voices, 8 control clips; small (the tests): 8 sentences, 3 + 2 voices, 6 control clips")
    args = parser.parse_args(argv)
    print(build(args.out, {"full": Recipe(), "demo": DEMO, "small": SMALL}[args.size]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
