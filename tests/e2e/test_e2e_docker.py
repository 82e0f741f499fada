"""The inference DAG end to end through Airflow in *docker* mode, against a real Docker engine.

The same drop as tests/e2e/test_e2e_local.py (a spoken lecture, a video without sound, a
half-copied file), but every stage runs as a DockerOperator task in its own image, with
``network_mode="none"``, the data root and the model cache bind-mounted, and the uid
1000. The packaged tiny.en model sits in the mounted cache, as a user's models would.

It needs the engine and the images, so it runs only when asked:
``KONSPEKT_DOCKER_E2E=1`` (``.ci/docker-e2e.sh`` sets it after building the images).
``KONSPEKT_DOCKER_URL`` names the daemon (default unix:///var/run/docker.sock).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import airflow_env, dags_test

from konspekt.docker_api import DockerAPI, DockerError
from konspekt import registry
from konspekt.sample import SCRIPT, word_error_rate

ROOT = Path(__file__).resolve().parents[2]
TASK_UID = TASK_GID = 1000
STAGE_OUTPUTS = ("report.pdf", "report.json", "transcript.json", "transcript.txt", "transcript.srt",
                 "transcript.vtt", "summary.json", "features.csv", "features.json", "outline.json")
pytestmark = pytest.mark.slow


def image_names() -> list[str]:
    """The images of the inference DAG's stages."""
    prefix = os.environ.get("KONSPEKT_IMAGE_PREFIX") or "konspekt"
    tag = os.environ.get("KONSPEKT_IMAGE_TAG") or "latest"
    return [f"{prefix}-{family}:{tag}" for family in dict.fromkeys(s.image for s in registry.LECTURE)]


@pytest.fixture(scope="module")
def docker_api() -> DockerAPI:
    if os.environ.get("KONSPEKT_DOCKER_E2E") != "1":
        pytest.skip("docker-mode end to end runs only with KONSPEKT_DOCKER_E2E=1 (see .ci/docker-e2e.sh)")
    url = os.environ.get("KONSPEKT_DOCKER_URL") or "unix:///var/run/docker.sock"
    api = DockerAPI(url)
    try:
        api.ping()
    except DockerError as exc:  # asked for explicitly: a missing engine is a failure, not a skip
        pytest.fail(f"KONSPEKT_DOCKER_E2E=1 but no Docker engine answers at {url}: {exc}")
    missing = [name for name in image_names() if api.image(name) is None]
    if missing:
        pytest.fail(f"task images missing in {url}: {', '.join(missing)} (build them: images/build.sh)")
    return api


def our_containers(api: DockerAPI) -> list[dict]:
    names = set(image_names())
    ids = {api.image(name)["Id"] for name in names}
    return [c for c in api.containers(all=True) if c.get("Image") in names or c.get("ImageID") in ids]


def docker_mode(url: str, data: Path, cache: Path) -> dict[str, str]:
    """The KONSPEKT_* of docker mode on this host: one machine, so the daemon sees the same paths."""
    return dict(KONSPEKT_RUNNER="docker", KONSPEKT_DOCKER_URL=url,
                KONSPEKT_DATA_MOUNT_SOURCE=str(data), KONSPEKT_CACHE_DIR=str(cache),
                KONSPEKT_CACHE_MOUNT_SOURCE=str(cache), KONSPEKT_DOCKER_USER=f"{TASK_UID}:{TASK_GID}",
                KONSPEKT_WHISPER_MODEL="/root/.cache/whisper/tiny.en")  # the path inside the task container


def chown_tree(path: Path, uid: int, gid: int) -> None:
    for p in (path, *path.rglob("*")):
        os.chown(p, uid, gid, follow_symlinks=False)


