"""Throughput of the compose stack's celery profile with 1, 2, ... workers (README: Scaling out).

Against a running stack on the celery profile (`make compose-up` with COMPOSE_PROFILES=celery and
AIRFLOW_EXECUTOR=CeleryExecutor in .env; run as root, from the checkout):

    python bench/workers.py --workers 1,2 --lectures 8

For each worker count: `--scale worker=N`, then N lectures of about 30 s of speech dropped at once
into airflow/data/input/; the time from the drop to the last report.pdf, and videos per minute. Each
worker's engine pulls the images before the timed drop (one warm-up lecture). Prints a Markdown table
and appends it to bench/results/<date>-workers.md. Not part of the tests.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e" / "compose"))
from compose_stack import DATA, compose, drop, env_file, wait_for  # noqa: E402

from konspekt.sample import SCRIPT, speak  # noqa: E402


def scale(workers: int) -> None:
    proc = compose("up", "-d", "--no-deps", "--scale", f"worker={workers}", "worker", timeout=600)
    assert proc.returncode == 0, proc.stderr
    wait_for(f"{workers} healthy worker(s)", lambda: healthy_workers() == workers, 300, every=5)


def healthy_workers() -> int:
    ids = compose("ps", "-q", "worker").stdout.split()
    states = [subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}", cid], capture_output=True,
                             text=True).stdout.strip() for cid in ids]
    return sum(state == "healthy" for state in states)


def batch(lecture: Path, count: int, uid: int, timeout: float) -> float:
    """Seconds from dropping ``count`` copies at once to the last one's report.pdf."""
    tag = uuid.uuid4().hex[:6]
    names = [f"bench workers {tag} {i}" for i in range(count)]
    start = time.monotonic()
    for name in names:
        drop(lecture, f"{name}.mp4", uid)
    for name in names:
        report = DATA / "output" / name / "report.pdf"
        wait_for(f"{report}", report.is_file, timeout - (time.monotonic() - start), every=0.5)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--lectures", type=int, default=8, help="lectures dropped at once per count")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    env = env_file()
    if env.get("AIRFLOW_EXECUTOR") != "CeleryExecutor":
        sys.exit("the stack is not on the celery profile: set COMPOSE_PROFILES=celery and "
                 "AIRFLOW_EXECUTOR=CeleryExecutor in .env, then make compose-up")
    uid = int(env["AIRFLOW_UID"])
    lecture = speak(SCRIPT, ROOT / "bench" / ".media" / "workers-lecture.mp4")
    rows = []
    for workers in [int(n) for n in args.workers.split(",")]:
        scale(workers)
        batch(lecture, workers, uid, args.timeout)  # warm-up: each engine pulls what its tasks need
        seconds = batch(lecture, args.lectures, uid, args.timeout)
        rows.append((workers, args.lectures, seconds, args.lectures / seconds * 60))
        print(f"{workers} worker(s): {args.lectures} lectures in {seconds:.1f} s", flush=True)
    table = ["| workers | lectures at once | drop to last report.pdf | videos per minute |", "|---|---|---|---|"]
    table += [f"| {w} | {n} | {s:.1f} s | {v:.2f} |" for w, n, s, v in rows]
    cpus = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    text = (f"\n## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {cpus} CPUs, "
            f"a {len(SCRIPT.split())}-word lecture (espeak-ng), model {env.get('KONSPEKT_WHISPER_MODEL', '?')}\n\n"
            + "\n".join(table) + "\n")
    print(text)
    out = ROOT / "bench" / "results" / f"{datetime.now(timezone.utc):%Y-%m-%d}-workers.md"
    with out.open("a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
