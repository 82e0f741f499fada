"""Every stage runs under the lock-down its task container gets, with no Docker engine needed.

A task container (dags/konspekt_dags/factory.py) runs as a non-root uid with every
capability dropped, ``no-new-privileges``, no network, a read-only root filesystem, a
tmpfs on /tmp, the data root read-write and the model cache read-only. Here the same
walls are built with Linux namespaces (``unshare`` + ``setpriv``, as root): the host's
root filesystem remounted read-only, the data root bound at /srv, the cache bound
read-only at /media, a fresh tmpfs on /tmp, an empty network namespace. The stages then
run one after the other on a short spoken clip; models come from a read-only Hugging
Face cache by hub id, offline, as they do from the shared cache in production.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import new_video_dir
from konspekt import registry
from konspekt.sample import speak

ROOT = Path(__file__).resolve().parents[2]
TASK_UID = TASK_GID = 1000
DATA, CACHE = "/srv", "/media"  # empty folders that exist on Debian, used as mount points
# konspekt's source, as the images hold it in their venv: the clone may live under /tmp, which the
# sandbox covers with a fresh tmpfs (its editable install would then point nowhere)
SOURCE = "/usr/local/src"
pytestmark = pytest.mark.slow


def sandbox_available() -> str | None:
    if os.geteuid() != 0:
        return "needs root to build the namespaces"
    for tool in ("unshare", "setpriv", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is missing"
    for mount_point in (DATA, CACHE, SOURCE):
        if not Path(mount_point).is_dir() or any(Path(mount_point).iterdir()):
            return f"{mount_point} is not an empty folder"
    probe = subprocess.run(["unshare", "-m", "-n", "true"], capture_output=True)
    return None if probe.returncode == 0 else f"unshare fails here: {probe.stderr.decode().strip()}"


def locked_down(data: Path, cache: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """Run ``argv`` as the task container would: data at /srv, cache at /media (read-only)."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/root", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": SOURCE,
        # the images' cache variables, pointed at the read-only mount (images/*/Dockerfile)...
        "XDG_CACHE_HOME": CACHE, "HF_HOME": f"{CACHE}/huggingface", "TORCH_HOME": f"{CACHE}/torch",
        # ...and what the factory sets on top
        "MPLCONFIGDIR": "/tmp/matplotlib",
    }
    setup = " && ".join([
        "mount --make-rprivate /",
        f"mount --bind {q(data)} {DATA}",
        f"mount --bind {q(cache)} {CACHE} && mount -o remount,bind,ro {CACHE}",
        f"mount --bind {q(ROOT / 'src')} {SOURCE} && mount -o remount,bind,ro {SOURCE}",
        *reach_interpreter(data.parent / "interpreter"),
        "mount -o remount,bind,ro /",
        "mount -t tmpfs -o rw,nosuid,nodev,mode=1777 tmpfs /tmp",
        f"cd {DATA}",
        f"exec setpriv --reuid {TASK_UID} --regid {TASK_GID} --clear-groups --no-new-privs "
        "--inh-caps=-all --bounding-set=-all -- env -i " + " ".join(q(f"{k}={v}") for k, v in env.items())
        + " " + " ".join(q(a) for a in argv),
    ])
    return subprocess.run(["unshare", "-m", "-n", "sh", "-c", setup], capture_output=True, text=True,
                          timeout=600)


def reach_interpreter(spare: Path) -> list[str]:
    """Mounts that let the task uid reach this interpreter when it lives under root's 0700 home (pyenv).

    The task images keep theirs in /opt/venv; here /root is replaced by a read-only tmpfs
    holding only the interpreter's folder.
    """
    real = Path(os.path.realpath(sys.executable))
    if Path("/root") not in real.parents:
        return []
    top = Path("/root") / real.relative_to("/root").parts[0]
    spare.mkdir(exist_ok=True)
    return [f"mount --bind {q(top)} {q(spare)}", "mount -t tmpfs -o mode=0755 tmpfs /root",
            f"mkdir {q(top)}", f"mount --bind {q(spare)} {q(top)}", "mount -o remount,ro /root"]


