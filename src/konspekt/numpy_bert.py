"""A sentence-transformers BERT encoder (all-MiniLM-L6-v2 and its kind) in numpy, without torch.

Importing torch and sentence-transformers takes 3–5 s of a stage that then embeds a few hundred
sentences in well under a second (issue 19: summarize and outline spent 8–9 s each on a 1-minute
lecture). This runs the same network on the model folder's ``model.safetensors`` and
``tokenizer.json`` with numpy and the ``tokenizers`` library: a BertModel, mean pooling over the
tokens, normalised, as the folder's ``modules.json`` declares. The embeddings match
sentence-transformers' to a cosine above 0.9999 (``tests/stages/test_summarize.py``).
:func:`supports` says whether a folder is such a model; others go through sentence-transformers.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POOLING = "sentence_transformers.models.Pooling"
SUPPORTED_MODULES = {"sentence_transformers.models.Transformer", POOLING, "sentence_transformers.models.Normalize"}


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def supports(folder: str | Path) -> bool:
    """A local sentence-transformers folder holding a BERT with mean pooling, in safetensors."""
    return _supports(str(folder))


@functools.lru_cache(maxsize=8)  # asked several times per stage (the backend is logged, recorded and keyed)
def _supports(folder: str) -> bool:
    root = Path(folder)
    try:
        modules = _read(root / "modules.json")
        config = _read(root / "config.json")
        pooling = next((m for m in modules if m.get("type") == POOLING), None)
        mean = pooling is not None and _read(root / pooling["path"] / "config.json").get("pooling_mode_mean_tokens")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return (config.get("model_type") == "bert" and config.get("hidden_act") == "gelu" and bool(mean)
            and {m.get("type") for m in modules} <= SUPPORTED_MODULES
            and (root / "model.safetensors").is_file() and (root / "tokenizer.json").is_file())


def _erf(x):
    """erf to 1.5e-7 (Abramowitz and Stegun 7.1.26): BERT's exact GELU without scipy."""
    import numpy as np

    sign, x = np.sign(x), np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def _layer_norm(x, weight, bias, eps: float):
    import numpy as np

    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


@dataclass
class Encoder:
    """One loaded model: call :meth:`encode` with the texts."""

    weights: dict[str, Any]
    tokenizer: Any
    heads: int
    layers: int
    eps: float
    prefix: str  # "bert." where the safetensors keys carry the model's name

    @classmethod
    def load(cls, folder: str | Path) -> Encoder:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        root = Path(folder)
        config = _read(root / "config.json")
        try:
            max_tokens = int(_read(root / "sentence_bert_config.json")["max_seq_length"])
        except (OSError, ValueError, KeyError):
            max_tokens = 512
        max_tokens = min(max_tokens, int(config.get("max_position_embeddings", 512)))
        tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=max_tokens)
        tokenizer.no_padding()
        weights = load_file(str(root / "model.safetensors"))
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
        return cls(weights, tokenizer, int(config["num_attention_heads"]), int(config["num_hidden_layers"]),
                   float(config.get("layer_norm_eps", 1e-12)), prefix)

    def _w(self, name: str):
        return self.weights[self.prefix + name]

    def _dense(self, x, name: str):
        """A linear layer, as one 2-D product with the weight stored transposed (numpy's batched
        matmul with a transposed view runs many times slower)."""
        import numpy as np

        key = f"{self.prefix}{name}.weight.T"
        if key not in self.weights:
            self.weights[key] = np.ascontiguousarray(self._w(f"{name}.weight").T)
        flat = x.reshape(-1, x.shape[-1]) @ self.weights[key] + self._w(f"{name}.bias")
        return flat.reshape(*x.shape[:-1], -1)

    def _forward(self, ids, mask):
        """Mean-pooled last hidden states of a padded batch ``ids`` (batch, tokens)."""
        import numpy as np

        batch, tokens = ids.shape
        x = (self._w("embeddings.word_embeddings.weight")[ids]
             + self._w("embeddings.position_embeddings.weight")[:tokens]
             + self._w("embeddings.token_type_embeddings.weight")[0])
        x = _layer_norm(x, self._w("embeddings.LayerNorm.weight"), self._w("embeddings.LayerNorm.bias"), self.eps)
        width = x.shape[-1] // self.heads
        blocked = (1.0 - mask[:, None, None, :]) * np.float32(-1e9)  # padding gets no attention

        def split(t):
            return t.reshape(batch, tokens, self.heads, width).transpose(0, 2, 1, 3)

        for i in range(self.layers):
            at = f"encoder.layer.{i}"
            q, k, v = (split(self._dense(x, f"{at}.attention.self.{n}")) for n in ("query", "key", "value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(width) + blocked
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            context = (scores / scores.sum(axis=-1, keepdims=True)) @ v
            context = context.transpose(0, 2, 1, 3).reshape(batch, tokens, -1)
            x = _layer_norm(x + self._dense(context, f"{at}.attention.output.dense"),
                            self._w(f"{at}.attention.output.LayerNorm.weight"),
                            self._w(f"{at}.attention.output.LayerNorm.bias"), self.eps)
            inner = self._dense(x, f"{at}.intermediate.dense")
            inner = 0.5 * inner * (1.0 + _erf(inner / np.sqrt(2.0)))
            x = _layer_norm(x + self._dense(inner, f"{at}.output.dense"),
                            self._w(f"{at}.output.LayerNorm.weight"), self._w(f"{at}.output.LayerNorm.bias"),
                            self.eps)
        return (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)

    def encode(self, texts: Sequence[str], batch_size: int = 32):
        """One normalised embedding per text (float32, texts × hidden size)."""
        import numpy as np

        encodings = self.tokenizer.encode_batch(list(texts))
        out = np.zeros((len(texts), self._w("embeddings.word_embeddings.weight").shape[1]), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))  # batches of like length pad little
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            tokens = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), tokens), dtype=np.int64)
            mask = np.zeros((len(chunk), tokens), dtype=np.float32)
            for row, i in enumerate(chunk):
                ids[row, :len(encodings[i].ids)] = encodings[i].ids
                mask[row, :len(encodings[i].ids)] = 1.0
            out[chunk] = self._forward(ids, mask)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
