"""A lost Fernet key (issue 30, item 9): images/airflow/fernet-check.py, which airflow-init runs between
`airflow db migrate` and `airflow rotate-fernet-key`, against a real Airflow database (SQLite, the venv's
Airflow): the watcher's deferred trigger as the execution API stores it (plain JSON), another task's
trigger, a variable and a connection that an old key encrypted.

Without the check, airflow-init's rotation stops with InvalidToken on the watcher's plain trigger row
(whenever the key changes, lost or not: the bug), and on a trigger row the lost key encrypted. With it,
plain rows are encrypted first and rows no key opens are dropped (their deferred task starts over), and
the rotation goes through; a variable or connection no key opens stops the start with both ways out,
changing nothing. The compose e2e does the same against the stack's postgres
(tests/e2e/compose/test_lost_fernet_key.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "images" / "airflow" / "fernet-check.py"
BIN = Path(sys.executable).parent
KWARGS = {"data_root": "/opt/airflow/data", "stable_seconds": 2.0, "poke_interval": 5.0}
pytest.importorskip("airflow.models.crypto")
Fernet = pytest.importorskip("cryptography.fernet").Fernet

SEED = """
import json
import sqlalchemy as sa
from airflow.models import Connection, DagRun, TaskInstance, Trigger, Variable
from airflow.utils import timezone
from airflow.utils.session import create_session

KWARGS = {"data_root": "/opt/airflow/data", "stable_seconds": 2.0, "poke_interval": 5.0}
with create_session() as session:
    # the watcher's, as the execution API writes a deferring task's trigger: its kwargs as plain JSON
    watcher = Trigger(classpath="konspekt_dags.sensors.InboxTrigger", kwargs={})
    watcher.encrypted_kwargs = json.dumps(KWARGS)
    encrypted = Trigger(classpath="konspekt_dags.sensors.InboxTrigger", kwargs=KWARGS)  # the old key's
    session.add_all([watcher, encrypted])
    session.flush()
    session.execute(sa.insert(DagRun.__table__).values(dag_id="lecture_inbox", run_id="watch", run_type="manual",
                                                       state="running", run_after=timezone.utcnow(),
                                                       data_interval_end=None, logical_date=None))
    ti = TaskInstance.__table__
    session.execute(sa.insert(ti).values(dag_id="lecture_inbox", task_id="wait_for_video", run_id="watch",
                                         pool="default_pool", state="deferred", trigger_id=watcher.id,
                                         next_method="execute_complete", try_number=1))
    session.execute(sa.insert(ti).values(dag_id="lecture_inbox", task_id="waiting", run_id="watch",
                                         pool="default_pool", state="deferred", trigger_id=encrypted.id,
                                         next_method="execute_complete", try_number=1))
    session.execute(sa.insert(ti).values(dag_id="lecture_inbox", task_id="earlier", run_id="watch",
                                         pool="default_pool", state="success", trigger_id=encrypted.id,
                                         try_number=1))
    session.add(Connection(conn_id="lms", conn_type="http", host="lms.example.edu", password="s3cret"))
Variable.set("lms_token", "t0ken")
"""

STATE = """
import json
import sqlalchemy as sa
from airflow.models import Connection, TaskInstance, Trigger, Variable
from airflow.utils.session import create_session


def readable(trigger):
    try:
        return sorted(trigger.kwargs)
    except Exception as exc:
        return type(exc).__name__


with create_session() as session:
    print(json.dumps({
        "triggers": session.scalar(sa.select(sa.func.count()).select_from(Trigger)),
        "plain": session.scalar(sa.select(sa.func.count()).select_from(Trigger).where(
            Trigger.encrypted_kwargs.startswith("{"))),
        "readable": [readable(t) for t in session.scalars(sa.select(Trigger).order_by(Trigger.id))],
        "tis": {t: [s, tid, nm] for t, s, tid, nm in session.execute(sa.select(
            TaskInstance.task_id, TaskInstance.state, TaskInstance.trigger_id, TaskInstance.next_method))},
        "variables": session.scalars(sa.select(Variable.key)).all(),
        "connections": session.scalars(sa.select(Connection.conn_id)).all(),
    }))
