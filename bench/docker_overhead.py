"""What running a stage in its task container costs, against the same stage as a local subprocess.

Used by ``bench/run.py --docker URL`` (or run alone: ``python bench/docker_overhead.py URL``).
Each stage of the 1-minute lecture runs twice, interleaved: in its image with the task
containers' lock-down (factory.container_lockdown, uid 1000, no network, the cache
read-only), and locally. For the container it times the Docker API steps:

* ``start_s``: create + start, until the container's process runs;
* ``run_s``: start until the container exits (interpreter, imports, model load, the work);
* ``teardown_s``: removing the exited container;
* ``overhead_s``: container total minus the local subprocess's wall time.

Model load is timed apart, inside the asr image and on the host: loading the Whisper model
with faster-whisper, imports included. Needs the images (``make images``) and root (the
work folder is handed to uid 1000, as under compose).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from konspekt import registry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "dags"))
STAGES = registry.lecture_names()  # in run order
TASK_USER = (1000, 1000)
LOAD_WHISPER = ("import sys, time; t = time.perf_counter(); from faster_whisper import WhisperModel; "
                "WhisperModel(sys.argv[1], device='cpu', compute_type='int8'); print(time.perf_counter() - t)")


def _chown(path: Path) -> None:
    for p in (path, *path.rglob("*")):
        os.chown(p, *TASK_USER, follow_symlinks=False)


def _video_dir(base: Path, mp4: Path) -> Path:
    video = base / "video"
    shutil.rmtree(base, ignore_errors=True)
    (video / "source").mkdir(parents=True)
    shutil.copy(mp4, video / "source" / mp4.name)
    (video / "video.json").write_text(json.dumps({"name": mp4.name, "source": f"source/{mp4.name}"}))
    return video


def _stage_args(stage: str, model: str) -> list[str]:
    return ["--model", model, "--device", "cpu", "--beam-size", "5"] if stage == "transcribe" else []


def run_container(client, image: str, argv: list[str], data: Path, cache: Path) -> dict:
    from konspekt_dags.factory import container_lockdown

    lockdown = container_lockdown(f"{TASK_USER[0]}:{TASK_USER[1]}")
    host_config = client.create_host_config(
        binds={str(data): {"bind": "/data", "mode": "rw"}, str(cache): {"bind": "/root/.cache", "mode": "ro"}},
        network_mode="none", read_only=True, tmpfs=lockdown["tmpfs"], cap_drop=lockdown["cap_drop"],
        security_opt=lockdown["security_opt"])
    t0 = time.perf_counter()
    container = client.create_container(image, argv, user=f"{TASK_USER[0]}:{TASK_USER[1]}", host_config=host_config,
                                        environment={"HF_HUB_OFFLINE": "1", "MPLCONFIGDIR": "/tmp/matplotlib"})
    client.start(container)
    t1 = time.perf_counter()
    status = client.wait(container)["StatusCode"]
    t2 = time.perf_counter()
    logs = client.logs(container).decode(errors="replace")
    client.remove_container(container)
    t3 = time.perf_counter()
    return {"start_s": t1 - t0, "run_s": t2 - t1, "teardown_s": t3 - t2, "total_s": t3 - t0, "rc": status,
            "logs": logs}


def measure(docker_url: str, mp4: Path, model: str, work: Path) -> dict:
    """Per stage: container steps, the local wall time, and the difference; plus the model load."""
    import docker

    from konspekt_dags.settings import Settings

    client = docker.APIClient(base_url=docker_url)
    images = {stage: Settings().image_for(stage) for stage in STAGES}
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(model, cache / "whisper" / "model")
    in_container_model = "/root/.cache/whisper/model"
    _video_dir(work / "docker", mp4)  # the containers see it as /data/video
    local_dir = _video_dir(work / "local", mp4)
    _chown(work / "docker")
    _chown(cache)
    stages = {}
    for stage in STAGES:
        argv = ["python", "-m", f"konspekt.stages.{stage}", "--video-dir", "/data/video", "--force",
                *_stage_args(stage, in_container_model)]
        box = run_container(client, images[stage], argv, work / "docker", cache)
        t0 = time.perf_counter()
        local = subprocess.run([sys.executable, "-m", f"konspekt.stages.{stage}", "--video-dir", str(local_dir),
                                "--force", *_stage_args(stage, model)], capture_output=True, text=True,
                               env=dict(os.environ, HF_HUB_OFFLINE="1"))
        local_s = time.perf_counter() - t0
        if box["rc"] or local.returncode:
            print(f"  docker {stage}: rc {box['rc']} (local rc {local.returncode})\n{box['logs'][-2000:]}", flush=True)
        box.pop("logs")
        stages[stage] = {**box, "image": images[stage], "local_s": local_s, "overhead_s": box["total_s"] - local_s}
        print(f"  docker {stage:14s} start {box['start_s']:.2f}s run {box['run_s']:.1f}s teardown "
              f"{box['teardown_s']:.2f}s | local {local_s:.1f}s | overhead {stages[stage]['overhead_s']:+.1f}s",
              flush=True)
    load = run_container(client, images["transcribe"], ["python", "-c", LOAD_WHISPER, in_container_model],
                         work / "docker", cache)
    host = subprocess.run([sys.executable, "-c", LOAD_WHISPER, model], capture_output=True, text=True, check=True)
    model_load = {"container_s": float(load["logs"].strip().splitlines()[-1]) if load["rc"] == 0 else None,
                  "host_s": float(host.stdout.strip().splitlines()[-1])}
    print(f"  whisper model load: container {model_load['container_s']} s, host {model_load['host_s']:.2f} s", flush=True)
    return {"stages": stages, "model_load": model_load}


def table(result: dict) -> str:
    rows = ["", "| docker task (1-min lecture) | start s | run s | teardown s | container total s | local s | "
                "overhead s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for stage, r in result["stages"].items():
        rows.append(f"| {stage} (`{r['image']}`) | {r['start_s']:.2f} | {r['run_s']:.1f} | {r['teardown_s']:.2f} | "
                    f"{r['total_s']:.1f} | {r['local_s']:.1f} | {r['overhead_s']:+.1f} |")
    total = sum(r["overhead_s"] for r in result["stages"].values())
    rows.append(f"| **all six** | | | | | | **{total:+.1f}** |")
    load = result["model_load"]
    rows.append(f"| Whisper model load (imports included) | | {load['container_s'] or float('nan'):.2f} | | | "
                f"{load['host_s']:.2f} | |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    import run as bench  # bench/run.py, beside this file

    res = measure(sys.argv[1], bench.lecture(1), bench.default_model(), bench.WORK / "docker")
    print(table(res))
