"""`make demo`: drop a lecture into the input folder, run the inference DAG locally, print the PDF.

    python airflow/demo.py [VIDEO] [--language ru]

Without VIDEO a short spoken lecture is generated with espeak-ng. The DAG runs through
``airflow dags test`` in local mode (no Docker, no scheduler to start). Without a
KONSPEKT_WHISPER_MODEL the local runner's default is used: Whisper ``base``, multilingual, from
the PyPI packages that ship it (:mod:`konspekt.packaged`), so the first run needs no model download.
``--language`` (``make demo LANGUAGE=ru``) sets the language Param; without it the language is detected.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("video", nargs="?", type=Path, help="a lecture video (default: a spoken sample)")
    parser.add_argument("--language", default="", help="the lecture's language, e.g. ru (default: detect)")
    args = parser.parse_args(argv)
    data_root = Path(os.environ.get("KONSPEKT_DATA_ROOT", ROOT / "data")).resolve()
    env = dict(os.environ, KONSPEKT_RUNNER="local", VENV=str(Path(sys.executable).parent.parent))
    if args.language:
        env["KONSPEKT_LANGUAGE"] = args.language  # the language Param's default for this run
    env.setdefault("KONSPEKT_STABLE_SECONDS", "2")
    with tempfile.TemporaryDirectory() as tmp:
        if args.video:
            video = args.video
        else:
            from konspekt.sample import speak, SCRIPT

            video = speak(SCRIPT, Path(tmp) / "sample lecture.mp4")
            print(f"made a spoken sample lecture: {video.name}")
        digest = sha256(video)
        (data_root / "input").mkdir(parents=True, exist_ok=True)
        shutil.copy2(video, data_root / "input" / video.name)
    print(f"dropped {video.name} into {data_root / 'input'}; running the lecture_to_pdf DAG (local mode)…")
    log = Path(os.environ.get("AIRFLOW_HOME") or ROOT / "airflow" / "home") / "demo.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.run([str(ROOT / "airflow" / "run-local.sh"), "airflow", "dags", "test", "lecture_to_pdf"],
                              env=env, stdout=fh, stderr=subprocess.STDOUT)
    for kind in ("output", "failed"):
        for manifest in sorted((data_root / kind).glob("*/manifest.json"), key=os.path.getmtime, reverse=True):
            if json.loads(manifest.read_text(encoding="utf-8"))["video"].get("sha256") == digest:
                if kind == "output":
                    print(manifest.parent / "report.pdf")
                    return 0
                error = json.loads((manifest.parent / "error.json").read_text(encoding="utf-8"))
                print(f"failed: {error['reason']} (see {manifest.parent})", file=sys.stderr)
                return 1
    print(f"no result for {video.name} (airflow exited {proc.returncode}); see {log}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
