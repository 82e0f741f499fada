"""The watch-folder sensor: wakes only when a claim would take something, and then claims it.

What wakes it: a file in ``input/`` (or in a folder dropped there) that has stopped changing,
an entry claim reports (a symlink, a pipe), or a video a dead run left in ``processing/``
(one held after a failure outside the file wakes it once its wait is over). Downloads
still running (``.part``, ``.crdownload``), hidden files and empty folders never do, so
under ``@continuous`` a run never starts, waits and ends skipped over and over.

Once it wakes, the sensor claims (``claim``, a callable) and returns what it claimed as its
XCom: detecting and claiming are one task, one task start less between a drop and its first
stage. When the claim takes nothing (only a symlink, reported to ``failed/``), it waits on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.triggers.base import BaseTrigger, TriggerEvent

from konspekt_dags.settings import settings


class InboxSensor(FileSensor):
    """A FileSensor on ``input/`` (``filepath``, under the ``fs_conn_id`` connection's data root)
    that asks :func:`konspekt.inbox.has_work` instead of matching a glob, then runs ``claim(context)``:
    a non-empty result ends the wait and is the task's XCom."""

    def __init__(self, *, claim: Callable[[Any], list], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.claim = claim

    @property
    def data_root(self) -> Path:
        return Path(self.path).parent

    def ready(self) -> bool:
        from konspekt import inbox

        return inbox.has_work(self.data_root, settings.stable_seconds)

    def poke(self, context: Any) -> bool | PokeReturnValue:  # type: ignore[override]  # BaseSensorOperator's
        if not self.ready():
            return False
        claimed = self.claim(context)
        return PokeReturnValue(is_done=True, xcom_value=claimed) if claimed else False

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return BaseSensorOperator.execute(self, context)  # FileSensor's own drops the XCom
        return self.execute_complete(context)

    def execute_complete(self, context: Any, event: Any = None) -> Any:
        """Claim now; with nothing to claim, wait in the triggerer until there is."""
        done = self.poke(context)
        if isinstance(done, PokeReturnValue):
            return done.xcom_value
        self.defer(trigger=InboxTrigger(str(self.data_root), settings.stable_seconds, self.poke_interval),
                   timeout=timedelta(seconds=self.timeout), method_name="execute_complete")


class InboxTrigger(BaseTrigger):
    """Fires once :func:`konspekt.inbox.has_work` says yes; polls in the triggerer, off the workers.

    The triggerer imports it by its path, ``konspekt_dags.sensors``: the DAG folder is on its
    ``PYTHONPATH`` (compose and airflow/run-local.sh set it).
    """

    def __init__(self, data_root: str, stable_seconds: float, poke_interval: float) -> None:
        super().__init__()
        self.data_root, self.stable_seconds, self.poke_interval = data_root, stable_seconds, poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"data_root": self.data_root, "stable_seconds": self.stable_seconds,
                 "poke_interval": self.poke_interval})

    async def run(self):
        from konspekt import inbox

        while not await asyncio.to_thread(inbox.has_work, Path(self.data_root), self.stable_seconds):
            await asyncio.sleep(self.poke_interval)
        yield TriggerEvent(True)
