"""A lost Fernet key (issue 30, item 9), on the running stack's database: airflow-init started again with
another key in .env and airflow/config/airflow.cfg gone, as after a new clone into a folder of the same name
(compose reuses the old database volume) or a lost airflow.cfg.

1. A stored variable the lost key encrypted: airflow-init stops, names the volume and both ways out, and
   changes nothing. The first way out (the old key back into AIRFLOW_FERNET_KEY) then starts it; the key
   rotation that follows meets the watch folder's deferred trigger, stored as plain JSON (as the
   execution API stores it), which airflow-init encrypts first.
2. Only the watch folder's deferred trigger left encrypted by a lost key: airflow-init drops it, says so,
   and the stack comes up on the new key; the watcher defers again, with a trigger the triggerer runs.

Before the fix, each stopped airflow-init with a bare InvalidToken (airflow rotate-fernet-key, on the
watcher's trigger row), and every other service stayed down. The stack is left running on the last key
(.env and airflow.cfg agree), for the celery phase. .ci/compose-e2e.sh runs this after the other tests
(``KONSPEKT_LOST_KEY_E2E=1``), as root.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
from compose_stack import ROOT, compose, env_value, stack, wait_for  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("KONSPEKT_LOST_KEY_E2E") != "1",
                                 reason="airflow-init with other keys: .ci/compose-e2e.sh, after the stack tests")]

AIRFLOW = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
CFG = ROOT / "airflow" / "config" / "airflow.cfg"
DOTENV = ROOT / ".env"
VARIABLE = "konspekt_ci_lost_key"
WATCHER = ("select count(*) from task_instance ti join trigger t on t.id = ti.trigger_id "
           "where ti.dag_id = 'lecture_inbox' and ti.state = 'deferred'")


def psql(sql: str) -> str:
    proc = compose("exec", "-T", "postgres", "psql", "-U", "airflow", "-d", "airflow", "-tAc", sql)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def new_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def set_key(key: str) -> None:
    """.env's AIRFLOW_FERNET_KEY, as a user would set it."""
    text = DOTENV.read_text()
    assert re.search(r"^AIRFLOW_FERNET_KEY=", text, re.M)
    DOTENV.write_text(re.sub(r"^AIRFLOW_FERNET_KEY=.*$", f"AIRFLOW_FERNET_KEY={key}", text, flags=re.M))


def airflow_init() -> tuple[int, str]:
    """airflow-init run again against the same database (no build, nothing else restarted): exit status, log."""
    proc = compose("up", "-d", "--no-build", "airflow-init", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cid = compose("ps", "-q", "airflow-init").stdout.split()[0]

    def exited():
        out = subprocess.run(["docker", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", cid],
                             capture_output=True, text=True, check=True).stdout.split()
        return out if out[0] in ("exited", "dead") else None

    status = wait_for("airflow-init to finish", exited, 300, every=2)
    logs = subprocess.run(["docker", "logs", cid], capture_output=True, text=True)
    return int(status[1]), logs.stdout + logs.stderr


def healthy(services=AIRFLOW, timeout: float = 300) -> None:
    def all_healthy():
        for service in services:
            for cid in compose("ps", "-q", service).stdout.split():
                health = subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}", cid],
                                        capture_output=True, text=True).stdout.strip()
                if health != "healthy":
                    return False
        return True

    wait_for(f"{', '.join(services)} healthy", all_healthy, timeout, every=3,
             on_timeout=lambda: compose("logs", "--tail", "40", *services).stdout[-4000:])


def test_a_lost_fernet_key_drops_the_triggers_and_stops_only_for_stored_secrets(stack):
    old = env_value("AIRFLOW_FERNET_KEY")
    assert old, ".env has a Fernet key (airflow/compose.sh env writes one)"
    # The watcher waits in the triggerer (its trigger row in plain JSON); a variable the current key encrypted.
    wait_for("the watch folder's deferred trigger", lambda: int(psql(WATCHER)) > 0, 300)
    made = compose("exec", "-T", "airflow-apiserver", "airflow", "variables", "set", VARIABLE, "lms-token", timeout=120)
    assert made.returncode == 0, made.stderr[-2000:]
    assert psql(f"select is_encrypted from variable where key = '{VARIABLE}'") == "t"
    stopped = compose("stop", *AIRFLOW, timeout=180)  # as after `make compose-down`: nothing writes meanwhile
    assert stopped.returncode == 0, stopped.stderr
    try:
        # 1. The key lost while a variable needs it: airflow-init stops with both ways out, changing nothing.
        triggers = psql("select id, kwargs from trigger order by id")
        set_key(new_key())
        CFG.unlink()
        status, log = airflow_init()
        assert status != 0, log[-3000:]
        volume = f"{os.environ.get('COMPOSE_PROJECT_NAME') or 'konspekt-ci'}_postgres-db"
        for needed in (f'the database volume "{volume}"', VARIABLE, "AIRFLOW_FERNET_KEY", "make compose-purge"):
            assert needed in log, (needed, log[-3000:])
        assert "Traceback" not in log and "InvalidToken" not in log, log[-3000:]
        assert psql("select id, kwargs from trigger order by id") == triggers  # nothing dropped
        assert psql(f"select count(*) from variable where key = '{VARIABLE}'") == "1"

        # ...and the first way out: the old key back in .env. airflow-init goes through, dropping nothing;
        # the rotation to it (the new airflow.cfg's random key is second) meets the plain trigger row.
        set_key(old)
        status, log = airflow_init()
        assert status == 0, log[-3000:]
        assert "dropped" not in log and "InvalidToken" not in log, log[-3000:]
        assert re.search(r"encrypted \d+ trigger row\(s\) stored as plain JSON", log), log[-3000:]
        assert psql("select count(*) from trigger where kwargs like '{%'") == "0"
        assert psql(f"delete from variable where key = '{VARIABLE}'") == "DELETE 1"

        # 2. Lost again, with only the watcher's trigger row (encrypted now) left of that key: dropped, said
        #    so; the stack comes up on the new key.
        set_key(new_key())
        CFG.unlink()
        status, log = airflow_init()
        assert status == 0, log[-3000:]
        assert re.search(r"dropped \d+ trigger row\(s\) that no Fernet key here opens", log), log[-3000:]
        assert "lecture_inbox.wait_for_video" in log, log[-3000:]
        assert psql("select count(*) from trigger") == "0"
    finally:
        started = compose("up", "-d", "--no-deps", "--no-build", *AIRFLOW, timeout=300)
        assert started.returncode == 0, started.stderr[-3000:]
    healthy()
    # The watcher task starts over and defers again; the triggerer takes its new trigger (reading it).
    taken = WATCHER + " and t.triggerer_id is not null"
    wait_for("the watcher's new trigger, taken by the triggerer", lambda: int(psql(taken)) > 0, 300,
             on_timeout=lambda: psql("select run_id, task_id, state from task_instance where dag_id = 'lecture_inbox'")
             + compose("logs", "--tail", "60", "airflow-triggerer").stdout)
    time.sleep(5)  # still waiting there a moment later: the trigger runs, it did not fail
    assert int(psql(taken)) > 0
    assert "InvalidToken" not in compose("logs", "--no-color", "airflow-triggerer", "airflow-scheduler").stdout
