"""The running compose stack, as the end-to-end tests reach it: its .env, `docker compose`, Airflow's REST
API, the watch folder. Shared by test_stack.py (the default stack) and test_celery.py (the celery profile).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from konspekt.sample import SCRIPT, word_error_rate

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "airflow" / "data"
VIDEO_TIMEOUT = 900  # a lecture through six task containers in docker-proxy, with a queue before it

# --- the stack ----------------------------------------------------------------------------------

def env_file() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env").read_text().splitlines():
        if line.strip() and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.split("  #")[0].strip()
    return values


def env_value(key: str) -> str:
    return env_file()[key]


def compose(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    files = ["-f", "docker-compose.yml"]
    for extra in os.environ.get("KONSPEKT_COMPOSE_FILES", "").split():
        files += ["-f", extra]
    v2 = subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    cmd = ["docker", "compose"] if v2 else ["docker-compose"]
    # the profiles .env turns on (the celery profile's workers), as airflow/compose.sh passes them
    profiles = os.environ.get("COMPOSE_PROFILES") or env_file().get("COMPOSE_PROFILES", "")
    env = {**os.environ, "COMPOSE_PROFILES": profiles}
    return subprocess.run([*cmd, *files, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


class Api:
    """Airflow's REST API with the admin's token, as a script of a user's would call it."""

    def __init__(self, url: str, user: str, password: str):
        self.url = url
        self.token = self.call("POST", "/auth/token", {"username": user, "password": password})["access_token"]

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if getattr(self, "token", None):
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from None

    def runs(self, dag_id: str) -> list[dict]:
        return self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-start_date&limit=20")["dag_runs"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def tasks(self, dag_id: str, run_id: str) -> list[dict]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances?limit=100"
        return self.call("GET", path)["task_instances"]


def stack_info() -> dict:
    """Where the stack listens and who runs it, from .env (the run's state goes in ``state``)."""
    if os.geteuid() != 0:
        pytest.skip("reads files owned by the stack's uid: run as root")
    env = env_file()
    url = f"http://127.0.0.1:{env.get('AIRFLOW_UI_PORT') or 8080}"
    return {"url": url, "user": env.get("AIRFLOW_ADMIN_USER") or "konspekt",
            "password": env["AIRFLOW_ADMIN_PASSWORD"], "uid": int(env["AIRFLOW_UID"]), "state": {}}


# The fixtures both test modules use (imported there by name: a conftest.py here would shadow tests/conftest.py).

@pytest.fixture(scope="module")
def stack() -> dict:
    return stack_info()


@pytest.fixture(scope="module")
def api(stack) -> Api:
    return Api(stack["url"], stack["user"], stack["password"])


def drop(source: Path | bytes, name: str, uid: int) -> Path:
    """Copy into input/ as a user would: under a temporary name first, then renamed into place.

    Each copy of a video gets its own bytes (a comment tag): bytes already published are only
    archived, not processed again, and every test here wants a lecture processed.
    """
    partial, final = DATA / "input" / f"{name}.part", DATA / "input" / name
    if isinstance(source, bytes):
        partial.write_bytes(source)
    else:
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-c", "copy",
                        "-metadata", f"comment={name}", "-f", "mp4", str(partial)], check=True)
    os.chown(partial, uid, 0)
    partial.rename(final)
    return final


def wait_for(what: str, check, timeout: float, every: float = 3.0, on_timeout=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}. {on_timeout()}")


def task_containers() -> list[str]:
    """Containers of the konspekt task images inside docker-proxy (running or not)."""
    proc = compose("exec", "-T", "docker-proxy", "docker", "ps", "-a", "--format", "{{.Image}} {{.Status}} {{.Names}}")
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line.startswith("konspekt-")]


def container_names() -> set[str]:
    return {line.rsplit(" ", 1)[-1] for line in task_containers()}  # the status text changes with time


def transcript_wer(out: Path) -> float:
    return word_error_rate(SCRIPT, (out / "transcript.txt").read_text())


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:6]}"
