"""Airflow plugin: konspekt's HTTP upload API and page, mounted into Airflow's api-server at /konspekt.

One service, Airflow's own port, TLS and deployment: ``POST /konspekt/lectures`` writes an upload into
the watch folder (the one way in), ``GET /konspekt/lectures/{id}`` follows it, ``/konspekt/`` is the
page. Access is by konspekt's own API keys (``konspekt keys create --owner NAME``), not Airflow's
accounts: a lecturer or a learning platform gets a key, never an Airflow login. See konspekt.webapi.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from konspekt_dags.settings import settings

URL_PREFIX = "/konspekt"


class _BuiltOnFirstRequest:
    """The API app, built when the api-server first calls it. Every Airflow process loads plugins (each
    task's runner does too) and only the api-server serves this one: the others skip importing FastAPI's
    app for it (about 0.15 s a process)."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from konspekt.webapi import create_app

            self._app = create_app(
                settings.data_root,
                keys_path=Path(settings.api_keys_file) if settings.api_keys_file else None,
                max_bytes=settings.max_file_bytes,
                allow_private_callbacks=settings.api_private_callbacks,
                callback_poll_seconds=settings.api_callback_poll_seconds or None,
            )
        await self._app(scope, receive, send)


class KonspektApiPlugin(AirflowPlugin):
    name = "konspekt_api"
    fastapi_apps = [{"app": _BuiltOnFirstRequest(), "url_prefix": URL_PREFIX, "name": "konspekt uploads"}]
