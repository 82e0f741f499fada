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


# --- what a service's container can reach (issue 30, item 2: the networks) -----------------------------

PROBE = r"""
import json, socket, sys
out = {}
for target in json.loads(sys.argv[1]):
    host, port = target.rsplit(":", 1)
    try:
        addresses = sorted({a[4][0] for a in socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)})
    except socket.gaierror:
        out[target] = "unresolved"
        continue
    results = []
    for address in addresses:
        s = socket.socket()
        s.settimeout(3)
        try:
            s.connect((address, int(port)))
            results.append("open")
        except socket.timeout:
            results.append("timeout")
        except OSError as exc:
            results.append(type(exc).__name__)
        finally:
            s.close()
    out[target] = "open" if "open" in results else ",".join(sorted(set(results)))
print(json.dumps(out))
"""


def reach(service: str, *targets: str) -> dict[str, str]:
    """host:port -> "open", or why not ("unresolved", "timeout", "ConnectionRefusedError", ...), as seen
    from inside ``service``'s (first) container: a TCP connect to every address the name resolves to."""
    proc = compose("exec", "-T", service, "python", "-c", PROBE, json.dumps(list(targets)), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def addresses(service: str) -> list[str]:
    """Every IPv4 address of the service's running containers, on every network they are on."""
    out = []
    for cid in compose("ps", "-q", service).stdout.split():
        each = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
        proc = subprocess.run(["docker", "inspect", "-f", each, cid], capture_output=True, text=True, check=True)
        out += proc.stdout.split()
    return out


def unreachable_from(service: str, targets: dict[str, int]) -> dict[str, str]:
    """The services in ``targets`` (name -> port), by name and by each of their addresses, that ``service``
    CAN open: empty when none of them is reachable from it."""
    probes = [f"{name}:{port}" for name, port in targets.items()]
    probes += [f"{address}:{port}" for name, port in targets.items() for address in addresses(name)]
    return {target: result for target, result in reach(service, *probes).items() if result == "open"}
