"""A CTranslate2 Whisper (what faster-whisper loads) turned back into a transformers model, to fine-tune.

    python -m konspekt.training.from_ct2 CT2_DIR OUT_DIR

The packaged models (:mod:`konspekt.packaged`) exist only in CTranslate2's format, and the hub
cannot be reached from every machine; a transformers copy makes them trainable offline. This
reads ``model.bin`` (the layout ``ctranslate2.specs.model_spec.ModelSpec._serialize`` writes),
dequantizes int8/int16 weights, and inverts ``ctranslate2.converters.transformers.WhisperLoader``:
fused q/k/v projections are split again, ``gamma/beta`` become ``weight/bias``. Whisper's k
projections have no bias; CTranslate2 fills those slots with zeros, which are dropped.

The training steps take a CTranslate2 folder as ``--base-model``: :func:`transformers_base`
converts it once into ``<data root>/train_cache/base_models/<key>/``, keyed by the bytes of the
model, its config and its tokenizer, and every later step and run reads that folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import re
import shutil
import struct
from pathlib import Path

import numpy as np

FORMAT = 1  # bump when the converted folder changes, so old cache entries are not reused
# ctranslate2's DataType enum, in order (include/ctranslate2/types.h; model_spec._dtype_to_type_id)
DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
SUPPORTED_SPEC = ("WhisperSpec", 3)  # the spec name and revision this mapping was written against


def read_model_bin(path: Path) -> tuple[str, int, dict[str, np.ndarray]]:
    """(spec name, spec revision, variables) of a ``model.bin``; int8/int16 weights come back as float32
    (dequantized with their ``*_scale``), floats as stored, aliases as the arrays they name."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        pos = 0

        def take(fmt: str):
            nonlocal pos
            values = struct.unpack_from("<" + fmt, buf, pos)
            pos += struct.calcsize("<" + fmt)
            return values if len(values) > 1 else values[0]

        def string() -> str:  # uint16 length (the trailing NUL included), then the bytes
            nonlocal pos
            n = take("H")
            text = bytes(buf[pos:pos + n - 1]).decode("utf-8")
            pos += n
            return text

        version = take("I")
        if version < 5:  # older layouts sized items differently; every released Whisper spec is newer
            raise ValueError(f"{path}: CTranslate2 binary version {version} is not supported (5 or 6)")
        spec, revision, count = string(), take("I"), take("I")
        raw: dict[str, np.ndarray] = {}
        for _ in range(count):
            name = string()
            rank = take("B")
            shape = [take("I") for _ in range(rank)]
            dtype, nbytes = DTYPES[take("B")], take("I")
            data = bytes(buf[pos:pos + nbytes])  # a copy: the arrays outlive the mapping
            pos += nbytes
            raw[name] = _array(data, dtype, shape)
        aliases = {}
        for _ in range(take("I")):
            alias = string()
            aliases[alias] = string()
    variables = dequantize(raw)
    for alias, target in aliases.items():  # duplicated weights (the tied output projection) are stored once
        variables[alias] = variables[target]
    return spec, revision, variables


