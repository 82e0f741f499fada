"""Detection latency and DAG parse time (issue 8), for `bench/run.py` or on their own:

    python bench/latency.py [--drops 6]

* **parse**: each DAG file parsed by a fresh interpreter (``DagBag`` on that one file), the time
  the DAG processor spends on it, module imports included; best of 3.
* **detection**: Airflow standalone (scheduler, triggerer, DAG processor, API server on
  127.0.0.1) with the sensor as configured (deferrable, ``KONSPEKT_POKE_SECONDS``), waiting on
  an empty input/. A short clip lands there (one ``rename``, as a finished download does) and the
  latency is the time to ``extract_audio``'s start in Airflow's own database. Drops alternate
  between a file *moved in* (an old mtime: ready at once) and one *just written* (it must stay
  unchanged for ``KONSPEKT_STABLE_SECONDS`` first, so a copy still in progress is never taken).
* **end to end** (``scheduler_e2e``): one lecture at a time through that standalone Airflow, landing
  to report.pdf, with each task's time split into the stage's own work and the task's start-up.
* **throughput** (``standalone_throughput``): N copies of a clip dropped at once into the same
  standalone Airflow, processed in parallel as the pools allow: landing to the last report.pdf.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"

PARSE = r"""
import sys, time
t = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
print(time.perf_counter() - t, bag.dagbag_stats[0].duration.total_seconds() if bag.dagbag_stats else -1)
"""


def dag_parse_times(env: dict, repeats: int = 3) -> dict[str, dict[str, float]]:
    """Per DAG file: the process's whole parse (imports of Airflow included) and Airflow's own
    figure for the file, best of ``repeats`` fresh interpreters."""
    out = {}
    env = dict(env, AIRFLOW__CORE__DAGS_FOLDER=str(DAGS), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               PYTHONPATH=os.pathsep.join(filter(None, [str(DAGS), env.get("PYTHONPATH")])))  # as the processor does
    for path in sorted(DAGS.glob("*.py")):
        runs = []
        for _ in range(repeats):
            proc = subprocess.run([sys.executable, "-c", PARSE, str(path)], env=env, capture_output=True,
                                  text=True, timeout=300, check=True)
            runs.append([float(x) for x in proc.stdout.split()[-2:]])
        out[path.name] = {"process_s": min(r[0] for r in runs), "file_s": min(r[1] for r in runs)}
        print(f"  parse {path.name}: {out[path.name]['file_s']:.2f} s (Airflow's figure), "
              f"{out[path.name]['process_s']:.2f} s with imports", flush=True)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _utc(text: str | None) -> float | None:
    if not text:
        return None
    stamp = datetime.fromisoformat(text)
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()


def _query(db: Path, sql: str, *params) -> list[tuple]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # not migrated yet, or busy
        return []


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise RuntimeError(f"airflow standalone exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)


@contextlib.contextmanager
def standalone(work: Path, model: str, cache: Path):
    """Airflow standalone on ``work/data`` with the sensor and pools as configured; yields (data, db, proc)."""
    shutil.rmtree(work, ignore_errors=True)
    data, home = work / "data", work / "airflow"
    (data / "input").mkdir(parents=True)
    port = free_port()
    env = dict(os.environ, AIRFLOW_HOME=str(home), KONSPEKT_DATA_ROOT=str(data), KONSPEKT_CACHE_DIR=str(cache),
               KONSPEKT_WHISPER_MODEL=model, KONSPEKT_RETRIES="0", HF_HUB_OFFLINE="1",
               AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False", AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__API__HOST="127.0.0.1", AIRFLOW__API__PORT=str(port),
               AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
               VENV=str(Path(sys.executable).parent.parent))
    env.pop("AIRFLOW_CONN_KONSPEKT_DATA", None)
    log = open(work / "standalone.log", "w")
    proc = subprocess.Popen([str(ROOT / "airflow" / "run-local.sh"), "airflow", "standalone"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield data, home / "airflow.db", proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # standalone's own shutdown
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its components, should one outlive it
        except ProcessLookupError:
            pass
        log.close()


def _sensor_waiting(db: Path) -> bool:
    return bool(_query(db, "select r.run_id from dag_run r join task_instance t on t.dag_id = r.dag_id "
                           "and t.run_id = r.run_id where r.dag_id = 'lecture_inbox' and r.state = 'running' "
                           "and t.task_id = 'wait_for_video' and t.state in ('deferred', 'running', "
                           "'up_for_reschedule')"))


def _stage(clip: Path, staged: Path, title: str) -> Path:
    """A copy of ``clip`` with its own bytes (a title): the same bytes again would be archived as done."""
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(clip), "-c", "copy", "-metadata",
                    f"title={title}", str(staged)], check=True)
    return staged


def _finished(data: Path, name: str) -> bool:
    return (data / "output" / name / "manifest.json").is_file() or any((data / "failed").glob(f"{name}*"))


def detection_latency(clip: Path, model: str, cache: Path, work: Path, drops: int = 6) -> dict:
    """Median and each drop's latency, file landing -> extract_audio starting, in standalone Airflow."""
    results = []
    with standalone(work, model, cache) as (data, db, proc):
        for i in range(drops):
            _wait(lambda: _sensor_waiting(db), 600, "the sensor waiting on input/", proc)
            time.sleep(2)  # settled: the trigger is polling
            kind = "moved in" if i % 2 == 0 else "just written"
            staged = _stage(clip, data / f".drop-{i}.tmp{clip.suffix}", f"drop {i}")
            if kind == "moved in":
                old = time.time() - 3600
                os.utime(staged, (old, old))
            landed = time.time()
            staged.rename(data / "input" / f"drop {i:02d}{clip.suffix}")

            def started() -> float | None:
                rows = _query(db, "select t.start_date from task_instance t where t.dag_id = 'lecture_to_pdf' "
                                  "and t.task_id = 'process.extract_audio' and t.map_index >= 0 "
                                  "and t.start_date is not null order by t.start_date desc limit 1")
                stamp = _utc(rows[0][0]) if rows else None
                return stamp if stamp and stamp >= landed - 1 else None

            _wait(lambda: started() is not None, 300, f"drop {i}'s extract_audio", proc)
            results.append({"drop": i, "kind": kind, "latency_s": round(started() - landed, 2)})
            print(f"  detection: drop {i} ({kind}) {results[-1]['latency_s']:.1f} s", flush=True)
            _wait(lambda: _finished(data, f"drop {i:02d}"), 600, f"drop {i} to finish", proc)
    by_kind = {k: [r["latency_s"] for r in results if r["kind"] == k] for k in ("moved in", "just written")}
    return {"drops": results, "median_s": statistics.median(r["latency_s"] for r in results) if results else None,
            "median_by_kind_s": {k: statistics.median(v) for k, v in by_kind.items() if v}}


