"""Rows of Airflow's database that no known Fernet key opens: airflow-init runs this after `airflow db
migrate` and before `airflow rotate-fernet-key` (docker-compose.yml; the image has it at
/opt/konspekt/fernet-check.py).

A key is lost when a new clone in a folder of the same name reuses the old database volume (its .env
and airflow/config/airflow.cfg are new), or when airflow.cfg alone is lost. The rows the old key
encrypted then raise ``cryptography.fernet.InvalidToken`` in `airflow rotate-fernet-key`, which stopped
airflow-init with a bare traceback and every other service with it.

- **Trigger rows** are transient: a deferred task's trigger, which the task makes again when it
  defers again. Those no key opens are dropped, and said so; the tasks deferred on them are scheduled
  to start over (their trigger row's delete would otherwise delete them too: the foreign key cascades).
  Connection-test requests no key opens are dropped the same way.
- A task that defers through the execution API (the watch folder's sensor) stores its trigger's
  kwargs as plain JSON, which Airflow reads as it is, but which `rotate-fernet-key` cannot "decrypt":
  it stopped on them with InvalidToken whenever a key changed, lost or not. When a rotation follows
  (airflow.cfg lists more than one key), they are encrypted with the first key first.
- **Stored connections and variables** are the user's: one that no key opens stops the start, with a
  message naming the database volume and both ways out (the old key back into AIRFLOW_FERNET_KEY, or
  `make compose-purge`). Nothing is changed then.

Exit status: 0 (nothing found, or only transient rows, dropped), 3 (connections or variables no key opens).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

LOCKED_OUT = 3


def plain(kwargs: str | None) -> bool:
    """A trigger's kwargs stored unencrypted (JSON), as the execution API stores a deferring task's."""
    return bool(kwargs) and kwargs.lstrip().startswith("{")


def _opens(fernet: Any) -> Callable[[str | None], bool]:
    from cryptography.fernet import InvalidToken

    def opens(token: str | None) -> bool:
        if not token:
            return True
        try:
            fernet.decrypt(token.encode("utf-8"))
        except InvalidToken:
            return False
        return True

    return opens


def _volume() -> str:
    project = os.environ.get("KONSPEKT_COMPOSE_PROJECT", "").strip()
    if project:
        return f'the database volume "{project}_postgres-db"'
    return ('the database volume "<project>_postgres-db" (compose names it after the checkout\'s folder: '
            "`docker volume ls | grep postgres-db`)")


def locked_out_message(connections: list[str], variables: list[str]) -> str:
    what = []
    if connections:
        what.append(f"{len(connections)} connection(s): {', '.join(connections)}")
    if variables:
        what.append(f"{len(variables)} variable(s): {', '.join(variables)}")
    return "\n".join([
        "airflow-init: Airflow's database holds secrets that no Fernet key here opens:",
        *(f"  {line}" for line in what),
        f"A key this checkout no longer has encrypted them: {_volume()} outlived that key",
        "(a new clone in a folder of the same name reuses the volume; or airflow/config/airflow.cfg was lost).",
        "Nothing was changed. Two ways out:",
        "  1. Restore the old key: set AIRFLOW_FERNET_KEY=<the old key> in .env (the old .env's AIRFLOW_FERNET_KEY,",
        "     or the fernet_key line of the old airflow/config/airflow.cfg), then `make compose-up` again;",
        "     airflow-init then re-encrypts the stored secrets with it.",
        "  2. Or start afresh: `make compose-purge` deletes the stack's volumes (that database with its runs,",
        "     connections, variables and users; the built images), then `make compose-up`.",
    ])


def check(session: Any, fernet: Any, rotating: bool, say: Callable[[str], None] = print,
          refuse: Callable[[str], None] = print) -> int:
    """Find what ``fernet`` (every known key) cannot open: drop the transient rows (``say`` tells), or change
    nothing and ``refuse`` with the way out (LOCKED_OUT) when a stored connection or variable is among them.
    ``rotating``: `airflow rotate-fernet-key` follows, so plain trigger rows get encrypted for it."""
    from airflow.models import Connection, TaskInstance, Trigger, Variable
    from airflow.utils import timezone
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import delete, select, update

    opens = _opens(fernet)

    # the user's secrets first: one that no key opens stops everything, before anything changes
    connections = [
        conn_id for conn_id, password, encrypted, extra, extra_encrypted in session.execute(
            select(Connection.conn_id, Connection._password, Connection.is_encrypted,
                   Connection._extra, Connection.is_extra_encrypted))
        if (encrypted and not opens(password)) or (extra_encrypted and not opens(extra))
    ]
    variables = [key for key, value in session.execute(
        select(Variable.key, Variable._val).where(Variable.is_encrypted)) if not opens(value)]
    if connections or variables:
        refuse(locked_out_message(sorted(connections), sorted(variables)))
        return LOCKED_OUT

    triggers = session.execute(select(Trigger.id, Trigger.encrypted_kwargs)).all()
    lost = [trigger_id for trigger_id, kwargs in triggers if not plain(kwargs) and not opens(kwargs)]
    unencrypted = [(trigger_id, kwargs) for trigger_id, kwargs in triggers if plain(kwargs)]
    if rotating and unencrypted:  # what rotate-fernet-key would stop on
        for trigger_id, kwargs in unencrypted:
            session.execute(update(Trigger).where(Trigger.id == trigger_id).values(
                encrypted_kwargs=fernet.encrypt(kwargs.encode("utf-8")).decode("utf-8"))
                .execution_options(synchronize_session=False))
        say(f"airflow-init: encrypted {len(unencrypted)} trigger row(s) stored as plain JSON, for the key rotation")
    if lost:
        deferred = session.execute(
            select(TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id).where(
                TaskInstance.trigger_id.in_(lost), TaskInstance.state == TaskInstanceState.DEFERRED)).all()
        # the tasks deferred on them start over (and defer again, with a trigger the current key encrypts);
        # any other task still pointing at one lets go (the trigger's delete would cascade to it)
        session.execute(
            update(TaskInstance)
            .where(TaskInstance.trigger_id.in_(lost), TaskInstance.state == TaskInstanceState.DEFERRED)
            .values(state=TaskInstanceState.SCHEDULED, trigger_id=None, trigger_timeout=None, next_method=None,
                    next_kwargs=None, scheduled_dttm=timezone.utcnow())
            .execution_options(synchronize_session=False))
        session.execute(update(TaskInstance).where(TaskInstance.trigger_id.in_(lost)).values(trigger_id=None)
                        .execution_options(synchronize_session=False))
        try:  # Airflow 3.1+: callbacks run in the triggerer
            from airflow.models.callback import Callback
            from airflow.utils.state import CallbackState
        except ImportError:
            pass
        else:
            session.execute(update(Callback).where(Callback.trigger_id.in_(lost)).values(
                trigger_id=None, state=CallbackState.FAILED,
                output="its trigger was encrypted with a lost Fernet key (dropped by airflow-init)")
                .execution_options(synchronize_session=False))
        session.execute(delete(Trigger).where(Trigger.id.in_(lost)).execution_options(synchronize_session=False))
        tasks = ", ".join(f"{dag_id}.{task_id} ({run_id})" for dag_id, task_id, run_id in deferred) or "none"
        say(f"airflow-init: dropped {len(lost)} trigger row(s) that no Fernet key here opens (encrypted with a "
            f"lost key; triggers are transient). The tasks deferred on them start over and defer again: {tasks}")

    try:  # Airflow 3.3+: pending connection tests, transient too
        from airflow.models.connection_test import ConnectionTestRequest
    except ImportError:
        ConnectionTestRequest = None
    if ConnectionTestRequest is not None:
        tests = [row_id for row_id, password, encrypted, extra, extra_encrypted in session.execute(
            select(ConnectionTestRequest.id, ConnectionTestRequest._password, ConnectionTestRequest.is_encrypted,
                   ConnectionTestRequest._extra, ConnectionTestRequest.is_extra_encrypted))
                 if (encrypted and not opens(password)) or (extra_encrypted and not opens(extra))]
        if tests:
            session.execute(delete(ConnectionTestRequest).where(ConnectionTestRequest.id.in_(tests))
                            .execution_options(synchronize_session=False))
            say(f"airflow-init: dropped {len(tests)} connection test request(s) that no Fernet key here opens")
    return 0


def main() -> int:
    from airflow.configuration import conf
    from airflow.models.crypto import get_fernet
    from airflow.utils.session import create_session

    fernet = get_fernet()
    if not fernet.is_encrypted:  # no key: airflow-init has already refused to start
        return 0
    rotating = "," in conf.get("core", "fernet_key", fallback="")  # airflow-init rotates only then
    with create_session() as session:  # one transaction: committed at the end, nothing on an error
        return check(session, fernet, rotating, say=lambda text: print(text, flush=True),
                     refuse=lambda text: print(text, file=sys.stderr, flush=True))


if __name__ == "__main__":
    sys.exit(main())
