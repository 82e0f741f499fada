"""Airflow plugin: konspekt's HTTP upload API and page, mounted into Airflow's api-server at /konspekt.

One service, Airflow's own port, TLS and deployment: ``POST /konspekt/lectures`` writes an upload into
the watch folder (the one way in), ``GET /konspekt/lectures/{id}`` follows it, ``/konspekt/`` is the
page. Access is by konspekt's own API keys (``konspekt keys create --owner NAME``), not Airflow's
accounts: a lecturer or a learning platform gets a key, never an Airflow login. See konspekt.webapi.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from konspekt_dags.settings import settings

URL_PREFIX = "/konspekt"
log = logging.getLogger(__name__)


class _BuiltWhenServed:
    """The API app, built when the api-server starts (or first calls it). Every Airflow process loads
    plugins (each task's runner does too) and only the api-server serves this one: the others skip
    importing FastAPI's app for it (about 0.15 s a process)."""

    def __init__(self) -> None:
        self._app: Any = None

    def app(self) -> Any:
        if self._app is None:
            from konspekt.webapi import create_app

            self._app = create_app(
                settings.data_root,
                keys_path=Path(settings.api_keys_file) if settings.api_keys_file else None,
                max_bytes=settings.max_file_bytes,
                allow_private_callbacks=settings.api_private_callbacks,
                callback_hosts=settings.api_callback_hosts,
                callback_poll_seconds=settings.api_callback_poll_seconds or None,
                min_free_bytes=int(settings.min_free_gb * 1e9),
                max_concurrent_uploads=settings.api_max_concurrent_uploads,
                max_bytes_per_day=int(settings.api_max_gb_per_day * 1e9),
                idle_timeout=settings.api_idle_timeout_seconds,
                docs=settings.api_docs,
            )
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app()(scope, receive, send)


API = _BuiltWhenServed()


class _StartWithTheApiServer:
    """A root middleware, so it runs only in the api-server: at its start (the lifespan event, which a
    mounted app that is not itself a FastAPI app never gets) it builds the API and starts its background
    work, so that callbacks are sent after a restart even if nobody calls the API."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            try:
                await asyncio.to_thread(lambda: API.app().state.start_background())
            except Exception:  # the Airflow UI must come up even where the upload API cannot
                log.exception("konspekt's upload API could not start with the api-server; it tries again "
                              "at its first request")
        await self.app(scope, receive, send)


class KonspektApiPlugin(AirflowPlugin):
    name = "konspekt_api"
    fastapi_apps = [{"app": API, "url_prefix": URL_PREFIX, "name": "konspekt uploads"}]
    fastapi_root_middlewares = [{"middleware": _StartWithTheApiServer, "name": "konspekt uploads: start"}]