def standalone_throughput(clip: Path, copies: int, model: str, cache: Path, work: Path) -> dict:
    """``copies`` of ``clip`` dropped at once into standalone Airflow (pools as configured, stages in
    parallel): the wall time from landing to the last report.pdf, and videos per minute."""
    with standalone(work, model, cache) as (data, db, proc):
        _wait(lambda: _sensor_waiting(db), 600, "the sensor waiting on input/", proc)
        names = [f"video {i:02d}" for i in range(copies)]
        staged = [_stage(clip, data / f".{name}.tmp{clip.suffix}", name) for name in names]
        for path in staged:
            old = time.time() - 3600  # finished copies: ready at once
            os.utime(path, (old, old))
        landed, cpu = time.monotonic(), busy_cpu_seconds()
        for name, path in zip(names, staged):
            path.rename(data / "input" / f"{name}{clip.suffix}")
        _wait(lambda: all(_finished(data, n) for n in names), 600 + 120 * copies, "every video to finish", proc)
        wall, cpu = time.monotonic() - landed, busy_cpu_seconds() - cpu
        reports = sum((data / "output" / n / "report.pdf").is_file() for n in names)
    print(f"  throughput (standalone): {reports}/{copies} PDFs in {wall:.1f} s", flush=True)
    # the machine's cores could at best turn its CPU seconds per video into this many videos a minute
    bound = len(os.sched_getaffinity(0)) * 60 / (cpu / reports) if reports and cpu > 0 else None
    return {"videos": copies, "reports": reports, "wall_s": round(wall, 1), "machine_cpu_s": round(cpu, 1),
            "videos_per_min": round(reports / wall * 60, 2), "cpu_bound_videos_per_min": bound and round(bound, 2)}


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has been busy since boot (/proc/stat: all but idle and iowait): its
    difference over a run is what the run cost, the scheduler and every task process included, when
    nothing else runs."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _task_rows(db: Path, run_like: str) -> list[tuple]:
    return _query(db, "select task_id, queued_dttm, start_date, end_date from task_instance "
                      "where dag_id = 'lecture_to_pdf' and run_id like ? and start_date is not null "
                      "order by start_date", run_like)


