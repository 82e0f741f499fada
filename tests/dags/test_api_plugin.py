"""The upload API as users reach it: plugins/konspekt_api.py, found by Airflow's own plugin manager and
mounted by the api-server's own ``init_plugins`` at /konspekt, with a key made by ``konspekt keys create``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import json, sys
from fastapi import FastAPI
from fastapi.testclient import TestClient
from airflow.api_fastapi.app import init_plugins

app = FastAPI()
init_plugins(app)  # what the api-server does with every plugin's fastapi_apps
client = TestClient(app)
key = sys.argv[1]
page = client.get("/konspekt/")
script = client.get("/konspekt/page.js")  # the page's script is a file of its own (its CSP runs no inline code)
anonymous = client.post("/konspekt/lectures", content=b"x", headers={"X-Filename": "a.mp4"})
name = "%D0%9B%D0%B5%D0%BA%D1%86%D0%B8%D1%8F%201.mp4"  # "Лекция 1.mp4" percent-encoded, as the page sends it
upload = client.post("/konspekt/lectures", content=b"not really a video",
                     headers={"X-Filename": name, "X-API-Key": key})
listed = client.get("/konspekt/lectures", headers={"X-API-Key": key})
print(json.dumps({"page": [page.status_code, "X-API-Key" in script.text], "anonymous": anonymous.status_code,
                  "upload": [upload.status_code, upload.json()], "listed": listed.json()}))
"""


def test_the_api_server_mounts_the_upload_api_and_its_page(tmp_path):
    data = tmp_path / "data"
    (data / "input").mkdir(parents=True)
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "home"), "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "dags"), os.environ.get("PYTHONPATH")])),
           "KONSPEKT_DATA_ROOT": str(data), "KONSPEKT_API_CALLBACK_POLL_SECONDS": "0"}
    env.pop("KONSPEKT_API_KEYS_FILE", None)
    created = subprocess.run([sys.executable, "-m", "konspekt.cli", "keys", "create", "--owner", "lecturer"],
                             env=env, capture_output=True, text=True, check=True).stdout
    key = next(word for word in created.split() if word.startswith("kp_"))
    assert (data / "api" / "keys.json").is_file() and key not in (data / "api" / "keys.json").read_text()
    proc = subprocess.run([sys.executable, "-c", CHECK, key], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["page"] == [200, True]  # the page, which sends the key it is given
    assert got["anonymous"] == 401  # no key, no access
    status, body = got["upload"]
    assert status == 201 and body["input_name"] == "Лекция 1.mp4", body
    assert body["url"] == f"/konspekt/lectures/{body['id']}"  # under the prefix the api-server mounts it at
    assert (data / "input" / "Лекция 1.mp4").read_bytes() == b"not really a video"  # into the watch folder
    assert [item["id"] for item in got["listed"]] == [body["id"]]
    assert got["listed"][0]["status"]["state"] == "waiting"


STARTUP = """
import json, os, threading, time
from fastapi import FastAPI
from fastapi.testclient import TestClient
from airflow.api_fastapi.app import init_plugins

def background():
    return {"poller": any(t.name == "konspekt-callbacks" for t in threading.enumerate()),
            "left_by_a_killed_server": sorted(os.listdir(os.environ["KONSPEKT_DATA_ROOT"] + "/input"))}

app = FastAPI()
init_plugins(app)
before = background()
with TestClient(app):  # the api-server starting: its lifespan, and not one request
    time.sleep(0.2)
    started = background()
print(json.dumps({"before": before, "started": started}))
"""


def test_callbacks_start_with_the_api_server_not_at_its_first_request(tmp_path):
    """After a restart, lectures finishing while nobody calls the API must still be called back: the plugin's
    root middleware starts the poller (and sweeps what a killed server left) when the api-server starts."""
    data = tmp_path / "data"
    (data / "input").mkdir(parents=True)
    stale = data / "input" / ".konspekt-upload-0123456789abcdef.part"
    stale.write_bytes(b"half an upload")
    os.utime(stale, (0, 0))
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "home"), "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "dags"), os.environ.get("PYTHONPATH")])),
           "KONSPEKT_DATA_ROOT": str(data), "KONSPEKT_API_CALLBACK_POLL_SECONDS": "30"}
    proc = subprocess.run([sys.executable, "-c", STARTUP], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["before"] == {"poller": False, "left_by_a_killed_server": [stale.name]}
    assert got["started"] == {"poller": True, "left_by_a_killed_server": []}


def test_the_api_server_comes_up_even_where_the_upload_api_cannot(monkeypatch, caplog):
    import asyncio
    import importlib.util

    monkeypatch.syspath_prepend(str(ROOT / "dags"))  # the api-server has the DAGs folder on its path
    spec = importlib.util.spec_from_file_location("konspekt_api_plugin", ROOT / "plugins" / "konspekt_api.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)

    def broken() -> None:
        raise OSError("the data root is not mounted")

    monkeypatch.setattr(plugin.API, "app", broken)
    seen = []

    async def airflow_app(scope, receive, send):
        seen.append(scope["type"])

    plugin.log.addHandler(caplog.handler)  # Airflow's logging config may stop it propagating to the root
    try:
        asyncio.run(plugin._StartWithTheApiServer(airflow_app)({"type": "lifespan"}, None, None))
    finally:
        plugin.log.removeHandler(caplog.handler)
    assert seen == ["lifespan"]  # Airflow's own start went on
    assert "could not start with the api-server" in caplog.text and "not mounted" in caplog.text
