"""The whisperx backend: batched decoding over pyannote VAD chunks, then word timings.

* VAD: pyannote, whose segmentation weights ship inside the whisperx wheel, so it runs
  offline. (whisperx's ``silero`` option fetches its model from GitHub at run time.)
* Language: detected by the Whisper model itself (with its probability), or forced.
* Words: wav2vec2 forced alignment when the language's alignment model and NLTK's
  ``punkt_tab`` (whisperx splits sentences with it) are already on disk; otherwise
  faster-whisper's cross-attention timings on the same chunks, so words always have
  times. ``Transcript.word_timestamps`` says which ("wav2vec2" or "faster-whisper").
* Degenerate chunks (:mod:`konspekt.asr.quality`) are decoded again, sequentially with temperature
  fallback, by the same model; what still fails is marked, not aligned and not published.
* Memory: alignment runs window by window (``align_window`` seconds read from the WAV),
  over VAD chunks of at most 30 s, so it does not grow with the lecture's length.

Speaker diarization (whisperx's pyannote pipeline) is not wired in: its model is gated on
the hub behind a token and could not be fetched or tested here. Adding it means a
``--diarize`` flag reading the token from an env secret, and a ``speaker`` per segment.

Nothing here imports whisperx or torch at module level: ``warm_cache`` uses the tables.
"""

from __future__ import annotations

import gc
import math
import os
from dataclasses import replace
from pathlib import Path

from konspekt.asr.audio import SAMPLE_RATE, load_audio, read_wav
from konspekt.asr.backend import Options, resolve_whisper
from konspekt.asr.faster_whisper import decode_again
from konspekt.asr.quality import is_degenerate, review
from konspekt.contracts import Segment, Transcript, Word, log
from konspekt.models import local_model_dir, offline
from konspekt.progress import Progress

VAD_METHOD = "pyannote"
# Hub ids for every default, so alignment models live in the one HF cache; whisperx's own
# defaults for these languages are torchaudio bundles from download.pytorch.org.
ALIGN_MODELS = {
    "en": "facebook/wav2vec2-base-960h",  # the weights of torchaudio's WAV2VEC2_ASR_BASE_960H
    "ru": "jonatasgrosman/wav2vec2-large-xlsr-53-russian",
    "de": "jonatasgrosman/wav2vec2-large-xlsr-53-german",
    "fr": "jonatasgrosman/wav2vec2-large-xlsr-53-french",
    "es": "jonatasgrosman/wav2vec2-large-xlsr-53-spanish",
    "it": "jonatasgrosman/wav2vec2-large-xlsr-53-italian",
}


def align_model_name(language: str, override: str | None = None) -> str | None:
    if override:
        return override
    if language in ALIGN_MODELS:
        return ALIGN_MODELS[language]
    try:
        from whisperx.alignment import DEFAULT_ALIGN_MODELS_HF
    except ImportError:
        return None
    return DEFAULT_ALIGN_MODELS_HF.get(language)


def nltk_dir() -> Path:
    """Where NLTK data lives: under the shared cache mount, not ~/nltk_data."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("NLTK_DATA") or Path(cache) / "nltk_data")


def punkt_ready(language: str, download: bool = False) -> bool:
    """NLTK's punkt_tab for ``language`` is on disk (downloaded first if ``download``)."""
    import nltk
    from whisperx.utils import PUNKT_LANGUAGES

    if str(nltk_dir()) not in nltk.data.path:
        nltk.data.path.insert(0, str(nltk_dir()))
    name = PUNKT_LANGUAGES.get(language, "english")
    for attempt in range(2):
        try:
            nltk.data.find(f"tokenizers/punkt_tab/{name}/")
            return True
        except LookupError:
            if attempt or not download:
                return False
            nltk.download("punkt_tab", download_dir=str(nltk_dir()), quiet=True)
    return False


def find_aligner(language: str, opts: Options) -> str | None:
    """The local folder of the alignment model, or None (with the reason logged): no network."""
    if opts.align == "off":
        return None
    name = align_model_name(language, opts.align_model)
    local = local_model_dir(name) if name else None
    if local is None:
        log(f"word alignment: no wav2vec2 model for {language!r} in the cache ({name or 'none known'}); "
            "using faster-whisper word timestamps")
        return None
    if not punkt_ready(language, download=not offline()):
        log(f"word alignment: NLTK punkt_tab is not in {nltk_dir()}; using faster-whisper word timestamps")
        return None
    return str(local)


