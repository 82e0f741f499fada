"""The Airflow UI and API as docker-compose.yml runs them: a login is required, and no default account gets in.

The API server runs for real, on 127.0.0.1 at a free port, with compose's auth manager (FAB)
and a temporary SQLite database. Its admin is created the way compose's ``airflow-init``
has the Airflow image create it (``_AIRFLOW_WWW_USER_*`` -> ``airflow users create``), with
the password from the environment, as ``AIRFLOW_ADMIN_PASSWORD`` in ``.env``. Compose itself
refuses to start without that password (tests/deployment/test_compose.py).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, data: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps(data).encode() if data is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    text = (ROOT / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    admin = re.search(r"\$\{AIRFLOW_ADMIN_USER:-([^}]+)\}", text).group(1)  # compose's default user name
    # what a user puts in .env; one token_urlsafe in 64 starts with "-", which argparse takes for an option
    password = "-" + secrets.token_urlsafe(16)
    home = tmp_path_factory.mktemp("ui")
    env = dict(os.environ, AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__AUTH_MANAGER=compose["x-airflow-common"]["environment"]["AIRFLOW__CORE__AUTH_MANAGER"])
    for argv in (["db", "migrate"],
                 ["users", "create", f"--username={admin}", f"--password={password}", "--role", "Admin",
                  "--firstname", "Airflow", "--lastname", "Admin", "--email", "admin@example.org"]):
        proc = subprocess.run([AIRFLOW, *argv], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    port = free_port()
    log = open(home / "api-server.log", "w")
    server = subprocess.Popen([AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not (_listening(port) and request(f"{url}/api/v2/version")[0] == 200):
            assert server.poll() is None and time.monotonic() < deadline, (home / "api-server.log").read_text()[-3000:]
            time.sleep(1)
        yield url, admin, password
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_api_refuses_anonymous_requests(ui):
    url, _, _ = ui
    for path in ("/api/v2/dags", "/api/v2/dags/lecture_to_pdf/dagRuns", "/api/v2/connections", "/api/v2/config"):
        assert request(url + path)[0] == 401, path


def test_no_default_or_guessed_credentials_get_in(ui):
    url, admin, _ = ui
    for user, password in [("admin", "admin"), ("airflow", "airflow"), (admin, admin), (admin, ""),
                           (admin, "admin"), (admin, "airflow"), (admin, "password")]:
        status, body = request(f"{url}/auth/token", {"username": user, "password": password})
        assert status in (400, 401, 422) and "access_token" not in body, (user, password, status)


def test_the_admin_from_the_environment_logs_in_and_sees_the_api(ui):
    url, admin, password = ui
    status, body = request(f"{url}/auth/token", {"username": admin, "password": password})
    assert status in (200, 201) and body["access_token"], (status, body)
    status, dags = request(f"{url}/api/v2/dags", token=body["access_token"])
    assert status == 200 and "dags" in dags
    assert request(f"{url}/api/v2/dags", token=body["access_token"] + "x")[0] in (401, 403)  # a forged one is refused
