"""transcribe: ``audio.wav`` -> ``transcript.{json,txt,srt,vtt,tsv}``.

Backends (see :mod:`konspekt.asr`): ``faster-whisper``, the CPU default, and ``whisperx``,
batched with wav2vec2 word alignment, for the CUDA image; ``auto`` picks by what is
installed and whether a GPU is there. The model is a Whisper name ("small",
"large-v3", ...), a hub id, or a local CTranslate2 folder (such as one exported by the
training DAG); it comes from the cache, downloading only when absent and online.
Every word carries a timestamp; ``transcript.json`` records how they were obtained.
``--diarize`` adds a speaker to every word and segment (see :mod:`konspekt.asr.diarize`;
its token comes from the ``HF_TOKEN`` environment variable, never from argv).
"""

from __future__ import annotations

import argparse

from konspekt import asr
from konspekt.asr.backend import Options
from konspekt.asr.subtitles import WRITERS
from konspekt.contracts import BadInput, log
from konspekt.deployment import DEFAULTS
from konspekt.devices import pick_device
from konspekt.layout import VideoDir, write_json, write_text
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
    )
    log(f"transcribing with {backend}, model {opts.model} on {device} ({opts.compute_type})")
    transcript = asr.transcribe(video.audio, opts, backend)
    if not transcript.text.strip():
        raise BadInput("no speech was detected in the audio (it may be silent or music only)")
    if args.diarize:  # after the Whisper model is gone: the two never share memory
        from konspekt.asr import diarize

        count = diarize.SpeakerCount(args.speakers, args.min_speakers, args.max_speakers)
        segments, transcript.diarization = diarize.diarize(transcript.segments, video.audio,
                                                           args.diarization_model, device, count)
        transcript.segments = segments
    outputs = [write_json(video.transcript_json, transcript)]
    outputs += [write_text(video.path / f"transcript.{ext}", fn(transcript)) for ext, fn in WRITERS.items()]
    words = sum(len(s.words) for s in transcript.segments)
    log(f"{len(transcript.segments)} segments, {words} words, language {transcript.language}, "
        f"word times by {transcript.word_timestamps}")
    return outputs, {"backend": backend, "language": transcript.language, "segments": len(transcript.segments),
                     "words": words, "word_timestamps": transcript.word_timestamps, "device": device,
                     "compute_type": opts.compute_type, "model": args.model, "duration": transcript.duration,
                     "speakers": transcript.diarization and transcript.diarization.speakers}


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


def _count(value: str) -> int | None:
    """A speaker count; 0 or empty means unknown (the DAG passes 0 for "let the model decide")."""
    return int(value) or None if value.strip() else None


main = main_for("transcribe", __doc__.splitlines()[0], _configure, run, reads=lambda video: [video.audio],
                packages=["faster-whisper", "ctranslate2", "whisperx", "pyannote.audio"])

if __name__ == "__main__":
    raise SystemExit(main())