def q(value) -> str:
    import shlex

    return shlex.quote(str(value))


def hub_cache_entry(hub: Path, repo_id: str, files: Path) -> None:
    """``files`` laid out as huggingface_hub keeps a downloaded snapshot of ``repo_id``."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(files, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, tiny_en_model, tiny_bart_dir):
    reason = sandbox_available()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("lockdown")
    data, cache = base / "data", base / "cache"
    clip = speak("Gradient descent lowers the loss one small step at a time. "
                 "The learning rate sets the size of each step.", base / "clip.mp4")
    video = new_video_dir(data / "processing" / "c1", clip, name="clip.mp4")
    hub = cache / "huggingface" / "hub"
    hub_cache_entry(hub, "konspekt-test/whisper-tiny.en", Path(tiny_en_model))
    hub_cache_entry(hub, "konspekt-test/tiny-bart", Path(tiny_bart_dir))
    for path in (data, *data.rglob("*"), cache, *cache.rglob("*")):  # both belong to the task user, as in compose
        os.chown(path, TASK_UID, TASK_GID)
    os.chmod(base, 0o755)
    return data, cache, video


def test_the_sandbox_has_the_containers_walls(sandbox):
    data, cache, _ = sandbox
    probe = ("import os, socket, pathlib\n"
             "def denied(fn):\n"
             "    try: fn(); return False\n"
             "    except OSError: return True\n"
             "print(os.getuid(), denied(lambda: open('/media/x', 'w')), denied(lambda: open('/var/tmp/x', 'w')),"
             " denied(lambda: socket.create_connection(('1.1.1.1', 53), timeout=2)),"
             " not denied(lambda: open('/tmp/x', 'w')), not denied(lambda: open('/srv/x', 'w')),"
             " open('/proc/self/status').read().split('CapEff:')[1].split()[0])")
    proc = locked_down(data, cache, ["python", "-c", probe])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(TASK_UID), "True", "True", "True", "True", "True", "0000000000000000"]
    (data / "x").unlink()


STAGE_ARGS = {  # each stage's own options (none: its defaults); which stages run comes from the registry
    "transcribe": ["--model", "konspekt-test/whisper-tiny.en", "--language", "en", "--device", "cpu",
                   "--backend", "faster-whisper", "--beam-size", "1"],
    # a short clip: a lower --min-length keeps it summarised rather than returned whole
    "summarize": ["--method", "abstractive", "--model", "konspekt-test/tiny-bart", "--device", "cpu", "--min-length", "8"],
}


@pytest.fixture(scope="module")
def stage_runs(sandbox):
    data, cache, video = sandbox
    inside = f"{DATA}/{video.relative_to(data).as_posix()}"
    runs = {}
    for stage in registry.LECTURE:  # in DAG order: each reads what the ones before wrote
        runs[stage.name] = locked_down(data, cache, ["python", "-m", stage.module, "--video-dir", inside,
                                                    *STAGE_ARGS.get(stage.name, [])])
    return video, runs


@pytest.mark.parametrize("stage", registry.lecture_names())
def test_every_stage_runs_locked_down(stage_runs, stage):
    video, runs = stage_runs
    proc = runs[stage]
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((video / "stages" / f"{stage}.json").read_text())
    assert result["status"] == "ok"


def test_models_came_from_the_read_only_cache(stage_runs):
    video, _ = stage_runs
    transcript = json.loads((video / "transcript.json").read_text())
    assert "gradient" in " ".join(s["text"] for s in transcript["segments"]).lower()
    summary = json.loads((video / "summary.json").read_text())
    assert summary["method"] == "abstractive" and summary["model"] == "konspekt-test/tiny-bart"
    assert (video / "report.pdf").stat().st_uid == TASK_UID
