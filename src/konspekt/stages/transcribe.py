"""transcribe: ``audio.wav`` -> ``transcript.{json,txt,srt,vtt,tsv}``.

Backends (see :mod:`konspekt.asr`): ``faster-whisper``, the CPU default, and ``whisperx``,
batched with wav2vec2 word alignment, for the CUDA image; ``auto`` picks by what is
installed and whether a GPU is there. The model is a Whisper name ("small",
"large-v3", ...), a hub id, or a local CTranslate2 folder (such as one exported by the
training DAG); it comes from the cache, downloading only when absent and online.
Every word carries a timestamp; ``transcript.json`` records how they were obtained.
``--diarize`` adds a speaker to every word and segment (see :mod:`konspekt.asr.diarize`;
its token comes from the ``HF_TOKEN`` environment variable, never from argv).

Decoding options take the names of WhisperX's CLI (``--initial-prompt``, ``--hotwords``, ``--task``,
``--vad-onset``, ``--vad-offset``, ``--max-line-width``, ``--max-line-count``) and are recorded in
``transcript.json``. Doubts are said, not hidden: an unsure language detection and audio the model
could only turn into garbage (:mod:`konspekt.asr.quality`) become ``warnings`` in the transcript and
in the stage's result, and the report shows them.
"""

from __future__ import annotations

import argparse

from konspekt import asr
from konspekt.asr import english_only
from konspekt.asr.backend import Options
from konspekt.asr.subtitles import CueStyle, render
from konspekt.contracts import BadInput, Transcript, log
from konspekt.deployment import DEFAULTS
from konspekt.devices import pick_device
from konspekt.layout import VideoDir, write_json, write_text
from konspekt.models import model_facts
from konspekt.stage import main_for, yes_no


def run(video: VideoDir, args: argparse.Namespace):
    if not video.audio.is_file():
        raise FileNotFoundError(f"{video.audio} is missing: extract_audio has not run")
    device = pick_device(args.device, probe="ctranslate2")  # the ASR image has no torch
    backend = asr.pick_backend(args.backend, device)
    opts = Options(
        model=args.model, language=None if args.language in (None, "", "auto") else args.language,
        device=device, compute_type=asr.pick_compute_type(args.compute_type, device),
        beam_size=args.beam_size, batch_size=args.batch_size, threads=args.threads,
        align=args.align, align_model=args.align_model or None, align_window=args.align_window,
        task=args.task, initial_prompt=args.initial_prompt or None, hotwords=args.hotwords or None,
        vad_filter=args.vad_filter, vad_onset=args.vad_onset, vad_offset=args.vad_offset, redecode=args.redecode,
    )
    # before the model loads: an English-only model on another language is an error or a warning
    english = english_only.check(opts.model, opts.language, video.audio, device)
    log(f"transcribing with {backend}, model {opts.model} on {device} ({opts.compute_type})")
    transcript = asr.transcribe(video.audio, opts, backend)
    if opts.language is None and not english.english_only:  # an .en model reports English, p 1
        transcript.warnings[:0] = language_warnings(transcript, args.language_warn_below)
    transcript.warnings[:0] = english.warnings or []
    for warning in transcript.warnings:
        log(f"warning: {warning}")
    if not transcript.text.strip():
        unclear = any(s.degenerate for s in transcript.segments)
        raise BadInput("no speech was recognised in the audio: " + (
            "what the model made of it was not speech (" + "; ".join(transcript.warnings) + ")" if unclear
            else "it may be silent or music only"))
    if args.diarize:  # after the Whisper model is gone: the two never share memory
        from konspekt.asr import diarize

        count = diarize.SpeakerCount(args.speakers, args.min_speakers, args.max_speakers)
        segments, transcript.diarization = diarize.diarize(transcript.segments, video.audio,
                                                           args.diarization_model, device, count)
        transcript.segments = segments
    style = CueStyle(args.max_line_width, args.max_line_count, args.max_cue_seconds)
    outputs = [write_json(video.transcript_json, transcript)]
    outputs += [write_text(video.path / f"transcript.{ext}", text) for ext, text in render(transcript, style).items()]
    words = sum(len(s.words) for s in transcript.segments)
    log(f"{len(transcript.segments)} segments, {words} words, language {transcript.language}, "
        f"word times by {transcript.word_timestamps}")
    return outputs, {"backend": backend, "language": transcript.language, "segments": len(transcript.segments),
                     "words": words, "word_timestamps": transcript.word_timestamps, "device": device,
                     "compute_type": opts.compute_type, "model": args.model, "duration": transcript.duration,
                     "speakers": transcript.diarization and transcript.diarization.speakers,
                     "task": transcript.task, "language_probability": transcript.language_probability,
                     "unclear_segments": sum(1 for s in transcript.segments if s.degenerate),
                     "warnings": transcript.warnings, "english_only_model": english.english_only,
                     "language_heard": english.detected, **model_facts(args.model)}


