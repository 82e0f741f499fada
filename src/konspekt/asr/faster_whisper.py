"""The faster-whisper backend: CTranslate2 Whisper with its Silero VAD and word timestamps.

Batch size above 1 uses ``BatchedInferencePipeline``: windows of speech decoded in batches, cut at
pauses (:mod:`konspekt.asr.chunks`), 2.6x faster than sequential decoding on 2 CPU cores (see the README's
measurements). A window whose words skip some of its speech is decoded again on its own, sequentially.
Word times come from Whisper's cross-attention (DTW), so every word has one.
A window whose text is degenerate (a loop, the wrong script: :mod:`konspekt.asr.quality`) is
decoded again on its own, sequentially with temperature fallback; what still fails is marked.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from konspekt.asr import language
from konspekt.asr.audio import SAMPLE_RATE, load_audio, read_wav
from konspekt.asr.backend import Options, resolve_whisper
from konspekt.asr.chunks import MAX_WINDOW, Span, holes, pack
from konspekt.asr.quality import COMPRESSION_RATIO_THRESHOLD, is_hole, review
from konspekt.contracts import Segment, Transcript, Word
from konspekt.models import inference_options
from konspekt.progress import Progress

TEMPERATURES = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]  # Whisper's fallback: hotter until the text stops looping
WRITTEN_WITHOUT_SPACES = {"zh", "yue", "ja", "th", "lo", "my"}  # Whisper's words there join without a space


def load_model(opts: Options):
    from faster_whisper import WhisperModel

    return WhisperModel(resolve_whisper(opts.model), device=opts.device, compute_type=opts.compute_type,
                        cpu_threads=opts.threads)


def to_word(w) -> Word:
    return Word(round(w.start, 3), round(w.end, 3), w.word.strip(), round(w.probability, 4))


def vad_parameters(opts: Options, batched: bool) -> dict[str, Any]:
    """Silero's thresholds where given; the batched pipeline's own short-silence default kept."""
    given = {"threshold": opts.vad_onset, "neg_threshold": opts.vad_offset}
    kept = {"min_silence_duration_ms": 160} if batched else {}
    return {**kept, **{k: v for k, v in given.items() if v is not None}}


def speech_spans(audio, opts: Options) -> list[Span]:
    """Silero's speech, as the batched pipeline would find it (no span longer than a window), in seconds."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    found = get_speech_timestamps(audio, VadOptions(**vad_parameters(opts, batched=True),
                                                    max_speech_duration_s=MAX_WINDOW))
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in found]


def decode_options(opts: Options, batched: bool) -> dict[str, Any]:
    options: dict[str, Any] = {
        "language": opts.language, "task": opts.task, "beam_size": opts.beam_size, "word_timestamps": True,
        "initial_prompt": opts.initial_prompt, "hotwords": opts.hotwords, "vad_filter": opts.vad_filter,
        **inference_options(opts.model),  # {"without_timestamps": True} for our exports
    }
    if opts.vad_filter and (opts.vad_onset is not None or opts.vad_offset is not None):
        options["vad_parameters"] = vad_parameters(opts, batched)
    return options


def fixed_windows(duration: float, seconds: float = 30.0) -> list[Span]:
    """Without VAD the batched pipeline needs its windows given: back to back, ``seconds`` long."""
    return [(t, min(t + seconds, duration)) for t in range(0, math.ceil(duration), int(seconds))]


def to_segment(i: int, seg, offset: float = 0.0, limit: float = math.inf) -> Segment:
    """Our segment of faster-whisper's, shifted by ``offset`` and its times kept below ``limit``."""
    words = [to_word(w) for w in seg.words or []]
    for w in words:
        w.start, w.end = round(min(w.start, limit) + offset, 3), round(min(w.end, limit) + offset, 3)
    return Segment(i, round(min(seg.start, limit) + offset, 3), round(min(seg.end, limit) + offset, 3),
                   seg.text.strip(), words, round(seg.avg_logprob, 4), round(seg.no_speech_prob, 4))


def with_holes(segments: list[Segment], windows: list[Span], speech: list[Span], language: str) -> list[Segment]:
    """An empty segment for each stretch of a window's speech that none of its words cover (a sentence
    skipped, or a window's end or whole text left out), for review() to decode again; a segment with a
    hole inside is split there, so the text stays in the order it was said."""
    by_window: dict[int, list[Segment]] = {}
    for seg in segments:  # the window it was decoded in: the last to start at or before it
        by_window.setdefault(bisect.bisect_right([a for a, _ in windows], seg.start + 0.01) - 1, []).append(seg)
    out = by_window.pop(-1, [])  # in no window: all of them when there are none (sequential decoding)
    for i, (a, b) in enumerate(windows):
        mine = by_window.get(i, [])
        for x, y in holes([w for s in mine for w in s.words], speech, (a, b)):
            mine = [part for s in mine for part in split_around(s, (x, y), language)]
            mine.append(Segment(-1, round(x, 3), round(y, 3), ""))
        out += mine
    return sorted(out, key=lambda s: s.start)