"""


def key() -> str:
    return Fernet.generate_key().decode()


def airflow_env(home: Path, keys: str) -> dict[str, str]:
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__FERNET_KEY": keys, "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING", "KONSPEKT_COMPOSE_PROJECT": "konspekt"}


def run(home: Path, keys: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), env=airflow_env(home, keys), capture_output=True, text=True, timeout=300,
                          cwd=home)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> tuple[Path, str]:
    """A migrated database whose trigger, variable and connection the key ``old`` encrypted."""
    home = tmp_path_factory.mktemp("airflow-old-key")
    old = key()
    proc = run(home, old, str(BIN / "airflow"), "db", "migrate")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run(home, old, str(BIN / "python"), "-c", SEED)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return home / "airflow.db", old


@pytest.fixture
def home(seeded, tmp_path) -> Path:
    shutil.copy(seeded[0], tmp_path / "airflow.db")
    return tmp_path


def state(home: Path, keys: str) -> dict:
    proc = run(home, keys, str(BIN / "python"), "-c", STATE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check(home: Path, keys: str) -> subprocess.CompletedProcess:
    return run(home, keys, str(BIN / "python"), str(CHECK))


def forget(home: Path, keys: str) -> None:
    """The user's secrets gone (as if never stored): only the transient trigger is left encrypted by the old key."""
    code = ("from airflow.models import Connection, Variable\nfrom airflow.utils.session import create_session\n"
            "with create_session() as s:\n    s.query(Variable).delete()\n    s.query(Connection).delete()\n")
    proc = run(home, keys, str(BIN / "python"), "-c", code)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_rotation_alone_stops_on_the_watchers_plain_trigger_row(seeded, home):
    """The bug as airflow-init met it: a new key first, then `airflow rotate-fernet-key`. Even with the old
    key still known it stops on the watcher's plain trigger row; with it lost, on the encrypted one too."""
    new, old = key(), seeded[1]
    forget(home, new)
    proc = run(home, f"{new},{old}", str(BIN / "airflow"), "rotate-fernet-key")
    assert proc.returncode != 0 and "InvalidToken" in proc.stdout + proc.stderr


def test_trigger_rows_of_a_lost_key_are_dropped_and_their_task_starts_over(home):
    new = key()
    forget(home, new)
    proc = check(home, f"{new},{key()}")  # a new .env key first, a random one from a new airflow.cfg
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dropped 1 trigger row(s) that no Fernet key here opens" in proc.stdout
    assert "lecture_inbox.waiting (watch)" in proc.stdout  # says which task starts over
    assert "encrypted 1 trigger row(s) stored as plain JSON" in proc.stdout  # the watcher's, kept
    after = state(home, new)
    assert after["triggers"] == 1 and after["plain"] == 0 and after["readable"] == [sorted(KWARGS)]
    assert after["tis"]["waiting"] == ["scheduled", None, None]  # runs again, and defers again
    assert after["tis"]["earlier"] == ["success", None, None]  # let go of the trigger, not deleted with it
    assert after["tis"]["wait_for_video"][:1] == ["deferred"] and after["tis"]["wait_for_video"][1]  # untouched
    proc = run(home, f"{new},{key()}", str(BIN / "airflow"), "rotate-fernet-key")
    assert proc.returncode == 0, proc.stderr[-3000:]  # what airflow-init does next now goes through
    assert check(home, new).stdout == ""  # a second start finds nothing
    assert state(home, new)["readable"] == [sorted(KWARGS)]


def test_a_variable_or_connection_of_a_lost_key_stops_the_start_with_both_ways_out(home):
    new = key()
    before = state(home, new)
    proc = check(home, f"{new},{key()}")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    message = proc.stderr
    assert "1 connection(s): lms" in message and "1 variable(s): lms_token" in message
    assert 'the database volume "konspekt_postgres-db"' in message
    assert "AIRFLOW_FERNET_KEY" in message and "make compose-purge" in message and "make compose-up" in message
    assert "Traceback" not in message and "InvalidToken" not in message and proc.stdout == ""
    assert state(home, new) == before  # nothing changed, the trigger rows included


def test_the_old_key_back_opens_everything_and_nothing_is_dropped(seeded, home):
    new, old = key(), seeded[1]
    proc = check(home, f"{new},{old}")  # AIRFLOW_FERNET_KEY=<old> back: it is among the keys again
    assert proc.returncode == 0 and proc.stderr == "", proc.stdout + proc.stderr
    assert "dropped" not in proc.stdout
    assert state(home, f"{new},{old}")["triggers"] == 2
    proc = run(home, f"{new},{old}", str(BIN / "airflow"), "rotate-fernet-key")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = check(home, new)  # everything re-encrypted with the new key alone
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr
    assert state(home, new)["readable"] == [sorted(KWARGS)] * 2


def test_without_a_rotation_plain_trigger_rows_stay_as_they_are(seeded, home):
    forget(home, seeded[1])
    proc = check(home, seeded[1])  # one key, the one that wrote everything: nothing to do
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stdout + proc.stderr
    assert state(home, seeded[1])["plain"] == 1


def test_airflow_init_runs_the_check_between_migrate_and_rotation():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    init = compose["services"]["airflow-init"]
    lines = [line.strip() for line in init["command"][-1].splitlines()]
    at = lines.index("python /opt/konspekt/fernet-check.py")
    assert lines.index("airflow db migrate") < at < next(i for i, line in enumerate(lines)
                                                          if line.startswith("airflow rotate-fernet-key"))
    assert init["environment"]["KONSPEKT_COMPOSE_PROJECT"] == "${COMPOSE_PROJECT_NAME:-}"  # names the volume
    dockerfile = (ROOT / "images" / "airflow" / "Dockerfile").read_text()
    assert "COPY --chown=airflow:0 images/airflow/fernet-check.py /opt/konspekt/fernet-check.py" in dockerfile
    makefile = (ROOT / "Makefile").read_text()
    assert "compose-purge:\n\tbash airflow/compose.sh purge\n" in makefile  # the way out the message names
    assert "purge)" in (ROOT / "airflow" / "compose.sh").read_text()
    assert os.access(CHECK, os.R_OK)
