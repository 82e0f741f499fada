"""The watch-folder sensor: new files in ``input/``, or videos a dead run left in ``processing/``."""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.sensors.filesystem import FileSensor

from konspekt_dags.settings import settings


class InboxSensor(FileSensor):
    """A FileSensor on ``input/`` that also fires when ``processing/`` holds orphans.

    Without this, a video whose run died would wait in ``processing/`` until someone
    dropped another file. The orphans are checked on each poke; in deferrable mode the
    first poke (before deferring) sees them, which is when a new run starts after a dead one.
    """

    def poke(self, context: Any) -> bool:
        from konspekt import inbox

        if left := inbox.orphans(settings.data_root):
            self.log.info("%d video(s) left in processing/ by a run that ended; resuming them", len(left))
            return True
        return super().poke(context)