def language_warnings(transcript: Transcript, below: float) -> list[str]:
    """A detection this unsure is often wrong, and then the whole transcript is: say how to force it."""
    p = transcript.language_probability
    if p is None or p >= below:
        return []
    return [f"the language was detected as {transcript.language!r} with probability {p:.2f} only "
            f"(below {below:g}): if the lecture is in another language, set the language Param "
            "to it, e.g. language=ru"]


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULTS["WHISPER_MODEL"],
                        help="Whisper model name, hub id or local CTranslate2 folder")
    parser.add_argument("--backend", default="auto", choices=asr.BACKENDS,
                        help="auto: whisperx when it is installed and a GPU is present, else faster-whisper")
    parser.add_argument("--language", default="auto", help="ISO code such as en or ru; auto detects")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--compute-type", default="auto", help="auto: float16 on GPU, int8 on CPU")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8, help="1 runs sequential decoding (faster-whisper)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads; 0 lets CTranslate2 decide")
    parser.add_argument("--align", default="auto", choices=["auto", "off"],
                        help="whisperx: wav2vec2 word alignment when its model is cached (auto), or never")
    parser.add_argument("--align-model", default="", help="whisperx: wav2vec2 CTC model id or folder; "
                        "default: the language's usual one")
    parser.add_argument("--align-window", type=float, default=120.0,
                        help="whisperx: seconds of audio aligned at a time (bounds memory)")
    parser.add_argument("--diarize", nargs="?", const=True, default=False, type=yes_no,
                        help="label speakers with pyannote (true/false; its first download needs HF_TOKEN set)")
    parser.add_argument("--diarization-model", default=DEFAULTS["DIARIZATION_MODEL"],
                        help="pyannote pipeline: hub id or local folder with config.yaml")
    parser.add_argument("--speakers", type=_count, default=None, help="exact number of speakers, if known")
    parser.add_argument("--min-speakers", type=_count, default=None)
    parser.add_argument("--max-speakers", type=_count, default=None)
    # decoding, as WhisperX's CLI names it
    parser.add_argument("--task", default="transcribe", choices=["transcribe", "translate"],
                        help="translate: Whisper's English translation instead of the spoken language")
    parser.add_argument("--initial-prompt", default="", help="text to condition the first window on: "
                        "names, terms, spelling and punctuation you expect")
    parser.add_argument("--hotwords", default="", help="words to favour in every window (faster-whisper hotwords)")
    parser.add_argument("--vad-filter", default=True, type=yes_no, metavar="BOOL",
                        help="skip silence with VAD (faster-whisper; whisperx always uses its VAD chunks)")
    parser.add_argument("--vad-onset", type=_probability, default=None, metavar="P",
                        help="VAD: speech starts above this probability (default 0.5; faster-whisper's threshold)")
    parser.add_argument("--vad-offset", type=_probability, default=None, metavar="P",
                        help="VAD: speech ends below this probability (default: faster-whisper onset-0.15, "
                             "whisperx 0.363; faster-whisper's neg_threshold)")
    parser.add_argument("--redecode", default=True, type=yes_no, metavar="BOOL",
                        help="decode a window whose text is degenerate (a loop, the wrong script) again, with "
                             "temperature fallback, and mark it when it stays so")
    # base heard real Russian at 0.91-0.99 and synthetic speech it got wrong at 0.19-0.50 (issue 18)
    parser.add_argument("--language-warn-below", type=_probability, default=0.8, metavar="P",
                        help="warn when the detected language's probability is below this")
    # subtitles: unset, cues aim at 2 lines of 42 characters and 6 s; set, these are hard limits
    parser.add_argument("--max-line-width", type=_limit(int, 10), default=None, metavar="CHARS",
                        help="characters a subtitle line may have")
    parser.add_argument("--max-line-count", type=_limit(int, 1), default=None, metavar="LINES",
                        help="lines a subtitle cue may have")
    parser.add_argument("--max-cue-seconds", type=_limit(float, 0.5), default=None, metavar="SECONDS",
                        help="seconds a subtitle cue may last")
    _check_after_parsing(parser)


def _count(value: str) -> int | None:
    """A speaker count; 0 or empty means unknown (the DAG passes 0 for "let the model decide")."""
    return int(value) or None if value.strip() else None


def _probability(value: str) -> float | None:
    """A probability in [0, 1]; empty means the default."""
    if not value.strip():
        return None
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {value}")
    return number


def _limit(kind: type, least: float):
    """A number of at least ``least``; empty means no limit."""

    def parse(value: str) -> int | float | None:
        if not value.strip():
            return None
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {value!r}") from None
        if number < least:
            raise argparse.ArgumentTypeError(f"expected at least {least:g}, got {value}")
        return number

    return parse


def _check_after_parsing(parser: argparse.ArgumentParser) -> None:
    """Options that only make sense together: a wrong pair is a usage error (exit 64), as one wrong value is."""
    parse = parser.parse_args

    def parse_and_check(args=None, namespace=None):
        ns = parse(args, namespace)
        if ns.vad_onset is not None and ns.vad_offset is not None and ns.vad_offset > ns.vad_onset:
            parser.error(f"--vad-offset {ns.vad_offset:g} is above --vad-onset {ns.vad_onset:g}: "
                         "speech would end before it could start")
        if ns.min_speakers and ns.max_speakers and ns.min_speakers > ns.max_speakers:
            parser.error(f"--min-speakers {ns.min_speakers} is above --max-speakers {ns.max_speakers}")
        return ns

    parser.parse_args = parse_and_check  # type: ignore[method-assign]


main = main_for("transcribe", __doc__.splitlines()[0], _configure, run, reads=lambda video: [video.audio],
                packages=["faster-whisper", "ctranslate2", "whisperx", "pyannote.audio"])

if __name__ == "__main__":
    raise SystemExit(main())
