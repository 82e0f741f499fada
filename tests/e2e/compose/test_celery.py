"""The celery profile: CeleryExecutor, Redis, two workers each running its tasks on a Docker engine of its own.

``.ci/compose-e2e.sh`` switches the stack to it after test_stack.py (COMPOSE_PROFILES=celery,
AIRFLOW_EXECUTOR=CeleryExecutor, KONSPEKT_WORKERS=2, a 30 s heartbeat timeout) and runs this file with
``KONSPEKT_CELERY_E2E=1``. Eight lectures are dropped at once; while one of them is being transcribed, the
worker running that transcription is killed (and stays down, as a machine that died). Every lecture is
still published, once, and the killed transcription finished on the other worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse

import pytest
from compose_stack import (  # noqa: F401 (api, stack: fixtures)
    DATA,
    VIDEO_TIMEOUT,
    Api,
    api,
    compose,
    drop,
    stack,
    unique,
    unreachable_from,
    wait_for,
)

from konspekt.sample import SCRIPT, speak, word_error_rate

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("KONSPEKT_CELERY_E2E") != "1",
                                 reason="runs against the compose stack's celery profile: .ci/compose-e2e.sh")]
LECTURES = 8
SHORT_SCRIPT = SCRIPT  # about 35 s of the sample lecture
LONG_SCRIPT = " ".join([SCRIPT] * 6)  # about 3.5 min: its transcription runs long enough to be cut off


def workers() -> dict[str, str]:
    """hostname -> container id of each running worker (a task instance's ``hostname`` is its worker's)."""
    ids = compose("ps", "-q", "worker").stdout.split()
    out = {}
    for cid in ids:
        inspect = subprocess.run(["docker", "inspect", "-f", "{{.Config.Hostname}} {{.State.Running}}", cid],
                                 capture_output=True, text=True, check=True).stdout.split()
        if inspect[1] == "true":
            out[inspect[0]] = cid
    return out


def task_tries(api: Api, run_id: str, task_id: str, map_index: int) -> list[dict]:
    """Every try of a (mapped) task instance, the current one included, with the hostname each ran on."""
    path = (f"/api/v2/dags/lecture_to_pdf/dagRuns/{urllib.parse.quote(run_id, safe='')}"
            f"/taskInstances/{task_id}/{map_index}/tries")
    return api.call("GET", path)["task_instances"]


# Run in a worker (on the celery network): Redis without and with the password, the registry's /v2/ without
# a login, with a wrong one and with REGISTRY_USER/REGISTRY_PASSWORD.
LOGINS = r"""
import base64, json, os, socket, urllib.error, urllib.parse, urllib.request

def redis(*commands):
    with socket.create_connection(("redis", 6379), timeout=10) as s:
        replies = []
        for command in commands:
            s.sendall(command.encode() + b"\r\n")
            replies.append(s.recv(200).decode().strip())
        return replies

def registry(login=None):
    request = urllib.request.Request("http://registry:5000/v2/")
    if login:
        request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code

password = urllib.parse.urlsplit(os.environ["AIRFLOW__CELERY__BROKER_URL"]).password
user = os.environ["REGISTRY_USER"]
print(json.dumps({"redis": redis("PING"), "redis_with_password": redis("AUTH " + password, "PING"),
                  "registry": registry(), "registry_wrong_login": registry(user + ":wrong"),
                  "registry_login": registry(user + ":" + os.environ["REGISTRY_PASSWORD"])}))