def scheduler_e2e(clips: list[tuple[str, Path]], model: str, cache: Path, work: Path) -> list[dict]:
    """Each clip dropped alone, one after the other, into standalone Airflow (a real scheduler, the
    LocalExecutor, pools and sensor as configured), as a user runs it: landing (a finished file moved
    into input/) -> its report.pdf published in output/. Per task of its lecture_to_pdf run: the task's
    wall time in Airflow, the stage's own seconds (its result), and the rest: the task's start-up
    (task runner, DAG parse, the stage's interpreter and imports) and teardown."""
    out = []
    with standalone(work, model, cache) as (data, db, proc):
        for name, clip in clips:
            _wait(lambda: _sensor_waiting(db), 600, "the sensor waiting on input/", proc)
            time.sleep(2)  # settled: the trigger is polling
            staged = _stage(clip, data / f".{name}.tmp{clip.suffix}", name)
            old = time.time() - 3600  # a finished copy: ready at once
            os.utime(staged, (old, old))
            landed, cpu = time.time(), busy_cpu_seconds()
            staged.rename(data / "input" / f"{name}{clip.suffix}")
            pdf = data / "output" / name / "report.pdf"
            _wait(pdf.is_file, 3600, f"{name}'s report.pdf", proc)
            wall, cpu = time.time() - landed, busy_cpu_seconds() - cpu
            _wait(lambda: (data / "output" / name / "manifest.json").is_file(), 60, f"{name}'s manifest", proc)
            stages = json.loads((data / "output" / name / "manifest.json").read_text())["stages"]
            time.sleep(3)  # finalize's end_date lands in the database a moment after the files
            tasks = []
            rows = _task_rows(db, f"%__{name}")
            for task_id, queued, start, end in rows:
                stage = task_id.removeprefix("process.")
                took = (_utc(end) or time.time()) - _utc(start)
                own = stages.get(stage, {}).get("seconds")
                # nothing of this video ran between the last task's end and this start: scheduling and start-up
                busy_until = max([_utc(e) for _, _, s, e in rows if e and _utc(s) < _utc(start)] or [landed])
                tasks.append({"task": task_id, "queued_s": round(_utc(start) - (_utc(queued) or _utc(start)), 2),
                              "from_landing_s": round(_utc(start) - landed, 2), "task_s": round(took, 2),
                              "idle_before_s": round(max(0.0, _utc(start) - busy_until), 2),
                              "stage_s": own, "startup_s": round(took - own, 2) if own is not None else None})
            first = next((t["from_landing_s"] for t in tasks if t["task"] == "process.extract_audio"), None)
            out.append({"name": name, "wall_s": round(wall, 1), "machine_cpu_s": round(cpu, 1), "detection_s": first,
                        "tasks": tasks})
            print(f"  scheduler e2e: {name} {wall:.1f} s (first stage at {first} s)", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "bench"))
    from run import WORK, base_env, default_model  # noqa: E402 - the bench's own settings

    from konspekt.sample import speak

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--drops", type=int, default=6)
    p.add_argument("--model", default=default_model())
    p.add_argument("--cache", type=Path, default=ROOT / "cache")
    args = p.parse_args(argv)
    env = base_env(args)
    parse = dag_parse_times(env)
    clip = speak("The water cycle moves water between the sea, the air and the land.", WORK / "clip.mp4")
    detection = detection_latency(clip, args.model, args.cache, WORK / "detection", args.drops)
    print(json.dumps({"parse": parse, "detection": detection}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
