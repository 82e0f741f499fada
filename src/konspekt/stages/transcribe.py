"""transcribe: ``audio.wav`` -> ``transcript.{json,txt,srt,vtt}`` with faster-whisper.

The model is a faster-whisper name ("small", "large-v3", ...), a hub id, or a local
CTranslate2 folder (such as one exported by the training DAG). VAD is on, so long
silences cost nothing, and every word carries its own timestamps.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from konspekt.contracts import Segment, Transcript, Word
from konspekt.layout import VideoDir, write_json, write_text
from konspekt.stage import BadInput, log, main_for


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except Exception:  # noqa: BLE001 - no CUDA runtime means CPU
        return "cpu"


def pick_compute_type(compute_type: str, device: str) -> str:
    if compute_type != "auto":
        return compute_type
    return "float16" if device == "cuda" else "int8"


def load_model(name_or_path: str, device: str, compute_type: str, threads: int):
    from faster_whisper import WhisperModel

    from konspekt.models import offline

    download_root = os.environ.get("KONSPEKT_WHISPER_CACHE")  # default: the HF cache under /root/.cache
    return WhisperModel(
        name_or_path, device=device, compute_type=compute_type, cpu_threads=threads,
        download_root=download_root, local_files_only=offline(),
    )


def transcribe(audio: Path, model, *, language: str | None, beam_size: int, batch_size: int,
               model_name: str) -> Transcript:
    from faster_whisper import BatchedInferencePipeline

    options = dict(language=language, beam_size=beam_size, word_timestamps=True, vad_filter=True)
    if batch_size > 1:
        segments_iter, info = BatchedInferencePipeline(model).transcribe(str(audio), batch_size=batch_size, **options)
    else:
        segments_iter, info = model.transcribe(str(audio), **options)

    segments: list[Segment] = []
    started, last_report = time.monotonic(), 0.0
    for seg in segments_iter:
        words = [Word(round(w.start, 3), round(w.end, 3), w.word.strip(), round(w.probability, 4))
                 for w in (seg.words or [])]
        segments.append(Segment(len(segments), round(seg.start, 3), round(seg.end, 3), seg.text.strip(), words,
                                round(seg.avg_logprob, 4), round(seg.no_speech_prob, 4)))
        if time.monotonic() - last_report > 5 and info.duration:
            last_report = time.monotonic()
            done = min(seg.end / info.duration, 1.0)
            eta = (last_report - started) * (1 - done) / max(done, 1e-6)
            log(f"transcribed {done:.0%} of {info.duration:.0f} s, ETA {eta:.0f} s")
    return Transcript(
        language=info.language, language_probability=round(info.language_probability, 4),
        duration=round(info.duration, 3), model=model_name, segments=segments,
        backend="faster-whisper", word_timestamps="faster-whisper",
    )


# -- subtitle and text writers -------------------------------------------------

def timestamp(seconds: float, sep: str = ",") -> str:
    ms = int(round(max(seconds, 0.0) * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


MAX_CUE_CHARS, MAX_LINE_CHARS, MAX_CUE_SECONDS = 84, 42, 6.0


def _split_words(seg: Segment) -> list[tuple[float, float, str]]:
    """Break a long segment into readable cues at word boundaries, preferring sentence ends."""
    if not seg.words:
        return [(seg.start, seg.end, seg.text.strip())]
    out, current = [], []
    for word in seg.words:
        current.append(word)
        text = " ".join(w.text for w in current)
        full = len(text) >= MAX_CUE_CHARS or word.end - current[0].start >= MAX_CUE_SECONDS
        if full or (text.endswith((".", "?", "!")) and len(text) >= MAX_CUE_CHARS // 2):
            out.append((current[0].start, word.end, text))
            current = []
    if current:
        out.append((current[0].start, current[-1].end, " ".join(w.text for w in current)))
    return out


def _wrap(text: str) -> str:
    """At most two lines of about MAX_LINE_CHARS, split at the space nearest the middle."""
    if len(text) <= MAX_LINE_CHARS:
        return text
    middle = len(text) // 2
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    if not spaces:
        return text
    cut = min(spaces, key=lambda i: abs(i - middle))
    return text[:cut] + "\n" + text[cut + 1:]


def cues(transcript: Transcript) -> list[tuple[float, float, str]]:
    """Subtitle cues of readable length, clipped so that no cue overlaps the next one."""
    raw = [c for seg in transcript.segments if seg.text.strip() for c in _split_words(seg)]
    out = []
    for i, (start, end, text) in enumerate(raw):
        if i + 1 < len(raw):
            end = min(end, raw[i + 1][0])
        out.append((start, max(end, start + 0.001), _wrap(text.strip())))
    return out


def to_srt(transcript: Transcript) -> str:
    blocks = [f"{i}\n{timestamp(a)} --> {timestamp(b)}\n{text}\n" for i, (a, b, text) in enumerate(cues(transcript), 1)]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    blocks = [f"{timestamp(a, '.')} --> {timestamp(b, '.')}\n{text}\n" for a, b, text in cues(transcript)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_txt(transcript: Transcript) -> str:
    return "\n".join(s.text.strip() for s in transcript.segments if s.text.strip()) + "\n"


def run(video: VideoDir, args: argparse.Namespace):
    if not video.audio.is_file():
        raise FileNotFoundError(f"{video.audio} is missing: extract_audio has not run")
    device = pick_device(args.device)
    compute_type = pick_compute_type(args.compute_type, device)
    language = None if args.language in (None, "", "auto") else args.language
    log(f"loading whisper model {args.model} on {device} ({compute_type})")
    model = load_model(args.model, device, compute_type, args.threads)
    transcript = transcribe(video.audio, model, language=language, beam_size=args.beam_size,
                            batch_size=args.batch_size, model_name=args.model)
    if not transcript.text.strip():
        raise BadInput("no speech was detected in the audio (it may be silent or music only)")
    outputs = [
        write_json(video.transcript_json, transcript),
        write_text(video.path / "transcript.txt", to_txt(transcript)),
        write_text(video.path / "transcript.srt", to_srt(transcript)),
        write_text(video.path / "transcript.vtt", to_vtt(transcript)),
    ]
    words = sum(len(s.words) for s in transcript.segments)
    log(f"{len(transcript.segments)} segments, {words} words, language {transcript.language}")
    return outputs, {"language": transcript.language, "segments": len(transcript.segments), "words": words,
                     "device": device, "compute_type": compute_type, "model": args.model}


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="small", help="faster-whisper model name, hub id or local CTranslate2 folder")
    parser.add_argument("--language", default="auto", help="ISO code such as en or ru; auto detects")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--compute-type", default="auto", help="auto: float16 on GPU, int8 on CPU")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8, help="1 runs sequential decoding")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads; 0 lets CTranslate2 decide")


main = main_for("transcribe", __doc__.splitlines()[0], _configure, run)

if __name__ == "__main__":
    raise SystemExit(main())