def split_around(seg: Segment, hole: Span, language: str) -> list[Segment]:
    """The segment's words before ``hole`` and those after it, as two segments; a word inside it (one the
    timing stretched over the skipped speech) is left to the hole's second decoding."""
    (x, y), sep = hole, "" if language in WRITTEN_WITHOUT_SPACES else " "
    before, after = [w for w in seg.words if w.end <= x], [w for w in seg.words if w.start >= y]
    if len(before) + len(after) == len(seg.words) and not (before and after):
        return [seg]  # wholly on one side of the hole
    parts = [replace(seg, end=before[-1].end, words=before, text=sep.join(w.text for w in before))] if before else []
    if after:
        parts.append(replace(seg, start=after[0].start, words=after, text=sep.join(w.text for w in after)))
    return parts


def read_window(audio_path: Path, start: float, end: float):
    """``[start, end)`` seconds of the audio, from the WAV on disk (the lecture need not stay in memory)."""
    clip = read_wav(audio_path, start, end)
    return clip if clip is not None else load_audio(audio_path)[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)]


def decode_again(model, audio_path: Path, opts: Options, language: str):
    """``(start, end) -> segments``: that stretch decoded alone, sequentially, with Whisper's temperature
    fallback and without the previous text as prompt (a loop would feed itself): the second opinion
    :func:`konspekt.asr.quality.review` asks for."""

    def decode(start: float, end: float) -> list[Segment]:
        clip = read_window(audio_path, start, end)
        options = {**decode_options(opts, batched=False), "language": language, "vad_filter": False,
                   "temperature": TEMPERATURES, "compression_ratio_threshold": COMPRESSION_RATIO_THRESHOLD,
                   "condition_on_previous_text": False}
        found, _ = model.transcribe(clip, **options)
        # a short clip is padded to 30 s, and Whisper may place text in the padding
        seconds = len(clip) / SAMPLE_RATE
        return [to_segment(0, seg, start, seconds) for seg in found if seg.start < seconds]

    return decode


def transcribe(audio_path: Path, opts: Options, model=None) -> Transcript:
    from faster_whisper import BatchedInferencePipeline

    model = model or load_model(opts)
    audio = load_audio(audio_path)
    batched = opts.batch_size > 1
    options = decode_options(opts, batched)
    speech: list[Span] = []  # voice activity, where known
    windows: list[Span] = []
    choice = None
    if opts.language is None:  # an unsure guess is checked by decoding, never taken blindly
        speech = speech_spans(audio, opts)
        choice = language.choose(model, audio, speech, opts.beam_size)
        if choice is not None:
            options["language"] = choice.language
    if batched:
        # our windows, not the pipeline's: cut at pauses, with true times (faster-whisper 1.2.1 restores the
        # times of its own VAD chunks from the wrong speech list), and the speech kept for review()
        if opts.vad_filter:
            speech = speech or speech_spans(audio, opts)
            windows = pack(speech, MAX_WINDOW)  # none for silence: the pipeline's VAD finds none either
        else:
            windows = fixed_windows(len(audio) / SAMPLE_RATE)
        if windows:
            options["clip_timestamps"] = [{"start": a, "end": b} for a, b in windows]
        segments_iter, info = BatchedInferencePipeline(model).transcribe(audio, batch_size=opts.batch_size,
                                                                         chunk_length=int(MAX_WINDOW), **options)
    else:
        segments_iter, info = model.transcribe(audio, **options)
    del audio  # the pipeline keeps what it still needs

    segments: list[Segment] = []
    progress = Progress("transcribed", info.duration)
    for seg in segments_iter:  # a generator: decoding happens while we iterate
        segments.append(to_segment(len(segments), seg))
        progress.update(seg.end)
    progress.finish()
    warnings: list[str] = []
    text_language = "en" if opts.task == "translate" else info.language
    if opts.redecode:
        heard = speech if batched and opts.vad_filter else []  # the speech the windows were cut from
        segments = with_holes(segments, windows, heard, text_language)
        segments, unclear = review(segments, text_language, decode_again(model, audio_path, opts, info.language),
                                   heard)
        warnings += unclear
        segments = [replace(s, id=i) for i, s in enumerate(s for s in segments if not is_hole(s))]
    return Transcript(
        language=info.language,
        language_probability=round(choice.probability if choice else info.language_probability, 4),
        duration=round(info.duration, 3), model=opts.model, segments=segments,
        backend="faster-whisper", word_timestamps="faster-whisper",
        task=opts.task, decoding=opts.decoding(), warnings=warnings,
    )
