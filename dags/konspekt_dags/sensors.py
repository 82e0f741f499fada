"""The watch-folder sensor: wakes only when a claim would take something.

That is: a file in ``input/`` (or in a folder dropped there) that has stopped changing, an
entry claim reports (a symlink, a pipe), or a video a dead run left in ``processing/``
(one held after a failure outside the file wakes it once its wait is over). Downloads
still running (``.part``, ``.crdownload``), hidden files and empty folders never do, so
under ``@continuous`` a run never starts, waits and ends skipped over and over.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.triggers.base import BaseTrigger, TriggerEvent

from konspekt_dags.settings import settings


class InboxSensor(FileSensor):
    """A FileSensor on ``input/`` (``filepath``, under the ``fs_conn_id`` connection's data root)
    that asks :func:`konspekt.inbox.has_work` instead of matching a glob."""

    @property
    def data_root(self) -> Path:
        return Path(self.path).parent

    def poke(self, context: Any) -> bool:
        from konspekt import inbox

        return inbox.has_work(self.data_root, settings.stable_seconds)

    def execute(self, context: Any) -> None:
        if not self.deferrable:
            super().execute(context)
        elif not self.poke(context):
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