def load_pipeline(opts: Options):
    import whisperx

    asr_options = {"beam_size": opts.beam_size, "initial_prompt": opts.initial_prompt, "hotwords": opts.hotwords}
    vad_options = {k: v for k, v in (("vad_onset", opts.vad_onset), ("vad_offset", opts.vad_offset)) if v is not None}
    if not opts.vad_filter:  # its batches are VAD chunks: there is no decoding without them
        log("whisperx always decodes VAD chunks; --vad-filter false applies to faster-whisper only")
    return whisperx.load_model(
        resolve_whisper(opts.model), opts.device, compute_type=opts.compute_type, language=opts.language,
        vad_method=VAD_METHOD, asr_options=asr_options, vad_options=vad_options or None, task=opts.task,
        threads=opts.threads,
    )


def detect_language(model, audio, forced: str | None) -> tuple[str, float]:
    if forced:
        return forced, 1.0
    if not model.model.is_multilingual:
        return "en", 1.0
    language, probability, _ = model.detect_language(audio, vad_filter=True)
    return language, float(probability)


def transcribe(audio_path: Path, opts: Options) -> Transcript:
    pipeline = load_pipeline(opts)
    audio = load_audio(audio_path)
    duration = len(audio) / SAMPLE_RATE
    language, probability = detect_language(pipeline.model, audio, opts.language)
    log(f"language {language} ({probability:.2f}); VAD {VAD_METHOD}, batch {opts.batch_size}")

    progress = Progress("transcribed", duration)
    result = pipeline.transcribe(audio, batch_size=opts.batch_size, language=language, task=opts.task,
                                 progress_callback=lambda percent: progress.update(percent / 100 * duration))
    progress.finish()
    chunks = [c for c in result["segments"] if c["text"].strip()]
    # Chunks whose text is not speech get a second, sequential decoding now, while the model is loaded;
    # they come back with their own word times and skip alignment.
    text_language = "en" if opts.task == "translate" else language
    flagged = [bool(opts.redecode and is_degenerate(c["text"], text_language)) for c in chunks]
    redone, warnings = review([_segment(0, c["start"], c["end"], c["text"], [], c.get("avg_logprob"))
                               for c, bad in zip(chunks, flagged) if bad],
                              text_language, decode_again(pipeline.model, audio_path, opts, language))
    chunks = [c for c, bad in zip(chunks, flagged) if not bad]

    aligner = find_aligner(language, opts) if chunks else None
    if aligner:
        del pipeline, audio  # free Whisper and the samples: alignment reads its windows from the WAV
        gc.collect()
        segments, how = align_windows(chunks, audio_path, language, aligner, opts), "wav2vec2"
    elif chunks:
        model, read = pipeline.model, window_reader(audio_path, audio)
        del pipeline, audio  # a 60-min lecture is 230 MB of samples: read each chunk from the WAV instead
        gc.collect()
        segments, how = dtw_words(chunks, model, read, language, opts), "faster-whisper"
    else:
        segments, how = [], "faster-whisper"
    segments = [replace(s, id=i) for i, s in enumerate(sorted(segments + redone, key=lambda s: s.start))]
    return Transcript(language=language, language_probability=round(probability, 4), duration=round(duration, 3),
                      model=opts.model, segments=segments, backend="whisperx", word_timestamps=how,
                      task=opts.task, decoding=opts.decoding(), warnings=warnings)


# -- word timings ---------------------------------------------------------------

def _words_in(words: list[Word], start: float, end: float) -> list[Word]:
    """Clamp word times into their segment, in order (aligners leave the odd one outside)."""
    out, floor = [], start
    for w in words:
        a = min(max(w.start, floor), end)
        out.append(Word(round(a, 3), round(min(max(w.end, a), end), 3), w.text, w.probability))
        floor = a
    return out


def _segment(i: int, start: float, end: float, text: str, words: list[Word], avg_logprob) -> Segment:
    if words:  # the segment spans its words
        start, end = min(start, words[0].start), max(end, words[-1].end)
    start, end = round(start, 3), round(end, 3)
    logprob = None if avg_logprob is None else round(float(avg_logprob), 4)
    return Segment(i, start, end, " ".join(text.split()), _words_in(words, start, end), logprob)


def windows(chunks: list[dict], seconds: float) -> list[list[dict]]:
    """Consecutive chunks grouped so that each group spans at most ``seconds`` (one chunk at least)."""
    groups: list[list[dict]] = []
    for chunk in chunks:
        if groups and chunk["end"] - groups[-1][0]["start"] <= seconds:
            groups[-1].append(chunk)
        else:
            groups.append([chunk])
    return groups


