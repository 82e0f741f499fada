"""What every training step shares about Whisper: processor, features, batches, decoding.

**One feature convention, the one inference uses.** faster-whisper (the transcribe stage)
computes the log-mel of the audio it has, then pads the *mel* with zeros to 3000 frames;
transformers' default pads the *audio* with silence to 30 s first. A model trained on one and
served on the other loses a lot (shared/README.md measured WER 0.0 vs 0.34), so training
computes features exactly as faster-whisper does (:func:`log_mel`, tested against it) and
pads them with zeros at batch time (:func:`collate`).
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from konspekt.packaged import MULTILINGUAL_VOCAB  # .en vocabularies are smaller: Whisper's own test

N_FRAMES = 3000  # Whisper's 30 s window, in 10 ms mel frames


@dataclass
class Processor:
    tokenizer: Any  # WhisperTokenizerFast, prefix tokens set for this dataset
    feature_extractor: Any  # WhisperFeatureExtractor
    multilingual: bool
    language: str | None
    vocab_size: int = 0  # the model's output rows (config.vocab_size); 0: unknown

    @property
    def prefix(self) -> list[int]:
        """The decoder prompt faster-whisper uses: sot [lang transcribe] notimestamps."""
        return list(self.tokenizer.prefix_tokens)

    @property
    def eot(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def has_timestamps(self) -> bool:
        """Whether the model can write ``<|0.00|>``...: without them faster-whisper needs without_timestamps.

        By the model's rows, not the tokenizer: OpenAI's ``tokenizer.json`` (the one faster-whisper
        models ship) stops at ``<|notimestamps|>``, and the 1501 timestamp tokens follow it in the
        model's vocabulary only (CTranslate2's converter and faster-whisper count them by id)."""
        vocab = self.tokenizer.get_vocab()
        if "<|0.00|>" in vocab:
            return True
        return self.vocab_size > vocab.get("<|notimestamps|>", self.vocab_size) + 1

    def labels(self, text: str) -> list[int]:
        """Decoder targets: the prompt without sot, the text (with Whisper's leading space), eot."""
        return self.tokenizer(" " + text.strip()).input_ids[1:]

    def save(self, path: Path) -> None:
        self.tokenizer.save_pretrained(path)
        # transformers v5's processor would write processor_config.json; faster-whisper reads this file
        self.feature_extractor.save_pretrained(path)


def load_processor(model_dir: str, language: str | None = "en") -> Processor:
    # v5 exports WhisperTokenizerFast lazily (an alias of WhisperTokenizer); its stubs omit it
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperTokenizerFast  # type: ignore[attr-defined]

    vocab_size = WhisperConfig.from_pretrained(model_dir).vocab_size
    multilingual = vocab_size >= MULTILINGUAL_VOCAB
    tokenizer = WhisperTokenizerFast.from_pretrained(model_dir)
    language = language if multilingual and language not in (None, "", "auto") else None
    tokenizer.set_prefix_tokens(language=language, task="transcribe" if multilingual else None,
                                predict_timestamps=False)
    return Processor(tokenizer, WhisperFeatureExtractor.from_pretrained(model_dir), multilingual, language, vocab_size)


def read_wav(path: Path) -> np.ndarray:
    """A 16 kHz mono 16-bit WAV (as read_data writes them) as float32 in [-1, 1]."""
    with wave.open(str(path), "rb") as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def log_mel(feature_extractor, audio: np.ndarray) -> np.ndarray:
    """[n_mels, frames] for up to 30 s of audio, as faster-whisper computes it (160 samples of
    padding, the last frame dropped), not padded to 30 s."""
    padded = np.pad(audio.astype(np.float32), (0, 160))
    mel = feature_extractor(padded, sampling_rate=feature_extractor.sampling_rate, padding="longest",
                            truncation=False, return_tensors="np").input_features[0]
    return mel[:, :-1][:, :N_FRAMES]


def collate(features: list, labels: list[list[int]]):
    """A training batch: mel padded with zeros to 3000 frames (faster-whisper's pad_or_trim), labels with -100."""
    import torch

    x = torch.zeros(len(features), features[0].shape[0], N_FRAMES)
    for i, f in enumerate(features):
        x[i, :, : f.shape[-1]] = torch.as_tensor(f[:, :N_FRAMES], dtype=torch.float32)
    y = torch.full((len(labels), max(map(len, labels))), -100, dtype=torch.long)
    for i, ids in enumerate(labels):
        y[i, : len(ids)] = torch.tensor(ids)
    return x, y


def load_model(model_dir: str, device: str):
    from transformers import WhisperForConditionalGeneration

    # .to is functools.wraps(torch.nn.Module.to): typeshed's _Wrapped takes the first argument for self
    return WhisperForConditionalGeneration.from_pretrained(model_dir).to(device)  # type: ignore[arg-type]


def greedy_decode(model, features, prefix: list[int], eot: int, max_new_tokens: int = 128,
                  encoded=None) -> list[list[int]]:
    """Greedy decoding from faster-whisper's prompt; the text tokens of each item, eot excluded.
    ``encoded``: the encoder's output for ``features``, when the caller has it already.

    Plain greedy with the KV cache instead of ``generate()``, whose Whisper-specific options
    (language, timestamps, forced ids) vary between base models and transformers versions.
    """
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    with torch.no_grad():
        if encoded is None:
            encoded = BaseModelOutput(last_hidden_state=model.model.encoder(features).last_hidden_state)
        tokens = torch.tensor([prefix] * features.shape[0], device=features.device)
        done = torch.zeros(features.shape[0], dtype=torch.bool, device=features.device)
        out, step_input, past = [], tokens, None
        for _ in range(max_new_tokens):
            result = model(encoder_outputs=encoded, decoder_input_ids=step_input, past_key_values=past,
                           use_cache=True)
            past = result.past_key_values
            step_input = result.logits[:, -1].argmax(-1, keepdim=True)
            out.append(torch.where(done[:, None], eot, step_input))
            done |= step_input[:, 0] == eot
            if done.all():
                break
    generated = torch.cat(out, dim=1).tolist()
    return [ids[: ids.index(eot)] if eot in ids else ids for ids in generated]