def _array(data: bytes, dtype: str, shape: list[int]) -> np.ndarray:
    if dtype == "bfloat16":  # numpy has no bfloat16: its bits are the top half of a float32
        bits = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def dequantize(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Quantized weights back to float32: int8 rows were scaled by ``127 / max|row|`` (``weight_scale``
    holds those factors), int16 by one scalar; the scales themselves are dropped."""
    out = {}
    for name, value in raw.items():
        if name.endswith("_scale") and name[: -len("_scale")] in raw:
            continue
        if name.endswith("_zero") and name[: -len("_zero")] in raw:
            raise ValueError(f"{name}: AWQ/GPTQ-style zero points are not supported")
        scale = raw.get(name + "_scale")
        if scale is not None and value.dtype in (np.int8, np.int16):
            factor = scale.astype(np.float32).reshape(-1, *[1] * (value.ndim - 1)) if scale.ndim else scale
            value = value.astype(np.float32) / factor
        out[name] = value
    return out


# -- the inverse of WhisperLoader ------------------------------------------------------------

def _layers(variables: dict[str, np.ndarray], side: str) -> int:
    return len({name.split("/")[1] for name in variables if re.match(rf"{side}/layer_\d+/", name)})


def hf_state_dict(variables: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    """(WhisperConfig arguments, transformers state dict as float32 arrays) for CTranslate2's variables."""
    v = {name: value for name, value in variables.items()}
    sd: dict[str, np.ndarray] = {}

    def f32(name: str) -> np.ndarray:
        return np.asarray(v[name], dtype=np.float32)

    def linear(hf: str, ct: str) -> None:
        sd[f"{hf}.weight"] = f32(f"{ct}/weight")
        if f"{ct}/bias" in v:
            sd[f"{hf}.bias"] = f32(f"{ct}/bias")

    def norm(hf: str, ct: str) -> None:
        sd[f"{hf}.weight"], sd[f"{hf}.bias"] = f32(f"{ct}/gamma"), f32(f"{ct}/beta")

    def split(hf: str, names: list[str], ct: str) -> None:
        """A fused projection (q,k,v or k,v) back into its parts; k has no bias in Whisper."""
        weights = np.split(f32(f"{ct}/weight"), len(names))
        biases = np.split(f32(f"{ct}/bias"), len(names))
        for name, weight, bias in zip(names, weights, biases):
            sd[f"{hf}.{name}.weight"] = weight
            if name == "k_proj":
                if np.any(bias):
                    raise ValueError(f"{ct}: a non-zero k bias, which Whisper's k_proj cannot hold")
            else:
                sd[f"{hf}.{name}.bias"] = bias

    def layer(hf: str, ct: str, cross: bool) -> None:
        split(f"{hf}.self_attn", ["q_proj", "k_proj", "v_proj"], f"{ct}/self_attention/linear_0")
        linear(f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
        norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
        if cross:
            linear(f"{hf}.encoder_attn.q_proj", f"{ct}/attention/linear_0")
            split(f"{hf}.encoder_attn", ["k_proj", "v_proj"], f"{ct}/attention/linear_1")
            linear(f"{hf}.encoder_attn.out_proj", f"{ct}/attention/linear_2")
            norm(f"{hf}.encoder_attn_layer_norm", f"{ct}/attention/layer_norm")
        linear(f"{hf}.fc1", f"{ct}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct}/ffn/linear_1")
        norm(f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")

    enc, dec = _layers(v, "encoder"), _layers(v, "decoder")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    sd["model.encoder.embed_positions.weight"] = f32("encoder/position_encodings/encodings")
    for i in range(enc):
        layer(f"model.encoder.layers.{i}", f"encoder/layer_{i}", cross=False)
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    sd["model.decoder.embed_tokens.weight"] = f32("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = f32("decoder/position_encodings/encodings")
    for i in range(dec):
        layer(f"model.decoder.layers.{i}", f"decoder/layer_{i}", cross=True)
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    if "decoder/projection/bias" in v:
        raise ValueError("the output projection has a bias, which Whisper's proj_out cannot hold")
    projection = f32("decoder/projection/weight")
    tied = np.array_equal(projection, sd["model.decoder.embed_tokens.weight"])
    sd["proj_out.weight"] = projection

    vocab, d_model = sd["model.decoder.embed_tokens.weight"].shape
    config = {
        "vocab_size": int(vocab), "d_model": int(d_model), "encoder_layers": enc, "decoder_layers": dec,
        "num_mel_bins": int(sd["model.encoder.conv1.weight"].shape[1]),
        "encoder_attention_heads": int(v["encoder/num_heads"]), "decoder_attention_heads": int(v["decoder/num_heads"]),
        "encoder_ffn_dim": int(sd["model.encoder.layers.0.fc1.weight"].shape[0]),
        "decoder_ffn_dim": int(sd["model.decoder.layers.0.fc1.weight"].shape[0]),
        "max_source_positions": int(sd["model.encoder.embed_positions.weight"].shape[0]),
        "max_target_positions": int(sd["model.decoder.embed_positions.weight"].shape[0]),
        "tie_word_embeddings": tied,
    }
    return config, sd


# -- the transformers folder ------------------------------------------------------------------

def _special_ids(tokenizer) -> dict[str, int]:
    vocab = tokenizer.get_vocab()
    names = {"eot": "<|endoftext|>", "sot": "<|startoftranscript|>", "transcribe": "<|transcribe|>",
             "translate": "<|translate|>", "notimestamps": "<|notimestamps|>", "prev": "<|startofprev|>"}
    missing = [token for token in names.values() if token not in vocab]
    if missing:
        raise ValueError(f"the tokenizer is not Whisper's: it lacks {', '.join(missing)}")
    return {key: vocab[token] for key, token in names.items()}


def generation_config(ct2_config: dict, tokenizer, multilingual: bool):
    """What ``generate()`` and, after a fine-tune, CTranslate2's converter read: the token ids, the
    suppressed tokens, the alignment heads (word timestamps) and the languages of the original."""
    from transformers import GenerationConfig

    ids = _special_ids(tokenizer)
    extra: dict = {}
    if multilingual:
        extra["lang_to_id"] = {tokenizer.convert_ids_to_tokens(i): i for i in ct2_config.get("lang_ids") or []}
        extra["task_to_id"] = {"transcribe": ids["transcribe"], "translate": ids["translate"]}
    if ct2_config.get("alignment_heads"):
        extra["alignment_heads"] = [list(h) for h in ct2_config["alignment_heads"]]
    return GenerationConfig(
        bos_token_id=ids["eot"], eos_token_id=ids["eot"], pad_token_id=ids["eot"], decoder_start_token_id=ids["sot"],
        max_length=448, is_multilingual=multilingual, no_timestamps_token_id=ids["notimestamps"],
        prev_sot_token_id=ids["prev"], max_initial_timestamp_index=50, return_timestamps=False,
        suppress_tokens=list(ct2_config.get("suppress_ids") or []),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or []), **extra)


def ct2_to_transformers(ct2_dir: str | Path, out_dir: str | Path) -> Path:
    """``out_dir`` (made anew): a WhisperForConditionalGeneration folder (float32 ``model.safetensors``,
    config, generation config, tokenizer, feature extractor) with the weights of ``ct2_dir``."""
    import torch
    from transformers import (  # type: ignore[attr-defined]
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    from konspekt.packaged import MULTILINGUAL_VOCAB

    ct2_dir, out = Path(ct2_dir), Path(out_dir)
    spec, revision, variables = read_model_bin(ct2_dir / "model.bin")
    if spec != SUPPORTED_SPEC[0]:
        raise ValueError(f"{ct2_dir} holds a {spec}, not a Whisper model")
    if revision != SUPPORTED_SPEC[1]:
        raise ValueError(f"{ct2_dir}: WhisperSpec revision {revision}; this converter reads revision 3")
    ct2_config = json.loads((ct2_dir / "config.json").read_text(encoding="utf-8"))
    arguments, state = hf_state_dict(variables)
    del variables
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(ct2_dir / "tokenizer.json"), pad_token="<|endoftext|>")
    ids = _special_ids(tokenizer)
    multilingual = arguments["vocab_size"] >= MULTILINGUAL_VOCAB
    config = WhisperConfig(**arguments, pad_token_id=ids["eot"], bos_token_id=ids["eot"], eos_token_id=ids["eot"],
                           # in the generation config only: transformers v5 warns when the model config has them
                           decoder_start_token_id=ids["sot"], suppress_tokens=None, begin_suppress_tokens=None)
    with torch.device("meta"):  # no random init of weights that are overwritten at once
        model = WhisperForConditionalGeneration(config)
    # copies: aliased variables are one array, and split ones views of one; safetensors refuses shared memory
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(a.copy()) for k, a in state.items()},
                                                strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"{ct2_dir}: weights missing {missing[:5]}, unexpected {unexpected[:5]}")
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config = generation_config(ct2_config, tokenizer, multilingual)
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # preprocessor_config.json, which faster-whisper reads after a fine-tune (see whisper.Processor.save)
    WhisperFeatureExtractor(feature_size=arguments["num_mel_bins"]).save_pretrained(out)
    return out


# -- a CTranslate2 base model for the training steps ------------------------------------------

def is_ct2_whisper(folder: str | Path) -> bool:
    """A CTranslate2 model folder: ``model.bin`` and a config without transformers' ``model_type``."""
    folder = Path(folder)
    if not (folder / "model.bin").is_file():
        return False
    try:
        return "model_type" not in json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def model_key(ct2_dir: Path) -> str:
    """The model's identity: its weights, config and tokenizer (and this converter's format)."""
    digest = hashlib.sha256(f"konspekt.from_ct2/{FORMAT}".encode())
    for name in ("model.bin", "config.json", "tokenizer.json"):
        digest.update(name.encode())
        with open(ct2_dir / name, "rb") as f:
            while chunk := f.read(8 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:20]


def cached_transformers(ct2_dir: str | Path, cache: Path) -> Path:
    """``cache/<key>/``, converted from ``ct2_dir`` unless an earlier step or run already did. Built under
    a temporary name and renamed into place: a run killed halfway leaves nothing half-written."""
    ct2_dir = Path(ct2_dir)
    target = cache / f"{ct2_dir.name}-{model_key(ct2_dir)}"
    if (target / "model.safetensors").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    building = cache / f".{target.name}.{os.getpid()}.tmp"
    try:
        ct2_to_transformers(ct2_dir, building)
        (building / "converted_from.json").write_text(json.dumps({"ct2": str(ct2_dir), "format": FORMAT}) + "\n")
        try:
            building.rename(target)
        except OSError:  # another step finished the same conversion first
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


def transformers_base(name_or_path: str, cache: Path) -> str:
    """The training steps' base model as a transformers folder (or hub id): a CTranslate2 folder is
    converted into ``cache`` once; anything else is resolved as before (:func:`konspekt.models.resolve`)."""
    from konspekt.models import resolve

    resolved = resolve(name_or_path)
    return str(cached_transformers(resolved, cache)) if is_ct2_whisper(resolved) else resolved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="konspekt.training.from_ct2", description=__doc__.splitlines()[0])
    parser.add_argument("ct2_dir", type=Path, help="CTranslate2 Whisper: model.bin, config.json, tokenizer.json")
    parser.add_argument("out_dir", type=Path, help="the transformers folder to write (replaced)")
    args = parser.parse_args(argv)
    print(ct2_to_transformers(args.ct2_dir, args.out_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