"""


def test_redis_and_the_registry_ask_for_a_login_and_the_api_server_reaches_neither(stack):
    """Issue 30, item 2: the broker and the registry are behind logins (from .env), and the api-server has no
    network in common with them (nor with docker-proxy), by name or by address."""
    assert unreachable_from("airflow-apiserver", {"redis": 6379, "registry": 5000, "docker-proxy": 2375}) == {}
    proc = compose("exec", "-T", "worker", "python", "-c", LOGINS, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["redis"][0].startswith("-NOAUTH"), seen  # an unauthenticated PING
    assert seen["redis_with_password"] == ["+OK", "+PONG"], seen
    assert seen["registry"] == 401 and seen["registry_wrong_login"] == 401, seen  # anonymous: refused
    assert seen["registry_login"] == 200, seen


def test_eight_lectures_on_two_workers_survive_one_killed_mid_transcription(api, stack, tmp_path_factory):
    hosts = workers()
    assert len(hosts) == 2, f"the celery profile should run two workers: {hosts}"
    media = tmp_path_factory.mktemp("media")
    long_lecture, short_lecture = speak(LONG_SCRIPT, media / "long.mp4"), speak(SHORT_SCRIPT, media / "short.mp4")
    names = [unique(f"CI celery {i}") for i in range(LECTURES)]
    scripts = {name: LONG_SCRIPT if i == 0 else SHORT_SCRIPT for i, name in enumerate(names)}
    for name in names:  # all at once; the long one first
        drop(long_lecture if scripts[name] == LONG_SCRIPT else short_lecture, f"{name}.mp4", stack["uid"])
    runs = {}

    def ours() -> dict[str, str]:  # our runs: name -> run id (run ids end with the video's name)
        for run in api.call("GET", "/api/v2/dags/lecture_to_pdf/dagRuns?order_by=-start_date&limit=50")["dag_runs"]:
            for name in names:
                if run["dag_run_id"].endswith("__" + name.replace(" ", "_")):
                    runs[name] = run["dag_run_id"]
        return runs

    def transcribing():  # (run id, map index, hostname) of the long lecture's transcription, running now
        if (run_id := ours().get(names[0])) is not None:
            for task in api.tasks("lecture_to_pdf", run_id):
                if task["task_id"] == "process.transcribe" and task["state"] == "running" and task["hostname"] in hosts:
                    return run_id, task["map_index"], task["hostname"]
        return None

    run_id, map_index, victim = wait_for("the long lecture's transcription running on a worker", transcribing,
                                         VIDEO_TIMEOUT, every=1,
                                         on_timeout=lambda: compose("logs", "--tail", "60", "worker").stdout)
    survivor = next(host for host in hosts if host != victim)
    # The worker machine dies and stays down: no restart policy brings it back.
    subprocess.run(["docker", "update", "--restart", "no", hosts[victim]], check=True, capture_output=True)
    subprocess.run(["docker", "kill", hosts[victim]], check=True, capture_output=True)
    try:
        for name in names:
            out = DATA / "output" / name
            wait_for(f"output/{name}/report.pdf", lambda out=out: (out / "report.pdf").is_file(), VIDEO_TIMEOUT,
                     on_timeout=lambda: compose("logs", "--tail", "80", "airflow-scheduler", "worker").stdout)
        # the transcription cut off with its worker was retried, and finished on the other one
        tries = task_tries(api, run_id, "process.transcribe", map_index)
        assert [t["hostname"] for t in tries][0] == victim, tries
        assert tries[-1]["state"] == "success" and tries[-1]["hostname"] == survivor and len(tries) >= 2, tries
        # the eight videos' task instances ran on both workers
        ran_on = {t["hostname"] for rid in ours().values() for t in api.tasks("lecture_to_pdf", rid)} - {None, ""}
        ran_on |= {t["hostname"] for t in tries}
        assert ran_on == {victim, survivor}, ran_on
        # each video published once, with a usable transcript; nothing lost, nothing left behind
        for name in names:
            out = DATA / "output" / name
            assert word_error_rate(scripts[name], (out / "transcript.txt").read_text()) <= 0.15, out
            assert not list((DATA / "output").glob(f"{name} (*")), f"{name} published twice"
            assert not (DATA / "failed" / name).exists()
            assert len(list((DATA / "processed").rglob(f"{name}.mp4"))) == 1
            assert not list((DATA / "processing").rglob(f"{name}*"))
            assert not (DATA / "input" / f"{name}.mp4").exists()
        assert len(ours()) == LECTURES  # one run each
        states = {name: wait_for(f"run {rid} finished", lambda rid=rid: api.run("lecture_to_pdf", rid)["state"]
                                 if api.run("lecture_to_pdf", rid)["state"] in ("success", "failed") else None, 120)
                  for name, rid in ours().items()}
        assert set(states.values()) == {"success"}, states
    finally:  # the machine comes back, for the rest of the run (and the stack's teardown)
        subprocess.run(["docker", "update", "--restart", "unless-stopped", hosts[victim]], capture_output=True)
        subprocess.run(["docker", "start", hosts[victim]], capture_output=True)