def align_windows(chunks: list[dict], audio_path: Path, language: str, model_dir: str, opts: Options) -> list[Segment]:
    """wav2vec2 alignment (whisperx.align), one window of audio at a time."""
    import whisperx

    model, metadata = whisperx.load_align_model(language, opts.device, model_name=model_dir, model_cache_only=True)
    groups = windows(chunks, opts.align_window)
    log(f"aligning words with {model_dir} in {len(groups)} windows of up to {opts.align_window:.0f} s")
    segments: list[Segment] = []
    progress = Progress("aligned", chunks[-1]["end"])
    for group in groups:
        offset, end = group[0]["start"], group[-1]["end"]
        audio = read_wav(audio_path, offset, end)
        if audio is None:  # not extract_audio's layout: decode it all, keep the window
            audio = load_audio(audio_path)[int(offset * SAMPLE_RATE):int(end * SAMPLE_RATE)]
        local = [{**c, "start": c["start"] - offset, "end": c["end"] - offset} for c in group]
        aligned = whisperx.align(local, model, metadata, audio, opts.device)
        for seg in aligned["segments"]:
            words = _aligned_words(seg, offset)
            start, end_ = _finite(seg.get("start"), local[0]["start"]), _finite(seg.get("end"), local[-1]["end"])
            segments.append(_segment(len(segments), start + offset, end_ + offset, seg["text"], words,
                                     seg.get("avg_logprob")))
        progress.update(end)
    progress.finish()
    return segments


def _finite(value, default: float) -> float:
    return float(value) if value is not None and math.isfinite(float(value)) else float(default)


def _aligned_words(seg: dict, offset: float) -> list[Word]:
    """whisperx words, shifted back; a word it could not place (digits, symbols) gets its neighbours' edge."""
    raw = [w for w in seg.get("words", []) if str(w.get("word", "")).strip()]
    words: list[Word] = []
    for i, w in enumerate(raw):
        prev_end = words[-1].end - offset if words else _finite(seg.get("start"), 0.0)
        nxt = next((_finite(v.get("start"), math.nan) for v in raw[i + 1:] if "start" in v), math.nan)
        start = _finite(w.get("start"), prev_end)
        end = _finite(w.get("end"), nxt if math.isfinite(nxt) else start)
        score = w.get("score")
        words.append(Word(start + offset, max(end, start) + offset, str(w["word"]).strip(),
                          None if score is None or not math.isfinite(score) else round(float(score), 4)))
    return words


def window_reader(audio_path: Path, audio):
    """``read(first, last)``: those samples, from the WAV on disk when it is extract_audio's layout
    (so the whole lecture need not stay in memory), else from the array already decoded."""
    if read_wav(audio_path, 0.0, 0.0) is not None:
        return lambda first, last: read_wav(audio_path, first / SAMPLE_RATE, last / SAMPLE_RATE)
    return lambda first, last: audio[first:last]


def dtw_words(chunks: list[dict], model, read, language: str, opts: Options) -> list[Segment]:
    """faster-whisper's cross-attention word timings for whisperx's chunks, a batch at a time."""
    import numpy as np
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer

    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task=opts.task, language=language)
    fps, hop = model.frames_per_second, model.feature_extractor.hop_length
    segments: list[Segment] = []
    last_speech = 0.0
    for i in range(0, len(chunks), max(opts.batch_size, 1)):
        batch = []
        for c in chunks[i:i + max(opts.batch_size, 1)]:
            seek = int(c["start"] * fps)  # whole frames, so word times map back exactly
            tokens = tokenizer.encode(" " + c["text"].strip())
            batch.append(({"tokens": tokens, "start": c["start"], "end": c["end"], "seek": seek},
                          read(seek * hop, int(c["end"] * SAMPLE_RATE)), c))
        features = np.stack([pad_or_trim(model.feature_extractor(a)[..., :-1]) for _, a, _ in batch])
        subsegments = [[sub] for sub, _, _ in batch]
        num_frames = [int(math.ceil(len(a) / SAMPLE_RATE) * fps) for _, a, _ in batch]
        last_speech = model.add_word_timestamps(subsegments, tokenizer, model.encode(features), num_frames,
                                                "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、", last_speech)
        for sub, _, chunk in batch:  # add_word_timestamps filled in sub["words"]
            words = [Word(w["start"], w["end"], w["word"].strip(), round(float(w["probability"]), 4))
                     for w in sub.get("words", []) if w["word"].strip()]
            segments.append(_segment(len(segments), sub["start"], sub["end"], chunk["text"], words,
                                     chunk.get("avg_logprob")))
    return segments