@pytest.fixture(scope="module")
def dag_run(docker_api, tmp_path_factory, lecture_mp4, silent_video, tiny_en_model):
    if os.geteuid() != 0:
        pytest.skip("needs root: the data root is handed to uid 1000, as the task containers run")
    before = {c["Id"] for c in our_containers(docker_api)}  # another run's, on a shared engine: not this run's
    base = tmp_path_factory.mktemp("e2e-docker")
    data, cache = base / "data", base / "cache"
    (data / "input").mkdir(parents=True)
    good = data / "input" / "Лекция 1 — the 'water' cycle.mp4"
    bad = data / "input" / "no sound.mp4"
    shutil.copy(lecture_mp4, good)
    shutil.copy(silent_video, bad)
    (data / "input" / "still copying.mp4.part").write_bytes(b"partial")
    # The model cache as users keep it: a CTranslate2 model folder inside the mounted cache.
    shutil.copytree(tiny_en_model, cache / "whisper" / "tiny.en")
    chown_tree(data, TASK_UID, TASK_GID)
    chown_tree(cache, TASK_UID, TASK_GID)

    env = airflow_env(base, data, **docker_mode(docker_api.url, data, cache))
    proc = dags_test(env, timeout=1200)
    (base / "dags-test.log").write_text(proc.stdout + proc.stderr)
    left = [c for c in our_containers(docker_api) if c["Id"] not in before]
    return data, proc, lecture_mp4.read_bytes(), silent_video.read_bytes(), left


def test_every_stage_ran_in_its_image(dag_run):
    _, proc, _, _, _ = dag_run
    log = proc.stdout + proc.stderr
    for image in image_names():
        assert f"Starting docker container from image {image}" in log, (image, log[-3000:])


def test_good_video_becomes_a_pdf_with_the_transcript(dag_run):
    data, proc, _, _, _ = dag_run
    out = data / "output" / "Лекция 1 — the 'water' cycle"
    assert (out / "report.pdf").is_file(), (proc.stdout + proc.stderr)[-5000:]
    text = subprocess.run(["pdftotext", str(out / "report.pdf"), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert word_error_rate(SCRIPT, text.rsplit("Transcript", 1)[-1]) <= 0.15  # the cover's contents name it too
    summary = json.loads((out / "summary.json").read_text())
    assert summary["text"].strip() and summary["text"].split(".")[0] in " ".join(text.split())
    for name in STAGE_OUTPUTS + ("manifest.json",):
        assert (out / name).is_file(), name
    assert not (out / "audio.wav").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(s["status"] == "ok" for s in manifest["stages"].values())


def test_stage_outputs_belong_to_the_task_user_not_root(dag_run):
    data, _, _, _, _ = dag_run
    out = data / "output" / "Лекция 1 — the 'water' cycle"
    owners = {name: ((out / name).stat().st_uid, (out / name).stat().st_gid) for name in STAGE_OUTPUTS}
    assert set(owners.values()) == {(TASK_UID, TASK_GID)}, owners


def test_bad_video_is_quarantined_and_untouched(dag_run):
    data, _, _, silent_bytes, _ = dag_run
    failed = data / "failed" / "no sound"
    assert (failed / "no sound.mp4").read_bytes() == silent_bytes
    error = json.loads((failed / "error.json").read_text())
    assert error["stage"] == "extract_audio" and "no audio track" in error["reason"]


def test_inputs_archived_and_nothing_left_behind(dag_run):
    data, _, good_bytes, _, containers = dag_run
    [archived] = (data / "processed").rglob("*.mp4")
    assert archived.read_bytes() == good_bytes
    assert [p.name for p in (data / "input").iterdir()] == ["still copying.mp4.part"]
    assert not any((data / "processing").iterdir())
    assert containers == [], [(c["Names"], c["Image"], c["Status"]) for c in containers]


def test_doctor_finds_this_setup_healthy(dag_run, docker_api):
    data, _, _, _, _ = dag_run
    cache = data.parent / "cache"
    env = dict(os.environ, KONSPEKT_RUNNER="docker", KONSPEKT_DOCKER_URL=docker_api.url,
               KONSPEKT_DATA_MOUNT_SOURCE=str(data), KONSPEKT_CACHE_MOUNT_SOURCE=str(cache),
               KONSPEKT_DOCKER_USER=f"{TASK_UID}:{TASK_GID}", KONSPEKT_WHISPER_MODEL="/root/.cache/whisper/tiny.en")
    proc = subprocess.run([sys.executable, "-m", "konspekt.doctor", "--json"], env=env, capture_output=True,
                          text=True, timeout=600)
    report = json.loads(proc.stdout.splitlines()[-1])
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert proc.returncode == 0 and report["ok"], report
    assert statuses == {"daemon": "ok", "images": "ok", "data folder": "ok", "ffmpeg": "ok", "openSMILE": "ok",
                        "gpu": "skip", "whisper model": "ok", "summary model": "warn"}


SOURCE_PROBE = """
import errno, pathlib, sys
video = pathlib.Path(sys.argv[sys.argv.index("--video-dir") + 1])
(video / "written.txt").write_text("the stage's own folder is writable")
attempts = {"append": lambda: open(video / "source" / "lecture.mp4", "ab"),
            "create": lambda: (video / "source" / "new.txt").write_text("x"),
            "delete": lambda: (video / "source" / "lecture.mp4").unlink()}
for name, attempt in attempts.items():
    try:
        attempt()
    except OSError as exc:
        assert exc.errno == errno.EROFS, (name, exc)
    else:
        sys.exit(f"source/ is writable: {name} succeeded")
print("source/ is read-only")
"""


def run_probe(docker_api, tmp_path: Path, data: Path, stage: str, probe: str) -> str:
    """Run ``probe`` (Python) through the factory's operator for ``stage`` on the video processing/c1/lecture,
    on the real engine, as the task user; its output."""
    chown_tree(data, TASK_UID, TASK_GID)
    script = (f"from konspekt_dags.factory import stage_task\n"
              f"op = stage_task({stage!r}, '/data/processing/c1/lecture')\n"
              f"op.command = ['python', '-c', {probe!r}, '--video-dir', '/data/processing/c1/lecture']\n"
              f"op.execute({{}})\n")
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'dags'}:{ROOT / 'src'}", AIRFLOW_HOME=str(tmp_path / "airflow"),
               KONSPEKT_RUNNER="docker", KONSPEKT_DOCKER_URL=docker_api.url,
               KONSPEKT_DATA_ROOT=str(data), KONSPEKT_DATA_MOUNT_SOURCE=str(data),
               KONSPEKT_CACHE_DIR=str(tmp_path), KONSPEKT_CACHE_MOUNT_SOURCE=str(tmp_path),
               KONSPEKT_DOCKER_USER=f"{TASK_UID}:{TASK_GID}")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    return log


def test_a_stage_container_cannot_change_the_users_file(docker_api, tmp_path):
    """The factory's operator on the real engine: the video's folder is writable, its source/ is not.

    The files belong to the task user, so only the read-only mount stands in the way.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root: the data root is handed to uid 1000, as the task containers run")
    data = tmp_path / "data"
    video = data / "processing" / "c1" / "lecture"
    (video / "source").mkdir(parents=True)
    (video / "source" / "lecture.mp4").write_bytes(b"the user's bytes")
    log = run_probe(docker_api, tmp_path, data, "extract_audio", SOURCE_PROBE)
    assert "source/ is read-only" in log, log[-3000:]
    assert (video / "written.txt").is_file()
    assert [p.name for p in (video / "source").iterdir()] == ["lecture.mp4"]
    assert (video / "source" / "lecture.mp4").read_bytes() == b"the user's bytes"


VISIBILITY_PROBE = """
import os, sys
seen = sorted(os.path.join(d, n) for d, dirs, files in os.walk("/data") for n in dirs + files)
print("SEEN " + repr(seen))
"""


def test_a_stage_container_sees_only_its_own_video(docker_api, tmp_path):
    """On the real engine: of the data root, a stage container sees its own video's folder and nothing else:
    not another user's upload, input/, failed/, train/ or models/."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the data root is handed to uid 1000, as the task containers run")
    data = tmp_path / "data"
    video = data / "processing" / "c1" / "lecture"
    (video / "source").mkdir(parents=True)
    (video / "source" / "lecture.mp4").write_bytes(b"mine")
    for other in ("processing/c2/other/source/theirs.mp4", "input/next.mp4", "failed/bad/bad.mp4",
                  "train/set/metadata.csv", "models/run/ct2/model.bin", "processed/c0/old.mp4"):
        (data / other).parent.mkdir(parents=True, exist_ok=True)
        (data / other).write_bytes(b"not for this stage")
    log = run_probe(docker_api, tmp_path, data, "render_pdf", VISIBILITY_PROBE)
    assert "SEEN " in log, log[-3000:]
    seen = ast.literal_eval(re.search(r"SEEN (\[[^\]]*\])", log).group(1))
    assert seen == ["/data/processing", "/data/processing/c1", "/data/processing/c1/lecture",
                    "/data/processing/c1/lecture/source", "/data/processing/c1/lecture/source/lecture.mp4"], seen
